//! The content check of a new layer. Its tar stream is hashed with blake3, which covers every
//! path, mode, owner, time, xattr and whiteout that goes into the layer; the store remembers
//! layers by that hash ([`rbuild_oci::Store::layer_by_content`]) and by the blake3 of the
//! stream's first chunk ([`rbuild_oci::Store::has_content_prefix`]). Before a layer is written,
//! [`same_content`] walks its tar: when the first chunk matches no earlier layer (the usual new
//! layer) it stops there; otherwise it hashes the whole stream and a hit reuses the earlier
//! layer's diff ID and blob, with no sha256 and no blob write. A layer that is written is hashed
//! by [`ContentHasher`] on the tar walk's thread, beside sha256 on the writer's.

use crate::pipe::CHUNK;
use crate::{ExportError, LayerOptions};
use rbuild_oci::{Layer, Store};
use rbuild_snapshotter::{DiffOptions, SnapshotId, Snapshotter};
use std::io::{self, Write};

/// A writer that fails once the options' cancel flag is set.
pub(crate) struct Cancelable<'a, W: Write> {
    pub(crate) inner: W,
    pub(crate) opts: &'a LayerOptions,
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

/// A writer that hashes what passes through: blake3 of everything and of the first [`CHUNK`]
/// bytes (the store's content key and prefix).
pub(crate) struct ContentHasher<W: Write> {
    inner: W,
    all: blake3::Hasher,
    prefix: blake3::Hasher,
    seen: usize,
}

impl<W: Write> ContentHasher<W> {
    /// Hashes what is written into `inner`.
    pub(crate) fn new(inner: W) -> Self {
        ContentHasher {
            inner,
            all: blake3::Hasher::new(),
            prefix: blake3::Hasher::new(),
            seen: 0,
        }
    }

    /// The content key and prefix (hex), and the inner writer.
    pub(crate) fn finish(self) -> (String, String, W) {
        (
            self.all.finalize().to_hex().to_string(),
            self.prefix.finalize().to_hex().to_string(),
            self.inner,
        )
    }
}

impl<W: Write> Write for ContentHasher<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.all.update(&buf[..n]);
        if self.seen < CHUNK {
            let take = n.min(CHUNK - self.seen);
            self.prefix.update(&buf[..take]);
        }
        self.seen += n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The earlier layer whose tar stream equals the diff of `id` (as `opts` writes it), if any.
pub(crate) fn same_content(
    snapshotter: &Snapshotter,
    store: &Store,
    id: &SnapshotId,
    opts: &LayerOptions,
) -> Result<Option<Layer>, ExportError> {
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
        let mut all = blake3::Hasher::new();
        let first = tar_r.next_chunk().unwrap_or_default();
        let prefix = blake3::hash(&first).to_hex().to_string();
        // Pipe buffers are CHUNK bytes but the last: `first` is the stream's first chunk.
        let candidate = store.has_content_prefix(&prefix);
        if candidate {
            all.update(&first);
            while let Some(chunk) = tar_r.next_chunk() {
                all.update(&chunk);
            }
        }
        // Stops the walk early when there is no candidate (it then fails on the closed pipe).
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
        if !candidate {
            return Ok(None);
        }
        walked?;
        let key = all.finalize().to_hex().to_string();
        Ok(store.layer_by_content(&key, opts.compression))
    })
}
