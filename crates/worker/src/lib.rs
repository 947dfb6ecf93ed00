//! Executes llb ops for the solver: implements [`rbuild_solver::Executor`] with the snapshotter
//! (filesystems), the sandbox (RUN), the registry (base images) and rbuild's own file operations
//! (COPY, ADD, WORKDIR). Cache keys of COPY/ADD from the build context include a content checksum
//! of exactly the selected paths (see [`checksum`]); `COPY --from` and bind mounts of other
//! stages count by the content they read from their source's result (see [`content_key`]).

pub mod checksum;
pub mod content_key;
mod context_keys;
mod debug;
pub use debug::{DebugOnFail, KeptRun};
pub mod dockerignore;
mod exec;
mod file_op;
pub use exec::{emulation_for, QEMU_DIR_ENV};
pub mod fsops;
mod glob;
mod http;
mod image;
pub use image::unpack_image;
pub mod mounts;
mod named;
pub mod remote_cache;
mod tables;
pub mod users;

pub use mounts::SecretSource;
pub use tables::UNPACKED;

use rbuild_llb::{Definition, Op, SourceOp};
use rbuild_oci::{Digest, Store};
use rbuild_registry::RegistryClient;
use rbuild_sandbox::{Limits, Sandbox};
use rbuild_snapshotter::{SnapshotId, Snapshotter};
use rbuild_solver::{
    CacheIndex, CacheKey, ContentDigest, ExecContext, Executor, Graph, KeyInput, LogStream,
    VertexId,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Errors of executing an op.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A RUN exited non-zero.
    #[error("process \"{command}\" did not complete successfully: exit code: {code}")]
    RunFailed {
        /// The command as BuildKit prints it.
        command: String,
        /// Exit code (128+signal for a signal).
        code: i32,
        /// The last lines of its output.
        tail: Vec<String>,
    },
    /// The OOM killer ended a RUN in its cgroup (`--memory`).
    #[error("process \"{command}\" was killed: out of memory{}", oom_limit(.limit))]
    OutOfMemory {
        /// The command as BuildKit prints it.
        command: String,
        /// The memory limit of the run, in bytes.
        limit: Option<u64>,
        /// The last lines of its output.
        tail: Vec<String>,
    },
    /// The sandbox could not start the process.
    #[error(transparent)]
    Sandbox(#[from] rbuild_sandbox::SandboxError),
    /// A snapshot operation failed.
    #[error(transparent)]
    Snapshot(#[from] rbuild_snapshotter::SnapshotError),
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] rbuild_registry::RegistryError),
    /// The content store failed.
    #[error(transparent)]
    Store(#[from] rbuild_oci::StoreError),
    /// A COPY/ADD source or destination problem.
    #[error("{op} failed: {source}")]
    File {
        /// COPY, ADD or WORKDIR.
        op: &'static str,
        /// The cause (names the path).
        #[source]
        source: std::io::Error,
    },
    /// Computing a context checksum failed.
    #[error("failed to compute cache key: {0}")]
    Checksum(std::io::Error),
    /// A user or group name is unknown.
    #[error("{0}")]
    User(String),
    /// An input had the wrong kind (a bug in the graph).
    #[error("invalid graph: {0}")]
    Graph(String),
    /// A blocking task was lost.
    #[error("internal task failed: {0}")]
    Join(String),
    /// An image layer could not be unpacked.
    #[error("unpacking layer {digest}: {message}")]
    Unpack {
        /// The layer blob.
        digest: Digest,
        /// What went wrong.
        message: String,
    },
    /// A `RUN --mount` could not be set up (e.g. a missing required secret).
    #[error("{0}")]
    Mount(String),
}

fn oom_limit(limit: &Option<u64>) -> String {
    match limit {
        Some(l) => format!(" (limit {})", rbuild_sandbox::human_bytes(*l)),
        None => String::new(),
    }
}

impl WorkerError {
    /// The last lines of a failed RUN's output (for the error report's box), if this is one.
    pub fn run_output_tail(&self) -> Option<&[String]> {
        match self {
            WorkerError::RunFailed { tail, .. } | WorkerError::OutOfMemory { tail, .. } => {
                Some(tail)
            }
            _ => None,
        }
    }
}

/// The result of a vertex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// A filesystem: the top snapshot of its chain (None = empty).
    Fs(Option<SnapshotId>),
    /// The build context directory.
    Context,
}

impl Value {
    /// The value as the cache index stores it (infallible): `fs:` and the top snapshot's id
    /// (nothing for the empty filesystem), or `context`.
    pub fn to_index_bytes(&self) -> Vec<u8> {
        match self {
            Value::Fs(top) => {
                let id = top.as_ref().map(|id| id.0.as_str()).unwrap_or("");
                [b"fs:", id.as_bytes()].concat()
            }
            Value::Context => b"context".to_vec(),
        }
    }

