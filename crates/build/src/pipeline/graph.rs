//! Planning without building (`rbuild graph`): the request's Dockerfile read and parsed, its base
//! images resolved (from the store, else the registry) and the graph converted and checked, as a
//! build does before it solves; nothing runs and no snapshot is made.

use super::Pipeline;
use crate::error::{BuildError, DockerfileText};
use crate::request::BuildRequest;
use rbuild_frontend::BuildPlan;
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
    let super::prepare::Prepared {
        mut loaded,
        opts,
        named_dirs,
        ..
    } = super::prepare::prepare(
        &state,
        context,
        dockerfile,
        progress.as_ref(),
        super::prepare::FrontendInputs {
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
    Ok(Planned {
        plan,
        text: loaded.text(),
        build_platform: opts.build_platform.normalized(),
        context: loaded.input.context.clone(),
        named_dirs,
        temp: loaded.input.take_temp(),
    })
}
