//! The key side of a solve: every needed vertex's cache key, inputs first, concurrently.
//!
//! An input a vertex reads by content ([`Executor::content_inputs`]) fills its slot in the
//! vertex's key with [`CacheKey::content_input`] of what the vertex reads from it. Each such
//! edge is settled on its own as soon as the input's key is known: a link recorded by an earlier
//! solve (the input's key and the vertex's selector -> the slot, like BuildKit's dependency key
//! with a selector) gives the slot at once; otherwise the input is solved (looked up, executed
//! on a miss), its content digested and the link recorded. Edges settle concurrently, so
//! independent stages copied one after another still build in parallel.

use super::{Driver, Msg, Res, State};
use crate::{explain, CacheError, CacheIndex, CacheKey, ContentDigest, EventKind, Executor};
use crate::{ContentLink, KeyInput, SolveError, Table, VertexId, KEY_VERSION};
use std::time::{Duration, Instant};
use tracing::debug;

/// Content links: the link key of an edge ([`link_key`]: the input's key and the reader's
/// selector, 32 bytes) -> the slot it filled (32 bytes). Written when a solve digests an input,
/// read by later solves so that an unchanged graph needs no input resolved to know its keys.
pub(crate) const CONTENT_LINKS: Table = Table::new("solver-content-links-v1");

/// The domain of a link key.
const LINK_DOMAIN: &[u8] = b"rbuild-content-link";

/// The link key of a content-keyed edge: the input's key and what the reader selects from it.
pub(super) fn link_key(input: &CacheKey, selector: &[u8]) -> CacheKey {
    let version = KEY_VERSION.to_le_bytes();
    CacheKey::from_parts(&[LINK_DOMAIN, &version[..], &input.0[..], selector])
}

/// A content-keyed edge waiting for its input's value to be digested.
pub(super) struct PendingDigest {
    /// The reading vertex.
    pub(super) vertex: VertexId,
    /// The input index.
    pub(super) input: usize,
    /// Its link key.
    pub(super) link: CacheKey,
    /// The digest is being computed.
    pub(super) spawned: bool,
}