    /// Reads [`Value::to_index_bytes`]; `None` for anything else.
    pub fn from_index_bytes(bytes: &[u8]) -> Option<Value> {
        if bytes == b"context" {
            return Some(Value::Context);
        }
        let id = std::str::from_utf8(bytes.strip_prefix(b"fs:")?).ok()?;
        Some(Value::Fs(
            (!id.is_empty()).then(|| SnapshotId(id.to_string())),
        ))
    }
}

/// A vertex as the worker sees it.
#[derive(Debug, Clone)]
pub struct WorkVertex {
    /// The op.
    pub op: Op,
    /// Its llb digest.
    pub digest: Digest,
    /// For each input, whether it is the build context (COPY sources checksummed by content).
    pub context_inputs: Vec<bool>,
    /// The `.dockerignore` patterns of the build context input, if any.
    pub context_excludes: Vec<String>,
    /// The platform the op is for (`None`: the host's); in the cache key when set. A RUN for
    /// a foreign platform runs under emulation.
    pub platform: Option<rbuild_oci::Platform>,
}

/// The name of the main build context's local source; any other name is a named context
/// (`--build-context NAME=DIR`), served by [`Worker::with_named_contexts`].
pub const MAIN_CONTEXT: &str = "context";

/// Whether `op` is the main build context's source (read in place, never cached).
fn is_main_context(op: &Op) -> bool {
    matches!(op, Op::Source(SourceOp::Local { name, .. }) if name == MAIN_CONTEXT)
}

/// Converts an llb definition into the solver's graph; `ids[i]` is the solver id of vertex `i`.
pub fn graph_from_definition(def: &Definition) -> (Graph<WorkVertex>, Vec<VertexId>) {
    let mut graph = Graph::new();
    let mut ids = Vec::with_capacity(def.vertices.len());
    for (i, v) in def.vertices.iter().enumerate() {
        let context_inputs = v
            .inputs
            .iter()
            .map(|&inp| is_main_context(&def.vertices[inp].op))
            .collect();
        let context_excludes = v
            .inputs
            .iter()
            .find_map(|&inp| match &def.vertices[inp].op {
                Op::Source(SourceOp::Local { excludes, name }) if name == MAIN_CONTEXT => {
                    Some(excludes.clone())
                }
                _ => None,
            })
            .unwrap_or_default();
        let inputs = v.inputs.iter().map(|&inp| ids[inp]).collect();
        let vertex = WorkVertex {
            op: v.op.clone(),
            digest: def.digest(i).clone(),
            context_inputs,
            context_excludes,
            platform: v.platform.clone(),
        };
        ids.push(graph.add_vertex(vertex, v.name.clone(), inputs));
    }
    (graph, ids)
}

/// Everything a build needs to execute ops.
pub struct Worker {
    store: Store,
    snapshotter: Snapshotter,
    sandbox: Arc<Sandbox>,
    registry: RegistryClient,
    index: Option<CacheIndex>,
    context: Option<PathBuf>,
    named_contexts: Arc<HashMap<String, PathBuf>>,
    downloads: Arc<http::Downloads>,
    secrets: Arc<HashMap<String, SecretSource>>,
    ssh: Arc<HashMap<String, PathBuf>>,
    cache_mount_root: PathBuf,
    remote: Option<Arc<remote_cache::RemoteCache>>,
    limits: Arc<Limits>,
    /// The sandbox network of a RUN with the default network mode ([`Worker::with_default_network`]).
    default_network: rbuild_sandbox::Network,
    /// The context checksums of File vertices (by llb digest), computed once: by
    /// [`Worker::prefetch_context_keys`] ahead of the key phase, or by the key phase itself.
    context_keys: ContextKeys,
    /// Told of every vertex this worker runs and its result ([`Worker::with_on_executed`]).
    on_executed: Option<OnExecuted>,
    /// Told of base-image blob downloads ([`Worker::with_on_pull`]).
    on_pull: Option<OnPull>,
    /// What a failed RUN leads to ([`Worker::with_debug_on_fail`]).
    debugger: debug::Debugger,
}

/// A callback told of each executed vertex (its llb digest) and its result.
pub type OnExecuted = Arc<dyn Fn(&Digest, &Value) + Send + Sync>;

