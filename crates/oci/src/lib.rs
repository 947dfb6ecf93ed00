//! Shared OCI types: validated digests, descriptors, media types, the image config, manifests and the local content store.
