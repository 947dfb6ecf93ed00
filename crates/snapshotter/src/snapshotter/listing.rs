//! Listing committed snapshots and measuring them, for garbage collection and `rbuild du`.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{read_parent, Snapshotter};
use crate::error::{IoContext, Result, SnapshotError};
use crate::SnapshotId;

/// A committed snapshot as [`Snapshotter::list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The snapshot.
    pub id: SnapshotId,
    /// The snapshot it was prepared on, if any.
    pub parent: Option<SnapshotId>,
}

impl Snapshotter {
    /// Every committed snapshot with its parent. A snapshot whose metadata cannot be read is
    /// listed without a parent (it is still a snapshot that can be removed). Blocks.
    pub fn list(&self) -> Result<Vec<SnapshotInfo>, SnapshotError> {
        let snaps = self.inner.root.join("snapshots");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&snaps).ctx("read dir", &snaps)? {
            let entry = entry.ctx("read dir", &snaps)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = SnapshotId(name);
            if id.validate().is_err() {
                continue;
            }
            let parent = read_parent(&entry.path()).unwrap_or(None);
            out.push(SnapshotInfo { id, parent });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// The disk space committed snapshot `id` takes by itself (its own directory, allocated
    /// blocks, hard links counted once); never changes once committed. Blocks.
    pub fn disk_usage(&self, id: &SnapshotId) -> Result<u64, SnapshotError> {
        let dir = self.existing_snap_dir(id)?;
        disk_usage(&dir)
    }

    /// [`Snapshotter::disk_usage`] of `id`, measured once and remembered in a `size` file in its
    /// directory. The file is a cache: written without fsync (a label write's fsync cost ~1 ms a
    /// snapshot), so after a crash it may be missing or unreadable and is measured again. Blocks.
    pub fn measured_size(&self, id: &SnapshotId) -> Result<u64, SnapshotError> {
        let dir = self.existing_snap_dir(id)?;
        let path = dir.join("size");
        if let Some(n) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return Ok(n);
        }
        let n = disk_usage(&dir)?;
        let tmp = dir.join(format!(".tmp-size-{}", std::process::id()));
        if std::fs::write(&tmp, n.to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
        Ok(n)
    }

    /// Removes committed snapshots `ids`, children before parents (so a crash in between never
    /// leaves a kept snapshot without its parent); each disappears by one rename into this
    /// process's temp dir (swept by a later open if this process dies). Snapshots already gone
    /// are skipped. Blocks.
    pub fn remove_all(&self, ids: &[SnapshotId]) -> Result<(), SnapshotError> {
        let doomed: HashSet<&SnapshotId> = ids.iter().collect();
        let all = self.list()?;
        // Depth of each doomed snapshot below the others in the doomed set: deepest first.
        let parents: std::collections::HashMap<&SnapshotId, Option<&SnapshotId>> =
            all.iter().map(|s| (&s.id, s.parent.as_ref())).collect();
        let depth = |id: &SnapshotId| {
            let mut d = 0usize;
            let mut cur = parents.get(id).copied().flatten();
            while let Some(p) = cur {
                d += 1;
                if d > parents.len() {
                    break;
                }
                cur = parents.get(p).copied().flatten();
            }
            d
        };
        let mut order: Vec<(&SnapshotId, usize)> =
            doomed.iter().map(|id| (*id, depth(id))).collect();
        order.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        for (id, _) in order {
            let dir = self.snap_dir(id)?;
            if !dir.is_dir() {
                continue;
            }
            super::remove_tree_via_tmp(&self.inner.tmp, &dir)?;
        }
        Ok(())
    }
}

/// Allocated bytes under `dir` (without following symlinks), each inode counted once.
pub(crate) fn disk_usage(dir: &Path) -> Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).ctx("stat", &path),
        };
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += meta.blocks() * 512;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).ctx("read dir", &path)? {
                stack.push(entry.ctx("read dir", &path)?.path());
            }
        }
    }
    Ok(total)
}

/// Allocated bytes under `dir` (0 when it does not exist), for callers measuring other trees
/// of the root (e.g. cache mounts).
pub fn tree_disk_usage(dir: &Path) -> Result<u64, SnapshotError> {
    disk_usage(dir)
}

#[cfg(test)]
mod tests {
    use crate::{Backend, Snapshotter};

    #[test]
    fn lists_measures_and_removes_children_first() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = Snapshotter::open_with_backend(dir.path(), Backend::Copy).unwrap();
        let a = snaps.prepare(None).unwrap();
        std::fs::write(a.upperdir().join("big"), vec![7u8; 100_000]).unwrap();
        let a = snaps.commit(a).unwrap();
        let b = snaps.prepare(Some(&a)).unwrap();
        std::fs::write(b.upperdir().join("small"), b"x").unwrap();
        let b = snaps.commit(b).unwrap();
        let listed = snaps.list().unwrap();
        assert_eq!(listed.len(), 2);
        let child = listed.iter().find(|s| s.id == b).unwrap();
        assert_eq!(child.parent.as_ref(), Some(&a));
        // The copy backend holds the parent's file too.
        assert!(snaps.disk_usage(&a).unwrap() >= 100_000);
        assert!(snaps.disk_usage(&b).unwrap() >= 100_000);
        // Parent named first: still removed after its child; already-gone ids are skipped.
        snaps.remove_all(&[a.clone(), b.clone()]).unwrap();
        snaps.remove_all(std::slice::from_ref(&a)).unwrap();
        assert!(snaps.list().unwrap().is_empty());
        assert!(!snaps.exists(&a) && !snaps.exists(&b));
    }
}
