//! Exporting the build cache (`--cache-to`): the layer chains of cached results become one OCI image
//! manifest (layers = the results' layer blobs, deduplicated; config = [`CacheConfig`]) in the
//! store, from where it is pushed to a registry or copied into an OCI layout directory. The format
//! is [`rbuild_oci::cache`].

use crate::pipe::{cores, parallel_map};
use crate::{ensure_layer, layer_variant, ExportError, LayerOptions};
use rbuild_oci::cache::{CacheConfig, CacheLayer, CacheRecord, CACHE_CONFIG_MEDIA_TYPE};
use rbuild_oci::{canonical_json, Compression, Descriptor, Digest, Manifest, MediaType, Store};
use rbuild_snapshotter::{SnapshotId, Snapshotter};
use std::collections::HashMap;
use std::path::Path;

/// The snapshot label under which [`ensure_layer`] remembers a blob of `media_type` with `opts`
/// (mirrors the exporter's private naming: `rbuild.layer.{gzip,zstd,tar}[.sdeN]`).
fn label_key(media_type: &MediaType, opts: &LayerOptions) -> String {
    let base = match media_type.layer_compression() {
        Some(Compression::Zstd) => "rbuild.layer.zstd",
        Some(Compression::None) => "rbuild.layer.tar",
        _ => rbuild_oci::LAYER_LABEL_GZIP,
    };
    match opts.source_date_epoch {
        Some(epoch) => format!("{base}.sde{epoch}"),
        None => base.to_string(),
    }
}

/// Writes the cache manifest for `records` (`(cache key hex, top snapshot of the result)`) and
/// the solve's content `links` into `store`, making each layer blob with [`ensure_layer`] (reused
/// when the image export made it) and compressing it as `opts` asks with [`layer_variant`]
/// (reused when a push or output did);
/// returns the manifest's descriptor.
pub fn write_cache_manifest(
    store: &Store,
    snapshotter: &Snapshotter,
    records: &[(String, Option<SnapshotId>)],
    links: &[rbuild_oci::cache::CacheLink],
    opts: &LayerOptions,
    architecture: &str,
) -> Result<Descriptor, ExportError> {
    let mut layer_of: HashMap<SnapshotId, usize> = HashMap::new();
    let mut by_digest: HashMap<Digest, usize> = HashMap::new();
    let mut descriptors: Vec<Descriptor> = Vec::new();
    let mut config = CacheConfig {
        architecture: architecture.to_string(),
        os: "linux".to_string(),
        links: links.to_vec(),
        ..CacheConfig::default()
    };
    let started = std::time::Instant::now();
    let mut seen_keys = std::collections::HashSet::new();
    let mut chains: Vec<(String, Vec<SnapshotId>)> = Vec::new();
    let mut unique: Vec<SnapshotId> = Vec::new();
    for (key, top) in records {
        if !seen_keys.insert(key.clone()) {
            continue;
        }
        let mut snapshots = Vec::new();
        let mut cur = top.clone();
        while let Some(id) = cur {
            cur = snapshotter.parent(&id)?;
            snapshots.push(id);
        }
        snapshots.reverse();
        for id in &snapshots {
            if !layer_of.contains_key(id) {
                layer_of.insert(id.clone(), unique.len());
                unique.push(id.clone());
            }
        }
        chains.push((key.clone(), snapshots));
    }
    // Each layer as the store keeps it (uncompressed for built ones), then in the cache's
    // compression (made once and remembered in the store), layers concurrently.
    let stored = LayerOptions {
        compression: Compression::None,
        force_compression: false,
        ..opts.clone()
    };
    let made = parallel_map(&unique, cores(), |id| {
        let layer = ensure_layer(snapshotter, store, id, &stored)?;
        layer_variant(store, &layer, None, opts)
    });
    let mut index_of: Vec<usize> = Vec::with_capacity(made.len());
    for layer in made {
        let layer = layer?;
        let i = *by_digest
            .entry(layer.descriptor.digest.clone())
            .or_insert_with(|| {
                config.layers.push(CacheLayer {
                    digest: layer.descriptor.digest.clone(),
                    diff_id: layer.diff_id.clone(),
                    label: label_key(&layer.descriptor.media_type, opts),
                });
                descriptors.push(layer.descriptor.clone());
                descriptors.len() - 1
            });
        index_of.push(i);
    }
    for (key, snapshots) in chains {
        let chain = snapshots
            .iter()
            .filter_map(|id| layer_of.get(id).map(|&u| index_of[u]))
            .collect();
        config.records.push(CacheRecord { key, chain });
    }
    let config_bytes = canonical_json(&config)?;
    let (config_digest, config_size) = store.write_blob(&config_bytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MediaType::new(MediaType::OCI_MANIFEST)),
        config: Descriptor {
            media_type: MediaType::new(CACHE_CONFIG_MEDIA_TYPE),
            digest: config_digest,
            size: config_size,
            platform: None,
            annotations: None,
        },
        layers: descriptors,
        annotations: None,
    };
    let bytes = canonical_json(&manifest)?;
    let (digest, size) = store.write_blob(&bytes)?;
    tracing::debug!(
        manifest = %digest,
        records = config.records.len(),
        layers = config.layers.len(),
        export_time = ?started.elapsed(),
        "cache manifest written"
    );
    Ok(Descriptor {
        media_type: MediaType::new(MediaType::OCI_MANIFEST),
        digest,
        size,
        platform: None,
        annotations: None,
    })
}

/// Copies the cache manifest `desc` (and its config and layers) from `store` into the OCI layout
/// `dir` (created if needed), naming it `tag` in its `index.json`.
pub fn write_cache_layout(
    store: &Store,
    desc: &Descriptor,
    dir: &Path,
    tag: &str,
) -> Result<(), ExportError> {
    let layout = Store::open(dir)?;
    let manifest: Manifest = serde_json::from_slice(&store.read_blob(&desc.digest)?)?;
    let mut blobs = vec![manifest.config.digest.clone()];
    blobs.extend(manifest.layers.iter().map(|l| l.digest.clone()));
    blobs.push(desc.digest.clone());
    for digest in blobs {
        if layout.has_blob(&digest) {
            continue;
        }
        let mut file = store.open_blob(&digest)?;
        rbuild_oci::copy_into_store(&layout, &mut file, Some(&digest))?;
    }
    layout.set_tag(tag, desc)?;
    // Dropping the layout store removes its own temp dir; leave no empty `tmp/` in the output
    // (a concurrent writer's non-empty dirs stay).
    drop(layout);
    for sub in ["tmp/blobs", "tmp/owners", "tmp"] {
        let _ = std::fs::remove_dir(dir.join(sub));
    }
    Ok(())
}
