//! The build's own progress vertices, as BuildKit shows them beside the solver's steps:
//! `[internal] load build definition from Dockerfile`, `[internal] load .dockerignore`,
//! `[internal] load metadata for REF` and `exporting to image` ([`InternalVertex`]); and the
//! listing of every step of a cached build as `CACHED` ([`cached_listing`]), since the solver
//! sends no event for the steps below a cache hit while BuildKit lists them all.

use rbuild_solver::{Event, EventKind, Graph, ProgressSink, VertexId};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// Ids of internal vertices: far above any graph's, unique within the process.
static NEXT_ID: AtomicUsize = AtomicUsize::new(1 << 40);

/// A vertex of the build itself (not of the graph), reported through the solver's sink.
pub(crate) struct InternalVertex {
    sink: ProgressSink,
    id: VertexId,
    name: String,
    started: Instant,
}

impl InternalVertex {
    /// Starts the vertex `name` (sends `Started`).
    pub(crate) fn start(sink: &ProgressSink, name: impl Into<String>) -> InternalVertex {
        let vertex = InternalVertex {
            sink: sink.clone(),
            id: VertexId(NEXT_ID.fetch_add(1, Ordering::Relaxed)),
            name: name.into(),
            started: Instant::now(),
        };
        vertex.send(EventKind::Started);
        vertex
    }

    fn send(&self, kind: EventKind) {
        self.sink.emit(Event {
            vertex: self.id,
            name: self.name.clone(),
            cache_key: None,
            kind,
            at: SystemTime::now(),
        });
    }

    /// One line of the vertex's output (`transferring dockerfile: 32B done`).
    pub(crate) fn log(&self, line: impl Into<String>) {
        self.send(EventKind::Log {
            stream: rbuild_solver::LogStream::Stdout,
            line: line.into().into_bytes(),
        });
    }

    /// The time since the vertex started.
    pub(crate) fn elapsed(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Ends the vertex (sends `Done`).
    pub(crate) fn done(self) {
        self.send(EventKind::Done {
            duration: self.started.elapsed(),
        });
    }

    /// Ends the vertex with an error (sends `Error`).
    pub(crate) fn fail(self, message: impl Into<String>) {
        self.send(EventKind::Error {
            message: message.into(),
            duration: self.started.elapsed(),
        });
    }
}

/// What the listing knows of the graph and what it has sent.
struct Listing {
    /// Each needed vertex's inputs and name.
    inputs: HashMap<VertexId, (Vec<VertexId>, String)>,
    /// Each needed vertex's dependents (among the needed).
    dependents: HashMap<VertexId, Vec<VertexId>>,
    /// Vertices that had an event (from the solver or listed here).
    seen: HashSet<VertexId>,
    /// Vertices that ended as cached (by the solver or listed here).
    cached: HashSet<VertexId>,
}

impl Listing {
    /// The vertices below `top` that no one else will ask for any more (every dependent
    /// cached), inputs first, marked as listed.
    fn below(&mut self, top: VertexId) -> Vec<VertexId> {
        let mut out = Vec::new();
        let mut stack: Vec<VertexId> = self
            .inputs
            .get(&top)
            .map(|(i, _)| i.clone())
            .unwrap_or_default();
        while let Some(v) = stack.pop() {
            if self.seen.contains(&v) {
                continue;
            }
            let all_cached = self
                .dependents
                .get(&v)
                .is_some_and(|d| d.iter().all(|d| self.cached.contains(d)));
            if !all_cached {
                continue;
            }
            self.seen.insert(v);
            self.cached.insert(v);
            out.push(v);
            if let Some((inputs, _)) = self.inputs.get(&v) {
                stack.extend(inputs.iter().copied());
            }
        }
        // Inputs before the steps that read them (ids are in insertion order, inputs first).
        out.sort();
        out
    }

