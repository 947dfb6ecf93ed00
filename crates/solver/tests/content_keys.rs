//! Content-keyed inputs (`Executor::content_inputs`): a dependent's key takes the digest of
//! what it reads from the input, computed after the input is resolved, so an input rebuilt to
//! the same content leaves everything after it cached (early cutoff), a changed content re-runs
//! it, and an unchanged graph is solved lazily through the recorded links.

use rbuild_solver::*;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
#[error("fake op {0} failed")]
struct FakeError(String);

/// A vertex: its key material, the output it produces (`None`: derived from the key material
/// and the inputs) and which inputs count by content.
#[derive(Clone, Debug)]
struct Op {
    id: &'static str,
    material: String,
    output: Option<String>,
    content: Vec<usize>,
    /// Waits in `exec` for the other rendezvous vertex to run too (fails after 5 s).
    rendezvous: bool,
}

fn op(id: &'static str) -> Op {
    Op {
        id,
        material: id.to_string(),
        output: None,
        content: Vec::new(),
        rendezvous: false,
    }
}

struct Fake {
    barrier: tokio::sync::Barrier,
    execs: Mutex<Vec<&'static str>>,
    decodes: Mutex<Vec<String>>,
    digests: Mutex<Vec<&'static str>>,
}

impl Default for Fake {
    fn default() -> Self {
        Fake {
            barrier: tokio::sync::Barrier::new(2),
            execs: Mutex::default(),
            decodes: Mutex::default(),
            digests: Mutex::default(),
        }
    }
}

impl Fake {
    fn take(&self) -> (Vec<&'static str>, Vec<String>, Vec<&'static str>) {
        let mut execs = std::mem::take(&mut *self.execs.lock().unwrap());
        execs.sort();
        let decodes = std::mem::take(&mut *self.decodes.lock().unwrap());
        let digests = std::mem::take(&mut *self.digests.lock().unwrap());
        (execs, decodes, digests)
    }
}

impl Executor for Fake {
    type Vertex = Op;
    type Value = String;
    type Error = FakeError;

    async fn cache_key(&self, vertex: &Op, _: &[CacheKey]) -> Result<KeyInput, FakeError> {
        Ok(KeyInput::op(vertex.material.as_bytes().to_vec()))
    }

    fn content_inputs(&self, vertex: &Op) -> Vec<usize> {
        vertex.content.clone()
    }

    fn content_selector(&self, _: &Op, input: usize) -> Vec<u8> {
        (input as u64).to_le_bytes().to_vec()
    }

    async fn content_digest(
        &self,
        vertex: &Op,
        input: usize,
        value: &String,
    ) -> Result<ContentDigest, FakeError> {
        if !vertex.content.contains(&input) || vertex.material == "fail" {
            return Err(FakeError(format!(
                "{}: input {input} is not by content",
                vertex.id
            )));
        }
        self.digests.lock().unwrap().push(vertex.id);
        Ok(ContentDigest {
            what: format!("input {input}"),
            digest: *blake3::hash(value.as_bytes()).as_bytes(),
        })
    }

    async fn exec(
        &self,
        vertex: &Op,
        inputs: Vec<String>,
        _: ExecContext,
    ) -> Result<String, FakeError> {
        self.execs.lock().unwrap().push(vertex.id);
        if vertex.rendezvous {
            let met = tokio::time::timeout(std::time::Duration::from_secs(5), self.barrier.wait());
            if met.await.is_err() {
                return Err(FakeError(format!("{} ran alone", vertex.id)));
            }
        }
        Ok(match &vertex.output {
            Some(out) => out.clone(),
            None => format!("{}({})", vertex.material, inputs.join(",")),
        })
    }

    fn encode(&self, value: &String) -> Vec<u8> {
        value.as_bytes().to_vec()
    }

    fn decode(&self, bytes: &[u8]) -> Option<String> {
        let value = String::from_utf8(bytes.to_vec()).ok()?;
        self.decodes.lock().unwrap().push(value.clone());
        Some(value)
    }
}

struct Setup {
    fake: Arc<Fake>,
    solver: Solver<Fake>,
    events: Arc<Mutex<Vec<Event>>>,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let index = CacheIndex::open(&dir.path().join(INDEX_FILE_NAME)).unwrap();
    let fake = Arc::new(Fake::default());
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let events = events.clone();
        ProgressSink::new(move |e| events.lock().unwrap().push(e))
    };
    Setup {
        solver: Solver::new(fake.clone(), Some(index), sink),
        fake,
        events,
        _dir: dir,
    }
}

