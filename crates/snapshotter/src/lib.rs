//! Filesystem snapshots for rbuild, in containerd's vocabulary.
//!
//! A [`Snapshotter`] keeps committed, immutable snapshots (each a layer on top of its parent) and
//! hands out [`Active`] (writable) snapshots that are committed or aborted. Two backends:
//!
//! - [`Backend::Overlay`]: a snapshot's directory holds only its changes, in overlayfs' native
//!   form (whiteouts are 0:0 character devices, opaque dirs carry `trusted.overlay.opaque=y`, or
//!   `user.overlay.opaque=y` in a user namespace, where overlay is mounted `userxattr`), so
//!   a chain of snapshots is mounted directly as overlay lowerdirs.
//! - [`Backend::Copy`]: every snapshot is a full tree, used where overlay cannot mount; diffs
//!   compare against the parent tree (containerd's naive differ).
//!
//! [`Snapshotter::write_diff`] turns a snapshot into an uncompressed, deterministic OCI layer tar
//! and [`Snapshotter::apply_layer`] applies one safely (no path escapes, whiteouts, devices).
//! The API is blocking; call it from `spawn_blocking` in async code. Crash repair happens in
//! [`Snapshotter::open`].

mod apply;
mod diff;
mod error;
mod fsutil;
mod mount;
mod snapshotter;

pub use diff::DiffOptions;
pub use error::{Result, SnapshotError};
pub use fsutil::in_user_namespace;
pub use mount::{mount_overlay, MountGuard};
pub use snapshotter::{
    tree_disk_usage, Active, Backend, RootfsSpec, SnapshotId, SnapshotInfo, Snapshotter,
    BACKEND_ENV, MERGE_SOURCE_LABEL,
};
