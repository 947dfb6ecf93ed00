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
    /// The network: a private namespace with userspace NAT, the host's, or only loopback.
    pub network: Network,
    /// The default confinement, or everything allowed (`RUN --security=insecure`).
    #[serde(default)]
    pub security: Security,
    /// Resource limits (cgroup, rlimits, /dev/shm size); all unset by default.
    #[serde(default)]
    pub limits: Limits,
    /// Extra `/etc/hosts` entries (`--add-host NAME:IP`), appended to the generated file.
    #[serde(default)]
    pub extra_hosts: Vec<HostEntry>,
    /// Extra mounts into the rootfs (for `RUN --mount`), applied last, in order.
    pub extra_mounts: Vec<Mount>,
    /// Host file bind-mounted read-only at `/etc/hosts`; `None` generates one.
    pub hosts_file: Option<PathBuf>,
    /// Host file bind-mounted read-only at `/etc/resolv.conf`; `None` copies the host's.
    pub resolv_conf: Option<PathBuf>,
    /// The user-mode emulator of a run for a foreign architecture (`None`: native, at no
    /// extra cost). See [`crate::Emulator`].
    #[serde(default)]
    pub emulator: Option<crate::Emulator>,
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
    /// A new network namespace of its own with outbound connectivity through a userspace
    /// network stack (`slirp4netns`, host loopback unreachable): the default, like BuildKit's.
    Private,
    /// Share the host's network namespace (needs the `network.host` entitlement in a build).
    Host,
    /// A new network namespace with only `lo`, brought up.
    None,
}

/// How confined a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Security {
    /// Docker's default: seccomp profile, default capabilities, only standard devices.
    #[default]
    Sandbox,
    /// `RUN --security=insecure`: no seccomp filter and every capability.
    Insecure,
}

/// One `/etc/hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    /// The host name.
    pub name: String,
    /// Its address.
    pub ip: String,
}

/// One resource limit (`--ulimit NAME=SOFT[:HARD]`); `None` is unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// The docker name: `nofile`, `nproc`, `core`, `stack`, `memlock`, ...
    pub name: String,
    /// Soft limit.
    pub soft: Option<u64>,
    /// Hard limit.
    pub hard: Option<u64>,
}

/// The `--ulimit` names docker accepts, as `setrlimit` resources.
// The resource type is `u32` on glibc but `c_int` on musl.
#[allow(clippy::unnecessary_cast)]
pub(crate) const ULIMIT_NAMES: [(&str, u32); 16] = [
    ("as", libc::RLIMIT_AS as u32),
    ("core", libc::RLIMIT_CORE as u32),
    ("cpu", libc::RLIMIT_CPU as u32),
    ("data", libc::RLIMIT_DATA as u32),
    ("fsize", libc::RLIMIT_FSIZE as u32),
    ("locks", libc::RLIMIT_LOCKS as u32),
    ("memlock", libc::RLIMIT_MEMLOCK as u32),
    ("msgqueue", libc::RLIMIT_MSGQUEUE as u32),
    ("nice", libc::RLIMIT_NICE as u32),
    ("nofile", libc::RLIMIT_NOFILE as u32),
    ("nproc", libc::RLIMIT_NPROC as u32),
    ("rss", libc::RLIMIT_RSS as u32),
    ("rtprio", libc::RLIMIT_RTPRIO as u32),
    ("rttime", libc::RLIMIT_RTTIME as u32),
    ("sigpending", libc::RLIMIT_SIGPENDING as u32),
    ("stack", libc::RLIMIT_STACK as u32),
];

/// Why a `--ulimit` value is invalid (docker's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UlimitError {
    /// Not `NAME=SOFT[:HARD]`.
    #[error("invalid ulimit argument: {0}")]
    Syntax(String),
    /// A name docker does not know.
    #[error("invalid ulimit type: {0}")]
    UnknownName(String),
    /// A limit that is not an integer (or -1 for unlimited).
    #[error("invalid ulimit value {value:?} for {name}")]
    Value {
        /// The ulimit name.
        name: String,
        /// The value as given.
        value: String,
    },
    /// The soft limit is above the hard limit.
    #[error("ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}")]
    SoftAboveHard {
        /// The soft limit (`-1`: unlimited).
        soft: String,
        /// The hard limit.
        hard: String,
    },
}

