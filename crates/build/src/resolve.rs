//! Base images of a build (`FROM name`): the store's copy unless a pull is asked for, else the
//! registry's manifest and config (stored, and tagged when named by tag). All bases of a
//! Dockerfile resolve concurrently.

use crate::error::{blocking, BuildError};
use rbuild_frontend::BaseImage;
use rbuild_oci::{Descriptor, MediaType, Store};
use rbuild_registry::{Reference, RegistryClient};
use std::collections::HashMap;

/// Resolves every name of `needed` at once; the first failure (in `needed`'s order) wins, with a
/// hint when a bare word is more likely a misspelled stage than an image, placed in the
/// Dockerfile by `locate` (its index in `needed`, the error).
pub(crate) async fn resolve_all(
    store: &Store,
    registry: &RegistryClient,
    needed: &[String],
    pull: bool,
    stages: impl Fn() -> Vec<String>,
    locate: impl Fn(usize, BuildError) -> BuildError,
) -> Result<HashMap<String, BaseImage>, BuildError> {
    let resolutions = needed
        .iter()
        .map(|name| resolve_base(store, registry, name, pull));
    let results = futures_util::future::join_all(resolutions).await;
    let mut bases = HashMap::new();
    for (index, (name, base)) in needed.iter().zip(results).enumerate() {
        let base = base.map_err(|error| {
            // A bare word that is neither a stage nor a pullable image is most likely a typo of
            // a stage name.
            if name.contains(['/', ':', '@', '.']) {
                return error;
            }
            let stages = stages();
            let list = if stages.is_empty() {
                "none is named".to_string()
            } else {
                stages.join(", ")
            };
            BuildError::Hint {
                error: Box::new(error),
                hint: format!(
                    "`{name}` is not a stage of this Dockerfile (stages: {list}), so it was pulled as an image"
                ),
            }
        });
        let base = base.map_err(|error| locate(index, error))?;
        bases.insert(name.clone(), base);
    }
    Ok(bases)
}

/// Resolves one FROM reference: the store's copy unless `pull`, else the registry (manifest and
/// config stored).
async fn resolve_base(
    store: &Store,
    registry: &RegistryClient,
    name: &str,
    pull: bool,
) -> Result<BaseImage, BuildError> {
    let reference = Reference::parse(name)
        .map_err(|e| BuildError::registry(format!("invalid image reference `{name}`"), e))?;
    let full = reference.to_string();
    if !pull {
        let (store, full, pinned) = (store.clone(), full.clone(), reference.digest.clone());
        // `-t` stores a name as written (`app:1`), a FROM normalises it (`docker.io/app:1`).
        let written = rbuild_exporter::normalize_tag(name);
        let local = blocking(move || {
            let tagged = |n: &str| store.resolve_tag(n).ok().flatten().map(|d| d.digest);
            let known = match &pinned {
                Some(d) if store.has_blob(d) => Some(d.clone()),
                Some(_) => None,
                None => tagged(&full).or_else(|| tagged(&written)),
            };
            Ok(known.and_then(|digest| {
                let record = store.read_image(&digest).ok()?;
                Some(BaseImage {
                    reference: full,
                    digest,
                    config: record.config,
                })
            }))
        })
        .await?;
        if let Some(base) = local {
            return Ok(base);
        }
    }
    let resolved = registry.resolve(&reference).await.map_err(|e| {
        BuildError::registry(format!("failed to resolve source metadata for {full}"), e)
    })?;
    let store2 = store.clone();
    let manifest_bytes = resolved.manifest_bytes.clone();
    let config_bytes = resolved.config_bytes.clone();
    let digest = resolved.manifest_digest.clone();
    let media_type = resolved
        .manifest
        .media_type
        .clone()
        .unwrap_or_else(|| MediaType::new(MediaType::OCI_MANIFEST));
    let tag = full.clone();
    blocking(move || {
        let (md, size) = store2
            .write_blob(&manifest_bytes)
            .map_err(|e| BuildError::step("storing manifest", e))?;
        if md != digest {
            return Err(BuildError::ManifestMismatch {
                reference: tag,
                digest,
            });
        }
        store2
            .write_blob(&config_bytes)
            .map_err(|e| BuildError::step("storing image config", e))?;
        if !tag.contains('@') {
            let desc = Descriptor {
                media_type,
                digest: md,
                size,
                platform: None,
                annotations: None,
            };
            store2
                .set_tag(&tag, &desc)
                .map_err(|e| BuildError::step("tagging base image", e))?;
        }
        Ok(())
    })
    .await?;
    Ok(BaseImage {
        reference: full,
        digest: resolved.manifest_digest,
        config: resolved.config,
    })
}
