//! The export step: the solved snapshot chain becomes layers and an image in the store, tagged
//! with the build's names, then written to each `--output` (OCI/docker archives, a local
//! directory, a rootfs tar, more store names). Both parts stop when the build is canceled
//! before anything more becomes visible.
//!
//! Times come from the cached results, as BuildKit's exporter does: each layer's snapshot
//! carries the time it was first exported (label [`CREATED_LABEL`]), a history entry this build
//! left without a time takes its layer's (an empty-layer step the previous entry's), and the
//! image's `created` is the last entry's. A rebuild whose every step is cached therefore gives
//! the same config and manifest digest; `SOURCE_DATE_EPOCH` still sets every time it names.

use crate::cancel::stop_if_canceled;
use crate::error::BuildError;
use crate::options::rfc3339;
use crate::request::OutputResult;
use crate::spec::{CompressionSpec, Output, OutputSpec};
use rbuild_exporter::{
    assemble_image_annotated, ensure_layers, image_variant, normalize_tag, LayerOptions,
};
use rbuild_oci::{Compression, Descriptor, Digest, ImageConfig, Store};
use rbuild_snapshotter::{SnapshotId, Snapshotter};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

/// The layer options of a build's distribution (push, cache export): the first output that sets
/// `compression=` decides, clamping its level to the algorithm's range. The store itself keeps
/// built layers uncompressed ([`stored_options`]).
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

/// The options the store's layers are made with: uncompressed (a build pays the tar and one
/// sha256), whatever the outputs ask; their compressed variants are made when distributed.
pub(crate) fn stored_options(opts: &LayerOptions) -> LayerOptions {
    LayerOptions {
        compression: Compression::None,
        force_compression: false,
        ..opts.clone()
    }
}

/// The layer options of one output: the build's, with the output's own `compression=` when it
/// sets one.
pub(crate) fn output_options(build: &LayerOptions, spec: &OutputSpec) -> LayerOptions {
    let mut opts = build.clone();
    if let Some(c) = spec.compression {
        apply_compression(&mut opts, c);
    }
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

/// What the image of a build is made of, besides its layers.
pub(crate) struct ImageParts {
    /// Its config (times not yet filled in).
    pub(crate) config: ImageConfig,
    /// Labels added to the config (`--label`).
    pub(crate) labels: BTreeMap<String, String>,
    /// Annotations of the manifest (`--annotation`).
    pub(crate) annotations: BTreeMap<String, String>,
}

/// Writes the image of `top` made of `parts` into the store and tags it with `tags` (normalised)
/// (blocking I/O). Returns the manifest's descriptor and the config's digest. When the build is
/// canceled (`opts.cancel`), a layer stops at its next chunk and nothing is named.
pub(crate) fn export_image(
    store: &Store,
    snapshotter: &Snapshotter,
    top: Option<&SnapshotId>,
    parts: ImageParts,
    tags: &[String],
    opts: &LayerOptions,
) -> Result<(Descriptor, Digest), BuildError> {
    let flag = opts.cancel.clone().unwrap_or_default();
    let chain = chain_of(snapshotter, top)?;
    let mut config = parts.config;
    if !parts.labels.is_empty() {
        let labels = config.config.labels.get_or_insert_with(BTreeMap::new);
        labels.extend(parts.labels);
    }
    fill_times(&mut config, &layer_times(snapshotter, &chain)?);
    stop_if_canceled(&flag)?;
    let layers = ensure_layers(snapshotter, store, &chain, &stored_options(opts), 0);
    stop_if_canceled(&flag)?;
    let layers = layers.map_err(|e| BuildError::step("exporting layers", e))?;
    let (desc, manifest) = assemble_image_annotated(store, config, &layers, &parts.annotations)
        .map_err(|e| BuildError::step("writing image", e))?;
    for tag in tags {
        stop_if_canceled(&flag)?;
        store
            .set_tag(tag, &desc)
            .map_err(|e| BuildError::step(format!("naming {tag}"), e))?;
    }
    Ok((desc, manifest.config.digest))
}

/// The snapshot label holding the Unix seconds at which a snapshot was first exported (its
/// result's creation time, kept with the cached result as BuildKit's `buildkit/createdat`).
pub(crate) const CREATED_LABEL: &str = "rbuild.created";

/// The creation time of each snapshot of `chain` (Unix seconds): its [`CREATED_LABEL`], set to
/// now when it has none yet (its first export).
fn layer_times(snapshotter: &Snapshotter, chain: &[SnapshotId]) -> Result<Vec<i64>, BuildError> {
    let read = |e| BuildError::step("reading layer times", e);
    let mut times = Vec::with_capacity(chain.len());
    for id in chain {
        let known = snapshotter.label(id, CREATED_LABEL).map_err(read)?;
        let secs = match known.and_then(|v| v.trim().parse::<i64>().ok()) {
            Some(secs) => secs,
            None => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                snapshotter
                    .set_label(id, CREATED_LABEL, &now.to_string())
                    .map_err(read)?;
                now
            }
        };
        times.push(secs);
    }
    Ok(times)
}

