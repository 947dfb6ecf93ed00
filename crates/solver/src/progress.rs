//! Progress events and the context handed to [`Executor::exec`](crate::Executor::exec).

use crate::{CacheKey, VertexId};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Which output stream a log line came from.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum LogStream {
    /// The process's standard output.
    Stdout,
    /// The process's standard error.
    Stderr,
}

/// One progress event. A solve sends one stream of them; see [`EventKind`] for the order.
#[derive(Clone, Debug)]
pub struct Event {
    /// The vertex the event is about.
    pub vertex: VertexId,
    /// The vertex's display name.
    pub name: String,
    /// The vertex's cache key in hex, when known (always, except for a failed cache key).
    pub cache_key: Option<String>,
    /// What happened.
    pub kind: EventKind,
    /// When it happened.
    pub at: SystemTime,
}

/// What an [`Event`] reports.
///
/// Every vertex that the targets need gets exactly one terminal event (`Cached`, `Done`,
/// `Error` or `Canceled`); an executed one gets `Started`, then any number of `Log`s, then its
/// terminal event. A vertex that is not needed, because a vertex depending on it was found in
/// the cache or reused another vertex's result, gets no event at all. Cache-key computation
/// sends no events except `Error` for a vertex whose key failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Execution began (the vertex holds one of the solve's `max_parallel` slots).
    Started,
    /// The result came from the cache index, or from another vertex of this solve with the
    /// same cache key. Terminal.
    Cached,
    /// A line of output from the execution.
    Log {
        /// Which stream.
        stream: LogStream,
        /// The bytes as given to [`ExecContext::log`].
        line: Vec<u8>,
    },
    /// Execution succeeded and the result was recorded in the index. Terminal.
    Done {
        /// How long `exec` ran.
        duration: Duration,
    },
    /// The vertex failed (its cache key, its execution or recording its result). Terminal.
    Error {
        /// The error's message.
        message: String,
        /// How long `exec` ran (zero when it did not run).
        duration: Duration,
    },
    /// The solve was stopped (another vertex failed, or the solve future was dropped) before
    /// this vertex finished. Terminal.
    Canceled,
}

impl EventKind {
    /// True for the kinds that end a vertex's events.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, EventKind::Started | EventKind::Log { .. })
    }
}

/// Where events go: a callback, cheap to clone. It is called from the solver's tasks, so it
/// should return quickly (e.g. push onto a channel).
#[derive(Clone)]
pub struct ProgressSink {
    f: Arc<dyn Fn(Event) + Send + Sync>,
}

impl ProgressSink {
    /// A sink calling `f` for every event.
    pub fn new(f: impl Fn(Event) + Send + Sync + 'static) -> Self {
        ProgressSink { f: Arc::new(f) }
    }

    /// A sink dropping every event.
    pub fn discard() -> Self {
        ProgressSink::new(|_| {})
    }

    /// Sends one event.
    pub fn emit(&self, event: Event) {
        (self.f)(event)
    }
}

impl fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProgressSink")
    }
}

/// A solve's event gate: once closed (after the last terminal events), later events from tasks
/// still winding down are dropped, so no vertex gets an event after its terminal one.
pub(crate) struct Gate {
    sink: ProgressSink,
    closed: Mutex<bool>,
}

impl Gate {
    pub(crate) fn new(sink: ProgressSink) -> Self {
        Gate {
            sink,
            closed: Mutex::new(false),
        }
    }

    pub(crate) fn emit(&self, event: Event) {
        let closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
        if !*closed {
            self.sink.emit(event);
        }
    }

    /// Emits `events` and closes the gate, atomically with respect to `emit`.
    pub(crate) fn close_with(&self, events: Vec<Event>) {
        let mut closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
        if !*closed {
            for e in events {
                self.sink.emit(e);
            }
            *closed = true;
        }
    }
}

pub(crate) fn event(
    vertex: VertexId,
    name: &str,
    key: Option<&CacheKey>,
    kind: EventKind,
) -> Event {
    Event {
        vertex,
        name: name.to_string(),
        cache_key: key.map(CacheKey::hex),
        kind,
        at: SystemTime::now(),
    }
}

/// What [`Executor::exec`](crate::Executor::exec) gets besides its inputs: where to log and
/// whether the solve was canceled. Cheap to clone.
#[derive(Clone)]
pub struct ExecContext {
    pub(crate) vertex: VertexId,
    pub(crate) name: Arc<str>,
    pub(crate) key: CacheKey,
    pub(crate) gate: Arc<Gate>,
    pub(crate) cancel: watch::Receiver<bool>,
}

impl fmt::Debug for ExecContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecContext")
            .field("vertex", &self.vertex)
            .field("name", &self.name)
            .field("key", &self.key.hex())
            .finish()
    }
}

impl ExecContext {
    /// Sends one line of output as an [`EventKind::Log`] event for this vertex.
    pub fn log(&self, stream: LogStream, line: &[u8]) {
        self.gate.emit(event(
            self.vertex,
            &self.name,
            Some(&self.key),
            EventKind::Log {
                stream,
                line: line.to_vec(),
            },
        ));
    }

    /// The vertex being executed.
    pub fn vertex(&self) -> VertexId {
        self.vertex
    }

    /// The vertex's display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The vertex's cache key.
    pub fn cache_key(&self) -> CacheKey {
        self.key
    }

    /// True once the solve was canceled (a vertex failed or the solve future was dropped) or
    /// has ended.
    /// The solver also aborts the `exec` future itself, so this matters only for work the
    /// executor runs outside that future.
    pub fn cancelled(&self) -> bool {
        *self.cancel.borrow() || self.cancel.has_changed().is_err()
    }

    /// Resolves when the solve is canceled (or has ended).
    pub async fn wait_cancelled(&self) {
        let mut rx = self.cancel.clone();
        let _ = rx.wait_for(|c| *c).await;
    }
}
