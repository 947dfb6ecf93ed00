//! What the image store holds and what its tags reach, for garbage collection: blobs on disk,
//! the closure of `index.json` (index -> manifests -> config and layers) and blob removal.

use crate::{Digest, Index, Manifest, Store, StoreError};
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;

/// The largest index or manifest the reachability walk reads (the distribution spec's limit for
/// manifests is 4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// A blob on disk: its digest and allocated size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// The blob's digest (its file name).
    pub digest: Digest,
    /// Bytes it takes on disk (allocated blocks).
    pub size: u64,
    /// Last modification time (unix seconds): when it was written.
    pub modified: u64,
}

impl Store {
    /// Every blob in `blobs/sha256/` (files whose names are not sha256 hex are skipped).
    pub fn list_blobs(&self) -> Result<Vec<BlobInfo>, StoreError> {
        let dir = self.root().join("blobs/sha256");
        let io_err = |action: &'static str| {
            let path = dir.clone();
            move |source| StoreError::Io {
                action,
                path,
                source,
            }
        };
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("read dir"))? {
            let entry = entry.map_err(io_err("read dir"))?;
            let name = entry.file_name();
            let Ok(digest) = Digest::from_hex(&name.to_string_lossy()) else {
                continue;
            };
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("stat")(e)),
            };
            out.push(BlobInfo {
                digest,
                size: meta.blocks() * 512,
                modified: meta.mtime().max(0) as u64,
            });
        }
        out.sort_by(|a, b| a.digest.hex().cmp(b.digest.hex()));
        Ok(out)
    }

    /// The blobs `index.json` reaches: each entry, and for an index its manifests, for a
    /// manifest its config and layers. Only indexes and manifests are read (never a blob larger
    /// than [`MAX_MANIFEST_BYTES`]); blobs that are missing or unreadable end the walk there (a
    /// broken image keeps what it still reaches).
    pub fn reachable_from_tags(&self) -> Result<BTreeSet<Digest>, StoreError> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<Digest> = self
            .index()?
            .manifests
            .into_iter()
            .map(|d| d.digest)
            .collect();
        while let Some(d) = todo.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            let small =
                fs::metadata(self.blob_path(&d)).is_ok_and(|m| m.len() <= MAX_MANIFEST_BYTES);
            let Some(bytes) = small.then(|| self.read_blob(&d).ok()).flatten() else {
                continue;
            };
            if let Ok(index) = serde_json::from_slice::<Index>(&bytes) {
                if !index.manifests.is_empty() {
                    todo.extend(index.manifests.into_iter().map(|m| m.digest));
                    continue;
                }
            }
            if let Ok(manifest) = serde_json::from_slice::<Manifest>(&bytes) {
                // Configs and layers are leaves: marked, never read (a layer may be gigabytes).
                seen.insert(manifest.config.digest);
                seen.extend(manifest.layers.into_iter().map(|l| l.digest));
            }
        }
        Ok(seen)
    }

    /// Deletes one blob and then its boot-id marker, if any (already gone: not an error). The
    /// blob goes in one unlink, so a crash leaves it either whole or absent (a marker without
    /// its blob is harmless).
    pub fn remove_blob(&self, digest: &Digest) -> Result<(), StoreError> {
        for path in [self.blob_path(digest), self.marker_path(digest)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StoreError::Io {
                        action: "remove",
                        path,
                        source,
                    })
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Descriptor, ImageConfig, MediaType, Store};

    #[test]
    fn layers_are_leaves_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let cfg = ImageConfig {
            os: "linux".into(),
            ..Default::default()
        };
        // A layer whose bytes happen to be a manifest: the walk must not follow it.
        let (other, _) = store
            .write_image(
                &ImageConfig {
                    os: "other".into(),
                    ..cfg.clone()
                },
                vec![],
            )
            .unwrap();
        let bytes = store.read_blob(&other.digest).unwrap();
        let other_manifest: crate::Manifest = serde_json::from_slice(&bytes).unwrap();
        let as_layer = Descriptor {
            media_type: MediaType::new(MediaType::OCI_LAYER_TAR),
            digest: other.digest.clone(),
            size: bytes.len() as u64,
            platform: None,
            annotations: None,
        };
        let (image, _) = store.write_image(&cfg, vec![as_layer]).unwrap();
        store.set_tag("a:1", &image).unwrap();
        let reach = store.reachable_from_tags().unwrap();
        assert!(reach.contains(&other.digest));
        assert!(!reach.contains(&other_manifest.config.digest), "{reach:?}");
    }

    #[test]
    fn tags_reach_manifest_config_and_layers_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (layer, size) = store.write_blob(b"layer bytes").unwrap();
        let (stray, _) = store.write_blob(b"dangling").unwrap();
        let cfg = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            ..Default::default()
        };
        let desc = Descriptor {
            media_type: MediaType::new(MediaType::OCI_LAYER_GZIP),
            digest: layer.clone(),
            size,
            platform: None,
            annotations: None,
        };
        let (image, manifest) = store.write_image(&cfg, vec![desc]).unwrap();
        // An untagged image: its manifest and config are dangling.
        let (untagged, _) = store
            .write_image(
                &ImageConfig {
                    os: "other".into(),
                    ..cfg.clone()
                },
                vec![],
            )
            .unwrap();
        store.set_tag("a:1", &image).unwrap();
        let reach = store.reachable_from_tags().unwrap();
        let expect = [image.digest.clone(), manifest.config.digest.clone(), layer];
        assert_eq!(reach.len(), 3);
        assert!(expect.iter().all(|d| reach.contains(d)));
        let listed = store.list_blobs().unwrap();
        assert_eq!(listed.len(), 6);
        assert!(!reach.contains(&stray) && !reach.contains(&untagged.digest));
        store.remove_blob(&stray).unwrap();
        store.remove_blob(&stray).unwrap();
        assert!(!store.has_blob(&stray));
        assert_eq!(store.list_blobs().unwrap().len(), 5);
    }
}
