//! Bounded in-process pipes between the stages of a layer pipeline (tar walk, hashing,
//! compression, blob write), each stage on its own thread: a writer end that hands over full
//! buffers and a reader end that reads them back, at most [`DEPTH`] buffers of [`CHUNK`] bytes
//! in flight, so memory stays bounded however large the layer.

use std::io::{self, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Bytes per buffer handed between stages.
pub(crate) const CHUNK: usize = 1 << 20;
/// Buffers in flight per pipe.
pub(crate) const DEPTH: usize = 4;

/// A new pipe: its writer and reader ends.
pub(crate) fn pipe() -> (PipeWriter, PipeReader) {
    let (tx, rx) = sync_channel(DEPTH);
    (
        PipeWriter {
            tx: Some(tx),
            buf: Vec::with_capacity(CHUNK),
        },
        PipeReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        },
    )
}

/// The writing end: collects bytes into [`CHUNK`]-sized buffers and sends each full one; the
/// rest is sent by [`PipeWriter::close`] (or on drop). Fails once the reader is gone.
pub(crate) struct PipeWriter {
    tx: Option<SyncSender<Vec<u8>>>,
    buf: Vec<u8>,
}

impl PipeWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        match &self.tx {
            Some(tx) => tx
                .send(full)
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "pipeline stage stopped")),
            None => Err(io::Error::new(io::ErrorKind::BrokenPipe, "pipe closed")),
        }
    }

    /// Sends what is buffered and closes the pipe (the reader then sees the end).
    pub(crate) fn close(mut self) -> io::Result<()> {
        let r = self.send();
        self.tx = None;
        r
    }
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The reading end: the bytes written, in order; end of file once the writer closed or dropped.
pub(crate) struct PipeReader {
    rx: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl PipeReader {
    /// The next buffer as a whole (None at the end), for stages that consume chunks.
    pub(crate) fn next_chunk(&mut self) -> Option<Vec<u8>> {
        if self.pos < self.buf.len() {
            let rest = self.buf.split_off(self.pos);
            self.buf.clear();
            self.pos = 0;
            return Some(rest);
        }
        self.rx.recv().ok()
    }
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Runs `work` on every item of `items`, at most `limit` at a time on scoped threads; returns
/// the results in `items`' order.
pub(crate) fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    limit: usize,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let limit = limit.clamp(1, items.len().max(1));
    if limit == 1 {
        return items.iter().map(&work).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<R>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..limit {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = work(item);
                if let Ok(mut slot) = results[i].lock() {
                    *slot = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        // Every slot is filled: the scope joined all workers, and a worker's panic re-raises.
        .filter_map(|m| m.into_inner().ok().flatten())
        .collect()
}

/// The cores to use for export work (the machine's, at least 1).
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_cross_the_pipe_in_order_and_end() {
        let (mut w, mut r) = pipe();
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let t = std::thread::spawn(move || {
            w.write_all(&sent).unwrap();
            w.close().unwrap();
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        t.join().unwrap();
        assert_eq!(got, data);
    }

    #[test]
    fn a_gone_reader_fails_the_writer() {
        let (mut w, r) = pipe();
        drop(r);
        assert!(w.write_all(&vec![0; 2 * CHUNK]).is_err());
    }

    #[test]
    fn parallel_map_keeps_order() {
        let items: Vec<u32> = (0..50).collect();
        assert_eq!(
            parallel_map(&items, 4, |x| x * 2),
            (0..50).map(|x| x * 2).collect::<Vec<_>>()
        );
    }
}
