//! Linting a build's Dockerfile (`rbuild check`, `rbuild build --check` and the warnings a
//! normal build lists at its end): reads the Dockerfile the way a build does, the context's
//! `.dockerignore` (for `CopyIgnoredFile`) and hadolint's `.hadolint.yaml`, and runs
//! `rbuild_lint` over the parsed file.

use crate::error::{BuildError, DockerfileError, DockerfileText, InputError};
use rbuild_lint::{HadolintConfig, LintError, LintOptions, Report};
use std::path::{Path, PathBuf};

/// Why a Dockerfile could not be linted.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The context or Dockerfile cannot be read, or the Dockerfile does not parse (the build's
    /// own error and diagnostic).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A bad `# check=` directive or `.hadolint.yaml`.
    #[error(transparent)]
    Lint(#[from] LintError),
}

/// What to lint.
#[derive(Debug, Clone, Default)]
pub struct CheckRequest {
    /// The context directory.
    pub context: PathBuf,
    /// `-f`: the Dockerfile (default: `CONTEXT/Dockerfile`).
    pub dockerfile: Option<PathBuf>,
    /// Names of the `--build-arg`s.
    pub build_args: Vec<String>,
    /// Whether hadolint's rules run as well as BuildKit's (`rbuild check`, `--check`).
    pub hadolint_rules: bool,
    /// The `BUILDKIT_DOCKERFILE_CHECK` build argument (replaces the `# check=` directive).
    pub check_override: Option<String>,
}

/// The `.hadolint.yaml` (or `.hadolint.yml`) that applies: in the context directory, else
/// beside the Dockerfile.
fn hadolint_config(context: &Path, dockerfile: &Path) -> Option<PathBuf> {
    let dirs = [Some(context), dockerfile.parent()];
    dirs.into_iter()
        .flatten()
        .flat_map(|d| [d.join(".hadolint.yaml"), d.join(".hadolint.yml")])
        .find(|p| p.is_file())
}

/// Lints the Dockerfile of a build (blocking file reads).
pub fn check(req: &CheckRequest) -> Result<Report, CheckError> {
    let context = std::fs::canonicalize(&req.context)
        .map_err(|source| InputError::ContextNotFound {
            path: req.context.clone(),
            source,
        })
        .map_err(BuildError::from)?;
    let (path, name) = match &req.dockerfile {
        Some(f) => (f.clone(), f.display().to_string()),
        None => (context.join("Dockerfile"), "Dockerfile".to_string()),
    };
    let source = std::fs::read_to_string(&path)
        .map_err(|source| InputError::ReadDockerfile {
            path: path.clone(),
            source,
        })
        .map_err(BuildError::from)?;
    let ast = rbuild_frontend::parse(&source).map_err(|error| {
        BuildError::Dockerfile(Box::new(DockerfileError::Parse {
            error,
            file: DockerfileText {
                name: name.clone(),
                source: source.clone(),
            },
        }))
    })?;
    let patterns = crate::input::read_dockerignore(&context, &path);
    let matcher = rbuild_worker::dockerignore::Matcher::new(&patterns);
    let ignored = |p: &str| matcher.excluded(p);
    let hadolint = match hadolint_config(&context, &path) {
        Some(p) => {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| LintError::Config(format!("{}: {e}", p.display())))?;
            HadolintConfig::parse(&text)?
        }
        None => HadolintConfig::default(),
    };
    let opts = LintOptions {
        file_name: name,
        build_args: req.build_args.clone(),
        // BuildKit skips the check without a .dockerignore or when it has exceptions.
        dockerignored: (!matcher.is_empty() && !matcher.has_exceptions())
            .then_some(&ignored as &dyn Fn(&str) -> bool),
        hadolint,
        check_override: req.check_override.clone(),
        hadolint_rules: req.hadolint_rules,
    };
    Ok(rbuild_lint::lint(&ast, &opts)?)
}
