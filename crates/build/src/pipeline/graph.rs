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

/// Plans the build `request` describes: its plan, its Dockerfile and the build platform; the
/// request's outputs, cache, secrets, limits and tags are not used.
pub(crate) async fn plan_only(
    request: BuildRequest,
) -> Result<(BuildPlan, DockerfileText, Platform), BuildError> {
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
    let loaded = load(&state, context, dockerfile, progress.as_ref()).await?;
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
    let (named, _dirs) = blocking(move || input::named_contexts(&named_contexts)).await?;
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
    Ok((plan, loaded.text(), opts.build_platform.normalized()))
}
