//! Debugging failed RUN steps: the build's debug mode ([`DebugMode`]: a shell in the failed
//! step's sandbox, or keeping its state), and the kept states of a root ([`KeptRun`] files in
//! [`StateDir::debug_states`]): listing, entering one again ([`enter`], `rbuild debug ID`) and
//! removing them all (`rbuild prune`). A kept state's snapshot is a garbage-collection root
//! until then.

use crate::gc::{BuildLease, GcError};
use crate::state::StateDir;
use rbuild_sandbox::{ExitStatus, Mount, Sandbox, SandboxError};
use rbuild_snapshotter::{SnapshotError, Snapshotter};
use std::path::PathBuf;
use std::sync::Arc;

pub use crate::kept::kept_runs;
pub use rbuild_worker::KeptRun;

/// What a build does when a RUN fails ([`crate::BuildRequest::debug_on_fail`]).
#[derive(Clone, Default)]
pub enum DebugMode {
    /// Nothing more: the build fails.
    #[default]
    Off,
    /// Opens a shell on the process's terminal in the first failed RUN's sandbox; the build
    /// fails with the RUN's error once the shell exits.
    Shell {
        /// The shell's argv, e.g. `["/bin/sh"]`.
        shell: Vec<String>,
        /// Told why the shell could not run.
        on_error: DebugErrorSink,
    },
    /// Keeps the failed RUN's state under the root.
    Keep {
        /// Told of each kept state (its [`KeptRun::id`] is what [`enter`] takes).
        on_kept: Arc<dyn Fn(&KeptRun) + Send + Sync>,
        /// Told why a state could not be kept.
        on_error: DebugErrorSink,
    },
}

/// Told why a debug shell could not run or a failed state could not be kept (the build still
/// fails with the RUN's error).
pub type DebugErrorSink = Arc<dyn Fn(&str) + Send + Sync>;

impl std::fmt::Debug for DebugMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DebugMode::Off => f.write_str("Off"),
            DebugMode::Shell { shell, .. } => {
                f.debug_struct("Shell").field("shell", shell).finish()
            }
            DebugMode::Keep { .. } => f.write_str("Keep"),
        }
    }
}

impl DebugMode {
    /// The worker's mode for a build under `state`.
    pub(crate) fn for_worker(&self, state: &StateDir) -> rbuild_worker::DebugOnFail {
        match self {
            DebugMode::Off => rbuild_worker::DebugOnFail::Off,
            DebugMode::Shell { shell, on_error } => rbuild_worker::DebugOnFail::Shell {
                shell: shell.clone(),
                on_error: on_error.clone(),
            },
            DebugMode::Keep { on_kept, on_error } => rbuild_worker::DebugOnFail::Keep {
                dir: state.debug_states(),
                on_kept: on_kept.clone(),
                on_error: on_error.clone(),
            },
        }
    }
}

/// Why a kept state could not be entered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DebugError {
    /// No kept state has this ID.
    #[error("no failed step {0} is kept (kept states are removed by `rbuild prune`)")]
    NotFound(String),
    /// The kept state's file could not be read.
    #[error("reading {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The snapshot could not be prepared.
    #[error("preparing the failed step's filesystem: {0}")]
    Snapshot(#[from] SnapshotError),
    /// The shell could not run.
    #[error("running the debug shell: {0}")]
    Sandbox(#[from] SandboxError),
    /// The root's collection lock.
    #[error(transparent)]
    Gc(#[from] GcError),
    /// The rbuild executable (the sandbox helper) could not be found.
    #[error("locating the rbuild executable: {0}")]
    CurrentExe(std::io::Error),
}

/// The kept state `id`.
pub fn kept_run(state: &StateDir, id: &str) -> Result<KeptRun, DebugError> {
    let valid = !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric());
    let path = KeptRun::path(&state.debug_states(), id);
    if !valid || !path.exists() {
        return Err(DebugError::NotFound(id.to_string()));
    }
    let bytes = std::fs::read(&path).map_err(|e| DebugError::Read {
        path: path.clone(),
        message: e.to_string(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| DebugError::Read {
        path,
        message: e.to_string(),
    })
}

/// Runs `shell` (the kept spec's own command is never re-run) interactively in the kept state
/// `id`: the same sandbox as the failed RUN, over a throwaway layer on top of its filesystem
/// (what the shell changes is dropped). Blocking; needs a terminal on standard input to be
/// useful. Returns the shell's exit status.
/// `process_sandbox` is the engine's setting (`EngineSettings::process_sandbox`).
pub fn enter(
    state: &StateDir,
    id: &str,
    shell: Vec<String>,
    process_sandbox: bool,
) -> Result<ExitStatus, DebugError> {
    let kept = kept_run(state, id)?;
    let _lease = BuildLease::acquire(state, None)?;
    let snapshotter = Snapshotter::open(&state.snapshots())?;
    if !snapshotter.exists(&kept.snapshot) {
        return Err(DebugError::NotFound(id.to_string()));
    }
    let active = snapshotter.prepare(Some(&kept.snapshot))?;
    let mut spec = kept.spec.clone();
    spec.args = shell;
    spec.rootfs = rbuild_worker::mounts::to_sandbox_rootfs(active.rootfs());
    // A bind mount whose host side is gone (an SSH agent's socket) cannot be made again.
    spec.extra_mounts.retain(|m| match m {
        Mount::Bind(b) => b.source.exists(),
        _ => true,
    });
    let exe = std::env::current_exe().map_err(DebugError::CurrentExe)?;
    let status = Sandbox::new(exe)
        .with_process_sandbox(process_sandbox)
        .run_interactive(&spec);
    let _ = snapshotter.abort(active);
    Ok(status?)
}
