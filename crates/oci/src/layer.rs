//! A layer of an image (blob descriptor + diff ID) and the snapshot label under which the
//! snapshotter remembers it, shared by the worker (pulled layers) and the exporter (built layers).

use crate::{Descriptor, DiffId};
use serde::{Deserialize, Serialize};

/// The snapshot label holding the JSON [`Layer`] of a snapshot's gzip blob.
pub const LAYER_LABEL_GZIP: &str = "rbuild.layer.gzip";

/// A layer: the compressed blob and the digest of its uncompressed tar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// The compressed blob.
    pub descriptor: Descriptor,
    /// The digest of the uncompressed tar.
    pub diff_id: DiffId,
}
