//! Per-layer progress of long exports: bytes of a layer's tar written into the store, or of a
//! layer compressed for a push or an archive, reported as typed [`LayerProgress`] values to the
//! caller's [`LayerProgressFn`] every [`REPORT_EVERY`] bytes and once at the end (only for layers
//! that reported at least once, so small layers stay silent).

use std::fmt;
use std::io::{self, Write};
use std::sync::Arc;

/// Bytes between two reports of one layer.
pub const REPORT_EVERY: u64 = 64 << 20;

/// What is being done to a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayerAction {
    /// Its diff tar is being written into the store.
    Export,
    /// It is being compressed for a push, an archive or a cache export.
    Compress,
}

/// How far one layer has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerProgress {
    /// What is being done.
    pub action: LayerAction,
    /// The layer: its snapshot while exported, its diff ID while compressed.
    pub layer: String,
    /// Uncompressed bytes done.
    pub done: u64,
    /// Uncompressed bytes in all, when known.
    pub total: Option<u64>,
    /// True for the last report of this layer.
    pub finished: bool,
}

/// The caller's receiver of [`LayerProgress`] (called from export threads).
#[derive(Clone)]
pub struct LayerProgressFn(pub Arc<dyn Fn(&LayerProgress) + Send + Sync>);

impl fmt::Debug for LayerProgressFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LayerProgressFn")
    }
}

/// Counts the bytes of one layer and reports them through an optional [`LayerProgressFn`].
pub(crate) struct Meter<'a> {
    sink: Option<&'a LayerProgressFn>,
    action: LayerAction,
    layer: String,
    total: Option<u64>,
    done: u64,
    next: u64,
    reported: bool,
}

impl<'a> Meter<'a> {
    /// A meter for `layer`.
    pub(crate) fn new(
        sink: Option<&'a LayerProgressFn>,
        action: LayerAction,
        layer: String,
        total: Option<u64>,
    ) -> Self {
        Meter {
            sink,
            action,
            layer,
            total,
            done: 0,
            next: REPORT_EVERY,
            reported: false,
        }
    }

    fn report(&mut self, finished: bool) {
        if let Some(sink) = self.sink {
            (sink.0)(&LayerProgress {
                action: self.action,
                layer: self.layer.clone(),
                done: self.done,
                total: self.total,
                finished,
            });
            self.reported = true;
        }
    }

    /// Adds `n` bytes, reporting when another [`REPORT_EVERY`] bytes are done.
    pub(crate) fn add(&mut self, n: usize) {
        self.done += n as u64;
        if self.done >= self.next {
            self.next = self.done + REPORT_EVERY;
            self.report(false);
        }
    }

    /// The final report (only when the layer reported before).
    pub(crate) fn finish(mut self) {
        if self.reported {
            self.report(true);
        }
    }
}

/// A writer that counts what passes through into a [`Meter`].
pub(crate) struct Metered<'m, 'a, W: Write> {
    pub(crate) inner: W,
    pub(crate) meter: &'m mut Meter<'a>,
}

impl<W: Write> Write for Metered<'_, '_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.meter.add(n);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
