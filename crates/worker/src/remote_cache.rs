//! Importing a shared build cache (`--cache-from`): the cache manifest and its config (small) are
//! read before solving; when the local cache index misses a key the cache has, the result's layer
//! chain is fetched (only those blobs) and unpacked into snapshots, which are labelled with their
//! blobs so the exporter reuses them byte for byte. Results nobody asks for are never downloaded.
//! The format is [`rbuild_oci::cache`].

use crate::{image, Value, WorkerError};
use rbuild_oci::cache::{CacheConfig, CacheLayer, CACHE_CONFIG_MEDIA_TYPE};
use rbuild_oci::{Descriptor, Digest, Layer, Manifest, Store};
use rbuild_registry::{Reference, RegistryClient};
use rbuild_snapshotter::{SnapshotId, Snapshotter};
use rbuild_solver::{CacheIndex, CacheKey};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

/// Where the cache's blobs come from.
#[derive(Debug)]
pub enum CacheSource {
    /// A registry repository (`type=registry,ref=REF`).
    Registry {
        /// The client.
        client: RegistryClient,
        /// The cache manifest's reference.
        reference: Reference,
    },
    /// An OCI image layout directory (`type=local,src=DIR`).
    Layout {
        /// The layout, opened as a store.
        store: Store,
    },
}

/// An imported cache: its records and where to fetch their layers.
#[derive(Debug)]
pub struct RemoteCache {
    source: CacheSource,
    layers: Vec<(Descriptor, CacheLayer)>,
    records: HashMap<CacheKey, Vec<usize>>,
    /// Content links: link key -> slot (see `rbuild_oci::cache::CacheLink`).
    links: HashMap<CacheKey, CacheKey>,
    warnings: Mutex<Vec<String>>,
    /// One materialisation at a time, so two results sharing layers never fetch or unpack them
    /// twice (the second finds the first's snapshots by chain ID).
    busy: tokio::sync::Mutex<()>,
}

fn invalid(what: &str, message: impl std::fmt::Display) -> WorkerError {
    WorkerError::Graph(format!("cache import from {what}: {message}"))
}

impl RemoteCache {
    /// Reads the cache manifest `reference` from its registry.
    pub async fn from_registry(
        client: RegistryClient,
        reference: Reference,
    ) -> Result<RemoteCache, WorkerError> {
        let resolved = client.resolve(&reference).await?;
        let what = reference.to_string();
        let config: CacheConfig = serde_json::from_slice(&resolved.config_bytes)
            .map_err(|e| invalid(&what, format!("not an rbuild cache config: {e}")))?;
        Self::from_parts(
            CacheSource::Registry { client, reference },
            &what,
            resolved.manifest,
            config,
        )
    }

