//! The pipeline of one build, phase by phase: read the inputs and parse the Dockerfile
//! ([`load`]), open the store and plan (resolve base images, convert to llb, check entitlements:
//! [`Pipeline::plan`]), solve ([`Pipeline::solve`]), then export the image and the outputs, the
//! cache, tag, push and describe the result ([`Pipeline::finish`]). From the solve on, every
//! phase is cancelable ([`Cancel`]). Each phase logs its time at debug level (`phase finished`,
//! `phase=NAME phase_time=...`).

use crate::cache_io;
use crate::cancel::Cancel;
use crate::eager;
use crate::error::{blocking, BuildError, DockerfileError, Lines, SolveFailure};
use crate::export::{export_image, layer_options, stored_options, ImageParts};
use crate::loaded::{check_names, Loaded};
use crate::progress::{wait_reporter, BuildEvent, Progress};
use crate::push::metadata;
use crate::push::ImageMetadata;
use crate::request::{BuildRequest, BuildResult};
use crate::resolve::resolve_all;
use crate::spec::{CacheFromSpec, CacheToSpec, Output, OutputSpec, SecretSpec, SshSpec};
use crate::state::StateDir;
use crate::vertices::{cached_listing, InternalVertex};
use rbuild_exporter::normalize_tag;
use rbuild_frontend::{BuildPlan, ConvertOptions};
use rbuild_llb::Entitlements;
use rbuild_oci::{Platform, Store};
use rbuild_registry::{Reference, RegistryClient};
use rbuild_sandbox::{Limits, Sandbox};
use rbuild_snapshotter::{SnapshotId, Snapshotter};
use rbuild_solver::{
    CacheIndex, CacheKey, EventKind, Graph, ProgressSink, SolveError, SolveOptions, Solver,
    VertexId, DEFAULT_LOCK_TIMEOUT,
};
use rbuild_worker::{graph_from_definition, PullEvent, Value, WorkVertex, Worker, WorkerError};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

mod deliver;
pub(crate) mod graph;
mod multi;
mod prepare;

/// Logs the end of the pipeline phase `phase` begun at `started` (debug level).
fn phase_done(phase: &'static str, started: Instant) {
    tracing::debug!(phase, phase_time = ?started.elapsed(), "phase finished");
}

/// Runs a build to its end.
pub async fn build(request: BuildRequest) -> Result<BuildResult, BuildError> {
    build_with_cancel(request, std::future::pending()).await
}

/// Runs a build; when `cancel` completes from the solve on (it is first polled when the solve
/// starts, so a signal handler it installs is active from then on), the running phase stops
/// (solve, export, cache export or push; a layer being written stops at its next chunk and
/// leaves no temp file, an image is not named and a push does not reach its manifest) and the
/// build fails with [`BuildError::Canceled`] carrying the future's output.
pub async fn build_with_cancel(
    request: BuildRequest,
    cancel: impl Future<Output = i32>,
) -> Result<BuildResult, BuildError> {
    let BuildRequest {
        state,
        context,
        dockerfile,
        build_args,
        source_date_epoch: epoch_fallback,
        target,
        platforms,
        tags,
        labels,
        annotations,
        outputs,
        push,
        push_jobs,
        cache_to,
        cache_from,
        secrets,
        ssh,
        network,
        entitlements,
        extra_hosts,
        limits,
        engine,
        no_cache,
        no_cache_filter,
        named_contexts,
        pull,
        progress,
        registry,
        debug_on_fail,
    } = request;
    check_names(&tags, &outputs)?;
    crate::platforms::check_multi_exports(platforms.len(), &outputs)?;
    let prepare::Prepared {
        loaded,
        opts,
        named_dirs,
        epoch,
    } = prepare::prepare(
        &state,
        context,
        dockerfile,
        progress.as_ref(),
        prepare::FrontendInputs {
            build_args,
            epoch_fallback,
            target,
            network,
            entitlements: entitlements.clone(),
            extra_hosts,
            no_cache_filter,
            named_contexts,
        },
    )
    .await?;
    let pipeline = Pipeline::open(state, progress, registry, &loaded, &opts, platforms).await?;
    let plan = pipeline.plan(&loaded, &opts, pull, &entitlements).await?;
    let run = RunParts {
        cache_from: &cache_from,
        secrets,
        ssh,
        limits,
        engine,
        no_cache,
        named_dirs,
        epoch,
        debug_on_fail,
    };
    let mut cancel = Cancel::new(cancel);
    let solved = pipeline.solve(&loaded, &plan, run, &mut cancel).await?;
    let finish = FinishParts {
        tags,
        labels,
        annotations,
        outputs,
        push,
        push_jobs,
        cache_to,
    };
    pipeline
        .finish(plan, solved, finish, epoch, &mut cancel)
        .await
}

