//! Layer blobs from snapshots: one streaming pass (diff tar on its own thread -> sha256 -> store;
//! uncompressed, as builds store them, the blob digest is the diff ID; gzip/zstd when asked:
//! sha256 diff ID -> compress -> sha256 blob digest), remembered in a snapshot label so an
//! unchanged layer is never made twice.

use crate::ExportError;
use rbuild_oci::{
    Compression, Descriptor, DiffId, ImageConfig, Layer, Manifest, MediaType, Sha256Writer, Store,
    LAYER_LABEL_GZIP,
};
use rbuild_snapshotter::{DiffOptions, SnapshotId, Snapshotter};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// How layers are made.
#[derive(Debug, Clone, Default)]
pub struct LayerOptions {
    /// Clamp mtimes to this time (SOURCE_DATE_EPOCH).
    pub source_date_epoch: Option<i64>,
    /// gzip level 0-9; None = [`crate::DEFAULT_GZIP_LEVEL`] for compressed variants (pushes,
    /// archives, cache exports), 6 (Go's default) for a layer made gzip-compressed directly.
    pub gzip_level: Option<u32>,
    /// Layer compression (gzip by default, as Docker).
    pub compression: Compression,
    /// Level for zstd (1-22, default 3); gzip uses `gzip_level`.
    pub zstd_level: Option<i32>,
    /// Recompress layers that already have a blob in another compression (BuildKit's
    /// `force-compression`); otherwise such blobs are reused as they are.
    pub force_compression: bool,
    /// When set (e.g. by a canceled build), a layer being made stops at its next chunk with
    /// [`ExportError::Canceled`] and its temp blob is removed; nothing is stored or labelled.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Receives per-layer byte counts of long exports and compressions.
    pub progress: Option<crate::LayerProgressFn>,
}

impl LayerOptions {
    /// True when the layer work was asked to stop.
    pub fn is_canceled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

/// The snapshot label remembering a snapshot's blob in one compression.
fn label_for(compression: Compression) -> &'static str {
    match compression {
        Compression::Gzip => LAYER_LABEL_GZIP,
        Compression::Zstd => "rbuild.layer.zstd",
        Compression::None => "rbuild.layer.tar",
    }
}

/// Writes the diff of `id` as a blob: the tar walk runs on its own thread and hands buffers over
/// a bounded pipe to this one, which hashes and writes them (uncompressed: the blob digest is the
/// diff ID, one sha256 pass) or hashes, compresses and writes them (gzip/zstd: the diff ID's
/// sha256, then the blob's); the walk's thread also takes the blake3 content key.
fn write_layer_blob(
    snapshotter: &Snapshotter,
    store: &Store,
    id: &SnapshotId,
    opts: &LayerOptions,
) -> Result<Written, ExportError> {
    let io_err = |action: &'static str| {
        move |source| ExportError::Io {
            action,
            path: id.to_string().into(),
            source,
        }
    };
    let blob = store.layer_blob_writer()?;
    let (mut tar_w, mut tar_r) = crate::pipe::pipe();
    std::thread::scope(|s| {
        let walker = s.spawn(move || -> Result<(String, String), ExportError> {
            let mut hashed = crate::content::ContentHasher::new(&mut tar_w);
            snapshotter.write_diff(
                id,
                &mut crate::content::Cancelable {
                    inner: &mut hashed,
                    opts,
                },
                &DiffOptions {
                    source_date_epoch: opts.source_date_epoch,
                },
            )?;
            let (key, prefix, _) = hashed.finish();
            tar_w.close().map_err(|source| ExportError::Io {
                action: "write layer of",
                path: id.to_string().into(),
                source,
            })?;
            Ok((key, prefix))
        });
        let consumed = (|| -> Result<_, ExportError> {
            let mut meter = crate::progress::Meter::new(
                opts.progress.as_ref(),
                crate::LayerAction::Export,
                id.to_string(),
                None,
            );
            if opts.compression == Compression::None {
                let mut blob = blob;
                let mut out = crate::progress::Metered {
                    inner: &mut blob,
                    meter: &mut meter,
                };
                io::copy(&mut tar_r, &mut out).map_err(io_err("write layer of"))?;
                meter.finish();
                return Ok(Consumed::Plain(blob));
            }
            let (encoder, media_type) = match opts.compression {
                Compression::Zstd => {
                    let zstd =
                        zstd::stream::write::Encoder::new(blob, opts.zstd_level.unwrap_or(3))
                            .map_err(io_err("start zstd for"))?;
                    (Encoder::Zstd(zstd), MediaType::OCI_LAYER_ZSTD)
                }
                _ => {
                    let level = flate2::Compression::new(opts.gzip_level.unwrap_or(6).min(9));
                    (
                        Encoder::Gzip(flate2::write::GzEncoder::new(blob, level)),
                        MediaType::OCI_LAYER_GZIP,
                    )
                }
            };
            let mut tar_hasher = Sha256Writer::new(encoder);
            let mut out = crate::progress::Metered {
                inner: &mut tar_hasher,
                meter: &mut meter,
            };
            io::copy(&mut tar_r, &mut out).map_err(io_err("compress layer of"))?;
            meter.finish();
            tar_hasher.flush().map_err(io_err("compress layer of"))?;
            let (diff, _, enc) = tar_hasher.finish();
            let blob = enc.finish().map_err(io_err("compress layer of"))?;
            Ok(Consumed::Compressed(blob, diff, media_type))
        })();
        drop(tar_r);
        let walked = walker.join().unwrap_or_else(|_| {
            Err(ExportError::Io {
                action: "walk",
                path: id.to_string().into(),
                source: io::Error::other("tar walk panicked"),
            })
        });
        // Dropping an unfinished blob writer removes its temp file.
        if opts.is_canceled() {
            return Err(ExportError::Canceled);
        }
        let content = walked?;
        match consumed? {
            Consumed::Plain(blob) => {
                let (digest, size) = blob.commit(None)?;
                Ok((
                    digest.clone(),
                    size,
                    digest,
                    MediaType::OCI_LAYER_TAR,
                    content,
                ))
            }
            Consumed::Compressed(blob, diff, media_type) => {
                let (digest, size) = blob.commit(None)?;
                Ok((digest, size, diff, media_type, content))
            }
        }
    })
}

