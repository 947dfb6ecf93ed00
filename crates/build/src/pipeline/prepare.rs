//! What a build and a plan (`rbuild graph`) do before the pipeline opens: load the Dockerfile and
//! context, read `.dockerignore`, open the named contexts and assemble the frontend's options.

use crate::error::{blocking, BuildError};
use crate::input;
use crate::loaded::{load, Loaded};
use crate::options::{rfc3339, source_date_epoch};
use crate::progress::Progress;
use crate::request::{ContextSource, DockerfileSource};
use crate::spec::BuildContextSpec;
use crate::state::StateDir;
use crate::vertices::InternalVertex;
use rbuild_frontend::ConvertOptions;
use rbuild_llb::{Entitlements, ExtraHost, NetworkMode};
use rbuild_oci::Platform;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

/// The parts of a build request that shape the frontend's conversion.
pub(crate) struct FrontendInputs {
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// SOURCE_DATE_EPOCH when no build arg sets it.
    pub epoch_fallback: Option<i64>,
    /// `--target`.
    pub target: Option<String>,
    /// `--network`.
    pub network: NetworkMode,
    /// `--allow`.
    pub entitlements: Entitlements,
    /// `--add-host`.
    pub extra_hosts: Vec<ExtraHost>,
    /// `--no-cache-filter`.
    pub no_cache_filter: Vec<String>,
    /// `--build-context`.
    pub named_contexts: Vec<BuildContextSpec>,
}

/// A loaded build, ready for the pipeline.
pub(crate) struct Prepared {
    /// The Dockerfile and context.
    pub loaded: Loaded,
    /// The frontend's options.
    pub opts: ConvertOptions,
    /// The named contexts' directories, by llb source name.
    pub named_dirs: HashMap<String, PathBuf>,
    /// SOURCE_DATE_EPOCH, from the build arg or the caller's fallback.
    pub epoch: Option<i64>,
}

/// Loads the Dockerfile and context and assembles the frontend's options.
pub(crate) async fn prepare(
    state: &StateDir,
    context: ContextSource,
    dockerfile: DockerfileSource,
    progress: &dyn Progress,
    inputs: FrontendInputs,
) -> Result<Prepared, BuildError> {
    let started = Instant::now();
    let loaded = load(state, context, dockerfile, progress).await?;
    super::phase_done("load", started);
    let context_excludes = {
        let (context, path) = (
            loaded.input.context.clone(),
            loaded.input.dockerfile_path.clone(),
        );
        let vertex =
            InternalVertex::start(&progress.solver_sink(), "[internal] load .dockerignore");
        let excludes = blocking(move || Ok(input::read_dockerignore(&context, &path))).await?;
        vertex.done();
        excludes
    };
    // SOURCE_DATE_EPOCH (build arg or the caller's fallback, as BuildKit) clamps every timestamp;
    // without it the export takes the times of the cached results (not the clock).
    let epoch = source_date_epoch(&inputs.build_args, inputs.epoch_fallback);
    let named_contexts = inputs.named_contexts;
    let (named, named_dirs) = blocking(move || input::named_contexts(&named_contexts)).await?;
    let opts = ConvertOptions {
        build_args: inputs.build_args,
        target: inputs.target,
        dockerfile_name: loaded.input.dockerfile_name.clone(),
        network: inputs.network,
        entitlements: inputs.entitlements,
        extra_hosts: inputs.extra_hosts,
        context_excludes,
        created: epoch.map(rfc3339),
        named_contexts: named,
        no_cache_stages: inputs.no_cache_filter,
        platform: None,
        build_platform: Platform::host(),
    };
    Ok(Prepared {
        loaded,
        opts,
        named_dirs,
        epoch,
    })
}
