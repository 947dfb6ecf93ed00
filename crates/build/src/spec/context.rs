//! `--build-context` specs (buildx's syntax): `NAME=DIR` or `NAME=docker-image://REF`.

use super::SpecError;
use std::path::PathBuf;
use std::str::FromStr;

/// Where a named context comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildContextSource {
    /// A local directory (with its own `.dockerignore`).
    Dir(PathBuf),
    /// An image reference (`docker-image://REF`).
    Image(String),
}

/// One `--build-context NAME=VALUE`: a named context that replaces the stage or image `NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildContextSpec {
    /// The name `FROM`, `COPY --from` and `RUN --mount from=` use.
    pub name: String,
    /// What it stands for.
    pub source: BuildContextSource,
}

impl FromStr for BuildContextSpec {
    type Err = SpecError;

    fn from_str(raw: &str) -> Result<Self, SpecError> {
        let bad = |why: &str| SpecError::BuildContext {
            spec: raw.to_string(),
            why: why.to_string(),
        };
        let (name, value) = raw
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=VALUE"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(bad("the name is empty"));
        }
        if value.is_empty() {
            return Err(bad("the value is empty"));
        }
        let source = if let Some(reference) = value.strip_prefix("docker-image://") {
            if reference.is_empty() {
                return Err(bad("docker-image:// needs a reference"));
            }
            BuildContextSource::Image(reference.to_string())
        } else if let Some((scheme, _)) = value.split_once("://") {
            return Err(bad(&format!(
                "unsupported context source `{scheme}://` (supported: a directory, docker-image://)"
            )));
        } else {
            BuildContextSource::Dir(PathBuf::from(value))
        };
        Ok(BuildContextSpec {
            name: name.to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dirs_and_images() {
        let d: BuildContextSpec = "lib=../lib".parse().unwrap();
        assert_eq!(d.name, "lib");
        assert_eq!(d.source, BuildContextSource::Dir("../lib".into()));
        let i: BuildContextSpec = "alpine=docker-image://busybox:1".parse().unwrap();
        assert_eq!(i.source, BuildContextSource::Image("busybox:1".into()));
        for bad in [
            "lib",
            "=dir",
            "x=",
            "x=docker-image://",
            "x=git://host/repo",
        ] {
            assert!(bad.parse::<BuildContextSpec>().is_err(), "{bad}");
        }
    }
}
