//! The collector's picture of a root: cache records, committed snapshots with their sizes and
//! labelled blobs, blobs on disk and what tags reach; and reachability over it.

use super::GcError;
use rbuild_oci::{Compression, Digest, Layer, Store};
use rbuild_snapshotter::{SnapshotId, Snapshotter, MERGE_SOURCE_LABEL};
use rbuild_solver::{CacheIndex, CacheKey};
use rbuild_worker::{Value, UNPACKED};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The snapshot label remembering a snapshot's size in bytes: committed snapshots never change,
/// so each is measured once.
pub(crate) const SIZE_LABEL: &str = "rbuild.gc.size";

/// What a cache record is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum RecordId {
    /// A solver result (cache key -> result).
    Result(CacheKey),
    /// An unpacked image layer chain (chain ID -> snapshot).
    Unpacked(Vec<u8>),
}

impl RecordId {
    /// A short printable id (hex, like BuildKit's record ids).
    pub(crate) fn display(&self) -> String {
        match self {
            RecordId::Result(k) => k.hex(),
            RecordId::Unpacked(chain) => {
                let s = String::from_utf8_lossy(chain);
                s.trim_start_matches("sha256:").to_string()
            }
        }
    }
}

/// One cache record.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) id: RecordId,
    /// The snapshot it holds (None: an empty filesystem or the context).
    pub(crate) snapshot: Option<SnapshotId>,
    /// When last used (unix seconds, 0 unknown).
    pub(crate) last_used: u64,
}

/// One committed snapshot.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snap {
    pub(crate) parent: Option<SnapshotId>,
    pub(crate) size: u64,
    /// Blobs its labels name (exported layers of it).
    pub(crate) blobs: Vec<Digest>,
    /// A merge's source snapshot.
    pub(crate) merge_source: Option<SnapshotId>,
}

/// The loaded state of a root.
#[derive(Debug, Default)]
pub(crate) struct Model {
    pub(crate) records: Vec<Record>,
    /// Records whose snapshot is gone (always removed).
    pub(crate) stale: Vec<RecordId>,
    pub(crate) snaps: HashMap<SnapshotId, Snap>,
    pub(crate) blobs: BTreeMap<Digest, u64>,
    pub(crate) tagged: BTreeSet<Digest>,
    pub(crate) tag_count: usize,
    /// The store's compressed variants: (uncompressed blob, compression, variant blob).
    pub(crate) variants: Vec<(Digest, Compression, Digest)>,
    /// The store's layers by content: (blake3 key, prefix, compression, layer blob). They keep nothing
    /// alive; an entry goes with its blob.
    pub(crate) contents: Vec<(String, String, Compression, Digest)>,
    /// Snapshots held by kept failed-RUN states (`--debug-on-fail=keep`): roots like tags.
    pub(crate) pinned: Vec<SnapshotId>,
}

/// What a set of kept records (plus the tags) reaches.
#[derive(Debug, Default)]
pub(crate) struct Reach {
    pub(crate) snaps: BTreeSet<SnapshotId>,
    pub(crate) blobs: BTreeSet<Digest>,
}

/// Bytes of all committed snapshots (sizes remembered in a label; only snapshots made since
/// the last measurement are walked) and blobs: the cheap check of the automatic collection.
pub(crate) fn estimate_total(store: &Store, snapshotter: &Snapshotter) -> Result<u64, GcError> {
    let mut total: u64 = store.list_blobs()?.iter().map(|b| b.size).sum();
    for info in snapshotter.list()? {
        let labels = snapshotter.labels(&info.id).unwrap_or_default();
        total += snapshot_size(snapshotter, &info.id, &labels);
    }
    Ok(total)
}

/// A snapshot's size: an older build's label, else measured once and remembered by the
/// snapshotter (0 when unreadable: a collection removes it once nothing reaches it).
fn snapshot_size(
    snapshotter: &Snapshotter,
    id: &SnapshotId,
    labels: &BTreeMap<String, String>,
) -> u64 {
    if let Some(size) = labels.get(SIZE_LABEL).and_then(|v| v.parse().ok()) {
        return size;
    }
    snapshotter.measured_size(id).unwrap_or(0)
}

