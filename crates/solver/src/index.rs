//! The persistent cache index (redb), shared by concurrent rbuild processes.
//!
//! redb lets one process open a file at a time (a second opener gets `DatabaseAlreadyOpen`), so
//! a [`CacheIndex`] holds the file only while it is in use: it opens it for the first
//! transaction of a burst, keeps it for the burst, and a background reaper closes it after
//! [`IDLE_CLOSE`] without a transaction (or sooner when another process is waiting for it).
//! Another process that finds the file open retries with a short backoff and, after a second,
//! reports `waiting for ROOT (held by pid N)` through its [`WaitReporter`].

mod handle;
#[cfg(test)]
mod tests;

use crate::CacheKey;
use handle::Shared;
use rbuild_oci::lock::{lock_exclusive, try_lock_exclusive, WaitReporter};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError};
use std::fmt;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long [`CacheIndex::open`] (and each later reopen) waits for another process to release
/// the index before failing with [`CacheError::Locked`].
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// The file name of the index inside the store root: the cache bucket, named by the key
/// version ([`KEY_VERSION`](crate::KEY_VERSION)) so that keys of another version are never read.
pub const INDEX_FILE_NAME: &str = "cache-v3.redb";

/// Use times closer than this to now are not rewritten by [`CacheIndex::touch`].
pub const TOUCH_GRANULARITY: Duration = Duration::from_secs(60);

/// How long the index stays open after its last transaction when no other process wants it
/// (a waiting process makes the holder let go within milliseconds, so this can be long enough
/// to keep the file open across the steps of a build: each reopen costs syncs).
pub const IDLE_CLOSE: Duration = Duration::from_millis(500);

const RESULTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("results-v1");
/// Cache key -> when its result was last recorded or hit (unix seconds, 8 bytes little endian),
/// for garbage collection's "least recently used first".
const USED: TableDefinition<&[u8], u64> = TableDefinition::new("results-used-v1");
const USER_TABLE_PREFIX: &str = "user:";

/// A named table of the index (bytes -> bytes) besides the results, declared once as a const
/// by its owner, e.g. `const STAT: Table = Table::new("context-stat-v1");` (the worker's stat
/// cache). Names live in their own namespace: no table can reach the results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Table {
    name: &'static str,
}

impl Table {
    /// A table named `name`; an empty name does not compile in a const (and panics
    /// elsewhere). Put a version in the name (`-v1`) and bump it when the values' format
    /// changes.
    pub const fn new(name: &'static str) -> Table {
        assert!(!name.is_empty(), "a cache table needs a name");
        Table { name }
    }

    /// The table's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    fn definition(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
        TableDefinition::new(name)
    }

    fn stored_name(&self) -> String {
        format!("{USER_TABLE_PREFIX}{}", self.name)
    }
}

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
        source: Box<redb::DatabaseError>,
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
    /// A blocking index task could not complete (it panicked or the runtime shut down).
    #[error("cache index task failed: {0}")]
    Background(String),
}

