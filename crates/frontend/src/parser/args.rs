//! Argument forms of instructions, as BuildKit's parser splits them: flag words, whitespace
//! words, JSON (exec) arrays versus shell text, HEALTHCHECK arguments and quote-keeping words.

use super::grammar::{DockerfileGrammar, Rule};
use crate::ast::{Args, InstructionKind};
use crate::error::ParseErrorKind;
use pest::iterators::Pair;
use pest::Parser as _;

/// Removes the quotes and `\` escapes of a flag word (BuildKit extractBuilderFlags).
pub(super) fn unquote_flag(raw: &str) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match quote {
            None if c == '\'' || c == '"' => quote = Some(c),
            Some(q) if c == q => quote = None,
            _ if c == '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// BuildKit `reWhitespace` (`[\t\v\f\r ]+`) split with a limit (`0` = no limit).
pub(super) fn split_re_whitespace(s: &str, limit: usize) -> Vec<&str> {
    let is_ws = |c: char| matches!(c, '\t' | '\u{0B}' | '\u{0C}' | '\r' | ' ');
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        if limit != 0 && out.len() + 1 == limit {
            out.push(rest);
            return out;
        }
        match rest.find(is_ws) {
            Some(i) => {
                out.push(&rest[..i]);
                rest = rest[i..].trim_start_matches(is_ws);
            }
            None => {
                out.push(rest);
                return out;
            }
        }
    }
}

/// BuildKit parseStringsWhitespaceDelimited.
pub(super) fn split_whitespace_args(rest: &str) -> Args {
    if rest.is_empty() {
        return Args::Empty;
    }
    Args::Words(
        split_re_whitespace(rest, 0)
            .into_iter()
            .map(str::to_string)
            .collect(),
    )
}

/// BuildKit parseMaybeJSON: empty → no args, JSON array of strings → exec form, otherwise the raw
/// text as shell form.
pub(super) fn maybe_json(rest: &str, kind: InstructionKind) -> Result<Args, ParseErrorKind> {
    if rest.is_empty() {
        return Ok(Args::Empty);
    }
    Ok(match parse_json(rest, kind)? {
        Some(v) => Args::Exec(v),
        None => Args::Shell(rest.to_string()),
    })
}

/// BuildKit parseHealthConfig: a type word then a maybe-JSON command.
pub(super) fn parse_health(rest: &str, kind: InstructionKind) -> Result<Args, ParseErrorKind> {
    if rest.is_empty() {
        return Ok(Args::Empty);
    }
    let pairs = DockerfileGrammar::parse(Rule::health_args, rest)
        .map_err(|e| ParseErrorKind::Syntax(e.variant.message().into_owned()))?;
    let (mut check_type, mut cmd) = ("", "");
    for top in pairs {
        for p in top.into_inner() {
            match p.as_rule() {
                Rule::health_type => check_type = p.as_str(),
                Rule::health_cmd => cmd = p.as_str(),
                _ => {}
            }
        }
    }
    Ok(Args::Healthcheck {
        check_type: check_type.to_string(),
        command: Box::new(maybe_json(cmd, kind)?),
    })
}

/// BuildKit parseJSON: `Ok(Some(strings))` for a JSON array of strings, `Ok(None)` when the text
/// is not a JSON array (fall back to another form), an error for a valid JSON array holding
/// anything other than strings.
pub(super) fn parse_json(
    rest: &str,
    kind: InstructionKind,
) -> Result<Option<Vec<String>>, ParseErrorKind> {
    if !rest.starts_with('[') {
        return Ok(None);
    }
    let Ok(pairs) = DockerfileGrammar::parse(Rule::json_exec, rest) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for top in pairs {
        for p in top.into_inner() {
            match p.as_rule() {
                Rule::json_string => out.push(decode_json_string(p)),
                Rule::json_other => {
                    return Err(ParseErrorKind::NotStringArray {
                        instruction: kind.name().to_string(),
                    })
                }
                _ => {}
            }
        }
    }
    Ok(Some(out))
}

/// Decodes a `json_string` pair (escapes, `\u` surrogate pairs; lone surrogates become U+FFFD
/// as in Go's encoding/json).
fn decode_json_string(p: Pair<'_, Rule>) -> String {
    let raw = p.into_inner().next().map(|c| c.as_str()).unwrap_or("");
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    fn hex4(it: &mut std::str::Chars<'_>) -> Option<u32> {
        let s: String = it.by_ref().take(4).collect();
        u32::from_str_radix(&s, 16).ok()
    }
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('b') => out.push('\u{08}'),
            Some('f') => out.push('\u{0C}'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let Some(hi) = hex4(&mut chars) else { break };
                if (0xD800..0xDC00).contains(&hi) {
                    // A high surrogate: combine with a following low surrogate if there is one.
                    let mut look = chars.clone();
                    if look.next() == Some('\\') && look.next() == Some('u') {
                        if let Some(lo) = hex4(&mut look) {
                            if (0xDC00..0xE000).contains(&lo) {
                                let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                                out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                                chars = look;
                                continue;
                            }
                        }
                    }
                    out.push('\u{FFFD}');
                } else {
                    out.push(char::from_u32(hi).unwrap_or('\u{FFFD}'));
                }
            }
            Some(other) => out.push(other),
            None => break,
        }
    }
    out
}

/// BuildKit parseWords: splits on blanks, keeping quotes and escape tokens in the words; an
/// escape token at the very end is dropped.
pub(super) fn parse_words(rest: &str, escape: char) -> Result<Vec<String>, ParseErrorKind> {
    let (rule, trail) = if escape == '`' {
        (Rule::words_bt, Rule::bt_trail)
    } else {
        (Rule::words_bs, Rule::bs_trail)
    };
    let pairs = DockerfileGrammar::parse(rule, rest)
        .map_err(|e| ParseErrorKind::Syntax(e.variant.message().into_owned()))?;
    let mut out = Vec::new();
    for top in pairs {
        for w in top.into_inner() {
            if !matches!(w.as_rule(), Rule::word_bs | Rule::word_bt) {
                continue;
            }
            let text = w.as_str();
            let has_trail = w
                .clone()
                .into_inner()
                .flatten()
                .any(|p| p.as_rule() == trail);
            let word = if has_trail {
                text.strip_suffix(escape).unwrap_or(text)
            } else {
                text
            };
            if !word.is_empty() {
                out.push(word.to_string());
            }
        }
    }
    Ok(out)
}
