//! The build pipeline behind `rbuild build`: parse, resolve base images, convert to llb, solve,
//! export into the store and the requested outputs.

mod options;

use crate::errors::{chain, excerpt, Report};
use crate::{progress, BuildArgs, StoreArgs};
use options::{layer_options, parse_build_args, parse_output, parse_secret, Output};
use rbuild_exporter::{assemble_image, ensure_layer, normalize_tag, LayerOptions};
use rbuild_frontend::{BaseImage, ConvertOptions};
use rbuild_oci::{Descriptor, Digest, ImageConfig, MediaType, Store};
use rbuild_registry::{Reference, RegistryClient};
use rbuild_sandbox::Sandbox;
use rbuild_snapshotter::{SnapshotId, Snapshotter};
use rbuild_solver::{CacheIndex, SolveError, SolveOptions, Solver, DEFAULT_LOCK_TIMEOUT};
use rbuild_worker::{graph_from_definition, Value, Worker, WorkerError};
use std::collections::HashMap;
use std::sync::Arc;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Report> + Send + 'static,
) -> Result<T, Report> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Report::new(format!("error: internal task failed: {e}")))?
}

/// Resolves a FROM reference: the store's copy unless `pull`, else the registry (manifest and config stored).
async fn resolve_base(
    store: &Store,
    registry: &RegistryClient,
    name: &str,
    pull: bool,
) -> Result<BaseImage, Report> {
    let reference = Reference::parse(name)
        .map_err(|e| Report::from_error(&format!("invalid image reference `{name}`"), &e))?;
    let full = reference.to_string();
    if !pull {
        let (store, full, pinned) = (store.clone(), full.clone(), reference.digest.clone());
        let local = blocking(move || {
            let known = match &pinned {
                Some(d) if store.has_blob(d) => Some(d.clone()),
                Some(_) => None,
                None => store.resolve_tag(&full).ok().flatten().map(|d| d.digest),
            };
            Ok(known.and_then(|digest| {
                let record = store.read_image(&digest).ok()?;
                Some(BaseImage {
                    reference: full,
                    digest,
                    config: record.config,
                })
            }))
        })
        .await?;
        if let Some(base) = local {
            return Ok(base);
        }
    }
    let resolved = registry.resolve(&reference).await.map_err(|e| {
        Report::from_error(&format!("failed to resolve source metadata for {full}"), &e)
    })?;
    let store2 = store.clone();
    let manifest_bytes = resolved.manifest_bytes.clone();
    let config_bytes = resolved.config_bytes.clone();
    let digest = resolved.manifest_digest.clone();
    let media_type = resolved
        .manifest
        .media_type
        .clone()
        .unwrap_or_else(|| MediaType::new(MediaType::OCI_MANIFEST));
    let tag = full.clone();
    blocking(move || {
        let (md, size) = store2
            .write_blob(&manifest_bytes)
            .map_err(|e| Report::from_error("storing manifest", &e))?;
        if md != digest {
            return Err(Report::new(format!(
                "error: manifest of {tag} does not match its digest {digest}"
            )));
        }
        store2
            .write_blob(&config_bytes)
            .map_err(|e| Report::from_error("storing image config", &e))?;
        if reference_is_tag(&tag) {
            let desc = Descriptor {
                media_type,
                digest: md,
                size,
                platform: None,
                annotations: None,
            };
            store2
                .set_tag(&tag, &desc)
                .map_err(|e| Report::from_error("tagging base image", &e))?;
        }
        Ok(())
    })
    .await?;
    Ok(BaseImage {
        reference: full,
        digest: resolved.manifest_digest,
        config: resolved.config,
    })
}

/// The `.dockerignore` for a build: `NAME.dockerignore` beside the Dockerfile wins over the context's.
fn read_dockerignore(context: &std::path::Path, dockerfile: &std::path::Path) -> Vec<String> {
    let specific = dockerfile
        .file_name()
        .map(|n| dockerfile.with_file_name(format!("{}.dockerignore", n.to_string_lossy())));
    let text = specific
        .and_then(|p| std::fs::read_to_string(p).ok())
        .or_else(|| std::fs::read_to_string(context.join(".dockerignore")).ok())
        .unwrap_or_default();
    rbuild_worker::dockerignore::Matcher::lines_of(&text)
}

/// Formats Unix seconds as RFC 3339 UTC (`2024-01-02T03:04:05Z`).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn reference_is_tag(name: &str) -> bool {
    !name.contains('@')
}

