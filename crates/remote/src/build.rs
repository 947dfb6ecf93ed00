//! One `rbuild build --builder ADDR`: the build planned locally as `rbuild graph` plans it (in
//! a scratch state root, so rbuild's store is not touched), converted to BuildKit LLB, solved on
//! the daemon with rbuild as the client-side frontend, the context served by the session, the
//! status rendered through the request's progress, the image exported by BuildKit's exporter.
//! Daemon errors keep BuildKit's message and gain the Dockerfile excerpt of the failed step.

use crate::address::{Builder, TlsOptions};
use crate::proto::control::{CacheOptions, CacheOptionsEntry, SolveRequest};
use crate::session::{LocalDir, OutputTarget, SessionConfig};
use crate::status::StatusMapper;
use crate::{BuildFailure, Daemon, FrontendBuild, RemoteError};
use rbuild_build::graph::{plan_graph, GraphError, GraphPlan};
use rbuild_build::CacheLocation;
use rbuild_build::{solve_report, StateDir};
use rbuild_build::{BuildError, BuildRequest, DockerfileText, Lines, Output};
use rbuild_buildkit::LlbError;
use rbuild_llb::Entitlement;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What a remote build produced.
#[derive(Debug, Clone)]
pub struct RemoteResult {
    /// The exporter's answer (`containerimage.digest`, `containerimage.config.digest`, ...).
    pub exporter_response: BTreeMap<String, String>,
}

impl RemoteResult {
    /// The image's digest as the exporter reported it (the image ID for dockerd's exporter).
    pub fn digest(&self) -> Option<&str> {
        self.exporter_response
            .get("containerimage.digest")
            .map(String::as_str)
    }
}

/// Why a remote build failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteBuildError {
    /// Planning failed (the Dockerfile, its base images, the inputs): the local build's error.
    #[error(transparent)]
    Plan(#[from] BuildError),
    /// The daemon could not be reached or talked to.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The solve failed: BuildKit's report, with the Dockerfile excerpt of the failed step.
    #[error("{0}")]
    Solve(String),
    /// Something a remote build does not do (yet).
    #[error("{0}")]
    Unsupported(String),
}

/// `--cache-to`/`--cache-from` as BuildKit's cache options (registry caches: `ref`, `mode`).
fn cache_options(
    to: &[rbuild_build::CacheToSpec],
    from: &[rbuild_build::CacheFromSpec],
) -> Result<CacheOptions, RemoteBuildError> {
    let registry = |location: &CacheLocation| match location {
        CacheLocation::Registry(reference) => Ok(reference.clone()),
        CacheLocation::Local { .. } => Err(RemoteBuildError::Unsupported(
            "a remote build imports and exports registry caches only (type=registry)".into(),
        )),
    };
    let mut options = CacheOptions::default();
    for spec in to {
        let mut attrs = HashMap::new();
        attrs.insert("ref".to_string(), registry(&spec.location)?);
        attrs.insert(
            "mode".to_string(),
            if spec.max { "max" } else { "min" }.to_string(),
        );
        options.exports.push(CacheOptionsEntry {
            r#type: "registry".into(),
            attrs,
        });
    }
    for spec in from {
        let mut attrs = HashMap::new();
        attrs.insert("ref".to_string(), registry(&spec.location)?);
        options.imports.push(CacheOptionsEntry {
            r#type: "registry".into(),
            attrs,
        });
    }
    Ok(options)
}

/// True for an output that names standard output (`dest=-`).
fn target_is_stdout(target: &OutputTarget) -> bool {
    match target {
        OutputTarget::Dir(p) | OutputTarget::File(p) => p.as_os_str() == "-",
    }
}

/// The names BuildKit's capabilities go by in the refusal message.
fn feature_of(cap: &str) -> &str {
    match cap {
        "mergeop" => "COPY --link",
        "file.copy.includeexcludepatterns" => "COPY --exclude",
        "file.copy.modestring" => "COPY --chmod with a symbolic mode",
        "exec.mount.tmpfs.size" => "RUN --mount=type=tmpfs,size=",
        "exec.secretenv" => "RUN --mount=type=secret,env=",
        other => other,
    }
}

