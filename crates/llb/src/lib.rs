//! The build graph (LLB): ops, vertices, canonical encoding, vertex digests and the source map.