impl Model {
    /// Reads everything (measuring snapshots not measured before, and remembering their sizes).
    pub(crate) fn load(
        store: &Store,
        snapshotter: &Snapshotter,
        index: &CacheIndex,
    ) -> Result<Model, GcError> {
        let mut model = Model::default();
        for info in snapshotter.list()? {
            let labels = snapshotter.labels(&info.id).unwrap_or_default();
            let mut snap = Snap {
                size: snapshot_size(snapshotter, &info.id, &labels),
                parent: info.parent,
                ..Snap::default()
            };
            for (key, value) in labels {
                if key == SIZE_LABEL {
                    continue;
                } else if key == MERGE_SOURCE_LABEL {
                    snap.merge_source = Some(SnapshotId(value));
                } else if let Ok(layer) = serde_json::from_str::<Layer>(&value) {
                    snap.blobs.push(layer.descriptor.digest);
                }
            }
            model.snaps.insert(info.id, snap);
        }
        for rec in index.results()? {
            let id = RecordId::Result(rec.key);
            let snapshot = match parse_result(&rec.value) {
                Some(s) => s,
                None => {
                    model.stale.push(id);
                    continue;
                }
            };
            if snapshot
                .as_ref()
                .is_some_and(|s| !model.snaps.contains_key(s))
            {
                model.stale.push(id);
                continue;
            }
            model.records.push(Record {
                id,
                snapshot,
                last_used: rec.last_used.unwrap_or(0),
            });
        }
        // An unpacked chain was last used when a result built on it was.
        let mut used: HashMap<SnapshotId, u64> = HashMap::new();
        for r in &model.records {
            for s in model.chain(r.snapshot.as_ref()) {
                let e = used.entry(s).or_insert(0);
                *e = (*e).max(r.last_used);
            }
        }
        for (chain, value) in index.entries_in(UNPACKED)? {
            let id = RecordId::Unpacked(chain);
            let snap = SnapshotId(String::from_utf8_lossy(&value).into_owned());
            if !model.snaps.contains_key(&snap) {
                model.stale.push(id);
                continue;
            }
            model.records.push(Record {
                id,
                last_used: used.get(&snap).copied().unwrap_or(0),
                snapshot: Some(snap),
            });
        }
        for blob in store.list_blobs()? {
            model.blobs.insert(blob.digest, blob.size);
        }
        model.tag_count = store.tags()?.len();
        model.variants = store
            .variants()?
            .into_iter()
            .map(|v| (v.source, v.compression, v.descriptor.digest))
            .collect();
        model.contents = store
            .layer_contents()?
            .into_iter()
            .map(|c| (c.key, c.prefix, c.compression, c.layer.descriptor.digest))
            .collect();
        model.tagged = store.reachable_from_tags()?;
        Ok(model)
    }

    /// `id` and its ancestors (stopping at missing ones or a cycle).
    pub(crate) fn chain(&self, id: Option<&SnapshotId>) -> Vec<SnapshotId> {
        let mut out = Vec::new();
        let mut cur = id.cloned();
        while let Some(c) = cur {
            if out.contains(&c) {
                break;
            }
            let Some(snap) = self.snaps.get(&c) else {
                break;
            };
            cur = snap.parent.clone();
            out.push(c);
        }
        out
    }

    /// What the tags and the records `keep` reach.
    pub(crate) fn reach<'a>(&self, keep: impl IntoIterator<Item = &'a Record>) -> Reach {
        let mut reach = Reach {
            blobs: self.tagged.clone(),
            ..Reach::default()
        };
        let mut todo: Vec<SnapshotId> = keep
            .into_iter()
            .filter_map(|r| r.snapshot.clone())
            .chain(self.pinned.iter().cloned())
            .collect();
        while let Some(s) = todo.pop() {
            if !reach.snaps.insert(s.clone()) {
                continue;
            }
            if let Some(snap) = self.snaps.get(&s) {
                reach.blobs.extend(snap.blobs.iter().cloned());
                todo.extend(snap.parent.clone());
                todo.extend(snap.merge_source.clone());
            }
        }
        // A compressed variant lives as long as the uncompressed layer it was made from.
        let kept: Vec<Digest> = self
            .variants
            .iter()
            .filter(|(source, _, _)| reach.blobs.contains(source))
            .map(|(_, _, blob)| blob.clone())
            .collect();
        reach.blobs.extend(kept);
        reach
    }

    /// Bytes of what `reach` holds (snapshots and existing blobs).
    pub(crate) fn size_of(&self, reach: &Reach) -> u64 {
        let snaps: u64 = reach
            .snaps
            .iter()
            .filter_map(|s| self.snaps.get(s))
            .map(|s| s.size)
            .sum();
        let blobs: u64 = reach.blobs.iter().filter_map(|b| self.blobs.get(b)).sum();
        snaps + blobs
    }

    /// Bytes of every snapshot and blob on disk.
    pub(crate) fn total(&self) -> u64 {
        self.snaps.values().map(|s| s.size).sum::<u64>() + self.blobs.values().sum::<u64>()
    }
}

/// The snapshot of a result in the worker's encoding (`None` outside: not a result).
fn parse_result(bytes: &[u8]) -> Option<Option<SnapshotId>> {
    match Value::from_index_bytes(bytes)? {
        Value::Fs(top) => Some(top),
        Value::Context => Some(None),
    }
}
