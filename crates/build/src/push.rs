//! Pushing stored images to registries: one image to its names ([`push_image`]: cross-repository
//! mount sources found in the store, concurrent uploads), or names of the store resolved to
//! their images and pushed image by image ([`push_names`], `rbuild push`); and buildx's
//! `--metadata-file` document of a built or pushed image ([`ImageMetadata`]).

use crate::error::{blocking, BuildError};
use crate::progress::{BuildEvent, Progress, PushSummary};
use crate::state::StateDir;
use rbuild_exporter::{image_variant, LayerOptions};
use rbuild_oci::{Descriptor, Digest, MediaType, Store};
use rbuild_registry::{mount_sources_from_store, PushOptions, Reference, RegistryClient};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Pushes the image `desc` of `store` to every name (normalised references) with `client`,
/// `jobs` blobs at a time; registry retries and waits go to `progress` as
/// [`BuildEvent::PushNotice`].
pub async fn push_image(
    store: &Store,
    desc: &Descriptor,
    names: &[String],
    jobs: usize,
    client: &RegistryClient,
    progress: Arc<dyn Progress>,
) -> Result<PushSummary, BuildError> {
    let mut targets = Vec::new();
    for n in names {
        let r = Reference::parse(n)
            .map_err(|e| BuildError::registry(format!("invalid image name `{n}`"), e))?;
        targets.push(r);
    }
    let bytes = progress.clone();
    let client = client
        .with_notices(move |n| progress.event(BuildEvent::PushNotice(n.clone())))
        .with_transfer_progress(move |p| bytes.event(BuildEvent::PushBytes(p.clone())));
    let mut mount_sources: BTreeMap<_, Vec<String>> = BTreeMap::new();
    for t in &targets {
        let (s, reg) = (store.clone(), t.registry.clone());
        let found = blocking(move || Ok(mount_sources_from_store(&s, &reg))).await?;
        for (d, repos) in found {
            let e = mount_sources.entry(d).or_default();
            for r in repos {
                if !e.contains(&r) {
                    e.push(r);
                }
            }
        }
    }
    let opts = PushOptions {
        max_concurrent_uploads: jobs.max(1),
        mount_sources,
        ..PushOptions::default()
    };
    let started = std::time::Instant::now();
    let report = client
        .push(store, desc, &targets, &opts)
        .await
        .map_err(|e| BuildError::registry(format!("failed to push {}", names.join(", ")), e))?;
    let summary = PushSummary {
        digest: desc.digest.clone(),
        report,
        elapsed: started.elapsed(),
    };
    tracing::debug!(
        digest = %summary.digest,
        names = %names.join(","),
        push_time = ?summary.elapsed,
        "image pushed"
    );
    Ok(summary)
}

/// One image [`push_names`] pushed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PushedImage {
    /// The image (manifest) in the store.
    pub image: Descriptor,
    /// The names it was pushed to (normalised references).
    pub names: Vec<String>,
    /// The push.
    pub summary: PushSummary,
    /// buildx's metadata document of the image and these names.
    pub metadata: ImageMetadata,
}

/// Resolves `names` (tags of the store under `state`, or `name@digest` of a stored manifest) to
/// their images, groups names of the same image, and pushes each image to its names in turn
/// (as `rbuild push NAME...`). Each finished push is reported as [`BuildEvent::Pushed`] (and
/// registry retries as [`BuildEvent::PushNotice`]) before the next begins.
pub async fn push_names(
    state: &StateDir,
    names: &[String],
    jobs: usize,
    client: &RegistryClient,
    progress: Arc<dyn Progress>,
) -> Result<Vec<PushedImage>, BuildError> {
    if !state.has_store() {
        return Err(BuildError::NoStore {
            root: state.root().to_path_buf(),
        });
    }
    let (root, names) = (state.store(), names.to_vec());
    let (store, groups) = blocking(move || {
        let store =
            Store::open(&root).map_err(|e| BuildError::step("opening the image store", e))?;
        let groups = image_groups(&store, &names)?;
        Ok((store, groups))
    })
    .await?;
    let mut pushed = Vec::new();
    for (image, names) in groups {
        // The registry gets the layers gzip-compressed (made once, remembered in the store).
        let distributed = {
            let (store, image) = (store.clone(), image.clone());
            let progress = progress.clone();
            let opts = LayerOptions {
                progress: Some(rbuild_exporter::LayerProgressFn(Arc::new(move |p| {
                    progress.event(BuildEvent::Layer(p.clone()))
                }))),
                ..LayerOptions::default()
            };
            blocking(move || {
                image_variant(&store, &image, &opts, jobs)
                    .map_err(|e| BuildError::step("compressing layers", e))
            })
            .await?
        };
        let summary =
            push_image(&store, &distributed, &names, jobs, client, progress.clone()).await?;
        progress.event(BuildEvent::Pushed(summary.clone()));
        let metadata = {
            let (store, pushed, names) = (store.clone(), distributed.clone(), names.clone());
            blocking(move || Ok(metadata(&store, &pushed, &names))).await?
        };
        pushed.push(PushedImage {
            image,
            names,
            summary,
            metadata,
        });
    }
    Ok(pushed)
}

