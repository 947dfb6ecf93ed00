//! The persistent cache index (redb).

use crate::CacheKey;
use redb::{Database, DatabaseError, ReadableDatabase, StorageError, TableDefinition, TableError};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long [`CacheIndex::open`] waits for another process to release the index.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// The file name of the index inside the store root.
pub const INDEX_FILE_NAME: &str = "cache-v1.redb";

const RESULTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("results-v1");
const USER_TABLE_PREFIX: &str = "user:";
const RETRY_INTERVAL: Duration = Duration::from_millis(100);

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

/// The persistent cache index (redb) at `ROOT/cache-v1.redb`: cache key -> result bytes, plus
/// named tables the worker uses (stat cache, tag resolutions).
///
/// Cheap to clone (shares one `redb::Database`). All methods block on disk IO (each write is
/// one durable transaction, about a millisecond): call them from `spawn_blocking` in async
/// code, as the solver does.
#[derive(Clone)]
pub struct CacheIndex {
    db: Arc<Database>,
    path: Arc<PathBuf>,
    moved_aside: Option<Arc<PathBuf>>,
}

impl fmt::Debug for CacheIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheIndex")
            .field("path", &self.path)
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

impl CacheIndex {
    /// Opens or creates the index at `path` (creating its directory). If another process holds
    /// the file, waits up to [`DEFAULT_LOCK_TIMEOUT`] for it, then fails with
    /// [`CacheError::Locked`]. A corrupt or unreadable-format file is renamed
    /// `<name>.corrupt-<unix seconds>` and a fresh index created (the cache is only a cache);
    /// see [`CacheIndex::moved_aside`]. Blocks.
    pub fn open(path: &Path) -> Result<CacheIndex, CacheError> {
        Self::open_with_timeout(path, DEFAULT_LOCK_TIMEOUT)
    }

    /// [`CacheIndex::open`] with a chosen lock timeout (zero: try once).
    pub fn open_with_timeout(path: &Path, timeout: Duration) -> Result<CacheIndex, CacheError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| CacheError::Io {
                path: dir.to_path_buf(),
                action: "create its directory",
                source,
            })?;
        }
        let start = Instant::now();
        let mut moved_aside = None;
        let db = loop {
            // redb 3 panics (instead of returning an error) on some damaged files, e.g. one
            // truncated below its recorded layout: treat such a panic as corruption.
            let opened =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Database::create(path)))
                    .unwrap_or_else(|_| {
                        Err(DatabaseError::Storage(StorageError::Corrupted(
                            "redb panicked while opening the file".into(),
                        )))
                    });
            match opened {
                Ok(db) => break db,
                Err(DatabaseError::DatabaseAlreadyOpen) => {
                    let waited = start.elapsed();
                    if waited >= timeout {
                        return Err(CacheError::Locked {
                            path: path.to_path_buf(),
                            waited,
                        });
                    }
                    std::thread::sleep(RETRY_INTERVAL.min(timeout - waited));
                }
                Err(e) if is_corrupt(&e) && moved_aside.is_none() => {
                    moved_aside = Some(Self::move_aside(path)?);
                }
                Err(source) => {
                    return Err(CacheError::Open {
                        path: path.to_path_buf(),
                        source: Box::new(source),
                    })
                }
            }
        };
        let index = CacheIndex {
            db: Arc::new(db),
            path: Arc::new(path.to_path_buf()),
            moved_aside: moved_aside.map(Arc::new),
        };
        // Create the results table up front so that reads never see it missing.
        index.write("create the results table", |txn| {
            txn.open_table(RESULTS)?;
            Ok(())
        })?;
        Ok(index)
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
        &self.path
    }

    /// Where a corrupt index found by `open` was moved, so callers can warn about it.
    pub fn moved_aside(&self) -> Option<&Path> {
        self.moved_aside.as_deref().map(PathBuf::as_path)
    }

    fn db_err(&self, action: &'static str) -> impl Fn(redb::Error) -> CacheError + '_ {
        move |source| CacheError::Db {
            path: self.path.to_path_buf(),
            action,
            source: Box::new(source),
        }
    }

    fn write(
        &self,
        action: &'static str,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), CacheError> {
        let txn = self
            .db
            .begin_write()
            .map_err(|e| self.db_err(action)(e.into()))?;
        f(&txn).map_err(self.db_err(action))?;
        txn.commit().map_err(|e| self.db_err(action)(e.into()))
    }

    fn read(
        &self,
        action: &'static str,
        table: TableDefinition<&[u8], &[u8]>,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, CacheError> {
        let err = self.db_err(action);
        let txn = self.db.begin_read().map_err(|e| err(e.into()))?;
        let table = match txn.open_table(table) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(err(e.into())),
        };
        let value = table.get(key).map_err(|e| err(e.into()))?;
        Ok(value.map(|v| v.value().to_vec()))
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn second_open_waits_then_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(INDEX_FILE_NAME);
        let k = CacheKey::from_parts(&[b"x"]);
        let first = CacheIndex::open(&path).unwrap();
        first.put(&k, b"value").unwrap();
        let start = Instant::now();
        let err = CacheIndex::open_with_timeout(&path, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, CacheError::Locked { .. }), "{err:?}");
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert!(err.to_string().contains("in use"), "{err}");
        // The holder is unaffected.
        assert_eq!(first.get(&k).unwrap().as_deref(), Some(&b"value"[..]));

        // A waiter gets in once the holder closes.
        let p2 = path.clone();
        let waiter =
            std::thread::spawn(move || CacheIndex::open_with_timeout(&p2, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(300));
        drop(first);
        let second = waiter.join().unwrap().unwrap();
        assert_eq!(second.get(&k).unwrap().as_deref(), Some(&b"value"[..]));
        assert!(second.moved_aside().is_none());
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
