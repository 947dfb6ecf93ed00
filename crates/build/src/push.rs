//! Pushing a stored image to registries (cross-repository mount sources found in the store,
//! concurrent uploads), and buildx's `--metadata-file` document of a built or pushed image.

use crate::error::BuildError;
use crate::progress::PushSummary;
use rbuild_oci::{Descriptor, Store};
use rbuild_registry::{
    mount_sources_from_store, PushOptions, Reference, RegistryClient, RegistryNotice,
};
use std::collections::BTreeMap;

/// Pushes the image `desc` of `store` to every name (normalised references), `jobs` blobs at a
/// time; registry retries and waits go to `notices`.
pub async fn push_image(
    store: &Store,
    desc: &Descriptor,
    names: &[String],
    jobs: usize,
    notices: impl Fn(&RegistryNotice) + Send + Sync + 'static,
) -> Result<PushSummary, BuildError> {
    let mut targets = Vec::new();
    for n in names {
        let r = Reference::parse(n)
            .map_err(|e| BuildError::step(format!("invalid image name `{n}`"), e))?;
        targets.push(r);
    }
    let client = RegistryClient::new()
        .map_err(|e| BuildError::step("registry client", e))?
        .with_notices(notices);
    let mut mount_sources: BTreeMap<_, Vec<String>> = BTreeMap::new();
    for t in &targets {
        let (s, reg) = (store.clone(), t.registry.clone());
        let found = tokio::task::spawn_blocking(move || mount_sources_from_store(&s, &reg))
            .await
            .unwrap_or_default();
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
        .map_err(|e| BuildError::step(format!("failed to push {}", names.join(", ")), e))?;
    Ok(PushSummary {
        digest: desc.digest.clone(),
        report,
        elapsed: started.elapsed(),
    })
}

/// buildx's metadata JSON of an image: `containerimage.digest`, `containerimage.descriptor`,
/// `containerimage.config.digest` (when the store has the manifest), `image.name`
/// (comma-separated, when there are names).
pub fn metadata(store: &Store, descriptor: &Descriptor, names: &[String]) -> serde_json::Value {
    let d = descriptor;
    let mut desc = serde_json::json!({
        "mediaType": d.media_type.0,
        "digest": d.digest.to_string(),
        "size": d.size,
    });
    if let Some(p) = &d.platform {
        desc["platform"] = serde_json::json!({"architecture": p.architecture, "os": p.os});
    }
    let mut doc = serde_json::json!({
        "containerimage.digest": d.digest.to_string(),
        "containerimage.descriptor": desc,
    });
    if let Ok(rec) = store.read_image(&d.digest) {
        doc["containerimage.config.digest"] =
            serde_json::Value::String(rec.manifest.config.digest.to_string());
    }
    if !names.is_empty() {
        doc["image.name"] = serde_json::Value::String(names.join(","));
    }
    doc
}
