//! The worker's tables in the solver's cache index, declared once (names carry a format
//! version; bump it when a table's values change format).

use rbuild_solver::Table;

/// Build-context stat cache: `(path, stat)` -> content checksum (see [`crate::checksum`]).
pub(crate) const CONTEXT_STAT: Table = Table::new("context-stat-v1");

/// Unpacked image layers: chain ID -> the snapshot holding that chain.
pub const UNPACKED: Table = Table::new("unpacked-v1");

/// The copy pool: a copied file's identity -> a committed snapshot's upper-dir path holding it
/// (see `fsops::CopyPool`).
pub(crate) const COPY_POOL: Table = Table::new("copy-pool-v1");

/// The inodes a File op's snapshot holds through the copy pool: snapshot id -> packed
/// little-endian `(device, inode)` pairs (see `fsops::CopyPool::new`).
pub(crate) const COPY_POOL_INODES: Table = Table::new("copy-pool-inodes-v1");
