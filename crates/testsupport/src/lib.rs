//! Shared test fixtures for rbuild's crates (synchronous, usable from any test):
//! a throwaway Debian `docker-registry` on a free loopback port ([`TestRegistry`]), a deterministic
//! busybox base image as an OCI layout or rootfs tarball (and an arm64 one from Debian's
//! arm64 busybox-static, alone or with the amd64 one in a multi-platform index), pushing layouts with skopeo, and the
//! "skip loudly unless CI requires it" helpers ([`require_root`], [`shared_dir`], [`need_tool`]),
//! a fault-injecting, request-counting HTTP proxy ([`FaultProxy`]), a port that refuses
//! connections ([`RefusedPort`]), and the local docker daemon, started as the bench starts it
//! ([`ensure_dockerd`]).
//!
//! This root module owns the error type, running commands, finding tools and the skip helpers;
//! the fixtures live in submodules and are re-exported here.

mod arm64;
mod busybox;
mod docker;
mod layout;
mod proxy;
mod push;
mod refused;
mod registry;
mod tls;
mod token;
mod watchdog;

pub use arm64::{
    arm64_busybox_binary, arm64_busybox_deb, arm64_busybox_rootfs_tar_bytes, qemu_aarch64,
    ARM64_DEB_DIR_ENV, DEFAULT_DEB_DIR,
};
pub use busybox::{
    busybox_config, busybox_rootfs_tar_bytes, make_busybox_rootfs_tar, BUSYBOX_PATH,
};
pub use docker::{ensure_dockerd, Docker, DOCKERD_FLAGS};
pub use layout::{
    make_arm64_busybox_layout, make_busybox_index_layout, make_busybox_layout,
    make_busybox_multiarch_layout,
};
pub use proxy::{BlackHole, Fault, FaultProxy, FaultRule, LoggedRequest};
pub use push::{
    push_layout, push_layout_with_creds, registry_with_busybox, registry_with_multiarch_busybox,
    skopeo, skopeo_digest, EmptyAuthFile, Skopeo,
};
pub use refused::RefusedPort;
pub use registry::{RegistryOptions, TestRegistry};
pub use tls::{make_tls_material, TlsMaterial};

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Env var: when `1`, [`require_root`] fails instead of skipping.
pub const REQUIRE_ROOT_ENV: &str = "RBUILD_REQUIRE_ROOT";
/// Env var: when `1`, [`shared_dir`] fails instead of skipping.
pub const REQUIRE_SHARED_ENV: &str = "RBUILD_REQUIRE_SHARED";
/// Env var: where `shared/` is (default `<workspace>/../shared`).
pub const SHARED_ENV: &str = "RBUILD_SHARED";

/// Errors of the fixtures; messages say what to install or where to look.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// A required tool is missing.
    #[error("tool `{tool}` not found on PATH: run .ci/run (it installs the test tools) or `apt-get install -y {package}`")]
    MissingTool {
        /// The command.
        tool: String,
        /// The Debian package that has it.
        package: String,
    },
    /// A command failed.
    #[error("`{command}` failed ({status}):\n{output}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status.
        status: String,
        /// Its stderr and stdout.
        output: String,
    },
    /// The registry did not come up.
    #[error(
        "docker-registry on {addr} did not start: {reason}\n--- registry log {log} ---\n{log_text}"
    )]
    RegistryStart {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
        /// The log file.
        log: String,
        /// Its contents.
        log_text: String,
    },
    /// IO failed.
    #[error("{action} `{path}`: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A precondition failed and the environment requires it (root, shared/).
    #[error("{0}")]
    Required(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Maps an IO error to [`TestError::Io`] naming the action and path.
pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> TestError {
    let path = path.into();
    move |source| TestError::Io {
        action,
        path,
        source,
    }
}

/// Checks a tool is on PATH and returns its full path.
pub fn need_tool(name: &str) -> Result<PathBuf, TestError> {
    let package = match name {
        "busybox" => "busybox-static",
        "openssl" => "openssl",
        "python3" => "python3",
        "ssh-agent" | "ssh-add" | "ssh-keygen" => "openssh-client",
        "docker" | "dockerd" => "docker.io",
        other => other,
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in
        std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
    {
        let p = dir.join(name);
        if let Ok(md) = fs::metadata(&p) {
            use std::os::unix::fs::PermissionsExt;
            if md.is_file() && md.permissions().mode() & 0o111 != 0 {
                return Ok(p);
            }
        }
    }
    Err(TestError::MissingTool {
        tool: name.to_string(),
        package: package.to_string(),
    })
}

/// Runs a command (stdin null); returns its stdout, or [`TestError::Command`] with its output.
pub(crate) fn run(cmd: &mut Command) -> Result<String, TestError> {
    let line = format!("{cmd:?}").replace('"', "");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| TestError::Command {
            command: line.clone(),
            status: "spawn failed".into(),
            output: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(TestError::Command {
            command: line,
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Returns `Ok(true)` as root; otherwise prints `SKIPPED: needs root` and returns `Ok(false)`,
/// or fails when `RBUILD_REQUIRE_ROOT=1`.
pub fn require_root() -> Result<bool, TestError> {
    if rustix::process::geteuid().is_root() {
        return Ok(true);
    }
    if std::env::var(REQUIRE_ROOT_ENV).as_deref() == Ok("1") {
        return Err(TestError::Required(format!(
            "this test needs root and {REQUIRE_ROOT_ENV}=1 forbids skipping it"
        )));
    }
    println!("SKIPPED: needs root");
    eprintln!("SKIPPED: needs root");
    Ok(false)
}

/// The `DOCKER_CONFIG` directory a test's rbuild (or other docker client) runs with by default:
/// `scope/no-docker-config`, under the test's own temp directory (usually its `--root`), which
/// does not exist, so the client sees no `config.json` (anonymous, no credential helpers) instead
/// of reading the host's `~/.docker/config.json`. Tests of credentials set their own.
pub fn isolated_docker_config(scope: &Path) -> PathBuf {
    scope.join("no-docker-config")
}

/// How many files (not directories) are below `dir`, e.g. temp files a store left behind in
/// its per-owner temp directories; 0 when `dir` does not exist.
pub fn files_below(dir: &Path) -> usize {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => files_below(&e.path()),
                    _ => 1,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Finds `shared/` (`$RBUILD_SHARED` or `<workspace>/../shared`); prints a skip and returns `None`
/// when absent, or fails when `RBUILD_REQUIRE_SHARED=1`.
pub fn shared_dir() -> Result<Option<PathBuf>, TestError> {
    let candidate = match std::env::var_os(SHARED_ENV) {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    if candidate.is_dir() {
        return Ok(Some(candidate.canonicalize().unwrap_or(candidate)));
    }
    if std::env::var(REQUIRE_SHARED_ENV).as_deref() == Ok("1") {
        return Err(TestError::Required(format!(
            "../shared not found at {} and {REQUIRE_SHARED_ENV}=1 forbids skipping",
            candidate.display()
        )));
    }
    println!("SKIPPED: ../shared not found");
    eprintln!("SKIPPED: ../shared not found ({})", candidate.display());
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn need_tool_error_is_helpful() {
        let e = need_tool("definitely-not-a-tool-xyz")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(".ci/run") && e.contains("apt-get install"),
            "{e}"
        );
    }
}
