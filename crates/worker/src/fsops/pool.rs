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

use super::data;
use crate::tables::{COPY_POOL, COPY_POOL_INODES};
use rbuild_snapshotter::{SnapshotId, Snapshotter};
use rbuild_solver::{CacheError, CacheIndex};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Set to `0` to turn the pool off (tests compare layers built with and without it).
pub const POOL_ENV: &str = "RBUILD_COPY_POOL";

/// Links beyond this many names per inode are not made (ext4 allows 65,000).
const MAX_LINKS: u64 = 60_000;

/// At most this many placeholders wait per op (each holds a descriptor); more are copied.
const MAX_DEFERRED: usize = 256;

/// A placeholder made through the mount, to become a link to `candidate` (see
/// [`CopyPool::try_link`]).
struct Deferred {
    /// The placeholder's inode in the upper dir, open for writing (the fallback fills it).
    held: fs::File,
    upper_path: PathBuf,
    candidate: PathBuf,
    src: PathBuf,
    meta: fs::Metadata,
}

/// The identity of a copied file (see the module docs).
pub(super) type Key = [u8; 32];

/// One File op's use of the pool: where it writes, what it linked and copied.
pub struct CopyPool {
    index: CacheIndex,
    snapshotter: Snapshotter,
    mount: PathBuf,
    upper: PathBuf,
    /// The active snapshot's id (the committed one's too).
    id: SnapshotId,
    uppers: Mutex<HashMap<String, Option<PathBuf>>>,
    /// The upper dirs of the active snapshot's ancestors: never candidates.
    chain: HashSet<PathBuf>,
    used: Mutex<HashSet<(u64, u64)>>,
    recorded: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
    inodes: Mutex<Vec<(u64, u64)>>,
    deferred: Mutex<Vec<Deferred>>,
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
    /// A pool for the op writing through `mount` into the upper dir `upper` of active
    /// snapshot `id` on `parent`; None when the snapshotter is not the overlay backend, when the
    /// ancestors cannot be read, or when [`POOL_ENV`] is `0`.
    ///
    /// Nothing the op links may already be visible below it: a file of an ancestor is never a
    /// candidate, nor an inode an ancestor holds through the pool (each op records the inodes
    /// it pooled, table `copy-pool-inodes`). Otherwise a later step's view would show two
    /// names of one inode (a hardlink pair in `stat`, in a tar of the rootfs, in a local
    /// output) where plain copies make two files.
    pub fn new(
        index: CacheIndex,
        snapshotter: Snapshotter,
        mount: PathBuf,
        upper: PathBuf,
        id: SnapshotId,
        parent: Option<&SnapshotId>,
    ) -> Option<CopyPool> {
        if snapshotter.backend() != rbuild_snapshotter::Backend::Overlay
            || std::env::var(POOL_ENV).is_ok_and(|v| v == "0")
        {
            return None;
        }
        let ancestors = match parent {
            Some(p) => snapshotter.committed_chain(p)?,
            None => Vec::new(),
        };
        let ids: Vec<Vec<u8>> = ancestors
            .iter()
            .map(|(id, _)| id.0.clone().into_bytes())
            .collect();
        let chain: HashSet<PathBuf> = ancestors.into_iter().map(|(_, upper)| upper).collect();
        let mut used = HashSet::new();
        for packed in index
            .get_many_in(COPY_POOL_INODES, &ids)
            .ok()?
            .into_iter()
            .flatten()
        {
            for pair in packed.chunks_exact(16) {
                let (dev, ino) = pair.split_at(8);
                let num = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
                used.insert((num(dev), num(ino)));
            }
        }
        Some(CopyPool {
            index,
            snapshotter,
            mount,
            upper,
            id,
            uppers: Mutex::default(),
            chain,
            used: Mutex::new(used),
            recorded: Mutex::default(),
            inodes: Mutex::default(),
            deferred: Mutex::default(),
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
        if self.chain.contains(&upper) {
            return None;
        }
        Some(upper.join(rel))
    }

    /// Validates `candidate` for a copy of `meta`'s file owned by `owner` with `mode` and
    /// claims its inode for this op; None: copy instead.
    fn claim(
        &self,
        candidate: &Path,
        meta: &fs::Metadata,
        owner: (u32, u32),
        mode: u32,
    ) -> Option<(u64, u64)> {
        let c = fs::symlink_metadata(candidate).ok()?;
        let same = c.is_file()
            && c.len() == meta.len()
            && c.mode() & 0o7777 == mode
            && (c.uid(), c.gid()) == owner
            && (c.mtime(), c.mtime_nsec()) == (meta.mtime(), meta.mtime_nsec())
            && c.nlink() < MAX_LINKS;
        if !same {
            return None;
        }
        let inode = (c.dev(), c.ino());
        let fresh = self.used.lock().is_ok_and(|mut used| used.insert(inode));
        fresh.then_some(inode)
    }

    fn release(&self, inode: (u64, u64)) {
        if let Ok(mut used) = self.used.lock() {
            used.remove(&inode);
        }
    }

    /// Makes `dest` a link to `candidate` when the candidate is exactly what a copy of
    /// `meta`'s file (at `src`) owned by `owner` with `mode` would give; false: copy it.
    ///
    /// A `dest` in the upper dir (below a directory this op created, see `DirectUpper`) is
    /// linked at once. A `dest` reached through the overlay mount cannot be linked there
    /// (`EXDEV`), and writing the upper dir beside the mount is unsafe where the mount has
    /// looked the name up (its dentry cache would not see the change; the copy code has just
    /// stat'ed the destination). So it gets a placeholder through the mount: the final owner,
    /// mode, times and size, no data (sparse). Everything the op does later sees a consistent
    /// tree through the mount. After the mount is gone, [`CopyPool::settle`] replaces the
    /// placeholder in the upper dir by the link.
    pub(super) fn try_link(
        &self,
        candidate: &Path,
        src: &Path,
        dest: &Path,
        meta: &fs::Metadata,
        owner: (u32, u32),
        mode: u32,
    ) -> io::Result<Option<(u64, u64)>> {
        let direct = dest.starts_with(&self.upper);
        if !direct && !dest.starts_with(&self.mount) {
            return Ok(None);
        }
        let Some(inode) = self.claim(candidate, meta, owner, mode) else {
            return Ok(None);
        };
        if direct {
            if fs::hard_link(candidate, dest).is_err() {
                self.release(inode);
                return Ok(None);
            }
            self.linked.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(inode));
        }
        let full = self
            .deferred
            .lock()
            .map_or(true, |d| d.len() >= MAX_DEFERRED);
        let Ok(rel) = dest.strip_prefix(&self.mount) else {
            return Ok(None);
        };
        if full {
            self.release(inode);
            return Ok(None);
        }
        let made = data::placeholder_file(dest, meta, owner, mode)?;
        if made.replaced {
            self.taint();
        }
        // (the placeholder's own inode is listed too: the fallback may keep it)
        if let Ok(mut inodes) = self.inodes.lock() {
            inodes.push(made.inode);
        }
        // The placeholder's inode in the upper dir, held open: while it is open its inode
        // number cannot be reused, so `settle` can tell whether the path still names it.
        let upper_path = self.upper.join(rel);
        let held = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&upper_path)?;
        if let Ok(mut deferred) = self.deferred.lock() {
            deferred.push(Deferred {
                held,
                upper_path,
                candidate: candidate.to_path_buf(),
                src: src.to_path_buf(),
                meta: meta.clone(),
            });
        }
        Ok(Some(inode))
    }