impl Setup {
    /// (name, kind) of the terminal events of the last solve.
    fn terminals(&self) -> Vec<(String, &'static str)> {
        let mut out: Vec<_> = std::mem::take(&mut *self.events.lock().unwrap())
            .into_iter()
            .filter_map(|e| {
                let kind = match e.kind {
                    EventKind::Cached => "cached",
                    EventKind::Done { .. } => "done",
                    EventKind::Error { .. } => "error",
                    EventKind::Canceled => "canceled",
                    _ => return None,
                };
                Some((e.name, kind))
            })
            .collect();
        out.sort();
        out
    }
}

/// `src` -> `build(src)` (output `built`) -> `copy(base, build by content)` -> `run(copy)`,
/// like `COPY src/ ...; RUN make` in a builder stage, then `COPY --from=builder` and a RUN.
fn cutoff_graph(src: &str, built: &str) -> (Graph<Op>, VertexId) {
    let mut g = Graph::new();
    let s = g.add_vertex(
        Op {
            material: src.to_string(),
            ..op("src")
        },
        "src".into(),
        vec![],
    );
    let b = g.add_vertex(
        Op {
            output: Some(built.to_string()),
            ..op("build")
        },
        "build".into(),
        vec![s],
    );
    let base = g.add_vertex(op("base"), "base".into(), vec![]);
    let c = g.add_vertex(
        Op {
            content: vec![1],
            ..op("copy")
        },
        "copy".into(),
        vec![base, b],
    );
    let r = g.add_vertex(op("run"), "run".into(), vec![c]);
    (g, r)
}

fn named(items: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
    let mut v: Vec<_> = items.iter().map(|(n, k)| (n.to_string(), *k)).collect();
    v.sort();
    v
}

#[tokio::test]
async fn an_identical_rebuilt_input_leaves_its_dependents_cached() {
    let s = setup();
    let opts = SolveOptions::default();
    let (g, r) = cutoff_graph("v1", "app");
    let (first, keys1) = s.solver.solve_with_keys(&g, &[r], &opts).await.unwrap();
    assert_eq!(first, ["run(copy(base(),app))"]);
    assert_eq!(s.fake.take().0, ["base", "build", "copy", "run", "src"]);
    s.terminals();

    // No-op: the link gives the copy's key without resolving the builder.
    let (again, keys2) = s.solver.solve_with_keys(&g, &[r], &opts).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(keys1, keys2, "the keys the solve used are stable");
    let (execs, decodes, digests) = s.fake.take();
    assert!(execs.is_empty(), "{execs:?}");
    assert_eq!(
        decodes,
        ["run(copy(base(),app))"],
        "only the target is looked up"
    );
    assert!(digests.is_empty(), "no content digested: {digests:?}");
    assert_eq!(s.terminals(), named(&[("run", "cached")]));

    // The source changes but the builder's output stays the same: the builder re-runs, the
    // copy's key is unchanged, and the run after it stays cached.
    let (g2, r2) = cutoff_graph("v2", "app");
    let (cut, keys3) = s.solver.solve_with_keys(&g2, &[r2], &opts).await.unwrap();
    assert_eq!(cut, first);
    let (execs, _, digests) = s.fake.take();
    assert_eq!(execs, ["build", "src"]);
    assert_eq!(digests, ["copy"]);
    assert_eq!(keys3[&VertexId(3)], keys1[&VertexId(3)], "same copy key");
    assert_eq!(
        s.terminals(),
        named(&[("build", "done"), ("src", "done"), ("run", "cached")])
    );
    // And that rebuild is now linked too.
    s.solver.solve(&g2, &[r2], &opts).await.unwrap();
    assert!(s.fake.take().0.is_empty());
    s.terminals();

    // The builder's output changes: everything after it re-runs.
    let (g3, r3) = cutoff_graph("v3", "app2");
    let (changed, _) = s.solver.solve_with_keys(&g3, &[r3], &opts).await.unwrap();
    assert_eq!(changed, ["run(copy(base(),app2))"]);
    assert_eq!(s.fake.take().0, ["build", "copy", "run", "src"]);
}

