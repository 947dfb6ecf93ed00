//! Flag checking, as BuildKit's `bflag.go`: an instruction declares the flags it takes, each
//! with a type (boolean, single string, repeatable string). Every `--flag` written on it must be
//! one of them (else [`InstructionError::UnknownFlag`], with a `did you mean` when a declared
//! flag is close); a string flag needs `=value` ([`InstructionError::MissingValue`]), a boolean
//! given `=` needs a value, and only a repeatable flag may be given twice
//! ([`InstructionError::DuplicateFlag`]). Typed getters then read the values.

use super::InstructionError;
use crate::ast::{Flag, Instruction};

/// The declared flags that are booleans (`--link`, `--link=false`).
const BOOL_FLAGS: &[&str] = &["link", "parents", "keep-git-dir", "unpack"];
/// The declared flags that may repeat (BuildKit's `AddStrings`).
const REPEATABLE_FLAGS: &[&str] = &["mount", "device", "exclude"];

/// The flags of one instruction, checked against the names it declares.
pub(super) struct Flags<'a> {
    inst: &'a Instruction,
}

impl<'a> Flags<'a> {
    /// Checks every flag of `inst` against `allowed` (the declared names, without `--`), in
    /// order, as BuildKit's `BFlags.Parse`: unknown, then duplicated, then missing a value.
    pub(super) fn parse(
        inst: &'a Instruction,
        allowed: &'static [&'static str],
    ) -> Result<Flags<'a>, InstructionError> {
        for (i, f) in inst.flags.iter().enumerate() {
            if !allowed.contains(&f.name.as_str()) {
                return Err(InstructionError::UnknownFlag {
                    instruction: inst.kind,
                    flag: f.name.clone(),
                    suggestion: suggest_flag(&f.name, allowed),
                    allowed,
                    span: f.span,
                });
            }
            let repeatable = REPEATABLE_FLAGS.contains(&f.name.as_str());
            if !repeatable && inst.flags[..i].iter().any(|g| g.name == f.name) {
                return Err(InstructionError::DuplicateFlag {
                    flag: f.name.clone(),
                    span: f.span,
                });
            }
            let missing = if BOOL_FLAGS.contains(&f.name.as_str()) {
                f.value.as_deref() == Some("")
            } else {
                f.value.is_none()
            };
            if missing {
                return Err(InstructionError::MissingValue {
                    flag: f.name.clone(),
                    span: f.span,
                });
            }
        }
        Ok(Flags { inst })
    }

    /// The `--name` flag (given at most once), with its span.
    pub(super) fn last(&self, name: &str) -> Option<&'a Flag> {
        self.inst.flags.iter().rev().find(|f| f.name == name)
    }

    /// The value of `--name`.
    pub(super) fn string(&self, name: &str) -> Option<&'a str> {
        self.last(name).map(|f| f.value.as_deref().unwrap_or(""))
    }

    /// Every `--name` of a repeatable flag, in order.
    pub(super) fn all(&self, name: &str) -> Vec<&'a Flag> {
        self.inst.flags.iter().filter(|f| f.name == name).collect()
    }

    /// Every value of a repeatable flag, in order.
    pub(super) fn strings(&self, name: &str) -> Vec<&'a str> {
        self.all(name)
            .into_iter()
            .map(|f| f.value.as_deref().unwrap_or(""))
            .collect()
    }

    /// A boolean flag: absent = `None`, `--x` or `--x=true` = true, `--x=false` = false (the
    /// value case-insensitive, as BuildKit).
    pub(super) fn bool_opt(&self, name: &str) -> Result<Option<bool>, InstructionError> {
        let Some(value) = self.string(name) else {
            return Ok(None);
        };
        match value.to_ascii_lowercase().as_str() {
            "" | "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(InstructionError::NotBool {
                flag: name.to_string(),
                value: value.to_string(),
                span: self.inst.span,
            }),
        }
    }

    /// A boolean flag, false when absent.
    pub(super) fn bool(&self, name: &str) -> Result<bool, InstructionError> {
        Ok(self.bool_opt(name)?.unwrap_or(false))
    }
}

/// The declared flag closest to `name`, as BuildKit's `suggest.Search`: case-sensitive
/// Levenshtein distance below 3, the first of the closest wins.
fn suggest_flag(name: &str, allowed: &[&'static str]) -> Option<&'static str> {
    let mut best: Option<(usize, &'static str)> = None;
    for &candidate in allowed {
        let d = strsim::levenshtein(name, candidate);
        if d < best.map_or(3, |(bd, _)| bd) {
            best = Some((d, candidate));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::suggest_flag;

    #[test]
    fn suggestions_need_a_close_declared_flag() {
        let copy = &["chown", "from", "chmod", "link", "exclude", "parents"];
        assert_eq!(suggest_flag("chwon", copy), Some("chown"));
        assert_eq!(suggest_flag("form", copy), Some("from"));
        assert_eq!(suggest_flag("lnk", copy), Some("link"));
        assert_eq!(suggest_flag("parent", copy), Some("parents"));
        assert_eq!(suggest_flag("checksum", copy), None);
        assert_eq!(suggest_flag("x", &[]), None);
    }
}