/// The persistent cache index (redb) at `ROOT/cache-v3.redb` ([`INDEX_FILE_NAME`]): cache key ->
/// result bytes, plus the [`Table`]s its users declare (the worker's stat cache and unpacked
/// layers, the solver's key records).
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
        let index = CacheIndex {
            shared: Arc::new(Shared::open(path, timeout, reporter)?),
        };
        // Create the results table up front so that reads never see it missing.
        index.write("create the results table", |txn| {
            txn.open_table(RESULTS)?;
            Ok(())
        })?;
        Ok(index)
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
        self.shared.set_idle_close(idle);
    }

    /// True while this handle has the file open (between a burst and the idle close).
    pub fn is_open(&self) -> bool {
        self.shared.is_open()
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
        self.shared.with_db(|db| {
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
        self.shared.with_db(|db| {
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

    /// The result bytes recorded under `key`, if any.
    pub fn get(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, CacheError> {
        self.read("read a cached result", RESULTS, &key.0)
    }

    /// Records `value` under `key` (replacing any previous value) and marks it used now, durably.
    pub fn put(&self, key: &CacheKey, value: &[u8]) -> Result<(), CacheError> {
        let now = unix_now();
        self.write("record a result", |txn| {
            txn.open_table(RESULTS)?.insert(&key.0[..], value)?;
            txn.open_table(USED)?.insert(&key.0[..], now)?;
            Ok(())
        })
    }

    /// Marks the results of `keys` used now (those without a result are skipped) in one
    /// transaction: what garbage collection's "least recently used" reads. Use times within
    /// [`TOUCH_GRANULARITY`] of now are left alone, so a repeated no-op rebuild only reads.
    pub fn touch(&self, keys: &[CacheKey]) -> Result<(), CacheError> {
        let now = unix_now();
        let err = self.db_err("read use times");
        let stale: Vec<CacheKey> = self.shared.with_db(|db| {
            let txn = db.begin_read().map_err(|e| err(e.into()))?;
            let results = txn.open_table(RESULTS).map_err(|e| err(e.into()))?;
            let used = match txn.open_table(USED) {
                Ok(t) => Some(t),
                Err(TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(err(e.into())),
            };
            let mut stale = Vec::new();
            for key in keys {
                if results
                    .get(&key.0[..])
                    .map_err(|e| err(e.into()))?
                    .is_none()
                {
                    continue;
                }
                let last = match &used {
                    Some(t) => t
                        .get(&key.0[..])
                        .map_err(|e| err(e.into()))?
                        .map(|g| g.value()),
                    None => None,
                };
                if last.is_none_or(|t| now.saturating_sub(t) >= TOUCH_GRANULARITY.as_secs()) {
                    stale.push(*key);
                }
            }
            Ok(stale)
        })?;
        if stale.is_empty() {
            return Ok(());
        }
        self.write("mark results used", |txn| {
            let mut used = txn.open_table(USED)?;
            for key in &stale {
                used.insert(&key.0[..], now)?;
            }
            Ok(())
        })
    }

    /// Every recorded result: its key, value bytes and when it was last used (unix seconds;
    /// `None` for records made before use times were kept), read in one transaction.
    pub fn results(&self) -> Result<Vec<ResultRecord>, CacheError> {
        let err = self.db_err("list the results");
        self.shared.with_db(|db| {
            let txn = db.begin_read().map_err(|e| err(e.into()))?;
            let results = txn.open_table(RESULTS).map_err(|e| err(e.into()))?;
            let used = match txn.open_table(USED) {
                Ok(t) => Some(t),
                Err(TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(err(e.into())),
            };
            let mut out = Vec::new();
            for row in results.iter().map_err(|e| err(e.into()))? {
                let (k, v) = row.map_err(|e| err(e.into()))?;
                let Ok(bytes) = <[u8; 32]>::try_from(k.value()) else {
                    continue;
                };
                let last_used = match &used {
                    Some(t) => t
                        .get(k.value())
                        .map_err(|e| err(e.into()))?
                        .map(|g| g.value()),
                    None => None,
                };
                out.push(ResultRecord {
                    key: CacheKey(bytes),
                    value: v.value().to_vec(),
                    last_used,
                });
            }
            Ok(out)
        })
    }

    /// Removes the results of `keys` (and their use times) in one transaction.
    pub fn remove_results(&self, keys: &[CacheKey]) -> Result<(), CacheError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.write("remove results", |txn| {
            let mut results = txn.open_table(RESULTS)?;
            let mut used = txn.open_table(USED)?;
            for key in keys {
                results.remove(&key.0[..])?;
                used.remove(&key.0[..])?;
            }
            Ok(())
        })
    }

    /// Every `(key, value)` of `table` (empty when the table does not exist yet).
    pub fn entries_in(&self, table: Table) -> Result<Vec<TableEntry>, CacheError> {
        let name = table.stored_name();
        let err = self.db_err("list a table");
        self.shared.with_db(|db| {
            let txn = db.begin_read().map_err(|e| err(e.into()))?;
            let t = match txn.open_table(Table::definition(&name)) {
                Ok(t) => t,
                Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(err(e.into())),
            };
            let mut out = Vec::new();
            for row in t.iter().map_err(|e| err(e.into()))? {
                let (k, v) = row.map_err(|e| err(e.into()))?;
                out.push((k.value().to_vec(), v.value().to_vec()));
            }
            Ok(out)
        })
    }

    /// Removes `keys` from `table` in one transaction.
    pub fn remove_many_in(&self, table: Table, keys: &[Vec<u8>]) -> Result<(), CacheError> {
        if keys.is_empty() {
            return Ok(());
        }
        let name = table.stored_name();
        self.write("write a table", |txn| {
            let mut t = txn.open_table(Table::definition(&name))?;
            for k in keys {
                t.remove(k.as_slice())?;
            }
            Ok(())
        })
    }

    /// The value under `key` in `table` (`None` when the table or key is absent).
    pub fn get_in(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, CacheError> {
        let name = table.stored_name();
        self.read("read a table", Table::definition(&name), key)
    }

    /// The values under `keys` in `table`, in order, read in one transaction.
    pub fn get_many_in(
        &self,
        table: Table,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        let name = table.stored_name();
        let err = self.db_err("read a table");
        self.shared.with_db(|db| {
            let txn = db.begin_read().map_err(|e| err(e.into()))?;
            let t = match txn.open_table(Table::definition(&name)) {
                Ok(t) => t,
                Err(TableError::TableDoesNotExist(_)) => return Ok(vec![None; keys.len()]),
                Err(e) => return Err(err(e.into())),
            };
            keys.iter()
                .map(|k| {
                    let value = t.get(k.as_slice()).map_err(|e| err(e.into()))?;
                    Ok(value.map(|v| v.value().to_vec()))
                })
                .collect()
        })
    }

    /// Records `value` under `key` in `table` (created on first use), durably.
    pub fn put_in(&self, table: Table, key: &[u8], value: &[u8]) -> Result<(), CacheError> {
        let name = table.stored_name();
        self.write("write a table", |txn| {
            txn.open_table(Table::definition(&name))?
                .insert(key, value)?;
            Ok(())
        })
    }

    /// Records all `entries` in `table` in one transaction: all or none are stored.
    pub fn put_many_in(
        &self,
        table: Table,
        entries: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), CacheError> {
        let name = table.stored_name();
        self.write("write a table", |txn| {
            let mut t = txn.open_table(Table::definition(&name))?;
            for (k, v) in entries {
                t.insert(k.as_slice(), v.as_slice())?;
            }
            Ok(())
        })
    }

    /// Removes `key` from `table`; true when it was there.
    pub fn remove_in(&self, table: Table, key: &[u8]) -> Result<bool, CacheError> {
        let name = table.stored_name();
        let mut removed = false;
        self.write("write a table", |txn| {
            removed = txn
                .open_table(Table::definition(&name))?
                .remove(key)?
                .is_some();
            Ok(())
        })?;
        Ok(removed)
    }
}

/// One `(key, value)` of a [`Table`], as [`CacheIndex::entries_in`] lists them.
pub type TableEntry = (Vec<u8>, Vec<u8>);

/// One recorded result, as [`CacheIndex::results`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRecord {
    /// The cache key.
    pub key: CacheKey,
    /// The executor's encoding of the result.
    pub value: Vec<u8>,
    /// When the result was last recorded or hit (unix seconds), if known.
    pub last_used: Option<u64>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
