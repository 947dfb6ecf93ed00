//! The cross-process handle on the index file: opening it (with backoff, the `.want` signal to
//! a holder, and the wait report), moving a corrupt file aside, and the background reaper that
//! closes the file when idle or when another process waits for it.

use super::{CacheError, IDLE_CLOSE};
use rbuild_oci::lock::{holder_pid, try_lock_exclusive, WaitReporter, Waiting, REPORT_AFTER};
use redb::{Database, DatabaseError, StorageError};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// While another process waits, the file is released once it has been held this long even
/// when busy, or after this short idle time.
const MAX_HOLD_WHEN_WANTED: Duration = Duration::from_millis(100);
const IDLE_WHEN_WANTED: Duration = Duration::from_millis(2);
/// How often the reaper looks for waiters while the file is open.
const WANTED_CHECK: Duration = Duration::from_millis(10);
const RETRY_MIN: Duration = Duration::from_millis(1);
const RETRY_MAX: Duration = Duration::from_millis(10);
/// A reopen that finds another process waiting first gives it this head start (more than one
/// retry interval), so a busy process cannot starve the others.
const YIELD_TO_WAITER: Duration = Duration::from_millis(15);

/// The open file and when it was opened and last used.
struct State {
    db: Option<Database>,
    opened: Instant,
    last_use: Instant,
    reaper: bool,
    idle: Duration,
}

/// Shared between the handles and the reaper thread.
struct Slot {
    state: Mutex<State>,
    wake: Condvar,
}

/// Owned by the handles only: dropping the last handle closes the file at once.
pub(super) struct Shared {
    slot: Arc<Slot>,
    /// The index file.
    pub(super) path: PathBuf,
    /// `<index>.want`: waiters hold a shared flock on it, so a holder knows to let go.
    want_path: PathBuf,
    timeout: Duration,
    /// Told when an open waits over a second for another process.
    pub(super) reporter: Option<WaitReporter>,
    /// Where a corrupt file found by the first open was moved.
    pub(super) moved_aside: Option<PathBuf>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let mut st = lock(&self.slot.state);
        st.db = None;
        self.slot.wake.notify_all();
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn is_corrupt(e: &DatabaseError) -> bool {
    match e {
        DatabaseError::UpgradeRequired(_) | DatabaseError::RepairAborted => true,
        DatabaseError::Storage(StorageError::Corrupted(_)) => true,
        DatabaseError::Storage(StorageError::Io(io)) => {
            matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            )
        }
        _ => false,
    }
}

/// One `Database::create`; redb 3 panics (instead of returning an error) on some damaged
/// files, e.g. one truncated below its recorded layout: such a panic counts as corruption.
fn create_db(path: &Path) -> Result<Database, DatabaseError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Database::create(path)))
        .unwrap_or_else(|_| {
            Err(DatabaseError::Storage(StorageError::Corrupted(
                "redb panicked while opening the file".into(),
            )))
        })
}

impl Shared {
    /// Opens the file at `path` (its directory must exist), moving a corrupt one aside once.
    pub(super) fn open(
        path: &Path,
        timeout: Duration,
        reporter: Option<WaitReporter>,
    ) -> Result<Shared, CacheError> {
        let mut want = path.as_os_str().to_os_string();
        want.push(".want");
        let mut shared = Shared {
            slot: Arc::new(Slot {
                state: Mutex::new(State {
                    db: None,
                    opened: Instant::now(),
                    last_use: Instant::now(),
                    reaper: false,
                    idle: IDLE_CLOSE,
                }),
                wake: Condvar::new(),
            }),
            path: path.to_path_buf(),
            want_path: PathBuf::from(want),
            timeout,
            reporter,
            moved_aside: None,
        };
        let db = loop {
            match shared.acquire() {
                Ok(db) => break db,
                Err(CacheError::Open { source, .. })
                    if is_corrupt(&source) && shared.moved_aside.is_none() =>
                {
                    shared.moved_aside = Some(move_aside(path)?);
                }
                Err(e) => return Err(e),
            }
        };
        lock(&shared.slot.state).db = Some(db);
        Ok(shared)
    }