/// Builds `request` on `builder`.
pub async fn build(
    mut request: BuildRequest,
    builder: &Builder,
    tls: &TlsOptions,
) -> Result<RemoteResult, RemoteBuildError> {
    if request.platforms.len() > 1 {
        return Err(RemoteBuildError::Unsupported(
            "a remote build builds one platform: give one --platform".into(),
        ));
    }
    let mut names = request.tags.clone();
    let mut push = request.push;
    // BuildKit 0.8 takes one exporter per solve: dockerd's image store, or one output.
    // dockerd's image store (`moby`), or buildkitd's image exporter.
    let image_exporter = match builder {
        Builder::Docker { .. } => "moby",
        _ => "image",
    };
    let mut exporter = (image_exporter.to_string(), None::<OutputTarget>);
    let mut exporter_names = Vec::new();
    for output in &request.outputs {
        let (kind, target) = match &output.output {
            Output::Image {
                names: more,
                push: p,
            } => {
                names.extend(more.iter().cloned());
                push |= *p;
                continue;
            }
            Output::Local { dest } => ("local", OutputTarget::Dir(dest.clone())),
            Output::Tar { dest } => ("tar", OutputTarget::File(dest.clone())),
            Output::Oci {
                dest,
                tar: true,
                names,
            } => {
                exporter_names.clone_from(names);
                ("oci", OutputTarget::File(dest.clone()))
            }
            Output::Docker { dest, names } => {
                exporter_names.clone_from(names);
                ("docker", OutputTarget::File(dest.clone()))
            }
            Output::Oci { tar: false, .. } => {
                return Err(RemoteBuildError::Unsupported(
                    "a remote build writes an OCI layout as a tar only (tar=false is local)".into(),
                ))
            }
        };
        if exporter.1.is_some() {
            return Err(RemoteBuildError::Unsupported(
                "a remote build writes one --output".into(),
            ));
        }
        if target_is_stdout(&target) {
            return Err(RemoteBuildError::Unsupported(
                "a remote build writes its output to a file or directory, not to stdout".into(),
            ));
        }
        exporter = (kind.to_string(), Some(target));
    }
    let ssh: BTreeMap<String, PathBuf> = request
        .ssh
        .iter()
        .map(|s| (s.id.clone(), s.socket.clone()))
        .collect();
    let cache = cache_options(&request.cache_to, &request.cache_from)?;
    let specs = request.secrets.clone();
    let secrets = tokio::task::spawn_blocking(move || {
        let mut secrets = BTreeMap::new();
        for spec in &specs {
            let value = read_secret(&spec.source).map_err(|e| {
                RemoteBuildError::Unsupported(format!("reading secret {}: {e}", spec.id))
            })?;
            secrets.insert(spec.id.clone(), value);
        }
        Ok::<_, RemoteBuildError>(secrets)
    })
    .await
    .map_err(|e| RemoteBuildError::Plan(BuildError::Task(e.to_string())))??;
    let mut entitlements = Vec::new();
    if request.entitlements.allows(Entitlement::NetworkHost) {
        entitlements.push("network.host".to_string());
    }
    if request.entitlements.allows(Entitlement::SecurityInsecure) {
        entitlements.push("security.insecure".to_string());
    }
    let progress = request.progress.clone();
    let no_cache = request.no_cache;
    // Planning resolves base images (and unpacks a streamed context); a scratch root, alive
    // until the solve ends, keeps rbuild's store out of it.
    let scratch = tempfile::tempdir().map_err(|e| {
        RemoteBuildError::Plan(BuildError::step("creating a scratch state root", e))
    })?;
    request.state = StateDir::new(scratch.path());
    let mut plan = plan_graph(request).await?;
    if no_cache {
        // `--no-cache`: every op solved without the daemon's cache (`ignore_cache`).
        plan.plan.no_cache = (0..plan.plan.definition.vertices.len()).collect();
    }

    let daemon = Daemon::connect(builder, tls).await?;
    let mut config = SessionConfig {
        output: exporter.1.clone(),
        ssh,
        secrets,
        credentials: Some(Arc::new(docker_credentials)),
        ..Default::default()
    };
    // The context and the named contexts that are directories, under their local sources'
    // names; each source carries its `.dockerignore` patterns, which the daemon sends back.
    for (name, path) in &plan.local_dirs {
        config.dirs.insert(
            name.clone(),
            LocalDir {
                path: path.clone(),
                excludes: Vec::new(),
            },
        );
    }
    let shared_key = blake3::hash(
        plan.local_dirs
            .get("context")
            .map(|p| p.as_os_str().as_encoded_bytes())
            .unwrap_or_default(),
    )
    .to_hex()[..32]
        .to_string();
    let (session, _session_task) = daemon.open_session("rbuild", &shared_key, config).await?;
    let llb = match plan.to_llb(Some(session.clone())) {
        Ok(llb) => llb,
        // Newer Dockerfile features with no LLB form in the protocol rbuild speaks (COPY
        // --parents): refused with the instruction's excerpt, before anything is solved.
        Err(GraphError::Llb(LlbError::NoLlbForm { vertex, what })) => {
            let file = DockerfileText {
                name: plan.dockerfile_name.clone(),
                source: plan.dockerfile.clone(),
            };
            let at = plan
                .plan
                .definition
                .vertices
                .get(vertex)
                .and_then(|v| v.source.as_ref())
                .map(|s| Lines {
                    start: s.start_line,
                    end: s.end_line,
                });
            let message = format!("the daemon's BuildKit is too old for {what}");
            return Err(RemoteBuildError::Solve(solve_report(
                &file, at, &message, None,
            )));
        }
        Err(e) => {
            return Err(RemoteBuildError::Plan(BuildError::step(
                "converting to BuildKit LLB",
                e,
            )))
        }
    };
    let image_config = serde_json::to_vec(&plan.plan.config)
        .map_err(|e| RemoteBuildError::Plan(BuildError::step("encoding the image config", e)))?;

    let mut exporter_attrs = HashMap::new();
    if exporter.0 != image_exporter && exporter_names.is_empty() {
        exporter_names.clone_from(&names);
    }
    let named = if exporter.0 == image_exporter {
        &names
    } else {
        &exporter_names
    };
    if !named.is_empty() && exporter.0 != "local" && exporter.0 != "tar" {
        exporter_attrs.insert("name".to_string(), named.join(","));
    }
    if push && image_exporter == "image" {
        exporter_attrs.insert("push".to_string(), "true".to_string());
    }
    let request = SolveRequest {
        session: session.clone(),
        exporter: exporter.0.clone(),
        exporter_attrs,
        entitlements,
        cache: Some(cache.clone()),
        ..Default::default()
    };
    let needed: BTreeMap<&str, Option<usize>> = llb
        .ops
        .iter()
        .flat_map(|op| op.caps.iter().map(move |c| (*c, op.vertex)))
        .collect();
    let check_caps = |caps: &BTreeSet<String>| -> Result<(), String> {
        let missing: Vec<&str> = needed
            .keys()
            .filter(|c| !caps.contains(**c))
            .map(|c| feature_of(c))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the daemon's BuildKit is too old for {}",
                missing.join(", ")
            ))
        }
    };
    let mut metadata = HashMap::new();
    metadata.insert("containerimage.config".to_string(), image_config);
    let mapper = Arc::new(Mutex::new(StatusMapper::new(progress.solver_sink())));
    let status_mapper = mapper.clone();
    let solved = daemon
        .solve_frontend(
            request,
            FrontendBuild {
                definition: llb.to_bytes(),
                metadata,
                cache_imports: cache
                    .imports
                    .iter()
                    .map(|e| crate::proto::gateway::CacheOptionsEntry {
                        r#type: e.r#type.clone(),
                        attrs: e.attrs.clone(),
                    })
                    .collect(),
                check_caps: &check_caps,
            },
            move |status| {
                if let Ok(mut m) = status_mapper.lock() {
                    m.update(status);
                }
            },
        )
        .await;
    match solved {
        Ok(response) => {
            if let (true, "moby", Builder::Docker { socket }) = (push, exporter.0.as_str(), builder)
            {
                // dockerd's exporter names the image; dockerd pushes it (buildx's docker driver).
                for name in &names {
                    push_from_dockerd(socket, name).await?;
                }
            }
            Ok(RemoteResult {
                exporter_response: response.exporter_response.into_iter().collect(),
            })
        }
        Err(failure) => {
            let failed = mapper.lock().ok().and_then(|m| m.failed.clone());
            Err(report(&plan, &llb, failure, failed, &needed))
        }
    }
}

