//! Glob matching of single path components and the wildcard test, shared by COPY/ADD source
//! expansion ([`crate::fsops`]) and `.dockerignore` matching ([`crate::dockerignore`]).

/// True when `s` holds glob characters.
pub fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Matches one path component against a glob (`*`, `?`, `[...]`, `\` escapes).
pub fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pattern[1..], name) || (!name.is_empty() && glob_match(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob_match(&pattern[1..], &name[1..]),
        (Some(b'['), Some(&c)) => {
            let Some(end) = pattern
                .iter()
                .skip(1)
                .position(|&b| b == b']')
                .map(|p| p + 1)
            else {
                return name.first() == Some(&b'[') && glob_match(&pattern[1..], &name[1..]);
            };
            let class = &pattern[1..end];
            let (negate, class) = match class.first() {
                Some(b'^') | Some(b'!') => (true, &class[1..]),
                _ => (false, class),
            };
            let mut matched = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    matched |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    matched |= class[i] == c;
                    i += 1;
                }
            }
            matched != negate && glob_match(&pattern[end + 1..], &name[1..])
        }
        (Some(b'\\'), Some(&c)) if pattern.len() > 1 => {
            pattern[1] == c && glob_match(&pattern[2..], &name[1..])
        }
        (Some(&p), Some(&c)) => p == c && glob_match(&pattern[1..], &name[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"*.txt", b"a.txt"));
        assert!(!glob_match(b"*.txt", b"a.tx"));
        assert!(glob_match(b"f?le[0-9]", b"file7"));
        assert!(!glob_match(b"[!a]x", b"ax"));
    }
}
