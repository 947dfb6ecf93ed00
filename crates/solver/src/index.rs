//! The persistent cache index (redb), shared by concurrent rbuild processes.
//!
//! redb lets one process open a file at a time (a second opener gets `DatabaseAlreadyOpen`), so
//! a [`CacheIndex`] holds the file only while it is in use: it opens it for the first
//! transaction of a burst, keeps it for the burst, and a background reaper closes it after
//! [`IDLE_CLOSE`] without a transaction (or sooner when another process is waiting for it).
//! Another process that finds the file open retries with a short backoff and, after a second,
//! reports `waiting for ROOT (held by pid N)` through its [`WaitReporter`].

use crate::CacheKey;
use rbuild_oci::lock::{
    holder_pid, lock_exclusive, try_lock_exclusive, WaitReporter, Waiting, REPORT_AFTER,
};
use redb::{Database, DatabaseError, ReadableDatabase, StorageError, TableDefinition, TableError};
use std::fmt;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long [`CacheIndex::open`] (and each later reopen) waits for another process to release
/// the index before failing with [`CacheError::Locked`].
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// The file name of the index inside the store root.
pub const INDEX_FILE_NAME: &str = "cache-v1.redb";

/// How long the index stays open after its last transaction.
pub const IDLE_CLOSE: Duration = Duration::from_millis(50);

/// While another process waits, the file is released once it has been held this long even
/// when busy, or after this short idle time.
const MAX_HOLD_WHEN_WANTED: Duration = Duration::from_millis(100);
const IDLE_WHEN_WANTED: Duration = Duration::from_millis(2);
/// How often the reaper looks for waiters while the file is open.
const WANTED_CHECK: Duration = Duration::from_millis(10);

const RESULTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("results-v1");
const USER_TABLE_PREFIX: &str = "user:";
const RETRY_MIN: Duration = Duration::from_millis(1);
const RETRY_MAX: Duration = Duration::from_millis(10);
/// A reopen that finds another process waiting first gives it this head start (more than one
/// retry interval), so a busy process cannot starve the others.
const YIELD_TO_WAITER: Duration = Duration::from_millis(15);

/// Errors of the cache index.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Another process (or another handle in this one) holds the index open.
    #[error("cache index {path} is in use by another rbuild process (waited {waited:?})")]
    Locked {
        /// The index file.
        path: PathBuf,
        /// How long we waited for it.
        waited: Duration,
    },
    /// The index could not be opened or created.
    #[error("cannot open cache index {path}")]
    Open {
        /// The index file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: Box<DatabaseError>,
    },
    /// A filesystem operation around the index failed (creating its directory, moving a
    /// corrupt file aside).
    #[error("cache index {path}: cannot {action}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What we were doing.
        action: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A read or write of the index failed.
    #[error("cache index {path}: {action} failed")]
    Db {
        /// The index file.
        path: PathBuf,
        /// What we were doing.
        action: &'static str,
        /// What redb said.
        #[source]
        source: Box<redb::Error>,
    },
    /// A named table's name was empty.
    #[error("invalid cache table name {0:?}")]
    InvalidTable(String),
    /// A blocking index task could not complete (it panicked or the runtime shut down).
    #[error("cache index task failed: {0}")]
    Background(String),
}

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
struct Shared {
    slot: Arc<Slot>,
    path: PathBuf,
    /// `<index>.want`: waiters hold a shared flock on it, so a holder knows to let go.
    want_path: PathBuf,
    timeout: Duration,
    reporter: Option<WaitReporter>,
    moved_aside: Option<PathBuf>,
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

/// The persistent cache index (redb) at `ROOT/cache-v1.redb`: cache key -> result bytes, plus
/// named tables the worker uses (stat cache, tag resolutions).
///
/// Cheap to clone (clones share one open file). The file is open only during bursts of
/// transactions (see the module docs), so any number of processes can use one index. All
/// methods block on disk IO (each write is one durable transaction, about a millisecond): call
/// them from `spawn_blocking` in async code, as the solver does.
#[derive(Clone)]
pub struct CacheIndex {
    shared: Arc<Shared>,
}

impl fmt::Debug for CacheIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheIndex")
            .field("path", &self.shared.path)
            .finish()
    }
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

