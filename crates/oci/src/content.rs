//! Layers known by the content of their tar stream: the blake3 of a layer's uncompressed tar
//! (which covers every path, mode, owner, time, xattr and whiteout that goes into it) -> the
//! layer made from it (blob descriptor and diff ID), one small file per `(blake3, compression)`
//! under [`CONTENT_DIR`]. A build that produces a byte-identical tar again (the same COPY onto a
//! changed parent) reuses that layer after one blake3 pass instead of sha256 and a blob write.
//! Beside each entry, a marker `<prefix>.prefix` names the blake3 of the stream's first chunk,
//! so a new layer whose first chunk matches no earlier layer skips the full check at once.
//! An entry is written (atomically) only after its blob is committed; readers ignore an entry
//! whose blob is gone, and garbage collection drops entries whose blob it removes (and markers
//! no entry names).

use crate::{Compression, Layer, Store, StoreError};
use std::fs;
use std::io;

/// The names of the entries of `dir` (none when it does not exist): the listing of the store's
/// own bookkeeping directories.
pub(crate) fn file_names(dir: &std::path::Path) -> Result<Vec<String>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StoreError::Io {
                action: "read dir",
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    Ok(entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect())
}

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
    /// blake3 of the stream's first chunk, 64 hex digits.
    pub prefix: String,
    /// The compression of the layer's blob.
    pub compression: Compression,
    /// The layer.
    pub layer: Layer,
}

/// The stored form of an entry.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    layer: Layer,
    prefix: String,
}

impl Store {
    fn prefix_path(&self, prefix: &str) -> std::path::PathBuf {
        self.root()
            .join(CONTENT_DIR)
            .join(format!("{prefix}.prefix"))
    }

    /// True when some remembered layer's tar stream began with the chunk of blake3 `prefix`.
    pub fn has_content_prefix(&self, prefix: &str) -> bool {
        valid_key(prefix) && self.prefix_path(prefix).exists()
    }

    /// Forgets the marker of `prefix` (already gone: not an error).
    pub fn forget_content_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        if !valid_key(prefix) {
            return Ok(());
        }
        let path = self.prefix_path(prefix);
        crate::store::remove_if_present(path)
    }

    /// Every prefix marker.
    pub fn content_prefixes(&self) -> Result<Vec<String>, StoreError> {
        let names = file_names(&self.root().join(CONTENT_DIR))?;
        Ok(names
            .iter()
            .filter_map(|name| {
                let prefix = name.strip_suffix(".prefix")?;
                valid_key(prefix).then(|| prefix.to_string())
            })
            .collect())
    }

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
        let entry: Stored = serde_json::from_slice(&bytes).ok()?;
        self.has_blob(&entry.layer.descriptor.digest)
            .then_some(entry.layer)
    }

    /// Remembers `layer` (its blob already committed) as made of the tar stream with blake3 `key`
    /// whose first chunk has blake3 `prefix`.
    pub fn remember_layer_content(
        &self,
        key: &str,
        prefix: &str,
        c: Compression,
        layer: &Layer,
    ) -> Result<(), StoreError> {
        if !valid_key(key) || !valid_key(prefix) {
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
        let stored = Stored {
            layer: layer.clone(),
            prefix: prefix.to_string(),
        };
        let bytes = serde_json::to_vec(&stored).map_err(|source| StoreError::Json {
            what: "content entry".into(),
            source,
        })?;
        self.write_file_atomic(&self.content_path(key, c), &bytes)?;
        self.write_file_atomic(&self.prefix_path(prefix), b"")
    }

    /// Every readable content entry (whether or not its blob is present).
    pub fn layer_contents(&self) -> Result<Vec<ContentEntry>, StoreError> {
        let dir = self.root().join(CONTENT_DIR);
        let names = file_names(&dir)?;
        let mut out = Vec::new();
        for name in &names {
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
            let Ok(bytes) = fs::read(dir.join(name)) else {
                continue;
            };
            if let Ok(entry) = serde_json::from_slice::<Stored>(&bytes) {
                out.push(ContentEntry {
                    key: key.to_string(),
                    prefix: entry.prefix,
                    compression,
                    layer: entry.layer,
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
        crate::store::remove_if_present(path)
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
        let (key, prefix) = ("ab".repeat(32), "cd".repeat(32));
        assert_eq!(store.layer_by_content(&key, Compression::None), None);
        assert!(!store.has_content_prefix(&prefix));
        store
            .remember_layer_content(&key, &prefix, Compression::None, &layer)
            .unwrap();
        assert!(store.has_content_prefix(&prefix));
        assert_eq!(store.content_prefixes().unwrap(), vec![prefix.clone()]);
        assert_eq!(
            store.layer_by_content(&key, Compression::None),
            Some(layer.clone())
        );
        assert_eq!(store.layer_by_content(&key, Compression::Gzip), None);
        assert!(store
            .remember_layer_content("../x", &prefix, Compression::None, &layer)
            .is_err());
        assert_eq!(store.layer_contents().unwrap().len(), 1);
        store.remove_blob(&blob).unwrap();
        assert_eq!(store.layer_by_content(&key, Compression::None), None);
        store.forget_layer_content(&key, Compression::None).unwrap();
        assert!(store.layer_contents().unwrap().is_empty());
        store.forget_content_prefix(&prefix).unwrap();
        assert!(!store.has_content_prefix(&prefix));
    }
}
