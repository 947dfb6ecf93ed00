//! `COPY --chmod` modes in chmod(1)'s symbolic form (`u+x,g-w,o=r`): the one grammar that the
//! frontend checks a flag against and the worker applies to copied entries. Octal modes are
//! plain numbers carried in [`crate::CopyAction::mode`].

/// A `--chmod` value that is neither octal nor a valid symbolic mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid chmod parameter: {0}")]
pub struct InvalidMode(pub String);

/// A parsed symbolic mode (`u+x,g-w,o=r`, `a=rX`, `go=u`) as chmod(1) and BSD setmode(3) read
/// it, without a umask (BuildKit applies none); applied to each copied entry's own mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolicMode {
    clauses: Vec<ModeClause>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ModeClause {
    /// The bits the `who` part selects (u = 0o4700, g = 0o2070, o = 0o1007; none or `a` = all).
    who: u32,
    actions: Vec<(u8, ModePerm)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ModePerm {
    /// Some of `rwxXst`.
    Bits(Vec<u8>),
    /// Another class's current bits: `u`, `g` or `o`.
    Copy(u8),
}

impl SymbolicMode {
    /// Parses a comma-separated list of `[ugoa]*([-+=]([rwxXst]*|[ugo]))+` clauses.
    pub fn parse(s: &str) -> Result<SymbolicMode, InvalidMode> {
        let bad = || InvalidMode(s.to_string());
        let mut clauses = Vec::new();
        for clause in s.split(',') {
            let b = clause.as_bytes();
            let mut i = 0;
            let mut who = 0;
            while i < b.len() && matches!(b[i], b'u' | b'g' | b'o' | b'a') {
                who |= match b[i] {
                    b'u' => 0o4700,
                    b'g' => 0o2070,
                    b'o' => 0o1007,
                    _ => 0o7777,
                };
                i += 1;
            }
            if who == 0 {
                who = 0o7777;
            }
            if i >= b.len() {
                return Err(bad());
            }
            let mut actions = Vec::new();
            while i < b.len() {
                let op = b[i];
                if !matches!(op, b'+' | b'-' | b'=') {
                    return Err(bad());
                }
                i += 1;
                if i < b.len() && matches!(b[i], b'u' | b'g' | b'o') {
                    actions.push((op, ModePerm::Copy(b[i])));
                    i += 1;
                    continue;
                }
                let start = i;
                while i < b.len() && matches!(b[i], b'r' | b'w' | b'x' | b'X' | b's' | b't') {
                    i += 1;
                }
                actions.push((op, ModePerm::Bits(b[start..i].to_vec())));
            }
            clauses.push(ModeClause { who, actions });
        }
        Ok(SymbolicMode { clauses })
    }

    /// The new mode of an entry whose mode is `mode` (`X` needs `is_dir` or an existing x bit).
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let mut mode = mode & 0o7777;
        for c in &self.clauses {
            for (op, perm) in &c.actions {
                let bits = match perm {
                    ModePerm::Copy(from) => {
                        let v = match from {
                            b'u' => (mode >> 6) & 7,
                            b'g' => (mode >> 3) & 7,
                            _ => mode & 7,
                        };
                        v * 0o111
                    }
                    ModePerm::Bits(set) => set.iter().fold(0, |acc, ch| {
                        acc | match ch {
                            b'r' => 0o444,
                            b'w' => 0o222,
                            b'x' => 0o111,
                            b'X' if is_dir || mode & 0o111 != 0 => 0o111,
                            b's' => 0o6000,
                            b't' => 0o1000,
                            _ => 0,
                        }
                    }),
                };
                let affected = bits & c.who;
                mode = match op {
                    b'+' => mode | affected,
                    b'-' => mode & !affected,
                    _ => {
                        // `=` resets the class; directories keep set-id bits unless named (as chmod).
                        let clear = c.who & if is_dir { 0o1777 } else { 0o7777 };
                        (mode & !clear) | affected
                    }
                };
            }
        }
        mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolic_modes_parse_and_apply_like_chmod() {
        let m = SymbolicMode::parse("u+x,g-w,o=r").unwrap();
        assert_eq!(m.apply(0o664, false), 0o744);
        assert_eq!(m.apply(0o775, true), 0o754);
        let m = SymbolicMode::parse("a=rX").unwrap();
        assert_eq!(m.apply(0o600, false), 0o444);
        assert_eq!(m.apply(0o700, false), 0o555);
        assert_eq!(m.apply(0o700, true), 0o555);
        assert_eq!(
            SymbolicMode::parse("go=u").unwrap().apply(0o750, false),
            0o777
        );
        assert_eq!(
            SymbolicMode::parse("go=u-w").unwrap().apply(0o750, false),
            0o755
        );
        assert_eq!(
            SymbolicMode::parse("+x").unwrap().apply(0o644, false),
            0o755
        );
        assert_eq!(
            SymbolicMode::parse("u+s,+t").unwrap().apply(0o755, true),
            0o5755
        );
        assert_eq!(
            SymbolicMode::parse("o-rwx").unwrap().apply(0o777, false),
            0o770
        );
        assert_eq!(
            SymbolicMode::parse("ug=rw,o=").unwrap().apply(0o777, false),
            0o660
        );
        for bad in [
            "", "u", "x+r", "u+q", "u+r,", "755x", "u!r", "u+r,,g+w", "rwx",
        ] {
            assert_eq!(
                SymbolicMode::parse(bad),
                Err(InvalidMode(bad.to_string())),
                "{bad} must be rejected"
            );
        }
        for ok in [
            "u+x", "g-w,o=r", "a=rX", "+x", "go=u-w", "u+s,+t", "ug=rw,o=", "ug+rw-x", "o=",
        ] {
            assert!(SymbolicMode::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            InvalidMode("u!r".into()).to_string(),
            "invalid chmod parameter: u!r"
        );
    }
}