    /// After the op's overlay mount is gone (nothing caches the upper dir then), replaces each
    /// placeholder by a link to its candidate (a temporary link renamed over it; the parent
    /// directory keeps its times). A placeholder that is no longer where it was made, or is no
    /// longer as it was made, or whose candidate changed, gets its data copied in instead; one
    /// that was removed needs nothing.
    ///
    /// Then it records the inodes the op pooled under the snapshot's id, before the snapshot
    /// is committed: a crash in between leaves an entry for a snapshot that never existed,
    /// never a committed snapshot whose shared inodes are not listed.
    pub fn settle(&self) -> io::Result<()> {
        self.settle_placeholders()?;
        let inodes = self
            .inodes
            .lock()
            .map(|mut i| std::mem::take(&mut *i))
            .unwrap_or_default();
        if inodes.is_empty() {
            return Ok(());
        }
        let mut packed = Vec::with_capacity(inodes.len() * 16);
        for (dev, ino) in inodes {
            packed.extend_from_slice(&dev.to_le_bytes());
            packed.extend_from_slice(&ino.to_le_bytes());
        }
        self.index
            .put_in(COPY_POOL_INODES, self.id.0.as_bytes(), &packed)
            .map_err(io::Error::other)
    }

    fn settle_placeholders(&self) -> io::Result<()> {
        let deferred = match self.deferred.lock() {
            Ok(mut d) => std::mem::take(&mut *d),
            Err(_) => return Err(io::Error::other("copy pool lock poisoned")),
        };
        for (n, mut d) in deferred.into_iter().enumerate() {
            let held = rustix::fs::fstat(&d.held)?;
            if held.st_nlink == 0 {
                continue;
            }
            if self.replace(&d, &held, n).is_ok_and(|done| done) {
                self.linked.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            // The source may have changed since the walk: record nothing for this op.
            self.taint();
            data::fill_file(&mut d.held, &d.src, &d.meta)?;
            self.copied.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Replaces one placeholder by its link; false when it cannot be (then it is filled).
    fn replace(&self, d: &Deferred, held: &rustix::fs::Stat, n: usize) -> io::Result<bool> {
        let at = fs::symlink_metadata(&d.upper_path)?;
        let placed = (at.dev(), at.ino()) == (held.st_dev, held.st_ino)
            && at.nlink() == 1
            && at.len() == d.meta.len()
            && (at.mtime(), at.mtime_nsec()) == (d.meta.mtime(), d.meta.mtime_nsec());
        let owner = (at.uid(), at.gid());
        let mode = at.mode() & 0o7777;
        let c = fs::symlink_metadata(&d.candidate)?;
        let same = c.is_file()
            && c.len() == at.len()
            && c.mode() & 0o7777 == mode
            && (c.uid(), c.gid()) == owner
            && (c.mtime(), c.mtime_nsec()) == (at.mtime(), at.mtime_nsec());
        let Some(parent) = d.upper_path.parent() else {
            return Ok(false);
        };
        if !placed || !same {
            return Ok(false);
        }
        let parent_meta = fs::symlink_metadata(parent)?;
        let tmp = parent.join(format!(".rbuild-pool-{}-{n}", std::process::id()));
        fs::hard_link(&d.candidate, &tmp)?;
        if let Err(e) = fs::rename(&tmp, &d.upper_path) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        data::set_mtime(parent, &parent_meta)?;
        Ok(true)
    }

    /// Remembers that `dest` now holds the file `key` names, inode `inode` (linked, or
    /// copied from `src` whose stat was `meta` before the copy: recorded only if it is
    /// unchanged after it).
    pub(super) fn record(
        &self,
        key: Key,
        dest: &Path,
        inode: (u64, u64),
        copied_from: Option<(&Path, &fs::Metadata)>,
    ) {
        // A file made through the mount: its inode as the upper dir's filesystem numbers it
        // (the one a later `claim` compares with), not the overlay's.
        let inode = match dest.strip_prefix(&self.mount) {
            Ok(rel) if copied_from.is_some() => match fs::symlink_metadata(self.upper.join(rel)) {
                Ok(m) => (m.dev(), m.ino()),
                Err(_) => {
                    self.taint();
                    return;
                }
            },
            _ => inode,
        };
        if let Ok(mut inodes) = self.inodes.lock() {
            inodes.push(inode);
        }
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

    /// Writes the op's entries under its snapshot, now committed as `id` (nothing when the op
    /// removed or replaced anything in its destination).
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

/// Drops the pool's entries that name one of the removed snapshots `gone` (garbage
/// collection calls it after removing them; entries naming missing snapshots are ignored
/// anyway). Files linked elsewhere stay: the other names keep the inodes.
pub fn forget_snapshots(index: &CacheIndex, gone: &[SnapshotId]) -> Result<(), CacheError> {
    if gone.is_empty() {
        return Ok(());
    }
    let ids: HashSet<&[u8]> = gone.iter().map(|g| g.0.as_bytes()).collect();
    let keys: Vec<Vec<u8>> = ids.iter().map(|id| id.to_vec()).collect();
    index.remove_many_in(COPY_POOL_INODES, &keys)?;
    let stale: Vec<Vec<u8>> = index
        .entries_in(COPY_POOL)?
        .into_iter()
        .filter(|(_, v)| {
            let id = v.split(|b| *b == b'\n').next().unwrap_or_default();
            ids.contains(id)
        })
        .map(|(k, _)| k)
        .collect();
    index.remove_many_in(COPY_POOL, &stale)
}
