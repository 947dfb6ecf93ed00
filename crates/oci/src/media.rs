//! Media types of manifests, indexes, configs and layers (OCI and Docker v2).

use serde::{Deserialize, Serialize};

/// A media type string; the constants name the ones rbuild reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MediaType(pub String);

impl MediaType {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &'static str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &'static str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &'static str = "application/vnd.oci.image.config.v1+json";
    /// OCI gzip layer.
    pub const OCI_LAYER_GZIP: &'static str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI zstd layer.
    pub const OCI_LAYER_ZSTD: &'static str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// OCI uncompressed layer.
    pub const OCI_LAYER_TAR: &'static str = "application/vnd.oci.image.layer.v1.tar";
    /// Docker v2 schema 2 manifest.
    pub const DOCKER_MANIFEST: &'static str =
        "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_MANIFEST_LIST: &'static str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &'static str = "application/vnd.docker.container.image.v1+json";
    /// Docker gzip layer.
    pub const DOCKER_LAYER_GZIP: &'static str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

    /// Wraps a string.
    pub fn new(s: &str) -> Self {
        MediaType(s.to_string())
    }

    /// The media type as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for an image index or Docker manifest list.
    pub fn is_index(&self) -> bool {
        self.0 == Self::OCI_INDEX || self.0 == Self::DOCKER_MANIFEST_LIST
    }

    /// True for a single-image manifest (OCI or Docker).
    pub fn is_manifest(&self) -> bool {
        self.0 == Self::OCI_MANIFEST || self.0 == Self::DOCKER_MANIFEST
    }

    /// The compression a layer media type implies.
    pub fn layer_compression(&self) -> Option<Compression> {
        let s = self.0.as_str();
        if s.ends_with("+gzip") || s.ends_with(".gzip") {
            Some(Compression::Gzip)
        } else if s.ends_with("+zstd") {
            Some(Compression::Zstd)
        } else if s.ends_with(".tar") || s == "application/vnd.docker.image.rootfs.diff.tar" {
            Some(Compression::None)
        } else {
            None
        }
    }
}

/// Layer compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Uncompressed tar.
    None,
    /// gzip (the default, as Docker).
    #[default]
    Gzip,
    /// zstd.
    Zstd,
}