impl Ulimit {
    /// Parses docker's `NAME=SOFT[:HARD]` (`-1` is unlimited; `HARD` defaults to `SOFT`).
    pub fn parse(s: &str) -> Result<Ulimit, UlimitError> {
        let (name, values) = s
            .split_once('=')
            .ok_or_else(|| UlimitError::Syntax(s.to_string()))?;
        let (soft, hard) = match values.split_once(':') {
            Some((soft, hard)) => (soft, hard),
            None => (values, values),
        };
        let limit = |v: &str| -> Result<Option<u64>, UlimitError> {
            match v.trim().parse::<i64>() {
                Ok(-1) => Ok(None),
                Ok(n) if n >= 0 => Ok(Some(n as u64)),
                _ => Err(UlimitError::Value {
                    name: name.to_string(),
                    value: v.to_string(),
                }),
            }
        };
        let u = Ulimit {
            name: name.to_string(),
            soft: limit(soft)?,
            hard: limit(hard)?,
        };
        u.validate()?;
        Ok(u)
    }

    /// Checks the name and that soft <= hard.
    pub fn validate(&self) -> Result<(), UlimitError> {
        self.resource()?;
        let show = |v: Option<u64>| v.map_or("-1".to_string(), |n| n.to_string());
        let above = match (self.soft, self.hard) {
            (Some(s), Some(h)) => s > h,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if above {
            return Err(UlimitError::SoftAboveHard {
                soft: show(self.soft),
                hard: show(self.hard),
            });
        }
        Ok(())
    }

    /// The `setrlimit` resource of the name.
    pub(crate) fn resource(&self) -> Result<u32, UlimitError> {
        ULIMIT_NAMES
            .iter()
            .find(|(n, _)| *n == self.name)
            .map(|(_, r)| *r)
            .ok_or_else(|| UlimitError::UnknownName(self.name.clone()))
    }
}

/// Resource limits of a run. A run with any cgroup limit (or a cgroup parent) gets a cgroup of
/// its own (cgroup v2, or the v1 controllers where v2 has none).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Limits {
    /// Memory limit in bytes (`--memory`).
    pub memory: Option<u64>,
    /// Memory + swap limit (`--memory-swap`); unset: twice `memory`, as docker.
    pub memory_swap: Option<SwapLimit>,
    /// CPU quota in billionths of a CPU, as docker's NanoCPUs (`--cpus 1.5` = 1_500_000_000).
    pub nano_cpus: Option<u64>,
    /// Relative CPU weight (`--cpu-shares`, 2..262144; 1024 is the default).
    pub cpu_shares: Option<u64>,
    /// CPUs the run may use (`--cpuset-cpus 0-1`).
    pub cpuset_cpus: Option<String>,
    /// Maximum number of processes (`--pids-limit`); `None` or a value <= 0 is unlimited.
    pub pids: Option<i64>,
    /// Parent cgroup of the run's cgroup (`--cgroup-parent`), relative to the cgroup root.
    pub cgroup_parent: Option<String>,
    /// rlimits set before exec (`--ulimit`).
    pub ulimits: Vec<Ulimit>,
    /// Size of `/dev/shm` in bytes (`--shm-size`; default 64 MiB).
    pub shm_size: Option<u64>,
}

/// `--memory-swap`: a total of memory + swap, or unlimited swap (`-1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SwapLimit {
    /// Memory + swap in bytes.
    Bytes(u64),
    /// Unlimited swap.
    Unlimited,
}

impl Limits {
    /// True when the run needs a cgroup of its own.
    pub fn needs_cgroup(&self) -> bool {
        self.memory.is_some()
            || self.memory_swap.is_some()
            || self.nano_cpus.is_some()
            || self.cpu_shares.is_some()
            || self.cpuset_cpus.is_some()
            || self.pids.is_some_and(|p| p > 0)
            || self.cgroup_parent.is_some()
    }
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
    /// The kernel's OOM killer killed it in its cgroup; `limit` is the memory limit in bytes.
    OomKilled {
        /// The memory limit of the run's cgroup.
        limit: Option<u64>,
    },
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
            ExitStatus::Signal(_) | ExitStatus::OomKilled { .. } => None,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code: {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
            ExitStatus::OomKilled { limit: Some(l) } => {
                write!(f, "killed: out of memory (limit {})", human_bytes(*l))
            }
            ExitStatus::OomKilled { limit: None } => write!(f, "killed: out of memory"),
        }
    }
}

/// `67108864` -> `64 MiB`, `1536` -> `1.5 KiB` (binary units, as docker prints limits).
pub fn human_bytes(n: u64) -> String {
    // bytesize always prints one decimal ("64.0 MiB"); whole numbers drop it.
    bytesize::ByteSize::b(n)
        .display()
        .iec()
        .to_string()
        .replace(".0 ", " ")
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
        if let Some(e) = &self.emulator {
            e.validate()?;
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

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn human_bytes_prints_docker_style_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes((1 << 20) - 1), "1024 KiB");
        assert_eq!(human_bytes(1_288_490_189), "1.2 GiB");
        assert_eq!(human_bytes(3 << 40), "3 TiB");
    }
}
