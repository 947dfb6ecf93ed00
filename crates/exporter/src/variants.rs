//! Compressed layers for distribution: the store keeps built layers as uncompressed tars, and a
//! push, an OCI/docker archive or a cache export asks here for the image or layer in the
//! compression it needs. Each variant is made once (read -> decompress when needed -> compress ->
//! sha256 + write, each stage on its own thread), remembered in the store
//! ([`Store::set_variant`], written only after the blob is committed) and reused afterwards; the
//! layers of an image are converted concurrently, bounded by the cores.

use crate::pipe::{cores, parallel_map, pipe};
use crate::progress::Meter;
use crate::LayerAction;
use crate::{ExportError, LayerOptions};
use rbuild_oci::{Compression, Descriptor, DiffId, Index, Layer, Manifest, MediaType, Store};
use std::io::{self, Read, Write};

/// The gzip level of variants when the output sets no `compression-level`: 1, the fast end
/// (about twice level 6's speed for a fifth more bytes on text, the same on incompressible
/// data), since a push or an archive now pays the compression a build used to.
pub const DEFAULT_GZIP_LEVEL: u32 = 1;

/// The media type of a layer compressed with `c` in a manifest of `manifest_type` (Docker
/// manifests name gzip layers Docker's way).
fn layer_media_type(c: Compression, manifest_type: Option<&MediaType>) -> &'static str {
    let docker = manifest_type.is_some_and(|m| m.as_str() == MediaType::DOCKER_MANIFEST);
    match (c, docker) {
        (Compression::Gzip, true) => MediaType::DOCKER_LAYER_GZIP,
        (Compression::Gzip, false) => MediaType::OCI_LAYER_GZIP,
        (Compression::Zstd, _) => MediaType::OCI_LAYER_ZSTD,
        (Compression::None, true) => "application/vnd.docker.image.rootfs.diff.tar",
        (Compression::None, false) => MediaType::OCI_LAYER_TAR,
    }
}

/// What a layer of compression `current` becomes under `opts`: `None` when it stays as it is
/// (already in the asked compression, or compressed otherwise without `force_compression`, or a
/// media type that is not a plain layer).
fn target_of(current: Option<Compression>, opts: &LayerOptions) -> Option<Compression> {
    let current = current?;
    let want = opts.compression;
    if current == want || (current != Compression::None && !opts.force_compression) {
        return None;
    }
    Some(want)
}

fn io_error<'a>(
    action: &'static str,
    layer: &'a Layer,
) -> impl FnOnce(io::Error) -> ExportError + 'a {
    move |source| ExportError::Io {
        action,
        path: layer.descriptor.digest.to_string().into(),
        source,
    }
}

/// `layer` in the compression `opts` asks for: itself when it already fits (see the module
/// doc), else the remembered variant, else a new variant made now and remembered. Stops with
/// [`ExportError::Canceled`] between chunks when `opts` is canceled, leaving no blob or mapping.
pub fn layer_variant(
    store: &Store,
    layer: &Layer,
    manifest_type: Option<&MediaType>,
    opts: &LayerOptions,
) -> Result<Layer, ExportError> {
    let current = layer.descriptor.media_type.layer_compression();
    let Some(target) = target_of(current, opts) else {
        return Ok(layer.clone());
    };
    let source = &layer.diff_id.0;
    if let Some(mut desc) = store.variant(source, target) {
        desc.media_type = MediaType::new(layer_media_type(target, manifest_type));
        tracing::debug!(layer = %source, blob = %desc.digest, "compressed layer reused");
        return Ok(Layer {
            descriptor: desc,
            diff_id: layer.diff_id.clone(),
        });
    }
    if opts.is_canceled() {
        return Err(ExportError::Canceled);
    }
    let started = std::time::Instant::now();
    let (digest, size) = compress_blob(
        store,
        layer,
        current.unwrap_or(Compression::None),
        target,
        opts,
    )?;
    let descriptor = Descriptor {
        media_type: MediaType::new(layer_media_type(target, manifest_type)),
        digest,
        size,
        platform: None,
        annotations: None,
    };
    store.set_variant(source, target, &descriptor)?;
    tracing::debug!(
        layer = %source,
        blob = %descriptor.digest,
        size,
        compress_time = ?started.elapsed(),
        "layer compressed"
    );
    Ok(Layer {
        descriptor,
        diff_id: layer.diff_id.clone(),
    })
}

/// The compressing stage's encoder over the pipe to the writer stage.
enum Encoder<W: Write> {
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Plain(W),
}

impl<W: Write> Encoder<W> {
    fn new(c: Compression, out: W, opts: &LayerOptions) -> io::Result<Self> {
        Ok(match c {
            Compression::Gzip => {
                let level =
                    flate2::Compression::new(opts.gzip_level.unwrap_or(DEFAULT_GZIP_LEVEL).min(9));
                Encoder::Gzip(flate2::write::GzEncoder::new(out, level))
            }
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(
                out,
                opts.zstd_level.unwrap_or(3),
            )?),
            Compression::None => Encoder::Plain(out),
        })
    }

    fn write_chunk(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(buf),
            Encoder::Zstd(e) => e.write_all(buf),
            Encoder::Plain(w) => w.write_all(buf),
        }
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
            Encoder::Plain(w) => Ok(w),
        }
    }
}