    /// Reads the cache manifest from an OCI layout directory: the manifest tagged `tag`, else the
    /// last manifest of `index.json` whose config is a cache config.
    pub fn from_layout(dir: &Path, tag: Option<&str>) -> Result<RemoteCache, WorkerError> {
        let what = dir.display().to_string();
        if !dir.join("index.json").is_file() {
            return Err(invalid(&what, "no index.json (not an OCI layout)"));
        }
        let store = Store::open(dir)?;
        let index = store.index()?;
        let mut found = None;
        for desc in index.manifests.iter().rev() {
            let named = desc
                .annotations
                .as_ref()
                .and_then(|a| a.get(rbuild_oci::ANNOTATION_REF_NAME));
            if let (Some(tag), Some(name)) = (tag, named) {
                if name != tag {
                    continue;
                }
            }
            let Ok(bytes) = store.read_blob(&desc.digest) else {
                continue;
            };
            let Ok(manifest) = serde_json::from_slice::<Manifest>(&bytes) else {
                continue;
            };
            if manifest.config.media_type.as_str() == CACHE_CONFIG_MEDIA_TYPE {
                found = Some(manifest);
                break;
            }
        }
        let manifest = found.ok_or_else(|| invalid(&what, "no cache manifest in index.json"))?;
        let config_bytes = store.read_blob(&manifest.config.digest)?;
        let config: CacheConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| invalid(&what, format!("not an rbuild cache config: {e}")))?;
        Self::from_parts(CacheSource::Layout { store }, &what, manifest, config)
    }

    fn from_parts(
        source: CacheSource,
        what: &str,
        manifest: Manifest,
        config: CacheConfig,
    ) -> Result<RemoteCache, WorkerError> {
        if manifest.config.media_type.as_str() != CACHE_CONFIG_MEDIA_TYPE {
            return Err(invalid(
                what,
                format!(
                    "config media type is {}, not {CACHE_CONFIG_MEDIA_TYPE}",
                    manifest.config.media_type.as_str()
                ),
            ));
        }
        if manifest.layers.len() != config.layers.len() {
            return Err(invalid(what, "manifest and config list different layers"));
        }
        for (desc, layer) in manifest.layers.iter().zip(&config.layers) {
            if desc.digest != layer.digest {
                return Err(invalid(what, format!("layer {} out of order", desc.digest)));
            }
        }
        let mut records = HashMap::new();
        // Keys of another version could never match: such a cache has no usable records.
        let usable = config.key_version == rbuild_solver::KEY_VERSION;
        if !usable {
            tracing::debug!(
                cache = what,
                key_version = config.key_version,
                expected = rbuild_solver::KEY_VERSION,
                "imported cache has keys of another version; its records are not used"
            );
        }
        for record in config.records.into_iter().filter(|_| usable) {
            let Some(key) = CacheKey::from_hex(&record.key) else {
                return Err(invalid(what, format!("bad cache key `{}`", record.key)));
            };
            if record.chain.iter().any(|&i| i >= config.layers.len()) {
                return Err(invalid(
                    what,
                    format!("record {} names a missing layer", record.key),
                ));
            }
            records.insert(key, record.chain);
        }
        let mut links = HashMap::new();
        for link in config.links.iter().filter(|_| usable) {
            match (
                CacheKey::from_hex(&link.link),
                CacheKey::from_hex(&link.slot),
            ) {
                (Some(key), Some(slot)) => {
                    links.insert(key, slot);
                }
                _ => return Err(invalid(what, format!("bad content link `{}`", link.link))),
            }
        }
        let layers = manifest.layers.into_iter().zip(config.layers).collect();
        Ok(RemoteCache {
            source,
            layers,
            records,
            links,
            warnings: Mutex::new(Vec::new()),
            busy: tokio::sync::Mutex::new(()),
        })
    }

    /// The number of cached results.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when the cache holds no results.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The slot the exporting solve settled for content link `link`, if any.
    pub fn link(&self, link: &CacheKey) -> Option<CacheKey> {
        self.links.get(link).copied()
    }

    /// True when the cache has a result for `key`.
    pub fn has(&self, key: &CacheKey) -> bool {
        self.records.contains_key(key)
    }

    /// Problems met while importing results (each such result was rebuilt instead).
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().map(|w| w.clone()).unwrap_or_default()
    }

    pub(crate) fn warn(&self, message: String) {
        if let Ok(mut w) = self.warnings.lock() {
            w.push(message);
        }
    }

    async fn fetch(&self, desc: &Descriptor, store: &Store) -> Result<(), WorkerError> {
        if store.has_blob(&desc.digest) {
            return Ok(());
        }
        match &self.source {
            CacheSource::Registry { client, reference } => {
                client.fetch_blob(reference, desc, store).await?;
            }
            CacheSource::Layout { store: layout } => {
                let (layout, store, digest) = (layout.clone(), store.clone(), desc.digest.clone());
                tokio::task::spawn_blocking(move || {
                    let mut file = layout.open_blob(&digest)?;
                    rbuild_oci::copy_into_store(&store, &mut file, Some(&digest))?;
                    Ok::<(), WorkerError>(())
                })
                .await
                .map_err(|e| WorkerError::Join(e.to_string()))??;
            }
        }
        Ok(())
    }

    /// Makes `key`'s result a local snapshot chain (fetching and unpacking only the layers not
    /// already unpacked here); `None` when the cache has no such result.
    pub(crate) async fn materialize(
        &self,
        key: &CacheKey,
        store: &Store,
        snapshotter: &Snapshotter,
        index: Option<&CacheIndex>,
    ) -> Result<Option<Value>, WorkerError> {
        let Some(chain) = self.records.get(key) else {
            return Ok(None);
        };
        let _busy = self.busy.lock().await;
        let mut parent: Option<SnapshotId> = None;
        let mut chain_id: Option<Digest> = None;
        for &i in chain {
            let (desc, layer) = &self.layers[i];
            let this_chain = match &chain_id {
                None => layer.diff_id.0.clone(),
                Some(prev) => Digest::sha256_of(format!("{prev} {}", layer.diff_id).as_bytes()),
            };
            let known = index
                .and_then(|ix| {
                    ix.get_in(crate::tables::UNPACKED, this_chain.to_string().as_bytes())
                        .ok()
                        .flatten()
                })
                .map(|v| SnapshotId(String::from_utf8_lossy(&v).to_string()))
                .filter(|id| snapshotter.exists(id));
            let label = serde_json::to_string(&Layer {
                descriptor: Descriptor {
                    media_type: desc.media_type.clone(),
                    digest: desc.digest.clone(),
                    size: desc.size,
                    platform: None,
                    annotations: None,
                },
                diff_id: layer.diff_id.clone(),
            })
            .map_err(|e| WorkerError::Graph(e.to_string()))?;
            let id = match known {
                Some(id) => {
                    // Unpacked before (e.g. a shared base layer): label it with this blob unless
                    // it already has a usable one under the exporter's label.
                    let has = snapshotter.label(&id, &layer.label)?.is_some_and(|raw| {
                        serde_json::from_str::<Layer>(&raw)
                            .is_ok_and(|l| store.has_blob(&l.descriptor.digest))
                    });
                    if !has {
                        self.fetch(desc, store).await?;
                        snapshotter.set_label(&id, &layer.label, &label)?;
                    }
                    id
                }
                None => {
                    self.fetch(desc, store).await?;
                    let id = image::unpack_layer(
                        store,
                        snapshotter,
                        parent.clone(),
                        desc.clone(),
                        layer.diff_id.clone(),
                    )
                    .await?;
                    snapshotter.set_label(&id, &layer.label, &label)?;
                    if let Some(ix) = index {
                        let _ = ix.put_in(
                            crate::tables::UNPACKED,
                            this_chain.to_string().as_bytes(),
                            id.0.as_bytes(),
                        );
                    }
                    id
                }
            };
            parent = Some(id);
            chain_id = Some(this_chain);
        }
        Ok(Some(Value::Fs(parent)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbuild_oci::cache::CacheRecord;
    use rbuild_oci::MediaType;

    fn manifest() -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: Some(MediaType::new(MediaType::OCI_MANIFEST)),
            config: Descriptor {
                media_type: MediaType::new(CACHE_CONFIG_MEDIA_TYPE),
                digest: Digest::sha256_of(b"config"),
                size: 6,
                platform: None,
                annotations: None,
            },
            layers: vec![],
            annotations: None,
        }
    }

    fn config(key_version: u32) -> CacheConfig {
        CacheConfig {
            records: vec![CacheRecord {
                key: "ab".repeat(32),
                chain: vec![],
            }],
            key_version,
            ..CacheConfig::default()
        }
    }

    /// Records are used only when their keys have this rbuild's key version; a cache written
    /// before keys were versioned (no `rbuild.cache.keyVersion`) counts as version 1.
    #[test]
    fn records_of_another_key_version_are_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let open = |config| {
            let store = Store::open(dir.path()).unwrap();
            RemoteCache::from_parts(CacheSource::Layout { store }, "test", manifest(), config)
                .unwrap()
        };
        assert_eq!(
            CacheConfig::default().key_version,
            rbuild_solver::KEY_VERSION
        );
        assert_eq!(open(config(rbuild_solver::KEY_VERSION)).len(), 1);
        assert!(open(config(rbuild_solver::KEY_VERSION + 1)).is_empty());
        let mut legacy = serde_json::to_value(config(rbuild_solver::KEY_VERSION)).unwrap();
        legacy
            .as_object_mut()
            .unwrap()
            .remove("rbuild.cache.keyVersion")
            .unwrap();
        let legacy: CacheConfig = serde_json::from_value(legacy).unwrap();
        assert_eq!(legacy.key_version, 1);
        assert!(open(legacy).is_empty());
    }
}
