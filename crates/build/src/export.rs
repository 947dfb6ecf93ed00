//! The export step: the solved snapshot chain becomes layers and an image in the store, tagged
//! with the build's names, then written to each `--output` (OCI/docker archives, a local
//! directory, a rootfs tar, more store names). Both parts stop when the build is canceled
//! before anything more becomes visible.

use crate::cancel::stop_if_canceled;
use crate::error::BuildError;
use crate::request::OutputResult;
use crate::spec::{CompressionSpec, Output, OutputSpec};
use rbuild_exporter::{assemble_image, ensure_layer, normalize_tag, LayerOptions};
use rbuild_oci::{Compression, Descriptor, Digest, ImageConfig, Store};
use rbuild_snapshotter::{SnapshotId, Snapshotter};
use std::sync::atomic::AtomicBool;

/// The layer options of a build: the first output that sets `compression=` decides (the image
/// is assembled once), clamping its level to the algorithm's range.
pub(crate) fn layer_options(
    outputs: &[OutputSpec],
    source_date_epoch: Option<i64>,
) -> LayerOptions {
    let mut opts = LayerOptions::default();
    if let Some(c) = outputs.iter().find_map(|o| o.compression) {
        apply_compression(&mut opts, c);
    }
    opts.source_date_epoch = source_date_epoch;
    opts
}

fn apply_compression(opts: &mut LayerOptions, c: CompressionSpec) {
    opts.compression = c.compression;
    if let Some(level) = c.level {
        match c.compression {
            Compression::Gzip => opts.gzip_level = Some(level.clamp(0, 9) as u32),
            Compression::Zstd => opts.zstd_level = Some(level.clamp(1, 22)),
            Compression::None => {}
        }
    }
    opts.force_compression = c.force;
}

fn chain_of(
    snapshotter: &Snapshotter,
    top: Option<&SnapshotId>,
) -> Result<Vec<SnapshotId>, BuildError> {
    let mut out = Vec::new();
    let mut cur = top.cloned();
    while let Some(id) = cur {
        cur = snapshotter
            .parent(&id)
            .map_err(|e| BuildError::step("reading snapshot chain", e))?;
        out.push(id);
    }
    out.reverse();
    Ok(out)
}

/// Writes the image of `top` with `config` into the store and tags it with `tags` (normalised)
/// (blocking I/O). Returns the manifest's descriptor and the config's digest. When the build is
/// canceled (`opts.cancel`), a layer stops at its next chunk and nothing is named.
pub(crate) fn export_image(
    store: &Store,
    snapshotter: &Snapshotter,
    top: Option<&SnapshotId>,
    config: ImageConfig,
    tags: &[String],
    opts: &LayerOptions,
) -> Result<(Descriptor, Digest), BuildError> {
    let flag = opts.cancel.clone().unwrap_or_default();
    let mut layers = Vec::new();
    for id in chain_of(snapshotter, top)? {
        stop_if_canceled(&flag)?;
        let layer = ensure_layer(snapshotter, store, &id, opts);
        stop_if_canceled(&flag)?;
        layers.push(layer.map_err(|e| BuildError::step("exporting layers", e))?);
    }
    let (desc, manifest) =
        assemble_image(store, config, &layers).map_err(|e| BuildError::step("writing image", e))?;
    for tag in tags {
        stop_if_canceled(&flag)?;
        store
            .set_tag(tag, &desc)
            .map_err(|e| BuildError::step(format!("naming {tag}"), e))?;
    }
    Ok((desc, manifest.config.digest))
}

/// An image in the store, as the outputs read it.
#[derive(Clone, Copy)]
pub(crate) struct StoredImage<'a> {
    /// The store holding its blobs.
    pub(crate) store: &'a Store,
    /// The snapshots (the rootfs outputs read `top`).
    pub(crate) snapshotter: &'a Snapshotter,
    /// The snapshot of its root filesystem (None for an empty image).
    pub(crate) top: Option<&'a SnapshotId>,
    /// Its manifest.
    pub(crate) desc: &'a Descriptor,
    /// The names it was built with (`-t`).
    pub(crate) tags: &'a [String],
}

/// Writes the image `desc` (of `top`) to every output (blocking I/O), stopping before the next
/// output or name once `cancel` is raised.
pub(crate) fn write_outputs(
    image: &StoredImage<'_>,
    outputs: &[OutputSpec],
    cancel: &AtomicBool,
) -> Result<Vec<OutputResult>, BuildError> {
    let StoredImage {
        store,
        snapshotter,
        top,
        desc,
        tags,
    } = *image;
    let mut results = Vec::new();
    for spec in outputs {
        stop_if_canceled(cancel)?;
        let (result, names) = match &spec.output {
            // As buildx: the `-t` names replace an archive output's own `name=`.
            Output::Oci { dest, tar, names } => {
                let names = if tags.is_empty() { names } else { tags };
                let r = rbuild_exporter::write_oci(store, desc, names, dest, *tar);
                (r, names.to_vec())
            }
            Output::Docker { dest, names } => {
                let names = if tags.is_empty() { names } else { tags };
                let r = rbuild_exporter::write_docker_archive(store, desc, names, dest);
                (r, names.to_vec())
            }
            Output::Local { dest } => (
                rbuild_exporter::write_local(snapshotter, top, dest),
                Vec::new(),
            ),
            Output::Tar { dest } => (
                rbuild_exporter::write_tar(snapshotter, top, dest),
                Vec::new(),
            ),
            Output::Image { names, .. } => {
                let mut tagged = Vec::new();
                for name in names {
                    stop_if_canceled(cancel)?;
                    let tag = normalize_tag(name);
                    store
                        .set_tag(&tag, desc)
                        .map_err(|e| BuildError::step(format!("naming {tag}"), e))?;
                    tagged.push(tag);
                }
                (Ok(()), tagged)
            }
        };
        result.map_err(|e| BuildError::step("exporting", e))?;
        results.push(OutputResult {
            output: spec.output.clone(),
            names,
        });
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_output_with_compression_decides() {
        let outputs: Vec<OutputSpec> = [
            "type=local,dest=/l",
            "type=oci,dest=/x,compression=gzip,compression-level=42",
            "type=oci,dest=/y,compression=zstd",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let opts = layer_options(&outputs, Some(7));
        assert_eq!(opts.compression, Compression::Gzip);
        assert_eq!(opts.gzip_level, Some(9));
        assert_eq!(opts.source_date_epoch, Some(7));
        assert!(!opts.force_compression);
        let none = layer_options(&[], None);
        assert_eq!(none.compression, LayerOptions::default().compression);
    }
}
