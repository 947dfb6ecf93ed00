//! The [`Snapshotter`]: committed snapshots, active snapshots, views, labels, diffs and layer apply.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rbuild_oci::lock::{lock_exclusive, sweep_dead, OwnerLock};
use serde::{Deserialize, Serialize};

mod durable;
mod listing;

pub use listing::{tree_disk_usage, SnapshotInfo};

use crate::apply::{apply_tar, Whiteouts};
use crate::diff::{write_naive_diff, write_overlay_diff, DiffOptions};
use crate::error::{IoContext, Result, SnapshotError};
use crate::fsutil::{copy_tree, write_atomic};
use crate::mount::{mount_overlay, mounts_under, unmount_detach, MountGuard};

/// The environment variable that forces a backend: `overlay` or `copy`.
pub const BACKEND_ENV: &str = "RBUILD_SNAPSHOTTER";

/// The opaque, unique name of a snapshot (a plain file name: hex digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SnapshotId(pub String);

impl std::fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl SnapshotId {
    /// Rejects ids that are not a single plain path component, so an id can never name a path
    /// outside the snapshot root.
    fn validate(&self) -> Result<&str> {
        let s = self.0.as_str();
        if s.is_empty()
            || s == "."
            || s == ".."
            || s.contains('/')
            || s.contains('\0')
            || s.starts_with('.')
        {
            return Err(SnapshotError::InvalidId(s.to_string()));
        }
        Ok(s)
    }
}

/// Which kind of snapshots a [`Snapshotter`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// overlayfs: a snapshot stores only its own changes; a chain is mounted as lowerdirs.
    Overlay,
    /// Plain directories: every snapshot is a full copy of the tree (used where overlay cannot
    /// mount, e.g. on an overlayfs root without support for nesting).
    Copy,
}

/// How to mount an [`Active`] snapshot as a sandbox's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootfsSpec {
    /// An overlay mount.
    Overlay {
        /// The parent chain's directories, top-most first (at least one: an empty dir for no parent).
        lowerdirs: Vec<PathBuf>,
        /// The writable layer.
        upperdir: PathBuf,
        /// overlayfs' work dir (same filesystem as `upperdir`).
        workdir: PathBuf,
    },
    /// A plain directory to bind-mount (copy backend).
    Dir(PathBuf),
}

struct Inner {
    root: PathBuf,
    backend: Backend,
    /// Serialises label read-modify-write cycles within this process.
    labels: Mutex<()>,
    /// This snapshotter's private dirs: `active/<owner>`, `mnt/<owner>`, `tmp/<owner>`.
    active: PathBuf,
    mnt: PathBuf,
    tmp: PathBuf,
    /// Held while this snapshotter lives: its private dirs are never swept meanwhile.
    _owner: OwnerLock,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Every Active holds a clone, so `active/<owner>` is empty by now; a mount guard that
        // outlives the snapshotter keeps `mnt/<owner>` (never removed recursively: it could
        // reach into a live mount) for a later open to sweep.
        let _ = std::fs::remove_dir_all(&self.tmp);
        let _ = std::fs::remove_dir(&self.active);
        let _ = std::fs::remove_dir(&self.mnt);
    }
}

/// A snapshot store rooted in one directory. Cheap to clone; all methods block (run them in
/// `spawn_blocking` from async code).
///
/// Layout: `ROOT/snapshots/<id>/{fs,work,parent,labels.json}` (committed),
/// `ROOT/active/<owner>/<id>/…` (in progress; commit renames into `snapshots/`),
/// `ROOT/mnt/<owner>/<n>` (mount points), `ROOT/tmp/<owner>/`, `ROOT/empty` and `ROOT/empty2`
/// (lower dirs for empty chains) and `ROOT/owners/<owner>` (one `flock`ed file per open
/// snapshotter: its private dirs are swept only after it is gone, so any number of processes
/// can share the root).
#[derive(Clone)]
pub struct Snapshotter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Snapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshotter")
            .field("root", &self.inner.root)
            .field("backend", &self.inner.backend)
            .finish()
    }
}

