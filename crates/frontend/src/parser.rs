//! The Dockerfile parser: directives, comments, continuation lines and heredocs are handled line
//! by line; each logical line is parsed by the pest grammar (`dockerfile.pest`) into keyword,
//! flags and raw arguments, which are then shaped per instruction like BuildKit's parser.

use crate::ast::{Args, Directives, Dockerfile, Flag, Heredoc, Instruction, InstructionKind, KeyValue, Span};
use crate::error::ParseError;
use pest::Parser;

#[derive(pest_derive::Parser)]
#[grammar = "dockerfile.pest"]
struct LineParser;

/// A physical line with its position.
struct PhysLine<'a> {
    text: &'a str,
    number: usize,
    offset: usize,
}

fn physical_lines(source: &str) -> Vec<PhysLine<'_>> {
    let mut out = Vec::new();
    let mut offset = 0;
    for (i, raw) in source.split_inclusive('\n').enumerate() {
        let text = raw.strip_suffix('\n').unwrap_or(raw);
        let text = text.strip_suffix('\r').unwrap_or(text);
        out.push(PhysLine { text, number: i + 1, offset });
        offset += raw.len();
    }
    out
}

fn parse_directive(line: &str) -> Option<(String, String)> {
    let body = line.trim_start().strip_prefix('#')?.trim();
    let (key, value) = body.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) || !key.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    Some((key.to_ascii_lowercase(), value.trim().to_string()))
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Suggests the closest instruction name for a typo.
pub fn suggest(word: &str) -> Option<&'static str> {
    let lower = word.to_ascii_lowercase();
    InstructionKind::ALL.iter().map(|(name, _)| (levenshtein(&lower, name), *name)).filter(|(d, name)| *d <= 2 || (name.len() > 4 && *d <= 3 && lower.len() > 4)).min().map(|(_, n)| n)
}

/// Splits like BuildKit's parseWords: on whitespace outside quotes, keeping quotes and escapes.
pub fn split_words(rest: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = rest.chars().peekable();
    let mut in_word = false;
    while let Some(c) = chars.next() {
        if quote.is_none() && c.is_whitespace() {
            if in_word {
                words.push(std::mem::take(&mut word));
                in_word = false;
            }
            continue;
        }
        in_word = true;
        if c == escape && quote != Some('\'') {
            word.push(c);
            if let Some(next) = chars.next() {
                word.push(next);
            }
            continue;
        }
        match quote {
            Some(q) if c == q => quote = None,
            None if c == '"' || c == '\'' => quote = Some(c),
            _ => {}
        }
        word.push(c);
    }
    if in_word {
        words.push(word);
    }
    words
}

fn parse_json_array(rest: &str) -> Option<Vec<String>> {
    let trimmed = rest.trim();
    if !trimmed.starts_with('[') {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(trimmed).ok()?;
    value.as_array()?.iter().map(|v| v.as_str().map(str::to_string)).collect()
}

fn name_values(rest: &str, escape: char, kind: InstructionKind) -> Result<Vec<KeyValue>, String> {
    let words = split_words(rest, escape);
    let Some(first) = words.first() else {
        return Err(format!("{} requires at least one argument", kind.keyword().to_uppercase()));
    };
    if !first.contains('=') {
        // Legacy `ENV key value with spaces`.
        let trimmed = rest.trim_start();
        let value = trimmed[first.len()..].trim().to_string();
        if value.is_empty() && kind != InstructionKind::Arg {
            return Err(format!("{} must have two arguments", kind.keyword().to_uppercase()));
        }
        return Ok(vec![KeyValue { key: first.clone(), value: Some(value), legacy: true }]);
    }
    let mut out = Vec::new();
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(format!("{} names can not be blank or the syntax `{}` is invalid (use key=value)", kind.keyword().to_uppercase(), word));
        };
        if key.is_empty() {
            return Err(format!("{} names can not be blank", kind.keyword().to_uppercase()));
        }
        out.push(KeyValue { key: key.to_string(), value: Some(value.to_string()), legacy: false });
    }
    Ok(out)
}

fn shape_args(kind: InstructionKind, rest: &str, escape: char) -> Result<Args, String> {
    use InstructionKind as K;
    Ok(match kind {
        K::Run | K::Cmd | K::Entrypoint | K::Shell => match parse_json_array(rest) {
            Some(v) => Args::Exec(v),
            None if kind == K::Shell => return Err("SHELL requires the arguments to be in JSON form".into()),
            None => Args::Shell(rest.to_string()),
        },
        K::Add | K::Copy | K::Volume => match parse_json_array(rest) {
            Some(v) => Args::Exec(v),
            None => Args::Words(split_words(rest, escape)),
        },
        K::Env | K::Label => Args::KeyValues(name_values(rest, escape, kind)?),
        K::Arg => {
            let words = split_words(rest, escape);
            if words.is_empty() {
                return Err("ARG requires at least one argument".into());
            }
            Args::KeyValues(
                words
                    .into_iter()
                    .map(|w| match w.split_once('=') {
                        Some((k, v)) => KeyValue { key: k.to_string(), value: Some(v.to_string()), legacy: false },
                        None => KeyValue { key: w, value: None, legacy: false },
                    })
                    .collect(),
            )
        }
        K::Maintainer | K::Workdir | K::User | K::Stopsignal | K::Healthcheck | K::Onbuild => Args::Shell(rest.trim().to_string()),
        K::From | K::Expose => Args::Words(split_words(rest, escape)),
    })
}

