//! The worker's tables in the solver's cache index, declared once (names carry a format
//! version; bump it when a table's values change format).

use rbuild_solver::Table;

/// Build-context stat cache: `(path, stat)` -> content checksum (see [`crate::checksum`]).
pub(crate) const CONTEXT_STAT: Table = Table::new("context-stat-v1");

/// Unpacked image layers: chain ID -> the snapshot holding that chain.
pub const UNPACKED: Table = Table::new("unpacked-v1");