/// What every phase after parsing shares: the state root, the progress, the store, the registry
/// client and the base images the Dockerfile names.
struct Pipeline {
    state: StateDir,
    progress: Arc<dyn Progress>,
    store: Store,
    registry: RegistryClient,
    /// The target platforms (empty: the host's).
    platforms: Vec<Platform>,
    /// The base images and the platform each is needed for.
    needed: Vec<(String, Platform)>,
    /// The instruction that names each of `needed` (for the error when it does not resolve).
    needed_at: Vec<Lines>,
    /// How many vertices the solve executed (rather than took from the cache).
    executed: Arc<AtomicUsize>,
    /// Keeps garbage collection off the root while this build runs.
    _lease: crate::gc::BuildLease,
}

/// The solve's inputs that only the worker and solver read.
struct RunParts<'a> {
    cache_from: &'a [CacheFromSpec],
    secrets: Vec<SecretSpec>,
    ssh: Vec<SshSpec>,
    limits: Limits,
    /// The process sandbox and default RUN network.
    engine: rbuild_sandbox::settings::EngineSettings,
    no_cache: bool,
    /// The named contexts' directories, by llb source name.
    named_dirs: HashMap<String, PathBuf>,
    /// SOURCE_DATE_EPOCH, which the layers are made with.
    epoch: Option<i64>,
    /// What a failed RUN leads to.
    debug_on_fail: crate::debug::DebugMode,
}

/// A finished solve.
struct SolveOutcome {
    /// The eager layer export, finished once the image is exported.
    eager: Option<eager::Eager>,
    solver: Solver<Worker>,
    graph: Graph<WorkVertex>,
    ids: Vec<VertexId>,
    /// Each platform's target vertex (one for a single-platform build).
    targets: Vec<VertexId>,
    keys: HashMap<VertexId, CacheKey>,
    links: HashMap<VertexId, Vec<rbuild_solver::ContentLink>>,
    snapshotter: Snapshotter,
    /// Each target's top snapshot, in `targets`' order.
    tops: Vec<Option<SnapshotId>>,
}

/// What the export phase needs from the request.
struct FinishParts {
    tags: Vec<String>,
    labels: std::collections::BTreeMap<String, String>,
    annotations: std::collections::BTreeMap<String, String>,
    outputs: Vec<OutputSpec>,
    push: bool,
    push_jobs: usize,
    cache_to: Vec<CacheToSpec>,
}

