//! Where the Dockerfile and the build context come from: a directory, `-f -` (the Dockerfile on
//! standard input), or `-` as the context (a tar archive, possibly gzip-compressed, on standard
//! input, or a bare Dockerfile with an empty context), as `docker build` accepts them.

use crate::errors::Report;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The resolved inputs of a build. A context received on stdin lives in a temp dir removed on drop.
pub struct BuildInput {
    /// The context directory.
    pub context: PathBuf,
    /// The Dockerfile's path (used to find `NAME.dockerignore`).
    pub dockerfile_path: PathBuf,
    /// The name errors show for the Dockerfile.
    pub dockerfile_name: String,
    /// The Dockerfile's text.
    pub source: String,
    temp: Option<PathBuf>,
}

impl Drop for BuildInput {
    fn drop(&mut self) {
        if let Some(dir) = &self.temp {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// True for `# syntax=` values that name the standard Dockerfile frontend (built in here).
pub fn is_builtin_syntax(syntax: &str) -> bool {
    let name = syntax.split(['@', ':']).next().unwrap_or(syntax);
    matches!(
        name,
        "docker/dockerfile"
            | "docker.io/docker/dockerfile"
            | "docker.io/docker/dockerfile-upstream"
            | "docker/dockerfile-upstream"
    )
}

fn read_stdin() -> Result<Vec<u8>, Report> {
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .map_err(|e| Report::new(format!("error: reading standard input: {e}")))?;
    Ok(buf)
}

fn is_tar(bytes: &[u8]) -> bool {
    bytes.len() >= 262 && &bytes[257..262] == b"ustar"
}

fn temp_dir(root: &Path) -> Result<PathBuf, Report> {
    let dir = root
        .join("tmp")
        .join(format!("stdin-context-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Report::new(format!("error: creating `{}`: {e}", dir.display())))?;
    Ok(dir)
}

/// Resolves the context argument and `-f` into a [`BuildInput`].
pub fn prepare(context_arg: &Path, file: Option<&Path>, root: &Path) -> Result<BuildInput, Report> {
    let file_from_stdin = file == Some(Path::new("-"));
    if context_arg == Path::new("-") {
        if file_from_stdin {
            return Err(Report::new(
                "error: cannot read both the context and the Dockerfile from standard input",
            )
            .with_code(2));
        }
        let mut bytes = read_stdin()?;
        if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .read_to_end(&mut out)
                .map_err(|e| {
                    Report::new(format!("error: context on standard input: bad gzip: {e}"))
                })?;
            bytes = out;
        }
        let dir = temp_dir(root)?;
        if is_tar(&bytes) {
            let mut archive = tar::Archive::new(&bytes[..]);
            archive.set_preserve_permissions(true);
            archive
                .unpack(&dir)
                .map_err(|e| Report::new(format!("error: context on standard input: {e}")))?;
            let dockerfile_path = dir.join(file.unwrap_or(Path::new("Dockerfile")));
            let source = std::fs::read_to_string(&dockerfile_path).map_err(|e| {
                Report::new(format!(
                    "error: failed to read dockerfile `{}` from the context on standard input: {e}",
                    file.unwrap_or(Path::new("Dockerfile")).display()
                ))
            })?;
            let name = file
                .map(|f| f.display().to_string())
                .unwrap_or_else(|| "Dockerfile".into());
            return Ok(BuildInput {
                context: dir.clone(),
                dockerfile_path,
                dockerfile_name: name,
                source,
                temp: Some(dir),
            });
        }
        let source = String::from_utf8(bytes).map_err(|_| {
            Report::new("error: standard input is neither a tar archive nor a UTF-8 Dockerfile")
        })?;
        return Ok(BuildInput {
            context: dir.clone(),
            dockerfile_path: dir.join("Dockerfile"),
            dockerfile_name: "Dockerfile".into(),
            source,
            temp: Some(dir),
        });
    }
    let context = std::fs::canonicalize(context_arg).map_err(|e| {
        Report::new(format!(
            "error: unable to prepare context: path `{}` not found: {e}",
            context_arg.display()
        ))
    })?;
    if file_from_stdin {
        let source = String::from_utf8(read_stdin()?)
            .map_err(|_| Report::new("error: the Dockerfile on standard input is not UTF-8"))?;
        return Ok(BuildInput {
            dockerfile_path: context.join("Dockerfile"),
            context,
            dockerfile_name: "Dockerfile".into(),
            source,
            temp: None,
        });
    }
    let (dockerfile_path, dockerfile_name) = match file {
        Some(f) => (f.to_path_buf(), f.display().to_string()),
        None => (context.join("Dockerfile"), "Dockerfile".to_string()),
    };
    let source = std::fs::read_to_string(&dockerfile_path).map_err(|e| {
        Report::new(format!(
            "error: failed to read dockerfile: open {}: {e}",
            dockerfile_path.display()
        ))
    })?;
    Ok(BuildInput {
        context,
        dockerfile_path,
        dockerfile_name,
        source,
        temp: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_syntax() {
        assert!(is_builtin_syntax("docker/dockerfile:1"));
        assert!(is_builtin_syntax("docker/dockerfile:1.7@sha256:abc"));
        assert!(!is_builtin_syntax("example.com/my/frontend:1"));
    }
}
