//! Helpers of the `--builder docker` tests: dockerd (started as the shared bench's setup.sh
//! starts it when it is not running), contexts, remote builds, the untouched root.

use super::rbuild_at;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The docker CLI, held while a test talks to dockerd: BuildKit 0.8 in dockerd loses a
/// secret mount's file now and then when solves overlap, so the tests take turns.
pub struct Dockerd {
    bin: PathBuf,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl std::ops::Deref for Dockerd {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.bin
    }
}

impl AsRef<std::ffi::OsStr> for Dockerd {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.bin.as_os_str()
    }
}

/// The docker CLI when dockerd answers on its default socket (started with setup.sh's flags
/// when it is not running); None after a loud skip.
pub fn dockerd() -> Option<Dockerd> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let bin = docker_cli()?;
    Some(Dockerd { bin, _turn: turn })
}

fn docker_cli() -> Option<PathBuf> {
    let strict = std::env::var_os("RBUILD_REQUIRE_ROOT").is_some_and(|v| v == "1")
        || std::env::var_os("CI").is_some();
    let skip = |why: &str| {
        assert!(!strict, "remote builder tests need dockerd: {why}");
        println!("SKIPPED: {why}");
        eprintln!("SKIPPED: {why}");
        None
    };
    let Ok(docker) = rbuild_testsupport::need_tool("docker") else {
        return skip("docker is not installed (Debian's docker.io)");
    };
    let answers = || {
        Command::new(&docker)
            .arg("info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !answers() {
        let dockerd = Path::new("/usr/sbin/dockerd");
        if !dockerd.exists() {
            return skip("dockerd is not installed");
        }
        // setup.sh's dockerd: no bridge, no iptables (builds use the host's network).
        let _ = Command::new("setsid")
            .arg(dockerd)
            .args([
                "--storage-driver=overlay2",
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        for _ in 0..60 {
            if answers() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        if !answers() {
            return skip("dockerd did not start");
        }
    }
    Some(docker)
}

pub fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(ctx.path().join(name), text).unwrap();
    }
    ctx
}

pub fn remote_build(root: &Path, ctx: &Path, extra: &[&str]) -> Output {
    rbuild_at(root)
        .args(["build", "--builder", "docker", "--network=host"])
        .args(extra)
        .arg(ctx)
        .output()
        .unwrap()
}

pub fn docker(docker: &Path, args: &[&str]) -> Output {
    Command::new(docker).args(args).output().unwrap()
}

/// The root stays as the test made it: empty.
pub fn assert_root_untouched(root: &Path) {
    let left: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "rbuild's root was written: {left:?}");
}
