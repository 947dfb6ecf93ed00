//! Image assembly and outputs. Owns turning committed snapshots into layer blobs (uncompressed
//! in the store, each computed once and remembered on the snapshot), their compressed variants
//! for pushes and archives (made once, remembered in the store), writing config + manifest into the local
//! store and tagging them, and the outputs `type=oci` (tar or dir), `type=docker` (a
//! `docker load` archive) and `type=local` (the final filesystem); a multi-platform image is an
//! index over the platforms' manifests ([`assemble_index`]), written whole into OCI layouts and
//! as a directory per platform by the filesystem outputs.

mod cache_export;
mod content;
mod layers;
mod outputs;
mod pipe;
mod progress;
mod variants;

pub use cache_export::{write_cache_layout, write_cache_manifest};
pub use layers::{
    assemble_image, assemble_image_annotated, assemble_index, ensure_layer, ensure_layers,
    LayerOptions,
};
pub use outputs::{
    normalize_tag, write_docker_archive, write_local, write_local_platforms, write_oci, write_tar,
    write_tar_platforms, PlatformRootfs,
};
pub use progress::{LayerAction, LayerProgress, LayerProgressFn, REPORT_EVERY};
pub use rbuild_oci::Layer;
pub use variants::{image_variant, layer_variant, DEFAULT_GZIP_LEVEL};

use std::path::PathBuf;

/// Errors of the exporter.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The content store failed.
    #[error(transparent)]
    Store(#[from] rbuild_oci::StoreError),
    /// The snapshotter failed.
    #[error(transparent)]
    Snapshot(#[from] rbuild_snapshotter::SnapshotError),
    /// A filesystem operation failed.
    #[error("{action} `{path}`")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// JSON failed.
    #[error("invalid JSON")]
    Json(#[from] serde_json::Error),
    /// An image name given for an OCI or docker archive output does not parse.
    #[error("failed to parse {name}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it does not parse.
        #[source]
        source: Box<rbuild_registry::RegistryError>,
    },
    /// A label held a value this version cannot read.
    #[error("bad layer label on snapshot `{0}`")]
    BadLabel(String),
    /// The work was canceled through [`LayerOptions::cancel`].
    #[error("canceled")]
    Canceled,
    /// A docker archive output of a multi-platform image (BuildKit's message).
    #[error("docker exporter does not currently support exporting manifest lists")]
    ManifestList,
}
