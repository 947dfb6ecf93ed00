//! Generic build scheduler: cache keys, deduplication, concurrent execution, progress events
//! and the persistent cache index.
//!
//! The solver knows nothing about Dockerfiles or llb. The worker implements [`Executor`] for
//! its concrete ops; the frontend builds a [`Graph`] of them; [`Solver::solve`] then works as
//! BuildKit does:
//!
//! 1. **Cache keys** are computed for every vertex the targets depend on, inputs first,
//!    independent vertices concurrently: the executor says what a key is made of
//!    ([`Executor::cache_key`] -> [`KeyInput`]), the solver hashes it with the inputs' keys
//!    ([`CacheKey::compute`], versioned by [`KEY_VERSION`]). Each vertex's key and its
//!    components are remembered in the index by the vertex's name, so that with `tracing` at
//!    debug level a miss says what changed since the last build (the op, which input, which
//!    content digest) and a hit is logged with its key.
//!    A vertex with content-keyed inputs ([`Executor::content_inputs`], e.g. `COPY --from`)
//!    takes, in those inputs' slots, the digest of what it reads from them
//!    ([`Executor::content_digest`], [`CacheKey::content_input`]). Each such edge settles as
//!    soon as its input's key is known: a link recorded by an earlier solve (the input's key
//!    and the vertex's [`Executor::content_selector`] -> the slot, [`ContentLink`]) gives the
//!    slot at once; otherwise the input is solved first (looked up, executed on a miss) and
//!    digested. So an input rebuilt to the same content leaves everything after it cached, and
//!    stages copied one after another still build concurrently.
//! 2. **Lazy results**: solving a vertex first looks its key up in the [`CacheIndex`] (unless
//!    [`SolveOptions::no_cache`] or [`Executor::cacheable`] says no). On a hit that
//!    [`Executor::decode`]s, the vertex is [`EventKind::Cached`] and nothing below it is run
//!    or even looked up. On a miss its inputs are solved concurrently, then it is executed
//!    (at most [`SolveOptions::max_parallel`] at once) and its result recorded under its key.
//! 3. **Dedupe**: vertices with equal cache keys share one lookup and one execution; one solve
//!    never executes a key twice. Across processes sharing an index, a key being executed is
//!    claimed ([`CacheIndex::claim`]): another solve of it waits, then reuses the result.
//! 4. **Failure** of one vertex cancels the solve: running executions are aborted, queued ones
//!    never start, and every needed vertex without a terminal event gets
//!    [`EventKind::Canceled`].
//!
//! Progress goes to a [`ProgressSink`] as [`Event`]s: each needed vertex gets exactly one
//! terminal event. A vertex is *not needed*, and gets no event at all, when a vertex depending
//! on it hit the cache, or reused the result of another vertex with the same cache key (e.g.
//! the second of two stages with the same `FROM` + `RUN`: its `RUN` is `Cached`, its `FROM`
//! gets nothing).
//!
//! The cache index ([`CacheIndex`]) is a redb file; every write is one atomic transaction, so
//! dropping a solve at any point leaves it consistent.

mod executor;
mod explain;
mod graph;
mod index;
mod key;
mod progress;
mod solve;

pub use executor::Executor;
pub use graph::{Graph, VertexId};
pub use index::{
    CacheError, CacheIndex, KeyClaim, ResultRecord, Table, TableEntry, DEFAULT_LOCK_TIMEOUT,
    IDLE_CLOSE, INDEX_FILE_NAME, TOUCH_GRANULARITY,
};
pub use key::{CacheKey, ContentDigest, ContentLink, KeyInput, KEY_VERSION};
pub use progress::{Event, EventKind, ExecContext, LogStream, ProgressSink};
pub use solve::{SolveError, SolveOptions, Solver};
