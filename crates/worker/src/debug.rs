//! Debugging a failed RUN: what the worker does with the sandbox and the snapshot of a RUN that
//! failed when the build asks for it ([`DebugOnFail`]): open an interactive shell in the same
//! sandbox over the filesystem as the command left it, or keep that state on disk
//! ([`KeptRun`], one JSON file per failure) so that it can be entered later.

use rbuild_sandbox::{Mount, RunSpec, Sandbox};
use rbuild_snapshotter::{Active, SnapshotId, Snapshotter};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// What the worker does when a RUN fails.
#[derive(Clone, Default)]
pub enum DebugOnFail {
    /// Nothing: the failed RUN's snapshot is thrown away.
    #[default]
    Off,
    /// Runs `shell` (its argv) interactively on this process's terminal in the failed RUN's
    /// sandbox (same rootfs as left by the command, environment, working directory, user,
    /// mounts, network, limits and restrictions); for the first failed RUN of the build only.
    Shell {
        /// The shell's argv.
        shell: Vec<String>,
        /// Told why the shell could not run (the build still fails with the RUN's error).
        on_error: Arc<dyn Fn(&str) + Send + Sync>,
    },
    /// Keeps the failed RUN's state: its snapshot is committed and a [`KeptRun`] written under
    /// `dir`; `on_kept` is told of it, or `on_error` why it could not be kept.
    Keep {
        /// The directory of kept states.
        dir: PathBuf,
        /// Called with each kept state.
        on_kept: Arc<dyn Fn(&KeptRun) + Send + Sync>,
        /// Told why a state could not be kept.
        on_error: Arc<dyn Fn(&str) + Send + Sync>,
    },
}

impl std::fmt::Debug for DebugOnFail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DebugOnFail::Off => f.write_str("Off"),
            DebugOnFail::Shell { shell, .. } => {
                f.debug_struct("Shell").field("shell", shell).finish()
            }
            DebugOnFail::Keep { dir, .. } => f.debug_struct("Keep").field("dir", dir).finish(),
        }
    }
}

/// The state of a failed RUN kept on disk, enough to run a shell in it again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeptRun {
    /// Its ID (`rbuild debug ID`).
    pub id: String,
    /// The committed snapshot of the filesystem as the failed command left it.
    pub snapshot: SnapshotId,
    /// The failed RUN's sandbox spec (environment, working directory, user, network, limits,
    /// the mounts that can be made again: tmpfs and bind mounts of persistent directories such
    /// as cache mounts; secrets are never written to disk). Its rootfs is replaced on re-entry.
    pub spec: RunSpec,
    /// The failed command, as BuildKit prints it.
    pub command: String,
    /// Why it failed.
    pub error: String,
    /// When it failed (seconds since the epoch).
    pub created: u64,
}

impl KeptRun {
    /// The file of the kept state `id` under `dir`.
    pub fn path(dir: &Path, id: &str) -> PathBuf {
        dir.join(format!("{id}.json"))
    }
}

/// The debug behaviour of one worker: the mode, and whether the one shell was opened already.
#[derive(Debug, Clone, Default)]
pub(crate) struct Debugger {
    mode: DebugOnFail,
    shell_used: Arc<AtomicBool>,
}

impl Debugger {
    /// A debugger in `mode`.
    pub(crate) fn new(mode: DebugOnFail) -> Debugger {
        Debugger {
            mode,
            shell_used: Arc::default(),
        }
    }

    /// Called (on a blocking thread) when a RUN failed with `error`, while its mounts are still
    /// prepared. Consumes `active`: a kept state commits it, otherwise it is aborted.
    pub(crate) fn on_failure(
        &self,
        sandbox: &Sandbox,
        snapshotter: &Snapshotter,
        active: Active,
        spec: &RunSpec,
        command: &str,
        error: &str,
    ) {
        match &self.mode {
            DebugOnFail::Off => {
                let _ = snapshotter.abort(active);
            }
            DebugOnFail::Shell { shell, on_error } => {
                if !self.shell_used.swap(true, Ordering::SeqCst) {
                    let mut spec = spec.clone();
                    spec.args = shell.clone();
                    // The build's error stays the RUN's; a shell that could not run is told.
                    if let Err(e) = sandbox.run_interactive(&spec) {
                        on_error(&e.to_string());
                    }
                }
                let _ = snapshotter.abort(active);
            }
            DebugOnFail::Keep {
                dir,
                on_kept,
                on_error,
            } => match keep(dir, snapshotter, active, spec, command, error) {
                Ok(kept) => on_kept(&kept),
                Err(e) => on_error(&e),
            },
        }
    }
}

/// Commits `active` and writes its [`KeptRun`] under `dir`.
fn keep(
    dir: &Path,
    snapshotter: &Snapshotter,
    active: Active,
    spec: &RunSpec,
    command: &str,
    error: &str,
) -> Result<KeptRun, String> {
    let snapshot = snapshotter.commit(active).map_err(|e| e.to_string())?;
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let id = format!(
        "{:012x}",
        (created ^ (u64::from(nanos) << 20) ^ (u64::from(std::process::id()) << 36))
            & 0xffff_ffff_ffff
    );
    let mut spec = spec.clone();
    spec.extra_mounts
        .retain(|m| matches!(m, Mount::Tmpfs { .. } | Mount::Bind(_)));
    let kept = KeptRun {
        id,
        snapshot,
        spec,
        command: command.to_string(),
        error: error.to_string(),
        created,
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = KeptRun::path(dir, &kept.id);
    let tmp = path.with_extension("tmp");
    let json = serde_json::to_vec_pretty(&kept).map_err(|e| e.to_string())?;
    std::fs::write(&tmp, json).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(kept)
}
