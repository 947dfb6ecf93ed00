//! `rbuild pull`: an image's manifest, config and layers downloaded into the local store and
//! named there by its full reference, so `rbuild images` lists it and a later `FROM` of that name
//! needs no registry.

use crate::error::{blocking, BuildError};
use crate::StateDir;
use rbuild_oci::{Digest, Store};
use rbuild_registry::{Reference, RegistryClient};

/// One layer of a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledLayer {
    /// The layer's (compressed) digest.
    pub digest: Digest,
    /// True when the store had it before the pull (`Already exists`).
    pub existed: bool,
}

/// The result of [`pull_image`].
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The full normalised name the image is stored under (`docker.io/library/busybox:latest`).
    pub name: String,
    /// The manifest digest.
    pub digest: Digest,
    /// True when the name already pointed at this manifest and every layer was present.
    pub up_to_date: bool,
    /// The layers, bottom first.
    pub layers: Vec<PulledLayer>,
}

/// Pulls `reference` (resolved for the host platform) into the store of `state`: every layer,
/// the config and the manifest, tagged by the full reference (a digest reference is stored as
/// `NAME@DIGEST`).
pub async fn pull_image(
    state: &StateDir,
    reference: &Reference,
    client: &RegistryClient,
) -> Result<Pulled, BuildError> {
    let root = state.store();
    let store = blocking(move || {
        std::fs::create_dir_all(&root).map_err(|source| BuildError::StateDir {
            path: root.clone(),
            source,
        })?;
        Store::open(&root).map_err(|e| BuildError::step("opening the image store", e))
    })
    .await?;
    let name = reference.to_string();
    let resolved = client
        .resolve(reference)
        .await
        .map_err(|e| BuildError::registry("failed to pull", e))?;
    let (store2, name2, layer_digests) = (
        store.clone(),
        name.clone(),
        resolved
            .manifest
            .layers
            .iter()
            .map(|l| l.digest.clone())
            .collect::<Vec<_>>(),
    );
    let (before, layers) = blocking(move || {
        let before = store2
            .resolve_tag(&name2)
            .map_err(|e| BuildError::step("reading the image store", e))?
            .map(|d| d.digest);
        let layers = layer_digests
            .into_iter()
            .map(|digest| PulledLayer {
                existed: store2.has_blob(&digest),
                digest,
            })
            .collect::<Vec<_>>();
        Ok((before, layers))
    })
    .await?;
    let record = client
        .pull(reference, &store, Some(&name))
        .await
        .map_err(|e| BuildError::registry("failed to pull", e))?;
    let up_to_date =
        before.as_ref() == Some(&record.manifest_digest) && layers.iter().all(|l| l.existed);
    Ok(Pulled {
        name,
        digest: record.manifest_digest,
        up_to_date,
        layers,
    })
}
