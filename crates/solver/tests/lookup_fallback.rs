//! `Executor::lookup_fallback` (e.g. an imported remote build cache): consulted only when the
//! index misses; a hit is `Cached` and nothing below it is looked up or run.

use rbuild_solver::*;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[derive(Default)]
struct Remote {
    /// Keys the "remote cache" has, with their values.
    remote: Mutex<HashMap<CacheKey, String>>,
    fallbacks: Mutex<Vec<CacheKey>>,
    execs: Mutex<Vec<&'static str>>,
}

impl Executor for Remote {
    type Vertex = &'static str;
    type Value = String;
    type Error = Never;

    async fn cache_key(&self, v: &&'static str, _: &[CacheKey]) -> Result<KeyInput, Never> {
        Ok(KeyInput::op(v.as_bytes().to_vec()))
    }

    async fn exec(
        &self,
        v: &&'static str,
        inputs: Vec<String>,
        _: ExecContext,
    ) -> Result<String, Never> {
        self.execs.lock().unwrap().push(v);
        Ok(format!("{v}({})", inputs.join(",")))
    }

    fn content_selector(&self, _: &&'static str, _: usize) -> Vec<u8> {
        Vec::new()
    }

    async fn content_digest(
        &self,
        _: &&'static str,
        _: usize,
        value: &String,
    ) -> Result<ContentDigest, Never> {
        Ok(ContentDigest {
            what: String::new(),
            digest: *blake3::hash(value.as_bytes()).as_bytes(),
        })
    }

    fn encode(&self, value: &String) -> Vec<u8> {
        value.as_bytes().to_vec()
    }

    fn decode(&self, bytes: &[u8]) -> Option<String> {
        String::from_utf8(bytes.to_vec()).ok()
    }

    fn lookup_fallback(&self, key: &CacheKey) -> Option<String> {
        self.fallbacks.lock().unwrap().push(*key);
        self.remote.lock().unwrap().get(key).cloned()
    }
}

#[tokio::test]
async fn fallback_hits_are_cached_and_prune_their_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let index = CacheIndex::open(&dir.path().join(INDEX_FILE_NAME)).unwrap();
    let exec = Arc::new(Remote::default());
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let events = events.clone();
        ProgressSink::new(move |e: Event| events.lock().unwrap().push(e))
    };
    let mut g = Graph::new();
    let a = g.add_vertex("a", "a".into(), vec![]);
    let b = g.add_vertex("b", "b".into(), vec![a]);
    let c = g.add_vertex("c", "c".into(), vec![b]);
    // The remote cache has b's result.
    let ka = CacheKey::compute(&exec.cache_key(&"a", &[]).await.unwrap(), &[]);
    let kb = CacheKey::compute(&exec.cache_key(&"b", &[ka]).await.unwrap(), &[ka]);
    exec.remote.lock().unwrap().insert(kb, "remote-b".into());

    let solver = Solver::new(exec.clone(), Some(index.clone()), sink);
    let out = solver
        .solve(&g, &[c], &SolveOptions::default())
        .await
        .unwrap();
    assert_eq!(out, vec!["c(remote-b)".to_string()]);
    // c missed everywhere and ran; b came from the fallback; a was never needed.
    assert_eq!(*exec.execs.lock().unwrap(), vec!["c"]);
    let fallbacks: HashSet<CacheKey> = exec.fallbacks.lock().unwrap().iter().copied().collect();
    assert!(fallbacks.contains(&kb) && !fallbacks.contains(&ka));
    let kinds: Vec<(String, bool)> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.kind.is_terminal())
        .map(|e| (e.name.clone(), matches!(e.kind, EventKind::Cached)))
        .collect();
    assert!(kinds.contains(&("b".into(), true)), "{kinds:?}");
    assert!(!kinds.iter().any(|(n, _)| n == "a"), "{kinds:?}");

    // A local index hit never consults the fallback.
    exec.fallbacks.lock().unwrap().clear();
    let solver = Solver::new(exec.clone(), Some(index), ProgressSink::discard());
    solver
        .solve(&g, &[c], &SolveOptions::default())
        .await
        .unwrap();
    assert!(exec.fallbacks.lock().unwrap().is_empty());
}
