//! Image references with Docker's normalisation (`busybox` -> `docker.io/library/busybox:latest`).

use crate::RegistryError;
use rbuild_oci::Digest;
use std::fmt;

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";
const LEGACY_DOCKER_HUB: &str = "index.docker.io";
const MAX_NAME_LEN: usize = 255;

/// A fully normalised image reference: registry, repository and a tag and/or digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host (and port), e.g. `docker.io` or `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path inside the registry, e.g. `library/busybox`.
    pub repository: String,
    /// The tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// The pinned manifest (or index) digest.
    pub digest: Option<Digest>,
}

/// Docker's message for a reference outside the grammar.
const INVALID_FORMAT: &str = "invalid reference format";

fn invalid(s: &str, reason: impl Into<String>) -> RegistryError {
    RegistryError::InvalidReference {
        reference: s.to_string(),
        reason: reason.into(),
    }
}

/// The repository name Docker names in its lowercase error: the part after the domain (with
/// `library/` for a Docker Hub name of one component), up to the first `:`.
fn remote_name(s: &str) -> String {
    let (domain, remainder) = split_domain(s);
    let remote = remainder.split(':').next().unwrap_or_default();
    if domain == DOCKER_HUB && !remote.contains('/') {
        format!("library/{remote}")
    } else {
        remote.to_string()
    }
}

impl Reference {
    /// Parses and normalises a reference the way `docker pull` does, validating it with the
    /// docker/distribution grammar (lowercase path components separated by `.`, `_`, `__` or
    /// dashes, an optional domain with port, a tag `[\w][\w.-]{0,127}`, a digest). Errors carry
    /// Docker's words (`invalid reference format[: repository name (X) must be lowercase]`).
    pub fn parse(s: &str) -> Result<Reference, RegistryError> {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                s,
                format!(
                    "invalid repository name ({s}), cannot specify 64-byte hexadecimal strings"
                ),
            ));
        }
        let remote = remote_name(s);
        if remote.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid(
                s,
                format!("{INVALID_FORMAT}: repository name ({remote}) must be lowercase"),
            ));
        }
        if s.is_empty() || s.trim() != s {
            return Err(invalid(s, INVALID_FORMAT));
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => {
                let digest: Digest = d.parse().map_err(|_| invalid(s, INVALID_FORMAT))?;
                (n, Some(digest))
            }
            None => (s, None),
        };
        // A tag is the part after the last ':' when no '/' follows it (else the ':' is a port).
        let (name, tag) = match name_tag.rfind(':') {
            Some(i) if !name_tag[i + 1..].contains('/') => {
                (&name_tag[..i], Some(&name_tag[i + 1..]))
            }
            _ => (name_tag, None),
        };
        if name.is_empty() || tag.is_some_and(|t| !valid_tag(t)) {
            return Err(invalid(s, INVALID_FORMAT));
        }
        let (registry, mut repository) = split_domain(name);
        if !valid_domain(&registry) || !valid_path(&repository) {
            return Err(invalid(s, INVALID_FORMAT));
        }
        if registry == DOCKER_HUB && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(invalid(
                s,
                format!("repository name must not be more than {MAX_NAME_LEN} characters"),
            ));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The tag or digest a manifest request uses (the digest wins when both are set).
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The short form Docker shows: `busybox:latest`, `foo/bar:1`, `127.0.0.1:5000/x:latest`.
    pub fn familiar(&self) -> String {
        let name = if self.registry == DOCKER_HUB {
            match self.repository.strip_prefix("library/") {
                Some(rest) if !rest.contains('/') => rest.to_string(),
                _ => self.repository.clone(),
            }
        } else {
            self.name()
        };
        self.with_suffix(name)
    }

    fn with_suffix(&self, mut name: String) -> String {
        if let Some(t) = &self.tag {
            name.push(':');
            name.push_str(t);
        }
        if let Some(d) = &self.digest {
            name.push('@');
            name.push_str(&d.to_string());
        }
        name
    }
}

impl fmt::Display for Reference {
    /// The full normalised form, e.g. `docker.io/library/busybox:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.with_suffix(self.name()))
    }
}

impl std::str::FromStr for Reference {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// Docker's `splitDockerDomain` (the classic rule: an all-letters first component such as `UPPER/x`
/// is a Docker Hub namespace, so it is then rejected for its uppercase letters).
fn split_domain(name: &str) -> (String, String) {
    let (domain, rest) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (first.to_string(), rest.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    let domain = if domain == LEGACY_DOCKER_HUB {
        DOCKER_HUB.to_string()
    } else {
        domain
    };
    (domain, rest)
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `host(:port)?` with DNS-label hosts, or a bracketed IPv6 address.
fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        if ip.is_empty() || !ip.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("x", Some(port)),
                None => return false,
            },
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

/// Path components `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` joined by `/`.
fn valid_path(p: &str) -> bool {
    !p.is_empty() && p.split('/').all(valid_component)
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_normalisation() {
        let r = p("busybox");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("docker.io", "library/busybox", Some("latest"))
        );
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.familiar(), "busybox:latest");
        assert_eq!(p("foo/bar:1.0").to_string(), "docker.io/foo/bar:1.0");
        assert_eq!(p("foo/bar:1.0").familiar(), "foo/bar:1.0");
        assert_eq!(
            p("index.docker.io/library/alpine").to_string(),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(p("docker.io/alpine:3").familiar(), "alpine:3");
        let r = p("127.0.0.1:5000/busybox");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "busybox", Some("latest"))
        );
        assert_eq!(r.familiar(), "127.0.0.1:5000/busybox:latest");
        assert_eq!(p("localhost/a/b").registry, "localhost");
        assert_eq!(p("localhost:5000/a/b:v1").manifest_ref(), "v1");
        assert_eq!(p("[::1]:5000/a").registry, "[::1]:5000");
        assert_eq!(p("ghcr.io/o/r/x__y.z-w---q").repository, "o/r/x__y.z-w---q");
    }

    #[test]
    fn digests() {
        let hex = "a".repeat(64);
        let r = p(&format!("x@sha256:{hex}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_ref().unwrap().hex(), hex);
        assert_eq!(r.to_string(), format!("docker.io/library/x@sha256:{hex}"));
        assert_eq!(r.manifest_ref(), format!("sha256:{hex}"));
        let r = p(&format!("127.0.0.1:5000/x:v1@sha256:{hex}"));
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.familiar(), format!("127.0.0.1:5000/x:v1@sha256:{hex}"));
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "Busybox",
            "foo/Bar",
            "a:b:c",
            "x@sha256:abc",
            "x@md5:aa",
            "-x",
            "x-",
            "x..y",
            "a//b",
            "x:",
            ":tag",
            "x:-tag",
            " x",
            "UPPER/x",
            "bad tag",
            "foo:bar:baz",
            "../../x:y",
            "x:y z",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(Reference::parse(&"a".repeat(64)).is_err());
        let e = |s: &str| Reference::parse(s).unwrap_err().to_string();
        assert_eq!(
            e("UPPER/Case:1"),
            "invalid reference format: repository name (UPPER/Case) must be lowercase"
        );
        assert_eq!(
            e("Busybox"),
            "invalid reference format: repository name (library/Busybox) must be lowercase"
        );
        for plain in [
            "",
            "bad tag",
            "foo:bar:baz",
            "../../x:y",
            "x@sha256:abc",
            "a//b",
        ] {
            assert_eq!(e(plain), "invalid reference format", "{plain:?}");
        }
    }
}
