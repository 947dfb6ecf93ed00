//! Where a stored image goes after the export, for single- and multi-platform builds alike:
//! the export vertex's log lines, the `--output`s (an index writes a directory per platform for
//! `local`/`tar`), the cache export, then the push of its compressed variant.

use super::{phase_done, Pipeline, SolveOutcome};
use crate::cache_io::{self, ExportParts, Solved};
use crate::cancel::Cancel;
use crate::error::BuildError;
use crate::export::{write_outputs, StoredImage};
use crate::progress::BuildEvent;
use crate::progress::PushSummary;
use crate::push::push_image;
use crate::request::OutputResult;
use crate::spec::CacheToSpec;
use crate::spec::OutputSpec;
use crate::vertices::InternalVertex;
use rbuild_exporter::{image_variant, LayerOptions, PlatformRootfs};
use rbuild_oci::Descriptor;
use rbuild_registry::Reference;
use rbuild_snapshotter::{SnapshotId, Snapshotter};
use std::future::Future;
use std::time::Instant;

/// A stored image (a manifest, or the index of a multi-platform build) and its filesystems.
pub(super) struct Delivery {
    /// The stored manifest or index.
    pub(super) desc: Descriptor,
    /// The snapshots the filesystem outputs read: one for a single platform.
    pub(super) top: Option<SnapshotId>,
    /// Per platform, for an index (empty for a single-platform image).
    pub(super) platforms: Vec<PlatformRootfs>,
    /// The build's `-t` names.
    pub(super) tags: Vec<String>,
}

/// Logs BuildKit's image-export sub-steps on `vertex`: the layers' time, `lines` (the image or
/// the manifests and index written), then `naming to NAME done` per name.
pub(super) fn log_export(vertex: &InternalVertex, lines: &[String], names: &[String]) {
    vertex.log(format!(
        "exporting layers {:.1}s done",
        vertex.elapsed().as_secs_f64()
    ));
    for line in lines {
        vertex.log(line.clone());
    }
    for name in names {
        let full = Reference::parse(name).map_or_else(|_| name.clone(), |r| r.to_string());
        vertex.log(format!("naming to {full} done"));
    }
}

impl Pipeline {
    /// Exports the cache of every target to the `--cache-to` destinations.
    pub(super) async fn export_cache<F: Future<Output = i32>>(
        &self,
        cache_to: &[CacheToSpec],
        solved: &SolveOutcome,
        layer_opts: &LayerOptions,
        architecture: &str,
        cancel: &mut Cancel<F>,
    ) -> Result<(), BuildError> {
        let started = Instant::now();
        cache_io::export(
            cache_to,
            &Solved {
                solver: &solved.solver,
                graph: &solved.graph,
                ids: &solved.ids,
                targets: &solved.targets,
                keys: &solved.keys,
                links: &solved.links,
            },
            &ExportParts {
                store: &self.store,
                snapshotter: &solved.snapshotter,
                layer_opts,
                architecture,
                registry: &self.registry,
            },
            self.progress.as_ref(),
            cancel,
        )
        .await?;
        if !cache_to.is_empty() {
            phase_done("cache export", started);
        }
        Ok(())
    }

    /// Writes `image` to every output off the async workers.
    pub(super) async fn write_outputs<F: Future<Output = i32>>(
        &self,
        snapshotter: &Snapshotter,
        image: &Delivery,
        outputs: Vec<OutputSpec>,
        opts: &LayerOptions,
        cancel: &mut Cancel<F>,
    ) -> Result<Vec<OutputResult>, BuildError> {
        let started = Instant::now();
        let (store, snapshotter) = (self.store.clone(), snapshotter.clone());
        let (top, desc, tags) = (image.top.clone(), image.desc.clone(), image.tags.clone());
        let (platforms, opts) = (image.platforms.clone(), opts.clone());
        let results = cancel
            .detached(move || {
                let image = StoredImage {
                    store: &store,
                    snapshotter: &snapshotter,
                    top: top.as_ref(),
                    desc: &desc,
                    tags: &tags,
                    platforms: &platforms,
                };
                write_outputs(&image, &outputs, &opts)
            })
            .await?;
        phase_done("outputs", started);
        Ok(results)
    }

    /// Pushes `desc` (compressed as `opts` asks, made now or remembered) to `names`; returns
    /// the summary and the pushed manifest or index, None when nothing is to be pushed.
    pub(super) async fn push<F: Future<Output = i32>>(
        &self,
        desc: &Descriptor,
        names: &[String],
        jobs: usize,
        opts: &LayerOptions,
        cancel: &mut Cancel<F>,
    ) -> Result<Option<(PushSummary, Descriptor)>, BuildError> {
        if names.is_empty() {
            return Ok(None);
        }
        let started = Instant::now();
        let distributed = {
            let (store, desc, opts) = (self.store.clone(), desc.clone(), opts.clone());
            cancel
                .blocking(move || {
                    image_variant(&store, &desc, &opts, jobs)
                        .map_err(|e| BuildError::step("compressing layers", e))
                })
                .await?
        };
        phase_done("compress", started);
        let summary = cancel
            .run(push_image(
                &self.store,
                &distributed,
                names,
                jobs,
                &self.registry,
                self.progress.clone(),
            ))
            .await?;
        phase_done("push", started);
        self.progress.event(BuildEvent::Pushed(summary.clone()));
        Ok(Some((summary, distributed)))
    }
}
