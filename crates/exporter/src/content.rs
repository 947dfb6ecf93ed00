//! The content check of a new layer: one pass of its tar stream (the tar walk on its own thread,
//! blake3 on this one) gives the key under which the store remembers layers by content
//! ([`rbuild_oci::Store::layer_by_content`]). The key hashes the very bytes that would become
//! the layer, so it covers every path, mode, owner, time, xattr and whiteout; a hit reuses the
//! earlier layer's diff ID and blob without sha256 or a blob write.

use crate::{ExportError, LayerOptions};
use rbuild_snapshotter::{DiffOptions, SnapshotId, Snapshotter};
use std::io::{self, Write};

/// A writer that fails once the options' cancel flag is set.
struct Cancelable<'a, W: Write> {
    inner: W,
    opts: &'a LayerOptions,
}

impl<W: Write> Write for Cancelable<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.opts.is_canceled() {
            return Err(io::Error::other("layer export canceled"));
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// blake3 (hex) of the diff tar of `id` as `opts` would write it.
pub(crate) fn content_key(
    snapshotter: &Snapshotter,
    id: &SnapshotId,
    opts: &LayerOptions,
) -> Result<String, ExportError> {
    let (mut tar_w, mut tar_r) = crate::pipe::pipe();
    std::thread::scope(|s| {
        let walker = s.spawn(move || -> Result<(), ExportError> {
            snapshotter.write_diff(
                id,
                &mut Cancelable {
                    inner: &mut tar_w,
                    opts,
                },
                &DiffOptions {
                    source_date_epoch: opts.source_date_epoch,
                },
            )?;
            tar_w.close().map_err(|source| ExportError::Io {
                action: "hash layer of",
                path: id.to_string().into(),
                source,
            })
        });
        let mut hasher = blake3::Hasher::new();
        while let Some(chunk) = tar_r.next_chunk() {
            hasher.update(&chunk);
        }
        drop(tar_r);
        let walked = walker.join().unwrap_or_else(|_| {
            Err(ExportError::Io {
                action: "walk",
                path: id.to_string().into(),
                source: io::Error::other("tar walk panicked"),
            })
        });
        if opts.is_canceled() {
            return Err(ExportError::Canceled);
        }
        walked?;
        Ok(hasher.finalize().to_hex().to_string())
    })
}
