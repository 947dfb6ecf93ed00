//! The key side of a solve: every needed vertex's cache key, inputs first, concurrently; for a
//! vertex with content-keyed inputs ([`Executor::content_inputs`]) the key waits until those
//! inputs are resolved and their content digested, unless a link recorded by an earlier solve
//! (the key over the inputs' own keys -> the content slots) already says what it is.

use super::{Driver, Msg, Pending, Res, State};
use crate::{explain, CacheError, CacheIndex, CacheKey, ContentDigest, EventKind, Executor};
use crate::{ContentLink, KeyInput, SolveError, Table, VertexId};
use std::time::{Duration, Instant};
use tracing::debug;

/// Links of content-keyed vertices: the key over the inputs' own keys (32 bytes) -> the slot
/// keys of its content-keyed inputs, in input order (32 bytes each). Written when a solve
/// digests the inputs' content, read by later solves so that an unchanged graph needs no
/// input resolved to know its keys.
pub(crate) const CONTENT_LINKS: Table = Table::new("solver-content-links-v1");

impl<E: Executor> Driver<'_, E> {
    /// Starts the key computations of the vertices without inputs.
    pub(super) fn start_keys(&mut self, order: &[VertexId]) -> Res<E, ()> {
        for &v in order {
            let inputs = self.graph.inputs(v);
            self.key_waiting.insert(v, inputs.len());
            for &u in inputs {
                self.key_dependents.entry(u).or_default().push(v);
            }
        }
        for &v in order {
            if self.key_waiting.get(&v) == Some(&0) {
                self.spawn_key(v)?;
            }
        }
        Ok(())
    }

    fn input_keys(&self, v: VertexId) -> Res<E, Vec<CacheKey>> {
        self.node(v)?.inputs.iter().map(|&u| self.key(u)).collect()
    }

    fn spawn_key(&mut self, v: VertexId) -> Res<E, ()> {
        let inputs = self.input_keys(v)?;
        let vertex = self.node(v)?.vertex.clone();
        let executor = self.executor.clone();
        let slots = self.key_slots.clone();
        self.tasks.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let start = Instant::now();
            let result = executor
                .cache_key(&vertex, &inputs)
                .await
                .map(|input| (input, executor.content_inputs(&vertex)));
            Msg::Key(v, result, start.elapsed())
        });
        Ok(())
    }

    /// The executor said what `v`'s key is made of: the key is known now, or (with
    /// content-keyed inputs) after a link lookup or the inputs' content.
    pub(super) async fn key_input_ready(
        &mut self,
        v: VertexId,
        result: Result<(KeyInput, Vec<usize>), E::Error>,
        elapsed: Duration,
        order: &[VertexId],
        work: &mut Vec<(VertexId, Option<CacheKey>)>,
    ) -> Res<E, ()> {
        let (input, content) = match result {
            Ok(r) => r,
            Err(source) => return Err(self.key_failed(v, source)),
        };
        let inputs = self.input_keys(v)?;
        let mut content: Vec<usize> = content.into_iter().filter(|&i| i < inputs.len()).collect();
        content.sort_unstable();
        content.dedup();
        let key = CacheKey::compute(&input, &inputs);
        self.key_inputs.insert(v, input);
        if content.is_empty() {
            debug!(vertex = self.graph.name(v), key = %key, key_time = ?elapsed, "cache key");
            self.slots.insert(v, inputs);
            return self.key_known(v, key);
        }
        self.pending.insert(
            v,
            Pending {
                def_key: key,
                content: content.clone(),
                resolving: false,
                spawned: false,
            },
        );
        let node = self.node(v)?;
        match self.index.clone() {
            Some(index) if self.reads_cache(v, &node.vertex) => {
                let executor = self.executor.clone();
                self.tasks.spawn(async move {
                    let found = tokio::task::spawn_blocking(move || {
                        let n = content.len();
                        read_link(&index, &key, n).or_else(|| {
                            let slots =
                                executor.link_fallback(&key).filter(|slots| slots.len() == n)?;
                            // Kept locally, as a fallback's results are: the next solve needs
                            // no imported cache to stay lazy.
                            let _ = write_link(&index, &key, &slots);
                            Some(slots)
                        })
                    })
                    .await
                    .ok()
                    .flatten();
                    Msg::Link(v, found)
                });
                Ok(())
            }
            _ => self.resolve_content(v, order, work).await,
        }
    }

    /// A link lookup of pending `v` finished.
    pub(super) async fn link_found(
        &mut self,
        v: VertexId,
        content_slots: Option<Vec<CacheKey>>,
        order: &[VertexId],
        work: &mut Vec<(VertexId, Option<CacheKey>)>,
    ) -> Res<E, ()> {
        let Some(found) = content_slots else {
            return self.resolve_content(v, order, work).await;
        };
        let Some(pending) = self.pending.remove(&v) else {
            return Ok(());
        };
        let mut slots = self.input_keys(v)?;
        for (&i, &slot) in pending.content.iter().zip(&found) {
            slots[i] = slot;
        }
        self.links.insert(
            v,
            ContentLink {
                definition: pending.def_key,
                content: found,
            },
        );
        let key = match self.key_inputs.get(&v) {
            Some(input) => CacheKey::compute(input, &slots),
            None => return Err(SolveError::UnknownVertex { vertex: v }),
        };
        debug!(vertex = self.graph.name(v), key = %key, "cache key (content link)");
        self.slots.insert(v, slots);
        self.key_known(v, key)
    }

    /// No link for pending `v`: its content-keyed inputs are solved (looked up, executed on a
    /// miss) so that their content can be digested.
    async fn resolve_content(
        &mut self,
        v: VertexId,
        order: &[VertexId],
        work: &mut Vec<(VertexId, Option<CacheKey>)>,
    ) -> Res<E, ()> {
        // Explanations of the inputs' misses need the records of what is known so far.
        self.remember_known(order).await;
        let node = self.node(v)?;
        let Some(pending) = self.pending.get_mut(&v) else {
            return Ok(());
        };
        pending.resolving = true;
        for &i in pending.content.iter().rev() {
            if let Some(&u) = node.inputs.get(i) {
                work.push((u, None));
            }
        }
        Ok(())
    }

    /// Starts digesting the content of every pending vertex whose content inputs are done.
    pub(super) fn spawn_ready_content(&mut self) -> Res<E, ()> {
        let ready: Vec<VertexId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.resolving && !p.spawned)
            .map(|(&v, _)| v)
            .collect();
        for v in ready {
            let node = self.node(v)?;
            let Some(pending) = self.pending.get(&v) else {
                continue;
            };
            let mut values = Vec::with_capacity(pending.content.len());
            for &i in &pending.content {
                let u = node.inputs[i];
                match self.entries.get(&self.key(u)?).map(|e| &e.state) {
                    Some(State::Done(value)) => values.push((i, value.clone())),
                    _ => break,
                }
            }
            if values.len() < pending.content.len() {
                continue;
            }
            let (def_key, vertex) = (pending.def_key, node.vertex.clone());
            if let Some(p) = self.pending.get_mut(&v) {
                p.spawned = true;
            }
            let executor = self.executor.clone();
            let index = self.index.clone();
            self.tasks.spawn(async move {
                let start = Instant::now();
                let mut digests = Vec::with_capacity(values.len());
                for (i, value) in values {
                    match executor.content_digest(&vertex, i, &value).await {
                        Ok(d) => digests.push(d),
                        Err(e) => return Msg::Content(v, Err(e), start.elapsed()),
                    }
                }
                if let Some(index) = index {
                    // Only an accelerator: a lost link costs a content digest next time.
                    let slots: Vec<CacheKey> =
                        digests.iter().map(CacheKey::content_input).collect();
                    let written =
                        tokio::task::spawn_blocking(move || write_link(&index, &def_key, &slots))
                            .await;
                    if !matches!(written, Ok(Ok(()))) {
                        debug!("cannot record a content link");
                    }
                }
                Msg::Content(v, Ok(digests), start.elapsed())
            });
        }
        Ok(())
    }

    /// The content digests of pending `v` are in: its key is known.
    pub(super) fn content_ready(
        &mut self,
        v: VertexId,
        result: Result<Vec<ContentDigest>, E::Error>,
        elapsed: Duration,
    ) -> Res<E, ()> {
        let digests = match result {
            Ok(d) => d,
            Err(source) => return Err(self.key_failed(v, source)),
        };
        let Some(pending) = self.pending.remove(&v) else {
            return Ok(());
        };
        let mut slots = self.input_keys(v)?;
        let content: Vec<CacheKey> = digests.iter().map(CacheKey::content_input).collect();
        self.links.insert(
            v,
            ContentLink {
                definition: pending.def_key,
                content,
            },
        );
        for (&i, d) in pending.content.iter().zip(&digests) {
            slots[i] = CacheKey::content_input(d);
            debug!(vertex = self.graph.name(v), input = i, content = %hex::encode(d.digest), what = %d.what, "content of input");
        }
        let key = match self.key_inputs.get(&v) {
            Some(input) => CacheKey::compute(input, &slots),
            None => return Err(SolveError::UnknownVertex { vertex: v }),
        };
        debug!(vertex = self.graph.name(v), key = %key, content_time = ?elapsed, "cache key (by content)");
        self.slots.insert(v, slots);
        self.key_known(v, key)
    }

    fn key_failed(&mut self, v: VertexId, source: E::Error) -> SolveError<E::Error> {
        self.emit(
            v,
            EventKind::Error {
                message: source.to_string(),
                duration: Duration::ZERO,
            },
        );
        SolveError::CacheKey {
            vertex: v,
            name: self.graph.name(v).to_string(),
            source,
        }
    }

    /// `v`'s key is `key`: its dependents whose inputs all have keys start theirs.
    fn key_known(&mut self, v: VertexId, key: CacheKey) -> Res<E, ()> {
        self.keys.insert(v, key);
        let dependents = self.key_dependents.get(&v).cloned().unwrap_or_default();
        for d in dependents {
            if let Some(r) = self.key_waiting.get_mut(&d) {
                *r = r.saturating_sub(1);
                if *r == 0 {
                    self.spawn_key(d)?;
                }
            }
        }
        Ok(())
    }

    /// Records the key of every vertex of `order` known and not yet recorded under its name
    /// and, when debug logs are on, notes why each would miss (see [`explain`]).
    pub(super) async fn remember_known(&mut self, order: &[VertexId]) {
        let Some(index) = self.index.clone() else {
            return;
        };
        let fresh: Vec<VertexId> = order
            .iter()
            .copied()
            .filter(|v| self.keys.contains_key(v) && !self.recorded.contains(v))
            .collect();
        if fresh.is_empty() {
            return;
        }
        self.recorded.extend(fresh.iter().copied());
        let why = explain::remember_keys(
            index,
            self.graph,
            &fresh,
            &self.keys,
            &self.key_inputs,
            &self.slots,
        )
        .await;
        self.why.extend(why);
    }
}

fn read_link(index: &CacheIndex, def_key: &CacheKey, n: usize) -> Option<Vec<CacheKey>> {
    let bytes = index.get_in(CONTENT_LINKS, &def_key.0).ok()??;
    if bytes.len() != 32 * n {
        return None;
    }
    bytes
        .chunks_exact(32)
        .map(|c| c.try_into().ok().map(CacheKey))
        .collect()
}

fn write_link(
    index: &CacheIndex,
    def_key: &CacheKey,
    slots: &[CacheKey],
) -> Result<(), CacheError> {
    let bytes: Vec<u8> = slots.iter().flat_map(|k| k.0).collect();
    index.put_in(CONTENT_LINKS, &def_key.0, &bytes)
}