/// A process-wide counter so ids and mount points made in the same nanosecond still differ.
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}{:06x}{:04x}",
        nanos,
        std::process::id() & 0xff_ffff,
        COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff
    )
}

impl Snapshotter {
    /// Opens (creating if needed) the snapshot store at `root`, e.g. `ROOT/snapshots-v1`.
    ///
    /// The backend comes from `RBUILD_SNAPSHOTTER` (`overlay` or `copy`) or, when unset, from a
    /// probe: one tiny overlay mount under `root`. What dead processes left (their owner lock is
    /// free) is repaired first: mounts under their `mnt/` dirs are detached, their active
    /// snapshots and temp dirs deleted. Live processes' dirs are never touched.
    pub fn open(root: &Path) -> Result<Snapshotter, SnapshotError> {
        let forced = match std::env::var(BACKEND_ENV) {
            Ok(v) if v.is_empty() => None,
            Ok(v) if v == "overlay" => Some(Backend::Overlay),
            Ok(v) if v == "copy" => Some(Backend::Copy),
            Ok(v) => return Err(SnapshotError::InvalidBackend(v)),
            Err(_) => None,
        };
        Self::open_inner(root, forced)
    }

    /// Like [`Snapshotter::open`] with the backend chosen by the caller (no probe, no env).
    pub fn open_with_backend(root: &Path, backend: Backend) -> Result<Snapshotter, SnapshotError> {
        Self::open_inner(root, Some(backend))
    }

