//! `rbuild pull`: an image's manifest, config and layers downloaded into the local store, named
//! there by its full reference and unpacked into snapshots (as `docker pull` extracts), so
//! `rbuild images` lists it and a later `FROM` of that name needs no registry and no unpacking.

use crate::error::{blocking, BuildError};
use crate::StateDir;
use rbuild_oci::{Digest, Store};
use rbuild_registry::{Reference, RegistryClient};
use rbuild_snapshotter::Snapshotter;
use rbuild_solver::{CacheIndex, DEFAULT_LOCK_TIMEOUT};

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
/// `NAME@DIGEST`), and unpacks its layers into snapshots recorded by chain ID, where a build's
/// `FROM` finds them.
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
    unpack(state, &store, client, &name, &record.manifest_digest).await?;
    let up_to_date =
        before.as_ref() == Some(&record.manifest_digest) && layers.iter().all(|l| l.existed);
    Ok(Pulled {
        name,
        digest: record.manifest_digest,
        up_to_date,
        layers,
    })
}

/// Unpacks the pulled image `digest` (named `name`) into the snapshots of `state`, holding the
/// builds' GC lease meanwhile, exactly as a build's `FROM` would (an already unpacked chain is
/// kept as it is).
async fn unpack(
    state: &StateDir,
    store: &Store,
    client: &RegistryClient,
    name: &str,
    digest: &Digest,
) -> Result<(), BuildError> {
    let opened = {
        let state = state.clone();
        blocking(move || {
            let lease = crate::gc::BuildLease::acquire(&state, None)
                .map_err(|e| BuildError::step("locking the state root", e))?;
            let snapshotter = Snapshotter::open(&state.snapshots())
                .map_err(|e| BuildError::step("opening snapshots", e))?;
            let index = CacheIndex::open_with(&state.cache_index(), DEFAULT_LOCK_TIMEOUT, None)
                .map_err(|e| BuildError::step("opening the cache index", e))?;
            Ok((lease, snapshotter, index))
        })
        .await?
    };
    let (_lease, snapshotter, index) = opened;
    rbuild_worker::unpack_image(
        store,
        &snapshotter,
        client,
        Some(&index),
        name,
        Some(digest),
    )
    .await
    .map_err(|e| BuildError::step("unpacking the pulled image", e))?;
    Ok(())
}
