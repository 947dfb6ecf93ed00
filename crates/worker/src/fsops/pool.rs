//! The copy pool: a COPY of a build-context file whose result would be identical to a file an
//! earlier COPY already wrote into a committed snapshot's upper dir becomes a hard link to that
//! file instead of a second copy of its bytes (overlay backend only).
//!
//! **Identity.** The pool key hashes what decides the resulting file: the context file's stat
//! as the context stat cache trusts it (device, inode, size, mtime and ctime with nanoseconds:
//! any write, chmod, chown or rename-over changes ctime) and the destination's owner and
//! permission bits (its mtime is the source's, part of the stat). xattrs are not copied by a
//! COPY, so they are not part of it. Sources with more than one link (hardlink groups, which
//! the copy keeps as groups) are never pooled. The table maps a key to `(snapshot id, path in
//! its upper dir)`, written when the File op's snapshot is committed.
//!
//! **Validation at use.** The snapshot must be committed (never an active one, never the
//! context itself), and an `lstat` of the candidate must show a regular file with the expected
//! size, mode, owner and mtime; on any doubt, or when `link` fails (`EMLINK`, `EXDEV`,
//! `ENOENT` after a GC), the file is copied as before. A pool inode is linked at most once per
//! op, so the layer's tar never sees a hardlink group that a plain copy would not have made
//! (the tar writer turns only inodes seen twice *within one upper dir* into link entries).
//!
//! **Immutability.** A linked file shares its inode with a committed snapshot, so nothing may
//! write into it afterwards. fsops never modifies a regular file in place: a destination in
//! the way is removed and created anew (`create_exclusive`, `remove_existing`), hardlink
//! groups are never pooled (their extra names get `utimensat`), and ops that unpack archives
//! (whose hardlink entries get `lchown`) do not use the pool. Later steps see the file as a
//! lower layer of an overlay mount (RUN, rw bind mounts, `rbuild debug`): overlayfs copies a
//! lower file up before any write to its data or metadata, so the shared inode is never
//! written. The Merge op copies a layer's files (`copy_tree`), it does not link them.
//!
//! **Recording.** Entries are recorded only when nothing was removed or replaced in the
//! destination during the op: then every recorded path still holds the inode that was created
//! there, untouched, when the snapshot is committed. A source whose stat changed during its
//! copy is not recorded.

use crate::tables::COPY_POOL;
use rbuild_snapshotter::{SnapshotId, Snapshotter};
use rbuild_solver::{CacheError, CacheIndex};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Set to `0` to turn the pool off (tests compare layers built with and without it).
pub const POOL_ENV: &str = "RBUILD_COPY_POOL";

/// Links beyond this many names per inode are not made (ext4 allows 65,000).
const MAX_LINKS: u64 = 60_000;

/// The identity of a copied file (see the module docs).
pub(super) type Key = [u8; 32];

/// One File op's use of the pool: where it writes, what it linked and copied.
pub struct CopyPool {
    index: CacheIndex,
    snapshotter: Snapshotter,
    mount: PathBuf,
    upper: PathBuf,
    uppers: Mutex<HashMap<String, Option<PathBuf>>>,
    used: Mutex<HashSet<(u64, u64)>>,
    recorded: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
    tainted: AtomicBool,
    linked: AtomicUsize,
    copied: AtomicUsize,
}

/// What one op did with the pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Files made by linking an earlier copy.
    pub linked: usize,
    /// Files copied (pool misses).
    pub copied: usize,
    /// Entries written to the table at commit.
    pub recorded: usize,
}

impl CopyPool {
    /// A pool for the op writing through `mount` into the active snapshot's `upper`; None when
    /// the snapshotter is not the overlay backend or [`POOL_ENV`] is `0`.
    pub fn new(
        index: CacheIndex,
        snapshotter: Snapshotter,
        mount: PathBuf,
        upper: PathBuf,
    ) -> Option<CopyPool> {
        if snapshotter.backend() != rbuild_snapshotter::Backend::Overlay
            || std::env::var(POOL_ENV).is_ok_and(|v| v == "0")
        {
            return None;
        }
        Some(CopyPool {
            index,
            snapshotter,
            mount,
            upper,
            uppers: Mutex::default(),
            used: Mutex::default(),
            recorded: Mutex::default(),
            tainted: AtomicBool::new(false),
            linked: AtomicUsize::new(0),
            copied: AtomicUsize::new(0),
        })
    }

    /// The key of a copy of the context file `src` (stat `meta`) owned by `owner` with
    /// permission bits `mode`; None when it is not pooled (not a regular file, or linked).
    pub(super) fn key(meta: &fs::Metadata, owner: (u32, u32), mode: u32) -> Option<Key> {
        if !meta.is_file() || meta.nlink() != 1 {
            return None;
        }
        let mut h = blake3::Hasher::new();
        h.update(COPY_POOL.name().as_bytes());
        for v in [
            meta.dev(),
            meta.ino(),
            meta.len(),
            meta.mtime() as u64,
            meta.mtime_nsec() as u64,
            meta.ctime() as u64,
            meta.ctime_nsec() as u64,
            u64::from(owner.0),
            u64::from(owner.1),
            u64::from(mode),
        ] {
            h.update(&v.to_le_bytes());
        }
        Some(*h.finalize().as_bytes())
    }

