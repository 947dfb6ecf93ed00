//! Cache keys.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A persistent cache key (blake3 over the vertex's normalised op digest and its inputs' keys,
/// computed by the executor).
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
}