/// Runs `rbuild build`.
pub async fn run(args: BuildArgs, store_args: &StoreArgs) -> Result<(), Report> {
    let root = store_args.root_dir();
    let Some(context_arg) = args.context.clone() else {
        return Err(Report::new(
            "error: give a build context, e.g. `rbuild -t name:tag .` (see `rbuild --help`)",
        )
        .with_code(2));
    };
    let input = {
        let (context_arg, file, root) = (context_arg.clone(), args.file.clone(), root.clone());
        blocking(move || crate::input::prepare(&context_arg, file.as_deref(), &root)).await?
    };
    let context = input.context.clone();
    let dockerfile_path = input.dockerfile_path.clone();
    let dockerfile_name = input.dockerfile_name.clone();
    let source = input.source.clone();
    let dockerfile =
        rbuild_frontend::parse(&source).map_err(|e| Report::new(e.render(&dockerfile_name)))?;
    if let Some(syntax) = &dockerfile.directives.syntax {
        if !crate::input::is_builtin_syntax(syntax) {
            eprintln!("warning: {dockerfile_name}: `# syntax={syntax}` asks for a frontend image; rbuild does not run frontend images and builds with its built-in Dockerfile frontend");
        }
    }
    let network = args.network.mode();
    let entitlements = crate::run_opts::entitlements(&args)?;
    let limits = crate::run_opts::limits(&args)?;
    let secrets = args
        .secrets
        .iter()
        .map(|s| parse_secret(s))
        .collect::<Result<HashMap<_, _>, _>>()?;
    let outputs = args
        .outputs
        .iter()
        .map(|o| parse_output(o))
        .collect::<Result<Vec<_>, _>>()?;
    let mut layer_opts = layer_options(&args.outputs)?;
    let cache_to = args
        .cache_to
        .iter()
        .map(|s| crate::cache_io::parse_cache_to(s))
        .collect::<Result<Vec<_>, _>>()?;
    let cache_from = args
        .cache_from
        .iter()
        .map(|s| crate::cache_io::parse_cache_from(s))
        .collect::<Result<Vec<_>, _>>()?;
    let context_excludes = {
        let (context, dockerfile_path) = (context.clone(), dockerfile_path.clone());
        blocking(move || Ok(read_dockerignore(&context, &dockerfile_path))).await?
    };
    // SOURCE_DATE_EPOCH (build arg or environment, as BuildKit) clamps every timestamp.
    let source_date_epoch = parse_build_args(&args.build_args)
        .get("SOURCE_DATE_EPOCH")
        .cloned()
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    layer_opts.source_date_epoch = source_date_epoch;
    let created_secs = match source_date_epoch {
        Some(epoch) => epoch,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    };
    let opts = ConvertOptions {
        build_args: parse_build_args(&args.build_args),
        target: args.target.clone(),
        dockerfile_name: dockerfile_name.clone(),
        network,
        entitlements: entitlements.clone(),
        extra_hosts: args.add_hosts.clone(),
        context_excludes,
        created: Some(rfc3339(created_secs)),
    };
    let needed = rbuild_frontend::base_images(&dockerfile, &opts)
        .map_err(|e| Report::new(e.render(&dockerfile_name, &source)))?;

    let store_root = root.clone();
    let store = blocking(move || {
        std::fs::create_dir_all(&store_root).map_err(|e| {
            Report::new(format!(
                "error: cannot create state directory `{}`: {e}",
                store_root.display()
            ))
        })?;
        Store::open_with_reporter(&store_root, Some(progress::wait_reporter()))
            .map_err(|e| Report::from_error("opening the image store", &e))
    })
    .await?;
    let registry = RegistryClient::new().map_err(|e| Report::from_error("registry client", &e))?;
    let mut bases = HashMap::new();
    let resolver = registry.with_notices(progress::registry_notices(args.progress));
    let resolutions = needed
        .iter()
        .map(|name| resolve_base(&store, &resolver, name, args.pull));
    for (name, base) in needed.iter().zip(futures_join_all(resolutions).await) {
        let base = base.map_err(|report| {
            // A bare word that is neither a stage nor a pullable image is most likely a typo of a stage name.
            if name.contains(['/', ':', '@', '.']) {
                return report;
            }
            let stages = rbuild_frontend::stage_names(&dockerfile);
            let list = if stages.is_empty() { "none is named".to_string() } else { stages.join(", ") };
            Report::new(format!("{report}\nhint: `{name}` is not a stage of this Dockerfile (stages: {list}), so it was pulled as an image"))
        })?;
        bases.insert(name.clone(), base);
    }
    let plan = rbuild_frontend::convert(&dockerfile, &opts, &bases)
        .map_err(|e| Report::new(e.render(&dockerfile_name, &source)))?;
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
        return Err(Report::new(text));
    }

    let snapshot_root = root.join("snapshots-v1");
    let index_path = root.join("cache-v2.redb");
    let (snapshotter, index) = blocking(move || {
        let snapshotter = Snapshotter::open(&snapshot_root)
            .map_err(|e| Report::from_error("opening snapshots", &e))?;
        let index = CacheIndex::open_with(
            &index_path,
            DEFAULT_LOCK_TIMEOUT,
            Some(progress::wait_reporter()),
        )
        .map_err(|e| Report::from_error("opening the cache index", &e))?;
        Ok((snapshotter, index))
    })
    .await?;
    let exe = std::env::current_exe()
        .map_err(|e| Report::new(format!("error: cannot find the rbuild executable: {e}")))?;
    let remote_cache = crate::cache_io::import(&cache_from, &registry).await;
    let cache_registry = registry.clone();
    let worker = Arc::new(
        Worker::new(
            store.clone(),
            snapshotter.clone(),
            Sandbox::new(exe),
            registry,
            Some(index.clone()),
            Some(context),
        )
        .with_secrets(secrets)
        .with_remote_cache(remote_cache.clone())
        .with_limits(limits),
    );
    let (graph, ids) = graph_from_definition(&plan.definition);
    let solver = Solver::new(worker, Some(index), progress::sink(args.progress));
    let solve_opts = SolveOptions {
        no_cache: args.no_cache,
        ..SolveOptions::default()
    };
    let targets = [ids[plan.target]];
    let solved = tokio::select! {
        r = solver.solve_with_keys(&graph, &targets, &solve_opts) => r,
        code = wait_for_signal() => return Err(Report::new("error: build canceled").with_code(code)),
    };
    crate::cache_io::report_import(remote_cache.as_ref());
    let solved_keys;
    let value = match solved {
        Ok((mut values, keys)) => {
            solved_keys = keys;
            values.pop().unwrap_or(Value::Fs(None))
        }
        Err(e) => {
            return Err(solve_report(
                e,
                &ids,
                &plan.definition,
                &dockerfile_name,
                &source,
            ))
        }
    };
    let top = match value {
        Value::Fs(top) => top,
        Value::Context => return Err(Report::new("error: the build result is not a filesystem")),
    };
    let tags: Vec<String> = args.tags.iter().map(|t| normalize_tag(t)).collect();
    let config = plan.config.clone();
    let push_store = store.clone();
    let mut push_names: Vec<String> = Vec::new();
    let mut all_names: Vec<String> = tags.clone();
    for o in &outputs {
        if let Output::Image { names, push } = o {
            all_names.extend(names.iter().map(|n| normalize_tag(n)));
            if *push {
                push_names.extend(names.iter().map(|n| normalize_tag(n)));
            }
        }
    }
    if args.push {
        if tags.is_empty() {
            return Err(Report::new("error: --push needs at least one -t NAME").with_code(2));
        }
        push_names.extend(tags.iter().cloned());
    }
    push_names.dedup();
    let (cache_snapshotter, cache_layer_opts) = (snapshotter.clone(), layer_opts.clone());
    let cache_arch = config.architecture.clone();
    let desc = blocking(move || {
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
    .await?;
    eprintln!("writing image {} done", desc.digest);
    crate::cache_io::export(
        &cache_to,
        &solver,
        &graph,
        &ids,
        targets[0],
        &solved_keys,
        &push_store,
        &cache_snapshotter,
        &cache_layer_opts,
        &cache_arch,
        &cache_registry,
    )
    .await?;
    for tag in &args.tags {
        eprintln!("naming to {} done", normalize_tag(tag));
    }
    if !push_names.is_empty() {
        crate::push::push_image(&push_store, &desc, &push_names, 3).await?;
    }
    if let Some(path) = &args.metadata_file {
        all_names.dedup();
        let pushed = crate::push::Pushed {
            descriptor: desc.clone(),
            names: all_names,
        };
        crate::push::write_metadata(path, &push_store, &pushed)?;
    }
    Ok(())
}

async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut out = Vec::new();
    for f in futures {
        out.push(f.await);
    }
    out
}

