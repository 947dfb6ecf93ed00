//! The status-pipe protocol between the helper (and its child) and the caller: JSON lines.

use serde::{Deserialize, Serialize};

/// The fd number of the status pipe in the helper.
pub(crate) const STATUS_FD: i32 = 3;

/// Which caller-side error a failure maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum FailKind {
    /// A setup step failed.
    Setup,
    /// The user could not be resolved.
    User,
    /// The executable could not be executed.
    Exec,
}

/// One message on the status pipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StatusMsg {
    /// Setup failed; no process ran.
    Failed {
        /// What kind of failure.
        kind: FailKind,
        /// The message, naming the step and the errno.
        message: String,
    },
    /// The process exited with a code.
    Exited(i32),
    /// The process was killed by a signal.
    Signaled(i32),
    /// The OOM killer killed a process of the run's cgroup (sent before the exit message).
    OomKilled {
        /// The cgroup's memory limit in bytes.
        limit: Option<u64>,
    },
}

/// A failure in the helper or its child, before the command runs.
#[derive(Debug)]
pub(crate) struct Failure {
    /// What kind of failure.
    pub kind: FailKind,
    /// The message.
    pub message: String,
}

impl Failure {
    /// A setup failure.
    pub fn setup(message: impl Into<String>) -> Self {
        Failure {
            kind: FailKind::Setup,
            message: message.into(),
        }
    }
}

/// Builds a `map_err` closure that names the step and the errno.
pub(crate) fn step<E: Into<Errnoish>>(what: impl std::fmt::Display) -> impl FnOnce(E) -> Failure {
    move |e| {
        let e: Errnoish = e.into();
        Failure::setup(format!("{what}: {}", e.0))
    }
}

/// An errno (from nix, rustix or std), rendered like `EINVAL: Invalid argument`.
pub(crate) struct Errnoish(pub String);

impl From<nix::errno::Errno> for Errnoish {
    fn from(e: nix::errno::Errno) -> Self {
        Errnoish(e.to_string())
    }
}

impl From<rustix::io::Errno> for Errnoish {
    fn from(e: rustix::io::Errno) -> Self {
        Errnoish(nix::errno::Errno::from_raw(e.raw_os_error()).to_string())
    }
}

impl From<std::io::Error> for Errnoish {
    fn from(e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(n) => Errnoish(nix::errno::Errno::from_raw(n).to_string()),
            None => Errnoish(e.to_string()),
        }
    }
}
