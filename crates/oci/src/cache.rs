//! The build-cache export format (`--cache-to` / `--cache-from`), shared by the exporter (which
//! writes it) and the worker (which reads it): an OCI image *manifest* (not an index, so registries
//! that reject unknown index contents, e.g. ECR, accept it) whose layers are the layer blobs of the
//! cached results and whose config blob ([`CACHE_CONFIG_MEDIA_TYPE`]) is a [`CacheConfig`]: cache key
//! (hex) -> the result's layer chain, as indexes into the manifest's layers.
//!
//! The config also carries `architecture`/`os` so generic tools (and rbuild's own registry resolve,
//! which parses configs as image configs) can read the manifest.

use crate::{DiffId, Digest};
use serde::{Deserialize, Serialize};

/// The version of rbuild's cache keys (the solver's formula and the op encodings it hashes),
/// re-exported as `rbuild_solver::KEY_VERSION`. A cache config records the version its keys
/// were computed with ([`CacheConfig::key_version`]); an importer ignores records of another
/// version (they could never match).
pub const KEY_VERSION: u32 = 3;

/// Media type of the cache config blob.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.rbuild.cache.config.v1+json";

/// The cache config blob (its default has no layers or records and the current
/// [`KEY_VERSION`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheConfig {
    /// Always `amd64`-style architecture of the exporting machine (informational).
    pub architecture: String,
    /// `linux`.
    pub os: String,
    /// One per manifest layer, in the same order.
    #[serde(rename = "rbuild.cache.layers")]
    pub layers: Vec<CacheLayer>,
    /// The cached results.
    #[serde(rename = "rbuild.cache.records")]
    pub records: Vec<CacheRecord>,
    /// Content links of the solve that exported the cache (absent: none): for a step keyed by
    /// the content it reads from an input (`COPY --from`), the input's key and the step's
    /// selector -> the slot that content gave, so an importer derives the content keys without
    /// building those inputs.
    #[serde(
        rename = "rbuild.cache.links",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub links: Vec<CacheLink>,
    /// The [`KEY_VERSION`] of the records' keys (1 when absent: caches written before keys
    /// were versioned).
    #[serde(rename = "rbuild.cache.keyVersion", default = "legacy_key_version")]
    pub key_version: u32,
}

fn legacy_key_version() -> u32 {
    1
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            architecture: String::new(),
            os: String::new(),
            layers: Vec::new(),
            records: Vec::new(),
            links: Vec::new(),
            key_version: KEY_VERSION,
        }
    }
}

/// What the importer needs about one manifest layer beyond its descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheLayer {
    /// The blob digest (as in the manifest, for checking).
    pub digest: Digest,
    /// The digest of the uncompressed tar.
    pub diff_id: DiffId,
    /// The snapshot label under which the exporter remembered this blob (compression and
    /// SOURCE_DATE_EPOCH), so an importer labels the unpacked snapshot the same way and its
    /// exporter reuses the blob byte for byte.
    pub label: String,
}

/// One cached result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// The solver cache key, 64 hex digits.
    pub key: String,
    /// The result's filesystem as a layer chain, bottom first (indexes into the layers); empty
    /// for an empty filesystem (scratch).
    pub chain: Vec<usize>,
}

/// One content link ([`CacheConfig::links`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheLink {
    /// The link key (the input's key and the reader's selector, hashed), 64 hex digits.
    pub link: String,
    /// The slot it gives, 64 hex digits.
    pub slot: String,
}