/// A callback told of a base image's pull (the image's reference as the build names it, and
/// what happened).
pub type OnPull = Arc<dyn Fn(&str, PullEvent<'_>) + Send + Sync>;

/// What a base image's pull reports while a FROM vertex runs.
#[derive(Debug, Clone, Copy)]
pub enum PullEvent<'a> {
    /// A layer blob's download went on.
    Bytes(&'a rbuild_registry::BlobProgress),
    /// A layer blob began to be extracted into its snapshot.
    Extracting(&'a Digest),
    /// A layer blob was extracted.
    Extracted(&'a Digest),
}

/// Per File vertex (llb digest): its context checksums, computed at most once.
type ContextKeys =
    Arc<std::sync::Mutex<HashMap<Digest, Arc<tokio::sync::OnceCell<Vec<ContentDigest>>>>>>;

impl Worker {
    /// A worker over the given parts; `cache_mounts` is the directory where
    /// `RUN --mount=type=cache` directories persist (the caller's state layout names it, e.g.
    /// `ROOT/cache-mounts-v1`). It has no cache index and no build context until
    /// [`Worker::with_index`] and [`Worker::with_context`] give them.
    pub fn new(
        store: Store,
        snapshotter: Snapshotter,
        sandbox: Sandbox,
        registry: RegistryClient,
        cache_mounts: PathBuf,
    ) -> Self {
        Worker {
            store,
            sandbox: Arc::new(sandbox),
            registry,
            index: None,
            context: None,
            named_contexts: Arc::new(HashMap::new()),
            downloads: Arc::new(http::Downloads::new()),
            secrets: Arc::new(HashMap::new()),
            ssh: Arc::new(HashMap::new()),
            cache_mount_root: cache_mounts,
            snapshotter,
            remote: None,
            context_keys: Arc::default(),
            limits: Arc::new(Limits::default()),
            default_network: rbuild_sandbox::Network::Private,
            on_executed: None,
            on_pull: None,
            debugger: debug::Debugger::default(),
        }
    }

    /// Calls `f` as base-image layers download (bytes per blob). `f` must return quickly.
    pub fn with_on_pull(mut self, f: OnPull) -> Self {
        self.on_pull = Some(f);
        self
    }

    /// Calls `f` after each vertex this worker runs (not for cache hits) with its llb digest
    /// and result, e.g. to export a layer while the next steps run. `f` must return quickly.
    pub fn with_on_executed(mut self, f: OnExecuted) -> Self {
        self.on_executed = Some(f);
        self
    }

    /// What to do when a RUN fails: open a debug shell in its sandbox, or keep its state.
    pub fn with_debug_on_fail(mut self, mode: DebugOnFail) -> Self {
        self.debugger = debug::Debugger::new(mode);
        self
    }

    /// The cache index: memoises context checksums and records base images' unpacked chains.
    pub fn with_index(mut self, index: Option<CacheIndex>) -> Self {
        self.index = index;
        self
    }

    /// The build context directory (the `context` source's files).
    pub fn with_context(mut self, context: Option<PathBuf>) -> Self {
        self.context = context;
        self
    }

    /// The directories of named local contexts (`--build-context NAME=DIR`), by source name.
    /// Such a source becomes a snapshot of the directory, keyed by its content.
    pub fn with_named_contexts(mut self, named: HashMap<String, PathBuf>) -> Self {
        self.named_contexts = Arc::new(named);
        self
    }

    /// Resource limits applied to every RUN (`--memory`, `--cpus`, `--ulimit`, ...). They are
    /// not part of the cache key: they do not change a successful result.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = Arc::new(limits);
        self
    }

    /// The network a RUN with the default network mode gets: the private network (the
    /// default, as BuildKit's), or the host's where no private one can be made (rootless in a
    /// container, as BuildKit's `--oci-worker-net=host`). Not part of the cache key: the graph
    /// still says "default".
    pub fn with_default_network(mut self, network: rbuild_sandbox::Network) -> Self {
        self.default_network = network;
        self
    }

    /// The build secrets (`RUN --mount=type=secret`), by id. Their values never enter the graph.
    pub fn with_secrets(mut self, secrets: HashMap<String, SecretSource>) -> Self {
        self.secrets = Arc::new(secrets);
        self
    }

    /// The forwarded SSH agent sockets (`RUN --mount=type=ssh`), by id.
    pub fn with_ssh(mut self, ssh: HashMap<String, PathBuf>) -> Self {
        self.ssh = Arc::new(ssh);
        self
    }

    /// An imported build cache (`--cache-from`), consulted when the local cache index misses.
    pub fn with_remote_cache(mut self, remote: Option<Arc<remote_cache::RemoteCache>>) -> Self {
        self.remote = remote;
        self
    }

    /// The snapshotter.
    pub fn snapshotter(&self) -> &Snapshotter {
        &self.snapshotter
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, WorkerError> + Send + 'static,
    ) -> Result<T, WorkerError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| WorkerError::Join(e.to_string()))?
    }

    fn fs_input(inputs: &[Value], i: usize) -> Result<Option<SnapshotId>, WorkerError> {
        match inputs.get(i) {
            Some(Value::Fs(id)) => Ok(id.clone()),
            other => Err(WorkerError::Graph(format!(
                "input {i} is not a filesystem: {other:?}"
            ))),
        }
    }

    /// Content checksums of the build-context paths a RUN's mounts use.
    async fn mount_key_extra(
        &self,
        vertex: &WorkVertex,
    ) -> Result<Vec<ContentDigest>, WorkerError> {
        let Op::Exec(exec) = &vertex.op else {
            return Ok(Vec::new());
        };
        let patterns = mounts::context_mount_patterns(exec, &vertex.context_inputs);
        if patterns.is_empty() {
            return Ok(Vec::new());
        }
        self.with_context_cache(vertex, "RUN --mount", move |cache, context| {
            let mut out = Vec::new();
            for p in &patterns {
                out.push(ContentDigest {
                    what: format!("context {p}"),
                    digest: cache
                        .checksum(context, p, false, true)
                        .map_err(WorkerError::Checksum)?,
                });
            }
            Ok(out)
        })
        .await
    }
}

