//! Why a vertex missed the cache: every solve remembers each vertex's key and its components
//! (op digest, inputs' keys, content digests) in the index under the vertex's name
//! ([`KEY_RECORDS`]); the next solve compares a vertex's new components with that record and
//! says which one changed. The records only explain; they never decide a hit.
//!
//! The name identifies a vertex across builds (e.g. `[build 2/4] RUN make`): a RUN whose
//! command changed has a new name and shows up as a new vertex, one whose environment changed
//! keeps its name and shows up as "the op changed". Two projects sharing a root and a step
//! name overwrite each other's record, which only makes the explanation less precise.

use crate::{CacheError, CacheIndex, CacheKey, Graph, KeyInput, Table, VertexId};
use std::collections::HashMap;
use tracing::debug;

/// The table of key records: vertex name -> [`KeyRecord`] bytes.
pub(crate) const KEY_RECORDS: Table = Table::new("solver-key-records-v1");

/// The format version byte at the start of a record.
const RECORD_VERSION: u8 = 1;

/// A vertex's key and what it was made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyRecord {
    pub(crate) key: CacheKey,
    /// blake3 of the op's key encoding.
    pub(crate) op: [u8; 32],
    pub(crate) inputs: Vec<CacheKey>,
    pub(crate) content: Vec<[u8; 32]>,
}

impl KeyRecord {
    pub(crate) fn new(key: CacheKey, input: &KeyInput, inputs: &[CacheKey]) -> KeyRecord {
        KeyRecord {
            key,
            op: input.op_digest(),
            inputs: inputs.to_vec(),
            content: input.content.iter().map(|c| c.digest).collect(),
        }
    }

