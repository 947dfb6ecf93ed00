//! Solver behaviour with a fake counting executor.

use rbuild_solver::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
struct Op {
    id: &'static str,
    /// Key material: vertices with equal material and equal input keys have equal keys.
    material: String,
    sleep_ms: u64,
    fail: bool,
    key_fails: bool,
    cacheable: bool,
}

fn op(id: &'static str) -> Op {
    Op {
        id,
        material: id.to_string(),
        sleep_ms: 0,
        fail: false,
        key_fails: false,
        cacheable: true,
    }
}

#[derive(Debug, thiserror::Error)]
#[error("fake op {0} failed")]
struct FakeError(String);

#[derive(Default)]
struct Fake {
    execs: Mutex<Vec<&'static str>>,
    finished: Mutex<Vec<&'static str>>,
    keys: AtomicUsize,
    decodes: AtomicUsize,
    running: AtomicUsize,
    max_running: AtomicUsize,
    decode_broken: AtomicBool,
}

impl Fake {
    fn execs(&self) -> Vec<&'static str> {
        let mut v = self.execs.lock().unwrap().clone();
        v.sort();
        v
    }
    fn reset(&self) {
        self.execs.lock().unwrap().clear();
        self.finished.lock().unwrap().clear();
        self.decodes.store(0, Ordering::SeqCst);
        self.keys.store(0, Ordering::SeqCst);
    }
}

impl Executor for Fake {
    type Vertex = Op;
    type Value = String;
    type Error = FakeError;

    async fn cache_key(&self, vertex: &Op, _: &[CacheKey]) -> Result<KeyInput, FakeError> {
        self.keys.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        if vertex.key_fails {
            return Err(FakeError(format!("key of {}", vertex.id)));
        }
        Ok(KeyInput::op(vertex.material.as_bytes().to_vec()))
    }

    async fn exec(
        &self,
        vertex: &Op,
        inputs: Vec<String>,
        ctx: ExecContext,
    ) -> Result<String, FakeError> {
        self.execs.lock().unwrap().push(vertex.id);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        struct Dec<'a>(&'a AtomicUsize);
        impl Drop for Dec<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _dec = Dec(&self.running);
        ctx.log(
            LogStream::Stdout,
            format!("running {}", vertex.id).as_bytes(),
        );
        assert_eq!(ctx.name(), vertex.id);
        assert!(!ctx.cancelled());
        if vertex.sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(vertex.sleep_ms)).await;
        }
        if vertex.fail {
            ctx.log(LogStream::Stderr, b"boom");
            return Err(FakeError(vertex.id.to_string()));
        }
        self.finished.lock().unwrap().push(vertex.id);
        Ok(format!("{}({})", vertex.material, inputs.join(",")))
    }

    fn content_selector(&self, _: &Op, _: usize) -> Vec<u8> {
        Vec::new()
    }

    async fn content_digest(
        &self,
        vertex: &Op,
        _: usize,
        _: &String,
    ) -> Result<ContentDigest, FakeError> {
        Err(FakeError(format!(
            "{} has no content-keyed inputs",
            vertex.id
        )))
    }

    fn encode(&self, value: &String) -> Vec<u8> {
        value.as_bytes().to_vec()
    }

    fn decode(&self, bytes: &[u8]) -> Option<String> {
        self.decodes.fetch_add(1, Ordering::SeqCst);
        if self.decode_broken.load(Ordering::SeqCst) {
            return None;
        }
        String::from_utf8(bytes.to_vec()).ok()
    }

    fn cacheable(&self, vertex: &Op) -> bool {
        vertex.cacheable
    }
}

#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Event>>>);

