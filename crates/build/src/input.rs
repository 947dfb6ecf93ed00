//! Where the Dockerfile and the build context come from: a directory, a Dockerfile stream
//! (`-f -`), or a context stream (a tar archive, possibly gzip-compressed, or a bare Dockerfile
//! with an empty context), as `docker build` accepts them on standard input.

use crate::error::{BuildError, InputError};
use crate::request::{ContextSource, DockerfileSource};
use crate::spec::{BuildContextSource, BuildContextSpec};
use crate::state::StateDir;
use rbuild_frontend::{named_source_name, NamedContext};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The resolved inputs of a build. A streamed context lives in a unique temp dir under the
/// root's [`StateDir::tmp`], removed on drop.
pub(crate) struct BuildInput {
    /// The context directory.
    pub context: PathBuf,
    /// The Dockerfile's path (used to find `NAME.dockerignore`).
    pub dockerfile_path: PathBuf,
    /// The name errors show for the Dockerfile.
    pub dockerfile_name: String,
    /// The Dockerfile's text.
    pub source: String,
    /// The streamed context's temp dir (removed when dropped).
    _temp: Option<tempfile::TempDir>,
}

impl BuildInput {
    /// Takes the streamed context's temp dir (its owner then keeps the context alive).
    pub(crate) fn take_temp(&mut self) -> Option<tempfile::TempDir> {
        self._temp.take()
    }
}

/// True for `# syntax=` values that name the standard Dockerfile frontend (built in here).
pub(crate) fn is_builtin_syntax(syntax: &str) -> bool {
    let name = syntax.split(['@', ':']).next().unwrap_or(syntax);
    matches!(
        name,
        "docker/dockerfile"
            | "docker.io/docker/dockerfile"
            | "docker.io/docker/dockerfile-upstream"
            | "docker/dockerfile-upstream"
    )
}

fn read_all(mut stream: Box<dyn Read + Send>) -> Result<Vec<u8>, BuildError> {
    let mut buf = Vec::new();
    stream
        .read_to_end(&mut buf)
        .map_err(InputError::ReadStream)?;
    Ok(buf)
}

/// Streamed contexts are `tmp/build/stdin-context-<pid>-<random>`.
const STREAM_PREFIX: &str = "stdin-context-";

/// Removes the streamed-context directories in `parent` whose process is gone (best effort: a
/// directory that cannot be removed is left for the next sweep).
fn sweep_dead(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(STREAM_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn is_tar(bytes: &[u8]) -> bool {
    bytes.len() >= 262 && &bytes[257..262] == b"ustar"
}

/// A new, unique directory for a streamed context (concurrent builds of one root, in one process
/// or several, each get their own), world-readable as a context directory is. Its name carries
/// the process id, so directories that killed processes left behind are swept here.
fn temp_dir(state: &StateDir) -> Result<tempfile::TempDir, InputError> {
    use std::os::unix::fs::PermissionsExt;
    let parent = state.tmp();
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InputError::TempDir { path, source }
    };
    std::fs::create_dir_all(&parent).map_err(err(&parent))?;
    sweep_dead(&parent);
    let prefix = format!("{STREAM_PREFIX}{}-", std::process::id());
    let dir = tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(&parent)
        .map_err(err(&parent))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(err(dir.path()))?;
    Ok(dir)
}

/// Resolves the context and the Dockerfile into a [`BuildInput`] (blocking I/O).
pub(crate) fn prepare(
    context: ContextSource,
    dockerfile: DockerfileSource,
    state: &StateDir,
) -> Result<BuildInput, BuildError> {
    let (file, file_stream) = match dockerfile {
        DockerfileSource::Default => (None, None),
        DockerfileSource::Path(p) => (Some(p), None),
        DockerfileSource::Stream(s) => (None, Some(s)),
    };
    let context_arg = match context {
        ContextSource::Stream(_) if file_stream.is_some() => return Err(BuildError::BothFromStdin),
        ContextSource::Stream(stream) => return from_stream(stream, file.as_deref(), state),
        ContextSource::Dir(dir) => dir,
    };
    let context =
        std::fs::canonicalize(&context_arg).map_err(|source| InputError::ContextNotFound {
            path: context_arg.clone(),
            source,
        })?;
    if let Some(stream) = file_stream {
        let source =
            String::from_utf8(read_all(stream)?).map_err(|_| InputError::DockerfileNotUtf8)?;
        return Ok(BuildInput {
            dockerfile_path: context.join("Dockerfile"),
            context,
            dockerfile_name: "Dockerfile".into(),
            source,
            _temp: None,
        });
    }
    let (dockerfile_path, dockerfile_name) = match file {
        Some(f) => (f.clone(), f.display().to_string()),
        None => (context.join("Dockerfile"), "Dockerfile".to_string()),
    };
    let source =
        std::fs::read_to_string(&dockerfile_path).map_err(|source| InputError::ReadDockerfile {
            path: dockerfile_path.clone(),
            source,
        })?;
    Ok(BuildInput {
        context,
        dockerfile_path,
        dockerfile_name,
        source,
        _temp: None,
    })
}

fn from_stream(
    stream: Box<dyn Read + Send>,
    file: Option<&Path>,
    state: &StateDir,
) -> Result<BuildInput, BuildError> {
    let mut bytes = read_all(stream)?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(InputError::BadGzip)?;
        bytes = out;
    }
    let temp = temp_dir(state)?;
    let dir = temp.path().to_path_buf();
    if is_tar(&bytes) {
        let mut archive = tar::Archive::new(&bytes[..]);
        archive.set_preserve_permissions(true);
        archive.unpack(&dir).map_err(InputError::Unpack)?;
        let in_archive = file.unwrap_or(Path::new("Dockerfile"));
        let dockerfile_path = dir.join(in_archive);
        let source = std::fs::read_to_string(&dockerfile_path).map_err(|source| {
            InputError::DockerfileNotInArchive {
                path: in_archive.to_path_buf(),
                source,
            }
        })?;
        let name = file
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| "Dockerfile".into());
        return Ok(BuildInput {
            context: dir.clone(),
            dockerfile_path,
            dockerfile_name: name,
            source,
            _temp: Some(temp),
        });
    }
    let source = String::from_utf8(bytes).map_err(|_| InputError::NotTarOrDockerfile)?;
    Ok(BuildInput {
        context: dir.clone(),
        dockerfile_path: dir.join("Dockerfile"),
        dockerfile_name: "Dockerfile".into(),
        source,
        _temp: Some(temp),
    })
}

