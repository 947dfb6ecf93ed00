//! `rbuild build`: turns the build flags into a [`BuildRequest`] for the
//! library (`rbuild_build`), runs it (canceled by SIGINT/SIGTERM from the solve on: while steps
//! run, layers and outputs are written, the cache is exported or the image pushed) and prints
//! the result.

use crate::errors::Report;
use crate::{progress, BuildArgs, StoreArgs};
use rbuild_build::{BuildRequest, ContextSource, DockerfileSource, StateDir};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The `--build-arg`s as a map: `K=V`, or a bare `K` taking its value from the environment.
pub(crate) fn parse_build_args(raw: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for arg in raw {
        match arg.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(arg) {
                    out.insert(arg.clone(), v);
                }
            }
        }
    }
    out
}

/// A `--label`: `KEY=VALUE`, or `KEY` for an empty value (as docker).
pub fn parse_label(raw: &str) -> Result<(String, String), String> {
    let (k, v) = raw.split_once('=').unwrap_or((raw, ""));
    if k.is_empty() {
        return Err(format!("invalid label `{raw}`: no key"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// An `--annotation` (buildx's `[TYPE:]KEY=VALUE`): rbuild annotates the image manifest, so
/// TYPE may only be `manifest`.
pub fn parse_annotation(raw: &str) -> Result<(String, String), String> {
    let Some((key, value)) = raw.split_once('=') else {
        return Err(format!("invalid annotation `{raw}`: expected KEY=VALUE"));
    };
    let key = match key.split_once(':') {
        Some(("manifest", k)) => k,
        Some((kind @ ("index" | "manifest-descriptor" | "index-descriptor"), _)) => {
            return Err(format!(
                "annotation type `{kind}` is not supported (rbuild annotates the image manifest: KEY=VALUE or manifest:KEY=VALUE)"
            ))
        }
        _ => key,
    };
    if key.is_empty() {
        return Err(format!("invalid annotation `{raw}`: no key"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// The type of the first output streamed to standard output (`dest=-`), if any.
fn stdout_output(outputs: &[rbuild_build::OutputSpec]) -> Option<&'static str> {
    use rbuild_build::Output;
    outputs.iter().find_map(|o| match &o.output {
        Output::Tar { dest } if dest == Path::new("-") => Some("tar"),
        Output::Oci {
            dest, tar: true, ..
        } if dest == Path::new("-") => Some("oci"),
        Output::Docker { dest, .. } if dest == Path::new("-") => Some("docker"),
        _ => None,
    })
}

/// Runs `rbuild build`.
pub async fn run(args: BuildArgs, store_args: &StoreArgs) -> Result<(), Report> {
    let state = StateDir::new(store_args.root_dir());
    let Some(context_arg) = args.context.clone() else {
        return Err(Report::new(
            "error: give a build context, e.g. `rbuild -t name:tag .` (see `rbuild --help`)",
        )
        .with_code(2));
    };
    if let Some(kind) = stdout_output(&args.outputs) {
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() {
            return Err(Report::new(format!(
                "error: dest file is required for {kind} exporter. refusing to write to console"
            )));
        }
    }
    if args.check {
        return crate::check::run_for_build(context_arg, args.file.clone(), &args.build_args);
    }
    let lint = {
        let (context, file, build_args) = (
            context_arg.clone(),
            args.file.clone(),
            args.build_args.clone(),
        );
        tokio::task::spawn_blocking(move || {
            crate::check::lint_for_build(context, file, &build_args)
        })
        .await
        .ok()
        .flatten()
    };
    if let Some(violation) = lint.as_ref().and_then(crate::check::violation) {
        return Err(violation);
    }
    buildx_environment();
    let load = match args.load {
        true => Some(prepare_load(&state)?),
        false => None,
    };
    let (debug_mode, kept) = crate::debug::mode(&args.debug)?;
    let entitlements = crate::run_opts::entitlements(&args)?;
    let limits = crate::run_opts::limits(&args)?;
    let context = if context_arg == Path::new("-") {
        ContextSource::Stream(Box::new(std::io::stdin()))
    } else {
        ContextSource::Dir(context_arg)
    };
    let mut request = BuildRequest::new(state.clone(), context);
    request.dockerfile = match &args.file {
        Some(f) if f == Path::new("-") => DockerfileSource::Stream(Box::new(std::io::stdin())),
        Some(f) => DockerfileSource::Path(f.clone()),
        None => DockerfileSource::Default,
    };
    request.build_args = parse_build_args(&args.build_args);
    // SOURCE_DATE_EPOCH from the environment when no build arg sets it (as BuildKit).
    request.source_date_epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok());
    request.target = args.target.clone();
    // Repeated or listed twice, a platform is built once (buildx).
    for p in &args.platforms {
        if !request.platforms.iter().any(|q| q.same_as(p)) {
            request.platforms.push(p.clone());
        }
    }
    request.tags = args.tags.clone();
    request.labels = args.labels.iter().cloned().collect();
    request.annotations = args.annotations.iter().cloned().collect();
    request.outputs = args.outputs.clone();
    if let Some((_, archive)) = &load {
        request.outputs.push(rbuild_build::OutputSpec {
            output: rbuild_build::Output::Docker {
                dest: archive.clone(),
                names: Vec::new(),
            },
            compression: None,
        });
    }
    request.push = args.push;
    request.cache_to = args.cache_to.clone();
    request.cache_from = args.cache_from.clone();
    request.secrets = args.secrets.clone();
    request.ssh = args.ssh.clone();
    request.network = args.network.mode();
    request.entitlements = entitlements;
    request.extra_hosts = args.add_hosts.clone();
    request.limits = limits;
    request.engine = crate::run_opts::engine_settings(args.quiet)?;
    request.no_cache = args.no_cache;
    request.no_cache_filter = args.no_cache_filter.clone();
    request.named_contexts = args.build_contexts.clone();
    request.pull = args.pull;
    request.debug_on_fail = debug_mode;
    let cli_progress = match args.quiet {
        true => None,
        false => {
            let mode = crate::debug::progress_mode(&args.debug, args.progress);
            Some(Arc::new(progress::CliProgress::new(mode)?))
        }
    };
    if let Some(p) = &cli_progress {
        request.progress = p.clone();
    }
    let built = rbuild_build::build_with_cancel(request, wait_for_signal()).await;
    if let Some(p) = &cli_progress {
        p.finish(built.is_ok());
    }
    // Listed when the progress closes, failed builds too (as buildx); JSON: one event each.
    if let (Some(lint), false) = (lint.as_ref(), args.quiet) {
        if args.progress == progress::ProgressMode::Json {
            lint.findings.iter().for_each(progress::lint_warning);
        } else {
            crate::check::print_summary(lint, tracing::enabled!(tracing::Level::DEBUG));
        }
    }
    let built = built.map_err(|e| crate::debug::with_hints(Report::from(e), &kept));
    let result = match (built, &load) {
        (Ok(result), Some((socket, archive))) => {
            let loaded = load_into_docker(socket.clone(), archive.clone()).await;
            let _ = std::fs::remove_file(archive);
            loaded?;
            result
        }
        (built, _) => {
            if let Some((_, archive)) = &load {
                let _ = std::fs::remove_file(archive);
            }
            built?
        }
    };
    // The image ID: the config digest, an index's digest for a multi-platform build (buildx's
    // `containerimage.config.digest`, else `containerimage.digest`).
    let image_id = if result.manifests.is_empty() {
        &result.config_digest
    } else {
        &result.image.digest
    };
    if args.quiet {
        println!("{image_id}");
    } else if let Some(pushed) = &result.pushed {
        // The registry's manifest digest (its layers compressed), as `docker push` prints it.
        println!("{}", pushed.digest);
    }
    if let Some(path) = &args.iidfile {
        std::fs::write(path, image_id.to_string()).map_err(|e| {
            Report::from_error(&format!("writing the image ID to {}", path.display()), &e)
        })?;
    }
    if let Some(path) = &args.metadata_file {
        crate::push::write_metadata(path, &result.metadata)?;
    }
    // The automatic collection runs when the build may have grown the root: a step executed,
    // or results came from an imported cache (a fully cached build adds no snapshot, and its
    // image is byte-identical to the one already stored).
    if result.executed > 0 || !args.cache_from.is_empty() {
        let flag = args.gc_keep_storage.clone();
        let _ = tokio::task::spawn_blocking(move || crate::prune::auto_gc(&state, flag.as_deref()))
            .await;
    }
    if !args.quiet && progress::json_errors() {
        progress::print_result(&result);
    }
    Ok(())
}

/// The buildx environment CI pipelines set: `BUILDKIT_PROGRESS` is read by clap (the default
/// of `--progress`), `BUILDX_NO_DEFAULT_ATTESTATIONS` needs nothing (rbuild makes no
/// attestations) and `BUILDX_BUILDER` names a buildx builder, which rbuild has not.
fn buildx_environment() {
    if let Some(builder) = std::env::var_os("BUILDX_BUILDER") {
        tracing::debug!(
            builder = %builder.to_string_lossy(),
            "BUILDX_BUILDER ignored: rbuild builds in-process, without a builder instance"
        );
    }
}

/// `--load`: the docker daemon's socket, checked to answer before anything is built, and the
/// path of the `docker load` archive the build writes for it (under the root's tmp).
fn prepare_load(state: &StateDir) -> Result<(PathBuf, PathBuf), Report> {
    use rbuild_build::docker_load;
    let host = std::env::var("DOCKER_HOST").ok();
    let socket = docker_load::docker_socket(host.as_deref())
        .and_then(|socket| docker_load::ping(&socket).map(|()| socket))
        .map_err(|e| Report::new(format!("error: --load: {e}")))?;
    let tmp = state.tmp();
    std::fs::create_dir_all(&tmp)
        .map_err(|e| Report::from_error(&format!("creating {}", tmp.display()), &e))?;
    Ok((socket, tmp.join(format!("load-{}.tar", std::process::id()))))
}

/// Streams the archive at `archive` into the daemon at `socket` and prints the daemon's
/// `Loaded image: NAME` lines (to stderr: stdout stays for `-q` and `dest=-`).
async fn load_into_docker(socket: PathBuf, archive: PathBuf) -> Result<(), Report> {
    let lines = tokio::task::spawn_blocking(move || -> Result<Vec<String>, Report> {
        let file = std::fs::File::open(&archive)
            .map_err(|e| Report::from_error(&format!("reading {}", archive.display()), &e))?;
        let len = file
            .metadata()
            .map_err(|e| Report::from_error(&format!("reading {}", archive.display()), &e))?
            .len();
        rbuild_build::docker_load::load_archive(&socket, std::io::BufReader::new(file), len)
            .map_err(|e| Report::new(format!("error: --load: {e}")))
    })
    .await
    .map_err(|e| Report::new(format!("error: --load: {e}")))??;
    for line in lines {
        progress::notice(&line);
    }
    Ok(())
}

/// Waits for SIGINT or SIGTERM and returns its number; registers the handlers when first
/// polled (the library polls it from the start of the solve to the end of the push).
async fn wait_for_signal() -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending::<i32>().await;
    };
    tokio::select! {
        _ = int.recv() => rustix::process::Signal::INT.as_raw(),
        _ = term.recv() => rustix::process::Signal::TERM.as_raw(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_args_take_bare_names_from_the_environment() {
        let args = parse_build_args(&[
            "A=1".into(),
            "B=x=y".into(),
            "PATH".into(),
            "RBUILD_SURELY_UNSET_VARIABLE".into(),
        ]);
        assert_eq!(args.get("A").map(String::as_str), Some("1"));
        assert_eq!(args.get("B").map(String::as_str), Some("x=y"));
        assert_eq!(args.get("PATH"), std::env::var("PATH").ok().as_ref());
        assert!(!args.contains_key("RBUILD_SURELY_UNSET_VARIABLE"));
    }

    #[test]
    fn stdout_outputs_are_found() {
        let specs = |list: &[&str]| -> Vec<rbuild_build::OutputSpec> {
            list.iter().map(|s| s.parse().unwrap()).collect()
        };
        assert_eq!(stdout_output(&specs(&["-"])), Some("tar"));
        assert_eq!(
            stdout_output(&specs(&["/out", "type=docker,dest=-"])),
            Some("docker")
        );
        assert_eq!(stdout_output(&specs(&["type=oci,dest=/x.tar"])), None);
    }

    #[test]
    fn labels_and_annotations_parse_as_buildx() {
        assert_eq!(parse_label("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_label("k"), Ok(("k".into(), String::new())));
        assert!(parse_label("=v").is_err());
        assert_eq!(
            parse_annotation("org.x=1"),
            Ok(("org.x".into(), "1".into()))
        );
        assert_eq!(
            parse_annotation("manifest:org.x=a:b"),
            Ok(("org.x".into(), "a:b".into()))
        );
        assert!(parse_annotation("index:org.x=1")
            .unwrap_err()
            .contains("not supported"));
        assert!(parse_annotation("novalue").is_err());
    }
}
