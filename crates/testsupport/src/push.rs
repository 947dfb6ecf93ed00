//! Pushing OCI layouts to a registry and inspecting pushed images with skopeo.

use crate::{
    io_err, make_busybox_layout, make_busybox_multiarch_layout, need_tool, run, TestError,
    TestRegistry,
};
use rbuild_oci::Digest;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `skopeo copy --all --dest-tls-verify=false oci:LAYOUT:latest docker://REF` (digests preserved).
pub fn push_layout(layout: &Path, reference: &str) -> Result<(), TestError> {
    push_layout_with_creds(layout, reference, None)
}

/// [`push_layout`] to a registry that needs `user:password` (`--dest-creds`).
pub fn push_layout_with_creds(
    layout: &Path,
    reference: &str,
    creds: Option<(&str, &str)>,
) -> Result<(), TestError> {
    let creds = creds.map(|(u, p)| format!("{u}:{p}"));
    let mut cmd = skopeo("copy", creds.as_deref())?;
    cmd.args([
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "-q",
    ]);
    run(cmd
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{reference}")))?;
    Ok(())
}

/// The `Digest` field of `skopeo inspect` for `docker://REF`.
pub fn skopeo_digest(reference: &str) -> Result<Digest, TestError> {
    let out = run(skopeo("inspect", None)?
        .args(["--tls-verify=false", "--no-tags"])
        .arg(format!("docker://{reference}")))?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| TestError::Other(format!("skopeo inspect output: {e}: {out}")))?;
    let d = v
        .get("Digest")
        .and_then(|d| d.as_str())
        .ok_or_else(|| TestError::Other(format!("skopeo inspect printed no Digest: {out}")))?;
    d.parse()
        .map_err(|e| TestError::Other(format!("skopeo inspect Digest: {e}")))
}

/// An empty (`{}`) auth file for skopeo, so it never reads the host's credentials
/// (`~/.docker/config.json`, `$XDG_RUNTIME_DIR/containers/auth.json`); removed on drop.
#[derive(Debug)]
pub struct EmptyAuthFile(tempfile::TempDir);

impl EmptyAuthFile {
    /// Writes `auth.json` (`{}`) in a fresh temp directory.
    pub fn new() -> Result<EmptyAuthFile, TestError> {
        let dir = tempfile::tempdir().map_err(io_err("create temp dir", std::env::temp_dir()))?;
        let path = dir.path().join("auth.json");
        std::fs::write(&path, "{}\n").map_err(io_err("write", &path))?;
        Ok(EmptyAuthFile(dir))
    }

    /// The file.
    pub fn path(&self) -> PathBuf {
        self.0.path().join("auth.json")
    }
}

/// A `skopeo` command that reads no credentials of the host: it carries its own
/// [`EmptyAuthFile`] (kept alive as long as the command) and derefs to the [`Command`], so
/// arguments chain as usual (`skopeo("inspect", None)?.arg(..).output()`).
#[derive(Debug)]
pub struct Skopeo {
    cmd: Command,
    _auth: EmptyAuthFile,
}

impl Deref for Skopeo {
    type Target = Command;
    fn deref(&self) -> &Command {
        &self.cmd
    }
}

impl DerefMut for Skopeo {
    fn deref_mut(&mut self) -> &mut Command {
        &mut self.cmd
    }
}

/// `skopeo --insecure-policy SUBCOMMAND --authfile EMPTY`, plus `--creds USER:PASS` (for `copy`:
/// `--src-creds` and `--dest-creds`) when `creds` are given: the only way tests run skopeo
/// against a registry, so neither `~/.docker/config.json` nor `auth.json` of the host is read
/// (the `hygiene` test of the rbuild crate checks this). Add the remaining flags and references.
pub fn skopeo(subcommand: &str, creds: Option<&str>) -> Result<Skopeo, TestError> {
    let bin = need_tool("skopeo")?;
    let auth = EmptyAuthFile::new()?;
    let mut cmd = Command::new(bin);
    cmd.args(["--insecure-policy", subcommand])
        .arg("--authfile")
        .arg(auth.path());
    if let Some(c) = creds {
        if subcommand == "copy" || subcommand == "sync" {
            cmd.args(["--src-creds", c, "--dest-creds", c]);
        } else {
            cmd.args(["--creds", c]);
        }
    }
    Ok(Skopeo { cmd, _auth: auth })
}

/// Starts a registry and pushes the busybox base as `ADDR/busybox:latest`.
pub fn registry_with_busybox() -> Result<(TestRegistry, String), TestError> {
    let reg = TestRegistry::start()?;
    let tmp = tempfile::tempdir().map_err(io_err("create temp dir", std::env::temp_dir()))?;
    let layout = tmp.path().join("layout");
    make_busybox_layout(&layout)?;
    let reference = format!("{}/busybox:latest", reg.addr());
    push_layout(&layout, &reference)?;
    Ok((reg, reference))
}

/// Starts a registry and pushes the multi-platform busybox (an index of linux/amd64 and
/// linux/arm64, see [`make_busybox_multiarch_layout`]) as `ADDR/busybox:multiarch`; returns
/// the registry, the reference and the index digest. `None` (skipped loudly) without the arm64
/// package, unless the environment requires it.
pub fn registry_with_multiarch_busybox() -> Result<Option<(TestRegistry, String, Digest)>, TestError>
{
    let tmp = tempfile::tempdir().map_err(io_err("create temp dir", std::env::temp_dir()))?;
    let layout = tmp.path().join("layout");
    let Some(digest) = make_busybox_multiarch_layout(&layout)? else {
        return Ok(None);
    };
    let reg = TestRegistry::start()?;
    let reference = format!("{}/busybox:multiarch", reg.addr());
    push_layout(&layout, &reference)?;
    Ok(Some((reg, reference, digest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The multi-platform busybox reaches the registry as an index of both platforms, and
    /// each platform's image is the right architecture.
    #[test]
    fn multiarch_busybox_is_pushed_as_an_index() {
        if need_tool("docker-registry").is_err() || need_tool("skopeo").is_err() {
            println!("SKIPPED: docker-registry or skopeo not installed");
            return;
        }
        let Some((_reg, reference, digest)) = registry_with_multiarch_busybox().unwrap() else {
            return;
        };
        let raw = run(skopeo("inspect", None)
            .unwrap()
            .args(["--tls-verify=false", "--raw"])
            .arg(format!("docker://{reference}")))
        .unwrap();
        assert_eq!(Digest::sha256_of(raw.as_bytes()), digest);
        let index: rbuild_oci::Index = serde_json::from_str(&raw).unwrap();
        let platforms: Vec<String> = index
            .manifests
            .iter()
            .map(|m| m.platform.as_ref().unwrap().to_string())
            .collect();
        assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
        for (arch, want) in [("amd64", "amd64"), ("arm64", "arm64")] {
            let out = run(skopeo("inspect", None)
                .unwrap()
                .args(["--tls-verify=false", "--override-arch", arch, "--config"])
                .arg(format!("docker://{reference}")))
            .unwrap();
            let config: rbuild_oci::ImageConfig = serde_json::from_str(&out).unwrap();
            assert_eq!(config.architecture, want);
        }
    }
}
