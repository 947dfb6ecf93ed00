//! Durability of committed snapshots without a `syncfs` per commit.
//!
//! A `syncfs` flushes every dirty page of the whole filesystem, other processes' included, so a
//! commit that synced took anywhere from a millisecond to seconds depending on what else was
//! being written. Instead, a commit leaves an `unsynced` marker holding the kernel's boot id in
//! the snapshot's directory, and a background thread flushes (one `syncfs` per burst of commits,
//! then the markers go) while the build goes on; the snapshotter's drop waits for the last one. Dirty pages survive any process
//! crash; only an OS crash or power loss can lose them, and that changes the boot id. So a
//! snapshot whose marker names another boot (or cannot be read) may be incomplete and is treated
//! as missing: a cache hit on it becomes a miss and the step runs again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

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

/// Snapshots committed by this process whose data is not yet known to be on disk, and the
/// background thread that flushes them: it runs one `syncfs` per burst of commits while the
/// build goes on (exporting, running the next steps) and removes the markers of what it
/// covered, so the last flush when the snapshotter drops has little left to write.
pub(super) struct Pending {
    root: PathBuf,
    shared: Arc<(Mutex<State>, Condvar)>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    waiting: Vec<PathBuf>,
    stop: bool,
}

impl Pending {
    /// Nothing pending yet; `root` is a directory on the snapshots' filesystem.
    pub(super) fn new(root: PathBuf) -> Pending {
        Pending {
            root,
            shared: Arc::default(),
            thread: Mutex::new(None),
        }
    }

    /// Remembers committed snapshot directory `dir` and wakes the flusher (started on first use;
    /// without a thread the drop flushes everything).
    pub(super) fn push(&self, dir: PathBuf) {
        let (lock, wake) = &*self.shared;
        if let Ok(mut st) = lock.lock() {
            st.waiting.push(dir);
            wake.notify_one();
        }
        if let Ok(mut t) = self.thread.lock() {
            if t.is_none() {
                let shared = self.shared.clone();
                let root = self.root.clone();
                *t = std::thread::Builder::new()
                    .name("snapshot-sync".into())
                    .spawn(move || flusher(&root, &shared))
                    .ok();
            }
        }
    }

    /// Stops the flusher after it has flushed everything still waiting (or flushes here when
    /// there is no thread). Best effort: a marker left behind only costs a rebuild after an
    /// OS crash.
    pub(super) fn flush(&self) {
        let (lock, wake) = &*self.shared;
        if let Ok(mut st) = lock.lock() {
            st.stop = true;
            wake.notify_all();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        match thread {
            Some(t) => {
                let _ = t.join();
            }
            None => flusher(&self.root, &self.shared),
        }
    }
}

/// Flushes bursts of commits until told to stop and nothing is left.
fn flusher(root: &Path, shared: &(Mutex<State>, Condvar)) {
    let (lock, wake) = shared;
    loop {
        let batch = {
            let Ok(mut st) = lock.lock() else { return };
            while st.waiting.is_empty() && !st.stop {
                st = match wake.wait(st) {
                    Ok(st) => st,
                    Err(_) => return,
                };
            }
            if st.waiting.is_empty() {
                return;
            }
            std::mem::take(&mut st.waiting)
        };
        let synced = std::fs::File::open(root)
            .ok()
            .is_some_and(|f| rustix::fs::syncfs(&f).is_ok());
        if synced {
            for d in batch {
                let _ = std::fs::remove_file(d.join(MARKER));
            }
        }
    }
}