    /// Something in the destination was removed or replaced: nothing is recorded at commit.
    pub(super) fn taint(&self) {
        self.tainted.store(true, Ordering::Relaxed);
    }

    /// The candidates for `keys` (one read transaction), not yet validated; a failed read
    /// leaves everything to be copied.
    pub(super) fn lookup(&self, keys: &[Option<Key>]) -> Vec<Option<PathBuf>> {
        let wanted: Vec<Vec<u8>> = keys.iter().flatten().map(|k| k.to_vec()).collect();
        if wanted.is_empty() {
            return vec![None; keys.len()];
        }
        let mut found = match self.index.get_many_in(COPY_POOL, &wanted) {
            Ok(v) => v.into_iter(),
            Err(e) => {
                tracing::debug!("copy pool: lookup failed: {e}");
                return vec![None; keys.len()];
            }
        };
        keys.iter()
            .map(|k| {
                k.as_ref()?;
                let value = found.next().flatten()?;
                self.candidate(&value)
            })
            .collect()
    }

    /// The candidate path a table value names, when its snapshot is committed.
    fn candidate(&self, value: &[u8]) -> Option<PathBuf> {
        let split = value.iter().position(|b| *b == b'\n')?;
        let id = std::str::from_utf8(&value[..split]).ok()?;
        let rel = Path::new(std::ffi::OsStr::from_bytes(&value[split + 1..]));
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return None;
        }
        let mut uppers = self.uppers.lock().ok()?;
        let upper = uppers
            .entry(id.to_string())
            .or_insert_with(|| {
                self.snapshotter
                    .committed_upper(&SnapshotId(id.to_string()))
            })
            .clone()?;
        Some(upper.join(rel))
    }

    /// Makes `dest` (a new path in the upper dir) a link to `candidate` when the candidate is
    /// exactly what a copy of `meta`'s file owned by `owner` with `mode` would give; false:
    /// copy it.
    pub(super) fn try_link(
        &self,
        candidate: &Path,
        dest: &Path,
        meta: &fs::Metadata,
        owner: (u32, u32),
        mode: u32,
    ) -> bool {
        if !dest.starts_with(&self.upper) {
            return false;
        }
        let Ok(c) = fs::symlink_metadata(candidate) else {
            return false;
        };
        let same = c.is_file()
            && c.len() == meta.len()
            && c.mode() & 0o7777 == mode
            && (c.uid(), c.gid()) == owner
            && (c.mtime(), c.mtime_nsec()) == (meta.mtime(), meta.mtime_nsec())
            && c.nlink() < MAX_LINKS;
        if !same {
            return false;
        }
        let inode = (c.dev(), c.ino());
        let fresh = self.used.lock().is_ok_and(|mut used| used.insert(inode));
        if !fresh {
            return false;
        }
        if fs::hard_link(candidate, dest).is_err() {
            if let Ok(mut used) = self.used.lock() {
                used.remove(&inode);
            }
            return false;
        }
        self.linked.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Remembers that `dest` now holds the file `key` names (linked, or copied from `src`
    /// whose stat was `meta` before the copy: recorded only if it is unchanged after it).
    pub(super) fn record(
        &self,
        key: Key,
        dest: &Path,
        copied_from: Option<(&Path, &fs::Metadata)>,
    ) {
        if let Some((src, meta)) = copied_from {
            self.copied.fetch_add(1, Ordering::Relaxed);
            let unchanged = fs::symlink_metadata(src)
                .is_ok_and(|now| Self::key(&now, (0, 0), 0) == Self::key(meta, (0, 0), 0));
            if !unchanged {
                return;
            }
        }
        let rel = dest
            .strip_prefix(&self.upper)
            .or_else(|_| dest.strip_prefix(&self.mount));
        let Ok(rel) = rel else { return };
        if let Ok(mut recorded) = self.recorded.lock() {
            recorded.push((key.to_vec(), rel.as_os_str().as_bytes().to_vec()));
        }
    }

    /// Writes the op's entries under committed snapshot `id` (nothing when the op removed or
    /// replaced anything in its destination).
    pub fn finish(&self, id: &SnapshotId) -> Result<PoolStats, CacheError> {
        let mut stats = PoolStats {
            linked: self.linked.load(Ordering::Relaxed),
            copied: self.copied.load(Ordering::Relaxed),
            recorded: 0,
        };
        if self.tainted.load(Ordering::Relaxed) {
            return Ok(stats);
        }
        let recorded = match self.recorded.lock() {
            Ok(mut r) => std::mem::take(&mut *r),
            Err(_) => return Ok(stats),
        };
        let entries: Vec<(Vec<u8>, Vec<u8>)> = recorded
            .into_iter()
            .map(|(k, rel)| {
                let mut v = id.0.as_bytes().to_vec();
                v.push(b'\n');
                v.extend_from_slice(&rel);
                (k, v)
            })
            .collect();
        if !entries.is_empty() {
            self.index.put_many_in(COPY_POOL, &entries)?;
        }
        stats.recorded = entries.len();
        Ok(stats)
    }
}
