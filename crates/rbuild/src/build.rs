//! `rbuild build` and `rbuild images`: turns the build flags into a [`BuildRequest`] for the
//! library (`rbuild_build`), runs it (canceled by SIGINT/SIGTERM from the solve on: while steps
//! run, layers and outputs are written, the cache is exported or the image pushed) and prints
//! the result; lists the store's images.

use crate::errors::Report;
use crate::{progress, BuildArgs, StoreArgs};
use indicatif::DecimalBytes;
use rbuild_build::{BuildRequest, ContextSource, DockerfileSource, StateDir};
use rbuild_oci::{Digest, Store};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The `--build-arg`s as a map: `K=V`, or a bare `K` taking its value from the environment.
fn parse_build_args(raw: &[String]) -> BTreeMap<String, String> {
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

/// Runs `rbuild build`.
pub async fn run(args: BuildArgs, store_args: &StoreArgs) -> Result<(), Report> {
    let state = StateDir::new(store_args.root_dir());
    let Some(context_arg) = args.context.clone() else {
        return Err(Report::new(
            "error: give a build context, e.g. `rbuild -t name:tag .` (see `rbuild --help`)",
        )
        .with_code(2));
    };
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
    request.tags = args.tags.clone();
    request.outputs = args.outputs.clone();
    request.push = args.push;
    request.cache_to = args.cache_to.clone();
    request.cache_from = args.cache_from.clone();
    request.secrets = args.secrets.clone();
    request.network = args.network.mode();
    request.entitlements = entitlements;
    request.extra_hosts = args.add_hosts.clone();
    request.limits = limits;
    request.no_cache = args.no_cache;
    request.pull = args.pull;
    request.progress = Arc::new(progress::CliProgress::new(args.progress));
    let result = rbuild_build::build_with_cancel(request, wait_for_signal()).await?;
    if result.pushed.is_some() {
        println!("{}", result.image.digest);
    }
    if let Some(path) = &args.metadata_file {
        crate::push::write_metadata(path, &result.metadata)?;
    }
    let flag = args.gc_keep_storage.clone();
    let _ =
        tokio::task::spawn_blocking(move || crate::prune::auto_gc(&state, flag.as_deref())).await;
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

/// Runs `rbuild images`: one line per tag with its digest and size.
pub fn images(store_args: &StoreArgs) -> Result<(), Report> {
    let state = StateDir::new(store_args.root_dir());
    if !state.has_store() {
        println!("{:<50} {:<20} {:>10}", "REPOSITORY:TAG", "DIGEST", "SIZE");
        return Ok(());
    }
    let store = Store::open(&state.store())
        .map_err(|e| Report::from_error("opening the image store", &e))?;
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
            DecimalBytes(size).to_string()
        );
    }
    Ok(())
}

fn short(d: &Digest) -> String {
    format!("sha256:{}", &d.hex()[..12])
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
}