async fn wait_for_signal() -> u8 {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        std::future::pending::<()>().await;
        return 1;
    };
    tokio::select! {
        _ = int.recv() => 130,
        _ = term.recv() => 143,
    }
}

fn solve_report(
    err: SolveError<WorkerError>,
    ids: &[rbuild_solver::VertexId],
    def: &rbuild_llb::Definition,
    file: &str,
    source: &str,
) -> Report {
    let (vertex, name, cause) = match &err {
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
        None => chain(&err),
    };
    text.push_str(&format!("ERROR: failed to solve: {message}"));
    Report::new(text)
}

fn chain_of(
    snapshotter: &Snapshotter,
    top: Option<&SnapshotId>,
) -> Result<Vec<SnapshotId>, Report> {
    let mut out = Vec::new();
    let mut cur = top.cloned();
    while let Some(id) = cur {
        cur = snapshotter
            .parent(&id)
            .map_err(|e| Report::from_error("reading snapshot chain", &e))?;
        out.push(id);
    }
    out.reverse();
    Ok(out)
}

fn export(
    store: &Store,
    snapshotter: &Snapshotter,
    top: Option<&SnapshotId>,
    config: ImageConfig,
    tags: &[String],
    outputs: &[Output],
    opts: &LayerOptions,
) -> Result<Descriptor, Report> {
    let mut layers = Vec::new();
    for id in chain_of(snapshotter, top)? {
        layers.push(
            ensure_layer(snapshotter, store, &id, opts)
                .map_err(|e| Report::from_error("exporting layers", &e))?,
        );
    }
    let (desc, _) = assemble_image(store, config, &layers)
        .map_err(|e| Report::from_error("writing image", &e))?;
    for tag in tags {
        store
            .set_tag(tag, &desc)
            .map_err(|e| Report::from_error(&format!("naming {tag}"), &e))?;
    }
    for output in outputs {
        let result = match output {
            // As buildx: the `-t` names replace an archive output's own `name=`.
            Output::Oci { dest, tar, names } => {
                let names = if tags.is_empty() { names } else { tags };
                rbuild_exporter::write_oci(store, &desc, names, dest, *tar)
            }
            Output::Docker { dest, names } => {
                let names = if tags.is_empty() { names } else { tags };
                rbuild_exporter::write_docker_archive(store, &desc, names, dest)
            }
            Output::Local { dest } => rbuild_exporter::write_local(snapshotter, top, dest),
            Output::Tar { dest } => rbuild_exporter::write_tar(snapshotter, top, dest),
            Output::Image { names, .. } => {
                for name in names {
                    let tag = normalize_tag(name);
                    store
                        .set_tag(&tag, &desc)
                        .map_err(|e| Report::from_error(&format!("naming {tag}"), &e))?;
                }
                Ok(())
            }
        };
        result.map_err(|e| Report::from_error("exporting", &e))?;
    }
    Ok(desc)
}