impl Pipeline {
    /// Lists the base images, then opens (creating) the store and a registry client (the
    /// request's, else one from the environment).
    async fn open(
        state: StateDir,
        progress: Arc<dyn Progress>,
        registry: Option<RegistryClient>,
        loaded: &Loaded,
        opts: &ConvertOptions,
        platforms: Vec<Platform>,
    ) -> Result<Pipeline, BuildError> {
        let started = Instant::now();
        let (needed, needed_at): (Vec<(String, Platform)>, Vec<Lines>) =
            rbuild_frontend::base_image_sites_multi(&loaded.ast, opts, &platforms)
                .map_err(|e| loaded.convert_error(e))?
                .into_iter()
                .map(|(name, platform, s)| {
                    (
                        (name, platform),
                        Lines {
                            start: s.start_line,
                            end: s.end_line,
                        },
                    )
                })
                .unzip();
        // Every base image name (after expansion) is checked before anything is pulled.
        for (name, _) in &needed {
            Reference::parse(name).map_err(|e| {
                BuildError::registry(format!("failed to parse stage name \"{name}\""), e)
            })?;
        }
        let (store, lease) = {
            let (root, reporter) = (state.store(), wait_reporter(&progress));
            let lease_state = state.clone();
            blocking(move || {
                std::fs::create_dir_all(&root).map_err(|source| BuildError::StateDir {
                    path: root.clone(),
                    source,
                })?;
                let lease = crate::gc::BuildLease::acquire(&lease_state, Some(&reporter))
                    .map_err(|e| BuildError::step("locking the state root", e))?;
                let store = Store::open_with_reporter(&root, Some(reporter))
                    .map_err(|e| BuildError::step("opening the image store", e))?;
                Ok((store, lease))
            })
            .await?
        };
        let registry = match registry {
            Some(client) => client,
            None => {
                RegistryClient::new().map_err(|e| BuildError::registry("registry client", e))?
            }
        };
        phase_done("open", started);
        Ok(Pipeline {
            state,
            progress,
            store,
            registry,
            platforms,
            needed,
            needed_at,
            executed: Arc::new(AtomicUsize::new(0)),
            _lease: lease,
        })
    }

    /// Resolves the base images (concurrently), converts the Dockerfile and checks the graph
    /// against the granted entitlements.
    async fn plan(
        &self,
        loaded: &Loaded,
        opts: &ConvertOptions,
        pull: bool,
        entitlements: &Entitlements,
    ) -> Result<BuildPlan, BuildError> {
        let started = Instant::now();
        let resolver = {
            let progress = self.progress.clone();
            self.registry
                .with_notices(move |n| progress.event(BuildEvent::ResolveNotice(n.clone())))
        };
        let locate = |index: usize, error: BuildError| match self.needed_at.get(index) {
            Some(at) => BuildError::Located {
                name: self.needed[index].0.clone(),
                error: Box::new(error),
                at: *at,
                file: loaded.text(),
            },
            None => error,
        };
        let sink = self.progress.solver_sink();
        let vertices: Vec<InternalVertex> = self
            .needed
            .iter()
            .map(|(name, platform)| {
                let shown = Reference::parse(name).map_or_else(|_| name.clone(), |r| r.to_string());
                // BuildKit names the platform in a multi-platform build.
                let label = if self.platforms.len() > 1 {
                    format!("{platform} internal")
                } else {
                    "internal".to_string()
                };
                InternalVertex::start(&sink, format!("[{label}] load metadata for {shown}"))
            })
            .collect();
        let stages = || rbuild_frontend::stage_names(&loaded.ast);
        let bases = resolve_all(&self.store, &resolver, &self.needed, pull, stages, locate).await;
        match &bases {
            Ok(_) => vertices.into_iter().for_each(InternalVertex::done),
            Err(e) => {
                // The vertex shows the error itself; the excerpt comes with the final report.
                let message = match e {
                    BuildError::Located { error, .. } => error.to_string(),
                    other => other.to_string(),
                };
                vertices.into_iter().for_each(|v| v.fail(message.clone()));
            }
        }
        let bases = bases?;
        tracing::debug!(
            phase = "resolve",
            bases = self.needed.len(),
            phase_time = ?started.elapsed(),
            "phase finished"
        );
        let started = Instant::now();
        let plan = rbuild_frontend::convert_multi(&loaded.ast, opts, &self.platforms, &bases)
            .map_err(|e| loaded.convert_error(e))?;
        // The solver-level check of BuildKit, on the whole graph (the frontend already reported
        // a Dockerfile flag at its column; this catches any other source of a privileged op).
        if let Err(error) = plan.definition.check_entitlements(entitlements) {
            let at = plan.definition.vertices[error.vertex]
                .source
                .as_ref()
                .map(|loc| Lines {
                    start: loc.start_line,
                    end: loc.end_line,
                });
            return Err(BuildError::Dockerfile(Box::new(
                DockerfileError::Entitlement {
                    error,
                    at,
                    file: loaded.text(),
                },
            )));
        }
        tracing::debug!(
            phase = "plan",
            vertices = plan.definition.vertices.len(),
            phase_time = ?started.elapsed(),
            "phase finished"
        );
        Ok(plan)
    }

