//! The rbuild build pipeline as a library: a [`BuildRequest`] in (context, Dockerfile, build
//! args, target, outputs, cache import/export, secrets, RUN network and limits, progress), a
//! [`BuildResult`] out (image and config digests, per-output results, buildx metadata), typed
//! [`BuildError`]s on failure. This is what the `rbuild` CLI drives and what another program
//! embeds to build Dockerfiles.
//!
//! The pipeline: Dockerfile -> `rbuild_frontend` (llb + image config; base images are resolved
//! here, concurrently, between `base_images` and `convert`) -> `rbuild_solver` with the
//! `rbuild_worker` executor (snapshots, sandboxed RUNs, cache index) -> `rbuild_exporter` (layers,
//! image, outputs, cache) -> `rbuild_registry` (push). The state root's layout is [`StateDir`].
//! The library never prints: progress goes to the caller's [`Progress`]; each phase's time is
//! logged with `tracing` at debug level. Registry credentials and options come from the
//! request's [`RegistryClient`] ([`BuildRequest::registry`]), else from docker's config.json and
//! the `RBUILD_*` environment. RUN limits set by an embedder should pass
//! [`Limits::validate`] (docker's checks) first, as the CLI's do.
//!
//! RUN steps execute in a sandbox that re-executes the current program as a helper, so a program
//! that builds must call [`helper_main_if_requested`] first thing in `main`. Building needs root
//! (namespaces, overlayfs), or rootless mode: the program calls
//! `rbuild_sandbox::rootless::enter_if_needed` before starting threads, as the CLI does.
//!
//! # Example
//!
//! Build `FROM scratch` + `COPY` into an OCI layout directory:
//!
//! ```no_run
//! use rbuild_build::{build, BuildRequest, ContextSource, OutputSpec, StateDir};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let context = std::env::temp_dir().join("hello-context");
//! std::fs::create_dir_all(&context)?;
//! std::fs::write(context.join("hello.txt"), "hello\n")?;
//! std::fs::write(
//!     context.join("Dockerfile"),
//!     "FROM scratch\nCOPY hello.txt /hello.txt\n",
//! )?;
//!
//! let mut request = BuildRequest::new(
//!     StateDir::new("/var/lib/rbuild"),
//!     ContextSource::Dir(context),
//! );
//! request.tags = vec!["example/hello:1".to_string()];
//! let output: OutputSpec = "type=oci,dest=/tmp/hello-layout,tar=false".parse()?;
//! request.outputs.push(output);
//!
//! let result = build(request).await?;
//! println!("image {} (config {})", result.digest(), result.config_digest);
//! # Ok(())
//! # }
//! # fn main() {
//! #     rbuild_build::helper_main_if_requested();
//! #     let _ = run;
//! # }
//! ```

mod cache_io;
mod cancel;
pub mod debug;
pub mod docker_load;
mod eager;
mod error;
mod export;
pub mod gc;
pub mod graph;
pub mod images;
pub mod import;
pub mod info;
mod input;
mod kept;
pub mod lint;
mod loaded;
mod options;
mod pipeline;
mod platforms;
mod progress;
mod pull;
mod push;
mod request;
mod resolve;
pub mod spec;
mod state;
mod vertices;

#[doc(hidden)]
pub use error::{chain, solve_report};
pub use error::{
    BoxError, BuildError, DockerfileError, DockerfileText, InputError, Lines, SolveFailure,
};
pub use info::{engine_info, EngineInfo};
pub use pipeline::{build, build_with_cancel};
pub use progress::{BuildEvent, Progress, PushSummary, Silent};
pub use pull::{
    image_for_platform, pull_image, pull_image_platforms, stored_image_for_platform, Pulled,
    PulledLayer,
};
pub use push::{
    metadata, push_image, push_names, ImageMetadata, MetadataDescriptor, MetadataPlatform,
    PushedImage,
};
pub use rbuild_exporter::{LayerAction, LayerProgress};
/// The registry client a [`BuildRequest`] may carry, and its options.
pub use rbuild_registry::{ClientOptions, Credentials, RegistryClient, RegistryError};
/// The RUN resource limits of a [`BuildRequest`] and docker's checks of them.
pub use rbuild_sandbox::{Limits, LimitsError, LimitsWarning};
pub use rbuild_snapshotter::Backend as SnapshotBackend;
/// The solver's per-vertex progress types a [`Progress`] implementation receives.
pub use rbuild_solver::{
    Event as VertexEvent, EventKind as VertexEventKind, LogStream, ProgressSink,
};
pub use request::{
    BuildRequest, BuildResult, ContextSource, DockerfileSource, OutputResult, PlatformManifest,
};
pub use spec::{
    parse_tag, BuildContextSource, BuildContextSpec, CacheFromSpec, CacheLocation, CacheToSpec,
    CompressionSpec, Output, OutputSpec, SecretSpec, SpecError, SshSpec,
};
pub use state::{Bucket, StateDir};

/// Runs the sandbox helper and exits when this process was started as one; returns otherwise.
/// Call it first thing in `main` of any program that builds.
pub fn helper_main_if_requested() {
    rbuild_sandbox::helper_main_if_requested();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An embedder can spawn a build on a multi-threaded runtime.
    #[test]
    fn the_build_future_is_send() {
        fn is_send<T: Send>(_: &T) {}
        let request = BuildRequest::new(
            StateDir::new("/nonexistent"),
            ContextSource::Dir(".".into()),
        );
        let future = build(request);
        is_send(&future);
    }
}
