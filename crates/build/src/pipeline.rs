//! The pipeline of one build, in order: read the inputs, parse the Dockerfile, resolve base
//! images, convert to llb, check entitlements, solve (cancelable), export the image and the
//! outputs, export the cache, tag, push, and describe the result.

use crate::cache_io::{self, ExportParts, Solved};
use crate::error::{blocking, chain, excerpt, BuildError};
use crate::export::{export, layer_options};
use crate::input;
use crate::options::{rfc3339, source_date_epoch};
use crate::progress::{wait_reporter, BuildEvent};
use crate::push::{metadata, push_image};
use crate::request::{BuildRequest, BuildResult};
use crate::resolve::resolve_all;
use crate::spec::Output;
use rbuild_exporter::normalize_tag;
use rbuild_frontend::ConvertOptions;
use rbuild_oci::Store;
use rbuild_registry::RegistryClient;
use rbuild_sandbox::Sandbox;
use rbuild_snapshotter::Snapshotter;
use rbuild_solver::{CacheIndex, SolveError, SolveOptions, Solver, DEFAULT_LOCK_TIMEOUT};
use rbuild_worker::{graph_from_definition, Value, Worker, WorkerError};
use std::future::Future;
use std::sync::Arc;

/// Runs a build to its end.
pub async fn build(request: BuildRequest) -> Result<BuildResult, BuildError> {
    build_with_cancel(request, std::future::pending()).await
}

/// Runs a build; when `cancel` completes during the solve (it is polled only then, so a signal
/// handler it installs is active only while steps run), the solve stops and the build fails with
/// [`BuildError::Canceled`] carrying the future's output.
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
        tags: raw_tags,
        outputs,
        push,
        push_jobs,
        cache_to,
        cache_from,
        secrets,
        network,
        entitlements,
        extra_hosts,
        limits,
        no_cache,
        pull,
        progress,
    } = request;
    let input = {
        let state = state.clone();
        blocking(move || input::prepare(context, dockerfile, &state)).await?
    };
    let dockerfile_name = input.dockerfile_name.clone();
    let source = input.source.clone();
    let parsed = rbuild_frontend::parse(&source)
        .map_err(|e| BuildError::Dockerfile(e.render(&dockerfile_name)))?;
    if let Some(syntax) = &parsed.directives.syntax {
        if !input::is_builtin_syntax(syntax) {
            progress.event(BuildEvent::SyntaxIgnored {
                file: dockerfile_name.clone(),
                syntax: syntax.clone(),
            });
        }
    }
    let context_excludes = {
        let (context, dockerfile_path) = (input.context.clone(), input.dockerfile_path.clone());
        blocking(move || Ok(input::read_dockerignore(&context, &dockerfile_path))).await?
    };
    // SOURCE_DATE_EPOCH (build arg or the caller's fallback, as BuildKit) clamps every timestamp.
    let epoch = source_date_epoch(&build_args, epoch_fallback);
    let layer_opts = layer_options(&outputs, epoch);
    let created_secs = match epoch {
        Some(epoch) => epoch,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    };
    let opts = ConvertOptions {
        build_args,
        target,
        dockerfile_name: dockerfile_name.clone(),
        network,
        entitlements: entitlements.clone(),
        extra_hosts,
        context_excludes,
        created: Some(rfc3339(created_secs)),
    };
    let needed = rbuild_frontend::base_images(&parsed, &opts)
        .map_err(|e| BuildError::Dockerfile(e.render(&dockerfile_name, &source)))?;

    let store = {
        let (root, reporter) = (state.store(), wait_reporter(&progress));
        blocking(move || {
            std::fs::create_dir_all(&root).map_err(|e| {
                BuildError::Failed(format!(
                    "cannot create state directory `{}`: {e}",
                    root.display()
                ))
            })?;
            Store::open_with_reporter(&root, Some(reporter))
                .map_err(|e| BuildError::step("opening the image store", e))
        })
        .await?
    };
    let registry = RegistryClient::new().map_err(|e| BuildError::step("registry client", e))?;
    let resolver = {
        let progress = progress.clone();
        registry.with_notices(move |n| progress.event(BuildEvent::ResolveNotice(n.clone())))
    };
    let bases = resolve_all(&store, &resolver, &needed, pull, || {
        rbuild_frontend::stage_names(&parsed)
    })
    .await?;
    let plan = rbuild_frontend::convert(&parsed, &opts, &bases)
        .map_err(|e| BuildError::Dockerfile(e.render(&dockerfile_name, &source)))?;
    // The solver-level check of BuildKit, on the whole graph (the frontend already reported a
    // Dockerfile flag at its column; this catches any other source of a privileged op).
    if let Err(e) = plan.definition.check_entitlements(&entitlements) {
        let mut text = String::new();
        if let Some(loc) = &plan.definition.vertices[e.vertex].source {
            text.push_str(&excerpt(
                &dockerfile_name,
                &source,
                loc.start_line,
                loc.end_line,
            ));
            text.push('\n');
        }
        text.push_str(&format!(
            "ERROR: {e}\nhint: pass `--allow {}` to `rbuild build` to grant it",
            e.entitlement
        ));
        return Err(BuildError::Entitlement(text));
    }

    let (snapshotter, index) = {
        let (snapshot_root, index_path) = (state.snapshots(), state.cache_index());
        let reporter = wait_reporter(&progress);
        blocking(move || {
            let snapshotter = Snapshotter::open(&snapshot_root)
                .map_err(|e| BuildError::step("opening snapshots", e))?;
            let index = CacheIndex::open_with(&index_path, DEFAULT_LOCK_TIMEOUT, Some(reporter))
                .map_err(|e| BuildError::step("opening the cache index", e))?;
            Ok((snapshotter, index))
        })
        .await?
    };
    let exe = std::env::current_exe()
        .map_err(|e| BuildError::Failed(format!("cannot find the rbuild executable: {e}")))?;
    let remote_cache = cache_io::import(&cache_from, &registry, progress.as_ref()).await;
    let cache_registry = registry.clone();
    let secrets = secrets.into_iter().map(|s| (s.id, s.source)).collect();
    let worker = Arc::new(
        Worker::new(
            store.clone(),
            snapshotter.clone(),
            Sandbox::new(exe),
            registry,
            Some(index.clone()),
            Some(input.context.clone()),
            state.cache_mounts(),
        )
        .with_secrets(secrets)
        .with_remote_cache(remote_cache.clone())
        .with_limits(limits),
    );
    let (graph, ids) = graph_from_definition(&plan.definition);
    let solver = Solver::new(worker, Some(index), progress.solver_sink());
    let solve_opts = SolveOptions {
        no_cache,
        ..SolveOptions::default()
    };
    let target = ids[plan.target];
    let targets = [target];
    let solved = tokio::select! {
        r = solver.solve_with_keys(&graph, &targets, &solve_opts) => r,
        signal = cancel => return Err(BuildError::Canceled { signal }),
    };
    cache_io::report_import(remote_cache.as_ref(), progress.as_ref());
    let (value, solved_keys) = match solved {
        Ok((mut values, keys)) => (values.pop().unwrap_or(Value::Fs(None)), keys),
        Err(e) => {
            let report = solve_report(&e, &ids, &plan.definition, &dockerfile_name, &source);
            return Err(BuildError::Solve {
                report,
                source: Box::new(e),
            });
        }
    };
    let top = match value {
        Value::Fs(top) => top,
        Value::Context => {
            return Err(BuildError::Failed(
                "the build result is not a filesystem".into(),
            ))
        }
    };
    let tags: Vec<String> = raw_tags.iter().map(|t| normalize_tag(t)).collect();
    let mut push_names: Vec<String> = Vec::new();
    let mut all_names: Vec<String> = tags.clone();
    for o in &outputs {
        if let Output::Image { names, push } = &o.output {
            all_names.extend(names.iter().map(|n| normalize_tag(n)));
            if *push {
                push_names.extend(names.iter().map(|n| normalize_tag(n)));
            }
        }
    }
    if push {
        if tags.is_empty() {
            return Err(BuildError::PushWithoutName);
        }
        push_names.extend(tags.iter().cloned());
    }
    push_names.dedup();
    let architecture = plan.config.architecture.clone();
    let (desc, config_digest, output_results) = {
        let (store, snapshotter, config) = (store.clone(), snapshotter.clone(), plan.config);
        let (tags, layer_opts) = (tags.clone(), layer_opts.clone());
        blocking(move || {
            export(
                &store,
                &snapshotter,
                top.as_ref(),
                config,
                &tags,
                &outputs,
                &layer_opts,
            )
        })
        .await?
    };
    progress.event(BuildEvent::ImageWritten {
        digest: desc.digest.clone(),
    });
    cache_io::export(
        &cache_to,
        &Solved {
            solver: &solver,
            graph: &graph,
            ids: &ids,
            target,
            keys: &solved_keys,
        },
        &ExportParts {
            store: &store,
            snapshotter: &snapshotter,
            layer_opts: &layer_opts,
            architecture: &architecture,
            registry: &cache_registry,
        },
        progress.as_ref(),
    )
    .await?;
    for name in &tags {
        progress.event(BuildEvent::Named { name: name.clone() });
    }
    let pushed = if push_names.is_empty() {
        None
    } else {
        let notices = progress.clone();
        let summary = push_image(&store, &desc, &push_names, push_jobs, move |n| {
            notices.event(BuildEvent::PushNotice(n.clone()))
        })
        .await?;
        progress.event(BuildEvent::Pushed(summary.clone()));
        Some(summary)
    };
    all_names.dedup();
    let metadata = {
        let (store, desc, names) = (store.clone(), desc.clone(), all_names.clone());
        blocking(move || Ok(metadata(&store, &desc, &names))).await?
    };
    Ok(BuildResult {
        image: desc,
        config_digest,
        names: all_names,
        outputs: output_results,
        pushed,
        metadata,
    })
}

