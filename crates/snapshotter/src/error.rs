//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the snapshotter. Variants name the path involved.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A filesystem operation failed on `path`.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`create dir`, `read`, `rename`, ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Mounting an overlay filesystem at `target` failed.
    #[error("mount overlay at {target}: {source}")]
    MountOverlay {
        /// The mount point.
        target: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Unmounting `target` failed.
    #[error("unmount {target}: {source}")]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// No committed snapshot has this id.
    #[error("snapshot {0} does not exist")]
    NotFound(String),
    /// A snapshot id that is not a plain file name (empty, `.`, `..`, or containing `/` or NUL).
    #[error("invalid snapshot id {0:?}")]
    InvalidId(String),
    /// The snapshot still has committed children, so it cannot be removed.
    #[error("snapshot {id} still has children ({child} and maybe others)")]
    HasChildren {
        /// The snapshot asked to be removed.
        id: String,
        /// One child that still refers to it.
        child: String,
    },
    /// An active snapshot cannot be committed or aborted while a [`crate::MountGuard`] of it is alive.
    #[error("active snapshot {0} is still mounted; drop its MountGuard first")]
    StillMounted(String),
    /// `RBUILD_SNAPSHOTTER` holds something other than `overlay` or `copy`.
    #[error("RBUILD_SNAPSHOTTER={0:?} is not one of: overlay, copy")]
    InvalidBackend(String),
    /// The overlay backend was forced but overlay mounts do not work under `root`.
    #[error(
        "the overlay snapshotter was requested but overlay cannot mount under {root}: {source}"
    )]
    OverlayUnsupported {
        /// The snapshot root.
        root: PathBuf,
        /// Why the probe mount failed.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing a tar stream failed.
    #[error("layer tar {context}: {source}")]
    Tar {
        /// Which entry or step (`entry path`, `read header`, ...).
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A layer entry would be written outside the snapshot root.
    #[error("layer entry {path:?} escapes the root")]
    PathEscape {
        /// The entry's path as written in the tar.
        path: PathBuf,
    },
    /// A layer entry this applier does not support (e.g. an unknown type or a whiteout of the root).
    #[error("layer entry {path:?}: {reason}")]
    BadEntry {
        /// The entry's path as written in the tar.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A snapshot's metadata file (`parent`, `labels.json`) is corrupt.
    #[error("corrupt snapshot metadata {path}: {reason}")]
    Corrupt {
        /// The metadata file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Shorthand for this crate's results.
pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;

/// Attaches an operation name and a path to an `io::Result`.
pub(crate) trait IoContext<T> {
    /// Wraps the error as [`SnapshotError::Io`].
    fn ctx(self, op: &'static str, path: impl AsRef<std::path::Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: impl AsRef<std::path::Path>) -> Result<T> {
        self.map_err(|source| SnapshotError::Io {
            op,
            path: path.as_ref().to_path_buf(),
            source,
        })
    }
}

impl<T> IoContext<T> for rustix::io::Result<T> {
    fn ctx(self, op: &'static str, path: impl AsRef<std::path::Path>) -> Result<T> {
        self.map_err(|e| SnapshotError::Io {
            op,
            path: path.as_ref().to_path_buf(),
            source: e.into(),
        })
    }
}