/// Runs `rbuild images`: one line per tag with its digest and size.
pub fn images(store_args: &StoreArgs) -> Result<(), Report> {
    let root = store_args.root_dir();
    if !root.join("index.json").exists() {
        println!("{:<50} {:<20} {:>10}", "REPOSITORY:TAG", "DIGEST", "SIZE");
        return Ok(());
    }
    let store =
        Store::open(&root).map_err(|e| Report::from_error("opening the image store", &e))?;
    let tags = store
        .tags()
        .map_err(|e| Report::from_error("reading the image store", &e))?;
    println!("{:<50} {:<20} {:>10}", "REPOSITORY:TAG", "DIGEST", "SIZE");
    for tag in tags {
        let size = store
            .read_image(&tag.descriptor.digest)
            .map(|r| r.manifest.config.size + r.manifest.layers.iter().map(|l| l.size).sum::<u64>())
            .unwrap_or(0);
        println!(
            "{:<50} {:<20} {:>10}",
            tag.name,
            short(&tag.descriptor.digest),
            human(size)
        );
    }
    Ok(())
}

fn short(d: &Digest) -> String {
    format!("sha256:{}", &d.hex()[..12])
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1}GB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1}MB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1}kB", b as f64 / 1024.0),
        b => format!("{b}B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
