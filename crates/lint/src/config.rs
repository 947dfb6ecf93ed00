//! What decides which findings count: the `# check=` directive (BuildKit), `.hadolint.yaml`
//! (`ignored`, `failure-threshold`, `trustedRegistries`) and `# hadolint ignore=...` comments.

use crate::rules::Severity;
use crate::LintError;

/// The `# check=skip=A,B;error=true;experimental=...` directive, as BuildKit reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckDirective {
    /// `skip=all`.
    pub skip_all: bool,
    /// The rules named by `skip=`.
    pub skip: Vec<String>,
    /// `error=true`: a finding fails the build.
    pub error: bool,
}

impl CheckDirective {
    /// Parses the directive's value (`skip=A,B;error=true`); an empty value is the default.
    pub fn parse(value: &str) -> Result<CheckDirective, LintError> {
        let mut out = CheckDirective::default();
        let value = value.split(' ').next().unwrap_or("").trim();
        if value.is_empty() {
            return Ok(out);
        }
        for part in value.splitn(3, ';') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(LintError::CheckOption(format!(
                    "invalid check option {part:?}"
                )));
            };
            match k.trim() {
                "skip" => {
                    let v = v.trim();
                    if v == "all" {
                        out.skip_all = true;
                    } else {
                        out.skip.extend(v.split(',').map(|r| r.trim().to_string()));
                    }
                }
                // Every rule here is stable; experimental rules are not implemented.
                "experimental" => {}
                "error" => {
                    out.error = match v.trim().to_ascii_lowercase().as_str() {
                        "1" | "t" | "true" => true,
                        "0" | "f" | "false" => false,
                        other => {
                            return Err(LintError::CheckOption(format!(
                                "failed to parse check option {part:?}: invalid syntax {other:?}"
                            )))
                        }
                    }
                }
                other => {
                    return Err(LintError::CheckOption(format!(
                        "invalid check option {other:?}"
                    )))
                }
            }
        }
        Ok(out)
    }

    /// Whether the directive turns this rule off.
    pub fn skips(&self, id: &str) -> bool {
        self.skip_all || self.skip.iter().any(|s| s == id)
    }
}

/// hadolint's `.hadolint.yaml` keys that rbuild honours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HadolintConfig {
    /// `ignored:` rule ids.
    pub ignored: Vec<String>,
    /// `failure-threshold:` findings below it are printed but do not fail (`None`: never fail).
    pub failure_threshold: Option<Severity>,
    /// `trustedRegistries:` when not empty, FROM images from other registries are DL3026.
    pub trusted_registries: Vec<String>,
}

impl Default for HadolintConfig {
    fn default() -> Self {
        HadolintConfig {
            ignored: Vec::new(),
            failure_threshold: Some(Severity::Info),
            trusted_registries: Vec::new(),
        }
    }
}

impl HadolintConfig {
    /// Reads the subset of YAML hadolint's config uses for these keys: `key: value`,
    /// block lists (`- item`) and flow lists (`[a, b]`); other keys are ignored.
    pub fn parse(text: &str) -> Result<HadolintConfig, LintError> {
        let mut cfg = HadolintConfig::default();
        let mut current: Option<String> = None;
        for raw in text.lines() {
            let line = strip_comment(raw);
            if line.trim().is_empty() {
                continue;
            }
            let indented = line.starts_with([' ', '\t']);
            let t = line.trim();
            if let Some(item) = t
                .strip_prefix("- ")
                .or(if t == "-" { Some("") } else { None })
            {
                if let Some(key) = &current {
                    push_item(&mut cfg, key, unquote(item.trim()))?;
                }
                continue;
            }
            if indented && current.is_some() {
                continue;
            }
            let Some((k, v)) = t.split_once(':') else {
                return Err(LintError::Config(format!("cannot read line {raw:?}")));
            };
            let key = k.trim().to_string();
            let v = v.trim();
            current = Some(key.clone());
            if let Some(list) = v.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
                for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    push_item(&mut cfg, &key, unquote(item))?;
                }
            } else if !v.is_empty() {
                push_item(&mut cfg, &key, unquote(v))?;
            }
        }
        Ok(cfg)
    }
}

fn push_item(cfg: &mut HadolintConfig, key: &str, item: &str) -> Result<(), LintError> {
    match key {
        "ignored" => cfg.ignored.push(item.to_string()),
        "trustedRegistries" => cfg.trusted_registries.push(item.to_string()),
        "failure-threshold" => {
            cfg.failure_threshold = Severity::parse_threshold(item).map_err(LintError::Config)?
        }
        _ => {}
    }
    Ok(())
}

fn strip_comment(line: &str) -> &str {
    match line.find(" #") {
        Some(i) => &line[..i],
        None if line.trim_start().starts_with('#') => "",
        None => line,
    }
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| s.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
        .unwrap_or(s)
}

/// The rule ids of hadolint comments in the comment block right above `line` (1-based):
/// `# hadolint ignore=DL3008,DL3013`.
pub(crate) fn inline_ignores(lines: &[&str], line: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut n = line.saturating_sub(1);
    while n >= 1 {
        let Some(text) = lines.get(n - 1).map(|l| l.trim()) else {
            break;
        };
        let Some(comment) = text.strip_prefix('#') else {
            break;
        };
        if let Some(ids) = hadolint_ignore(comment, false) {
            out.extend(ids);
        }
        n -= 1;
    }
    out
}

/// The rules a `# check=skip=...` comment in the comment block right above `line` skips for
/// that instruction (BuildKit merges such comments into the linter of the next instruction).
pub(crate) fn inline_check_skips(lines: &[&str], line: usize) -> CheckDirective {
    let mut out = CheckDirective::default();
    let mut n = line.saturating_sub(1);
    while n >= 1 {
        let Some(comment) = lines.get(n - 1).and_then(|l| l.trim().strip_prefix('#')) else {
            break;
        };
        if let Some(value) = comment.trim().strip_prefix("check=") {
            if let Ok(d) = CheckDirective::parse(value) {
                out.skip_all |= d.skip_all;
                out.skip.extend(d.skip);
            }
        }
        n -= 1;
    }
    out
}

/// The ids of every `# hadolint global ignore=...` comment in the file.
pub(crate) fn global_ignores(lines: &[&str]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.trim().strip_prefix('#'))
        .filter_map(|c| hadolint_ignore(c, true))
        .flatten()
        .collect()
}

fn hadolint_ignore(comment: &str, global: bool) -> Option<Vec<String>> {
    let rest = comment.trim().strip_prefix("hadolint")?.trim_start();
    let rest = if global {
        rest.strip_prefix("global")?.trim_start()
    } else {
        rest
    };
    let ids = rest
        .strip_prefix("ignore")?
        .trim_start()
        .strip_prefix('=')?;
    Some(
        ids.split(',')
            .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    )
}
