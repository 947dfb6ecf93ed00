//! The typed contract of a build: what goes in ([`BuildRequest`]: context, Dockerfile, args,
//! target, outputs, caches, secrets, RUN limits and network, progress) and what comes out
//! ([`BuildResult`]: the image's digests, per-output results, buildx-style metadata).

use crate::progress::{Progress, PushSummary, Silent};
use crate::push::ImageMetadata;
use crate::spec::{
    BuildContextSpec, CacheFromSpec, CacheToSpec, Output, OutputSpec, SecretSpec, SshSpec,
};
use crate::state::StateDir;
use rbuild_llb::{Entitlements, ExtraHost, NetworkMode};
use rbuild_oci::{Descriptor, Digest, Platform};
use rbuild_registry::RegistryClient;
use rbuild_sandbox::Limits;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the build context comes from.
pub enum ContextSource {
    /// A directory.
    Dir(PathBuf),
    /// A stream (standard input for `docker build -`): a tar archive, possibly gzip-compressed,
    /// or a bare Dockerfile with an empty context. It is unpacked under the state root's `tmp`.
    Stream(Box<dyn Read + Send>),
}

/// Where the Dockerfile comes from.
pub enum DockerfileSource {
    /// `Dockerfile` in the context.
    Default,
    /// A path (relative to the working directory, or inside a streamed context's archive).
    Path(PathBuf),
    /// A stream (standard input for `-f -`).
    Stream(Box<dyn Read + Send>),
}

/// Everything one build needs. Made with [`BuildRequest::new`], then its fields set.
#[non_exhaustive]
pub struct BuildRequest {
    /// The state root (image store, snapshots, cache index, cache mounts).
    pub state: StateDir,
    /// The build context.
    pub context: ContextSource,
    /// The Dockerfile.
    pub dockerfile: DockerfileSource,
    /// `--build-arg`s, already resolved to values.
    pub build_args: BTreeMap<String, String>,
    /// `SOURCE_DATE_EPOCH` when no build arg of that name is given (e.g. from the environment).
    pub source_date_epoch: Option<i64>,
    /// The stage to build (the last one when `None`).
    pub target: Option<String>,
    /// The target platforms (`--platform`); empty: the host's. More than one builds every
    /// platform in one solve and stores an image index.
    pub platforms: Vec<Platform>,
    /// `-t` names; the image is tagged with each in the store.
    pub tags: Vec<String>,
    /// `--label`s added to the image config's labels (over the Dockerfile's).
    pub labels: BTreeMap<String, String>,
    /// `--annotation`s of the image manifest.
    pub annotations: BTreeMap<String, String>,
    /// `--output`s.
    pub outputs: Vec<OutputSpec>,
    /// Push the image to the registries of `tags` after the build.
    pub push: bool,
    /// Blobs uploaded at once when pushing.
    pub push_jobs: usize,
    /// `--cache-to`s.
    pub cache_to: Vec<CacheToSpec>,
    /// `--cache-from`s (the first readable one is used).
    pub cache_from: Vec<CacheFromSpec>,
    /// `--secret`s.
    pub secrets: Vec<SecretSpec>,
    /// `--ssh` agent sockets (`RUN --mount=type=ssh`).
    pub ssh: Vec<SshSpec>,
    /// The network of RUN steps without `--network`.
    pub network: NetworkMode,
    /// The granted entitlements (`--allow`).
    pub entitlements: Entitlements,
    /// `--add-host` entries of every RUN.
    pub extra_hosts: Vec<ExtraHost>,
    /// Resource limits of every RUN (not part of cache keys).
    pub limits: Limits,
    /// The engine's sandbox settings (process sandbox, default RUN network), as whoever runs
    /// rbuild chose them for the place it runs in (`EngineSettings::from_env`); not part of
    /// cache keys.
    pub engine: rbuild_sandbox::settings::EngineSettings,
    /// Ignore the cache.
    pub no_cache: bool,
    /// Stages solved without the cache, with every step that depends on them
    /// (`--no-cache-filter`), by name or number.
    pub no_cache_filter: Vec<String>,
    /// Named contexts (`--build-context`); a later one of the same name wins.
    pub named_contexts: Vec<BuildContextSpec>,
    /// Resolve base image tags in their registries even when the store has them.
    pub pull: bool,
    /// Where progress goes.
    pub progress: Arc<dyn Progress>,
    /// The registry client for base images, `--cache-from`/`--cache-to` and the push (its
    /// credentials, CAs, schemes, timeouts: [`RegistryClient::with_options`]). `None`:
    /// [`RegistryClient::new`] (docker's config.json and the `RBUILD_*` environment).
    pub registry: Option<RegistryClient>,
    /// What a failed RUN leads to: nothing more, a debug shell in its sandbox, or keeping its
    /// state for `rbuild debug ID` (`--debug-on-fail`).
    pub debug_on_fail: crate::debug::DebugMode,
}

