//! Eager layer export: a layer of the image being built is exported (tarred, hashed, written to
//! the store) on a background thread as soon as the step that made it has run, while the next
//! steps run; the export at the end of the build then finds it done, or waits for the one in
//! progress ([`rbuild_exporter::ensure_layer`] lets one thread make a layer at a time).
//!
//! Only the image's own layers are exported this way: the results of the target vertex and of
//! its root-filesystem ancestors (input 0 of each RUN, COPY/ADD and merge), never a builder
//! stage's. Cache hits are not exported here (their layers were made when they ran).

use rbuild_exporter::{ensure_layer, LayerOptions};
use rbuild_llb::Op;
use rbuild_oci::{Digest, Store};
use rbuild_snapshotter::{SnapshotId, Snapshotter};
use rbuild_solver::{Graph, VertexId};
use rbuild_worker::{OnExecuted, Value, WorkVertex};
use std::collections::HashSet;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};

/// The llb digests of the vertices whose results are layers of the image built from `target`:
/// the target and its ancestors through input 0 while they are RUN, file or merge ops.
pub(crate) fn image_lineage(graph: &Graph<WorkVertex>, target: VertexId) -> HashSet<Digest> {
    let mut out = HashSet::new();
    let mut next = Some(target);
    while let Some(id) = next {
        let Some(vertex) = graph.vertex(id) else {
            break;
        };
        let layered = matches!(vertex.op, Op::Exec(_) | Op::File(_) | Op::Merge);
        if !layered || !out.insert(vertex.digest.clone()) {
            break;
        }
        next = graph.inputs(id).first().copied();
    }
    out
}

/// Starts the export thread and returns the worker callback that feeds it: each executed RUN or
/// file vertex of `lineage` whose result is a snapshot is exported with `opts` (the store's
/// layer options). The thread ends when the callback is dropped, or stops early once `opts`'
/// cancel flag is set; a failed eager export is only logged (the final export makes the layer).
pub(crate) fn start(
    store: Store,
    snapshotter: Snapshotter,
    lineage: HashSet<Digest>,
    opts: LayerOptions,
) -> Option<OnExecuted> {
    if lineage.is_empty() {
        return None;
    }
    let (tx, rx) = mpsc::channel::<SnapshotId>();
    let spawned = std::thread::Builder::new()
        .name("eager-export".into())
        .spawn(move || {
            for id in rx {
                if opts.is_canceled() {
                    break;
                }
                if let Err(error) = ensure_layer(&snapshotter, &store, &id, &opts) {
                    tracing::debug!(snapshot = %id, %error, "eager layer export failed");
                }
            }
        });
    if let Err(error) = spawned {
        tracing::debug!(%error, "no eager layer export");
        return None;
    }
    let tx: Mutex<Sender<SnapshotId>> = Mutex::new(tx);
    Some(Arc::new(move |digest: &Digest, value: &Value| {
        if let (true, Value::Fs(Some(id))) = (lineage.contains(digest), value) {
            if let Ok(tx) = tx.lock() {
                // The thread is gone only after a cancel: nothing to do then.
                let _ = tx.send(id.clone());
            }
        }
    }))
}