impl<E: Executor> Driver<'_, E> {
    /// Notes each vertex's content-keyed inputs and starts the vertices without inputs.
    pub(super) fn start_keys(&mut self, order: &[VertexId]) -> Res<E, ()> {
        for &v in order {
            let node = self.node(v)?;
            let n = node.inputs.len();
            let mut content: Vec<usize> = self
                .executor
                .content_inputs(&node.vertex)
                .into_iter()
                .filter(|&i| i < n)
                .collect();
            content.sort_unstable();
            content.dedup();
            self.key_waiting.insert(v, n);
            for (i, &u) in node.inputs.iter().enumerate() {
                self.key_dependents.entry(u).or_default().push((v, i));
            }
            if !content.is_empty() {
                self.content_of.insert(v, content);
            }
        }
        for &v in order {
            if self.key_waiting.get(&v) == Some(&0) {
                self.spawn_key(v)?;
            }
        }
        Ok(())
    }

    fn is_content_edge(&self, v: VertexId, i: usize) -> bool {
        self.content_of.get(&v).is_some_and(|c| c.contains(&i))
    }

    /// `v`'s input keys as its key uses them: content-keyed inputs' slots in their place.
    fn slot_keys(&self, v: VertexId) -> Res<E, Vec<CacheKey>> {
        let node = self.node(v)?;
        let mut out = Vec::with_capacity(node.inputs.len());
        for (i, &u) in node.inputs.iter().enumerate() {
            match self.content_slots.get(&(v, i)) {
                Some(&slot) if self.is_content_edge(v, i) => out.push(slot),
                _ => out.push(self.key(u)?),
            }
        }
        Ok(out)
    }

    fn spawn_key(&mut self, v: VertexId) -> Res<E, ()> {
        let node = self.node(v)?;
        let inputs: Vec<CacheKey> = node
            .inputs
            .iter()
            .map(|&u| self.key(u))
            .collect::<Result<_, _>>()?;
        let vertex = node.vertex.clone();
        let executor = self.executor.clone();
        let slots = self.key_slots.clone();
        self.tasks.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let start = Instant::now();
            let result = executor.cache_key(&vertex, &inputs).await;
            Msg::Key(v, result, start.elapsed())
        });
        Ok(())
    }

    /// The executor said what `v`'s key is made of: its key is known.
    pub(super) fn key_input_ready(
        &mut self,
        v: VertexId,
        result: Result<KeyInput, E::Error>,
        elapsed: Duration,
    ) -> Res<E, ()> {
        let input = match result {
            Ok(r) => r,
            Err(source) => return Err(self.key_failed(v, source)),
        };
        let slots = self.slot_keys(v)?;
        let key = CacheKey::compute(&input, &slots);
        debug!(vertex = self.graph.name(v), key = %key, key_time = ?elapsed, "cache key");
        self.key_inputs.insert(v, input);
        self.slots.insert(v, slots);
        self.keys.insert(v, key);
        let dependents = self.key_dependents.get(&v).cloned().unwrap_or_default();
        for (d, i) in dependents {
            if self.is_content_edge(d, i) {
                self.start_edge(d, i, key)?;
            } else {
                self.slot_ready(d)?;
            }
        }
        Ok(())
    }

    /// One more input slot of `v` is known; its key starts when all are.
    fn slot_ready(&mut self, v: VertexId) -> Res<E, ()> {
        if let Some(r) = self.key_waiting.get_mut(&v) {
            *r = r.saturating_sub(1);
            if *r == 0 {
                self.spawn_key(v)?;
            }
        }
        Ok(())
    }

    /// The content-keyed edge (`v`, input `i`) whose input has key `input_key`: looks its link
    /// up (unless `v` must not read the cache), else resolves the input.
    fn start_edge(&mut self, v: VertexId, i: usize, input_key: CacheKey) -> Res<E, ()> {
        let node = self.node(v)?;
        let link = link_key(&input_key, &self.executor.content_selector(&node.vertex, i));
        match self.index.clone() {
            Some(index) if self.reads_cache(v, &node.vertex) => {
                let executor = self.executor.clone();
                self.tasks.spawn(async move {
                    let found = tokio::task::spawn_blocking(move || {
                        read_link(&index, &link).or_else(|| {
                            let slot = executor.link_fallback(&link)?;
                            // Kept locally, as a fallback's results are: the next solve needs
                            // no imported cache to stay lazy.
                            let _ = write_link(&index, &link, &slot);
                            Some(slot)
                        })
                    })
                    .await
                    .ok()
                    .flatten();
                    Msg::Link(v, i, link, found)
                });
            }
            _ => self.digest_later(v, i, link),
        }
        Ok(())
    }

    /// A link lookup of edge (`v`, `i`) finished.
    pub(super) async fn link_found(
        &mut self,
        v: VertexId,
        i: usize,
        link: CacheKey,
        slot: Option<CacheKey>,
        order: &[VertexId],
    ) -> Res<E, ()> {
        match slot {
            Some(slot) => {
                debug!(vertex = self.graph.name(v), input = i, slot = %slot, "content slot (link)");
                self.edge_known(v, i, link, slot)
            }
            None => {
                // Explanations of the input's misses need the records known so far.
                self.remember_known(order).await;
                self.digest_later(v, i, link);
                Ok(())
            }
        }
    }

    fn digest_later(&mut self, v: VertexId, i: usize, link: CacheKey) {
        if let Some(&u) = self.graph.inputs(v).get(i) {
            self.resolving.push(u);
        }
        self.digests.push(PendingDigest {
            vertex: v,
            input: i,
            link,
            spawned: false,
        });
    }

    /// Requests the inputs of edges without links (`--no-cache`, uncached vertices).
    pub(super) fn take_resolving(&mut self) -> Vec<VertexId> {
        std::mem::take(&mut self.resolving)
    }

    /// Starts digesting every pending edge whose input is done.
    pub(super) fn spawn_ready_digests(&mut self) -> Res<E, ()> {
        for n in 0..self.digests.len() {
            let (v, i, link) = match &self.digests[n] {
                p if !p.spawned => (p.vertex, p.input, p.link),
                _ => continue,
            };
            let node = self.node(v)?;
            let Some(&u) = node.inputs.get(i) else {
                continue;
            };
            let value = match self.entries.get(&self.key(u)?).map(|e| &e.state) {
                Some(State::Done(value)) => value.clone(),
                _ => continue,
            };
            self.digests[n].spawned = true;
            let vertex = node.vertex.clone();
            let executor = self.executor.clone();
            let index = self.index.clone();
            self.tasks.spawn(async move {
                let start = Instant::now();
                let digest = executor.content_digest(&vertex, i, &value).await;
                if let (Ok(d), Some(index)) = (&digest, index) {
                    // Only an accelerator: a lost link costs a digest next time.
                    let slot = CacheKey::content_input(d);
                    let written =
                        tokio::task::spawn_blocking(move || write_link(&index, &link, &slot)).await;
                    if !matches!(written, Ok(Ok(()))) {
                        debug!("cannot record a content link");
                    }
                }
                Msg::Content(v, i, link, digest, start.elapsed())
            });
        }
        self.digests.retain(|p| !p.spawned);
        Ok(())
    }

    /// The digest of edge (`v`, `i`) is in.
    pub(super) fn content_ready(
        &mut self,
        v: VertexId,
        i: usize,
        link: CacheKey,
        result: Result<ContentDigest, E::Error>,
        elapsed: Duration,
    ) -> Res<E, ()> {
        let digest = match result {
            Ok(d) => d,
            Err(source) => return Err(self.key_failed(v, source)),
        };
        let slot = CacheKey::content_input(&digest);
        debug!(
            vertex = self.graph.name(v),
            input = i,
            what = %digest.what,
            slot = %slot,
            content_time = ?elapsed,
            "content slot (digested)"
        );
        self.edge_known(v, i, link, slot)
    }

    fn edge_known(&mut self, v: VertexId, i: usize, link: CacheKey, slot: CacheKey) -> Res<E, ()> {
        self.content_slots.insert((v, i), slot);
        self.links
            .entry(v)
            .or_default()
            .push(ContentLink { link, slot });
        self.slot_ready(v)
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

fn read_link(index: &CacheIndex, link: &CacheKey) -> Option<CacheKey> {
    let bytes = index.get_in(CONTENT_LINKS, &link.0).ok()??;
    <[u8; 32]>::try_from(bytes.as_slice()).ok().map(CacheKey)
}

fn write_link(index: &CacheIndex, link: &CacheKey, slot: &CacheKey) -> Result<(), CacheError> {
    index.put_in(CONTENT_LINKS, &link.0, &slot.0)
}