/// The user's report of a failed remote solve: BuildKit's message with the excerpt of the step
/// that failed (or, for a refusal, of the first step that needs what the daemon lacks).
fn report(
    plan: &GraphPlan,
    llb: &rbuild_buildkit::Llb,
    failure: BuildFailure,
    failed: Option<(String, String, String)>,
    needed: &BTreeMap<&str, Option<usize>>,
) -> RemoteBuildError {
    let file = DockerfileText {
        name: plan.dockerfile_name.clone(),
        source: plan.dockerfile.clone(),
    };
    let lines_of = |vertex: Option<usize>| -> Option<Lines> {
        let source = plan
            .plan
            .definition
            .vertices
            .get(vertex?)?
            .source
            .as_ref()?;
        Some(Lines {
            start: source.start_line,
            end: source.end_line,
        })
    };
    match failure {
        BuildFailure::Refused(message) => {
            let at = needed
                .iter()
                .filter(|(cap, _)| message.contains(feature_of(cap)))
                .find_map(|(_, v)| lines_of(*v));
            RemoteBuildError::Solve(solve_report(&file, at, &message, None))
        }
        BuildFailure::Remote(RemoteError::Daemon { message, .. }) => {
            // BuildKit's vertex digest is the converted op's digest; the name is the fallback.
            let at = failed.as_ref().and_then(|(digest, name, _)| {
                llb.ops
                    .iter()
                    .find(|op| &op.digest == digest)
                    .or_else(|| llb.ops.iter().find(|op| &op.name == name))
                    .and_then(|op| lines_of(op.vertex))
            });
            RemoteBuildError::Solve(solve_report(&file, at, &message, None))
        }
        BuildFailure::Remote(other) => RemoteBuildError::Remote(other),
    }
}

