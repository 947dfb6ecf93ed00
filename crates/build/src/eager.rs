//! Eager layer export: a layer of the image being built is exported (tarred, hashed, written to
//! the store) on a background thread as soon as the step that made it has run, while the next
//! steps run; the export at the end of the build then finds it done, or waits for the one in
//! progress ([`rbuild_exporter::ensure_layer`] lets one thread make a layer at a time).
//!
//! Only the image's own layers are exported this way: the results of the target vertex and of
//! its root-filesystem ancestors (input 0 of each RUN, COPY/ADD and merge), never a builder
//! stage's. Cache hits are not exported here (their layers were made when they ran). The build
//! finishes the thread once its export is done, or aborts it on an error or a cancel, so no
//! temp blob of it outlives the build.

use rbuild_exporter::{ensure_layer, LayerOptions};
use rbuild_llb::Op;
use rbuild_oci::{Digest, Store};
use rbuild_snapshotter::{SnapshotId, Snapshotter};
use rbuild_solver::{Graph, VertexId};
use rbuild_worker::{OnExecuted, Value, WorkVertex};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

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

/// The eager export thread of one build and the channel that feeds it. Dropped without
/// [`Eager::finish`] (an error between the solve and the export), it aborts and joins.
pub(crate) struct Eager {
    /// Snapshots to export; `None` once finished.
    tx: Arc<Mutex<Option<Sender<SnapshotId>>>>,
    /// The vertices whose results are layers of the image.
    lineage: Arc<HashSet<Digest>>,
    /// The thread (joined by [`Eager::finish`] or on drop).
    thread: Option<JoinHandle<()>>,
    /// The layer options' cancel flag (the build's): raised to abort.
    stop: Arc<AtomicBool>,
}

impl Eager {
    /// Starts the export thread for the layers of `lineage`, made with `opts` (the store's layer
    /// options, whose cancel flag is the build's); None when there is nothing to export.
    pub(crate) fn start(
        store: Store,
        snapshotter: Snapshotter,
        lineage: HashSet<Digest>,
        mut opts: LayerOptions,
    ) -> Option<Eager> {
        if lineage.is_empty() {
            return None;
        }
        let stop = opts.cancel.get_or_insert_with(Arc::default).clone();
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
        match spawned {
            Ok(thread) => Some(Eager {
                tx: Arc::new(Mutex::new(Some(tx))),
                lineage: Arc::new(lineage),
                thread: Some(thread),
                stop,
            }),
            Err(error) => {
                tracing::debug!(%error, "no eager layer export");
                None
            }
        }
    }

    /// The worker callback: each executed vertex of the lineage whose result is a snapshot is
    /// queued for export.
    pub(crate) fn hook(&self) -> OnExecuted {
        let (tx, lineage) = (self.tx.clone(), self.lineage.clone());
        Arc::new(move |digest: &Digest, value: &Value| {
            if let (true, Value::Fs(Some(id))) = (lineage.contains(digest), value) {
                if let Some(tx) = tx.lock().ok().as_ref().and_then(|t| t.as_ref()) {
                    // The thread is gone only after an abort: nothing to do then.
                    let _ = tx.send(id.clone());
                }
            }
        })
    }

    /// Takes no more layers and waits for the thread (blocking): with `abort` the layer being
    /// made stops at its next chunk and removes its temp blob; without, queued layers are made
    /// (or found made). No temp file of the thread outlives this call.
    pub(crate) fn finish(mut self, abort: bool) {
        self.close(abort);
    }

    /// Closes the channel and joins the thread, once (the drop after a finish does nothing: the
    /// flag is the build's, which must stay down for the phases after the export).
    fn close(&mut self, abort: bool) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        if abort {
            self.stop.store(true, Ordering::SeqCst);
        }
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let _ = thread.join();
    }
}

impl Drop for Eager {
    fn drop(&mut self) {
        self.close(true);
    }
}