    fn open_inner(root: &Path, backend: Option<Backend>) -> Result<Snapshotter> {
        std::fs::create_dir_all(root).ctx("create dir", root)?;
        let root = std::fs::canonicalize(root).ctx("resolve", root)?;
        for sub in [
            "snapshots",
            "active",
            "mnt",
            "tmp",
            "empty",
            "empty2",
            "owners",
        ] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).ctx("create dir", &p)?;
        }
        repair(&root)?;
        let owners = root.join("owners");
        let owner = OwnerLock::acquire(&owners).ctx("lock", &owners)?;
        let dir = |sub: &str| root.join(sub).join(owner.name());
        let (active, mnt, tmp) = (dir("active"), dir("mnt"), dir("tmp"));
        for p in [&active, &mnt, &tmp] {
            std::fs::create_dir_all(p).ctx("create dir", p)?;
        }
        let backend = match backend {
            Some(b) => b,
            None => match probe_overlay(&tmp) {
                Ok(()) => Backend::Overlay,
                Err(_) => Backend::Copy,
            },
        };
        // Markers of this boot that earlier processes left, old enough that the kernel has
        // written their data back: cleared now, before this process writes, by one `syncfs`
        // when little is dirty (`rbuild_oci::durable::syncfs_when_clean`), else left for later.
        let _ = durable::sweep(
            &root.join("snapshots"),
            durable::SWEEP_MIN_AGE,
            rbuild_oci::durable::syncfs_when_clean,
        );
        Ok(Snapshotter {
            inner: Arc::new(Inner {
                root,
                backend,
                labels: Mutex::new(()),
                active,
                mnt,
                tmp,
                _owner: owner,
            }),
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The (canonical) root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// This process's temp dir under the root (`tmp/<owner>`, same filesystem as the
    /// snapshots): removed when the snapshotter drops, or by a later open after a crash.
    pub fn temp_dir(&self) -> &Path {
        &self.inner.tmp
    }

    fn snap_dir(&self, id: &SnapshotId) -> Result<PathBuf> {
        Ok(self.inner.root.join("snapshots").join(id.validate()?))
    }

    fn existing_snap_dir(&self, id: &SnapshotId) -> Result<PathBuf> {
        let dir = self.snap_dir(id)?;
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(SnapshotError::NotFound(id.0.clone()))
        }
    }

    fn empty_dir(&self) -> PathBuf {
        self.inner.root.join("empty")
    }

    /// The `fs` dirs of `id` and its ancestors, top-most first.
    fn chain(&self, id: Option<&SnapshotId>) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut cur = id.cloned();
        while let Some(c) = cur {
            if !seen.insert(c.clone()) {
                return Err(SnapshotError::Corrupt {
                    path: self.snap_dir(&c)?.join("parent"),
                    reason: "parent chain has a cycle".into(),
                });
            }
            let dir = self.existing_snap_dir(&c)?;
            if !durable::is_durable(&dir) {
                return Err(SnapshotError::NotFound(c.0.clone()));
            }
            out.push(dir.join("fs"));
            cur = read_parent(&dir)?;
        }
        Ok(out)
    }

    /// A new writable snapshot on top of `parent` (`None`: an empty tree).
    pub fn prepare(&self, parent: Option<&SnapshotId>) -> Result<Active, SnapshotError> {
        let chain = self.chain(parent)?;
        let id = SnapshotId(unique_name());
        let dir = self.inner.active.join(&id.0);
        let fs = dir.join("fs");
        std::fs::create_dir(&dir).ctx("create dir", &dir)?;
        let made = (|| {
            std::fs::create_dir(&fs).ctx("create dir", &fs)?;
            std::fs::create_dir(dir.join("work")).ctx("create dir", dir.join("work"))?;
            let parent_text = parent.map(|p| p.0.clone()).unwrap_or_default();
            if durable::boot_id().is_some() {
                // Flushed with the rest of the snapshot (see `durable`): no fsync per prepare.
                let path = dir.join("parent");
                std::fs::write(&path, parent_text.as_bytes()).ctx("write", &path)?;
            } else {
                write_atomic(&dir.join("parent"), parent_text.as_bytes())?;
            }
            if self.inner.backend == Backend::Copy {
                if let Some(top) = chain.first() {
                    copy_tree(top, &fs)?;
                }
            }
            Ok(())
        })();
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let lowerdirs = if chain.is_empty() {
            vec![self.empty_dir()]
        } else {
            chain
        };
        Ok(Active {
            snapshotter: self.clone(),
            id,
            parent: parent.cloned(),
            dir,
            fs,
            lowerdirs,
            hold: Arc::new(()),
            done: false,
        })
    }

    /// Commits `active`: one rename makes it a committed snapshot, so a crash leaves either
    /// nothing or the whole snapshot. Nothing waits for its data to reach the disk: it carries
    /// a boot-id marker until a later sweep synced it, and an OS crash meanwhile makes it count
    /// as missing (module `durable`). Without a readable boot id it syncs first. Fails with
    /// [`SnapshotError::StillMounted`] (discarding the snapshot) while a [`MountGuard`] from
    /// [`Active::mount`] is alive.
    pub fn commit(&self, mut active: Active) -> Result<SnapshotId, SnapshotError> {
        if Arc::strong_count(&active.hold) > 1 {
            return Err(SnapshotError::StillMounted(active.id.0.clone()));
        }
        let work = active.dir.join("work");
        std::fs::remove_dir_all(&work).ctx("remove dir", &work)?;
        std::fs::create_dir(&work).ctx("create dir", &work)?;
        let dest = self.snap_dir(&active.id)?;
        if let Some(boot) = durable::boot_id() {
            durable::mark(&active.dir, boot).ctx("write", active.dir.join(durable::MARKER))?;
            std::fs::rename(&active.dir, &dest).ctx("rename into snapshots", &dest)?;
            active.done = true;
            return Ok(active.id.clone());
        }
        let dirfd = File::open(&active.dir).ctx("open", &active.dir)?;
        rustix::fs::syncfs(&dirfd).ctx("syncfs", &active.dir)?;
        std::fs::rename(&active.dir, &dest).ctx("rename into snapshots", &dest)?;
        active.done = true;
        let snaps = self.inner.root.join("snapshots");
        File::open(&snaps)
            .and_then(|f| f.sync_all())
            .ctx("fsync", &snaps)?;
        Ok(active.id.clone())
    }

    /// Discards `active` and everything written to it.
    pub fn abort(&self, mut active: Active) -> Result<(), SnapshotError> {
        active.done = true;
        remove_tree_via_tmp(&self.inner.tmp, &active.dir)
    }

    /// Clears the `unsynced` markers of this boot at least `min_age` old, after one `syncfs`
    /// of the snapshots' filesystem (skipped when there are none); returns how many went. Runs
    /// in the background at every open with a minimum age; `rbuild prune` may call it with zero.
    pub fn sweep_unsynced(&self, min_age: std::time::Duration) -> Result<usize, SnapshotError> {
        let snaps = self.inner.root.join("snapshots");
        durable::sweep(&snaps, min_age, rbuild_oci::durable::syncfs).ctx("sweep markers", &snaps)
    }

    /// `true` when `id` names a committed snapshot.
    /// A snapshot that an OS crash may have left incomplete (and any snapshot above one) does
    /// not count.
    pub fn exists(&self, id: &SnapshotId) -> bool {
        self.chain(Some(id)).is_ok()
    }

    /// The upper dir of committed snapshot `id` (overlay backend only; `None` for the copy
    /// backend, whose snapshot trees are rewritten in place by the next snapshot's prepare, and
    /// for ids that are not committed). Its files must never be written: a caller may hard-link
    /// them into an active snapshot's upper dir (the worker's copy pool).
    pub fn committed_upper(&self, id: &SnapshotId) -> Option<PathBuf> {
        if self.inner.backend != Backend::Overlay || !self.exists(id) {
            return None;
        }
        self.snap_dir(id).ok().map(|d| d.join("fs"))
    }

    /// Committed snapshot `id` and its ancestors, top-most first, with their upper dirs (as
    /// [`Snapshotter::committed_upper`]; one walk of the parent chain).
    pub fn committed_chain(&self, id: &SnapshotId) -> Option<Vec<(SnapshotId, PathBuf)>> {
        if self.inner.backend != Backend::Overlay {
            return None;
        }
        self.chain(Some(id))
            .ok()?
            .into_iter()
            .map(|fs| {
                let name = fs.parent()?.file_name()?.to_str()?.to_string();
                Some((SnapshotId(name), fs))
            })
            .collect()
    }

    /// The parent of committed snapshot `id` (`None`: it was prepared on an empty tree).
    pub fn parent(&self, id: &SnapshotId) -> Result<Option<SnapshotId>, SnapshotError> {
        read_parent(&self.existing_snap_dir(id)?)
    }

    /// Deletes committed snapshot `id`. Refused while another committed snapshot has it as parent.
    pub fn remove(&self, id: &SnapshotId) -> Result<(), SnapshotError> {
        let dir = self.existing_snap_dir(id)?;
        let snaps = self.inner.root.join("snapshots");
        for entry in std::fs::read_dir(&snaps).ctx("read dir", &snaps)? {
            let entry = entry.ctx("read dir", &snaps)?;
            if let Some(p) = read_parent(&entry.path())? {
                if &p == id {
                    return Err(SnapshotError::HasChildren {
                        id: id.0.clone(),
                        child: entry.file_name().to_string_lossy().into_owned(),
                    });
                }
            }
        }
        remove_tree_via_tmp(&self.inner.tmp, &dir)
    }

    fn read_labels(&self, dir: &Path) -> Result<BTreeMap<String, String>> {
        let path = dir.join("labels.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| SnapshotError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e).ctx("read", &path),
        }
    }

    /// The label `key` of committed snapshot `id`, if set.
    pub fn label(&self, id: &SnapshotId, key: &str) -> Result<Option<String>, SnapshotError> {
        let dir = self.existing_snap_dir(id)?;
        Ok(self.read_labels(&dir)?.remove(key))
    }

    /// All labels of committed snapshot `id`.
    pub fn labels(&self, id: &SnapshotId) -> Result<BTreeMap<String, String>, SnapshotError> {
        let dir = self.existing_snap_dir(id)?;
        self.read_labels(&dir)
    }

    /// Sets label `key` of committed snapshot `id` (the label file is replaced atomically).
    pub fn set_label(&self, id: &SnapshotId, key: &str, value: &str) -> Result<(), SnapshotError> {
        let dir = self.existing_snap_dir(id)?;
        let _guard = self.inner.labels.lock().unwrap_or_else(|p| p.into_inner());
        // Other processes may label the same snapshot (e.g. two exports): an exclusive flock
        // on the snapshot's directory makes the read-modify-write atomic across processes.
        let dir_lock = File::open(&dir).ctx("open", &dir)?;
        lock_exclusive(&dir_lock, &dir, &self.inner.root, None).ctx("lock", &dir)?;
        let mut labels = self.read_labels(&dir)?;
        labels.insert(key.to_string(), value.to_string());
        let path = dir.join("labels.json");
        let bytes = serde_json::to_vec_pretty(&labels).map_err(|e| SnapshotError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &bytes)
    }

    /// A read-only view of committed snapshot `id` with its whole chain merged (`None`: an empty
    /// tree). Overlay: mounted on a fresh dir under `ROOT/mnt` in the caller's mount namespace,
    /// detached and removed when the guard drops. Copy: the snapshot's own directory (no mount;
    /// do not write to it).
    pub fn view(&self, id: Option<&SnapshotId>) -> Result<MountGuard, SnapshotError> {
        let chain = self.chain(id)?;
        match self.inner.backend {
            Backend::Copy => Ok(MountGuard::plain(
                chain.first().cloned().unwrap_or_else(|| self.empty_dir()),
                None,
            )),
            Backend::Overlay => {
                let mut lowers = chain;
                // An overlay without an upper dir needs two (distinct) lower layers on older kernels.
                if lowers.is_empty() {
                    lowers.push(self.empty_dir());
                }
                if lowers.len() < 2 {
                    lowers.push(self.inner.root.join("empty2"));
                }
                self.mount_new(&lowers, Path::new(""), Path::new(""), true, None)
            }
        }
    }

    fn mount_new(
        &self,
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        readonly: bool,
        hold: Option<Arc<()>>,
    ) -> Result<MountGuard> {
        let target = self.inner.mnt.join(unique_name());
        std::fs::create_dir(&target).ctx("create dir", &target)?;
        if let Err(e) = mount_overlay(lowers, upper, work, &target, readonly) {
            let _ = std::fs::remove_dir(&target);
            return Err(e);
        }
        Ok(MountGuard::mounted(target, hold))
    }

    /// Writes the diff of committed snapshot `id` against its parent as an uncompressed layer
    /// tar: OCI whiteouts, entries in sorted depth-first order, hardlinks as link entries, xattrs
    /// as PAX `SCHILY.xattr.*`, numeric owners only, mtimes clamped to `opts.source_date_epoch`.
    pub fn write_diff(
        &self,
        id: &SnapshotId,
        out: &mut dyn std::io::Write,
        opts: &DiffOptions,
    ) -> Result<(), SnapshotError> {
        let dir = self.existing_snap_dir(id)?;
        let fs = dir.join("fs");
        match self.inner.backend {
            Backend::Overlay => write_overlay_diff(&fs, out, opts),
            Backend::Copy => {
                let parent = match read_parent(&dir)? {
                    Some(p) => self.existing_snap_dir(&p)?.join("fs"),
                    None => self.empty_dir(),
                };
                write_naive_diff(&fs, &parent, out, opts)
            }
        }
    }

    /// Applies the uncompressed layer `tar` on top of `parent` and commits the result.
    ///
    /// Every path is resolved inside the new snapshot (`..` that climbs out is an error; symlinks,
    /// absolute or not, resolve inside). Whiteouts and opaque dirs are honoured (stored
    /// overlay-natively for the overlay backend), devices and fifos are created with mknod,
    /// hardlinks to files of lower layers are copied up, owners/modes/mtimes/xattrs are kept.
    pub fn apply_layer(
        &self,
        parent: Option<&SnapshotId>,
        tar: &mut dyn std::io::Read,
    ) -> Result<SnapshotId, SnapshotError> {
        let active = self.prepare(parent)?;
        let result = match self.inner.backend {
            Backend::Overlay => {
                let lowers = if parent.is_some() {
                    active.lowerdirs.clone()
                } else {
                    Vec::new()
                };
                apply_tar(
                    active.upperdir(),
                    tar,
                    &Whiteouts::Overlay { lowers: &lowers },
                )
            }
            Backend::Copy => apply_tar(active.upperdir(), tar, &Whiteouts::Delete),
        };
        match result {
            Ok(()) => self.commit(active),
            Err(e) => {
                let _ = self.abort(active);
                Err(e)
            }
        }
    }

    /// Stacks committed snapshot `layer` (prepared on an empty tree, e.g. a `COPY --link`) on
    /// `parent` and commits the result: the new snapshot's own changes are exactly `layer`'s
    /// files, so its diff is `layer`'s diff. Labels `rbuild.layer.*` (the exported blob) are
    /// copied, and `rbuild.merge.source` names `layer` so an exporter can label it back.
    pub fn merge(
        &self,
        parent: Option<&SnapshotId>,
        layer: &SnapshotId,
    ) -> Result<SnapshotId, SnapshotError> {
        let layer_dir = self.existing_snap_dir(layer)?;
        if read_parent(&layer_dir)?.is_some() {
            return Err(SnapshotError::Corrupt {
                path: layer_dir.join("parent"),
                reason: "only a snapshot prepared on an empty tree can be merged".into(),
            });
        }
        let active = self.prepare(parent)?;
        let src = layer_dir.join("fs");
        let result = match self.inner.backend {
            Backend::Overlay => copy_tree(&src, active.upperdir()),
            Backend::Copy => merge_tree(&src, active.upperdir()),
        };
        if let Err(e) = result {
            let _ = self.abort(active);
            return Err(e);
        }
        let id = self.commit(active)?;
        for (key, value) in self.labels(layer)? {
            if key.starts_with("rbuild.layer.") {
                self.set_label(&id, &key, &value)?;
            }
        }
        self.set_label(&id, MERGE_SOURCE_LABEL, &layer.0)?;
        Ok(id)
    }
}

