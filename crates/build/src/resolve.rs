//! Base images of a build (`FROM name`), each for the platform a stage needs it for: the
//! store's copy unless a pull is asked for (a stored index gives its entry for the platform, a
//! stored manifest is used only when its config's platform suits), else the registry's
//! manifest for the platform and its config (stored; tagged when named by tag and resolved for
//! the build platform). All bases of a Dockerfile resolve concurrently.

use crate::error::{blocking, BuildError};
use rbuild_frontend::{BaseImage, Bases};
use rbuild_oci::{Descriptor, Digest, MediaType, Platform, Store};
use rbuild_registry::{Reference, RegistryClient, RegistryError};

/// Resolves every name of `needed` at once; the first failure (in `needed`'s order) wins, with a
/// hint when a bare word is more likely a misspelled stage than an image, placed in the
/// Dockerfile by `locate` (its index in `needed`, the error).
pub(crate) async fn resolve_all(
    store: &Store,
    registry: &RegistryClient,
    needed: &[(String, Platform)],
    pull: bool,
    stages: impl Fn() -> Vec<String>,
    locate: impl Fn(usize, BuildError) -> BuildError,
) -> Result<Bases, BuildError> {
    let host = Platform::host();
    let resolutions = needed.iter().map(|(name, platform)| {
        let tag = platform.same_as(&host);
        resolve_base(store, registry, name, platform, pull, tag)
    });
    let results = futures_util::future::join_all(resolutions).await;
    let mut bases = Bases::new();
    for (index, ((name, platform), base)) in needed.iter().zip(results).enumerate() {
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
        bases.insert((name.clone(), platform.clone()), base);
    }
    Ok(bases)
}

/// The stored image `digest` (a manifest, or an index's entry for `platform`) when it suits
/// `platform`, with the manifest's digest (blocking).
fn stored_for(store: &Store, digest: &Digest, platform: &Platform) -> Option<(Digest, BaseImage)> {
    let record = crate::pull::image_for_platform(store, digest, platform).ok()??;
    Some((
        record.manifest_digest.clone(),
        BaseImage {
            reference: String::new(),
            digest: record.manifest_digest,
            config: record.config,
        },
    ))
}

/// BuildKit's message for an index without the platform, with the platforms it has as a hint.
fn no_match(full: &str, error: RegistryError) -> BuildError {
    BuildError::registry_with_platforms(
        format!("failed to resolve source metadata for {full}"),
        error,
    )
}

/// Resolves one FROM reference: the store's copy unless `pull`, else the registry (manifest and
/// config stored).
async fn resolve_base(
    store: &Store,
    registry: &RegistryClient,
    name: &str,
    platform: &Platform,
    pull: bool,
    tag_it: bool,
) -> Result<BaseImage, BuildError> {
    let reference = Reference::parse(name)
        .map_err(|e| BuildError::registry(format!("invalid image reference `{name}`"), e))?;
    let full = reference.to_string();
    if !pull {
        let (store, full, pinned) = (store.clone(), full.clone(), reference.digest.clone());
        // `-t` stores a name as written (`app:1`), a FROM normalises it (`docker.io/app:1`).
        let written = rbuild_exporter::normalize_tag(name);
        let want = platform.clone();
        let local = blocking(move || {
            let tagged = |n: &str| store.resolve_tag(n).ok().flatten().map(|d| d.digest);
            let known = match &pinned {
                Some(d) if store.has_blob(d) => Some(d.clone()),
                Some(_) => None,
                None => tagged(&full).or_else(|| tagged(&written)),
            };
            Ok(known.and_then(|digest| {
                let (_, base) = stored_for(&store, &digest, &want)?;
                Some(BaseImage {
                    reference: full,
                    ..base
                })
            }))
        })
        .await?;
        if let Some(base) = local {
            return Ok(base);
        }
    }
    let resolved = registry
        .resolve_platform(&reference, platform)
        .await
        .map_err(|e| no_match(&full, e))?;
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
        if tag_it && !tag.contains('@') {
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

#[cfg(test)]
mod tests {
    use super::*;
    use rbuild_oci::{canonical_json, ImageConfig, Index, Manifest};

    /// Stores an image of `arch` without layers; returns its manifest's descriptor.
    fn store_image(store: &Store, arch: &str) -> Descriptor {
        let config = ImageConfig {
            architecture: arch.into(),
            os: "linux".into(),
            ..ImageConfig::default()
        };
        let bytes = canonical_json(&config).unwrap();
        let (digest, size) = store.write_blob(&bytes).unwrap();
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MediaType::new(MediaType::OCI_MANIFEST)),
            config: Descriptor {
                media_type: MediaType::new(MediaType::OCI_CONFIG),
                digest,
                size,
                platform: None,
                annotations: None,
            },
            layers: Vec::new(),
            annotations: None,
        };
        let (digest, size) = store
            .write_blob(&canonical_json(&manifest).unwrap())
            .unwrap();
        Descriptor {
            media_type: MediaType::new(MediaType::OCI_MANIFEST),
            digest,
            size,
            platform: Some(Platform::new("linux", arch, None)),
            annotations: None,
        }
    }

    #[test]
    fn stored_bases_are_matched_by_platform() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let amd = store_image(&store, "amd64");
        let arm = store_image(&store, "arm64");
        let index = Index {
            manifests: vec![amd.clone(), arm.clone()],
            ..Index::empty()
        };
        let (index, _) = store.write_blob(&canonical_json(&index).unwrap()).unwrap();
        let p = |s: &str| -> Platform { s.parse().unwrap() };
        let pick = |digest: &Digest, platform: &str| {
            stored_for(&store, digest, &p(platform)).map(|(d, base)| {
                assert_eq!(base.digest, d);
                (d, base.config.architecture)
            })
        };
        // A stored index gives its entry for the platform (arm64/v8 is arm64).
        assert_eq!(
            pick(&index, "linux/arm64/v8"),
            Some((arm.digest.clone(), "arm64".to_string()))
        );
        assert_eq!(
            pick(&index, "linux/amd64"),
            Some((amd.digest.clone(), "amd64".to_string()))
        );
        assert_eq!(pick(&index, "linux/s390x"), None);
        // A stored manifest only for a platform its config suits.
        assert!(pick(&amd.digest, "linux/amd64").is_some());
        assert_eq!(pick(&amd.digest, "linux/arm64"), None);
        assert!(pick(&arm.digest, "linux/arm64").is_some());
    }
}
