//! The public description of a run and its outcome.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The root filesystem to run in.
    pub rootfs: Rootfs,
    /// argv; `args[0]` is resolved through `PATH` from `env` inside the rootfs unless it has a `/`.
    pub args: Vec<String>,
    /// The environment, as `K=V` strings; `HOME` is added from the user's passwd entry if absent.
    pub env: Vec<String>,
    /// Absolute working directory inside the rootfs; created (0755, as root) if missing.
    pub cwd: String,
    /// `""`, `name`, `uid`, `name:group`, `uid:gid`...; resolved from the rootfs's own files.
    pub user: String,
    /// The hostname inside the sandbox, e.g. `buildkitsandbox`.
    pub hostname: String,
    /// Host networking or a fresh namespace with only loopback.
    pub network: Network,
    /// Host paths bind-mounted into the rootfs (for `RUN --mount`), applied last, in order.
    pub extra_mounts: Vec<BindMount>,
    /// Host file bind-mounted read-only at `/etc/hosts`; `None` generates one.
    pub hosts_file: Option<PathBuf>,
    /// Host file bind-mounted read-only at `/etc/resolv.conf`; `None` copies the host's.
    pub resolv_conf: Option<PathBuf>,
}

/// The root filesystem of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rootfs {
    /// Mount overlayfs with these dirs inside the sandbox's private mount namespace.
    Overlay {
        /// Lower layers, top-most first; may be empty (`FROM scratch`).
        lowerdirs: Vec<PathBuf>,
        /// The writable layer.
        upperdir: PathBuf,
        /// Overlayfs's work directory (same filesystem as `upperdir`).
        workdir: PathBuf,
    },
    /// An already prepared directory (copy backend), bind-mounted as the root.
    Dir(PathBuf),
}

/// The network namespace of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// Share the host's network namespace (BuildKit's default).
    Host,
    /// A new network namespace with only `lo`, brought up.
    None,
}

/// A host path bind-mounted into the rootfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Host path (file or directory).
    pub source: PathBuf,
    /// Absolute path inside the rootfs; created if missing.
    pub target: String,
    /// Mount read-only.
    pub readonly: bool,
}

/// Which output stream a chunk of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OutputStream {
    /// The process's stdout.
    Stdout,
    /// The process's stderr.
    Stderr,
}

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal number.
    Signal(i32),
}

impl ExitStatus {
    /// True for `Code(0)`.
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Code(0))
    }

    /// The exit code, if it exited normally.
    pub fn code(&self) -> Option<i32> {
        match self {
            ExitStatus::Code(c) => Some(*c),
            ExitStatus::Signal(_) => None,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code: {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

impl RunSpec {
    /// Checks what the kernel would otherwise reject obscurely.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.args.is_empty() || self.args[0].is_empty() {
            return Err("empty command".to_string());
        }
        if !self.cwd.starts_with('/') {
            return Err(format!("working directory `{}` is not absolute", self.cwd));
        }
        if self.hostname.len() > 64 {
            return Err(format!(
                "hostname `{}` is longer than 64 bytes",
                self.hostname
            ));
        }
        let strings =
            self.args
                .iter()
                .chain(&self.env)
                .chain([&self.cwd, &self.user, &self.hostname]);
        if let Some(s) = strings.into_iter().find(|s| s.contains('\0')) {
            return Err(format!("`{}` contains a NUL byte", s.escape_debug()));
        }
        if let Some(m) = self
            .extra_mounts
            .iter()
            .find(|m| !m.target.starts_with('/'))
        {
            return Err(format!("mount target `{}` is not absolute", m.target));
        }
        Ok(())
    }
}