/// Label of a merged snapshot naming the layer snapshot it was made from (see [`Snapshotter::merge`]).
pub const MERGE_SOURCE_LABEL: &str = "rbuild.merge.source";

/// Copy backend merge: `src`'s entries replace those of `dst`; directories merge.
fn merge_tree(src: &Path, dst: &Path) -> Result<()> {
    for name in crate::fsutil::sorted_names(src)? {
        let s = src.join(&name);
        let d = dst.join(&name);
        let meta = std::fs::symlink_metadata(&s).ctx("stat", &s)?;
        let existing = std::fs::symlink_metadata(&d).ok();
        if meta.is_dir() {
            match existing {
                Some(m) if m.is_dir() => {}
                Some(_) => {
                    crate::fsutil::remove_any(&d)?;
                    std::fs::create_dir(&d).ctx("create dir", &d)?;
                }
                None => std::fs::create_dir(&d).ctx("create dir", &d)?,
            }
            merge_tree(&s, &d)?;
            crate::fsutil::copy_meta(&s, &d, &meta, false)?;
        } else {
            if existing.is_some() {
                crate::fsutil::remove_any(&d)?;
            }
            crate::fsutil::copy_entry(&s, &d, &meta, false)?;
        }
    }
    Ok(())
}

/// Reads `DIR/parent` (empty: no parent).
fn read_parent(dir: &Path) -> Result<Option<SnapshotId>> {
    let path = dir.join("parent");
    let text = std::fs::read_to_string(&path).ctx("read", &path)?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let id = SnapshotId(text.to_string());
    id.validate().map_err(|_| SnapshotError::Corrupt {
        path: path.clone(),
        reason: format!("bad parent id {text:?}"),
    })?;
    Ok(Some(id))
}

