//! Base images: pulled once into the content store, unpacked layer by layer into snapshots keyed
//! by OCI chain ID, each verified against its diff ID, and labelled with its blob so the exporter
//! never recompresses base layers. A base is always unpacked from its pinned manifest (the
//! one resolved for the vertex's platform), never re-resolved by tag.

use crate::WorkerError;
use rbuild_oci::{
    Descriptor, DiffId, Digest, Layer, MediaType, Sha256Reader, Store, LAYER_LABEL_GZIP,
};
use rbuild_registry::{Reference, RegistryClient};
use rbuild_snapshotter::{SnapshotId, Snapshotter};
use rbuild_solver::CacheIndex;
use std::io::{self, Read};

/// Makes sure the image is unpacked and returns its top snapshot (None for an image without layers).
pub async fn unpack_image(
    store: &Store,
    snapshotter: &Snapshotter,
    registry: &RegistryClient,
    index: Option<&CacheIndex>,
    reference: &str,
    digest: Option<&Digest>,
) -> Result<Option<SnapshotId>, WorkerError> {
    unpack_image_reporting(store, snapshotter, registry, index, reference, digest, None).await
}

/// Told when a layer's extraction starts (`false`) and ends (`true`), by its blob digest.
pub(crate) type OnExtract<'a> = Option<&'a (dyn Fn(&Digest, bool) + Send + Sync)>;

/// [`unpack_image`], telling `on_extract` about each layer it extracts.
pub(crate) async fn unpack_image_reporting(
    store: &Store,
    snapshotter: &Snapshotter,
    registry: &RegistryClient,
    index: Option<&CacheIndex>,
    reference: &str,
    digest: Option<&Digest>,
    on_extract: OnExtract<'_>,
) -> Result<Option<SnapshotId>, WorkerError> {
    let parsed = Reference::parse(reference)?;
    // A pinned manifest is pulled by its digest: it is the one resolved for the vertex's
    // platform, which the reference's tag (resolved for the host) may not name.
    let pinned = match digest {
        Some(d) => Reference {
            digest: Some(d.clone()),
            tag: None,
            ..parsed.clone()
        },
        None => parsed.clone(),
    };
    let record = match digest {
        Some(d) if store.has_blob(d) => match store.read_image(d) {
            Ok(r) => r,
            Err(_) => registry.pull(&pinned, store, None).await?,
        },
        _ => registry.pull(&pinned, store, None).await?,
    };
    let mut parent: Option<SnapshotId> = None;
    let mut chain: Option<Digest> = None;
    let diff_ids = record.config.rootfs.diff_ids.clone();
    if diff_ids.len() != record.manifest.layers.len() {
        return Err(WorkerError::Unpack {
            digest: record.manifest_digest.clone(),
            message: "config diff_ids and manifest layers differ in count".into(),
        });
    }
    for (desc, diff_id) in record.manifest.layers.iter().zip(diff_ids) {
        let chain_id = match &chain {
            None => diff_id.0.clone(),
            Some(prev) => Digest::sha256_of(format!("{prev} {diff_id}").as_bytes()),
        };
        let known = match index {
            Some(ix) => ix
                .get_in(crate::tables::UNPACKED, chain_id.to_string().as_bytes())
                .ok()
                .flatten()
                .map(|v| SnapshotId(String::from_utf8_lossy(&v).to_string())),
            None => None,
        };
        let id = match known {
            Some(id) if snapshotter.exists(&id) => id,
            _ => {
                let started = std::time::Instant::now();
                if !store.has_blob(&desc.digest) {
                    registry.fetch_blob(&parsed, desc, store).await?;
                }
                let fetched = started.elapsed();
                if let Some(f) = on_extract {
                    f(&desc.digest, false);
                }
                let id = unpack_layer(
                    store,
                    snapshotter,
                    parent.clone(),
                    desc.clone(),
                    diff_id.clone(),
                )
                .await?;
                if let Some(f) = on_extract {
                    f(&desc.digest, true);
                }
                tracing::debug!(
                    layer = %desc.digest,
                    size = desc.size,
                    fetch_time = ?fetched,
                    unpack_time = ?(started.elapsed() - fetched),
                    "layer pulled"
                );
                if let Some(ix) = index {
                    let _ = ix.put_in(
                        crate::tables::UNPACKED,
                        chain_id.to_string().as_bytes(),
                        id.0.as_bytes(),
                    );
                }
                id
            }
        };
        parent = Some(id);
        chain = Some(chain_id);
    }
    Ok(parent)
}

pub(crate) async fn unpack_layer(
    store: &Store,
    snapshotter: &Snapshotter,
    parent: Option<SnapshotId>,
    desc: Descriptor,
    diff_id: DiffId,
) -> Result<SnapshotId, WorkerError> {
    let store = store.clone();
    let snapshotter = snapshotter.clone();
    tokio::task::spawn_blocking(move || {
        let err = |message: String| WorkerError::Unpack {
            digest: desc.digest.clone(),
            message,
        };
        let file = store.open_blob(&desc.digest)?;
        let compression = desc.media_type.layer_compression();
        let decompressed: Box<dyn Read> = match compression {
            Some(rbuild_oci::Compression::Gzip) => {
                Box::new(flate2::read::GzDecoder::new(io::BufReader::new(file)))
            }
            Some(rbuild_oci::Compression::None) => Box::new(io::BufReader::new(file)),
            _ => {
                return Err(err(format!(
                    "unsupported layer media type {}",
                    desc.media_type.as_str()
                )))
            }
        };
        let mut reader = Sha256Reader::new(decompressed);
        let id = snapshotter.apply_layer(parent.as_ref(), &mut reader)?;
        io::copy(&mut reader, &mut io::sink()).map_err(|e| err(e.to_string()))?;
        let (actual, _) = reader.finish();
        if actual != diff_id.0 {
            let _ = snapshotter.remove(&id);
            return Err(err(format!(
                "diff ID mismatch: expected {diff_id}, got {actual}"
            )));
        }
        if compression == Some(rbuild_oci::Compression::Gzip) {
            let layer = Layer {
                descriptor: Descriptor {
                    media_type: MediaType::new(MediaType::OCI_LAYER_GZIP),
                    digest: desc.digest.clone(),
                    size: desc.size,
                    platform: None,
                    annotations: None,
                },
                diff_id,
            };
            let label = serde_json::to_string(&layer).map_err(|e| err(e.to_string()))?;
            snapshotter.set_label(&id, LAYER_LABEL_GZIP, &label)?;
        }
        Ok(id)
    })
    .await
    .map_err(|e| WorkerError::Join(e.to_string()))?
}
