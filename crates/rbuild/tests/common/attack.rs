//! Helpers of the sandbox attack suites (`sandbox_attacks.rs`, `sandbox_network.rs`): the static
//! probe (testdata/attack/probe.c), contexts that carry it, and running the real rbuild binary
//! with plain progress against the shared busybox registry.

use super::{env, rbuild_at, testdata};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The static probe (testdata/attack/probe.c), compiled once per test binary.
pub fn probe() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rbuild-attack-probe-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("probe dir");
        let out = dir.join("probe");
        let st = Command::new("gcc")
            .args(["-static", "-O1", "-o"])
            .arg(&out)
            .arg(testdata("attack/probe.c"))
            .status()
            .expect("run gcc (the attack suite compiles a static probe)");
        assert!(st.success(), "gcc -static failed for the attack probe");
        out
    })
}

/// A build context with `Dockerfile` and the probe.
pub fn context(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    fs::copy(probe(), dir.path().join("probe")).unwrap();
    dir
}

/// `rbuild --root ROOT build --progress=plain --build-arg BASE=.. EXTRA.. CONTEXT`.
pub fn rbuild(root: &Path, ctx: &Path, extra: &[&str]) -> Command {
    let env = env().expect("env");
    let mut cmd = rbuild_at(root);
    cmd.args(["build", "--progress=plain", "--build-arg"])
        .arg(format!("BASE={}", env.base))
        .args(extra)
        .arg(ctx);
    cmd
}

/// rbuild's stdout and stderr as one text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Builds `ctx` in a fresh root; fails the test unless the build succeeds; returns its text.
pub fn build_ok(ctx: &Path, extra: &[&str]) -> String {
    let root = tempfile::tempdir().unwrap();
    let out = rbuild(root.path(), ctx, extra).output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "build failed:\n{t}");
    t
}

/// Whether the build's text contains `what`.
pub fn has(t: &str, what: &str) -> bool {
    t.contains(what)
}

/// The start of a Dockerfile that runs the probe: the busybox base plus `/probe`.
pub const PROBE_DOCKERFILE: &str = "ARG BASE\nFROM $BASE\nCOPY probe /probe\n";