impl CacheIndex {
    /// Opens or creates the index at `path` (creating its directory). If another process holds
    /// the file, waits up to [`DEFAULT_LOCK_TIMEOUT`] for it, then fails with
    /// [`CacheError::Locked`]. A corrupt or unreadable-format file is renamed
    /// `<name>.corrupt-<unix seconds>` and a fresh index created (the cache is only a cache);
    /// see [`CacheIndex::moved_aside`]. Blocks.
    pub fn open(path: &Path) -> Result<CacheIndex, CacheError> {
        Self::open_with(path, DEFAULT_LOCK_TIMEOUT, None)
    }

    /// [`CacheIndex::open`] with a chosen lock timeout (zero: try once).
    pub fn open_with_timeout(path: &Path, timeout: Duration) -> Result<CacheIndex, CacheError> {
        Self::open_with(path, timeout, None)
    }

    /// [`CacheIndex::open`] with a lock timeout and a callback told when this or any later
    /// (re)open waits over a second for another process (`waiting for ROOT (held by pid N)`).
    pub fn open_with(
        path: &Path,
        timeout: Duration,
        reporter: Option<WaitReporter>,
    ) -> Result<CacheIndex, CacheError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| CacheError::Io {
                path: dir.to_path_buf(),
                action: "create its directory",
                source,
            })?;
        }
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
            match Self::acquire(&shared) {
                Ok(db) => break db,
                Err(CacheError::Open { source, .. })
                    if is_corrupt(&source) && shared.moved_aside.is_none() =>
                {
                    shared.moved_aside = Some(Self::move_aside(path)?);
                }
                Err(e) => return Err(e),
            }
        };
        lock(&shared.slot.state).db = Some(db);
        let index = CacheIndex {
            shared: Arc::new(shared),
        };
        // Create the results table up front so that reads never see it missing.
        index.write("create the results table", |txn| {
            txn.open_table(RESULTS)?;
            Ok(())
        })?;
        Ok(index)
    }

    /// Opens the file, retrying while another process has it (backoff from 1 to 10 ms, a shared
    /// flock on the `.want` file meanwhile so the holder lets go, a report after a second).
    fn acquire(shared: &Shared) -> Result<Database, CacheError> {
        let path = &shared.path;
        let start = Instant::now();
        let mut delay = RETRY_MIN;
        let mut want: Option<File> = None;
        let mut reported = false;
        if Self::wanted(&shared.want_path) {
            std::thread::sleep(YIELD_TO_WAITER.min(shared.timeout));
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
            if waited >= shared.timeout {
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
                    .open(&shared.want_path)
                    .ok()
                    .filter(|f| {
                        // SAFETY: flock on a descriptor we own.
                        unsafe {
                            libc::flock(
                                std::os::fd::AsRawFd::as_raw_fd(f),
                                libc::LOCK_SH | libc::LOCK_NB,
                            ) == 0
                        }
                    });
            }
            if !reported && waited >= REPORT_AFTER {
                reported = true;
                if let Some(r) = &shared.reporter {
                    let root = path.parent().unwrap_or(path).to_path_buf();
                    r.report(&Waiting {
                        root,
                        holder: holder_pid(path),
                    });
                }
            }
            std::thread::sleep(delay.min(shared.timeout - waited));
            delay = (delay * 2).min(RETRY_MAX);
        }
    }

    /// True when another process waits for the file (it holds the `.want` file shared).
    fn wanted(shared_want: &Path) -> bool {
        match std::fs::OpenOptions::new().write(true).open(shared_want) {
            Ok(f) => !try_lock_exclusive(&f).unwrap_or(true),
            Err(_) => false,
        }
    }

    /// Runs `f` on the open file, opening it first when the reaper closed it.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, CacheError>,
    ) -> Result<T, CacheError> {
        let shared = &self.shared;
        let mut st = lock(&shared.slot.state);
        if st.db.is_none() {
            st.db = Some(Self::acquire(shared)?);
            st.opened = Instant::now();
        }
        let result = match st.db.as_ref() {
            Some(db) => f(db),
            None => unreachable_db(&shared.path),
        };
        st.last_use = Instant::now();
        if !st.reaper {
            st.reaper = true;
            let slot = shared.slot.clone();
            let want = shared.want_path.clone();
            std::thread::Builder::new()
                .name("rbuild-index-reaper".into())
                .spawn(move || reap(&slot, &want))
                .map_err(|source| CacheError::Io {
                    path: shared.path.clone(),
                    action: "start the index reaper thread",
                    source,
                })?;
        }
        result
    }

    /// Claims the execution of `key` across processes: an exclusive `flock` on
    /// `<index>.locks/<key hex>`, waited for (and reported after a second) while another
    /// process executes the same key. The caller should look the key up again before executing:
    /// another process may have recorded it meanwhile. The lock file
    /// is removed when the claim drops. Blocks.
    pub fn claim(&self, key: &CacheKey) -> Result<KeyClaim, CacheError> {
        let mut dir = self.shared.path.as_os_str().to_os_string();
        dir.push(".locks");
        let dir = PathBuf::from(dir);
        let path = dir.join(key.hex());
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Io {
                path,
                action,
                source,
            }
        };
        let root = self
            .shared
            .path
            .parent()
            .unwrap_or(&self.shared.path)
            .to_path_buf();
        let mut waited = false;
        loop {
            std::fs::create_dir_all(&dir).map_err(io("create the key lock dir", &dir))?;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io("open a key lock", &path))?;
            if !try_lock_exclusive(&file).map_err(io("lock a key", &path))? {
                waited = true;
                lock_exclusive(&file, &path, &root, self.shared.reporter.as_ref())
                    .map_err(io("lock a key", &path))?;
            }
            // The previous holder unlinks the file when done: only a lock on the file that is
            // still at `path` counts.
            let mine = file.metadata().map_err(io("stat a key lock", &path))?;
            match std::fs::metadata(&path) {
                Ok(m) if m.ino() == mine.ino() && m.dev() == mine.dev() => {
                    return Ok(KeyClaim {
                        path,
                        waited,
                        _file: file,
                    })
                }
                _ => continue,
            }
        }
    }

    /// Sets how long the file stays open after its last transaction (default [`IDLE_CLOSE`]).
    pub fn set_idle_close(&self, idle: Duration) {
        lock(&self.shared.slot.state).idle = idle;
        self.shared.slot.wake.notify_all();
    }

    /// True while this handle has the file open (between a burst and the idle close).
    pub fn is_open(&self) -> bool {
        lock(&self.shared.slot.state).db.is_some()
    }

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

    /// The index file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Where a corrupt index found by `open` was moved, so callers can warn about it.
    pub fn moved_aside(&self) -> Option<&Path> {
        self.shared.moved_aside.as_deref()
    }

    fn db_err(&self, action: &'static str) -> impl Fn(redb::Error) -> CacheError + '_ {
        move |source| CacheError::Db {
            path: self.shared.path.to_path_buf(),
            action,
            source: Box::new(source),
        }
    }

    fn write(
        &self,
        action: &'static str,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), CacheError> {
        self.with_db(|db| {
            let txn = db
                .begin_write()
                .map_err(|e| self.db_err(action)(e.into()))?;
            f(&txn).map_err(self.db_err(action))?;
            txn.commit().map_err(|e| self.db_err(action)(e.into()))
        })
    }

    fn read(
        &self,
        action: &'static str,
        table: TableDefinition<&[u8], &[u8]>,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, CacheError> {
        let err = self.db_err(action);
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| err(e.into()))?;
            let table = match txn.open_table(table) {
                Ok(t) => t,
                Err(TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(err(e.into())),
            };
            let value = table.get(key).map_err(|e| err(e.into()))?;
            Ok(value.map(|v| v.value().to_vec()))
        })
    }

    fn user_table(name: &str) -> Result<String, CacheError> {
        if name.is_empty() {
            return Err(CacheError::InvalidTable(name.to_string()));
        }
        Ok(format!("{USER_TABLE_PREFIX}{name}"))
    }

    /// The result bytes recorded under `key`, if any.
    pub fn get(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, CacheError> {
        self.read("read a cached result", RESULTS, &key.0)
    }

    /// Records `value` under `key` (replacing any previous value), durably.
    pub fn put(&self, key: &CacheKey, value: &[u8]) -> Result<(), CacheError> {
        self.write("record a result", |txn| {
            txn.open_table(RESULTS)?.insert(&key.0[..], value)?;
            Ok(())
        })
    }

    /// The value under `key` in the named table (`None` when the table or key is absent).
    pub fn get_in(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, CacheError> {
        let name = Self::user_table(table)?;
        self.read("read a table", TableDefinition::new(&name), key)
    }

    /// Records `value` under `key` in the named table (created on first use), durably.
    pub fn put_in(&self, table: &str, key: &[u8], value: &[u8]) -> Result<(), CacheError> {
        let name = Self::user_table(table)?;
        self.write("write a table", |txn| {
            txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&name))?
                .insert(key, value)?;
            Ok(())
        })
    }

    /// Records all `entries` in the named table in one transaction: all or none are stored.
    pub fn put_many_in(
        &self,
        table: &str,
        entries: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), CacheError> {
        let name = Self::user_table(table)?;
        self.write("write a table", |txn| {
            let mut t = txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&name))?;
            for (k, v) in entries {
                t.insert(k.as_slice(), v.as_slice())?;
            }
            Ok(())
        })
    }

    /// Removes `key` from the named table; true when it was there.
    pub fn remove_in(&self, table: &str, key: &[u8]) -> Result<bool, CacheError> {
        let name = Self::user_table(table)?;
        let mut removed = false;
        self.write("write a table", |txn| {
            removed = txn
                .open_table(TableDefinition::<&[u8], &[u8]>::new(&name))?
                .remove(key)?
                .is_some();
            Ok(())
        })?;
        Ok(removed)
    }
}