    /// Version byte, key, op digest, then the inputs and the content digests, each list as a
    /// u32 LE count and 32-byte items.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(1 + 64 + 8 + 32 * (self.inputs.len() + self.content.len()));
        out.push(RECORD_VERSION);
        out.extend_from_slice(&self.key.0);
        out.extend_from_slice(&self.op);
        out.extend_from_slice(&(self.inputs.len() as u32).to_le_bytes());
        for k in &self.inputs {
            out.extend_from_slice(&k.0);
        }
        out.extend_from_slice(&(self.content.len() as u32).to_le_bytes());
        for c in &self.content {
            out.extend_from_slice(c);
        }
        out
    }

    /// `None` for bytes not written by [`KeyRecord::encode`] of this version.
    pub(crate) fn decode(bytes: &[u8]) -> Option<KeyRecord> {
        let mut r = Reader(bytes);
        if r.take(1)? != [RECORD_VERSION] {
            return None;
        }
        let key = CacheKey(r.hash()?);
        let op = r.hash()?;
        let n = r.count()?;
        let inputs = (0..n)
            .map(|_| r.hash().map(CacheKey))
            .collect::<Option<_>>()?;
        let n = r.count()?;
        let content = (0..n).map(|_| r.hash()).collect::<Option<_>>()?;
        r.0.is_empty().then_some(KeyRecord {
            key,
            op,
            inputs,
            content,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn hash(&mut self) -> Option<[u8; 32]> {
        self.take(32)?.try_into().ok()
    }

    fn count(&mut self) -> Option<usize> {
        let b: [u8; 4] = self.take(4)?.try_into().ok()?;
        Some(u32::from_le_bytes(b) as usize)
    }
}

/// What differs between a vertex's previous record and its new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// No record: the vertex was never built under this name (or the record was unreadable).
    New,
    /// The same key as last time.
    Unchanged,
    /// The op's key encoding changed.
    Op,
    /// It has a different number of inputs or content digests.
    Shape,
    /// These inputs' keys changed (indexes).
    Inputs(Vec<usize>),
    /// These content digests changed (indexes).
    Content(Vec<usize>),
}

/// Compares `now` with the previous record: the op first, then the inputs, then the content.
pub(crate) fn compare(prev: Option<&KeyRecord>, now: &KeyRecord) -> Change {
    let Some(prev) = prev else {
        return Change::New;
    };
    if prev.key == now.key {
        return Change::Unchanged;
    }
    if prev.op != now.op {
        return Change::Op;
    }
    if prev.inputs.len() != now.inputs.len() || prev.content.len() != now.content.len() {
        return Change::Shape;
    }
    let changed = |a: &[[u8; 32]], b: &[[u8; 32]]| -> Vec<usize> {
        a.iter()
            .zip(b)
            .enumerate()
            .filter(|(_, (x, y))| x != y)
            .map(|(i, _)| i)
            .collect()
    };
    let prev_inputs: Vec<[u8; 32]> = prev.inputs.iter().map(|k| k.0).collect();
    let now_inputs: Vec<[u8; 32]> = now.inputs.iter().map(|k| k.0).collect();
    let inputs = changed(&prev_inputs, &now_inputs);
    if !inputs.is_empty() {
        return Change::Inputs(inputs);
    }
    Change::Content(changed(&prev.content, &now.content))
}

/// Records the key of every vertex of `order` (with its components, from `keys`,
/// `key_inputs` and `slots`, the input keys each key was computed over) under its name and
/// returns, when debug logs are on, why each would miss. Failures only cost the explanations
/// (logged).
pub(crate) async fn remember_keys<V>(
    index: CacheIndex,
    graph: &Graph<V>,
    order: &[VertexId],
    keys: &HashMap<VertexId, CacheKey>,
    key_inputs: &HashMap<VertexId, KeyInput>,
    slots: &HashMap<VertexId, Vec<CacheKey>>,
) -> HashMap<VertexId, String> {
    let mut vertices = Vec::with_capacity(order.len());
    let mut names = Vec::with_capacity(order.len());
    let mut records = Vec::with_capacity(order.len());
    for &v in order {
        let (Some(&key), Some(input), Some(inputs)) =
            (keys.get(&v), key_inputs.get(&v), slots.get(&v))
        else {
            continue;
        };
        vertices.push(v);
        names.push(graph.name(v).to_string());
        records.push(KeyRecord::new(key, input, inputs));
    }
    let task = tokio::task::spawn_blocking(move || remember(&index, &names, &records));
    if !tracing::enabled!(tracing::Level::DEBUG) {
        // Nobody reads the explanations in this solve: the records are written in the
        // background (off the build's critical path; a process exiting first only loses them).
        return HashMap::new();
    }
    let changes = task.await;
    let changes = match changes {
        Ok(Ok(changes)) => changes,
        Ok(Err(e)) => {
            debug!(error = %e, "cannot record cache keys");
            return HashMap::new();
        }
        Err(e) => {
            debug!(error = %e, "cannot record cache keys");
            return HashMap::new();
        }
    };
    let mut why = HashMap::new();
    for (v, change) in vertices.into_iter().zip(changes) {
        // A slot that is not the input's own key holds the content of what is read from it.
        let own = slots.get(&v).map(Vec::as_slice).unwrap_or(&[]);
        let labels: Vec<String> = graph
            .inputs(v)
            .iter()
            .enumerate()
            .map(|(i, &u)| match (own.get(i), keys.get(&u)) {
                (Some(slot), Some(k)) if slot != k => {
                    format!("{} (content of the paths read from it)", graph.name(u))
                }
                _ => graph.name(u).to_string(),
            })
            .collect();
        let input_names: Vec<&str> = labels.iter().map(String::as_str).collect();
        if let Some(input) = key_inputs.get(&v) {
            why.insert(v, describe(&change, &input_names, input));
        }
    }
    why
}

/// Reads the previous records of `names` and replaces those that changed with `records`
/// (one read and at most one write transaction); returns how each vertex changed. Blocks.
pub(crate) fn remember(
    index: &CacheIndex,
    names: &[String],
    records: &[KeyRecord],
) -> Result<Vec<Change>, CacheError> {
    let keys: Vec<Vec<u8>> = names.iter().map(|n| n.as_bytes().to_vec()).collect();
    let previous = index.get_many_in(KEY_RECORDS, &keys)?;
    let mut changes = Vec::with_capacity(records.len());
    let mut writes = Vec::new();
    for ((key, prev), now) in keys.into_iter().zip(previous).zip(records) {
        let prev = prev.as_deref().and_then(KeyRecord::decode);
        if prev.as_ref() != Some(now) {
            writes.push((key, now.encode()));
        }
        changes.push(compare(prev.as_ref(), now));
    }
    if !writes.is_empty() {
        index.put_many_in(KEY_RECORDS, &writes)?;
    }
    Ok(changes)
}

/// Says why a vertex missed: `change` since its last record, with its inputs' names and its
/// content digests' labels.
pub(crate) fn describe(change: &Change, input_names: &[&str], content: &KeyInput) -> String {
    fn list<T>(items: &[usize], f: impl Fn(usize) -> T) -> String
    where
        T: std::fmt::Display,
    {
        items
            .iter()
            .map(|&i| f(i).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
    match change {
        Change::New => "new vertex: no earlier key recorded under its name".to_string(),
        Change::Unchanged => {
            "same key as the last build, but its result is not in the cache".to_string()
        }
        Change::Op => "the op changed (command, options or environment)".to_string(),
        Change::Shape => "its inputs changed (a different number of inputs)".to_string(),
        Change::Inputs(changed) => format!(
            "input changed: {}",
            list(changed, |i| format!(
                "#{i} {:?}",
                input_names.get(i).copied().unwrap_or("?")
            ))
        ),
        Change::Content(changed) if changed.is_empty() => {
            "the key changed (same components: another key formula)".to_string()
        }
        Change::Content(changed) => format!(
            "content changed: {}",
            list(changed, |i| content
                .content
                .get(i)
                .map(|c| c.what.clone())
                .unwrap_or_else(|| format!("#{i}")))
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ContentDigest;

    fn record(op: &[u8], inputs: &[CacheKey], content: &[[u8; 32]]) -> KeyRecord {
        let input = KeyInput {
            op: op.to_vec(),
            content: content
                .iter()
                .map(|&digest| ContentDigest {
                    what: String::new(),
                    digest,
                })
                .collect(),
        };
        KeyRecord::new(CacheKey::compute(&input, inputs), &input, inputs)
    }

    #[test]
    fn records_are_kept_by_name_across_solves() {
        let dir = tempfile::tempdir().unwrap();
        let index = CacheIndex::open(&dir.path().join(crate::INDEX_FILE_NAME)).unwrap();
        let names = ["FROM".to_string(), "RUN".to_string()];
        let base = record(b"base", &[], &[]);
        let run = record(b"run", &[base.key], &[]);
        let first = remember(&index, &names, &[base.clone(), run.clone()]).unwrap();
        assert_eq!(first, [Change::New, Change::New]);
        let again = remember(&index, &names, &[base.clone(), run.clone()]).unwrap();
        assert_eq!(again, [Change::Unchanged, Change::Unchanged]);
        let new_base = record(b"base2", &[], &[]);
        let new_run = record(b"run", &[new_base.key], &[]);
        let changed = remember(&index, &names, &[new_base, new_run]).unwrap();
        assert_eq!(changed, [Change::Op, Change::Inputs(vec![0])]);
        let described = describe(&changed[1], &["[1/2] FROM"], &KeyInput::op(vec![]));
        assert_eq!(described, "input changed: #0 \"[1/2] FROM\"");
    }

    #[test]
    fn records_round_trip() {
        let r = record(b"op", &[CacheKey([1; 32]), CacheKey([2; 32])], &[[3; 32]]);
        assert_eq!(KeyRecord::decode(&r.encode()), Some(r.clone()));
        let bytes = r.encode();
        assert_eq!(KeyRecord::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(KeyRecord::decode(&[bytes.as_slice(), b"x"].concat()), None);
        assert_eq!(KeyRecord::decode(&[2]), None);
    }

    #[test]
    fn the_first_difference_is_named() {
        let a = CacheKey([1; 32]);
        let b = CacheKey([2; 32]);
        let base = record(b"op", &[a, b], &[[3; 32]]);
        assert_eq!(compare(None, &base), Change::New);
        assert_eq!(compare(Some(&base), &base), Change::Unchanged);
        let op = record(b"op2", &[a, a], &[[3; 32]]);
        assert_eq!(compare(Some(&base), &op), Change::Op);
        assert_eq!(
            compare(Some(&base), &record(b"op", &[a], &[[3; 32]])),
            Change::Shape
        );
        assert_eq!(
            compare(Some(&base), &record(b"op", &[a, a], &[[4; 32]])),
            Change::Inputs(vec![1])
        );
        assert_eq!(
            compare(Some(&base), &record(b"op", &[a, b], &[[4; 32]])),
            Change::Content(vec![0])
        );
    }
}
