//! `--cache-to` / `--cache-from`: a build cache shared between machines (e.g. CI runners), as an
//! OCI image manifest in a registry (`type=registry,ref=REF`) or an OCI layout directory
//! (`type=local,dest=DIR` / `type=local,src=DIR`). Format: [`rbuild_oci::cache`]; import:
//! [`rbuild_worker::remote_cache`]; export: [`rbuild_exporter::write_cache_manifest`].
//!
//! Cache keys are portable: they hash the op (no snapshot ids, no absolute paths), the inputs'
//! keys, base images by manifest digest and build-context files by content.

use crate::cancel::Cancel;
use crate::error::BuildError;
use crate::progress::{BuildEvent, Progress};
use crate::spec::{CacheFromSpec, CacheLocation, CacheToSpec};
use rbuild_exporter::LayerOptions;
use rbuild_oci::Store;
use rbuild_registry::{PushOptions, Reference, RegistryClient};
use rbuild_snapshotter::Snapshotter;
use rbuild_solver::{CacheKey, Executor, Graph, Solver, VertexId};
use rbuild_worker::remote_cache::RemoteCache;
use rbuild_worker::{Value, WorkVertex, Worker};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

/// Reads the first usable `--cache-from` (manifest and config only). A cache that cannot be read
/// is reported and skipped, as in BuildKit: the build goes on without it.
pub(crate) async fn import(
    specs: &[CacheFromSpec],
    registry: &RegistryClient,
    progress: &dyn Progress,
) -> Option<Arc<RemoteCache>> {
    for spec in specs {
        let loaded = match &spec.location {
            CacheLocation::Registry(r) => match Reference::parse(r) {
                Ok(reference) => RemoteCache::from_registry(registry.clone(), reference)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            CacheLocation::Local { dir, tag } => {
                let (dir, tag) = (dir.clone(), tag.clone());
                tokio::task::spawn_blocking(move || {
                    RemoteCache::from_layout(&dir, Some(&tag)).map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
            }
        };
        match loaded {
            Ok(cache) => {
                progress.event(BuildEvent::CacheImported {
                    from: spec.location.clone(),
                    records: cache.len(),
                });
                return Some(Arc::new(cache));
            }
            Err(error) => progress.event(BuildEvent::CacheImportFailed {
                from: spec.location.clone(),
                error,
            }),
        }
    }
    None
}

/// Reports the problems met while importing cached results.
pub(crate) fn report_import(remote: Option<&Arc<RemoteCache>>, progress: &dyn Progress) {
    for w in remote.map(|r| r.warnings()).unwrap_or_default() {
        progress.event(BuildEvent::CacheImportWarning(w));
    }
}

/// The cache keys of `targets` and everything they depend on, in definition order (inputs
/// before their users; a vertex several targets share once), taken from the keys the solve
/// computed.
fn keys_of(
    graph: &Graph<WorkVertex>,
    ids: &[VertexId],
    targets: &[VertexId],
    solved_keys: &HashMap<VertexId, CacheKey>,
) -> Result<Vec<(VertexId, CacheKey)>, BuildError> {
    let mut needed = HashSet::new();
    let mut stack = targets.to_vec();
    while let Some(v) = stack.pop() {
        if needed.insert(v) {
            stack.extend(graph.inputs(v).iter().copied());
        }
    }
    ids.iter()
        .filter(|v| needed.contains(v))
        .map(|&v| {
            solved_keys
                .get(&v)
                .map(|&key| (v, key))
                .ok_or(BuildError::MissingCacheKey)
        })
        .collect()
}

/// A finished solve, as the cache export reads it.
pub(crate) struct Solved<'a> {
    /// The solver (its index and worker).
    pub solver: &'a Solver<Worker>,
    /// The solved graph.
    pub graph: &'a Graph<WorkVertex>,
    /// Vertex ids in definition order.
    pub ids: &'a [VertexId],
    /// The target vertex.
    pub target: VertexId,
    /// The other platforms' targets of a multi-platform build (empty otherwise): the export
    /// holds every platform's results.
    pub platform_targets: &'a [VertexId],
    /// The keys the solve computed.
    pub keys: &'a HashMap<VertexId, CacheKey>,
    /// How the solve derived the keys of content-keyed vertices (`COPY --from`).
    pub links: &'a HashMap<VertexId, Vec<rbuild_solver::ContentLink>>,
}

/// Where the cache export writes layers and pushes manifests.
pub(crate) struct ExportParts<'a> {
    /// The image store.
    pub store: &'a Store,
    /// The snapshotter holding the results.
    pub snapshotter: &'a Snapshotter,
    /// How layers are compressed.
    pub layer_opts: &'a LayerOptions,
    /// The image's architecture.
    pub architecture: &'a str,
    /// The registry client for `type=registry`.
    pub registry: &'a RegistryClient,
}

/// Exports the cache of a finished solve to every `--cache-to`, stopping when the build is
/// canceled (layers at their next chunk; a registry push before its manifest).
pub(crate) async fn export<F: Future<Output = i32>>(
    specs: &[CacheToSpec],
    solved: &Solved<'_>,
    parts: &ExportParts<'_>,
    progress: &dyn Progress,
    cancel: &mut Cancel<F>,
) -> Result<(), BuildError> {
    if specs.is_empty() {
        return Ok(());
    }
    let Some(index) = solved.solver.index().cloned() else {
        return Ok(());
    };
    let worker = solved.solver.executor().clone();
    let targets: Vec<VertexId> = std::iter::once(solved.target)
        .chain(solved.platform_targets.iter().copied())
        .collect();
    let keys = keys_of(solved.graph, solved.ids, &targets, solved.keys)?;
    // Every link below the target, in either mode: an importer derives the target's key from
    // them without building the stages a `COPY --from` reads.
    let links: Vec<rbuild_oci::cache::CacheLink> = keys
        .iter()
        .filter_map(|(v, _)| solved.links.get(v))
        .flatten()
        .map(|l| rbuild_oci::cache::CacheLink {
            link: l.link.hex(),
            slot: l.slot.hex(),
        })
        .collect();
    for spec in specs {
        let wanted: Vec<(VertexId, CacheKey)> = if spec.max {
            keys.clone()
        } else {
            keys.iter()
                .filter(|(v, _)| targets.contains(v))
                .cloned()
                .collect()
        };
        let (index2, worker2) = (index.clone(), worker.clone());
        let records = cancel
            .blocking(move || {
                let mut records = Vec::new();
                for (_, key) in wanted {
                    let Ok(Some(bytes)) = index2.get(&key) else {
                        continue;
                    };
                    if let Some(Value::Fs(top)) = worker2.decode(&bytes) {
                        records.push((key.hex(), top));
                    }
                }
                Ok(records)
            })
            .await?;
        let (s, snap, opts, arch, links) = (
            parts.store.clone(),
            parts.snapshotter.clone(),
            parts.layer_opts.clone(),
            parts.architecture.to_string(),
            links.clone(),
        );
        let count = records.len();
        let desc = cancel
            .blocking(move || {
                rbuild_exporter::write_cache_manifest(&s, &snap, &records, &links, &opts, &arch)
                    .map_err(|e| BuildError::step("exporting the build cache", e))
            })
            .await?;
        match &spec.location {
            CacheLocation::Registry(r) => {
                let reference = Reference::parse(r)
                    .map_err(|e| BuildError::registry(format!("invalid cache ref `{r}`"), e))?;
                let (targets, opts) = ([reference], PushOptions::default());
                let push = parts.registry.push(parts.store, &desc, &targets, &opts);
                cancel
                    .run(async {
                        push.await.map_err(|e| {
                            BuildError::registry(format!("failed to push cache to {r}"), e)
                        })
                    })
                    .await?;
            }
            CacheLocation::Local { dir, tag } => {
                let (s, d, dir2, tag) =
                    (parts.store.clone(), desc.clone(), dir.clone(), tag.clone());
                cancel
                    .detached(move || {
                        rbuild_exporter::write_cache_layout(&s, &d, &dir2, &tag).map_err(|e| {
                            BuildError::step(format!("writing the cache to {}", dir2.display()), e)
                        })
                    })
                    .await?;
            }
        }
        progress.event(BuildEvent::CacheExported {
            to: spec.location.clone(),
            records: count,
            max: spec.max,
            digest: desc.digest,
        });
    }
    Ok(())
}