/// Renames `dir` into the temp dir `tmp` (atomic disappearance) and deletes it there.
fn remove_tree_via_tmp(tmp: &Path, dir: &Path) -> Result<()> {
    let dest = tmp.join(unique_name());
    std::fs::rename(dir, &dest).ctx("rename to tmp", dir)?;
    std::fs::remove_dir_all(&dest).ctx("remove dir", &dest)
}

/// Crash repair: for each owner whose lock is free (its process died) and each entry of
/// `active/`, `mnt/`, `tmp/` without a live owner (including the flat layout of older
/// versions), detaches the mounts below it, then deletes it.
fn repair(root: &Path) -> Result<()> {
    let areas: Vec<PathBuf> = ["mnt", "active", "tmp"]
        .iter()
        .map(|s| root.join(s))
        .collect();
    let owners = root.join("owners");
    let sweep = sweep_dead(&owners, &areas).ctx("sweep", &owners)?;
    if sweep.is_empty() {
        return Ok(());
    }
    if !sweep.dirs.is_empty() {
        for m in mounts_under(root)? {
            if !sweep.dirs.iter().any(|d| m.starts_with(d)) {
                continue;
            }
            match unmount_detach(&m) {
                Ok(()) => {}
                // Already gone (e.g. a parent detach took it along).
                Err(SnapshotError::Unmount { source, .. })
                    if matches!(
                        source.raw_os_error(),
                        Some(libc::EINVAL) | Some(libc::ENOENT)
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }
    sweep.finish().ctx("sweep", root)
}

/// Tries one overlay mount (with an upper dir, a whiteout and the opaque xattr) under `tmp`.
fn probe_overlay(tmp: &Path) -> std::io::Result<()> {
    let base = tmp.join(format!("probe-{}", unique_name()));
    let result = (|| {
        for d in ["lower", "upper", "work", "merged"] {
            std::fs::create_dir_all(base.join(d))?;
        }
        std::fs::write(base.join("lower/f"), b"x")?;
        mount_overlay(
            &[base.join("lower")],
            &base.join("upper"),
            &base.join("work"),
            &base.join("merged"),
            false,
        )
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        let used = (|| {
            std::fs::remove_file(base.join("merged/f"))?;
            let meta = std::fs::symlink_metadata(base.join("upper/f"))?;
            if !crate::fsutil::is_whiteout(&meta) {
                return Err(std::io::Error::other(
                    "overlay did not create a whiteout device",
                ));
            }
            rustix::fs::lsetxattr(
                base.join("upper"),
                crate::fsutil::opaque_xattr(),
                b"y",
                rustix::fs::XattrFlags::empty(),
            )?;
            Ok(())
        })();
        let _ = unmount_detach(&base.join("merged"));
        used
    })();
    let _ = std::fs::remove_dir_all(&base);
    result
}

/// A writable snapshot in progress. Consume it with [`Snapshotter::commit`] or
/// [`Snapshotter::abort`]; dropping it discards it (best effort).
#[derive(Debug)]
pub struct Active {
    snapshotter: Snapshotter,
    id: SnapshotId,
    parent: Option<SnapshotId>,
    dir: PathBuf,
    /// `dir/fs`.
    fs: PathBuf,
    lowerdirs: Vec<PathBuf>,
    /// One clone per live [`MountGuard`], so commit can refuse while mounted.
    hold: Arc<()>,
    done: bool,
}

impl Active {
    /// The id it will have once committed.
    pub fn id(&self) -> &SnapshotId {
        &self.id
    }

    /// The committed snapshot it was prepared on.
    pub fn parent(&self) -> Option<&SnapshotId> {
        self.parent.as_ref()
    }

    /// How to mount it for a sandboxed process.
    pub fn rootfs(&self) -> RootfsSpec {
        match self.snapshotter.backend() {
            Backend::Overlay => RootfsSpec::Overlay {
                lowerdirs: self.lowerdirs.clone(),
                upperdir: self.fs.clone(),
                workdir: self.dir.join("work"),
            },
            Backend::Copy => RootfsSpec::Dir(self.fs.clone()),
        }
    }

    /// Mounts it read-write in the caller's mount namespace (overlay copy-up semantics for
    /// writes); detached when the guard drops. Copy backend: the tree itself, no mount. Drop the
    /// guard before committing.
    pub fn mount(&self) -> Result<MountGuard, SnapshotError> {
        match self.snapshotter.backend() {
            Backend::Copy => Ok(MountGuard::plain(self.fs.clone(), Some(self.hold.clone()))),
            Backend::Overlay => self.snapshotter.mount_new(
                &self.lowerdirs,
                &self.fs,
                &self.dir.join("work"),
                false,
                Some(self.hold.clone()),
            ),
        }
    }

    /// Overlay: the upper dir (only this snapshot's changes). Copy: the full tree.
    pub fn upperdir(&self) -> &Path {
        &self.fs
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if !self.done {
            let _ = remove_tree_via_tmp(&self.snapshotter.inner.tmp, &self.dir);
        }
    }
}
