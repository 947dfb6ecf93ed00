//! User-facing error reports: the text the CLI prints for a failure and the exit code it maps to
//! (2 for usage errors, 128+N for a build canceled by signal N, 1 otherwise).

use rbuild_build::{BuildError, SpecError};
use std::fmt;

pub use rbuild_build::chain;

/// An error as the user sees it.
#[derive(Debug)]
pub struct Report {
    text: String,
    code: u8,
}

impl Report {
    /// A plain error (exit code 1).
    pub fn new(text: impl Into<String>) -> Self {
        Report {
            text: text.into(),
            code: 1,
        }
    }

    /// With another exit code.
    pub fn with_code(mut self, code: u8) -> Self {
        self.code = code;
        self
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        self.code
    }

    /// An error and its chain of causes, `a: b: c`.
    pub fn from_error(context: &str, err: &dyn std::error::Error) -> Self {
        Report::new(format!("error: {context}: {}", chain(err)))
    }
}

impl From<BuildError> for Report {
    /// Complete reports (Dockerfile diagnostics, failed solves) print as they are; other errors
    /// as `error: MESSAGE`.
    fn from(err: BuildError) -> Report {
        match &err {
            BuildError::Canceled { signal } => {
                Report::new("error: build canceled").with_code(signal_exit_code(*signal))
            }
            e if e.is_report() => Report::new(e.to_string()),
            e => Report::new(format!("error: {e}")).with_code(if e.is_usage() { 2 } else { 1 }),
        }
    }
}

impl From<&SpecError> for Report {
    /// `error: MESSAGE`, exit code 2 for the specs buildx treats as usage errors.
    fn from(err: &SpecError) -> Report {
        Report::new(format!("error: {err}")).with_code(if err.is_usage() { 2 } else { 1 })
    }
}

/// The shell's exit code for a process ended by `signal` (128 + N).
fn signal_exit_code(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(1)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_errors_map_to_text_and_exit_codes() {
        let canceled = Report::from(BuildError::Canceled { signal: 2 });
        assert_eq!(canceled.to_string(), "error: build canceled");
        assert_eq!(canceled.exit_code(), 130);
        let usage = Report::from(BuildError::PushWithoutName);
        assert_eq!(
            usage.to_string(),
            "error: --push needs at least one -t NAME"
        );
        assert_eq!(usage.exit_code(), 2);
        let report = Report::from(BuildError::Dockerfile(Box::new(
            rbuild_build::DockerfileError::Entitlement {
                error: rbuild_llb::NotAllowed {
                    entitlement: rbuild_llb::Entitlement::NetworkHost,
                    vertex: 1,
                },
                at: Some(rbuild_build::Lines { start: 2, end: 2 }),
                file: rbuild_build::DockerfileText {
                    name: "Dockerfile".into(),
                    source: "FROM scratch\nRUN --network=host x\n".into(),
                },
            },
        )));
        let text = report.to_string();
        assert!(text.starts_with("Dockerfile:2\n"), "{text}");
        assert!(text.contains("   2 | >>> RUN --network=host x\n"), "{text}");
        assert!(
            text.ends_with(
                "ERROR: network.host is not allowed\nhint: pass `--allow network.host` to `rbuild build` to grant it"
            ),
            "{text}"
        );
        assert_eq!(report.exit_code(), 1);
        let spec = "id=a,x=1".parse::<rbuild_build::SecretSpec>().unwrap_err();
        let spec = Report::from(&spec);
        assert_eq!(
            spec.to_string(),
            "error: invalid secret `id=a,x=1`: unexpected key `x`"
        );
        assert_eq!(spec.exit_code(), 2);
    }
}
