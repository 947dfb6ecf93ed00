//! The scheduler.

mod keys;

use crate::graph::Node;
use crate::progress::{event, Gate};
use crate::{
    CacheError, CacheIndex, CacheKey, ContentDigest, ContentLink, Event, EventKind, ExecContext,
    Executor, Graph, KeyInput, ProgressSink, VertexId,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinError, JoinSet};
use tracing::debug;

/// Why a solve failed.
#[derive(Debug, thiserror::Error)]
pub enum SolveError<E: std::error::Error + 'static> {
    /// A vertex's execution failed.
    #[error("{name} failed")]
    Exec {
        /// The failing vertex (with equal cache keys, the one that ran).
        vertex: VertexId,
        /// Its display name.
        name: String,
        /// The executor's error.
        #[source]
        source: E,
    },
    /// Computing a vertex's cache key failed.
    #[error("{name}: cannot compute its cache key")]
    CacheKey {
        /// The vertex.
        vertex: VertexId,
        /// Its display name.
        name: String,
        /// The executor's error.
        #[source]
        source: E,
    },
    /// Reading or writing the cache index failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The graph has a cycle.
    #[error("the build graph has a cycle")]
    Cycle,
    /// A target or an input names a vertex that is not in the graph.
    #[error("vertex {vertex} is not in the build graph")]
    UnknownVertex {
        /// The missing id.
        vertex: VertexId,
    },
    /// A solver task was canceled from outside (the runtime is shutting down).
    #[error("the build was canceled")]
    Canceled,
}

/// Options of one solve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SolveOptions {
    /// Don't read results from the cache index (results are still written to it).
    pub no_cache: bool,
    /// Vertices solved without reading the cache, as with `no_cache`, and so is every vertex
    /// that depends on one of them (`--no-cache-filter STAGE`: the stage's vertices).
    pub no_cache_vertices: Vec<VertexId>,
    /// The most executions (and, separately, cache-key computations) running at once; 0 is
    /// taken as 1.
    pub max_parallel: usize,
}

impl Default for SolveOptions {
    /// `no_cache: false`, `max_parallel`: twice the available parallelism, at least 4.
    fn default() -> Self {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        SolveOptions {
            no_cache: false,
            no_cache_vertices: Vec::new(),
            max_parallel: cpus.max(2) * 2,
        }
    }
}

/// Solves build graphs with one executor, cache index and progress sink. See the crate docs
/// for the semantics.
pub struct Solver<E: Executor> {
    executor: Arc<E>,
    index: Option<CacheIndex>,
    progress: ProgressSink,
}

impl<E: Executor> std::fmt::Debug for Solver<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Solver")
            .field("index", &self.index)
            .finish()
    }
}

type Res<E, T> = Result<T, SolveError<<E as Executor>::Error>>;

impl<E: Executor> Solver<E> {
    /// A solver using `executor`, the cache `index` (none: nothing is read or recorded) and
    /// sending events to `progress`.
    pub fn new(executor: Arc<E>, index: Option<CacheIndex>, progress: ProgressSink) -> Self {
        Solver {
            executor,
            index,
            progress,
        }
    }

    /// The executor.
    pub fn executor(&self) -> &Arc<E> {
        &self.executor
    }

    /// The cache index, if any.
    pub fn index(&self) -> Option<&CacheIndex> {
        self.index.as_ref()
    }

    /// Solves `targets` (several roots allowed), returning their values in order.
    ///
    /// Dropping the returned future cancels the solve: its tasks are aborted, every needed
    /// vertex without a terminal event gets [`EventKind::Canceled`], and the index stays
    /// consistent (each write is one redb transaction).
    pub async fn solve(
        &self,
        graph: &Graph<E::Vertex>,
        targets: &[VertexId],
        opts: &SolveOptions,
    ) -> Res<E, Vec<E::Value>> {
        self.solve_with_keys(graph, targets, opts)
            .await
            .map(|(values, _)| values)
    }

    /// Like [`Solver::solve`], also returning the cache key computed for every vertex the
    /// targets needed (e.g. to export those results without computing the keys again).
    pub async fn solve_with_keys(
        &self,
        graph: &Graph<E::Vertex>,
        targets: &[VertexId],
        opts: &SolveOptions,
    ) -> Res<E, (Vec<E::Value>, HashMap<VertexId, CacheKey>)> {
        self.solve_with_links(graph, targets, opts)
            .await
            .map(|(values, keys, _)| (values, keys))
    }