impl Events {
    fn sink(&self) -> ProgressSink {
        let events = self.0.clone();
        ProgressSink::new(move |e| events.lock().unwrap().push(e))
    }
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Kinds per vertex name, Log events dropped, Done/Error durations dropped.
fn kinds(events: &[Event]) -> HashMap<String, Vec<&'static str>> {
    let mut m: HashMap<String, Vec<&'static str>> = HashMap::new();
    for e in events {
        let k = match e.kind {
            EventKind::Started => "started",
            EventKind::Cached => "cached",
            EventKind::Log { .. } => continue,
            EventKind::Done { .. } => "done",
            EventKind::Error { .. } => "error",
            EventKind::Canceled => "canceled",
        };
        m.entry(e.name.clone()).or_default().push(k);
    }
    m
}

/// Every vertex with events has exactly one terminal event, and it is its last.
fn check_terminal(events: &[Event]) {
    let mut by_vertex: HashMap<VertexId, Vec<&EventKind>> = HashMap::new();
    for e in events {
        by_vertex.entry(e.vertex).or_default().push(&e.kind);
    }
    for (v, ks) in by_vertex {
        let terminals = ks.iter().filter(|k| k.is_terminal()).count();
        assert_eq!(terminals, 1, "vertex {v} events {ks:?}");
        assert!(ks.last().unwrap().is_terminal(), "vertex {v} events {ks:?}");
    }
}

struct Setup {
    fake: Arc<Fake>,
    events: Events,
    solver: Solver<Fake>,
    _dir: Option<tempfile::TempDir>,
}

fn setup(with_index: bool) -> Setup {
    let fake = Arc::new(Fake::default());
    let events = Events::default();
    let (index, dir) = if with_index {
        let dir = tempfile::tempdir().unwrap();
        (
            Some(CacheIndex::open(&dir.path().join(INDEX_FILE_NAME)).unwrap()),
            Some(dir),
        )
    } else {
        (None, None)
    };
    let solver = Solver::new(fake.clone(), index, events.sink());
    Setup {
        fake,
        events,
        solver,
        _dir: dir,
    }
}

fn opts() -> SolveOptions {
    SolveOptions::default()
}