/// What a vertex's cache key is made of: the op's versioned key encoding
/// ([`Op::cache_key_bytes`]: proxy variables and extra hosts' addresses are left out by
/// construction; network and security modes and extra host names count; resource limits are
/// not in the op at all), then `content` (context checksums of the COPY sources or RUN mounts
/// in op order, or a download's digest).
pub fn key_input(op: &Op, content: Vec<ContentDigest>) -> KeyInput {
    key_input_for(op, None, content)
}

/// [`key_input`] of an op for `platform` (`None`: the host's): a set platform's bytes
/// ([`rbuild_llb::platform_bytes`]) follow the op's encoding, so two platforms never share a
/// result while a host vertex keeps its key.
pub fn key_input_for(
    op: &Op,
    platform: Option<&rbuild_oci::Platform>,
    content: Vec<ContentDigest>,
) -> KeyInput {
    let mut op = op.cache_key_bytes();
    if let Some(p) = platform {
        op.extend_from_slice(&rbuild_llb::platform_bytes(p));
    }
    KeyInput { op, content }
}

impl Worker {
    /// Runs one vertex's op (see [`Executor::exec`]).
    async fn exec_op(
        &self,
        vertex: &WorkVertex,
        inputs: Vec<Value>,
        ctx: ExecContext,
    ) -> Result<Value, WorkerError> {
        match &vertex.op {
            Op::Source(SourceOp::Scratch) => Ok(Value::Fs(None)),
            Op::Source(SourceOp::Local { name, excludes }) if name != MAIN_CONTEXT => {
                self.named_snapshot(name, excludes).await
            }
            Op::Source(SourceOp::Local { .. }) => Ok(Value::Context),
            Op::Source(SourceOp::Image { reference, digest }) => {
                // Retries and waits of the pull show up as log lines of this vertex.
                let log = ctx.clone();
                let mut registry = self.registry.with_notices(move |n| {
                    log.log(LogStream::Stderr, n.to_string().as_bytes());
                });
                if let Some(on_pull) = self.on_pull.clone() {
                    let image = reference.clone();
                    registry = registry
                        .with_transfer_progress(move |p| on_pull(&image, PullEvent::Bytes(p)));
                }
                let on_extract = self.on_pull.clone().map(|on_pull| {
                    let image = reference.clone();
                    move |layer: &Digest, done: bool| {
                        on_pull(
                            &image,
                            match done {
                                false => PullEvent::Extracting(layer),
                                true => PullEvent::Extracted(layer),
                            },
                        )
                    }
                });
                image::unpack_image_reporting(
                    &self.store,
                    &self.snapshotter,
                    &registry,
                    self.index.as_ref(),
                    reference,
                    digest.as_ref(),
                    on_extract
                        .as_ref()
                        .map(|f| f as &(dyn Fn(&Digest, bool) + Send + Sync)),
                )
                .await
                .map(Value::Fs)
            }
            Op::Source(SourceOp::Http {
                url,
                checksum,
                filename,
            }) => {
                self.downloads
                    .materialize(
                        &self.snapshotter,
                        &vertex.digest,
                        url,
                        checksum.as_deref(),
                        filename,
                    )
                    .await
            }
            Op::Source(SourceOp::Inline { filename, content }) => {
                let snapshotter = self.snapshotter.clone();
                let (filename, content) = (filename.clone(), content.clone());
                Self::blocking(move || {
                    let active = snapshotter.prepare(None)?;
                    let path = active.upperdir().join(filename.trim_start_matches('/'));
                    let written = std::fs::write(&path, content.as_bytes()).and_then(|()| {
                        use std::os::unix::fs::PermissionsExt;
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                    });
                    if let Err(source) = written {
                        let _ = snapshotter.abort(active);
                        return Err(WorkerError::File { op: "COPY", source });
                    }
                    Ok(Value::Fs(Some(snapshotter.commit(active)?)))
                })
                .await
            }
            Op::Merge => self.run_merge(inputs).await,
            Op::Exec(exec) => {
                // A foreign platform's RUN runs under emulation (None: the build platform).
                let platform = vertex.platform.as_ref();
                self.run_exec(exec, inputs, ctx, &vertex.context_excludes, platform)
                    .await
            }
            Op::File(file) => self.run_file(file, inputs, &vertex.context_excludes).await,
        }
    }
}

