//! rbuild's build graph as BuildKit LLB: the protocol's messages ([`pb`], prost types generated
//! at build time from the `.proto` files under `proto/`, which the project writes itself from
//! BuildKit's protocol) and the converter from an [`rbuild_llb::Definition`] to a marshalled
//! `pb.Definition` in the op forms BuildKit's Dockerfile frontend emits ([`to_llb`]).

/// BuildKit's LLB messages (protobuf package `pb`).
#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/pb.rs"));
}
