//! Durability of committed snapshots without a `syncfs` on the build's path.
//!
//! A `syncfs` flushes every dirty page of the whole filesystem, other processes' included, and a
//! build that waits for one (or runs one beside its own writes) waits for the disk: gigabytes of
//! COPY data took seconds of writeback the kernel does on its own within ~30 s. Instead, a
//! commit leaves an `unsynced` marker holding the kernel's boot id in the snapshot's directory
//! (see [`rbuild_oci::durable`]) and nothing waits. Dirty pages survive any process crash; only
//! an OS crash or power loss can lose them, and that changes the boot id. So a snapshot whose
//! marker names another boot (or cannot be read) may be incomplete and is treated as missing: a
//! cache hit on it becomes a miss and the step runs again.
//!
//! Markers of this boot are cleared by a later process: when a snapshotter opens, it looks for
//! markers of this boot older than [`SWEEP_MIN_AGE`] (written back by the kernel by then) and,
//! only if it found any and little of the page cache is dirty, runs one `syncfs` right there,
//! before the process writes anything, and removes those (a sync beside a build's writes would
//! stall them); [`super::Snapshotter::sweep_unsynced`] does the same for any age.

use std::path::Path;
use std::time::Duration;

pub(super) use rbuild_oci::durable::{boot_id, SWEEP_MIN_AGE};

/// The marker file in a committed snapshot's directory.
pub(super) const MARKER: &str = "unsynced";

/// Writes the marker into `dir` (a snapshot directory about to be committed by rename).
pub(super) fn mark(dir: &Path, boot: &str) -> std::io::Result<()> {
    rbuild_oci::durable::write_marker(&dir.join(MARKER), boot)
}

/// True unless `dir` carries a marker of another boot (or one that cannot be read).
pub(super) fn is_durable(dir: &Path) -> bool {
    rbuild_oci::durable::marker_ok(&dir.join(MARKER))
}

/// Removes the markers of this boot at least `min_age` old in the committed snapshots under
/// `snapshots`, after one `syncfs` (none when there are none); returns how many went.
pub(super) fn sweep(
    snapshots: &Path,
    min_age: Duration,
    sync: fn(&Path) -> std::io::Result<()>,
) -> std::io::Result<usize> {
    let mut candidates = Vec::new();
    for entry in std::fs::read_dir(snapshots)?.flatten() {
        let marker = entry.path().join(MARKER);
        // Found before the sync, so the sync covers the data written before the marker.
        if rbuild_oci::durable::is_current_marker(&marker, min_age) {
            candidates.push((marker, ()));
        }
    }
    rbuild_oci::durable::sweep(candidates, || sync(snapshots), |_, _| true)
}