/// The claim on executing one cache key (see [`CacheIndex::claim`]); released on drop.
#[derive(Debug)]
pub struct KeyClaim {
    path: PathBuf,
    waited: bool,
    _file: File,
}

impl KeyClaim {
    /// True when another process held the key first (look it up again before executing).
    pub fn waited(&self) -> bool {
        self.waited
    }
}

impl Drop for KeyClaim {
    fn drop(&mut self) {
        // Unlinked while still locked: a waiter that locked this file sees it is gone and
        // retries on a fresh one.
        let _ = std::fs::remove_file(&self.path);
    }
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
            || ((idle_for >= IDLE_WHEN_WANTED || held_for >= MAX_HOLD_WHEN_WANTED)
                && CacheIndex::wanted(want));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn get_put_and_tables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(INDEX_FILE_NAME);
        let idx = CacheIndex::open(&path).unwrap();
        let k = CacheKey::from_parts(&[b"x"]);
        assert_eq!(idx.get(&k).unwrap(), None);
        idx.put(&k, b"v1").unwrap();
        idx.put(&k, b"v2").unwrap();
        assert_eq!(idx.get(&k).unwrap().as_deref(), Some(&b"v2"[..]));
        assert_eq!(idx.get_in("stat", b"a").unwrap(), None);
        idx.put_in("stat", b"a", b"1").unwrap();
        idx.put_many_in(
            "tags",
            &[
                (b"t1".to_vec(), b"d1".to_vec()),
                (b"t2".to_vec(), b"d2".to_vec()),
            ],
        )
        .unwrap();
        assert_eq!(
            idx.get_in("stat", b"a").unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(
            idx.get_in("tags", b"t2").unwrap().as_deref(),
            Some(&b"d2"[..])
        );
        assert_eq!(idx.get_in("tags", b"a").unwrap(), None);
        // Named tables don't collide with the results table.
        assert_eq!(idx.get_in("results-v1", &k.0).unwrap(), None);
        assert!(idx.remove_in("tags", b"t1").unwrap());
        assert!(!idx.remove_in("tags", b"t1").unwrap());
        assert!(matches!(
            idx.put_in("", b"a", b"b"),
            Err(CacheError::InvalidTable(_))
        ));
        assert!(idx.moved_aside().is_none());
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(INDEX_FILE_NAME);
        let k = CacheKey::from_parts(&[b"x"]);
        {
            let idx = CacheIndex::open(&path).unwrap();
            idx.put(&k, b"value").unwrap();
            idx.put_in("stat", b"a", b"1").unwrap();
        }
        let idx = CacheIndex::open(&path).unwrap();
        assert_eq!(idx.get(&k).unwrap().as_deref(), Some(&b"value"[..]));
        assert_eq!(
            idx.get_in("stat", b"a").unwrap().as_deref(),
            Some(&b"1"[..])
        );
    }

