//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Everything that can make [`crate::Sandbox::run`] fail (a non-zero exit is not a failure).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The spec is malformed (empty argv, relative cwd, NUL bytes, ...).
    #[error("invalid run spec: {0}")]
    InvalidSpec(String),
    /// The helper binary could not be started.
    #[error("failed to start the sandbox helper `{path}`")]
    Spawn {
        /// The helper executable that was spawned.
        path: PathBuf,
        /// Why spawning failed.
        #[source]
        source: io::Error,
    },
    /// Talking to the helper over its pipes failed.
    #[error("sandbox helper I/O failed while {what}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A setup step inside the helper failed; the message names the step and the errno.
    #[error("sandbox setup failed: {0}")]
    Setup(String),
    /// The `user` of the spec could not be resolved from the rootfs's passwd/group files.
    #[error("{0}")]
    User(String),
    /// The command could not be executed, e.g. `exec "foo": no such file or directory`.
    #[error("{0}")]
    Exec(String),
    /// The private network needs slirp4netns, which is not installed.
    #[error("the default network needs slirp4netns, which was not found: install Debian's `slirp4netns` package (apt-get install slirp4netns), or build with --network=none or --network=host")]
    NetworkHelperMissing,
    /// A run for a foreign platform needs an emulator that is not installed.
    #[error("no emulator for {platform}: install qemu-user-static ({binary} not found)")]
    NoEmulator {
        /// The target platform, e.g. `linux/arm64`.
        platform: String,
        /// The emulator looked for, e.g. `qemu-aarch64-static`.
        binary: String,
    },
    /// A run for a platform whose architecture rbuild cannot emulate.
    #[error("no emulator for {platform}: qemu-user-static does not emulate this architecture")]
    UnsupportedPlatform {
        /// The target platform.
        platform: String,
    },
    /// The helper ended without reporting a status (crashed or was killed).
    #[error("sandbox helper ended without reporting a status ({0})")]
    HelperDied(String),
}
