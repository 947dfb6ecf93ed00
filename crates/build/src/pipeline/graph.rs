//! Planning without building (`rbuild graph`): the request's Dockerfile read and parsed, its base
//! images resolved (from the store, else the registry) and the graph converted and checked, as a
//! build does before it solves; nothing runs and no snapshot is made.

use super::Pipeline;
use crate::error::{blocking, BuildError, DockerfileText};
use crate::input;
use crate::loaded::load;
use crate::options::{rfc3339, source_date_epoch};
use crate::request::BuildRequest;
use crate::vertices::InternalVertex;
use rbuild_frontend::{BuildPlan, ConvertOptions};
use rbuild_oci::Platform;
use std::collections::HashMap;
use std::path::PathBuf;

/// A planned build, in parts.
pub(crate) struct Planned {
    /// The frontend's plan.
    pub plan: BuildPlan,
    /// The Dockerfile's name and text.
    pub text: DockerfileText,
    /// The build platform.
    pub build_platform: Platform,
    /// The build context's directory.
    pub context: PathBuf,
    /// The named contexts' directories, by llb source name.
    pub named_dirs: HashMap<String, PathBuf>,
    /// A streamed context's temp dir (the context lives as long as it).
    pub temp: Option<tempfile::TempDir>,
}

/// Plans the build `request` describes; the request's outputs, cache, secrets, limits and tags
/// are not used.
pub(crate) async fn plan_only(request: BuildRequest) -> Result<Planned, BuildError> {
    let BuildRequest {
        state,
        context,
        dockerfile,
        build_args,
        source_date_epoch: epoch_fallback,
        target,
        platforms,
        network,
        entitlements,
        extra_hosts,
        no_cache_filter,
        named_contexts,
        pull,
        progress,
        registry,
        ..
    } = request;
    let mut loaded = load(&state, context, dockerfile, progress.as_ref()).await?;
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
    let epoch = source_date_epoch(&build_args, epoch_fallback);
    let (named, named_dirs) = blocking(move || input::named_contexts(&named_contexts)).await?;
    let opts = ConvertOptions {
        build_args,
        target,
        dockerfile_name: loaded.input.dockerfile_name.clone(),
        network,
        entitlements: entitlements.clone(),
        extra_hosts,
        context_excludes,
        created: epoch.map(rfc3339),
        named_contexts: named,
        no_cache_stages: no_cache_filter,
        platform: None,
        build_platform: Platform::host(),
    };
    let pipeline = Pipeline::open(state, progress, registry, &loaded, &opts, platforms).await?;
    let plan = pipeline.plan(&loaded, &opts, pull, &entitlements).await?;
    Ok(Planned {
        plan,
        text: loaded.text(),
        build_platform: opts.build_platform.normalized(),
        context: loaded.input.context.clone(),
        named_dirs,
        temp: loaded.input.take_temp(),
    })
}