    /// Reports layer exports as build events.
    fn layer_progress(&self) -> rbuild_exporter::LayerProgressFn {
        let progress = self.progress.clone();
        rbuild_exporter::LayerProgressFn(Arc::new(move |p| {
            progress.event(BuildEvent::Layer(p.clone()))
        }))
    }

    /// The options the store's layers are made with (as the final export makes them, so an
    /// eager export's layer is the one it reuses), stopping when the build is canceled.
    fn store_layer_options<F: Future<Output = i32>>(
        &self,
        epoch: Option<i64>,
        cancel: &Cancel<F>,
    ) -> rbuild_exporter::LayerOptions {
        let mut opts = stored_options(&layer_options(&[], epoch));
        opts.cancel = Some(cancel.flag());
        opts.progress = Some(self.layer_progress());
        opts
    }

    /// Opens the snapshotter and the cache index, imports a `--cache-from`, and solves the
    /// plan's target until done or the build is canceled.
    async fn solve<F: Future<Output = i32>>(
        &self,
        loaded: &Loaded,
        plan: &BuildPlan,
        run: RunParts<'_>,
        cancel: &mut Cancel<F>,
    ) -> Result<SolveOutcome, BuildError> {
        let started = Instant::now();
        let (snapshotter, index) = {
            let (snapshot_root, index_path) = (self.state.snapshots(), self.state.cache_index());
            let reporter = wait_reporter(&self.progress);
            blocking(move || {
                let snapshotter = Snapshotter::open(&snapshot_root)
                    .map_err(|e| BuildError::step("opening snapshots", e))?;
                let index =
                    CacheIndex::open_with(&index_path, DEFAULT_LOCK_TIMEOUT, Some(reporter))
                        .map_err(|e| BuildError::step("opening the cache index", e))?;
                Ok((snapshotter, index))
            })
            .await?
        };
        let exe = std::env::current_exe().map_err(BuildError::CurrentExe)?;
        let remote_cache =
            cache_io::import(run.cache_from, &self.registry, self.progress.as_ref()).await;
        let secrets = run.secrets.into_iter().map(|s| (s.id, s.source)).collect();
        let ssh = run.ssh.into_iter().map(|s| (s.id, s.socket)).collect();
        let (graph, ids) = graph_from_definition(&plan.definition);
        let targets: Vec<VertexId> = plan.platforms.iter().map(|p| ids[p.target]).collect();
        let lineage = (targets.iter())
            .flat_map(|&t| eager::image_lineage(&graph, t))
            .collect();
        let eager = eager::Eager::start(
            self.store.clone(),
            snapshotter.clone(),
            lineage,
            self.store_layer_options(run.epoch, cancel),
        );
        let mut worker = Worker::new(
            self.store.clone(),
            snapshotter.clone(),
            Sandbox::new(exe).with_process_sandbox(run.engine.process_sandbox),
            self.registry.clone(),
            self.state.cache_mounts(),
        )
        .with_index(Some(index.clone()))
        .with_context(Some(loaded.input.context.clone()))
        .with_named_contexts(run.named_dirs)
        .with_secrets(secrets)
        .with_ssh(ssh)
        .with_remote_cache(remote_cache.clone())
        .with_limits(run.limits)
        .with_default_network(run.engine.default_network)
        .with_debug_on_fail(run.debug_on_fail.for_worker(&self.state));
        if let Some(eager) = &eager {
            worker = worker.with_on_executed(eager.hook());
        }
        let progress = self.progress.clone();
        worker = worker.with_on_pull(Arc::new(move |image, event| {
            let image = image.to_string();
            progress.event(match event {
                PullEvent::Bytes(p) => BuildEvent::Pull {
                    image,
                    progress: p.clone(),
                },
                PullEvent::Extracting(layer) | PullEvent::Extracted(layer) => BuildEvent::Extract {
                    image,
                    layer: layer.clone(),
                    finished: matches!(event, PullEvent::Extracted(_)),
                },
            })
        }));
        let worker = Arc::new(worker);
        worker.prefetch_context_keys(needed_vertices(&graph, &targets));
        let (listing, list_rest) = cached_listing(&graph, &targets, self.progress.solver_sink());
        let sink = {
            let (inner, executed) = (listing, self.executed.clone());
            ProgressSink::new(move |event| {
                if matches!(event.kind, EventKind::Done { .. }) {
                    executed.fetch_add(1, Ordering::Relaxed);
                }
                inner.emit(event);
            })
        };
        let solver = Solver::new(worker, Some(index), sink);
        let solve_opts = SolveOptions {
            no_cache: run.no_cache,
            no_cache_vertices: plan.no_cache.iter().map(|&v| ids[v]).collect(),
            ..SolveOptions::default()
        };
        let solved = match cancel
            .run(async { Ok(solver.solve_with_links(&graph, &targets, &solve_opts).await) })
            .await
        {
            Ok(solved) => solved,
            Err(e) => {
                stop_eager(eager, true).await;
                return Err(e);
            }
        };
        if solved.is_ok() {
            list_rest();
        }
        cache_io::report_import(remote_cache.as_ref(), self.progress.as_ref());
        tracing::debug!(
            phase = "solve",
            ok = solved.is_ok(),
            phase_time = ?started.elapsed(),
            "phase finished"
        );
        let (values, keys, links) = match solved {
            Ok(solved) => solved,
            Err(error) => {
                stop_eager(eager, true).await;
                let at = failed_lines(&error, &ids, plan);
                return Err(BuildError::Solve(Box::new(SolveFailure {
                    error,
                    at,
                    file: loaded.text(),
                })));
            }
        };
        let mut tops = Vec::with_capacity(targets.len());
        for value in values {
            match value {
                Value::Fs(top) => tops.push(top),
                Value::Context => return Err(BuildError::NotAFilesystem),
            }
        }
        Ok(SolveOutcome {
            eager,
            solver,
            graph,
            ids,
            targets,
            keys,
            links,
            snapshotter,
            tops,
        })
    }

