//! The kept states of failed RUN steps in a root (`--debug-on-fail=keep`): one [`KeptRun`]
//! JSON file each in [`StateDir::debug_states`]; listing them, the snapshots they hold (roots of
//! the garbage collection) and removing them all (`rbuild prune`).

use crate::state::StateDir;
use rbuild_snapshotter::SnapshotId;
use rbuild_worker::KeptRun;

/// The kept states of `state`, oldest first (unreadable files are skipped).
pub fn kept_runs(state: &StateDir) -> Vec<KeptRun> {
    let Ok(entries) = std::fs::read_dir(state.debug_states()) else {
        return Vec::new();
    };
    let mut runs: Vec<KeptRun> = entries
        .filter_map(|e| {
            let path = e.ok()?.path();
            if path.extension()? != "json" {
                return None;
            }
            serde_json::from_slice(&std::fs::read(path).ok()?).ok()
        })
        .collect();
    runs.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
    runs
}

/// The snapshots kept states hold (garbage-collection roots).
pub(crate) fn pinned_snapshots(state: &StateDir) -> Vec<SnapshotId> {
    kept_runs(state).into_iter().map(|k| k.snapshot).collect()
}

/// Removes every kept state's file (their snapshots then go with the collection that follows);
/// returns how many there were.
pub(crate) fn forget_all(state: &StateDir) -> std::io::Result<usize> {
    let dir = state.debug_states();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut n = 0;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|x| x == "json") {
            n += 1;
        }
        std::fs::remove_file(&path)?;
    }
    Ok(n)
}
