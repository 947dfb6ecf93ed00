//! The export of a multi-platform build (`--platform a,b`): each platform's image (layers,
//! config, manifest) into the store, then an OCI image index naming them with their platforms,
//! stored and tagged with the build's names (a single platform stores a plain manifest, as
//! buildx). What outputs and pushes of such a build receive: one [`PlatformImage`] per
//! platform.

use crate::error::BuildError;
use crate::export::{export_image, ImageParts};
use rbuild_exporter::LayerOptions;
use rbuild_oci::{canonical_json, Descriptor, Digest, Index, MediaType, Platform, Store};
use rbuild_snapshotter::{SnapshotId, Snapshotter};

/// One platform's image of a multi-platform build, as outputs and pushes receive it.
#[derive(Debug, Clone)]
pub(crate) struct PlatformImage {
    /// The platform.
    pub(crate) platform: Platform,
    /// Its manifest in the store (with the platform in the descriptor).
    pub(crate) manifest: Descriptor,
    /// Its config's digest.
    pub(crate) config: Digest,
    /// The top snapshot of its filesystem (`None`: no layers); read by the outputs of a
    /// multi-platform build (`type=local` per platform).
    #[allow(dead_code)]
    pub(crate) top: Option<SnapshotId>,
}

/// Exports every platform's image (untagged), then stores the index of them and tags it with
/// `tags` (blocking I/O). Returns the index's descriptor and the images in `images`' order.
pub(crate) fn export_index(
    store: &Store,
    snapshotter: &Snapshotter,
    images: Vec<(Platform, Option<SnapshotId>, ImageParts)>,
    tags: &[String],
    opts: &LayerOptions,
) -> Result<(Descriptor, Vec<PlatformImage>), BuildError> {
    let mut out = Vec::with_capacity(images.len());
    for (platform, top, parts) in images {
        let (mut manifest, config) =
            export_image(store, snapshotter, top.as_ref(), parts, &[], opts)?;
        manifest.platform = Some(platform.normalized());
        out.push(PlatformImage {
            platform,
            manifest,
            config,
            top,
        });
    }
    let index = Index {
        manifests: out.iter().map(|i| i.manifest.clone()).collect(),
        ..Index::empty()
    };
    let bytes = canonical_json(&index).map_err(|e| BuildError::step("writing image index", e))?;
    let (digest, size) = store
        .write_blob(&bytes)
        .map_err(|e| BuildError::step("writing image index", e))?;
    let desc = Descriptor {
        media_type: MediaType::new(MediaType::OCI_INDEX),
        digest,
        size,
        platform: None,
        annotations: None,
    };
    for tag in tags {
        if let Some(flag) = &opts.cancel {
            crate::cancel::stop_if_canceled(flag)?;
        }
        store
            .set_tag(tag, &desc)
            .map_err(|e| BuildError::step(format!("naming {tag}"), e))?;
    }
    Ok((desc, out))
}

/// Refuses, before anything runs, what a multi-platform build cannot give: a `type=docker`
/// output (or `--load`), as BuildKit's docker exporter refuses manifest lists.
pub(crate) fn check_multi_exports(
    platforms: usize,
    outputs: &[crate::spec::OutputSpec],
) -> Result<(), BuildError> {
    let docker = outputs
        .iter()
        .any(|o| matches!(o.output, crate::spec::Output::Docker { .. }));
    if platforms > 1 && docker {
        return Err(BuildError::DockerManifestList);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_docker_outputs_of_several_platforms_are_refused() {
        let spec = |s: &str| -> crate::spec::OutputSpec { s.parse().expect("spec") };
        let docker = spec("type=docker,dest=/tmp/x.tar");
        assert!(check_multi_exports(1, std::slice::from_ref(&docker)).is_ok());
        let local = spec("type=local,dest=/tmp/x");
        assert!(check_multi_exports(2, &[local]).is_ok());
        let err = check_multi_exports(2, &[docker]).unwrap_err();
        assert!(matches!(err, BuildError::DockerManifestList), "{err}");
    }
}