    #[test]
    fn a_held_file_is_waited_for_reported_then_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(INDEX_FILE_NAME);
        drop(CacheIndex::open(&path).unwrap());
        // A holder that never lets go (e.g. an older rbuild holding it for a whole build).
        let held = Database::create(&path).unwrap();
        let seen = Arc::new(Mutex::new(Vec::<Waiting>::new()));
        let seen2 = seen.clone();
        let reporter = WaitReporter::new(move |w| seen2.lock().unwrap().push(w.clone()));
        let err = CacheIndex::open_with(
            &path,
            REPORT_AFTER + Duration::from_millis(500),
            Some(reporter),
        )
        .unwrap_err();
        assert!(matches!(err, CacheError::Locked { .. }), "{err:?}");
        assert!(err.to_string().contains("in use"), "{err}");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].root, dir.path());
        assert_eq!(seen[0].holder, Some(std::process::id()));
        assert_eq!(
            seen[0].to_string(),
            format!(
                "waiting for {} (held by pid {})",
                dir.path().display(),
                std::process::id()
            )
        );
        drop(held);
    }

    #[test]
    fn handles_share_the_file_between_bursts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(INDEX_FILE_NAME);
        let first = CacheIndex::open(&path).unwrap();
        // A second handle (as another process would) opens once the first goes idle.
        let second = CacheIndex::open(&path).unwrap();
        let threads: Vec<_> = [first.clone(), second.clone()]
            .into_iter()
            .enumerate()
            .map(|(t, idx)| {
                std::thread::spawn(move || {
                    for i in 0..20u32 {
                        let k = CacheKey::from_parts(&[&[t as u8], &i.to_le_bytes()]);
                        idx.put(&k, &i.to_le_bytes()).unwrap();
                        assert_eq!(idx.get(&k).unwrap().as_deref(), Some(&i.to_le_bytes()[..]));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for t in 0..2u8 {
            for i in 0..20u32 {
                let k = CacheKey::from_parts(&[&[t], &i.to_le_bytes()]);
                assert!(first.get(&k).unwrap().is_some());
            }
        }
        // Idle handles let go of the file.
        first.set_idle_close(Duration::from_millis(1));
        second.set_idle_close(Duration::from_millis(1));
        let mut closed = false;
        for _ in 0..200 {
            if !first.is_open() && !second.is_open() {
                closed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(closed, "both handles closed the file when idle");
        drop(Database::create(&path).expect("nobody holds the file"));
    }

    #[test]
    fn a_busy_holder_lets_go_when_another_waits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(INDEX_FILE_NAME);
        let busy = CacheIndex::open(&path).unwrap();
        // Without the waiter's signal it would keep the file for a minute.
        busy.set_idle_close(Duration::from_secs(60));
        let k = CacheKey::from_parts(&[b"k"]);
        busy.put(&k, b"1").unwrap();
        assert!(busy.is_open());
        let other = CacheIndex::open_with_timeout(&path, Duration::from_secs(5)).unwrap();
        assert_eq!(other.get(&k).unwrap().as_deref(), Some(&b"1"[..]));
        drop(other);
        assert_eq!(busy.get(&k).unwrap().as_deref(), Some(&b"1"[..]));
    }

    #[test]
    fn corrupt_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(INDEX_FILE_NAME);
        std::fs::write(&path, vec![0x5a; 64 * 1024]).unwrap();
        let idx = CacheIndex::open(&path).unwrap();
        let aside = idx.moved_aside().expect("moved aside").to_path_buf();
        assert!(aside
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("cache-v1.redb.corrupt-"));
        assert_eq!(std::fs::read(&aside).unwrap(), vec![0x5a; 64 * 1024]);
        let k = CacheKey::from_parts(&[b"x"]);
        assert_eq!(idx.get(&k).unwrap(), None);
        idx.put(&k, b"v").unwrap();
        assert_eq!(idx.get(&k).unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn truncated_file_is_moved_aside_or_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(INDEX_FILE_NAME);
        let k = CacheKey::from_parts(&[b"x"]);
        {
            let idx = CacheIndex::open(&path).unwrap();
            for i in 0..100u32 {
                idx.put(&CacheKey::from_parts(&[&i.to_le_bytes()]), &[7u8; 1000])
                    .unwrap();
            }
        }
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len / 3).unwrap();
        drop(f);
        let idx = CacheIndex::open(&path).unwrap();
        idx.put(&k, b"v").unwrap();
        assert_eq!(idx.get(&k).unwrap().as_deref(), Some(&b"v"[..]));
    }
}