impl BuildRequest {
    /// A request to build `context` (its `Dockerfile`) under `state`, with every option at its
    /// default and no progress reporting.
    pub fn new(state: StateDir, context: ContextSource) -> BuildRequest {
        BuildRequest {
            state,
            context,
            dockerfile: DockerfileSource::Default,
            build_args: BTreeMap::new(),
            source_date_epoch: None,
            target: None,
            platforms: Vec::new(),
            tags: Vec::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            outputs: Vec::new(),
            push: false,
            push_jobs: 3,
            cache_to: Vec::new(),
            cache_from: Vec::new(),
            secrets: Vec::new(),
            ssh: Vec::new(),
            network: NetworkMode::Default,
            entitlements: Entitlements::default(),
            extra_hosts: Vec::new(),
            limits: Limits::default(),
            engine: rbuild_sandbox::settings::EngineSettings::default(),
            no_cache: false,
            no_cache_filter: Vec::new(),
            named_contexts: Vec::new(),
            pull: false,
            progress: Arc::new(Silent),
            registry: None,
            debug_on_fail: crate::debug::DebugMode::Off,
        }
    }
}

/// What one `--output` produced.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OutputResult {
    /// The output as requested.
    pub output: Output,
    /// The names it was written (or tagged) with, normalised where the store tags.
    pub names: Vec<String>,
    /// The manifest an OCI or docker archive holds (its layers compressed as the output asks,
    /// so it differs from the store's uncompressed one); None for other outputs.
    pub manifest: Option<Descriptor>,
}

/// One platform's image of a multi-platform build.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PlatformManifest {
    /// The platform.
    pub platform: Platform,
    /// Its image manifest in the store (the platform in the descriptor).
    pub manifest: Descriptor,
    /// Its config's digest.
    pub config_digest: Digest,
}

/// The result of a build.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BuildResult {
    /// The image's descriptor in the store: its manifest, or for a multi-platform build its
    /// image index.
    pub image: Descriptor,
    /// The image config's digest (the first platform's for a multi-platform build).
    pub config_digest: Digest,
    /// Each platform's manifest of a multi-platform build, in the order asked (empty for a
    /// single-platform build).
    pub manifests: Vec<PlatformManifest>,
    /// Every name of the image (tags, then image outputs' names), normalised.
    pub names: Vec<String>,
    /// One entry per requested output, in order.
    pub outputs: Vec<OutputResult>,
    /// The push, when one was asked for.
    pub pushed: Option<PushSummary>,
    /// buildx's `--metadata-file` document for this build.
    pub metadata: ImageMetadata,
    /// How many steps the solve executed; 0 when every step came from the cache (the root then
    /// grew by no snapshot, so the automatic garbage collection can be skipped).
    pub executed: usize,
}

impl BuildResult {
    /// The image (manifest) digest.
    pub fn digest(&self) -> &Digest {
        &self.image.digest
    }
}