#[tokio::test]
async fn no_cache_digests_the_fresh_result() {
    let s = setup();
    let (g, r) = cutoff_graph("v1", "app");
    s.solver
        .solve(&g, &[r], &SolveOptions::default())
        .await
        .unwrap();
    s.fake.take();
    let no_cache = SolveOptions {
        no_cache: true,
        ..SolveOptions::default()
    };
    let (_, keys) = s.solver.solve_with_keys(&g, &[r], &no_cache).await.unwrap();
    let (execs, decodes, digests) = s.fake.take();
    assert_eq!(execs, ["base", "build", "copy", "run", "src"]);
    assert!(decodes.is_empty(), "--no-cache reads nothing: {decodes:?}");
    assert_eq!(digests, ["copy"], "no link is read under --no-cache");
    // The builder's output changes under --no-cache-filter of the builder: the copy's key
    // follows the fresh content, not the earlier link.
    let (g2, r2) = cutoff_graph("v1", "other");
    let filtered = SolveOptions {
        no_cache_vertices: vec![VertexId(1)],
        ..SolveOptions::default()
    };
    let (out, keys2) = s
        .solver
        .solve_with_keys(&g2, &[r2], &filtered)
        .await
        .unwrap();
    assert_eq!(out, ["run(copy(base(),other))"]);
    assert_ne!(keys[&VertexId(3)], keys2[&VertexId(3)]);
    let (execs, _, _) = s.fake.take();
    assert_eq!(execs, ["build", "copy", "run"]);
}

#[tokio::test]
async fn a_failing_content_digest_fails_the_solve_naming_the_vertex() {
    let s = setup();
    let mut g = Graph::new();
    let b = g.add_vertex(op("build"), "build".into(), vec![]);
    // The fake's digest fails for the material `fail`.
    let c = g.add_vertex(
        Op {
            content: vec![0],
            material: "fail".into(),
            ..op("copy")
        },
        "copy".into(),
        vec![b],
    );
    let err = s
        .solver
        .solve(&g, &[c], &SolveOptions::default())
        .await
        .expect_err("the digest fails");
    match err {
        SolveError::CacheKey { name, .. } => assert_eq!(name, "copy"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(s.terminals().contains(&("copy".to_string(), "error")));

    // A content input out of range is ignored (keyed as an ordinary input).
    let mut g2 = Graph::new();
    let b2 = g2.add_vertex(op("build"), "build".into(), vec![]);
    let fine = g2.add_vertex(
        Op {
            content: vec![5],
            ..op("fine")
        },
        "fine".into(),
        vec![b2],
    );
    let out = s
        .solver
        .solve(&g2, &[fine], &SolveOptions::default())
        .await
        .unwrap();
    assert_eq!(out, ["fine(build())"]);
}

/// `base`; `s1`, `s2` (independent stages); `copy1(base, s1 by content)`;
/// `copy2(copy1, s2 by content)`: s2's content is needed before copy1's key is known, so the
/// two stages must build concurrently (each waits for the other to run).
#[tokio::test]
async fn stages_copied_one_after_another_build_concurrently() {
    let s = setup();
    let mut g = Graph::new();
    let base = g.add_vertex(op("base"), "base".into(), vec![]);
    let rendezvous = |id| Op {
        rendezvous: true,
        ..op(id)
    };
    let s1 = g.add_vertex(rendezvous("s1"), "s1".into(), vec![]);
    let s2 = g.add_vertex(rendezvous("s2"), "s2".into(), vec![]);
    let by_content = |id| Op {
        content: vec![1],
        ..op(id)
    };
    let c1 = g.add_vertex(by_content("copy1"), "copy1".into(), vec![base, s1]);
    let c2 = g.add_vertex(by_content("copy2"), "copy2".into(), vec![c1, s2]);
    let out = s
        .solver
        .solve(&g, &[c2], &SolveOptions::default())
        .await
        .expect("the stages ran together");
    assert_eq!(out, ["copy2(copy1(base(),s1()),s2())"]);
    assert_eq!(s.fake.take().0, ["base", "copy1", "copy2", "s1", "s2"]);
    // No-op: links settle both edges; only the target is looked up.
    s.solver
        .solve(&g, &[c2], &SolveOptions::default())
        .await
        .unwrap();
    let (execs, decodes, digests) = s.fake.take();
    assert!(execs.is_empty() && digests.is_empty());
    assert_eq!(decodes.len(), 1);
}