/// Pushes `name` from dockerd with the credentials docker's config holds for its registry.
async fn push_from_dockerd(socket: &std::path::Path, name: &str) -> Result<(), RemoteError> {
    let host = name.split('/').next().unwrap_or_default().to_string();
    let host = if name.contains('/')
        && (host.contains('.') || host.contains(':') || host == "localhost")
    {
        host
    } else {
        "docker.io".to_string()
    };
    let server = host.clone();
    let creds =
        tokio::task::spawn_blocking(move || rbuild_registry::docker_config_credential(&host))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
    let auth = match creds {
        Some((user, secret)) if !user.is_empty() => serde_json::json!({
            "username": user, "password": secret, "serveraddress": server,
        }),
        Some((_, token)) => serde_json::json!({ "identitytoken": token, "serveraddress": server }),
        None => serde_json::json!({}),
    };
    crate::transport::docker_push(socket, name, &auth.to_string()).await
}

/// A secret's bytes from its file or environment variable.
fn read_secret(source: &rbuild_worker::SecretSource) -> std::io::Result<Vec<u8>> {
    match source {
        rbuild_worker::SecretSource::File(path) => std::fs::read(path),
        rbuild_worker::SecretSource::Env(name) => std::env::var(name)
            .map(String::into_bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::NotFound, e)),
    }
}

/// Registry credentials from docker's config (and its credential helpers), for the session's
/// auth provider.
fn docker_credentials(host: &str) -> Result<Option<(String, String)>, String> {
    rbuild_registry::docker_config_credential(host).map_err(|e| e.to_string())
}
