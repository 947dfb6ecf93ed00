//! `rbuild check` and `rbuild build --check`: lint the Dockerfile without building (BuildKit's
//! build checks and hadolint's rules), print the findings as BuildKit's `--check` does (text
//! with excerpts, `--format json`, or SARIF) and exit 1 when any finding fails; and the
//! `N warnings found` list of a normal build.

use crate::errors::Report;
use clap::{Args, ValueEnum};
use rbuild_build::lint::{CheckError, CheckRequest};
use std::path::PathBuf;

/// How `rbuild check` prints its findings.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckFormat {
    /// BuildKit's text: `WARNING: Rule - URL`, the message and a Dockerfile excerpt.
    #[default]
    Text,
    /// BuildKit's lint result JSON (`warnings`, `sources`).
    Json,
    /// SARIF 2.1.0, for CI code scanning.
    Sarif,
}

/// `rbuild check` flags.
#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// Dockerfile path (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: CheckFormat,
    /// Build-time variable (`KEY[=VALUE]`); defines the variable for UndefinedVar.
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,
    /// Build context directory.
    #[arg(default_value = ".")]
    pub context: PathBuf,
}

fn arg_names(raw: &[String]) -> Vec<String> {
    raw.iter()
        .map(|a| a.split_once('=').map_or(a.as_str(), |(k, _)| k).to_string())
        .collect()
}

/// The value of `--build-arg BUILDKIT_DOCKERFILE_CHECK=...` (a bare name reads the environment).
fn check_override(raw: &[String]) -> Option<String> {
    const NAME: &str = "BUILDKIT_DOCKERFILE_CHECK";
    raw.iter().rev().find_map(|a| match a.split_once('=') {
        Some((k, v)) if k == NAME => Some(v.to_string()),
        None if a == NAME => std::env::var(NAME).ok(),
        _ => None,
    })
}

fn report_of(e: CheckError) -> Report {
    match e {
        CheckError::Build(e) => Report::from(e),
        CheckError::Lint(e) => Report::new(format!("ERROR: {e}")),
    }
}

/// Runs `rbuild check`.
pub fn run(args: &CheckArgs) -> Result<(), Report> {
    lint_and_print(
        CheckRequest {
            context: args.context.clone(),
            dockerfile: args.file.clone(),
            build_args: arg_names(&args.build_args),
            check_override: check_override(&args.build_args),
            hadolint_rules: true,
        },
        args.format,
    )
}

/// `rbuild build --check`: the same as `rbuild check` with the build's context, `-f` and
/// build args, in text.
pub fn run_for_build(
    context: PathBuf,
    file: Option<PathBuf>,
    build_args: &[String],
) -> Result<(), Report> {
    lint_and_print(
        CheckRequest {
            context,
            dockerfile: file,
            build_args: arg_names(build_args),
            check_override: check_override(build_args),
            hadolint_rules: true,
        },
        CheckFormat::Text,
    )
}

fn lint_and_print(req: CheckRequest, format: CheckFormat) -> Result<(), Report> {
    let report = rbuild_build::lint::check(&req).map_err(report_of)?;
    let out = match format {
        CheckFormat::Text => rbuild_lint::render::text(&report),
        CheckFormat::Json => json_line(&rbuild_lint::render::json(&report)),
        CheckFormat::Sarif => json_line(&rbuild_lint::render::sarif(&report)),
    };
    print!("{out}");
    if let Some(msg) = report.violation_error() {
        // BuildKit prints the error with the excerpt of the first finding.
        let mut text = format!("ERROR: {msg}");
        if format == CheckFormat::Text {
            text.insert(0, '\n');
        }
        return Err(Report::new(text));
    }
    if report.fails() {
        return Err(Report::new(String::new()));
    }
    Ok(())
}

fn json_line(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// The lint of a normal build: BuildKit's checks only. `None` when the Dockerfile cannot be
/// read or parsed (the build reports that itself) or comes from standard input.
pub fn lint_for_build(
    context: PathBuf,
    file: Option<PathBuf>,
    build_args: &[String],
) -> Option<rbuild_lint::Report> {
    if context == std::path::Path::new("-") || file.as_deref() == Some(std::path::Path::new("-")) {
        return None;
    }
    let req = CheckRequest {
        context,
        dockerfile: file,
        build_args: arg_names(build_args),
        check_override: check_override(build_args),
        hadolint_rules: false,
    };
    match rbuild_build::lint::check(&req) {
        Ok(r) => Some(r),
        Err(CheckError::Lint(e)) => {
            eprintln!("WARNING: {e}");
            None
        }
        Err(CheckError::Build(_)) => None,
    }
}

/// With `# check=error=true` and findings, the build's error (BuildKit fails before building).
pub fn violation(report: &rbuild_lint::Report) -> Option<Report> {
    let msg = report.violation_error()?;
    let mut text = String::new();
    for f in &report.findings {
        text.push_str(&format!("WARNING: {}\n", rbuild_lint::render::short(f)));
    }
    text.push_str(&format!("ERROR: failed to solve: {msg}"));
    Some(Report::new(text))
}

/// Prints a build's warnings at its end, as buildx: ` N warnings found (use --debug to
/// expand):` and one line per warning (expanded with excerpts under `--debug`).
pub fn print_summary(report: &rbuild_lint::Report, expand: bool) {
    let text = rbuild_lint::render::summary(report, expand);
    if !text.is_empty() {
        eprint!("\n{text}");
    }
}