    /// Like [`Solver::solve_with_keys`], also returning the content links of every needed
    /// vertex with content-keyed inputs (how their slots in its key were settled; see
    /// [`ContentLink`]).
    #[allow(clippy::type_complexity)]
    pub async fn solve_with_links(
        &self,
        graph: &Graph<E::Vertex>,
        targets: &[VertexId],
        opts: &SolveOptions,
    ) -> Res<
        E,
        (
            Vec<E::Value>,
            HashMap<VertexId, CacheKey>,
            HashMap<VertexId, Vec<ContentLink>>,
        ),
    > {
        let order = needed_vertices(graph, targets)?;
        let (cancel, _) = watch::channel(false);
        let mut driver = Driver::<E> {
            graph,
            executor: self.executor.clone(),
            index: self.index.clone(),
            no_cache: opts.no_cache,
            uncached: with_dependents(graph, &order, &opts.no_cache_vertices),
            gate: Arc::new(Gate::new(self.progress.clone())),
            cancel,
            exec_slots: Arc::new(Semaphore::new(opts.max_parallel.max(1))),
            key_slots: Arc::new(Semaphore::new(opts.max_parallel.max(1))),
            tasks: JoinSet::new(),
            keys: HashMap::new(),
            key_inputs: HashMap::new(),
            slots: HashMap::new(),
            key_waiting: HashMap::new(),
            key_dependents: HashMap::new(),
            content_of: HashMap::new(),
            content_slots: HashMap::new(),
            digests: Vec::new(),
            resolving: Vec::new(),
            links: HashMap::new(),
            recorded: HashSet::new(),
            targets_requested: false,
            why: HashMap::new(),
            entries: HashMap::new(),
            requested: Vec::new(),
            requested_set: HashSet::new(),
            terminal: HashSet::new(),
            finished: false,
        };
        let result = driver.run(&order, targets).await;
        match &result {
            Ok(_) => driver.finished = true,
            Err(_) => driver.cancel_rest(),
        }
        let values = result?;
        let keys = std::mem::take(&mut driver.keys);
        let links = std::mem::take(&mut driver.links);
        if let (Some(index), false) = (self.index.clone(), opts.no_cache) {
            // Garbage collection keeps the most recently used results: mark this solve's.
            let used: Vec<CacheKey> = keys.values().copied().collect();
            let touched = tokio::task::spawn_blocking(move || index.touch(&used)).await;
            if let Ok(Err(e)) = touched {
                debug!(error = %e, "cannot mark cache results used");
            }
        }
        Ok((values, keys, links))
    }
}

/// The vertices `targets` depend on (targets included), inputs before dependents; checks that
/// every id exists and that there is no cycle.
fn needed_vertices<V, Err: std::error::Error>(
    graph: &Graph<V>,
    targets: &[VertexId],
) -> Result<Vec<VertexId>, SolveError<Err>> {
    let mut pg = petgraph::graph::DiGraph::<VertexId, ()>::new();
    let mut index_of = HashMap::new();
    let mut stack = Vec::new();
    for &t in targets {
        if graph.node(t).is_none() {
            return Err(SolveError::UnknownVertex { vertex: t });
        }
        if let std::collections::hash_map::Entry::Vacant(e) = index_of.entry(t) {
            e.insert(pg.add_node(t));
            stack.push(t);
        }
    }
    while let Some(v) = stack.pop() {
        let vi = index_of[&v];
        for &u in graph.inputs(v) {
            if graph.node(u).is_none() {
                return Err(SolveError::UnknownVertex { vertex: u });
            }
            let ui = *index_of.entry(u).or_insert_with(|| {
                stack.push(u);
                pg.add_node(u)
            });
            pg.add_edge(ui, vi, ());
        }
    }
    let sorted = petgraph::algo::toposort(&pg, None).map_err(|_| SolveError::Cycle)?;
    Ok(sorted.into_iter().map(|i| pg[i]).collect())
}

enum State<V> {
    LookingUp,
    WaitingInputs { remaining: usize },
    Running,
    Done(V),
}

struct Entry<V> {
    /// The vertex whose inputs and `exec` are used for this key.
    rep: VertexId,
    /// Every requested vertex with this key (rep first).
    vertices: Vec<VertexId>,
    /// Keys waiting for this one, once per input occurrence.
    parents: Vec<CacheKey>,
    state: State<V>,
}

