//! The errors of a build ([`BuildError`]) and the text helpers that render BuildKit-style
//! diagnostics: an error's cause chain ([`chain`]) and a Dockerfile excerpt with the failing
//! lines marked ([`excerpt`]).

use crate::spec::SpecError;

/// A boxed error from one of the pipeline's crates.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a build failed. Most variants display as a one-line message (a CLI prefixes `error: `);
/// the [`BuildError::is_report`] ones are complete multi-line reports (Dockerfile excerpt,
/// failed RUN output) to be shown as they are.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The context and the Dockerfile were both given as streams (both "standard input").
    #[error("cannot read both the context and the Dockerfile from standard input")]
    BothFromStdin,
    /// A push was asked for (`push`) without any name to push to.
    #[error("--push needs at least one -t NAME")]
    PushWithoutName,
    /// An invalid spec (when a spec reaches the library unparsed).
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The context or the Dockerfile cannot be read.
    #[error("{0}")]
    Input(String),
    /// The Dockerfile does not parse or convert: the rendered diagnostic (file, line, caret).
    #[error("{0}")]
    Dockerfile(String),
    /// The graph needs an entitlement that was not granted: the rendered report.
    #[error("{0}")]
    Entitlement(String),
    /// The solve failed: the rendered report (failed RUN's output, excerpt, `ERROR: ...`).
    #[error("{report}")]
    Solve {
        /// The rendered report.
        report: String,
        /// The solver's error.
        #[source]
        source: Box<rbuild_solver::SolveError<rbuild_worker::WorkerError>>,
    },
    /// The build was canceled by the caller's cancel future (e.g. on SIGINT), during the solve or
    /// any later phase (export, cache export, push).
    #[error("build canceled")]
    Canceled {
        /// The signal number the cancel future returned.
        signal: i32,
    },
    /// A step of the pipeline failed: `context: cause: cause ...`.
    #[error("{context}: {}", chain(&**source))]
    Step {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// A failure described by its message alone.
    #[error("{0}")]
    Failed(String),
    /// An error with a hint for the user on the next line.
    #[error("{error}\nhint: {hint}")]
    Hint {
        /// The error.
        error: Box<BuildError>,
        /// The hint.
        hint: String,
    },
    /// A blocking task of the pipeline panicked or was canceled.
    #[error("internal task failed: {0}")]
    Task(String),
}

impl BuildError {
    /// A [`BuildError::Step`] of `source` while doing `context`.
    pub fn step(context: impl Into<String>, source: impl Into<BoxError>) -> BuildError {
        BuildError::Step {
            context: context.into(),
            source: source.into(),
        }
    }

    /// True when the text is a complete report (not a one-line message).
    pub fn is_report(&self) -> bool {
        matches!(
            self,
            BuildError::Dockerfile(_) | BuildError::Entitlement(_) | BuildError::Solve { .. }
        )
    }

    /// True for errors in how the build was asked for (a CLI's usage errors, exit code 2).
    pub fn is_usage(&self) -> bool {
        match self {
            BuildError::BothFromStdin | BuildError::PushWithoutName => true,
            BuildError::Spec(e) => e.is_usage(),
            _ => false,
        }
    }
}

/// `err` and its sources joined with `: ` (a source whose text is already there is skipped).
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// BuildKit's excerpt of the Dockerfile around lines `start..=end` (1-based), failing lines
/// marked `>>>`.
pub fn excerpt(file_name: &str, source: &str, start: usize, end: usize) -> String {
    let lines: Vec<&str> = source.lines().collect();
    let mut out = String::new();
    if start == end {
        out.push_str(&format!("{file_name}:{start}\n"));
    } else {
        out.push_str(&format!("{file_name}:{start}-{end}\n"));
    }
    out.push_str("--------------------\n");
    let from = start.saturating_sub(2).max(1);
    let to = (end + 2).min(lines.len());
    for n in from..=to {
        let text = lines.get(n - 1).copied().unwrap_or("");
        let marker = if n >= start && n <= end { ">>>" } else { "   " };
        out.push_str(&format!("{n:>4} | {marker} {text}\n"));
    }
    out.push_str("--------------------");
    out
}

/// Runs `f` on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BuildError> + Send + 'static,
) -> Result<T, BuildError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BuildError::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_marks_the_failing_line() {
        let src = "FROM a\nRUN b\nRUN c\nRUN d\n";
        let e = excerpt("Dockerfile", src, 3, 3);
        assert!(e.starts_with("Dockerfile:3\n"));
        assert!(e.contains("   3 | >>> RUN c"));
        assert!(e.contains("   2 |     RUN b"));
    }

    #[test]
    fn step_errors_chain_their_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = BuildError::step("opening snapshots", io);
        assert_eq!(e.to_string(), "opening snapshots: gone");
        let hinted = BuildError::Hint {
            error: Box::new(e),
            hint: "try again".into(),
        };
        assert_eq!(
            hinted.to_string(),
            "opening snapshots: gone\nhint: try again"
        );
        assert!(!hinted.is_report());
        assert!(BuildError::PushWithoutName.is_usage());
    }
}
