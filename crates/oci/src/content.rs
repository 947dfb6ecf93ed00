//! Layers known by the content of their tar stream: the blake3 of a layer's uncompressed tar
//! (which covers every path, mode, owner, time, xattr and whiteout that goes into it) -> the
//! layer made from it (blob descriptor and diff ID), one small file per `(blake3, compression)`
//! under [`CONTENT_DIR`]. A build that produces a byte-identical tar again (the same COPY onto a
//! changed parent) reuses that layer after one blake3 pass instead of sha256 and a blob write.
//! An entry is written (atomically) only after its blob is committed; readers ignore an entry
//! whose blob is gone, and garbage collection drops entries whose blob it removes.

use crate::{Compression, Layer, Store, StoreError};
use std::fs;
use std::io;

/// The store's directory of content entries (`<blake3 hex>.<gzip|zstd|tar>`).
pub const CONTENT_DIR: &str = "rbuild-content-v1";

fn suffix(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
        Compression::None => "tar",
    }
}

fn valid_key(key: &str) -> bool {
    key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One content entry: the blake3 of a tar stream and the layer made of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentEntry {
    /// blake3 of the uncompressed tar, 64 hex digits.
    pub key: String,
    /// The compression of the layer's blob.
    pub compression: Compression,
    /// The layer.
    pub layer: Layer,
}

impl Store {
    fn content_path(&self, key: &str, c: Compression) -> std::path::PathBuf {
        self.root()
            .join(CONTENT_DIR)
            .join(format!("{key}.{}", suffix(c)))
    }

    /// The layer whose tar stream has blake3 `key` (blob in `c`), when known and its blob present.
    pub fn layer_by_content(&self, key: &str, c: Compression) -> Option<Layer> {
        if !valid_key(key) {
            return None;
        }
        let bytes = fs::read(self.content_path(key, c)).ok()?;
        let layer: Layer = serde_json::from_slice(&bytes).ok()?;
        self.has_blob(&layer.descriptor.digest).then_some(layer)
    }

    /// Remembers `layer` (its blob already committed) as made of the tar stream with blake3 `key`.
    pub fn remember_layer_content(
        &self,
        key: &str,
        c: Compression,
        layer: &Layer,
    ) -> Result<(), StoreError> {
        if !valid_key(key) {
            return Err(StoreError::Io {
                action: "name content entry",
                path: key.into(),
                source: io::Error::other("not a blake3 hex digest"),
            });
        }
        if !self.has_blob(&layer.descriptor.digest) {
            return Err(StoreError::MissingBlob(layer.descriptor.digest.clone()));
        }
        let dir = self.root().join(CONTENT_DIR);
        fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            action: "create",
            path: dir.clone(),
            source,
        })?;
        let bytes = serde_json::to_vec(layer).map_err(|source| StoreError::Json {
            what: "content entry".into(),
            source,
        })?;
        self.write_file_atomic(&self.content_path(key, c), &bytes)
    }

    /// Every readable content entry (whether or not its blob is present).
    pub fn layer_contents(&self) -> Result<Vec<ContentEntry>, StoreError> {
        let dir = self.root().join(CONTENT_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StoreError::Io {
                    action: "read dir",
                    path: dir,
                    source,
                })
            }
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((key, ext)) = name.split_once('.') else {
                continue;
            };
            let compression = match ext {
                "gzip" => Compression::Gzip,
                "zstd" => Compression::Zstd,
                "tar" => Compression::None,
                _ => continue,
            };
            if !valid_key(key) {
                continue;
            }
            let Ok(bytes) = fs::read(entry.path()) else {
                continue;
            };
            if let Ok(layer) = serde_json::from_slice::<Layer>(&bytes) {
                out.push(ContentEntry {
                    key: key.to_string(),
                    compression,
                    layer,
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Forgets one content entry (already gone: not an error).
    pub fn forget_layer_content(&self, key: &str, c: Compression) -> Result<(), StoreError> {
        if !valid_key(key) {
            return Ok(());
        }
        let path = self.content_path(key, c);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io {
                action: "remove",
                path,
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Compression, Descriptor, DiffId, Layer, MediaType, Store};

    #[test]
    fn an_entry_names_only_a_present_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (blob, size) = store.write_blob(b"tar").unwrap();
        let layer = Layer {
            descriptor: Descriptor {
                media_type: MediaType::new(MediaType::OCI_LAYER_TAR),
                digest: blob.clone(),
                size,
                platform: None,
                annotations: None,
            },
            diff_id: DiffId(blob.clone()),
        };
        let key = "ab".repeat(32);
        assert_eq!(store.layer_by_content(&key, Compression::None), None);
        store
            .remember_layer_content(&key, Compression::None, &layer)
            .unwrap();
        assert_eq!(
            store.layer_by_content(&key, Compression::None),
            Some(layer.clone())
        );
        assert_eq!(store.layer_by_content(&key, Compression::Gzip), None);
        assert!(store
            .remember_layer_content("../x", Compression::None, &layer)
            .is_err());
        assert_eq!(store.layer_contents().unwrap().len(), 1);
        store.remove_blob(&blob).unwrap();
        assert_eq!(store.layer_by_content(&key, Compression::None), None);
        store.forget_layer_content(&key, Compression::None).unwrap();
        assert!(store.layer_contents().unwrap().is_empty());
    }
}
