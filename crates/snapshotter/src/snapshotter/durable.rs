//! Durability of committed snapshots without a `syncfs` per commit.
//!
//! A `syncfs` flushes every dirty page of the whole filesystem, other processes' included, so a
//! commit that synced took anywhere from a millisecond to seconds depending on what else was
//! being written. Instead, a commit leaves an `unsynced` marker holding the kernel's boot id in
//! the snapshot's directory and the data is flushed once, when the snapshotter is dropped (one
//! `syncfs` per process, after which the markers are removed). Dirty pages survive any process
//! crash; only an OS crash or power loss can lose them, and that changes the boot id. So a
//! snapshot whose marker names another boot (or cannot be read) may be incomplete and is treated
//! as missing: a cache hit on it becomes a miss and the step runs again.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The marker file in a committed snapshot's directory.
pub(super) const MARKER: &str = "unsynced";

/// This boot's id (`/proc/sys/kernel/random/boot_id`), or None where it cannot be read (then
/// commits sync as before).
pub(super) fn boot_id() -> Option<&'static str> {
    static ID: OnceLock<Option<String>> = OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    })
    .as_deref()
}

/// Writes the marker into `dir` (a snapshot directory about to be committed). No fsync: if the
/// marker is lost with the rest of the unsynced data, so is the rename that published the
/// snapshot (the journal commits them in order), and an empty marker reads as another boot.
pub(super) fn mark(dir: &Path, boot: &str) -> std::io::Result<()> {
    std::fs::write(dir.join(MARKER), boot.as_bytes())
}

/// True unless `dir` carries a marker of another boot (or one that cannot be read).
pub(super) fn is_durable(dir: &Path) -> bool {
    match std::fs::read(dir.join(MARKER)) {
        Ok(bytes) => boot_id().is_some_and(|b| bytes == b.as_bytes()),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Snapshots committed by this process whose data is not yet known to be on disk.
#[derive(Default)]
pub(super) struct Pending(std::sync::Mutex<Vec<PathBuf>>);

impl Pending {
    /// Remembers committed snapshot directory `dir`.
    pub(super) fn push(&self, dir: PathBuf) {
        if let Ok(mut v) = self.0.lock() {
            v.push(dir);
        }
    }

    /// Flushes the filesystem holding `root` once and removes the markers of every remembered
    /// snapshot. Best effort: a marker left behind only costs a rebuild after an OS crash.
    pub(super) fn flush(&self, root: &Path) {
        let dirs = match self.0.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(_) => return,
        };
        if dirs.is_empty() {
            return;
        }
        let Ok(f) = std::fs::File::open(root) else {
            return;
        };
        if rustix::fs::syncfs(&f).is_err() {
            return;
        }
        for d in dirs {
            let _ = std::fs::remove_file(d.join(MARKER));
        }
    }
}
