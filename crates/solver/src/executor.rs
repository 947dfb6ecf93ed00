//! The trait the worker implements.

use crate::{CacheKey, ContentDigest, ExecContext, KeyInput};
use std::future::Future;

/// The ops of one build, implemented by the worker.
///
/// The solver calls these from spawned tokio tasks, so every returned future is `Send`; a
/// method may be written as `async fn` in an impl when its body is `Send`. `encode`, `decode`
/// and `cacheable` are synchronous; the solver runs `decode` on the blocking pool, so it may
/// touch the filesystem (e.g. check that a snapshot still exists).
pub trait Executor: Send + Sync + 'static {
    /// A vertex of the graph (an op).
    type Vertex: Send + Sync + 'static;
    /// The result of running a vertex (e.g. a snapshot reference).
    type Value: Clone + Send + Sync + 'static;
    /// The error of a failed vertex.
    type Error: std::error::Error + Send + Sync + 'static;

    /// What the vertex's cache key is made of: its op's versioned key encoding and the content
    /// digests it depends on. The solver hashes it with the inputs' keys
    /// ([`CacheKey::compute`]); `inputs` (in input order) are given for executors whose
    /// content digests depend on them. May do IO (e.g. checksum the build context).
    fn cache_key(
        &self,
        vertex: &Self::Vertex,
        inputs: &[CacheKey],
    ) -> impl Future<Output = Result<KeyInput, Self::Error>> + Send;

    /// The inputs (indexes into the vertex's inputs) that count by content rather than by key:
    /// their slot in the vertex's key is [`CacheKey::content_input`] of
    /// [`Executor::content_digest`], computed once the input is resolved (a cache hit or an
    /// execution), so an input rebuilt to the same content leaves the vertex's key unchanged
    /// (`COPY --from`, `RUN --mount=type=bind,from=`). Default: none.
    fn content_inputs(&self, vertex: &Self::Vertex) -> Vec<usize> {
        let _ = vertex;
        Vec::new()
    }

    /// What `vertex` selects from its content-keyed input `input` (e.g. the COPY's source
    /// patterns and rules), as stable bytes: with the input's key it names the content link that
    /// lets a later solve reuse the slot without resolving the input, so it must determine
    /// [`Executor::content_digest`] for a given input value.
    fn content_selector(&self, vertex: &Self::Vertex, input: usize) -> Vec<u8>;

    /// The digest of what `vertex` reads from its content-keyed input `input` (one of
    /// [`Executor::content_inputs`]), whose resolved value is `value`. Called only for those
    /// inputs; it must cover everything the vertex's result can depend on in that input.
    fn content_digest(
        &self,
        vertex: &Self::Vertex,
        input: usize,
        value: &Self::Value,
    ) -> impl Future<Output = Result<ContentDigest, Self::Error>> + Send;

    /// Runs the vertex on its inputs' values (in input order).
    fn exec(
        &self,
        vertex: &Self::Vertex,
        inputs: Vec<Self::Value>,
        ctx: ExecContext,
    ) -> impl Future<Output = Result<Self::Value, Self::Error>> + Send;

    /// Serialises a value for the cache index.
    fn encode(&self, value: &Self::Value) -> Vec<u8>;

    /// Loads a value from the index; `None` when it is no longer usable (e.g. its snapshot was
    /// removed), which counts as a miss.
    fn decode(&self, bytes: &[u8]) -> Option<Self::Value>;

    /// Consulted (on the blocking pool, like `decode`) when the cache index has no usable
    /// result for `key`: e.g. a remote build cache (`--cache-from`) that materialises the
    /// result. `None` (the default) is a miss.
    fn lookup_fallback(&self, key: &CacheKey) -> Option<Self::Value> {
        let _ = key;
        None
    }

    /// Consulted (on the blocking pool) when the cache index has no content link `link`
    /// ([`ContentLink`](crate::ContentLink)): e.g. an imported build cache that carries the
    /// exporting solve's links. Returns the slot; `None` (the default) resolves the input and
    /// digests its content.
    fn link_fallback(&self, link: &CacheKey) -> Option<CacheKey> {
        let _ = link;
        None
    }

    /// False for vertices that must not be read from the cache index (the default is true).
    /// Their results are still written to it.
    fn cacheable(&self, vertex: &Self::Vertex) -> bool {
        let _ = vertex;
        true
    }
}
