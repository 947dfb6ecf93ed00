//! Compressed variants of stored layer blobs: the store keeps built layers uncompressed, and the
//! gzip or zstd blob a push or an archive output needs is made once and remembered here, as one
//! small file per `(uncompressed digest, compression)` under [`VARIANTS_DIR`] holding the
//! variant's descriptor. A mapping is written (atomically) only after its blob is committed, and
//! readers ignore a mapping whose blob is gone, so an interrupted compression or a collection
//! never leaves a mapping that names a missing or partial blob.

use crate::{Compression, Descriptor, Digest, Store, StoreError};
use std::fs;

/// The store's directory of variant mappings (`<hex of the uncompressed digest>.<gzip|zstd|tar>`).
pub const VARIANTS_DIR: &str = "rbuild-variants-v1";

/// One remembered variant: the blob `descriptor` holds the layer whose uncompressed tar has
/// digest `source` (its diff ID), compressed with `compression`.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// The uncompressed tar's digest (the layer's diff ID).
    pub source: Digest,
    /// The variant's compression.
    pub compression: Compression,
    /// The variant blob.
    pub descriptor: Descriptor,
}

fn suffix(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
        Compression::None => "tar",
    }
}

fn parse_suffix(s: &str) -> Option<Compression> {
    match s {
        "gzip" => Some(Compression::Gzip),
        "zstd" => Some(Compression::Zstd),
        "tar" => Some(Compression::None),
        _ => None,
    }
}

impl Store {
    fn variant_path(&self, source: &Digest, compression: Compression) -> std::path::PathBuf {
        self.root()
            .join(VARIANTS_DIR)
            .join(format!("{}.{}", source.hex(), suffix(compression)))
    }

    /// The remembered `compression` variant of the layer whose uncompressed digest is `source`,
    /// when its mapping is readable and its blob present.
    pub fn variant(&self, source: &Digest, compression: Compression) -> Option<Descriptor> {
        let bytes = fs::read(self.variant_path(source, compression)).ok()?;
        let desc: Descriptor = serde_json::from_slice(&bytes).ok()?;
        self.has_blob(&desc.digest).then_some(desc)
    }

    /// Remembers `descriptor` (a blob already committed to this store) as the `compression`
    /// variant of `source`; written atomically (temp file, fsync, rename).
    pub fn set_variant(
        &self,
        source: &Digest,
        compression: Compression,
        descriptor: &Descriptor,
    ) -> Result<(), StoreError> {
        if !self.has_blob(&descriptor.digest) {
            return Err(StoreError::MissingBlob(descriptor.digest.clone()));
        }
        let dir = self.root().join(VARIANTS_DIR);
        fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            action: "create",
            path: dir.clone(),
            source,
        })?;
        let bytes = serde_json::to_vec(descriptor).map_err(|source| StoreError::Json {
            what: "variant".into(),
            source,
        })?;
        self.write_file_atomic(&self.variant_path(source, compression), &bytes)
    }

    /// Every readable mapping (whether or not its blob is present).
    pub fn variants(&self) -> Result<Vec<Variant>, StoreError> {
        let dir = self.root().join(VARIANTS_DIR);
        let names = crate::content::file_names(&dir)?;
        let mut out = Vec::new();
        for name in &names {
            let Some((hex, ext)) = name.split_once('.') else {
                continue;
            };
            let (Ok(source), Some(compression)) = (Digest::from_hex(hex), parse_suffix(ext)) else {
                continue;
            };
            let Ok(bytes) = fs::read(dir.join(name)) else {
                continue;
            };
            if let Ok(descriptor) = serde_json::from_slice::<Descriptor>(&bytes) {
                out.push(Variant {
                    source,
                    compression,
                    descriptor,
                });
            }
        }
        out.sort_by(|a, b| a.source.hex().cmp(b.source.hex()));
        Ok(out)
    }

    /// Forgets one mapping (already gone: not an error); its blob is left to the caller.
    pub fn remove_variant(
        &self,
        source: &Digest,
        compression: Compression,
    ) -> Result<(), StoreError> {
        let path = self.variant_path(source, compression);
        crate::store::remove_if_present(path)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Compression, Descriptor, MediaType, Store};

    #[test]
    fn a_mapping_names_only_a_present_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (source, _) = store.write_blob(b"tar").unwrap();
        let (gz, size) = store.write_blob(b"gz").unwrap();
        let desc = Descriptor {
            media_type: MediaType::new(MediaType::OCI_LAYER_GZIP),
            digest: gz.clone(),
            size,
            platform: None,
            annotations: None,
        };
        assert_eq!(store.variant(&source, Compression::Gzip), None);
        store
            .set_variant(&source, Compression::Gzip, &desc)
            .unwrap();
        assert_eq!(
            store.variant(&source, Compression::Gzip),
            Some(desc.clone())
        );
        assert_eq!(store.variant(&source, Compression::Zstd), None);
        assert_eq!(store.variants().unwrap().len(), 1);
        store.remove_blob(&gz).unwrap();
        assert_eq!(store.variant(&source, Compression::Gzip), None);
        assert!(store
            .set_variant(&source, Compression::Gzip, &desc)
            .is_err());
        store.remove_variant(&source, Compression::Gzip).unwrap();
        store.remove_variant(&source, Compression::Gzip).unwrap();
        assert!(store.variants().unwrap().is_empty());
    }
}
