//! Filesystem snapshots (overlayfs and copy backends), layer diffs as tar streams and safe layer application.
