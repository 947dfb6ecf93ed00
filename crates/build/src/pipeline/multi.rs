//! The end of a multi-platform build: every platform's image and the image index into the
//! store (named with the build's names), the outputs (a directory per platform for
//! `local`/`tar`), the cache of every platform's result, the push of the index, and the result
//! with the index and each platform's manifest.

use super::deliver::{log_export, Delivery};
use super::{phase_done, stop_eager, FinishParts, Pipeline, SolveOutcome};
use crate::cancel::Cancel;
use crate::error::{blocking, BuildError};
use crate::export::ImageParts;
use crate::platforms::export_index;
use crate::progress::BuildEvent;
use crate::push::metadata;
use crate::request::{BuildResult, PlatformManifest};
use crate::vertices::InternalVertex;
use rbuild_exporter::{normalize_tag, LayerOptions};
use rbuild_frontend::BuildPlan;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// The names a multi-platform build gives its index.
pub(super) struct Names {
    /// Every store name (`-t` and `type=image,name=`).
    pub(super) all: Vec<String>,
    /// The names to push to.
    pub(super) push: Vec<String>,
}

impl Pipeline {
    /// Exports each platform's image and the index of them, names the index, exports the
    /// cache and describes the result.
    pub(super) async fn finish_multi<F: Future<Output = i32>>(
        self,
        plan: BuildPlan,
        mut solved: SolveOutcome,
        parts: FinishParts,
        names: Names,
        layer_opts: LayerOptions,
        cancel: &mut Cancel<F>,
    ) -> Result<BuildResult, BuildError> {
        let Names { all: names, push } = names;
        let started = Instant::now();
        let vertex = InternalVertex::start(&self.progress.solver_sink(), "exporting to image");
        let images: Vec<_> = (plan.platforms.iter())
            .zip(&solved.tops)
            .map(|(p, top)| {
                let image = ImageParts {
                    config: p.config.clone(),
                    labels: parts.labels.clone(),
                    annotations: parts.annotations.clone(),
                };
                (p.platform.clone(), top.clone(), image)
            })
            .collect();
        let exported = {
            let (store, snapshotter) = (self.store.clone(), solved.snapshotter.clone());
            let (names, opts) = (names.clone(), layer_opts.clone());
            let exported = cancel
                .blocking(move || export_index(&store, &snapshotter, images, &names, &opts))
                .await;
            stop_eager(solved.eager.take(), exported.is_err()).await;
            exported
        };
        let (index, images) = match exported {
            Ok(exported) => exported,
            Err(e) => {
                vertex.fail(e.to_string());
                return Err(e);
            }
        };
        // BuildKit's image exporter's sub-steps for a multi-platform image.
        let mut lines = Vec::new();
        for image in &images {
            lines.push(format!("exporting manifest {} done", image.manifest.digest));
            lines.push(format!("exporting config {} done", image.config));
        }
        lines.push(format!("exporting manifest list {} done", index.digest));
        log_export(&vertex, &lines, &names);
        vertex.done();
        phase_done("export", started);
        let delivery = Delivery {
            desc: index.clone(),
            top: solved.tops.first().cloned().flatten(),
            platforms: (plan.platforms.iter())
                .zip(&solved.tops)
                .map(|(p, top)| (p.platform.clone(), top.clone()))
                .collect(),
            tags: parts.tags.iter().map(|t| normalize_tag(t)).collect(),
        };
        let outputs = self
            .write_outputs(
                &solved.snapshotter,
                &delivery,
                parts.outputs,
                &layer_opts,
                cancel,
            )
            .await?;
        self.progress.event(BuildEvent::ImageWritten {
            digest: index.digest.clone(),
        });
        let architecture = plan.config.architecture.clone();
        self.export_cache(&parts.cache_to, &solved, &layer_opts, &architecture, cancel)
            .await?;
        for name in &parts.tags {
            self.progress.event(BuildEvent::Named {
                name: normalize_tag(name),
            });
        }
        let pushed = self
            .push(&index, &push, parts.push_jobs, &layer_opts, cancel)
            .await?;
        // As buildx reports it: the index as pushed, else the first archive output's, else the
        // store's own.
        let reported = (pushed.as_ref().map(|(_, d)| d.clone()))
            .or_else(|| outputs.iter().find_map(|o| o.manifest.clone()))
            .unwrap_or_else(|| index.clone());
        let metadata = {
            let (store, desc, names) = (self.store.clone(), reported, names.clone());
            blocking(move || Ok(metadata(&store, &desc, &names))).await?
        };
        let config_digest = images
            .first()
            .map(|i| i.config.clone())
            .ok_or(BuildError::NotAFilesystem)?;
        let manifests = images
            .into_iter()
            .map(|i| PlatformManifest {
                platform: i.platform,
                manifest: i.manifest,
                config_digest: i.config,
            })
            .collect();
        Ok(BuildResult {
            image: index,
            config_digest,
            manifests,
            names,
            outputs,
            pushed: pushed.map(|(summary, _)| summary),
            metadata,
            executed: self.executed.load(Ordering::Relaxed),
        })
    }
}