enum Msg<V, Err> {
    /// The executor's key input of a vertex.
    Key(VertexId, Result<KeyInput, Err>, Duration),
    /// The slot a link gives the content-keyed edge (vertex, input, link key); `None`: no link.
    Link(VertexId, usize, CacheKey, Option<CacheKey>),
    /// The digest of what the vertex reads from a content-keyed input (vertex, input, link).
    Content(
        VertexId,
        usize,
        CacheKey,
        Result<ContentDigest, Err>,
        Duration,
    ),
    Lookup(CacheKey, Result<Option<V>, CacheError>),
    Exec {
        key: CacheKey,
        result: Result<V, Err>,
        duration: Duration,
        put: Result<(), CacheError>,
    },
    /// An execution task saw the solve canceled before starting.
    NotStarted,
}

struct Driver<'g, E: Executor> {
    graph: &'g Graph<E::Vertex>,
    executor: Arc<E>,
    index: Option<CacheIndex>,
    no_cache: bool,
    /// Vertices that must not read the cache (`no_cache_vertices` and their dependents).
    uncached: HashSet<VertexId>,
    gate: Arc<Gate>,
    cancel: watch::Sender<bool>,
    exec_slots: Arc<Semaphore>,
    key_slots: Arc<Semaphore>,
    tasks: JoinSet<Msg<E::Value, E::Error>>,
    keys: HashMap<VertexId, CacheKey>,
    /// What each key was made of (for key records and miss explanations).
    key_inputs: HashMap<VertexId, KeyInput>,
    /// The input keys each key was computed over (content-keyed inputs' slots replaced).
    slots: HashMap<VertexId, Vec<CacheKey>>,
    /// Per vertex, how many of its inputs have no key yet.
    key_waiting: HashMap<VertexId, usize>,
    /// Per vertex, the (vertex, input index) slots it fills.
    key_dependents: HashMap<VertexId, Vec<(VertexId, usize)>>,
    /// Per vertex, its content-keyed inputs (indexes).
    content_of: HashMap<VertexId, Vec<usize>>,
    /// The settled slots of content-keyed edges.
    content_slots: HashMap<(VertexId, usize), CacheKey>,
    /// Content-keyed edges waiting for their input's value.
    digests: Vec<keys::PendingDigest>,
    /// Inputs to solve for their content.
    resolving: Vec<VertexId>,
    /// How each vertex's content-keyed slots were settled.
    links: HashMap<VertexId, Vec<ContentLink>>,
    /// Vertices whose key record was written this solve.
    recorded: HashSet<VertexId>,
    /// Every key is known and the targets were requested.
    targets_requested: bool,
    /// Why each vertex would miss, against its last key record.
    why: HashMap<VertexId, String>,
    entries: HashMap<CacheKey, Entry<E::Value>>,
    requested: Vec<VertexId>,
    requested_set: HashSet<VertexId>,
    terminal: HashSet<VertexId>,
    finished: bool,
}

impl<E: Executor> Drop for Driver<'_, E> {
    fn drop(&mut self) {
        if !self.finished {
            self.cancel_rest();
        }
    }
}

impl<'g, E: Executor> Driver<'g, E> {
    /// Whether `v` may take its result from the cache.
    fn reads_cache(&self, v: VertexId, vertex: &E::Vertex) -> bool {
        !self.no_cache && !self.uncached.contains(&v) && self.executor.cacheable(vertex)
    }