/// Makes and commits the `target` blob of `layer` (stored in `current`): a reader thread reads
/// (and decompresses) the stored blob, this thread compresses, a writer thread hashes and
/// writes; returns its digest and size.
fn compress_blob(
    store: &Store,
    layer: &Layer,
    current: Compression,
    target: Compression,
    opts: &LayerOptions,
) -> Result<(rbuild_oci::Digest, u64), ExportError> {
    let file = store.open_blob(&layer.descriptor.digest)?;
    let (mut raw_w, mut raw_r) = pipe();
    let (out_w, mut out_r) = pipe();
    let mut blob = store.layer_blob_writer()?;
    std::thread::scope(|s| {
        let reader = s.spawn(move || -> io::Result<()> {
            let file = io::BufReader::with_capacity(crate::pipe::CHUNK, file);
            let mut src: Box<dyn Read> = match current {
                Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
                Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(file)?),
                Compression::None => Box::new(file),
            };
            io::copy(&mut src, &mut raw_w)?;
            raw_w.close()
        });
        let writer = s.spawn(|| -> io::Result<()> {
            io::copy(&mut out_r, &mut blob)?;
            Ok(())
        });
        let compressed = (|| -> io::Result<()> {
            let total = (current == Compression::None).then_some(layer.descriptor.size);
            let mut meter = Meter::new(
                opts.progress.as_ref(),
                LayerAction::Compress,
                layer.diff_id.0.to_string(),
                total,
            );
            let mut enc = Encoder::new(target, out_w, opts)?;
            while let Some(chunk) = raw_r.next_chunk() {
                if opts.is_canceled() {
                    return Err(io::Error::other("layer compression canceled"));
                }
                enc.write_chunk(&chunk)?;
                meter.add(chunk.len());
            }
            enc.finish()?.close()?;
            meter.finish();
            Ok(())
        })();
        drop(raw_r);
        let read = reader
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("reader panicked")));
        let wrote = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("writer panicked")));
        if opts.is_canceled() {
            return Err(ExportError::Canceled);
        }
        // The first failing stage's error (a later stage only sees a broken pipe).
        read.map_err(io_error("read layer", layer))?;
        wrote.map_err(io_error("write layer", layer))?;
        compressed.map_err(io_error("compress layer", layer))
    })?;
    // An unfinished blob writer is dropped (removing its temp file) on every early return above.
    Ok(blob.commit(None)?)
}

/// The image `desc` of `store` with its layers in the compression `opts` asks for: `desc`
/// itself when every layer already fits, else a new manifest (same config and annotations) over
/// the variants, written into the store (untagged) and returned. Layers are converted
/// concurrently, at most `jobs` (0: the cores) at a time. An index (a multi-platform image)
/// gets each image manifest's variant, and a new index over them when any changed (same
/// platforms, order and annotations); entries that are not image manifests stay as they are.
pub fn image_variant(
    store: &Store,
    desc: &Descriptor,
    opts: &LayerOptions,
    jobs: usize,
) -> Result<Descriptor, ExportError> {
    if desc.media_type.is_index() {
        return index_variant(store, desc, opts, jobs);
    }
    if !desc.media_type.is_manifest() {
        return Ok(desc.clone());
    }
    let record = store.read_image(&desc.digest)?;
    let manifest = &record.manifest;
    let diff_ids = &record.config.rootfs.diff_ids;
    if diff_ids.len() != manifest.layers.len()
        || manifest
            .layers
            .iter()
            .all(|l| target_of(l.media_type.layer_compression(), opts).is_none())
    {
        return Ok(desc.clone());
    }
    let layers: Vec<Layer> = manifest
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(d, id)| Layer {
            descriptor: d.clone(),
            diff_id: DiffId(id.0.clone()),
        })
        .collect();
    let limit = if jobs == 0 { cores() } else { jobs };
    let mtype = manifest.media_type.as_ref();
    let converted = parallel_map(&layers, limit, |l| layer_variant(store, l, mtype, opts));
    let mut out = Vec::with_capacity(converted.len());
    for (c, orig) in converted.into_iter().zip(&manifest.layers) {
        let mut d = c?.descriptor;
        d.annotations = orig.annotations.clone();
        out.push(d);
    }
    let new = Manifest {
        layers: out,
        ..manifest.clone()
    };
    let (digest, size, _) = store.write_json_blob(&new)?;
    Ok(Descriptor {
        digest,
        size,
        ..desc.clone()
    })
}

/// [`image_variant`] of the index `desc`.
fn index_variant(
    store: &Store,
    desc: &Descriptor,
    opts: &LayerOptions,
    jobs: usize,
) -> Result<Descriptor, ExportError> {
    let bytes = store.read_blob(&desc.digest)?;
    let index: Index =
        serde_json::from_slice(&bytes).map_err(|source| rbuild_oci::StoreError::Json {
            what: format!("index {}", desc.digest),
            source,
        })?;
    let mut manifests = Vec::with_capacity(index.manifests.len());
    for child in &index.manifests {
        manifests.push(if child.media_type.is_manifest() {
            image_variant(store, child, opts, jobs)?
        } else {
            child.clone()
        });
    }
    if manifests == index.manifests {
        return Ok(desc.clone());
    }
    let new = Index { manifests, ..index };
    let (digest, size, _) = store.write_json_blob(&new)?;
    Ok(Descriptor {
        digest,
        size,
        ..desc.clone()
    })
}