/// Gives every history entry of `config` without a time one from the results (`layer_times`,
/// one per layer, oldest first): a layer's entry its layer's time (entries and layers are
/// matched from the top, as BuildKit does), an empty-layer entry the previous entry's (the next
/// one's when none precedes it). The config's own `created`, when unset, becomes the last
/// entry's time.
fn fill_times(config: &mut ImageConfig, layer_times: &[i64]) {
    let history = &mut config.history;
    let mut remaining = layer_times.iter().rev();
    let mut own: Vec<Option<String>> = vec![None; history.len()];
    for (i, h) in history.iter().enumerate().rev() {
        if !h.empty_layer {
            own[i] = remaining.next().map(|secs| rfc3339(*secs));
        }
    }
    let mut previous: Option<String> = None;
    for (h, own) in history.iter_mut().zip(own) {
        if h.created.is_none() {
            h.created = own.or_else(|| previous.clone());
        }
        if h.created.is_some() {
            previous = h.created.clone();
        }
    }
    let mut next: Option<String> = None;
    for h in history.iter_mut().rev() {
        if h.created.is_none() {
            h.created = next.clone();
        } else {
            next = h.created.clone();
        }
    }
    if config.created.is_none() {
        config.created = config.history.last().and_then(|h| h.created.clone());
    }
}

/// The flag of options without a cancel flag.
static NOT_CANCELED: AtomicBool = AtomicBool::new(false);

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
    /// A multi-platform image's platforms with their root filesystems, in the build's order
    /// (`desc` is then their index); empty for a single-platform build, whose filesystem is
    /// `top`. With more than one, `type=local` and `type=tar` write a directory per platform.
    pub(crate) platforms: &'a [rbuild_exporter::PlatformRootfs],
}

