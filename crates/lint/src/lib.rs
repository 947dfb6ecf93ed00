//! Dockerfile lint over the frontend's spanned AST: BuildKit's build checks (names, messages and
//! doc URLs as `docker build --check` prints them) and the hadolint rules people rely on, under
//! their `DL` ids.
//!
//! This crate owns the rule table ([`RULES`]), the checks (`buildkit`, `hadolint`), what turns
//! rules off (the `# check=` directive and `# check=skip=` comments above an instruction,
//! `.hadolint.yaml`, `# hadolint ignore=` comments:
//! [`config`]) and the renderings of a [`Report`] (BuildKit's text with Dockerfile excerpts,
//! BuildKit's JSON, SARIF, and the `N warnings found` summary of a build: [`render`]).
//! It is pure: callers read the files and hand in their contents.

mod buildkit;
pub mod config;
mod hadolint;
pub mod render;
pub mod rules;
mod stages;

pub use config::{CheckDirective, HadolintConfig};
pub use rules::{rule, Origin, Rule, Severity, RULES};

use rbuild_frontend::{Dockerfile, Span};

/// Errors of the lint configuration (the Dockerfile itself is already parsed).
#[derive(Debug, thiserror::Error)]
pub enum LintError {
    /// A bad `# check=` directive (BuildKit's words).
    #[error("{0}")]
    CheckOption(String),
    /// A `.hadolint.yaml` that cannot be read.
    #[error("invalid .hadolint.yaml: {0}")]
    Config(String),
}

/// One rule violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule.
    pub rule: &'static Rule,
    /// The message (BuildKit's or hadolint's words).
    pub message: String,
    /// Where: the instruction (or stage) it concerns.
    pub span: Span,
}

/// What to lint with.
pub struct LintOptions<'a> {
    /// The Dockerfile's name as printed above excerpts (`Dockerfile`).
    pub file_name: String,
    /// Names of `--build-arg`s given to the build (they define variables).
    pub build_args: Vec<String>,
    /// Whether the context's `.dockerignore` excludes a source path (`CopyIgnoredFile`); `None`
    /// when there is no `.dockerignore` or it has exceptions (BuildKit checks neither).
    pub dockerignored: Option<&'a dyn Fn(&str) -> bool>,
    /// `.hadolint.yaml` settings.
    pub hadolint: HadolintConfig,
    /// The `BUILDKIT_DOCKERFILE_CHECK` build argument: replaces the `# check=` directive.
    pub check_override: Option<String>,
    /// Whether hadolint's rules run (`rbuild check`, `build --check`); a normal build reports
    /// BuildKit's checks only, as BuildKit does.
    pub hadolint_rules: bool,
}

impl Default for LintOptions<'_> {
    fn default() -> Self {
        LintOptions {
            file_name: "Dockerfile".to_string(),
            build_args: Vec::new(),
            dockerignored: None,
            hadolint: HadolintConfig::default(),
            check_override: None,
            hadolint_rules: true,
        }
    }
}

/// The result of a lint run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The file name shown above excerpts.
    pub file_name: String,
    /// The Dockerfile's text (for excerpts).
    pub source: String,
    /// The findings that were not turned off, in line order.
    pub findings: Vec<Finding>,
    /// `# check=error=true`: findings fail the build.
    pub error_on_warning: bool,
    /// `.hadolint.yaml`'s failure threshold.
    pub failure_threshold: Option<Severity>,
}

impl Report {
    /// Whether `--check` exits non-zero: a finding at or above the failure threshold
    /// (hadolint's default `info`; BuildKit's checks are warnings, so any of them fails).
    pub fn fails(&self) -> bool {
        self.failure_threshold
            .is_some_and(|t| self.findings.iter().any(|f| f.rule.severity >= t))
    }

    /// With `# check=error=true` and findings, BuildKit's build error:
    /// `lint violation found for rules: A, B`.
    pub fn violation_error(&self) -> Option<String> {
        if !self.error_on_warning || self.findings.is_empty() {
            return None;
        }
        let mut ids: Vec<&str> = self.findings.iter().map(|f| f.rule.id).collect();
        ids.sort_unstable();
        ids.dedup();
        Some(format!(
            "lint violation found for rules: {}",
            ids.join(", ")
        ))
    }
}

/// Lints a parsed Dockerfile.
pub fn lint(df: &Dockerfile, opts: &LintOptions<'_>) -> Result<Report, LintError> {
    let (value, what) = match &opts.check_override {
        Some(v) => (Some(v), "build-arg:BUILDKIT_DOCKERFILE_CHECK"),
        None => (df.directives.check.as_ref(), "check options"),
    };
    let directive = match value {
        Some(v) => CheckDirective::parse(v)
            .map_err(|e| LintError::CheckOption(format!("failed to parse {what}: {e}")))?,
        None => CheckDirective::default(),
    };
    let lines: Vec<&str> = df.source.lines().collect();
    let model = stages::Model::new(df);
    let mut raw = Vec::new();
    buildkit::check(df, &model, opts, &lines, &mut raw);
    if opts.hadolint_rules {
        hadolint::check(df, &model, opts, &mut raw);
    }
    let global = config::global_ignores(&lines);
    let mut findings: Vec<Finding> = raw
        .into_iter()
        .filter(|f| !directive.skips(f.rule.id))
        .filter(|f| !opts.hadolint.ignored.iter().any(|i| i == f.rule.id))
        .filter(|f| !global.iter().any(|i| i == f.rule.id))
        .filter(|f| {
            !config::inline_ignores(&lines, f.span.start_line)
                .iter()
                .any(|i| i == f.rule.id)
                && !config::inline_check_skips(&lines, f.span.start_line).skips(f.rule.id)
        })
        .collect();
    findings.sort_by_key(|f| f.span.start_line);
    Ok(Report {
        file_name: opts.file_name.clone(),
        source: df.source.clone(),
        findings,
        error_on_warning: directive.error,
        failure_threshold: opts.hadolint.failure_threshold,
    })
}

/// Pushes a finding of the rule `id` (which must be in [`RULES`]).
pub(crate) fn push(out: &mut Vec<Finding>, id: &str, message: String, span: Span) {
    if let Some(rule) = rule(id) {
        out.push(Finding {
            rule,
            message,
            span,
        });
    }
}