/// a; b(a); c(a); d(b, c)
fn diamond(a: Op) -> (Graph<Op>, VertexId) {
    let mut g = Graph::new();
    let a = g.add_vertex(a, "a".into(), vec![]);
    let b = g.add_vertex(op("b"), "b".into(), vec![a]);
    let c = g.add_vertex(op("c"), "c".into(), vec![a]);
    let d = g.add_vertex(op("d"), "d".into(), vec![b, c]);
    (g, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diamond_runs_each_vertex_once() {
    let s = setup(true);
    let (g, d) = diamond(op("a"));
    let out = s.solver.solve(&g, &[d], &opts()).await.unwrap();
    assert_eq!(out, vec!["d(b(a()),c(a()))".to_string()]);
    assert_eq!(s.fake.execs(), vec!["a", "b", "c", "d"]);
    assert_eq!(s.fake.keys.load(Ordering::SeqCst), 4);
    let events = s.events.take();
    check_terminal(&events);
    let k = kinds(&events);
    for v in ["a", "b", "c", "d"] {
        assert_eq!(k[v], vec!["started", "done"], "{v}");
    }
    // Log events come between Started and Done and carry the key.
    let log = events
        .iter()
        .find(|e| e.name == "a" && matches!(e.kind, EventKind::Log { .. }))
        .unwrap();
    assert_eq!(
        log.kind,
        EventKind::Log {
            stream: LogStream::Stdout,
            line: b"running a".to_vec()
        }
    );
    assert_eq!(log.cache_key.as_ref().map(String::len), Some(64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_keys_run_once() {
    let s = setup(false);
    // Two stages with the same FROM + RUN, and a final vertex using both.
    let mut g = Graph::new();
    let base1 = g.add_vertex(
        Op {
            material: "from".into(),
            ..op("base1")
        },
        "base1".into(),
        vec![],
    );
    let run1 = g.add_vertex(
        Op {
            material: "run".into(),
            ..op("run1")
        },
        "run1".into(),
        vec![base1],
    );
    let base2 = g.add_vertex(
        Op {
            material: "from".into(),
            ..op("base2")
        },
        "base2".into(),
        vec![],
    );
    let run2 = g.add_vertex(
        Op {
            material: "run".into(),
            ..op("run2")
        },
        "run2".into(),
        vec![base2],
    );
    let fin = g.add_vertex(op("final"), "final".into(), vec![run1, run2]);
    let out = s
        .solver
        .solve(&g, &[fin, run2, run1], &opts())
        .await
        .unwrap();
    assert_eq!(out[0], "final(run(from()),run(from()))");
    assert_eq!(out[1], "run(from())");
    assert_eq!(out[2], "run(from())");
    let execs = s.fake.execs();
    assert_eq!(execs.len(), 3, "{execs:?}");
    assert!(execs.contains(&"final"));
    let events = s.events.take();
    check_terminal(&events);
    let k = kinds(&events);
    // run2 reuses run1's result, so base2 is not needed at all (like a vertex below a cache
    // hit): it gets no events.
    assert_eq!(k.len(), 4, "{k:?}");
    assert_eq!(k["final"], vec!["started", "done"]);
    assert_eq!(k["run1"], vec!["started", "done"]);
    assert_eq!(k["base1"], vec!["started", "done"]);
    assert_eq!(k["run2"], vec!["cached"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_solve_runs_nothing_and_reports_only_the_root() {
    let s = setup(true);
    let (g, d) = diamond(op("a"));
    let first = s.solver.solve(&g, &[d], &opts()).await.unwrap();
    s.fake.reset();
    s.events.take();
    let second = s.solver.solve(&g, &[d], &opts()).await.unwrap();
    assert_eq!(first, second);
    assert!(s.fake.execs().is_empty());
    // Nothing below the root is even looked up.
    assert_eq!(s.fake.decodes.load(Ordering::SeqCst), 1);
    let events = s.events.take();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].vertex, d);
    assert_eq!(events[0].kind, EventKind::Cached);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaf_change_reruns_exactly_its_dependent_path() {
    let s = setup(true);
    // a; b(a); c; d(b, c)
    let build = |a_material: &str| {
        let mut g = Graph::new();
        let a = g.add_vertex(
            Op {
                material: a_material.into(),
                ..op("a")
            },
            "a".into(),
            vec![],
        );
        let b = g.add_vertex(op("b"), "b".into(), vec![a]);
        let c = g.add_vertex(op("c"), "c".into(), vec![]);
        let d = g.add_vertex(op("d"), "d".into(), vec![b, c]);
        (g, d)
    };
    let (g, d) = build("a-v1");
    s.solver.solve(&g, &[d], &opts()).await.unwrap();
    s.fake.reset();
    s.events.take();
    let (g, d) = build("a-v2");
    let out = s.solver.solve(&g, &[d], &opts()).await.unwrap();
    assert_eq!(out, vec!["d(b(a-v2()),c())".to_string()]);
    assert_eq!(s.fake.execs(), vec!["a", "b", "d"]);
    let events = s.events.take();
    check_terminal(&events);
    let k = kinds(&events);
    assert_eq!(k["c"], vec!["cached"]);
    for v in ["a", "b", "d"] {
        assert_eq!(k[v], vec!["started", "done"], "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_vertices_overlap() {
    let s = setup(false);
    let mut g = Graph::new();
    let leaves: Vec<_> = ["l1", "l2", "l3", "l4"]
        .into_iter()
        .map(|id| {
            g.add_vertex(
                Op {
                    sleep_ms: 200,
                    ..op(id)
                },
                id.into(),
                vec![],
            )
        })
        .collect();
    let root = g.add_vertex(op("root"), "root".into(), leaves);
    s.solver.solve(&g, &[root], &opts()).await.unwrap();
    assert!(s.fake.max_running.load(Ordering::SeqCst) >= 2);
    assert_eq!(s.fake.execs().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_parallel_bounds_executions() {
    let s = setup(false);
    let mut g = Graph::new();
    let leaves: Vec<_> = ["l1", "l2", "l3"]
        .into_iter()
        .map(|id| {
            g.add_vertex(
                Op {
                    sleep_ms: 50,
                    ..op(id)
                },
                id.into(),
                vec![],
            )
        })
        .collect();
    let root = g.add_vertex(op("root"), "root".into(), leaves);
    let o = SolveOptions {
        max_parallel: 1,
        ..opts()
    };
    s.solver.solve(&g, &[root], &o).await.unwrap();
    assert_eq!(s.fake.max_running.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_names_the_vertex_and_stops_the_rest() {
    let s = setup(true);
    // fail (fails after 50 ms); slow (1 s); after(slow) can never start; root(fail, after).
    let mut g = Graph::new();
    let fail = g.add_vertex(
        Op {
            fail: true,
            sleep_ms: 50,
            ..op("fail")
        },
        "fail".into(),
        vec![],
    );
    let slow = g.add_vertex(
        Op {
            sleep_ms: 1000,
            ..op("slow")
        },
        "slow".into(),
        vec![],
    );
    let after = g.add_vertex(op("after"), "after".into(), vec![slow]);
    let root = g.add_vertex(op("root"), "root".into(), vec![fail, after]);
    let err = s.solver.solve(&g, &[root], &opts()).await.unwrap_err();
    match &err {
        SolveError::Exec {
            vertex,
            name,
            source,
        } => {
            assert_eq!(*vertex, fail);
            assert_eq!(name, "fail");
            assert_eq!(source.to_string(), "fake op fail failed");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.to_string(), "fail failed");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(s.fake.execs(), vec!["fail", "slow"]);
    // The running sibling was aborted, not finished.
    assert!(s.fake.finished.lock().unwrap().is_empty());
    assert_eq!(s.fake.running.load(Ordering::SeqCst), 0);
    let events = s.events.take();
    check_terminal(&events);
    let k = kinds(&events);
    assert_eq!(k["fail"], vec!["started", "error"]);
    assert_eq!(k["slow"], vec!["started", "canceled"]);
    assert_eq!(k["after"], vec!["canceled"]);
    assert_eq!(k["root"], vec!["canceled"]);
    let error = events
        .iter()
        .find(|e| e.name == "fail" && e.kind.is_terminal())
        .unwrap();
    assert!(
        matches!(&error.kind, EventKind::Error { message, .. } if message == "fake op fail failed")
    );
    // The failed vertex's result was not recorded: a later solve runs it again.
    s.fake.reset();
    let _ = s.solver.solve(&g, &[fail], &opts()).await.unwrap_err();
    assert_eq!(s.fake.execs(), vec!["fail"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decode_none_is_a_miss() {
    let s = setup(true);
    let (g, d) = diamond(op("a"));
    s.solver.solve(&g, &[d], &opts()).await.unwrap();
    s.fake.reset();
    s.events.take();
    s.fake.decode_broken.store(true, Ordering::SeqCst);
    let out = s.solver.solve(&g, &[d], &opts()).await.unwrap();
    assert_eq!(out, vec!["d(b(a()),c(a()))".to_string()]);
    assert_eq!(s.fake.execs(), vec!["a", "b", "c", "d"]);
    // Every vertex was looked up once (a shared by b and c), and once more under its
    // cross-process claim before executing.
    assert_eq!(s.fake.decodes.load(Ordering::SeqCst), 8);
    check_terminal(&s.events.take());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_vertices_rerun_with_their_dependents_only() {
    let s = setup(true);
    let (g, d) = diamond(op("a"));
    s.solver.solve(&g, &[d], &opts()).await.unwrap();
    s.fake.reset();
    // b = vertex 1: b and its dependent d run; a and c are cache hits.
    let filtered = SolveOptions {
        no_cache_vertices: vec![VertexId(1)],
        ..opts()
    };
    s.solver.solve(&g, &[d], &filtered).await.unwrap();
    let mut ran = s.fake.execs();
    ran.sort();
    assert_eq!(ran, vec!["b", "d"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_executes_everything_and_still_records() {
    let s = setup(true);
    let (g, d) = diamond(op("a"));
    s.solver.solve(&g, &[d], &opts()).await.unwrap();
    s.fake.reset();
    let no_cache = SolveOptions {
        no_cache: true,
        ..opts()
    };
    s.solver.solve(&g, &[d], &no_cache).await.unwrap();
    assert_eq!(s.fake.execs(), vec!["a", "b", "c", "d"]);
    assert_eq!(s.fake.decodes.load(Ordering::SeqCst), 0);
    s.fake.reset();
    s.solver.solve(&g, &[d], &opts()).await.unwrap();
    assert!(s.fake.execs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_cacheable_vertex_always_runs() {
    let s = setup(true);
    let (g, d) = {
        let mut g = Graph::new();
        let a = g.add_vertex(op("a"), "a".into(), vec![]);
        let ctx = g.add_vertex(
            Op {
                cacheable: false,
                ..op("ctx")
            },
            "ctx".into(),
            vec![a],
        );
        (g, ctx)
    };
    s.solver.solve(&g, &[d], &opts()).await.unwrap();
    s.fake.reset();
    s.events.take();
    s.solver.solve(&g, &[d], &opts()).await.unwrap();
    assert_eq!(s.fake.execs(), vec!["ctx"]);
    let k = kinds(&s.events.take());
    assert_eq!(k["a"], vec!["cached"]);
    assert_eq!(k["ctx"], vec!["started", "done"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(INDEX_FILE_NAME);
    let (g, d) = diamond(op("a"));
    let fake = Arc::new(Fake::default());
    {
        let index = CacheIndex::open(&path).unwrap();
        let solver = Solver::new(fake.clone(), Some(index), ProgressSink::discard());
        solver.solve(&g, &[d], &opts()).await.unwrap();
    }
    fake.reset();
    let index = tokio::task::spawn_blocking(move || CacheIndex::open(&path))
        .await
        .unwrap()
        .unwrap();
    let solver = Solver::new(fake.clone(), Some(index), ProgressSink::discard());
    let out = solver.solve(&g, &[d], &opts()).await.unwrap();
    assert_eq!(out, vec!["d(b(a()),c(a()))".to_string()]);
    assert!(fake.execs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_open_while_held_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(INDEX_FILE_NAME);
    drop(CacheIndex::open(&path).unwrap());
    // A holder that keeps the file (e.g. an older rbuild): a CacheIndex lets go when idle.
    let _held = redb::Database::create(&path).unwrap();
    let p = path.clone();
    let err = tokio::task::spawn_blocking(move || {
        CacheIndex::open_with_timeout(&p, Duration::from_millis(200))
    })
    .await
    .unwrap()
    .unwrap_err();
    assert!(matches!(err, CacheError::Locked { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_solve_cancels_it() {
    let s = setup(true);
    let solver = Arc::new(s.solver);
    let mut g = Graph::new();
    let a = g.add_vertex(op("a"), "a".into(), vec![]);
    let slow = g.add_vertex(
        Op {
            sleep_ms: 5000,
            ..op("slow")
        },
        "slow".into(),
        vec![a],
    );
    let g = Arc::new(g);
    let (solver2, g2) = (solver.clone(), g.clone());
    let task =
        tokio::spawn(async move { solver2.solve(&g2, &[slow], &SolveOptions::default()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(s.fake.running.load(Ordering::SeqCst), 0);
    let events = s.events.take();
    check_terminal(&events);
    let k = kinds(&events);
    assert_eq!(k["a"], vec!["started", "done"]);
    assert_eq!(k["slow"], vec!["started", "canceled"]);
    // The index is intact: a's result is used, slow runs again.
    s.fake.reset();
    let quick = SolveOptions::default();
    let mut g3 = Graph::new();
    let a3 = g3.add_vertex(op("a"), "a".into(), vec![]);
    let b3 = g3.add_vertex(op("b"), "b".into(), vec![a3]);
    solver.solve(&g3, &[b3], &quick).await.unwrap();
    assert_eq!(s.fake.execs(), vec!["b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_key_failure_is_reported() {
    let s = setup(false);
    let mut g = Graph::new();
    let a = g.add_vertex(
        Op {
            key_fails: true,
            ..op("a")
        },
        "a".into(),
        vec![],
    );
    let b = g.add_vertex(op("b"), "b".into(), vec![a]);
    let err = s.solver.solve(&g, &[b], &opts()).await.unwrap_err();
    assert!(
        matches!(err, SolveError::CacheKey { vertex, ref name, .. } if vertex == a && name == "a"),
        "{err:?}"
    );
    assert!(s.fake.execs().is_empty());
    let k = kinds(&s.events.take());
    assert_eq!(k["a"], vec!["error"]);
}

#[tokio::test]
async fn bad_graphs_are_rejected() {
    let s = setup(false);
    let mut g = Graph::new();
    let a = g.add_vertex(op("a"), "a".into(), vec![VertexId(1)]);
    let err = s.solver.solve(&g, &[a], &opts()).await.unwrap_err();
    assert!(
        matches!(
            err,
            SolveError::UnknownVertex {
                vertex: VertexId(1)
            }
        ),
        "{err:?}"
    );
    let err = s
        .solver
        .solve(&g, &[VertexId(7)], &opts())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SolveError::UnknownVertex {
                vertex: VertexId(7)
            }
        ),
        "{err:?}"
    );
    let b = g.add_vertex(op("b"), "b".into(), vec![a]);
    let err = s.solver.solve(&g, &[b], &opts()).await.unwrap_err();
    assert!(matches!(err, SolveError::Cycle), "{err:?}");
    assert!(s.fake.execs().is_empty());
    assert_eq!(g.len(), 2);
    assert_eq!(g.name(b), "b");
    assert_eq!(g.name(VertexId(9)), "");
    assert!(s.solver.solve(&g, &[], &opts()).await.unwrap().is_empty());
}

/// Two solvers with their own index handles on one file (as two rbuild processes) solving the
/// same slow vertex at once: it runs once; the other waits for the claim and reuses the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_in_two_processes_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(INDEX_FILE_NAME);
    let mut g = Graph::new();
    let slow = g.add_vertex(
        Op {
            sleep_ms: 700,
            ..op("slow")
        },
        "slow".into(),
        vec![],
    );
    let g = Arc::new(g);
    let mut tasks = Vec::new();
    let mut fakes = Vec::new();
    let mut all_events = Vec::new();
    for _ in 0..2 {
        let p = path.clone();
        let index = tokio::task::spawn_blocking(move || CacheIndex::open(&p))
            .await
            .unwrap()
            .unwrap();
        let fake = Arc::new(Fake::default());
        let events = Events::default();
        let solver = Solver::new(fake.clone(), Some(index), events.sink());
        let g = g.clone();
        tasks.push(tokio::spawn(async move {
            solver.solve(&g, &[slow], &SolveOptions::default()).await
        }));
        fakes.push(fake);
        all_events.push(events);
        // Let the first one claim the key before the second looks it up.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), vec!["slow()".to_string()]);
    }
    let execs: usize = fakes.iter().map(|f| f.execs().len()).sum();
    assert_eq!(execs, 1, "executed once in all");
    let second = kinds(&all_events[1].take());
    assert_eq!(second["slow"], vec!["cached"]);
    assert_eq!(
        std::fs::read_dir(dir.path().join(format!("{INDEX_FILE_NAME}.locks")))
            .unwrap()
            .count(),
        0,
        "claims are released"
    );
}
