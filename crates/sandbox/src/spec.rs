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
    /// Extra mounts into the rootfs (for `RUN --mount`), applied last, in order.
    pub extra_mounts: Vec<Mount>,
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

/// An extra mount of a run. All of them exist only in the sandbox's private mount namespace.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mount {
    /// A host path bind-mounted into the rootfs.
    Bind(BindMount),
    /// A filesystem tree (an overlay of snapshot dirs, or a host directory) mounted inside the
    /// sandbox; `selector` (resolved inside the tree, symlinks cannot leave it) is bound at
    /// `target`.
    Tree {
        /// The tree, mounted like a rootfs (an overlay's upper dir takes the writes).
        source: Rootfs,
        /// Path inside the tree ("" or "/" = the whole tree).
        selector: String,
        /// Absolute path inside the rootfs; created if missing.
        target: String,
        /// Mount read-only.
        readonly: bool,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Absolute path inside the rootfs; created if missing.
        target: String,
        /// Size limit in bytes.
        size: Option<u64>,
    },
    /// A file with the given bytes (e.g. a secret), kept on a tmpfs inside the sandbox and
    /// bound read-only at `target`; the bytes never touch a disk.
    File {
        /// Absolute path inside the rootfs; created if missing.
        target: String,
        /// The content.
        data: Vec<u8>,
        /// Permission bits.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
}

impl Mount {
    /// The absolute path inside the rootfs.
    pub fn target(&self) -> &str {
        match self {
            Mount::Bind(b) => &b.target,
            Mount::Tree { target, .. }
            | Mount::Tmpfs { target, .. }
            | Mount::File { target, .. } => target,
        }
    }
}

impl From<BindMount> for Mount {
    fn from(b: BindMount) -> Self {
        Mount::Bind(b)
    }
}

impl std::fmt::Debug for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mount::Bind(b) => f.debug_tuple("Bind").field(b).finish(),
            Mount::Tree {
                source,
                selector,
                target,
                readonly,
            } => f
                .debug_struct("Tree")
                .field("source", source)
                .field("selector", selector)
                .field("target", target)
                .field("readonly", readonly)
                .finish(),
            Mount::Tmpfs { target, size } => f
                .debug_struct("Tmpfs")
                .field("target", target)
                .field("size", size)
                .finish(),
            // Never print the bytes: they may be a secret.
            Mount::File {
                target,
                data,
                mode,
                uid,
                gid,
            } => f
                .debug_struct("File")
                .field("target", target)
                .field("data", &format_args!("<{} bytes>", data.len()))
                .field("mode", &format_args!("{mode:o}"))
                .field("uid", uid)
                .field("gid", gid)
                .finish(),
        }
    }
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
            .find(|m| !m.target().starts_with('/'))
        {
            return Err(format!("mount target `{}` is not absolute", m.target()));
        }
        Ok(())
    }
}