/// Finds heredoc markers (`<<EOF`, `<<-EOF`, `<<"EOF"`) in a RUN/COPY/ADD line.
fn heredoc_markers(line: &str) -> Vec<(String, bool, bool)> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i + 2 < bytes.len() {
        if &bytes[i..i + 2] == b"<<" && (i == 0 || bytes[i - 1] != b'<') {
            let mut j = i + 2;
            let chomp = bytes.get(j) == Some(&b'-');
            if chomp {
                j += 1;
            }
            let quote = match bytes.get(j) {
                Some(b'"') | Some(b'\'') => {
                    j += 1;
                    Some(bytes[j - 1])
                }
                _ => None,
            };
            let start = j;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                j += 1;
            }
            if j > start && (quote.is_none() || bytes.get(j) == quote.as_ref()) {
                out.push((line[start..j].to_string(), quote.is_none(), chomp));
                i = j;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// Parses a whole Dockerfile.
pub fn parse(source: &str) -> Result<Dockerfile, ParseError> {
    let lines = physical_lines(source);
    let mut directives = Directives::default();
    let mut index = 0;
    while index < lines.len() {
        match parse_directive(lines[index].text) {
            Some((key, value)) => {
                match key.as_str() {
                    "escape" => {
                        directives.escape = match value.as_str() {
                            "\\" => '\\',
                            "`" => '`',
                            _ => {
                                return Err(ParseError { message: format!("invalid escape token '{value}' does not match ` or \\"), line: lines[index].number, col: 1, line_text: lines[index].text.to_string() });
                            }
                        }
                    }
                    "syntax" => directives.syntax = Some(value),
                    "check" => directives.check = Some(value),
                    _ => {}
                }
                index += 1;
            }
            None => break,
        }
    }
    let escape = directives.escape;
    let mut instructions = Vec::new();
    while index < lines.len() {
        let first = &lines[index];
        let trimmed = first.text.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            index += 1;
            continue;
        }
        // Join continuation lines; comment and blank lines inside are dropped.
        let mut logical = String::new();
        let mut last = index;
        let mut current = first.text.to_string();
        loop {
            let right = current.trim_end();
            if let Some(stripped) = right.strip_suffix(escape) {
                logical.push_str(stripped);
                let mut next = last + 1;
                while next < lines.len() {
                    let t = lines[next].text.trim_start();
                    if t.starts_with('#') || t.is_empty() {
                        next += 1;
                    } else {
                        break;
                    }
                }
                if next >= lines.len() {
                    last = lines.len() - 1;
                    break;
                }
                last = next;
                current = lines[next].text.to_string();
            } else {
                logical.push_str(&current);
                break;
            }
        }
        index = last + 1;
        let line_no = first.number;
        let col = first.text.len() - trimmed.len() + 1;
        let err = |message: String, column: usize| ParseError { message, line: line_no, col: column, line_text: first.text.to_string() };
        let pairs = LineParser::parse(Rule::line, &logical).map_err(|e| err(format!("invalid instruction: {}", e.variant.message()), col))?;
        let mut keyword = String::new();
        let mut flags = Vec::new();
        let mut rest = String::new();
        for pair in pairs.flatten() {
            match pair.as_rule() {
                Rule::keyword => keyword = pair.as_str().to_string(),
                Rule::flag => {
                    let mut name = String::new();
                    let mut value = None;
                    for inner in pair.clone().into_inner() {
                        match inner.as_rule() {
                            Rule::flag_name => name = inner.as_str().to_string(),
                            Rule::flag_value => value = Some(inner.as_str().to_string()),
                            _ => {}
                        }
                    }
                    let start = pair.as_span().start();
                    flags.push(Flag { name, value, span: Span { start_line: line_no, start_col: start + 1, end_line: line_no, end_col: pair.as_span().end() + 1, offset: first.offset + start, len: pair.as_str().len() } });
                }
                Rule::rest => rest = pair.as_str().to_string(),
                _ => {}
            }
        }
        let Some(kind) = InstructionKind::from_keyword(&keyword) else {
            let hint = suggest(&keyword).map(|s| format!(" (did you mean {}?)", s.to_uppercase())).unwrap_or_default();
            return Err(err(format!("unknown instruction: {keyword}{hint}"), col));
        };
        // Heredocs: bodies follow the instruction line.
        let mut heredocs = Vec::new();
        if matches!(kind, InstructionKind::Run | InstructionKind::Copy | InstructionKind::Add) {
            for (name, expand, chomp) in heredoc_markers(&rest) {
                let mut content = String::new();
                let mut found = false;
                while index < lines.len() {
                    let text = lines[index].text;
                    index += 1;
                    let check = if chomp { text.trim_start_matches('\t') } else { text };
                    if check == name {
                        found = true;
                        break;
                    }
                    content.push_str(text);
                    content.push('\n');
                }
                if !found {
                    return Err(err(format!("unterminated heredoc {name}"), col));
                }
                last = index.saturating_sub(1).max(last);
                heredocs.push(Heredoc { name, content, expand, chomp });
            }
        }
        let mut onbuild = None;
        let args = if kind == InstructionKind::Onbuild {
            let inner_src = format!("{rest}\n");
            let inner = parse(&inner_src).map_err(|e| err(format!("ONBUILD: {}", e.message), col))?;
            let Some(mut inner_inst) = inner.instructions.into_iter().next() else {
                return Err(err("ONBUILD requires at least one argument".into(), col));
            };
            if matches!(inner_inst.kind, InstructionKind::Onbuild | InstructionKind::From | InstructionKind::Maintainer) {
                return Err(err(format!("{} isn't allowed as an ONBUILD trigger", inner_inst.kind.keyword().to_uppercase()), col));
            }
            inner_inst.span = Span { start_line: line_no, start_col: col, end_line: line_no, end_col: col, offset: first.offset, len: 0 };
            onbuild = Some(Box::new(inner_inst));
            Args::Shell(rest.trim().to_string())
        } else {
            shape_args(kind, &rest, escape).map_err(|m| err(m, col))?
        };
        let end_line = lines.get(last).map(|l| l.number).unwrap_or(line_no);
        let end_offset = lines.get(last).map(|l| l.offset + l.text.len()).unwrap_or(first.offset);
        let span = Span {
            start_line: line_no,
            start_col: col,
            end_line,
            end_col: lines.get(last).map(|l| l.text.len() + 1).unwrap_or(1),
            offset: first.offset,
            len: end_offset.saturating_sub(first.offset),
        };
        instructions.push(Instruction { kind, name_original: keyword, flags, args, heredocs, span, onbuild, original: logical.trim().to_string() });
    }
    Ok(Dockerfile { directives, instructions, source: source.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_comments_and_flags() {
        let df = parse("# escape=\\\nFROM busybox AS b\nRUN echo a \\\n# comment\n\n  && echo b\nCOPY --from=b --chown=1:2 /x /y\n").unwrap();
        assert_eq!(df.instructions.len(), 3);
        assert_eq!(df.instructions[1].args, Args::Shell("echo a   && echo b".into()));
        assert_eq!(df.instructions[1].span.start_line, 3);
        assert_eq!(df.instructions[1].span.end_line, 6);
        assert_eq!(df.instructions[2].flags.len(), 2);
        assert_eq!(df.instructions[2].flags[0].value.as_deref(), Some("b"));
    }

    #[test]
    fn unknown_instruction_suggests() {
        let e = parse("FROM a\nRUNN x\n").unwrap_err();
        assert_eq!((e.line, e.col), (2, 1));
        assert!(e.message.contains("did you mean RUN?"), "{}", e.message);
        let r = e.render("Dockerfile");
        assert!(r.starts_with("Dockerfile:2:1: unknown instruction: RUNN"));
        assert!(r.ends_with("RUNN x\n^"));
    }

    #[test]
    fn env_forms_and_json() {
        let df = parse("FROM a\nENV A=1 B=\"x y\"\nENV C d e\nCMD [\"a\", \"b\"]\nCMD ['bad']\n").unwrap();
        match &df.instructions[1].args {
            Args::KeyValues(kv) => assert_eq!(kv[1].value.as_deref(), Some("\"x y\"")),
            other => panic!("{other:?}"),
        }
        match &df.instructions[2].args {
            Args::KeyValues(kv) => assert!(kv[0].legacy && kv[0].value.as_deref() == Some("d e")),
            other => panic!("{other:?}"),
        }
        assert_eq!(df.instructions[3].args, Args::Exec(vec!["a".into(), "b".into()]));
        assert_eq!(df.instructions[4].args, Args::Shell("['bad']".into()));
    }

    #[test]
    fn heredocs() {
        let df = parse("FROM a\nRUN <<EOF\necho hi\nEOF\nRUN <<-'X' cat\n\tliteral $V\n\tX\n").unwrap();
        assert_eq!(df.instructions[1].heredocs[0].content, "echo hi\n");
        let h = &df.instructions[2].heredocs[0];
        assert!(!h.expand && h.chomp && h.name == "X");
    }
}