    /// Exports the image and the outputs, the cache, names and pushes the image, and describes
    /// the result; each phase stops when the build is canceled.
    async fn finish<F: Future<Output = i32>>(
        self,
        plan: BuildPlan,
        mut solved: SolveOutcome,
        parts: FinishParts,
        epoch: Option<i64>,
        cancel: &mut Cancel<F>,
    ) -> Result<BuildResult, BuildError> {
        let mut layer_opts = layer_options(&parts.outputs, epoch);
        layer_opts.cancel = Some(cancel.flag());
        layer_opts.progress = Some(self.layer_progress());
        let tags: Vec<String> = parts.tags.iter().map(|t| normalize_tag(t)).collect();
        let mut push_names: Vec<String> = Vec::new();
        let mut all_names: Vec<String> = tags.clone();
        for o in &parts.outputs {
            if let Output::Image { names, push } = &o.output {
                all_names.extend(names.iter().map(|n| normalize_tag(n)));
                if *push {
                    push_names.extend(names.iter().map(|n| normalize_tag(n)));
                }
            }
        }
        if parts.push {
            if tags.is_empty() {
                return Err(BuildError::PushWithoutName);
            }
            push_names.extend(tags.iter().cloned());
        }
        push_names.dedup();
        if plan.platforms.len() > 1 {
            all_names.dedup();
            let names = multi::Names {
                all: all_names,
                push: push_names,
            };
            return self
                .finish_multi(plan, solved, parts, names, layer_opts, cancel)
                .await;
        }
        let architecture = plan.config.architecture.clone();
        let started = Instant::now();
        let vertex = InternalVertex::start(&self.progress.solver_sink(), "exporting to image");
        let exported = {
            let (store, snapshotter) = (self.store.clone(), solved.snapshotter.clone());
            let image = ImageParts {
                config: plan.config,
                labels: parts.labels,
                annotations: parts.annotations,
            };
            let top = solved.tops.first().cloned().flatten();
            let (tags, layer_opts) = (tags.clone(), layer_opts.clone());
            let exported = cancel
                .blocking(move || {
                    export_image(
                        &store,
                        &snapshotter,
                        top.as_ref(),
                        image,
                        &tags,
                        &layer_opts,
                    )
                })
                .await;
            stop_eager(solved.eager.take(), exported.is_err()).await;
            exported
        };
        let (desc, config_digest) = match exported {
            Ok(exported) => exported,
            Err(e) => {
                vertex.fail(e.to_string());
                return Err(e);
            }
        };
        // The sub-steps as BuildKit's image exporter prints them (the tags were set by
        // `export_image`).
        deliver::log_export(
            &vertex,
            &[format!("writing image {} done", desc.digest)],
            &tags,
        );
        vertex.done();
        phase_done("export", started);
        let delivery = deliver::Delivery {
            desc: desc.clone(),
            top: solved.tops.first().cloned().flatten(),
            platforms: Vec::new(),
            tags: tags.clone(),
        };
        let output_results = self
            .write_outputs(
                &solved.snapshotter,
                &delivery,
                parts.outputs,
                &layer_opts,
                cancel,
            )
            .await?;
        self.progress.event(BuildEvent::ImageWritten {
            digest: desc.digest.clone(),
        });
        self.export_cache(&parts.cache_to, &solved, &layer_opts, &architecture, cancel)
            .await?;
        for name in &tags {
            self.progress
                .event(BuildEvent::Named { name: name.clone() });
        }
        let (pushed, pushed_manifest) = match self
            .push(&desc, &push_names, parts.push_jobs, &layer_opts, cancel)
            .await?
        {
            Some((summary, distributed)) => (Some(summary), Some(distributed)),
            None => (None, None),
        };
        all_names.dedup();
        // As buildx reports it: the manifest as distributed (pushed, else the first archive
        // output's), the store's own when the image went nowhere else.
        let reported = pushed_manifest
            .or_else(|| output_results.iter().find_map(|o| o.manifest.clone()))
            .unwrap_or_else(|| desc.clone());
        let metadata: ImageMetadata = {
            let (store, desc, names) = (self.store.clone(), reported, all_names.clone());
            blocking(move || Ok(metadata(&store, &desc, &names))).await?
        };
        Ok(BuildResult {
            image: desc,
            config_digest,
            names: all_names,
            outputs: output_results,
            pushed,
            metadata,
            manifests: Vec::new(),
            executed: self.executed.load(Ordering::Relaxed),
        })
    }
}