/// BuildKit's report of a failed solve: the failed RUN's last output lines, the Dockerfile
/// excerpt at the failing instruction, `ERROR: failed to solve: ...`.
fn solve_report(
    err: &SolveError<WorkerError>,
    ids: &[rbuild_solver::VertexId],
    def: &rbuild_llb::Definition,
    file: &str,
    source: &str,
) -> String {
    let (vertex, name, cause) = match err {
        SolveError::Exec {
            vertex,
            name,
            source,
        }
        | SolveError::CacheKey {
            vertex,
            name,
            source,
        } => (Some(*vertex), name.clone(), Some(source)),
        _ => (None, String::new(), None),
    };
    let mut text = String::new();
    if let Some(tail) = cause.and_then(|c| c.run_output_tail()) {
        if !tail.is_empty() {
            text.push_str(&format!("------\n > {name}:\n"));
            for line in tail {
                text.push_str(&format!("{line}\n"));
            }
            text.push_str("------\n");
        }
    }
    let location = vertex
        .and_then(|v| ids.iter().position(|id| *id == v))
        .and_then(|i| def.vertices[i].source.clone());
    if let Some(loc) = location {
        text.push_str(&excerpt(file, source, loc.start_line, loc.end_line));
        text.push('\n');
    }
    let message = match cause {
        Some(c) => chain(c),
        None => chain(err),
    };
    text.push_str(&format!("ERROR: failed to solve: {message}"));
    text
}