/// `names` resolved in `store` (the name as given, normalised, or the full reference; a digest
/// reference to a stored manifest) and grouped by image, in the order first named.
fn image_groups(
    store: &Store,
    names: &[String],
) -> Result<Vec<(Descriptor, Vec<String>)>, BuildError> {
    let mut groups: Vec<(Descriptor, Vec<String>)> = Vec::new();
    for name in names {
        let full = Reference::parse(name)
            .map_err(|e| BuildError::registry(format!("invalid image name `{name}`"), e))?;
        let candidates = [
            name.clone(),
            rbuild_exporter::normalize_tag(name),
            full.to_string(),
        ];
        let found = candidates
            .iter()
            .find_map(|c| store.resolve_tag(c).ok().flatten());
        let desc = match (found, &full.digest) {
            (Some(d), _) => d,
            (None, Some(digest)) if store.has_blob(digest) => stored_manifest(store, digest)?,
            _ => return Err(BuildError::NoSuchImage { name: name.clone() }),
        };
        match groups.iter_mut().find(|(d, _)| d.digest == desc.digest) {
            Some((_, v)) => v.push(full.to_string()),
            None => groups.push((desc, vec![full.to_string()])),
        }
    }
    Ok(groups)
}

/// The descriptor of the stored manifest `digest` (its media type read from the manifest; an
/// OCI manifest when it names none).
fn stored_manifest(store: &Store, digest: &Digest) -> Result<Descriptor, BuildError> {
    /// The one field of a manifest read here.
    #[derive(Deserialize)]
    struct MediaTypeOnly {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    let bytes = store
        .read_blob(digest)
        .map_err(|e| BuildError::step("reading the image", e))?;
    let media_type = serde_json::from_slice::<MediaTypeOnly>(&bytes)
        .ok()
        .and_then(|m| m.media_type)
        .unwrap_or_else(|| MediaType::OCI_MANIFEST.to_string());
    Ok(Descriptor {
        media_type: MediaType::new(&media_type),
        digest: digest.clone(),
        size: bytes.len() as u64,
        platform: None,
        annotations: None,
    })
}

/// buildx's `--metadata-file` document of an image. Serialises to buildx's JSON:
/// `containerimage.digest`, `containerimage.descriptor`, `containerimage.config.digest` (when
/// the store has the manifest), `image.name` (comma-separated, when there are names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMetadata {
    /// The image config's digest, when the store has the manifest.
    #[serde(
        rename = "containerimage.config.digest",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub config_digest: Option<Digest>,
    /// The image manifest's descriptor.
    #[serde(rename = "containerimage.descriptor")]
    pub descriptor: MetadataDescriptor,
    /// The image manifest's digest.
    #[serde(rename = "containerimage.digest")]
    pub digest: Digest,
    /// The image's names, comma-separated, when it has any.
    #[serde(
        rename = "image.name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub image_name: Option<String>,
}

/// The manifest descriptor in [`ImageMetadata`] (fields in buildx's JSON order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataDescriptor {
    /// The manifest's digest.
    pub digest: Digest,
    /// The manifest's media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// The manifest's platform, when the descriptor names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<MetadataPlatform>,
    /// The manifest's size in bytes.
    pub size: u64,
}