/// The Dockerfile lines of the vertex a solve failed at, when it names one with a location.
/// The vertices `target` depends on (itself included), cloned for the worker.
/// Finishes the eager layer export off the async workers (`abort`: its layer in progress
/// stops at its next chunk), so none of its temp files outlives the build.
async fn stop_eager(eager: Option<eager::Eager>, abort: bool) {
    if let Some(eager) = eager {
        let _ = blocking(move || {
            eager.finish(abort);
            Ok(())
        })
        .await;
    }
}

fn needed_vertices(graph: &Graph<WorkVertex>, targets: &[VertexId]) -> Vec<WorkVertex> {
    let mut seen = std::collections::HashSet::new();
    let mut stack = targets.to_vec();
    let mut out = Vec::new();
    while let Some(v) = stack.pop() {
        if !seen.insert(v) {
            continue;
        }
        if let Some(vertex) = graph.vertex(v) {
            out.push(vertex.clone());
        }
        stack.extend(graph.inputs(v).iter().copied());
    }
    out
}

fn failed_lines(
    err: &SolveError<WorkerError>,
    ids: &[VertexId],
    plan: &BuildPlan,
) -> Option<Lines> {
    let vertex = match err {
        SolveError::Exec { vertex, .. } | SolveError::CacheKey { vertex, .. } => *vertex,
        _ => return None,
    };
    let index = ids.iter().position(|id| *id == vertex)?;
    let loc = plan.definition.vertices[index].source.as_ref()?;
    Some(Lines {
        start: loc.start_line,
        end: loc.end_line,
    })
}
