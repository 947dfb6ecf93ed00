//! Runs one process (a Dockerfile `RUN` step) in a fresh root filesystem inside new Linux
//! namespaces.
//!
//! This crate owns everything between "here is a rootfs and a command" and "here is its output
//! and exit status": the re-exec'd helper process, the mount, pid, uts, ipc and network
//! namespaces (the private network through slirp4netns), the `nodev` overlay or bind-mounted
//! root, `/proc` `/dev` `/sys`, `/etc/hosts` and `/etc/resolv.conf`, extra bind mounts,
//! `pivot_root`, user and group resolution from the rootfs's own `/etc/passwd` and
//! `/etc/group`, Docker's default capability set and seccomp profile, a new session keyring,
//! only stdio inherited, masked `/proc` paths, a cgroup with the run's limits, rlimits, and the
//! exit status (an OOM kill reported as such), and the user-mode emulator of a run for a
//! foreign architecture (a binfmt_misc registration of its own, see [`Emulator`]). [`Sandbox::run_interactive`] runs a command
//! (a debug shell) the same way on a pseudo-terminal of its own, relayed to the caller's.
//!
//! # Process model
//!
//! The caller (a tokio program) never forks. [`Sandbox::run`] spawns
//! `helper_exe __rbuild-sandbox-helper` with [`std::process::Command`]; that binary's `main`
//! calls [`helper_main_if_requested`] first, which turns the fresh, single-threaded process into
//! the helper:
//!
//! 1. the [`RunSpec`] arrives as JSON on stdin; fd 3 is a status pipe back to the caller;
//! 2. the helper sets `PR_SET_PDEATHSIG(SIGKILL)`, unshares pid, uts, ipc (and net for
//!    [`Network::None`], bringing `lo` up), sets the hostname and forks;
//! 3. the child is pid 1 of the new pid namespace. It unshares its own mount namespace, makes
//!    `/` private, mounts a scratch tmpfs, the rootfs and everything else *inside that private
//!    namespace*, pivots into the rootfs, switches user, drops capabilities and `execve`s;
//! 4. the helper reaps the child and reports its status on fd 3 as one JSON line.
//!
//! Because every mount lives in the child's private mount namespace, nothing stays mounted on
//! the host when the run ends, or when the caller, the helper or the child is SIGKILLed.
//!
//! Setup failures travel on the status pipe as JSON and surface as [`SandboxError::Setup`],
//! [`SandboxError::User`] or [`SandboxError::Exec`]. A missing executable is reported as
//! `SandboxError::Exec("exec \"foo\": no such file or directory")` (the child exits 127, but
//! the error, not an exit status, is what `run` returns).

// This crate is the one that talks to the kernel (namespaces, mounts, seccomp, capabilities,
// fork/exec): the workspace denies `unsafe_code`, here it is allowed and every block carries a
// `// SAFETY:` comment (clippy's `undocumented_unsafe_blocks`).
#![allow(unsafe_code)]

mod caps;
mod cgroup;
mod emulation;
mod error;
mod helper;
mod limits;
mod mounts;
mod net;
pub mod rootless;
mod run;
mod seccomp;
pub mod settings;
mod spec;
mod status;
#[cfg(test)]
mod testutil;
mod tty;
mod user;

pub use emulation::{default_emulator_dirs, per_user_namespace_binfmt, qemu_arch, Emulator};
pub use error::SandboxError;
pub use helper::{helper_main_if_requested, HELPER_MARKER};
pub use limits::{
    available_cpus, parse_cpuset, LimitsError, LimitsWarning, CPU_SHARES_RANGE, MIN_MEMORY,
};
pub use run::Sandbox;
pub use spec::{
    human_bytes, BindMount, ExitStatus, HostEntry, Limits, Mount, Network, OutputStream, Rootfs,
    RunSpec, Security, SwapLimit, Ulimit, UlimitError,
};