    /// The event listing `v` as cached.
    fn cached_event(&self, v: VertexId) -> Event {
        Event {
            vertex: v,
            name: self
                .inputs
                .get(&v)
                .map(|(_, n)| n.clone())
                .unwrap_or_default(),
            cache_key: None,
            kind: EventKind::Cached,
            at: SystemTime::now(),
        }
    }
}

/// A sink in front of `inner` that, when a vertex is cached, first lists as `CACHED` the vertices
/// below it that the solve will not need any more (all their dependents cached), as BuildKit
/// lists every step of a cached build. The returned closure lists, at the end of a successful
/// solve, the needed vertices that had no event at all.
pub(crate) fn cached_listing<V>(
    graph: &Graph<V>,
    targets: &[VertexId],
    inner: ProgressSink,
) -> (ProgressSink, impl FnOnce()) {
    let mut inputs = HashMap::new();
    let mut dependents: HashMap<VertexId, Vec<VertexId>> = HashMap::new();
    let mut stack = targets.to_vec();
    while let Some(v) = stack.pop() {
        if inputs.contains_key(&v) {
            continue;
        }
        let ins = graph.inputs(v).to_vec();
        for &i in &ins {
            dependents.entry(i).or_default().push(v);
        }
        stack.extend(ins.iter().copied());
        let name = graph.name(v).to_string();
        inputs.insert(v, (ins, name));
    }
    let state = Arc::new(Mutex::new(Listing {
        inputs,
        dependents,
        seen: HashSet::new(),
        cached: HashSet::new(),
    }));
    let sink = {
        let (state, inner) = (state.clone(), inner.clone());
        ProgressSink::new(move |event: Event| {
            let listed = {
                let Ok(mut st) = state.lock() else {
                    return inner.emit(event);
                };
                // An internal vertex, or one listed already: pass it on as it is.
                if !st.inputs.contains_key(&event.vertex) {
                    drop(st);
                    return inner.emit(event);
                }
                let first = st.seen.insert(event.vertex);
                if event.kind == EventKind::Cached {
                    st.cached.insert(event.vertex);
                    let below = st.below(event.vertex);
                    below.into_iter().map(|v| st.cached_event(v)).collect()
                } else if !first && st.cached.contains(&event.vertex) {
                    // Listed as cached, but the solve needed it after all: show it.
                    st.cached.remove(&event.vertex);
                    Vec::new()
                } else {
                    Vec::new()
                }
            };
            for e in listed {
                inner.emit(e);
            }
            inner.emit(event);
        })
    };
    let finish = move || {
        let listed: Vec<Event> = {
            let Ok(st) = state.lock() else { return };
            let mut order: Vec<VertexId> = st
                .inputs
                .keys()
                .copied()
                .filter(|v| !st.seen.contains(v))
                .collect();
            order.sort();
            order.into_iter().map(|v| st.cached_event(v)).collect()
        };
        for e in listed {
            inner.emit(e);
        }
    };
    (sink, finish)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(v: VertexId, kind: EventKind) -> Event {
        Event {
            vertex: v,
            name: String::new(),
            cache_key: Some("k".into()),
            kind,
            at: SystemTime::now(),
        }
    }

    /// What a recorder saw: `(vertex, kind)` of every event.
    type Seen = Arc<Mutex<Vec<(usize, EventKind)>>>;

    /// A sink recording `(vertex, kind)` of every event.
    fn recorder() -> (ProgressSink, Seen) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let seen = seen.clone();
            ProgressSink::new(move |e: Event| seen.lock().unwrap().push((e.vertex.0, e.kind)))
        };
        (sink, seen)
    }

    /// base <- a <- b (target), and base <- c <- b: b's inputs are a and c.
    fn diamond() -> (Graph<()>, [VertexId; 4]) {
        let mut g = Graph::new();
        let base = g.add_vertex((), "base".into(), vec![]);
        let a = g.add_vertex((), "a".into(), vec![base]);
        let c = g.add_vertex((), "c".into(), vec![base]);
        let b = g.add_vertex((), "b".into(), vec![a, c]);
        (g, [base, a, c, b])
    }

    #[test]
    fn a_cached_target_lists_every_step_below_it_inputs_first() {
        let (g, [base, a, c, b]) = diamond();
        let (inner, seen) = recorder();
        let (sink, finish) = cached_listing(&g, &[b], inner);
        sink.emit(event(b, EventKind::Cached));
        finish();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                (base.0, EventKind::Cached),
                (a.0, EventKind::Cached),
                (c.0, EventKind::Cached),
                (b.0, EventKind::Cached),
            ]
        );
    }

    #[test]
    fn a_step_another_branch_still_needs_is_not_listed_before_it_runs() {
        let (g, [base, a, c, b]) = diamond();
        let (inner, seen) = recorder();
        let (sink, finish) = cached_listing(&g, &[b], inner);
        // a is cached, but c (which also reads base) runs: base is not listed under a.
        sink.emit(event(a, EventKind::Cached));
        sink.emit(event(base, EventKind::Cached));
        sink.emit(event(c, EventKind::Started));
        let done = EventKind::Done {
            duration: std::time::Duration::ZERO,
        };
        sink.emit(event(c, done.clone()));
        sink.emit(event(b, EventKind::Started));
        sink.emit(event(b, done.clone()));
        finish();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                (a.0, EventKind::Cached),
                (base.0, EventKind::Cached),
                (c.0, EventKind::Started),
                (c.0, done.clone()),
                (b.0, EventKind::Started),
                (b.0, done),
            ],
            "each vertex reported once, as the solve reported it"
        );
    }

    #[test]
    fn internal_vertices_pass_through() {
        let (g, [.., b]) = diamond();
        let (inner, seen) = recorder();
        let (sink, _finish) = cached_listing(&g, &[b], inner);
        let v = InternalVertex::start(&sink, "exporting to image");
        v.log("writing image sha256:x done");
        v.done();
        let kinds: Vec<bool> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, k)| {
                matches!(
                    k,
                    EventKind::Started | EventKind::Log { .. } | EventKind::Done { .. }
                )
            })
            .collect();
        assert_eq!(kinds, vec![true, true, true]);
    }
}