/// The platform in a [`MetadataDescriptor`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataPlatform {
    /// CPU architecture.
    pub architecture: String,
    /// Operating system.
    pub os: String,
}

impl ImageMetadata {
    /// The document as a JSON value.
    pub fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(self)
    }

    /// The document as pretty-printed JSON (as buildx writes `--metadata-file`).
    pub fn to_json_pretty(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// The image's names (the comma-separated `image.name`).
    pub fn names(&self) -> Vec<&str> {
        self.image_name
            .as_deref()
            .map(|n| n.split(',').collect())
            .unwrap_or_default()
    }
}

/// The metadata document of the image `descriptor` of `store` named `names`.
pub fn metadata(store: &Store, descriptor: &Descriptor, names: &[String]) -> ImageMetadata {
    let d = descriptor;
    ImageMetadata {
        config_digest: store
            .read_image(&d.digest)
            .ok()
            .map(|rec| rec.manifest.config.digest),
        descriptor: MetadataDescriptor {
            digest: d.digest.clone(),
            media_type: d.media_type.0.clone(),
            platform: d.platform.as_ref().map(|p| MetadataPlatform {
                architecture: p.architecture.clone(),
                os: p.os.clone(),
            }),
            size: d.size,
        },
        digest: d.digest.clone(),
        image_name: (!names.is_empty()).then(|| names.join(",")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed document serialises to the JSON buildx writes (and the untyped one rbuild wrote).
    #[test]
    fn metadata_serialises_to_buildx_json() {
        let digest = Digest::sha256_of(b"manifest");
        let config = Digest::sha256_of(b"config");
        let doc = ImageMetadata {
            config_digest: Some(config.clone()),
            descriptor: MetadataDescriptor {
                digest: digest.clone(),
                media_type: MediaType::OCI_MANIFEST.to_string(),
                platform: Some(MetadataPlatform {
                    architecture: "amd64".into(),
                    os: "linux".into(),
                }),
                size: 42,
            },
            digest: digest.clone(),
            image_name: Some("a:1,b:2".into()),
        };
        let expected = serde_json::json!({
            "containerimage.digest": digest.to_string(),
            "containerimage.descriptor": {
                "mediaType": MediaType::OCI_MANIFEST,
                "digest": digest.to_string(),
                "size": 42,
                "platform": {"architecture": "amd64", "os": "linux"},
            },
            "containerimage.config.digest": config.to_string(),
            "image.name": "a:1,b:2",
        });
        assert_eq!(doc.to_json().unwrap(), expected);
        assert_eq!(
            doc.to_json_pretty().unwrap(),
            serde_json::to_string_pretty(&expected).unwrap()
        );
        assert_eq!(doc.names(), vec!["a:1", "b:2"]);
        let bare = ImageMetadata {
            config_digest: None,
            image_name: None,
            descriptor: MetadataDescriptor {
                platform: None,
                ..doc.descriptor.clone()
            },
            ..doc
        };
        let json = bare.to_json().unwrap();
        let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["containerimage.descriptor", "containerimage.digest"]);
        assert!(json["containerimage.descriptor"].get("platform").is_none());
        assert!(bare.names().is_empty());
    }

    /// A multi-platform image's document names the index, as buildx's does: its digest and
    /// descriptor, and no config digest (an index has none).
    #[test]
    fn metadata_of_an_index_names_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut manifests = Vec::new();
        for arch in ["amd64", "arm64"] {
            let config = rbuild_oci::ImageConfig {
                architecture: arch.into(),
                os: "linux".into(),
                ..Default::default()
            };
            manifests.push(store.write_image(&config, vec![]).unwrap().0);
        }
        let index = rbuild_exporter::assemble_index(&store, &manifests).unwrap();
        let doc = metadata(&store, &index, &["r/app:1".to_string()]);
        assert_eq!(doc.digest, index.digest);
        assert_eq!(doc.descriptor.media_type, MediaType::OCI_INDEX);
        assert_eq!(doc.descriptor.size, index.size);
        assert!(doc.descriptor.platform.is_none());
        assert!(doc.config_digest.is_none());
        assert_eq!(doc.names(), vec!["r/app:1"]);
    }
}
