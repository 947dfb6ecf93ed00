//! Layer blobs from snapshots: one streaming pass (diff tar -> sha256 diff ID -> gzip -> sha256
//! blob digest -> store), remembered in a snapshot label so unchanged layers are never recompressed.

use crate::ExportError;
use rbuild_oci::{
    Descriptor, DiffId, ImageConfig, Layer, Manifest, MediaType, Sha256Writer, Store,
    LAYER_LABEL_GZIP,
};
use rbuild_snapshotter::{DiffOptions, SnapshotId, Snapshotter};
use std::io::Write;

/// How layers are made.
#[derive(Debug, Clone, Default)]
pub struct LayerOptions {
    /// Clamp mtimes to this time (SOURCE_DATE_EPOCH).
    pub source_date_epoch: Option<i64>,
    /// gzip level 0-9; None = 6 (Go's default, as BuildKit).
    pub gzip_level: Option<u32>,
}

/// Returns the gzip layer blob of snapshot `id` (its diff against its parent), making and storing it
/// the first time and reusing it afterwards (the label is kept only while the blob exists).
pub fn ensure_layer(
    snapshotter: &Snapshotter,
    store: &Store,
    id: &SnapshotId,
    opts: &LayerOptions,
) -> Result<Layer, ExportError> {
    let label_key = match opts.source_date_epoch {
        Some(epoch) => format!("{LAYER_LABEL_GZIP}.sde{epoch}"),
        None => LAYER_LABEL_GZIP.to_string(),
    };
    if let Some(raw) = snapshotter.label(id, &label_key)? {
        let layer: Layer =
            serde_json::from_str(&raw).map_err(|_| ExportError::BadLabel(id.to_string()))?;
        if store.has_blob(&layer.descriptor.digest) {
            return Ok(layer);
        }
    }
    let blob = store.blob_writer()?;
    let level = flate2::Compression::new(opts.gzip_level.unwrap_or(6).min(9));
    let gz = flate2::write::GzEncoder::new(blob, level);
    let mut tar_hasher = Sha256Writer::new(gz);
    snapshotter.write_diff(
        id,
        &mut tar_hasher,
        &DiffOptions {
            source_date_epoch: opts.source_date_epoch,
        },
    )?;
    tar_hasher.flush().map_err(|source| ExportError::Io {
        action: "compress layer of",
        path: id.to_string().into(),
        source,
    })?;
    let (diff_digest, _, gz) = tar_hasher.finish();
    let blob = gz.finish().map_err(|source| ExportError::Io {
        action: "compress layer of",
        path: id.to_string().into(),
        source,
    })?;
    let (digest, size) = blob.commit(None)?;
    let layer = Layer {
        descriptor: Descriptor {
            media_type: MediaType::new(MediaType::OCI_LAYER_GZIP),
            digest,
            size,
            platform: None,
            annotations: None,
        },
        diff_id: DiffId(diff_digest),
    };
    let json = serde_json::to_string(&layer)?;
    snapshotter.set_label(id, &label_key, &json)?;
    // A merged (`COPY --link`) snapshot's diff is its layer snapshot's: label that one too, so
    // the next merge of it onto another base reuses this blob (overlay only: the copy backend
    // diffs against the parent, so its blob depends on the base).
    let overlay = snapshotter.backend() == rbuild_snapshotter::Backend::Overlay;
    if let (true, Ok(Some(source))) = (
        overlay,
        snapshotter.label(id, rbuild_snapshotter::MERGE_SOURCE_LABEL),
    ) {
        let source = SnapshotId(source);
        if snapshotter.exists(&source) {
            let _ = snapshotter.set_label(&source, &label_key, &json);
        }
    }
    Ok(layer)
}

/// Fills `rootfs.diff_ids` from `layers` and stores config and manifest; returns the manifest descriptor.
pub fn assemble_image(
    store: &Store,
    mut config: ImageConfig,
    layers: &[Layer],
) -> Result<(Descriptor, Manifest), ExportError> {
    config.rootfs.kind = "layers".to_string();
    config.rootfs.diff_ids = layers.iter().map(|l| l.diff_id.clone()).collect();
    Ok(store.write_image(
        &config,
        layers.iter().map(|l| l.descriptor.clone()).collect(),
    )?)
}