/// Writes the image `desc` (of `top`) to every output (blocking I/O), stopping before the next
/// output or name once `cancel` is raised. Archives (OCI, docker) hold the image with its layers
/// compressed as the output asks (`opts`, then its own `compression=`; gzip by default).
pub(crate) fn write_outputs(
    image: &StoredImage<'_>,
    outputs: &[OutputSpec],
    opts: &LayerOptions,
) -> Result<Vec<OutputResult>, BuildError> {
    let cancel: &AtomicBool = opts.cancel.as_deref().unwrap_or(&NOT_CANCELED);
    let StoredImage {
        store,
        snapshotter,
        top,
        desc,
        tags,
        platforms,
    } = *image;
    let split = platforms.len() > 1;
    if desc.media_type.is_index()
        && outputs
            .iter()
            .any(|o| matches!(o.output, Output::Docker { .. }))
    {
        return Err(BuildError::DockerManifestList);
    }
    let mut results = Vec::new();
    for spec in outputs {
        stop_if_canceled(cancel)?;
        let mut manifest = None;
        let archived = |manifest: &mut Option<Descriptor>| {
            let d = image_variant(store, desc, &output_options(opts, spec), 0)?;
            *manifest = Some(d.clone());
            Ok::<_, rbuild_exporter::ExportError>(d)
        };
        let (result, names) = match &spec.output {
            // As buildx: the `-t` names replace an archive output's own `name=`.
            Output::Oci { dest, tar, names } => {
                let names = if tags.is_empty() { names } else { tags };
                let r = archived(&mut manifest)
                    .and_then(|d| rbuild_exporter::write_oci(store, &d, names, dest, *tar));
                (r, names.to_vec())
            }
            Output::Docker { dest, names } => {
                let names = if tags.is_empty() { names } else { tags };
                let r = archived(&mut manifest)
                    .and_then(|d| rbuild_exporter::write_docker_archive(store, &d, names, dest));
                (r, names.to_vec())
            }
            Output::Local { dest } if split => (
                rbuild_exporter::write_local_platforms(snapshotter, platforms, dest),
                Vec::new(),
            ),
            Output::Local { dest } => (
                rbuild_exporter::write_local(snapshotter, top, dest),
                Vec::new(),
            ),
            Output::Tar { dest } if split => (
                rbuild_exporter::write_tar_platforms(snapshotter, platforms, dest),
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
            manifest,
        });
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbuild_oci::History;

    fn entry(created: Option<&str>, empty_layer: bool) -> History {
        History {
            created: created.map(str::to_string),
            empty_layer,
            ..History::default()
        }
    }

    #[test]
    fn untimed_entries_take_their_layers_times() {
        let mut config = ImageConfig {
            history: vec![
                entry(Some("2000-01-01T00:00:00Z"), false),
                entry(None, true),
                entry(None, false),
                entry(None, true),
                entry(None, false),
                entry(None, true),
            ],
            ..ImageConfig::default()
        };
        fill_times(&mut config, &[5, 0, 86_400]);
        let times: Vec<_> = config.history.iter().map(|h| h.created.clone()).collect();
        let day = Some("1970-01-02T00:00:00Z".to_string());
        let zero = Some("1970-01-01T00:00:00Z".to_string());
        let base = Some("2000-01-01T00:00:00Z".to_string());
        assert_eq!(
            times,
            vec![
                base.clone(),
                base,
                zero.clone(),
                zero,
                day.clone(),
                day.clone()
            ]
        );
        assert_eq!(config.created, day);
    }

    #[test]
    fn leading_empty_entries_take_the_next_time_and_set_times_stay() {
        let mut config = ImageConfig {
            history: vec![entry(None, true), entry(None, false)],
            created: Some("keep".into()),
            ..ImageConfig::default()
        };
        fill_times(&mut config, &[0]);
        let zero = Some("1970-01-01T00:00:00Z".to_string());
        assert_eq!(config.history[0].created, zero);
        assert_eq!(config.history[1].created, zero);
        assert_eq!(config.created.as_deref(), Some("keep"));
        let mut none = ImageConfig {
            history: vec![entry(None, true)],
            ..ImageConfig::default()
        };
        fill_times(&mut none, &[]);
        assert_eq!(none.history[0].created, None);
        assert_eq!(none.created, None);
    }

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

    /// A multi-platform image with a docker archive among the outputs: BuildKit's refusal,
    /// before any output (the OCI one listed first too) is written.
    #[test]
    fn a_docker_output_of_an_index_is_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let snapshotter = Snapshotter::open(&dir.path().join("snapshots")).unwrap();
        let mut manifests = Vec::new();
        for arch in ["amd64", "arm64"] {
            let config = ImageConfig {
                architecture: arch.into(),
                os: "linux".into(),
                ..Default::default()
            };
            manifests.push(store.write_image(&config, vec![]).unwrap().0);
        }
        let index = rbuild_exporter::assemble_index(&store, &manifests).unwrap();
        let oci = dir.path().join("oci.tar");
        let docker = dir.path().join("docker.tar");
        let outputs: Vec<OutputSpec> = [
            format!("type=oci,dest={}", oci.display()),
            format!("type=docker,dest={}", docker.display()),
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let image = StoredImage {
            store: &store,
            snapshotter: &snapshotter,
            top: None,
            desc: &index,
            tags: &[],
            platforms: &[],
        };
        let err = write_outputs(&image, &outputs, &LayerOptions::default()).unwrap_err();
        assert!(matches!(err, BuildError::DockerManifestList));
        assert_eq!(
            err.to_string(),
            "docker exporter does not currently support exporting manifest lists"
        );
        assert!(!oci.exists() && !docker.exists());
        // Without the docker output the OCI archive of the index is written.
        write_outputs(&image, &outputs[..1], &LayerOptions::default()).unwrap();
        assert!(oci.exists());
    }
}
