//! Pushing OCI layouts to a registry and inspecting pushed images with skopeo.

use crate::{io_err, make_busybox_layout, need_tool, run, TestError, TestRegistry};
use rbuild_oci::Digest;
use std::path::Path;
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
    let skopeo = need_tool("skopeo")?;
    let auth = EmptyAuthFile::new()?;
    let mut cmd = Command::new(skopeo);
    cmd.args([
        "--insecure-policy",
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "-q",
    ]);
    cmd.arg("--dest-authfile").arg(auth.path());
    if let Some((u, p)) = creds {
        cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
    }
    run(cmd
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{reference}")))?;
    Ok(())
}

/// The `Digest` field of `skopeo inspect` for `docker://REF`.
pub fn skopeo_digest(reference: &str) -> Result<Digest, TestError> {
    let skopeo = need_tool("skopeo")?;
    let auth = EmptyAuthFile::new()?;
    let out = run(Command::new(skopeo)
        .args([
            "--insecure-policy",
            "inspect",
            "--tls-verify=false",
            "--no-tags",
        ])
        .arg("--authfile")
        .arg(auth.path())
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
struct EmptyAuthFile(tempfile::TempDir);

impl EmptyAuthFile {
    /// Writes `auth.json` in a fresh temp directory.
    fn new() -> Result<EmptyAuthFile, TestError> {
        let dir = tempfile::tempdir().map_err(io_err("create temp dir", std::env::temp_dir()))?;
        let path = dir.path().join("auth.json");
        std::fs::write(&path, "{}\n").map_err(io_err("write", &path))?;
        Ok(EmptyAuthFile(dir))
    }

    /// The file.
    fn path(&self) -> std::path::PathBuf {
        self.0.path().join("auth.json")
    }
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