    fn node(&self, v: VertexId) -> Res<E, &'g Node<E::Vertex>> {
        self.graph
            .node(v)
            .ok_or(SolveError::UnknownVertex { vertex: v })
    }

    fn key(&self, v: VertexId) -> Res<E, CacheKey> {
        // Every needed vertex has a key after phase 1.
        self.keys
            .get(&v)
            .copied()
            .ok_or(SolveError::UnknownVertex { vertex: v })
    }

    fn emit(&mut self, v: VertexId, kind: EventKind) {
        if kind.is_terminal() && !self.terminal.insert(v) {
            return;
        }
        let key = self.keys.get(&v).copied();
        if tracing::enabled!(tracing::Level::DEBUG) {
            let (name, hex) = (self.graph.name(v), key.map(|k| k.hex()).unwrap_or_default());
            match &kind {
                EventKind::Cached => debug!(vertex = name, key = %hex, "cache hit"),
                EventKind::Done { duration } => {
                    debug!(vertex = name, key = %hex, exec_time = ?duration, "executed")
                }
                EventKind::Error { duration, .. } => {
                    debug!(vertex = name, key = %hex, exec_time = ?duration, "failed")
                }
                _ => {}
            }
        }
        self.gate
            .emit(event(v, self.graph.name(v), key.as_ref(), kind));
    }

    /// Emits `Canceled` for every requested vertex without a terminal event, closes the event
    /// gate, signals cancellation and aborts every task.
    fn cancel_rest(&mut self) {
        self.finished = true;
        let mut events = Vec::new();
        for &v in &self.requested {
            if self.terminal.insert(v) {
                let key = self.keys.get(&v);
                events.push(event(v, self.graph.name(v), key, EventKind::Canceled));
            }
        }
        self.gate.close_with(events);
        self.cancel.send_replace(true);
        self.tasks.abort_all();
    }

    async fn next(&mut self) -> Res<E, Option<Msg<E::Value, E::Error>>> {
        match self.tasks.join_next().await {
            None => Ok(None),
            Some(Ok(msg)) => Ok(Some(msg)),
            Some(Err(e)) => Err(join_failure(e)),
        }
    }

    async fn run(&mut self, order: &[VertexId], targets: &[VertexId]) -> Res<E, Vec<E::Value>> {
        self.start_keys(order)?;
        let mut work: Vec<(VertexId, Option<CacheKey>)> = Vec::new();
        loop {
            if !self.targets_requested && self.keys.len() == order.len() {
                // Every key is known: look the targets up, top down (lazy hits).
                self.remember_known(order).await;
                self.targets_requested = true;
                work.extend(targets.iter().rev().map(|&t| (t, None)));
                self.request_all(&mut work)?;
            }
            if self.targets_requested {
                if let Some(values) = self.target_values(targets)? {
                    return Ok(values);
                }
            }
            let Some(msg) = self.next().await? else {
                // Nothing runs and the targets are not done: a key waits on itself.
                return Err(SolveError::Cycle);
            };
            match msg {
                Msg::NotStarted => {}
                Msg::Key(v, result, elapsed) => self.key_input_ready(v, result, elapsed)?,
                Msg::Link(v, i, link, slot) => self.link_found(v, i, link, slot, order).await?,
                Msg::Content(v, i, link, result, elapsed) => {
                    self.content_ready(v, i, link, result, elapsed)?
                }
                Msg::Lookup(key, Ok(Some(value))) => self.finish_key(key, value, None)?,
                Msg::Lookup(key, Ok(None)) => self.expand(key, &mut work)?,
                Msg::Lookup(key, Err(e)) => {
                    self.fail_key(key, &e.to_string(), Duration::ZERO);
                    return Err(SolveError::Cache(e));
                }
                Msg::Exec {
                    key,
                    result,
                    duration,
                    put,
                } => match (result, put) {
                    (Ok(value), Ok(())) => self.finish_key(key, value, Some(duration))?,
                    (Ok(_), Err(e)) => {
                        self.fail_key(key, &e.to_string(), duration);
                        return Err(SolveError::Cache(e));
                    }
                    (Err(source), _) => {
                        self.fail_key(key, &source.to_string(), duration);
                        let vertex = self.entries.get(&key).map(|e| e.rep).unwrap_or(VertexId(0));
                        return Err(SolveError::Exec {
                            vertex,
                            name: self.graph.name(vertex).to_string(),
                            source,
                        });
                    }
                },
            }
            work.extend(self.take_resolving().into_iter().rev().map(|u| (u, None)));
            self.request_all(&mut work)?;
            self.spawn_ready_digests()?;
        }
    }

    /// Processes requests: `(vertex, key of the vertex that needs it as an input)`.
    fn request_all(&mut self, work: &mut Vec<(VertexId, Option<CacheKey>)>) -> Res<E, ()> {
        while let Some((v, parent)) = work.pop() {
            self.request(v, parent, work)?;
        }
        Ok(())
    }

    fn request(
        &mut self,
        v: VertexId,
        parent: Option<CacheKey>,
        work: &mut Vec<(VertexId, Option<CacheKey>)>,
    ) -> Res<E, ()> {
        let key = self.key(v)?;
        if self.requested_set.insert(v) {
            self.requested.push(v);
        }
        if let Some(entry) = self.entries.get_mut(&key) {
            if !entry.vertices.contains(&v) {
                entry.vertices.push(v);
            }
            let done = matches!(entry.state, State::Done(_));
            if !done {
                entry.parents.extend(parent);
                return Ok(());
            }
            // Already solved under another vertex: reuse its result.
            self.emit(v, EventKind::Cached);
            if let Some(p) = parent {
                self.input_ready(p)?;
            }
            return Ok(());
        }
        let node = self.node(v)?;
        self.entries.insert(
            key,
            Entry {
                rep: v,
                vertices: vec![v],
                parents: parent.into_iter().collect(),
                state: State::LookingUp,
            },
        );
        match &self.index {
            Some(index) if self.reads_cache(v, &node.vertex) => {
                let index = index.clone();
                let executor = self.executor.clone();
                self.tasks.spawn(async move {
                    let found = tokio::task::spawn_blocking(move || {
                        let local = index.get(&key)?.and_then(|bytes| executor.decode(&bytes));
                        Ok(local.or_else(|| executor.lookup_fallback(&key)))
                    })
                    .await
                    .unwrap_or_else(|e| Err(CacheError::Background(e.to_string())));
                    Msg::Lookup(key, found)
                });
                Ok(())
            }
            _ => self.expand(key, work),
        }
    }

    /// A miss: requests the inputs of `key`'s vertex (or runs it when it has none).
    fn expand(
        &mut self,
        key: CacheKey,
        work: &mut Vec<(VertexId, Option<CacheKey>)>,
    ) -> Res<E, ()> {
        let Some(entry) = self.entries.get_mut(&key) else {
            return Ok(());
        };
        let rep = entry.rep;
        if tracing::enabled!(tracing::Level::DEBUG) {
            let cacheable = self
                .graph
                .node(rep)
                .map(|n| self.executor.cacheable(&n.vertex));
            let reason = match (&self.index, self.no_cache, cacheable) {
                (None, _, _) => "no cache index",
                (_, true, _) => "--no-cache",
                _ if self.uncached.contains(&rep) => "--no-cache-filter",
                (_, _, Some(false)) => "never cached (e.g. the build context)",
                _ => self
                    .why
                    .get(&rep)
                    .map(String::as_str)
                    .unwrap_or("not in the cache"),
            };
            debug!(
                vertex = self.graph.name(rep),
                key = %key,
                reason,
                "cache miss"
            );
        }
        let Some(entry) = self.entries.get_mut(&key) else {
            return Ok(());
        };
        let inputs = self.graph.inputs(entry.rep);
        entry.state = State::WaitingInputs {
            remaining: inputs.len(),
        };
        if inputs.is_empty() {
            return self.start_exec(key);
        }
        work.extend(inputs.iter().rev().map(|&u| (u, Some(key))));
        Ok(())
    }

    /// One input of `key` is done.
    fn input_ready(&mut self, key: CacheKey) -> Res<E, ()> {
        let Some(entry) = self.entries.get_mut(&key) else {
            return Ok(());
        };
        if let State::WaitingInputs { remaining } = &mut entry.state {
            *remaining = remaining.saturating_sub(1);
            if *remaining == 0 {
                return self.start_exec(key);
            }
        }
        Ok(())
    }

    fn start_exec(&mut self, key: CacheKey) -> Res<E, ()> {
        let Some(entry) = self.entries.get_mut(&key) else {
            return Ok(());
        };
        entry.state = State::Running;
        let rep = entry.rep;
        let node = self.node(rep)?;
        let mut inputs = Vec::with_capacity(node.inputs.len());
        for &u in &node.inputs {
            let k = self.key(u)?;
            match self.entries.get(&k).map(|e| &e.state) {
                Some(State::Done(value)) => inputs.push(value.clone()),
                // Only reachable if a key depends on itself.
                _ => return Err(SolveError::Cycle),
            }
        }
        let vertex = node.vertex.clone();
        let name = node.name.clone();
        let executor = self.executor.clone();
        let index = self.index.clone();
        let slots = self.exec_slots.clone();
        let gate = self.gate.clone();
        let cancel = self.cancel.subscribe();
        let claim_index = match &self.index {
            Some(index) if self.reads_cache(rep, &vertex) => Some(index.clone()),
            _ => None,
        };
        self.tasks.spawn(async move {
            // Another rbuild process executing (or having just executed) the same key: wait
            // for it and use its result (BuildKit dedupes concurrent solves the same way). A claim that cannot be made
            // (e.g. a read-only lock dir) only costs the dedupe.
            let mut claim = None;
            if let Some(index) = claim_index {
                let decoder = executor.clone();
                let claimed = tokio::task::spawn_blocking(move || {
                    let claim = index.claim(&key)?;
                    // Looked up again even without a wait: another process may have recorded
                    // the key between this solve's lookup and its claim.
                    if let Some(value) = index.get(&key)?.and_then(|b| decoder.decode(&b)) {
                        return Ok::<_, CacheError>((claim, Some(value)));
                    }
                    Ok((claim, None))
                })
                .await;
                match claimed {
                    Ok(Ok((_, Some(value)))) => return Msg::Lookup(key, Ok(Some(value))),
                    Ok(Ok((c, None))) => claim = Some(c),
                    _ => {}
                }
            }
            let Ok(_slot) = slots.acquire_owned().await else {
                return Msg::NotStarted;
            };
            if *cancel.borrow() {
                return Msg::NotStarted;
            }
            gate.emit(event(rep, &name, Some(&key), EventKind::Started));
            let ctx = ExecContext {
                vertex: rep,
                name,
                key,
                gate,
                cancel,
            };
            let start = Instant::now();
            let result = executor.exec(&vertex, inputs, ctx).await;
            let duration = start.elapsed();
            let put = match (&result, index) {
                (Ok(value), Some(index)) => {
                    let bytes = executor.encode(value);
                    tokio::task::spawn_blocking(move || index.put(&key, &bytes))
                        .await
                        .unwrap_or_else(|e| Err(CacheError::Background(e.to_string())))
                }
                _ => Ok(()),
            };
            drop(claim);
            Msg::Exec {
                key,
                result,
                duration,
                put,
            }
        });
        Ok(())
    }

    /// `key` has its value (executed in `duration`, or found in the index when `None`).
    fn finish_key(
        &mut self,
        key: CacheKey,
        value: E::Value,
        duration: Option<Duration>,
    ) -> Res<E, ()> {
        let Some(entry) = self.entries.get_mut(&key) else {
            return Ok(());
        };
        entry.state = State::Done(value);
        let rep = entry.rep;
        let vertices = entry.vertices.clone();
        let parents = std::mem::take(&mut entry.parents);
        for v in vertices {
            match duration {
                Some(duration) if v == rep => self.emit(v, EventKind::Done { duration }),
                _ => self.emit(v, EventKind::Cached),
            }
        }
        for p in parents {
            self.input_ready(p)?;
        }
        Ok(())
    }

    /// Emits `Error` for every vertex with `key`.
    fn fail_key(&mut self, key: CacheKey, message: &str, duration: Duration) {
        let vertices = self
            .entries
            .get(&key)
            .map(|e| e.vertices.clone())
            .unwrap_or_default();
        for v in vertices {
            self.emit(
                v,
                EventKind::Error {
                    message: message.to_string(),
                    duration,
                },
            );
        }
    }

    /// The targets' values once all are done.
    fn target_values(&self, targets: &[VertexId]) -> Res<E, Option<Vec<E::Value>>> {
        let mut values = Vec::with_capacity(targets.len());
        for &t in targets {
            match self.entries.get(&self.key(t)?).map(|e| &e.state) {
                Some(State::Done(v)) => values.push(v.clone()),
                _ => return Ok(None),
            }
        }
        Ok(Some(values))
    }
}

/// A task panicked (the panic is resumed here, as if the executor had been called directly)
/// or was canceled from outside.
fn join_failure<Err: std::error::Error>(e: JoinError) -> SolveError<Err> {
    if e.is_panic() {
        std::panic::resume_unwind(e.into_panic());
    }
    SolveError::Canceled
}

#[allow(dead_code)]
fn _assert_send<E: Executor>(s: &Solver<E>, g: &Graph<E::Vertex>, o: &SolveOptions) {
    fn is_send<T: Send>(_: &T) {}
    is_send(&s.solve(g, &[], o));
    let _: Option<Event> = None;
}

/// `seeds` and every vertex of `order` (inputs before dependents) that depends on one of them.
fn with_dependents<V>(
    graph: &Graph<V>,
    order: &[VertexId],
    seeds: &[VertexId],
) -> HashSet<VertexId> {
    let mut set: HashSet<VertexId> = seeds.iter().copied().collect();
    if set.is_empty() {
        return set;
    }
    for &v in order {
        if graph.inputs(v).iter().any(|i| set.contains(i)) {
            set.insert(v);
        }
    }
    set
}
