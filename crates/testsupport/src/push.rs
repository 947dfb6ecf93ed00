//! Pushing OCI layouts to a registry and inspecting pushed images with skopeo.

use crate::{io_err, make_busybox_layout, need_tool, run, TestError, TestRegistry};
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
