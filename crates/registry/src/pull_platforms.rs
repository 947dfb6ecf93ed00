//! Pulling chosen platforms of an image (`pull --platform P[,P]`): one platform is stored and
//! tagged as its own image manifest (as `docker pull --platform`); several are stored as an
//! image index of those platforms' manifests, the registry's own index bytes when the choice
//! covers all of it (so the digest stays the registry's), else a new OCI index listing only them.

use crate::pull::{platform_string, put_blob};
use crate::{Reference, RegistryClient, RegistryError};
use rbuild_oci::{canonical_json, Descriptor, Digest, ImageRecord, Index, MediaType, Platform};
use rbuild_oci::{Store, StoreError};

/// What [`RegistryClient::pull_platforms`] stored.
#[derive(Debug, Clone)]
pub struct PulledPlatforms {
    /// The tagged descriptor: the one image manifest, or the index.
    pub top: Descriptor,
    /// Each distinct platform's image, in the order asked (with the platform asked for).
    pub images: Vec<(Platform, ImageRecord)>,
}

impl RegistryClient {
    /// Pulls the images of `r` for `platforms` (at least one; [`rbuild_oci::Index::select`]'s
    /// matching with BuildKit's fallbacks) into `store` and tags the result `tag_as`: one
    /// platform as its image manifest, several as an index of their manifests (see the module
    /// doc). A platform the index lacks is [`RegistryError::NoMatchingPlatform`]; a reference
    /// that is a single manifest satisfies only its own platform.
    pub async fn pull_platforms(
        &self,
        r: &Reference,
        store: &Store,
        platforms: &[Platform],
        tag_as: &str,
    ) -> Result<PulledPlatforms, RegistryError> {
        let what = r.to_string();
        let (bytes, media_type, digest) = self
            .fetch_manifest(r, &r.manifest_ref(), r.digest.as_ref(), &what)
            .await?;
        // Later requests name the index by digest, so a tag that moves meanwhile changes nothing.
        let pinned = Reference {
            digest: Some(digest.clone()),
            ..r.clone()
        };
        let index: Option<Index> = if media_type.is_index() {
            Some(
                serde_json::from_slice(&bytes).map_err(|source| RegistryError::InvalidJson {
                    what: format!("index of {what}"),
                    source,
                })?,
            )
        } else {
            None
        };
        let mut images: Vec<(Platform, ImageRecord)> = Vec::new();
        let mut chosen: Vec<Descriptor> = Vec::new();
        for want in platforms {
            let resolved = self.resolve_platform(&pinned, want).await?;
            if index.is_none() {
                let got = resolved
                    .descriptor()
                    .platform
                    .unwrap_or_else(Platform::linux_amd64);
                if want.rank(&got).is_none() {
                    return Err(RegistryError::NoMatchingPlatform {
                        index: resolved.manifest_digest.clone(),
                        reference: what.clone(),
                        platform: platform_string(want),
                        available: platform_string(&got),
                    });
                }
            }
            if chosen.iter().any(|d| d.digest == resolved.manifest_digest) {
                continue;
            }
            self.store_resolved(&pinned, store, &resolved).await?;
            let desc = index
                .as_ref()
                .and_then(|i| {
                    i.manifests
                        .iter()
                        .find(|d| d.digest == resolved.manifest_digest)
                })
                .cloned()
                .unwrap_or_else(|| resolved.descriptor());
            chosen.push(desc);
            images.push((
                want.clone(),
                ImageRecord {
                    manifest_digest: resolved.manifest_digest.clone(),
                    manifest: resolved.manifest.clone(),
                    config: resolved.config.clone(),
                },
            ));
        }
        let store2 = store.clone();
        let name = tag_as.to_string();
        let task_what = format!("pull {r}");
        let top = tokio::task::spawn_blocking(move || -> Result<Descriptor, StoreError> {
            let top = match (&index, chosen.len()) {
                (Some(index), n) if n > 1 => {
                    stored_index(&store2, index, &bytes, &media_type, &digest, chosen)?
                }
                _ => chosen.remove(0),
            };
            store2.set_tag(&name, &top)?;
            Ok(top)
        })
        .await
        .map_err(|e| RegistryError::Task {
            what: task_what.clone(),
            message: e.to_string(),
        })?
        .map_err(|source| RegistryError::Store {
            what: task_what,
            source,
        })?;
        Ok(PulledPlatforms { top, images })
    }
}

/// Stores the index of the `chosen` manifests of `index` (served as `bytes`, `media_type`,
/// `digest`): those bytes when `chosen` is every manifest, else a new OCI index of `chosen` in
/// the registry's order.
fn stored_index(
    store: &Store,
    index: &Index,
    bytes: &[u8],
    media_type: &MediaType,
    digest: &Digest,
    chosen: Vec<Descriptor>,
) -> Result<Descriptor, StoreError> {
    let all = index
        .manifests
        .iter()
        .all(|d| chosen.iter().any(|c| c.digest == d.digest));
    if all {
        put_blob(store, bytes, digest)?;
        return Ok(Descriptor {
            media_type: media_type.clone(),
            digest: digest.clone(),
            size: bytes.len() as u64,
            platform: None,
            annotations: None,
        });
    }
    let manifests = index
        .manifests
        .iter()
        .filter(|d| chosen.iter().any(|c| c.digest == d.digest))
        .cloned()
        .collect();
    let new = Index {
        manifests,
        ..Index::empty()
    };
    let bytes = canonical_json(&new).map_err(|source| StoreError::Json {
        what: "index".into(),
        source,
    })?;
    let (digest, size) = store.write_blob(&bytes)?;
    Ok(Descriptor {
        media_type: MediaType::new(MediaType::OCI_INDEX),
        digest,
        size,
        platform: None,
        annotations: None,
    })
}