    /// Opens the file, retrying while another process has it (backoff from 1 to 10 ms, a shared
    /// flock on the `.want` file meanwhile so the holder lets go, a report after a second).
    fn acquire(&self) -> Result<Database, CacheError> {
        let path = &self.path;
        let start = Instant::now();
        let mut delay = RETRY_MIN;
        let mut want: Option<File> = None;
        let mut reported = false;
        if wanted(&self.want_path) {
            std::thread::sleep(YIELD_TO_WAITER.min(self.timeout));
        }
        loop {
            match create_db(path) {
                Ok(db) => return Ok(db),
                Err(DatabaseError::DatabaseAlreadyOpen) => {}
                Err(source) => {
                    return Err(CacheError::Open {
                        path: path.to_path_buf(),
                        source: Box::new(source),
                    })
                }
            }
            let waited = start.elapsed();
            if waited >= self.timeout {
                return Err(CacheError::Locked {
                    path: path.to_path_buf(),
                    waited,
                });
            }
            if want.is_none() {
                want = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&self.want_path)
                    .ok()
                    .filter(|f| f.try_lock_shared().is_ok());
            }
            if !reported && waited >= REPORT_AFTER {
                reported = true;
                if let Some(r) = &self.reporter {
                    let root = path.parent().unwrap_or(path).to_path_buf();
                    r.report(&Waiting {
                        root,
                        holder: holder_pid(path),
                    });
                }
            }
            std::thread::sleep(delay.min(self.timeout - waited));
            delay = (delay * 2).min(RETRY_MAX);
        }
    }

    /// Runs `f` on the open file, opening it first when the reaper closed it.
    pub(super) fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, CacheError>,
    ) -> Result<T, CacheError> {
        let mut st = lock(&self.slot.state);
        if st.db.is_none() {
            st.db = Some(self.acquire()?);
            st.opened = Instant::now();
        }
        let result = match st.db.as_ref() {
            Some(db) => f(db),
            None => unreachable_db(&self.path),
        };
        st.last_use = Instant::now();
        if !st.reaper {
            st.reaper = true;
            let slot = self.slot.clone();
            let want = self.want_path.clone();
            std::thread::Builder::new()
                .name("rbuild-index-reaper".into())
                .spawn(move || reap(&slot, &want))
                .map_err(|source| CacheError::Io {
                    path: self.path.clone(),
                    action: "start the index reaper thread",
                    source,
                })?;
        }
        result
    }

    /// Sets how long the file stays open after its last transaction.
    pub(super) fn set_idle_close(&self, idle: Duration) {
        lock(&self.slot.state).idle = idle;
        self.slot.wake.notify_all();
    }

    /// True while the file is open.
    pub(super) fn is_open(&self) -> bool {
        lock(&self.slot.state).db.is_some()
    }
}

/// True when another process waits for the file (it holds the `.want` file shared).
fn wanted(shared_want: &Path) -> bool {
    match std::fs::OpenOptions::new().write(true).open(shared_want) {
        Ok(f) => !try_lock_exclusive(&f).unwrap_or(true),
        Err(_) => false,
    }
}

/// Renames a corrupt index to `<name>.corrupt-<unix seconds>` (plus nanoseconds if taken).
fn move_aside(path: &Path) -> Result<PathBuf, CacheError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut aside = path.with_file_name(format!("{file}.corrupt-{}", now.as_secs()));
    if aside.exists() {
        aside = path.with_file_name(format!(
            "{file}.corrupt-{}.{}",
            now.as_secs(),
            now.subsec_nanos()
        ));
    }
    std::fs::rename(path, &aside).map_err(|source| CacheError::Io {
        path: path.to_path_buf(),
        action: "move the corrupt index aside",
        source,
    })?;
    Ok(aside)
}

fn unreachable_db<T>(path: &Path) -> Result<T, CacheError> {
    Err(CacheError::Background(format!(
        "cache index {} is not open",
        path.display()
    )))
}

/// The reaper: closes the file once it has been idle for the idle time, or, while another
/// process waits, after [`IDLE_WHEN_WANTED`] idle or [`MAX_HOLD_WHEN_WANTED`] held; exits when
/// the file is closed.
fn reap(slot: &Slot, want: &Path) {
    let mut st = lock(&slot.state);
    loop {
        if st.db.is_none() {
            st.reaper = false;
            return;
        }
        let now = Instant::now();
        let idle_for = now.duration_since(st.last_use);
        let held_for = now.duration_since(st.opened);
        let release = idle_for >= st.idle
            || ((idle_for >= IDLE_WHEN_WANTED || held_for >= MAX_HOLD_WHEN_WANTED) && wanted(want));
        if release {
            // Closing runs under the lock, so no transaction of this process overlaps it.
            st.db = None;
            st.reaper = false;
            return;
        }
        let next = (st.idle - idle_for).min(WANTED_CHECK);
        st = slot
            .wake
            .wait_timeout(st, next)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
    }
}