/// The named contexts for the frontend, and the directories for the worker by source name.
pub(crate) type NamedContexts = (BTreeMap<String, NamedContext>, HashMap<String, PathBuf>);

/// The named contexts of a request as the frontend sees them (a directory with its own
/// `.dockerignore`, or an image reference) and the directories the worker serves, by llb source
/// name. A relative directory is taken from the current directory, as buildx does; a later
/// spec of the same name wins.
pub(crate) fn named_contexts(specs: &[BuildContextSpec]) -> Result<NamedContexts, BuildError> {
    let mut named = BTreeMap::new();
    let mut dirs = HashMap::new();
    for spec in specs {
        let context = match &spec.source {
            BuildContextSource::Image(reference) => NamedContext::Image(reference.clone()),
            BuildContextSource::Dir(path) => {
                let dir = std::fs::canonicalize(path)
                    .and_then(|d| {
                        if d.is_dir() {
                            Ok(d)
                        } else {
                            Err(std::io::Error::other("not a directory"))
                        }
                    })
                    .map_err(|source| InputError::NamedContextNotFound {
                        name: spec.name.clone(),
                        path: path.clone(),
                        source,
                    })?;
                let text = std::fs::read_to_string(dir.join(".dockerignore")).unwrap_or_default();
                dirs.insert(named_source_name(&spec.name), dir);
                NamedContext::Local {
                    excludes: rbuild_worker::dockerignore::Matcher::lines_of(&text),
                }
            }
        };
        named.insert(spec.name.clone(), context);
    }
    Ok((named, dirs))
}

/// The `.dockerignore` patterns of a build: `NAME.dockerignore` beside the Dockerfile wins over
/// the context's.
pub(crate) fn read_dockerignore(context: &Path, dockerfile: &Path) -> Vec<String> {
    let specific = dockerfile
        .file_name()
        .map(|n| dockerfile.with_file_name(format!("{}.dockerignore", n.to_string_lossy())));
    let text = specific
        .and_then(|p| std::fs::read_to_string(p).ok())
        .or_else(|| std::fs::read_to_string(context.join(".dockerignore")).ok())
        .unwrap_or_default();
    rbuild_worker::dockerignore::Matcher::lines_of(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_of_dead_processes_are_swept_live_ones_kept() {
        let state_dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(state_dir.path());
        let parent = state.tmp();
        // A pid above the kernel's maximum (2^22) never runs.
        let dead = parent.join(format!("{STREAM_PREFIX}4194305-abc"));
        let live = parent.join(format!("{STREAM_PREFIX}{}-def", std::process::id()));
        let other = parent.join("something-else");
        for d in [&dead, &live, &other] {
            std::fs::create_dir_all(d.join("sub")).unwrap();
        }
        let new = temp_dir(&state).unwrap();
        assert!(!dead.exists(), "a dead process's context is swept");
        assert!(
            live.exists() && other.exists(),
            "live and foreign entries are kept"
        );
        assert!(new
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("{STREAM_PREFIX}{}-", std::process::id())));
    }

    #[test]
    fn builtin_syntax() {
        assert!(is_builtin_syntax("docker/dockerfile:1"));
        assert!(is_builtin_syntax("docker/dockerfile:1.7@sha256:abc"));
        assert!(!is_builtin_syntax("example.com/my/frontend:1"));
    }

    #[test]
    fn a_streamed_dockerfile_becomes_an_empty_context() {
        let state_dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(state_dir.path());
        let input = prepare(
            ContextSource::Stream(Box::new(&b"FROM scratch\n"[..])),
            DockerfileSource::Default,
            &state,
        )
        .unwrap();
        assert_eq!(input.source, "FROM scratch\n");
        let dir = input.context.clone();
        assert!(dir.starts_with(state.tmp()));
        // A second streamed context of the same root (another build, same process) is its own.
        let other = prepare(
            ContextSource::Stream(Box::new(&b"FROM busybox\n"[..])),
            DockerfileSource::Default,
            &state,
        )
        .unwrap();
        assert_ne!(other.context, dir);
        drop(input);
        assert!(!dir.exists(), "the temp context is removed on drop");
        assert!(
            other.context.exists(),
            "the other build's context is left alone"
        );
        drop(other);
        let both = prepare(
            ContextSource::Stream(Box::new(&b""[..])),
            DockerfileSource::Stream(Box::new(&b""[..])),
            &state,
        );
        assert!(matches!(both, Err(BuildError::BothFromStdin)));
    }
}
