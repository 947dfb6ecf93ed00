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

/// Media type of the cache config blob.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.rbuild.cache.config.v1+json";

/// The cache config blob.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