/// A written layer blob: its digest and size, the diff ID, the media type and the content key
/// and prefix (blake3 of the tar stream and of its first chunk).
type Written = (
    rbuild_oci::Digest,
    u64,
    rbuild_oci::Digest,
    &'static str,
    (String, String),
);

/// What the consuming stage of [`write_layer_blob`] ends with: the blob still to commit (and,
/// compressed, the diff ID and media type).
enum Consumed {
    Plain(rbuild_oci::BlobWriter),
    Compressed(rbuild_oci::BlobWriter, rbuild_oci::Digest, &'static str),
}

/// The compressing stage of the one-pass layer writer.
enum Encoder<W: Write> {
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    fn finish(self) -> std::io::Result<W> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// Returns the gzip layer blob of snapshot `id` (its diff against its parent), making and storing it
/// the first time and reusing it afterwards (the label is kept only while the blob exists). A
/// layer another thread of this process is making is waited for, then reused.
pub fn ensure_layer(
    snapshotter: &Snapshotter,
    store: &Store,
    id: &SnapshotId,
    opts: &LayerOptions,
) -> Result<Layer, ExportError> {
    let label = label_for(opts.compression);
    let label_key = match opts.source_date_epoch {
        Some(epoch) => format!("{label}.sde{epoch}"),
        None => label.to_string(),
    };
    // One maker per layer in this process: a second caller (the build's export while an eager
    // export of the same layer runs) waits, then finds the label.
    let _making = Making::start(format!("{id}/{label_key}"));
    let mut candidates = vec![label_key.clone()];
    if !opts.force_compression {
        for other in [Compression::Gzip, Compression::Zstd, Compression::None] {
            if other != opts.compression {
                let base = label_for(other);
                candidates.push(match opts.source_date_epoch {
                    Some(epoch) => format!("{base}.sde{epoch}"),
                    None => base.to_string(),
                });
            }
        }
    }
    for key in &candidates {
        if let Some(raw) = snapshotter.label(id, key)? {
            let layer: Layer =
                serde_json::from_str(&raw).map_err(|_| ExportError::BadLabel(id.to_string()))?;
            if store.has_blob(&layer.descriptor.digest) {
                tracing::debug!(snapshot = %id, blob = %layer.descriptor.digest, "layer reused");
                return Ok(layer);
            }
        }
    }
    if opts.is_canceled() {
        return Err(ExportError::Canceled);
    }
    let started = std::time::Instant::now();
    // A tar stream seen before (the same COPY onto a changed parent) is the same layer: one
    // blake3 pass instead of sha256 and a blob write.
    let same = crate::content::same_content(snapshotter, store, id, opts)?;
    let hashed = started.elapsed();
    let (layer, reused) = match same {
        Some(layer) => (layer, true),
        None => {
            let (digest, size, diff_digest, media_type, (key, prefix)) =
                write_layer_blob(snapshotter, store, id, opts)?;
            let layer = Layer {
                descriptor: Descriptor {
                    media_type: MediaType::new(media_type),
                    digest,
                    size,
                    platform: None,
                    annotations: None,
                },
                diff_id: DiffId(diff_digest),
            };
            store.remember_layer_content(&key, &prefix, opts.compression, &layer)?;
            (layer, false)
        }
    };
    tracing::debug!(
        snapshot = %id,
        blob = %layer.descriptor.digest,
        size = layer.descriptor.size,
        content_check_time = ?hashed,
        export_time = ?started.elapsed(),
        same_content_as_earlier_layer = reused,
        "layer exported"
    );
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

/// A layer being made in this process (snapshot and label key); dropping it lets the next
/// maker of the same layer go on.
struct Making(String);

/// The layers being made in this process, and the signal that one is done.
static MAKING: (Mutex<BTreeSet<String>>, Condvar) = (Mutex::new(BTreeSet::new()), Condvar::new());

impl Making {
    /// Waits until no other thread makes `key`, then marks it as made by this one.
    fn start(key: String) -> Making {
        let (set, done) = &MAKING;
        let mut making = set.lock().unwrap_or_else(|p| p.into_inner());
        while making.contains(&key) {
            making = done.wait(making).unwrap_or_else(|p| p.into_inner());
        }
        making.insert(key.clone());
        Making(key)
    }
}

impl Drop for Making {
    fn drop(&mut self) {
        let (set, done) = &MAKING;
        set.lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.0);
        done.notify_all();
    }
}

/// [`ensure_layer`] for every snapshot of `ids` (a chain or any set), at most `jobs` (0: the
/// cores) layers at a time, each its own tar -> hash -> write pipeline; the layers in `ids`'
/// order, or the first error.
pub fn ensure_layers(
    snapshotter: &Snapshotter,
    store: &Store,
    ids: &[SnapshotId],
    opts: &LayerOptions,
    jobs: usize,
) -> Result<Vec<Layer>, ExportError> {
    let limit = if jobs == 0 {
        crate::pipe::cores()
    } else {
        jobs
    };
    crate::pipe::parallel_map(ids, limit, |id| ensure_layer(snapshotter, store, id, opts))
        .into_iter()
        .collect()
}

/// Fills `rootfs.diff_ids` from `layers` and stores config and manifest; returns the manifest descriptor.
pub fn assemble_image(
    store: &Store,
    config: ImageConfig,
    layers: &[Layer],
) -> Result<(Descriptor, Manifest), ExportError> {
    assemble_image_annotated(store, config, layers, &BTreeMap::new())
}

/// [`assemble_image`] with `annotations` on the manifest (none: no `annotations` field).
pub fn assemble_image_annotated(
    store: &Store,
    mut config: ImageConfig,
    layers: &[Layer],
    annotations: &BTreeMap<String, String>,
) -> Result<(Descriptor, Manifest), ExportError> {
    config.rootfs.kind = "layers".to_string();
    config.rootfs.diff_ids = layers.iter().map(|l| l.diff_id.clone()).collect();
    let annotations = (!annotations.is_empty()).then(|| annotations.clone());
    Ok(store.write_image_annotated(
        &config,
        layers.iter().map(|l| l.descriptor.clone()).collect(),
        annotations,
    )?)
}

/// Stores an OCI image index over `manifests` (image manifests already in the store, each with
/// its `platform`; in the order given, which is the order of the build's `--platform` list) and
/// returns its descriptor: a multi-platform image, tagged and pushed like an image.
pub fn assemble_index(store: &Store, manifests: &[Descriptor]) -> Result<Descriptor, ExportError> {
    let index = rbuild_oci::Index {
        manifests: manifests.to_vec(),
        ..rbuild_oci::Index::empty()
    };
    let (digest, size, _) = store.write_json_blob(&index)?;
    Ok(Descriptor {
        media_type: rbuild_oci::MediaType::new(rbuild_oci::MediaType::OCI_INDEX),
        digest,
        size,
        platform: None,
        annotations: None,
    })
}
