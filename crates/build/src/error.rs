//! The errors of a build ([`BuildError`] and the typed parts it carries: [`InputError`],
//! [`DockerfileError`], [`SolveFailure`]) and the text helpers that render BuildKit-style
//! diagnostics: an error's cause chain ([`chain`]) and a Dockerfile excerpt with the failing
//! lines marked. Every variant keeps the typed error it comes from; `Display` renders the text a
//! user sees (the caret diagnostic, the failed RUN's report, `context: cause: cause`).

use crate::spec::SpecError;
use rbuild_frontend::{ConvertError, ParseError};
use rbuild_llb::NotAllowed;
use rbuild_oci::Digest;
use rbuild_registry::RegistryError;
use rbuild_solver::SolveError;
use rbuild_worker::WorkerError;
use std::fmt;
use std::path::PathBuf;

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
    #[error(transparent)]
    Input(#[from] InputError),
    /// The Dockerfile does not parse or convert, or needs an entitlement that was not granted:
    /// the frontend's typed error with what its diagnostic (file, line, caret) needs.
    #[error(transparent)]
    Dockerfile(Box<DockerfileError>),
    /// The solve failed: the solver's error, displayed as BuildKit's report (failed RUN's
    /// output, excerpt, `ERROR: failed to solve: ...`).
    #[error(transparent)]
    Solve(Box<SolveFailure>),
    /// A registry request failed (resolving a base image, pushing the image or the cache, or
    /// setting up the client): `context: cause: cause ...`.
    #[error("{context}: {}", chain(&**source))]
    Registry {
        /// What was being done.
        context: String,
        /// The registry's error.
        #[source]
        source: Box<RegistryError>,
    },
    /// The build was canceled by the caller's cancel future (e.g. on SIGINT), during the solve or
    /// any later phase (export, cache export, push).
    #[error("build canceled")]
    Canceled {
        /// The signal number the cancel future returned.
        signal: i32,
    },
    /// The state root's directory cannot be created.
    #[error("cannot create state directory `{}`: {source}", path.display())]
    StateDir {
        /// The root.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The running program's path (the sandbox helper re-executes it) is unknown.
    #[error("cannot find the rbuild executable: {0}")]
    CurrentExe(#[source] std::io::Error),
    /// The target's result is the build context rather than a filesystem.
    #[error("the build result is not a filesystem")]
    NotAFilesystem,
    /// A registry served a manifest whose bytes do not hash to the digest it announced.
    #[error("manifest of {reference} does not match its digest {digest}")]
    ManifestMismatch {
        /// The base image reference.
        reference: String,
        /// The announced digest.
        digest: Digest,
    },
    /// `push_names` found no image store under the state root.
    #[error("no image store at `{}` (build an image first)", root.display())]
    NoStore {
        /// The state root.
        root: PathBuf,
    },
    /// `push_names` found no image of that name in the store.
    #[error("no image named `{name}` in the local store (see `rbuild images`)")]
    NoSuchImage {
        /// The name as given.
        name: String,
    },
    /// The cache export found no cache key for a vertex the target needs (a bug).
    #[error("cache export: the solve computed no key for a needed vertex")]
    MissingCacheKey,
    /// A docker archive output (`type=docker`, `--load`) of a multi-platform image, refused
    /// with BuildKit's message before any output is written.
    #[error("docker exporter does not currently support exporting manifest lists")]
    DockerManifestList,
    /// A step of the pipeline failed: `context: cause: cause ...`.
    #[error("{context}: {}", chain(&**source))]
    Step {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// An error of the solve that has a place in the Dockerfile (a base image that does not
    /// resolve, at its FROM): displayed as BuildKit's report, the excerpt then `ERROR: failed to
    /// solve: NAME: ERROR`.
    #[error("{}", solve_report(file, Some(*at), &format!("{name}: {error}"), None))]
    Located {
        /// The image or stage name the error is about, as the Dockerfile writes it.
        name: String,
        /// The error.
        #[source]
        error: Box<BuildError>,
        /// The instruction's lines.
        at: Lines,
        /// The Dockerfile.
        file: DockerfileText,
    },
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

/// Why the context or the Dockerfile cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The context directory does not exist.
    #[error("unable to prepare context: path \"{}\" not found", path.display())]
    ContextNotFound {
        /// The path as given.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A named context's directory (`--build-context NAME=DIR`) does not exist.
    #[error("unable to prepare context {name}: path \"{}\" not found", path.display())]
    NamedContextNotFound {
        /// The context's name.
        name: String,
        /// The path as given.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The Dockerfile cannot be read.
    #[error("failed to read dockerfile: open {}: {}", path.display(), io_words(source))]
    ReadDockerfile {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Reading a stream (standard input) failed.
    #[error("reading standard input: {0}")]
    ReadStream(#[source] std::io::Error),
    /// The Dockerfile stream is not UTF-8.
    #[error("the Dockerfile on standard input is not UTF-8")]
    DockerfileNotUtf8,
    /// The context stream is gzip-compressed but does not decompress.
    #[error("context on standard input: bad gzip: {0}")]
    BadGzip(#[source] std::io::Error),
    /// The context stream's temp directory cannot be created.
    #[error("creating `{}`: {source}", path.display())]
    TempDir {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The context stream's tar archive cannot be unpacked.
    #[error("context on standard input: {0}")]
    Unpack(#[source] std::io::Error),
    /// The Dockerfile is missing from the context stream's archive.
    #[error(
        "failed to read dockerfile `{}` from the context on standard input: {source}",
        path.display()
    )]
    DockerfileNotInArchive {
        /// Its path in the archive.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The context stream is neither a tar archive nor a Dockerfile.
    #[error("standard input is neither a tar archive nor a UTF-8 Dockerfile")]
    NotTarOrDockerfile,
}

/// Where a Dockerfile diagnostic points: the file's name as diagnostics show it and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerfileText {
    /// The name (`Dockerfile`, or the `-f` path).
    pub name: String,
    /// The whole text.
    pub source: String,
}

/// The lines of the Dockerfile an instruction spans (1-based, inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lines {
    /// First line.
    pub start: usize,
    /// Last line.
    pub end: usize,
}

/// A Dockerfile that does not build before anything runs: the frontend's typed error and the
/// file it is about. `Display` is the BuildKit-style diagnostic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DockerfileError {
    /// The Dockerfile does not parse.
    #[error("{}", parse_report(error, file))]
    Parse {
        /// The parser's error.
        #[source]
        error: ParseError,
        /// The file.
        file: DockerfileText,
    },
    /// The Dockerfile does not convert (e.g. an unknown stage, a bad flag value).
    #[error("{}", convert_report(error, file))]
    Convert {
        /// The converter's error.
        #[source]
        error: ConvertError,
        /// The file.
        file: DockerfileText,
    },
    /// The graph needs an entitlement that was not granted.
    #[error("{}", entitlement_report(error, file, *at))]
    Entitlement {
        /// The missing entitlement and the vertex needing it.
        #[source]
        error: NotAllowed,
        /// The instruction of that vertex, when known.
        at: Option<Lines>,
        /// The file.
        file: DockerfileText,
    },
}

impl DockerfileError {
    /// The Dockerfile it is about.
    pub fn file(&self) -> &DockerfileText {
        match self {
            DockerfileError::Parse { file, .. }
            | DockerfileError::Convert { file, .. }
            | DockerfileError::Entitlement { file, .. } => file,
        }
    }
}

/// The one error style, BuildKit's: the Dockerfile excerpt at `at` (when the error has a
/// location), then `ERROR: failed to solve: MESSAGE`, then a `hint: ...` line if there is one.
pub fn solve_report(
    file: &DockerfileText,
    at: Option<Lines>,
    message: &str,
    hint: Option<&str>,
) -> String {
    let mut text = String::new();
    if let Some(lines) = at {
        let shown = excerpt(&file.name, &file.source, lines.start, lines.end);
        if !shown.is_empty() {
            text.push_str(&shown);
            text.push('\n');
        }
    }
    text.push_str("ERROR: failed to solve: ");
    text.push_str(message);
    if let Some(hint) = hint {
        text.push_str("\nhint: ");
        text.push_str(hint);
    }
    text
}

/// BuildKit's report of a parse error: the excerpt at its line, `ERROR: failed to solve:
/// dockerfile parse error on line N: ...`.
fn parse_report(error: &ParseError, file: &DockerfileText) -> String {
    let at = error.has_line().then_some(Lines {
        start: error.line,
        end: error.line,
    });
    solve_report(file, at, &error.buildkit_message(), None)
}

/// BuildKit's report of a conversion error: the excerpt at the instruction, `ERROR: failed to
/// solve: ...`, rbuild's hint.
fn convert_report(error: &ConvertError, file: &DockerfileText) -> String {
    let at = error.span.map(|s| Lines {
        start: s.start_line,
        end: s.end_line.max(s.start_line),
    });
    solve_report(file, at, &error.buildkit_message(), error.hint.as_deref())
}

/// BuildKit's report of a missing entitlement: excerpt, `ERROR: failed to solve: ...`, a hint
/// naming `--allow`.
fn entitlement_report(error: &NotAllowed, file: &DockerfileText, at: Option<Lines>) -> String {
    let hint = format!(
        "pass `--allow {}` to `rbuild build` to grant it",
        error.entitlement
    );
    solve_report(file, at, &error.to_string(), Some(&hint))
}

/// A failed solve: the solver's error, the failing instruction's lines and the Dockerfile.
/// `Display` is BuildKit's report: the failed RUN's last output lines, the Dockerfile excerpt at
/// the failing instruction, `ERROR: failed to solve: ...`.
#[derive(Debug)]
pub struct SolveFailure {
    /// The solver's error.
    pub error: SolveError<WorkerError>,
    /// The failing instruction's lines, when known.
    pub at: Option<Lines>,
    /// The Dockerfile.
    pub file: DockerfileText,
}

impl SolveFailure {
    /// The failing vertex's display name (e.g. `[2/3] RUN make`), when a vertex failed.
    pub fn vertex_name(&self) -> Option<&str> {
        match &self.error {
            SolveError::Exec { name, .. } | SolveError::CacheKey { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The worker's error of the failing vertex, when a vertex failed.
    pub fn worker_error(&self) -> Option<&WorkerError> {
        match &self.error {
            SolveError::Exec { source, .. } | SolveError::CacheKey { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The exit code of a failed RUN (128 + N when killed by signal N; 137 for an OOM kill).
    pub fn exit_code(&self) -> Option<i32> {
        match self.worker_error()? {
            WorkerError::RunFailed { code, .. } => Some(*code),
            WorkerError::OutOfMemory { .. } => Some(137),
            _ => None,
        }
    }

    /// The last lines of a failed RUN's output.
    pub fn run_output_tail(&self) -> Option<&[String]> {
        self.worker_error()?.run_output_tail()
    }
}

impl fmt::Display for SolveFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(name), Some(tail)) = (self.vertex_name(), self.run_output_tail()) {
            if !tail.is_empty() {
                writeln!(f, "------\n > {name}:")?;
                for line in tail {
                    writeln!(f, "{line}")?;
                }
                writeln!(f, "------")?;
            }
        }
        if let Some(lines) = self.at {
            let shown = excerpt(&self.file.name, &self.file.source, lines.start, lines.end);
            if !shown.is_empty() {
                writeln!(f, "{shown}")?;
            }
        }
        let message = match self.worker_error() {
            Some(cause) => chain(cause),
            None => chain(&self.error),
        };
        write!(f, "ERROR: failed to solve: {message}")
    }
}

impl std::error::Error for SolveFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl BuildError {
    /// A [`BuildError::Step`] of `source` while doing `context`.
    pub fn step(context: impl Into<String>, source: impl Into<BoxError>) -> BuildError {
        BuildError::Step {
            context: context.into(),
            source: source.into(),
        }
    }

    /// `error` in `context`; an index without the wanted platform gets the platforms it has as a
    /// hint (BuildKit's message names none).
    pub(crate) fn registry_with_platforms(context: String, error: RegistryError) -> BuildError {
        let available = match &error {
            RegistryError::NoMatchingPlatform {
                available,
                platform,
                ..
            } => Some((platform.clone(), available.clone())),
            _ => None,
        };
        let error = BuildError::registry(context, error);
        match available {
            Some((wanted, list)) => BuildError::Hint {
                error: Box::new(error),
                hint: format!(
                    "the image is not built for {wanted}; its index has: {}",
                    if list.is_empty() {
                        "no platforms"
                    } else {
                        &list
                    }
                ),
            },
            None => error,
        }
    }

    /// A [`BuildError::Registry`] of `source` while doing `context`.
    pub fn registry(context: impl Into<String>, source: RegistryError) -> BuildError {
        BuildError::Registry {
            context: context.into(),
            source: Box::new(source),
        }
    }

    /// True when the text is a complete report (not a one-line message).
    pub fn is_report(&self) -> bool {
        matches!(
            self,
            BuildError::Dockerfile(_) | BuildError::Solve(_) | BuildError::Located { .. }
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

    /// The registry's error behind this one (auth refused, image not found, stalled, ...):
    /// a [`BuildError::Registry`], or a solve step (pull) or pipeline step that failed on one.
    pub fn registry_error(&self) -> Option<&RegistryError> {
        match self {
            BuildError::Registry { source, .. } => Some(&**source),
            BuildError::Hint { error, .. } | BuildError::Located { error, .. } => {
                error.registry_error()
            }
            BuildError::Solve(failure) => match failure.worker_error()? {
                WorkerError::Registry(e) => Some(e),
                _ => None,
            },
            BuildError::Step { source, .. } => {
                let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&**source);
                while let Some(e) = next {
                    if let Some(r) = e.downcast_ref::<RegistryError>() {
                        return Some(r);
                    }
                    next = e.source();
                }
                None
            }
            _ => None,
        }
    }

    /// The failed solve, when the build failed there.
    pub fn solve_failure(&self) -> Option<&SolveFailure> {
        match self {
            BuildError::Solve(failure) => Some(failure),
            _ => None,
        }
    }
}

/// An I/O error in Go's words, as BuildKit prints it (`no such file or directory`), without
/// Rust's `(os error N)`.
fn io_words(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::IsADirectory => "is a directory".into(),
        _ => {
            let text = err.to_string();
            match text.find(" (os error ") {
                Some(i) => text[..i].to_lowercase(),
                None => text,
            }
        }
    }
}

/// `err` and its sources joined with `: ` (a source whose text is already there is skipped).
#[doc(hidden)]
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

/// BuildKit's excerpt of the Dockerfile at lines `start..=end` (1-based), as its
/// `errdefs.Source.Print` draws it: the header names the first line only; the failing lines are
/// marked `>>>`; context is two lines each side for one line, one for a multi-line instruction;
/// the file is cut at every `\n`, so a final newline shows as an empty last line. Empty when
/// the lines are not in the file.
pub(crate) fn excerpt(file_name: &str, source: &str, start: usize, end: usize) -> String {
    let lines: Vec<&str> = source
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    if start < 1 || start > lines.len() {
        return String::new();
    }
    let mut out = format!("{file_name}:{start}\n--------------------\n");
    let end = end.clamp(start, lines.len());
    let context = if start == end { 2 } else { 1 };
    let from = start.saturating_sub(context).max(1);
    let to = (end + context).min(lines.len());
    for n in from..=to {
        let marker = if (start..=end).contains(&n) {
            ">>>"
        } else {
            "   "
        };
        out.push_str(&format!("{n:>4} | {marker} {}\n", lines[n - 1]));
    }
    out.push_str("--------------------");
    out
}

/// Runs blocking work (file I/O, hashing) off the tokio workers, for the pipeline's errors.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BuildError> + Send + 'static,
) -> Result<T, BuildError> {
    blocking_with(f).await
}

/// [`blocking`] for any error type: a task that panicked or was cancelled becomes the error
/// type's `From<TaskFailed>`.
pub(crate) async fn blocking_with<T: Send + 'static, E: From<TaskFailed> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| E::from(TaskFailed(e.to_string())))?
}

/// A blocking task that did not finish (it panicked or was cancelled), with the runtime's words.
pub(crate) struct TaskFailed(pub(crate) String);

impl From<TaskFailed> for BuildError {
    fn from(e: TaskFailed) -> Self {
        BuildError::Task(e.0)
    }
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
        // As BuildKit: the header names the first line; one line of context around a
        // multi-line instruction; the final newline is an empty last line.
        assert_eq!(
            excerpt("Dockerfile", src, 2, 3),
            "Dockerfile:2\n--------------------\n   1 |     FROM a\n   2 | >>> RUN b\n\
             \x20  3 | >>> RUN c\n   4 |     RUN d\n--------------------"
        );
        assert_eq!(
            excerpt("Dockerfile", src, 4, 4),
            "Dockerfile:4\n--------------------\n   2 |     RUN b\n   3 |     RUN c\n\
             \x20  4 | >>> RUN d\n   5 |     \n--------------------"
        );
        assert_eq!(excerpt("Dockerfile", src, 9, 9), "");
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

    #[test]
    fn registry_errors_are_reachable_and_display_as_steps() {
        let reg = RegistryError::Setup("no CA".into());
        let shown = BuildError::step("registry client", RegistryError::Setup("no CA".into()));
        let typed = BuildError::registry("registry client", reg);
        assert_eq!(typed.to_string(), shown.to_string());
        assert!(matches!(
            typed.registry_error(),
            Some(RegistryError::Setup(_))
        ));
        assert!(matches!(
            shown.registry_error(),
            Some(RegistryError::Setup(_))
        ));
        let hinted = BuildError::Hint {
            error: Box::new(typed),
            hint: "h".into(),
        };
        assert!(hinted.registry_error().is_some());
        assert!(BuildError::NotAFilesystem.registry_error().is_none());
    }

    #[test]
    fn dockerfile_errors_render_as_buildkit() {
        let source = "FROM scratch\nRUNN x\n";
        let error = rbuild_frontend::parse(source).unwrap_err();
        let e = BuildError::Dockerfile(Box::new(DockerfileError::Parse {
            error,
            file: DockerfileText {
                name: "Dockerfile".into(),
                source: source.into(),
            },
        }));
        assert!(e.is_report());
        assert_eq!(
            e.to_string(),
            "Dockerfile:2\n--------------------\n   1 |     FROM scratch\n   2 | >>> RUNN x\n\
             \x20  3 |     \n--------------------\nERROR: failed to solve: dockerfile parse error on line 2: \
             unknown instruction: RUNN (did you mean RUN?)"
        );
    }

    #[test]
    fn located_errors_show_the_line_and_the_name() {
        let file = DockerfileText {
            name: "Dockerfile".into(),
            source: "FROM a:1\nRUN x\n".into(),
        };
        let e = BuildError::Located {
            name: "a:1".into(),
            error: Box::new(BuildError::registry(
                "failed to resolve source metadata for docker.io/library/a:1",
                RegistryError::Setup("no CA".into()),
            )),
            at: Lines { start: 1, end: 1 },
            file,
        };
        assert!(e.is_report());
        assert!(e.registry_error().is_some());
        let text = e.to_string();
        assert!(text.starts_with("Dockerfile:1\n"), "{text}");
        assert!(text.contains("   1 | >>> FROM a:1\n"), "{text}");
        assert!(
            text.ends_with(
                "ERROR: failed to solve: a:1: failed to resolve source metadata for \
                 docker.io/library/a:1: registry client setup: no CA"
            ),
            "{text}"
        );
    }
}