impl Executor for Worker {
    type Vertex = WorkVertex;
    type Value = Value;
    type Error = WorkerError;

    async fn cache_key(
        &self,
        vertex: &WorkVertex,
        _inputs: &[CacheKey],
    ) -> Result<KeyInput, WorkerError> {
        if let Op::Source(SourceOp::Local { name, excludes }) = &vertex.op {
            if name != MAIN_CONTEXT {
                let content = self.named_key_extra(name, excludes).await?;
                return Ok(key_input_for(&vertex.op, vertex.platform.as_ref(), content));
            }
        }
        let mut content = self.file_key_extra(vertex).await?;
        content.extend(self.mount_key_extra(vertex).await?);
        Ok(key_input_for(&vertex.op, vertex.platform.as_ref(), content))
    }

    async fn exec(
        &self,
        vertex: &WorkVertex,
        inputs: Vec<Value>,
        ctx: ExecContext,
    ) -> Result<Value, WorkerError> {
        let value = self.exec_op(vertex, inputs, ctx).await?;
        if let Some(f) = &self.on_executed {
            f(&vertex.digest, &value);
        }
        Ok(value)
    }

    fn content_inputs(&self, vertex: &WorkVertex) -> Vec<usize> {
        content_key::content_inputs(&vertex.op, &vertex.context_inputs)
    }

    fn content_selector(&self, vertex: &WorkVertex, input: usize) -> Vec<u8> {
        content_key::selector(&vertex.op, input)
    }

    async fn content_digest(
        &self,
        vertex: &WorkVertex,
        input: usize,
        value: &Value,
    ) -> Result<ContentDigest, WorkerError> {
        self.input_content(vertex, input, value).await
    }

    fn encode(&self, value: &Value) -> Vec<u8> {
        value.to_index_bytes()
    }

    fn decode(&self, bytes: &[u8]) -> Option<Value> {
        let value = Value::from_index_bytes(bytes)?;
        match &value {
            Value::Fs(Some(id)) if !self.snapshotter.exists(id) => None,
            _ => Some(value),
        }
    }

    fn lookup_fallback(&self, key: &CacheKey) -> Option<Value> {
        let remote = self.remote.as_ref().filter(|r| r.has(key))?;
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let found = handle.block_on(remote.materialize(
            key,
            &self.store,
            &self.snapshotter,
            self.index.as_ref(),
        ));
        match found {
            Ok(Some(value)) => {
                if let Some(ix) = &self.index {
                    let _ = ix.put(key, &self.encode(&value));
                }
                Some(value)
            }
            Ok(None) => None,
            Err(e) => {
                remote.warn(format!("cache record {key}: {e}"));
                None
            }
        }
    }

    fn link_fallback(&self, link: &CacheKey) -> Option<CacheKey> {
        self.remote.as_ref()?.link(link)
    }

    fn cacheable(&self, vertex: &WorkVertex) -> bool {
        !is_main_context(&vertex.op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_the_index_bytes() {
        let values = [
            Value::Fs(None),
            Value::Fs(Some(SnapshotId("18ecb31ddd1cbace003e970001".into()))),
            Value::Context,
        ];
        for v in values {
            assert_eq!(Value::from_index_bytes(&v.to_index_bytes()), Some(v));
        }
        assert_eq!(Value::to_index_bytes(&Value::Fs(None)), b"fs:");
        for bad in [&b""[..], b"fs", b"ctx", b"fs:\xff"] {
            assert_eq!(Value::from_index_bytes(bad), None);
        }
    }
}
