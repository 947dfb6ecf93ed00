//! `rbuild pull`: an image's manifest, config and layers downloaded into the local store, named
//! there by its full reference and unpacked into snapshots (as `docker pull` extracts), so
//! `rbuild images` lists it and a later `FROM` of that name needs no registry and no unpacking.
//! `--platform P` stores that platform's image; several platforms are stored as an index of
//! them, each unpacked ([`pull_image_platforms`]); [`stored_image_for_platform`] finds a stored
//! name's image for one platform again.

use crate::error::{blocking, BuildError};
use crate::StateDir;
use rbuild_oci::{Digest, ImageRecord, Index, Platform, Store, StoreError};
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
    /// The manifest digest (the index digest when several platforms were pulled).
    pub digest: Digest,
    /// The platforms pulled (empty for a plain pull of the client's platform).
    pub platforms: Vec<Platform>,
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
        .map_err(|e| BuildError::registry_with_platforms("failed to pull".into(), e))?;
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
        .map_err(|e| BuildError::registry_with_platforms("failed to pull".into(), e))?;
    unpack(state, &store, client, &name, &record.manifest_digest).await?;
    let up_to_date =
        before.as_ref() == Some(&record.manifest_digest) && layers.iter().all(|l| l.existed);
    Ok(Pulled {
        name,
        digest: record.manifest_digest,
        platforms: Vec::new(),
        up_to_date,
        layers,
    })
}

/// Pulls `reference` for `platforms` (`pull --platform P[,P]`; none: as [`pull_image`]) into
/// the store of `state`: one platform is stored as that platform's image manifest, several as an
/// index of their manifests (see [`RegistryClient::pull_platforms`]), tagged by the full
/// reference; every platform's layers are unpacked into snapshots by chain ID.
pub async fn pull_image_platforms(
    state: &StateDir,
    reference: &Reference,
    platforms: &[Platform],
    client: &RegistryClient,
) -> Result<Pulled, BuildError> {
    if platforms.is_empty() {
        return pull_image(state, reference, client).await;
    }
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
    let (store2, name2) = (store.clone(), name.clone());
    let (before, had) = blocking(move || {
        let before = store2
            .resolve_tag(&name2)
            .map_err(|e| BuildError::step("reading the image store", e))?
            .map(|d| d.digest);
        let had: Vec<Digest> = store2
            .list_blobs()
            .map_err(|e| BuildError::step("reading the image store", e))?
            .into_iter()
            .map(|b| b.digest)
            .collect();
        Ok((before, had))
    })
    .await?;
    let pulled = client
        .pull_platforms(reference, &store, platforms, &name)
        .await
        .map_err(|e| BuildError::registry_with_platforms("failed to pull".into(), e))?;
    let mut layers: Vec<PulledLayer> = Vec::new();
    for (_, record) in &pulled.images {
        for l in &record.manifest.layers {
            if !layers.iter().any(|x| x.digest == l.digest) {
                layers.push(PulledLayer {
                    existed: had.contains(&l.digest),
                    digest: l.digest.clone(),
                });
            }
        }
        unpack(state, &store, client, &name, &record.manifest_digest).await?;
    }
    let up_to_date =
        before.as_ref() == Some(&pulled.top.digest) && layers.iter().all(|l| l.existed);
    Ok(Pulled {
        name,
        digest: pulled.top.digest,
        platforms: pulled.images.into_iter().map(|(p, _)| p).collect(),
        up_to_date,
        layers,
    })
}

/// The image that the stored `name` holds for `platform`, for a build's base resolution: `name`
/// as written (`app:1`), normalised (`docker.io/library/app:1`) or `NAME@DIGEST`; an index
/// gives the manifest [`Index::select`] picks (BuildKit's fallbacks), a single manifest itself
/// when its config's platform suits `platform` ([`Platform::rank`]). `None` when the store has
/// no such name or no image for that platform.
pub fn stored_image_for_platform(
    store: &Store,
    name: &str,
    platform: &Platform,
) -> Result<Option<ImageRecord>, StoreError> {
    let Ok(reference) = Reference::parse(name) else {
        return Ok(None);
    };
    let top = match &reference.digest {
        Some(d) if store.has_blob(d) => d.clone(),
        Some(_) => return Ok(None),
        None => {
            let candidates = [reference.to_string(), rbuild_exporter::normalize_tag(name)];
            let mut found = None;
            for c in &candidates {
                if let Some(d) = store.resolve_tag(c)? {
                    found = Some(d.digest);
                    break;
                }
            }
            match found {
                Some(d) => d,
                None => return Ok(None),
            }
        }
    };
    image_for_platform(store, &top, platform)
}

/// The image of the stored manifest or index `digest` for `platform` (see
/// [`stored_image_for_platform`]).
pub fn image_for_platform(
    store: &Store,
    digest: &Digest,
    platform: &Platform,
) -> Result<Option<ImageRecord>, StoreError> {
    let bytes = store.read_blob(digest)?;
    let index: Option<Index> = serde_json::from_slice::<Index>(&bytes)
        .ok()
        .filter(|i| !i.manifests.is_empty());
    if let Some(index) = index {
        return match index.select(platform) {
            Some(d) => store.read_image(&d.digest).map(Some),
            None => Ok(None),
        };
    }
    let record = store.read_image(digest)?;
    Ok(platform
        .rank(&record.config.platform())
        .is_some()
        .then_some(record))
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
