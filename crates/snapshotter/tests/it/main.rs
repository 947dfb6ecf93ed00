//! Integration tests of the snapshotter on real overlayfs (and the copy backend). They need root.

mod conformance;
mod durable;
mod overlay_only;
mod util;
