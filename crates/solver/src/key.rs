//! Cache keys: what they are made of ([`KeyInput`]) and the versioned formula
//! ([`CacheKey::compute`]).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The version of rbuild's cache keys: of the solver's formula and of the op encodings the
/// executor feeds it. Part of every key, of the cache index's file name
/// ([`INDEX_FILE_NAME`](crate::INDEX_FILE_NAME)) and of exported build caches. It is defined in
/// `rbuild_oci::cache`, below the solver, because the remote cache format records it too.
pub const KEY_VERSION: u32 = rbuild_oci::cache::KEY_VERSION;

/// The domain separator at the start of every key's hash input.
const KEY_DOMAIN: &[u8] = b"rbuild-cache-key";

/// The domain separator of a content-keyed input's slot ([`CacheKey::content_input`]).
const CONTENT_INPUT_DOMAIN: &[u8] = b"rbuild-content-input";

/// One content digest a key depends on (e.g. the checksum of the build-context files a COPY
/// reads, or of a downloaded file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentDigest {
    /// What was digested, for logs (e.g. `context a.txt`); not part of the key.
    pub what: String,
    /// The digest.
    pub digest: [u8; 32],
}

/// What a vertex's cache key is made of besides its inputs' keys, as the executor computes
/// it ([`Executor::cache_key`](crate::Executor::cache_key)); the solver turns it into the key
/// with [`CacheKey::compute`] and remembers it to explain later misses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInput {
    /// The op's versioned key encoding: exactly the fields that decide its result.
    pub op: Vec<u8>,
    /// Content digests, in an order fixed by the op.
    pub content: Vec<ContentDigest>,
}

impl KeyInput {
    /// A key input with no content digests.
    pub fn op(op: Vec<u8>) -> KeyInput {
        KeyInput {
            op,
            content: Vec::new(),
        }
    }

    /// blake3 of the op encoding (how key records remember the op).
    pub fn op_digest(&self) -> [u8; 32] {
        *blake3::hash(&self.op).as_bytes()
    }
}

/// How a content-keyed edge's slot was settled in a solve: the link key (the input's key and
/// the reading vertex's selector,
/// [`Executor::content_selector`](crate::Executor::content_selector)) and the slot
/// ([`CacheKey::content_input`] of the digest). The solver records it in the index and returns
/// it, so a build-cache export can carry it; a later solve with the same link key takes the
/// slot without resolving the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentLink {
    /// The input's key and the reader's selector, hashed.
    pub link: CacheKey,
    /// The slot it filled.
    pub slot: CacheKey,
}

/// A persistent cache key: blake3 over the key version, the vertex's op encoding, its inputs'
/// keys and its content digests ([`CacheKey::compute`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// The key as 64 lowercase hex digits.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits (either case) as written by [`CacheKey::hex`]; `None` otherwise.
    pub fn from_hex(s: &str) -> Option<CacheKey> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(CacheKey(out))
    }

    /// The key of a vertex (version [`KEY_VERSION`]): [`CacheKey::from_parts`] over the domain
    /// `rbuild-cache-key`, the version (u32 LE), the op encoding, the number of inputs and of
    /// content digests (two u64 LE), each input's key in input order, then each content digest.
    pub fn compute(input: &KeyInput, inputs: &[CacheKey]) -> CacheKey {
        let version = KEY_VERSION.to_le_bytes();
        let mut counts = [0u8; 16];
        counts[..8].copy_from_slice(&(inputs.len() as u64).to_le_bytes());
        counts[8..].copy_from_slice(&(input.content.len() as u64).to_le_bytes());
        let mut parts: Vec<&[u8]> = Vec::with_capacity(4 + inputs.len() + input.content.len());
        parts.extend([KEY_DOMAIN, &version[..], &input.op, &counts[..]]);
        parts.extend(inputs.iter().map(|k| &k.0[..]));
        parts.extend(input.content.iter().map(|c| &c.digest[..]));
        CacheKey::from_parts(&parts)
    }

    /// The slot of a content-keyed input in its dependent's key (in place of the input's own
    /// key; see [`Executor::content_inputs`](crate::Executor::content_inputs)):
    /// [`CacheKey::from_parts`] over the domain `rbuild-content-input`, the version (u32 LE)
    /// and the digest of what the dependent reads from the input.
    pub fn content_input(content: &ContentDigest) -> CacheKey {
        let version = KEY_VERSION.to_le_bytes();
        CacheKey::from_parts(&[CONTENT_INPUT_DOMAIN, &version[..], &content.digest[..]])
    }

    /// blake3 over `parts`, unambiguously framed: the number of parts, then each part preceded
    /// by its length (all lengths as little-endian u64), so `["ab", "c"]` and `["a", "bc"]`
    /// give different keys.
    pub fn from_parts(parts: &[&[u8]]) -> CacheKey {
        let mut h = blake3::Hasher::new();
        h.update(&(parts.len() as u64).to_le_bytes());
        for p in parts {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        CacheKey(*h.finalize().as_bytes())
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_and_hex() {
        let a = CacheKey::from_parts(&[b"ab", b"c"]);
        let b = CacheKey::from_parts(&[b"a", b"bc"]);
        assert_ne!(a, b);
        assert_eq!(a, CacheKey::from_parts(&[b"ab", b"c"]));
        assert_ne!(CacheKey::from_parts(&[]), CacheKey::from_parts(&[b""]));
        let hex = a.hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(CacheKey::from_hex(&hex), Some(a));
        assert_eq!(CacheKey::from_hex(&hex.to_uppercase()), Some(a));
        assert_eq!(CacheKey::from_hex("zz"), None);
        assert_eq!(CacheKey([0xab; 32]).to_string(), "ab".repeat(32));
    }

    /// The formula is pinned: changing it changes every key, so it must come with a bump of
    /// [`KEY_VERSION`] (and with it the index file name and exported caches).
    #[test]
    fn the_key_formula_is_pinned() {
        assert_eq!(KEY_VERSION, 3);
        assert_eq!(crate::INDEX_FILE_NAME, format!("cache-v{KEY_VERSION}.redb"));
        let source = CacheKey::compute(&KeyInput::op(b"source".to_vec()), &[]);
        let content = ContentDigest {
            what: "context a.txt".into(),
            digest: [7; 32],
        };
        let copy = KeyInput {
            op: b"copy".to_vec(),
            content: vec![content.clone()],
        };
        let copied = CacheKey::compute(&copy, &[source, source]);
        assert_eq!(
            source.hex(),
            "57efce1f89d445d4108f5c74c161beab01dee93cab87255fda3e847e02ab454a"
        );
        assert_eq!(
            copied.hex(),
            "4c03061121a6cf55e9901e8be6a3f485d5789308221c4543d6ada6c3a82f2ca4"
        );
        // A content-keyed input's slot: the content digest under its own domain.
        assert_eq!(
            CacheKey::content_input(&content).hex(),
            "1c340e9d3b18c7c14f5d383d5e794c3a713dd5cc444430874b0682eb2ed854b0"
        );
        assert_ne!(CacheKey::content_input(&content), source);
        // The label is not keyed; the digest, the inputs and their order are.
        let relabelled = KeyInput {
            content: vec![ContentDigest {
                what: "other".into(),
                ..content
            }],
            ..copy.clone()
        };
        assert_eq!(CacheKey::compute(&relabelled, &[source, source]), copied);
        assert_ne!(CacheKey::compute(&copy, &[source]), copied);
        let no_content = KeyInput::op(b"copy".to_vec());
        assert_ne!(CacheKey::compute(&no_content, &[source, source]), copied);
    }
}
