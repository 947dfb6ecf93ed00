//! Integration tests of the snapshotter on real overlayfs (and the copy backend). They need root.

mod util;
mod conformance;
mod overlay_only;
