//! Glob patterns of the `${V#p}`, `${V%p}` and `${V/p/r}` modifiers (BuildKit's shell lexer
//! turns them into regular expressions; here they are matched directly): compiling a pattern
//! with its bracket classes and escapes, and trimming or replacing the matches in a value.

/// One token of a compiled pattern: `*`, `?`, `[...]` (with `!`/`^` negation and ranges) and
/// escaped literals. Matching is a linear-space dynamic programme (no backtracking blow-up on
/// hostile patterns).
#[derive(Debug, Clone)]
pub(super) enum GlobTok {
    Lit(char),
    Any,
    Star,
    Class {
        negate: bool,
        items: Vec<(char, char)>,
    },
}

/// Compiles a pattern; the escape token makes the next character a literal.
pub(super) fn compile_glob(pat: &str, escape: char) -> Vec<GlobTok> {
    let chars: Vec<char> = pat.chars().collect();
    let mut toks = Vec::new();
    // Positions from which a bracket expression is known to run off the end: with it, a
    // pattern of many unclosed `[` compiles in linear time, not quadratic.
    let mut dead = vec![false; chars.len() + 1];
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == escape {
            if let Some(&n) = chars.get(i + 1) {
                toks.push(GlobTok::Lit(n));
                i += 2;
            } else {
                toks.push(GlobTok::Lit(c));
                i += 1;
            }
            continue;
        }
        match c {
            '*' => {
                if !matches!(toks.last(), Some(GlobTok::Star)) {
                    toks.push(GlobTok::Star);
                }
                i += 1;
            }
            '?' => {
                toks.push(GlobTok::Any);
                i += 1;
            }
            '[' => match parse_class(&chars, i + 1, escape, &mut dead) {
                Some((tok, next)) => {
                    toks.push(tok);
                    i = next;
                }
                None => {
                    toks.push(GlobTok::Lit('['));
                    i += 1;
                }
            },
            _ => {
                toks.push(GlobTok::Lit(c));
                i += 1;
            }
        }
    }
    toks
}

/// Parses the bracket expression after a `[` at `i - 1`; `None` (the `[` is a literal) when it
/// is not closed. Marks the positions an unclosed one went through in `dead`.
fn parse_class(
    chars: &[char],
    i: usize,
    escape: char,
    dead: &mut [bool],
) -> Option<(GlobTok, usize)> {
    let mut visited = Vec::new();
    let r = scan_class(chars, i, escape, dead, &mut visited);
    if r.is_none() {
        for p in visited {
            dead[p] = true;
        }
    }
    r
}

/// Whether the scan succeeds depends only on the position once past the first item, so a
/// position in `dead` fails at once.
fn scan_class(
    chars: &[char],
    mut i: usize,
    escape: char,
    dead: &[bool],
    visited: &mut Vec<usize>,
) -> Option<(GlobTok, usize)> {
    let mut negate = false;
    if matches!(chars.get(i), Some('!') | Some('^')) {
        negate = true;
        i += 1;
    }
    let mut items = Vec::new();
    let mut first = true;
    loop {
        if !first {
            if dead[i] {
                return None;
            }
            visited.push(i);
        }
        let mut c = *chars.get(i)?;
        if c == ']' && !first {
            return Some((GlobTok::Class { negate, items }, i + 1));
        }
        first = false;
        if c == escape {
            c = *chars.get(i + 1)?;
            i += 1;
        }
        i += 1;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&e| e != ']') {
            let mut hi = chars[i + 1];
            i += 2;
            if hi == escape {
                hi = *chars.get(i)?;
                i += 1;
            }
            items.push((c, hi));
        } else {
            items.push((c, c));
        }
    }
}

/// Whether one single-character token matches `c`.
fn tok_matches(t: &GlobTok, c: char) -> bool {
    match t {
        GlobTok::Lit(l) => *l == c,
        GlobTok::Any => true,
        GlobTok::Star => true,
        GlobTok::Class { negate, items } => {
            items.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negate
        }
    }
}

/// For a fixed start in `s`, returns for every end position `e` (0..=s.len()) whether
/// `s[..e]` matches the whole pattern.
fn match_ends(s: &[char], pat: &[GlobTok]) -> Vec<bool> {
    // cur[j]: pattern prefix of length j matches the input consumed so far.
    let m = pat.len();
    let mut cur = vec![false; m + 1];
    cur[0] = true;
    for j in 1..=m {
        cur[j] = cur[j - 1] && matches!(pat[j - 1], GlobTok::Star);
    }
    let mut out = Vec::with_capacity(s.len() + 1);
    out.push(cur[m]);
    for &c in s {
        let mut nxt = vec![false; m + 1];
        for j in 1..=m {
            nxt[j] = match &pat[j - 1] {
                GlobTok::Star => nxt[j - 1] || cur[j],
                t => cur[j - 1] && tok_matches(t, c),
            };
        }
        cur = nxt;
        out.push(cur[m]);
    }
    out
}

/// `${V#p}` / `${V##p}`: `value` without the shortest (longest when `greedy`) matching prefix.
pub(super) fn trim_prefix(value: &str, pat: &[GlobTok], greedy: bool) -> String {
    let chars: Vec<char> = value.chars().collect();
    let ends = match_ends(&chars, pat);
    let pick = if greedy {
        ends.iter().rposition(|&b| b)
    } else {
        ends.iter().position(|&b| b)
    };
    match pick {
        Some(n) => chars[n..].iter().collect(),
        None => value.to_string(),
    }
}

/// `${V%p}` / `${V%%p}`: `value` without the shortest (longest when `greedy`) matching suffix.
pub(super) fn trim_suffix(value: &str, pat: &[GlobTok], greedy: bool) -> String {
    // Match the reversed pattern against the reversed value.
    let rev: Vec<char> = value.chars().rev().collect();
    let mut rpat: Vec<GlobTok> = pat.to_vec();
    rpat.reverse();
    let ends = match_ends(&rev, &rpat);
    let pick = if greedy {
        ends.iter().rposition(|&b| b)
    } else {
        ends.iter().position(|&b| b)
    };
    match pick {
        Some(n) => rev[n..].iter().rev().collect(),
        None => value.to_string(),
    }
}

/// `${V/p/r}` / `${V//p/r}`: the first (every, when `all`) longest match replaced.
pub(super) fn replace(value: &str, pat: &[GlobTok], replacement: &str, all: bool) -> String {
    let chars: Vec<char> = value.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut prev_nonempty_end: Option<usize> = None;
    let mut replaced = false;
    while i <= chars.len() {
        if replaced && !all {
            out.extend(chars[i..].iter());
            return out;
        }
        let ends = match_ends(&chars[i..], pat);
        match ends.iter().rposition(|&b| b) {
            Some(len) if len > 0 => {
                out.push_str(replacement);
                i += len;
                prev_nonempty_end = Some(i);
                replaced = true;
                continue;
            }
            Some(_) if prev_nonempty_end != Some(i) => {
                out.push_str(replacement);
                replaced = true;
            }
            _ => {}
        }
        if i < chars.len() {
            out.push(chars[i]);
        }
        i += 1;
    }
    out
}
