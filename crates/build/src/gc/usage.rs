//! `rbuild du`'s numbers: sizes and reclaimable bytes of images, build cache, snapshots and
//! cache mounts, and one line per cache record.

use super::model::{Model, RecordId};
use super::{open, GcError};
use crate::state::StateDir;
use rbuild_oci::lock::WaitReporter;

/// Sizes of one area of the root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AreaUsage {
    /// How many items (tags, records, snapshots, mounts).
    pub count: usize,
    /// How many are in use (tagged images; records: those reaching a tagged layer).
    pub active: usize,
    /// Bytes on disk.
    pub size: u64,
    /// Bytes a prune would free.
    pub reclaimable: u64,
}

/// One cache record in [`Usage::records`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordUsage {
    /// Its id (hex).
    pub id: String,
    /// `regular` (a build result) or `source.image` (unpacked image layers).
    pub kind: &'static str,
    /// Bytes of its own snapshot and the blobs only it labels.
    pub size: u64,
    /// True when pruning it frees space (no tag needs its blobs).
    pub reclaimable: bool,
    /// When it was last used (unix seconds), if known.
    pub last_used: Option<u64>,
}

/// What [`disk_usage`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Tagged images: the blobs tags reach; reclaimable: blobs nothing reaches.
    pub images: AreaUsage,
    /// Cache records and the snapshots and label blobs they alone hold.
    pub build_cache: AreaUsage,
    /// All committed snapshots.
    pub snapshots: AreaUsage,
    /// `RUN --mount=type=cache` directories.
    pub cache_mounts: AreaUsage,
    /// Per record, most recently used first.
    pub records: Vec<RecordUsage>,
    /// Bytes of everything measured.
    pub total: u64,
}

/// Measures the root (snapshots measured once and remembered). Blocks.
pub fn disk_usage(state: &StateDir, reporter: Option<&WaitReporter>) -> Result<Usage, GcError> {
    let o = open(state, reporter)?;
    let model = Model::load(&o.store, &o.snapshotter, &o.index)?;
    let all = model.reach(model.records.iter());
    let tags_only = model.reach(std::iter::empty());
    let mut u = Usage::default();
    let tagged_size: u64 = model.tagged.iter().filter_map(|b| model.blobs.get(b)).sum();
    let blob_total: u64 = model.blobs.values().sum();
    let dangling: u64 = model
        .blobs
        .iter()
        .filter(|(d, _)| !all.blobs.contains(*d))
        .map(|(_, s)| s)
        .sum();
    u.images = AreaUsage {
        count: model.tag_count,
        active: model.tag_count,
        size: tagged_size + dangling,
        reclaimable: dangling,
    };
    let cache_size = model.size_of(&all) - model.size_of(&tags_only);
    u.build_cache = AreaUsage {
        count: model.records.len(),
        active: 0,
        size: cache_size,
        reclaimable: cache_size,
    };
    let snap_total: u64 = model.snaps.values().map(|s| s.size).sum();
    u.snapshots = AreaUsage {
        count: model.snaps.len(),
        active: all.snaps.len(),
        size: snap_total,
        reclaimable: snap_total,
    };
    let mounts = state.cache_mounts();
    let mount_count = std::fs::read_dir(&mounts)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .count()
        })
        .unwrap_or(0);
    let mount_size = if mounts.exists() {
        rbuild_snapshotter::tree_disk_usage(&mounts)?
    } else {
        0
    };
    u.cache_mounts = AreaUsage {
        count: mount_count,
        active: 0,
        size: mount_size,
        reclaimable: mount_size,
    };
    for r in &model.records {
        let (size, reclaimable) = match r.snapshot.as_ref().and_then(|s| model.snaps.get(s)) {
            Some(s) => {
                let blobs: u64 = s
                    .blobs
                    .iter()
                    .filter(|b| !model.tagged.contains(*b))
                    .filter_map(|b| model.blobs.get(b))
                    .sum();
                let shared = s.blobs.iter().any(|b| model.tagged.contains(b));
                (s.size + blobs, !shared)
            }
            None => (0, true),
        };
        u.records.push(RecordUsage {
            id: r.id.display(),
            kind: match r.id {
                RecordId::Result(_) => "regular",
                RecordId::Unpacked(_) => "source.image",
            },
            size,
            reclaimable,
            last_used: (r.last_used > 0).then_some(r.last_used),
        });
    }
    u.build_cache.active = u.records.iter().filter(|r| !r.reclaimable).count();
    u.records
        .sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.id.cmp(&b.id)));
    u.total = snap_total + blob_total + mount_size;
    Ok(u)
}
