//! Shared OCI types for every rbuild crate: validated digests ([`Digest`], [`DiffId`]),
//! descriptors and media types, the image config (with Docker's extra fields, byte-stable JSON),
//! manifests and indexes, the local content store (an OCI image layout with atomic writes; layer
//! blobs behind boot-id markers, [`durable`]), and the process locks ([`lock`]) that let several
//! rbuild processes share one state root.

pub mod cache;
mod config;
mod content;
mod digest;
mod direct;
pub mod durable;
mod layer;
pub mod lock;
mod manifest;
mod media;
pub mod platform;
mod reach;
mod store;
mod variants;

pub use config::{HealthConfig, History, ImageConfig, RootFs, RunConfig};
pub use content::{ContentEntry, CONTENT_DIR};
pub use digest::{sha256_hex, DiffId, Digest, DigestError, Sha256Reader, Sha256Writer};
pub use layer::{Layer, LAYER_LABEL_GZIP};
pub use manifest::{Descriptor, Index, Manifest, Platform};
pub use media::{Compression, MediaType};
pub use platform::{parse_platform_list, PlatformError};
pub use reach::{BlobInfo, MAX_MANIFEST_BYTES};
pub use store::{
    canonical_json, copy_into_store, BlobWriter, ImageRecord, Store, StoreError, TagEntry,
    STORE_OWNERS_DIR, STORE_TMP_DIR, UNSYNCED_DIR,
};
pub use variants::{Variant, VARIANTS_DIR};

/// The annotation that names a tag in an OCI layout's `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd (and rbuild) use for the full image name.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
