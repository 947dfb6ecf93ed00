//! rbuild's build graph as BuildKit LLB: the protocol's messages ([`pb`], prost types generated
//! at build time from the `.proto` files under `proto/`, which the project writes itself from
//! BuildKit's protocol) and the converter from an [`rbuild_llb::Definition`] to a `pb.Definition`
//! in the op forms BuildKit's Dockerfile frontend emits ([`to_llb`]): ops in dependency order
//! ending with the terminal op, per-op metadata (custom name, the capabilities the op needs) and
//! the source map with the Dockerfile, so BuildKit's errors point at its lines.

pub mod caps;
mod convert;
mod ops;

pub use convert::{to_llb, Llb, LlbOp, LlbOptions};

/// BuildKit's LLB messages (protobuf package `pb`).
#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/pb.rs"));
}

/// The name under which a session serves the directory of rbuild's local source `source`
/// (`local://NAME`): `context` for the build context, `NAME` for a named context
/// `--build-context NAME=DIR` (rbuild's source `context:NAME`, kept as its shared key hint), as
/// buildx names the local directories of named contexts.
pub fn local_name(source: &str) -> &str {
    source.strip_prefix("context:").unwrap_or(source)
}

/// A part of rbuild's graph that has no LLB form, or a graph that cannot be converted.
#[derive(Debug, thiserror::Error)]
pub enum LlbError {
    /// The target is not a vertex of the graph.
    #[error("the target vertex {0} is not in the graph")]
    NoTarget(usize),
    /// A vertex refers to an input it does not have.
    #[error("vertex {vertex} refers to its input {input}, which it does not have")]
    MissingInput {
        /// The vertex.
        vertex: usize,
        /// The missing input.
        input: usize,
    },
    /// An op BuildKit's LLB cannot express.
    #[error("{what} has no BuildKit LLB form (vertex {vertex})")]
    NoLlbForm {
        /// The vertex.
        vertex: usize,
        /// What it is, in the Dockerfile's words.
        what: String,
    },
    /// A JSON attribute could not be written.
    #[error("encoding an attribute: {0}")]
    Json(#[source] serde_json::Error),
}
