//! Layer blob files written around the page cache (`O_DIRECT`). A built layer's tar is written
//! once and read again only by a push or an export, so pushing gigabytes of it through the page
//! cache just evicts the snapshots the next steps read and makes the kernel throttle the build's
//! other writers. [`DirectFile`] writes whole aligned blocks directly; the unaligned tail (and
//! every write on a filesystem that refuses `O_DIRECT`) goes through the page cache as usual.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Alignment of direct writes: offsets, lengths and buffer addresses (the page size covers every
/// logical block size Linux filesystems use).
const ALIGN: usize = 4096;
/// Bytes gathered before one direct write.
const BUF: usize = 4 << 20;
/// Blocks in flight: one being filled, the others queued or being written.
const BLOCKS: usize = 3;

/// An aligned block: `BUF + ALIGN` bytes whose data starts at `start` (an aligned address).
struct Block {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Block {
    fn new() -> Block {
        let buf = vec![0u8; BUF + ALIGN];
        let start = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        Block { buf, start, len: 0 }
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

/// A new file written with `O_DIRECT` in aligned blocks by a writer thread of its own, so
/// hashing the next block overlaps the device's write of the last (see the module doc). A blob
/// smaller than one block never starts the thread: it is written through the page cache at
/// [`DirectFile::finish`].
pub(crate) struct DirectFile {
    /// The block being filled.
    block: Block,
    /// The file until the writer takes it, and whether it is open with `O_DIRECT`.
    file: Option<(File, bool)>,
    /// The writer, once the first block is full.
    writer: Option<Writer>,
}

/// The writer thread of a [`DirectFile`] and its channels.
struct Writer {
    /// Full blocks to the writer; `None` once finished.
    to_writer: Option<SyncSender<Block>>,
    /// Written blocks back for reuse.
    from_writer: Receiver<Block>,
    /// Blocks made so far (at most [`BLOCKS`]).
    made: usize,
    /// Returns the file, still open with `O_DIRECT` or not.
    thread: Option<JoinHandle<io::Result<(File, bool)>>>,
}

impl Writer {
    /// Starts the thread writing `file`.
    fn start((file, direct): (File, bool)) -> io::Result<Writer> {
        let (to_writer, blocks) = mpsc::sync_channel::<Block>(BLOCKS);
        let (back, from_writer) = mpsc::sync_channel::<Block>(BLOCKS);
        let thread = std::thread::Builder::new()
            .name("blob-writer".into())
            .spawn(move || write_blocks(file, direct, blocks, back))?;
        Ok(Writer {
            to_writer: Some(to_writer),
            from_writer,
            made: 1,
            thread: Some(thread),
        })
    }

    /// An empty block: one the thread gave back, a new one, or (all in flight) the next back.
    fn free_block(&mut self) -> io::Result<Block> {
        match self.from_writer.try_recv() {
            Ok(b) => Ok(b),
            Err(_) if self.made < BLOCKS => {
                self.made += 1;
                Ok(Block::new())
            }
            Err(_) => self.from_writer.recv().map_err(|_| self.failed()),
        }
    }

    /// The thread's error once it stopped (its channel closed).
    fn failed(&mut self) -> io::Error {
        self.to_writer = None;
        match self.thread.take().map(|w| w.join()) {
            Some(Ok(Err(e))) => e,
            _ => io::Error::other("blob writer stopped"),
        }
    }

    /// Closes the channel and waits for the thread: the file and whether it is still direct.
    fn join(mut self) -> io::Result<(File, bool)> {
        self.to_writer = None;
        match self.thread.take().map(|w| w.join()) {
            Some(Ok(r)) => r,
            _ => Err(io::Error::other("blob writer panicked")),
        }
    }
}

impl DirectFile {
    /// Creates `path` (which must not exist), with `O_DIRECT` where the filesystem takes it.
    pub(crate) fn create(path: &Path) -> io::Result<DirectFile> {
        let open = |flags| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(flags)
                .open(path)
        };
        let file = match open(libc::O_DIRECT) {
            Ok(f) => (f, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (open(0)?, false),
            Err(e) => return Err(e),
        };
        Ok(DirectFile {
            block: Block::new(),
            file: Some(file),
            writer: None,
        })
    }

    /// Hands the block's whole aligned part to the writer (started on the first call) and
    /// keeps the tail (< [`ALIGN`] bytes) in front of the next block.
    fn send_blocks(&mut self) -> io::Result<()> {
        let whole = self.block.len / ALIGN * ALIGN;
        if whole == 0 {
            return Ok(());
        }
        let writer = match (&mut self.writer, self.file.take()) {
            (Some(w), _) => w,
            (None, Some(file)) => self.writer.insert(Writer::start(file)?),
            (None, None) => return Err(io::Error::other("blob writer stopped")),
        };
        let mut next = writer.free_block()?;
        let tail = self.block.len - whole;
        let from = self.block.start + whole;
        next.buf[next.start..next.start + tail].copy_from_slice(&self.block.buf[from..from + tail]);
        next.len = tail;
        let mut full = std::mem::replace(&mut self.block, next);
        full.len = whole;
        match writer.to_writer.as_ref().map(|tx| tx.send(full)) {
            Some(Ok(())) => Ok(()),
            _ => Err(writer.failed()),
        }
    }

    /// Writes what is left and returns the file (not synced).
    pub(crate) fn finish(mut self) -> io::Result<File> {
        if self.writer.is_some() {
            self.send_blocks()?;
        }
        let (mut file, direct) = match (self.writer.take(), self.file.take()) {
            (Some(writer), _) => writer.join()?,
            (None, Some(file)) => file,
            (None, None) => return Err(io::Error::other("blob writer stopped")),
        };
        if self.block.len > 0 {
            if direct {
                set_buffered(&file)?;
            }
            file.write_all(self.block.data())?;
        }
        Ok(file)
    }
}

/// The writer thread: writes each block at the file's offset and sends it back, until the
/// channel closes. A filesystem may take `O_DIRECT` at open and still refuse a direct write (a
/// larger logical block size): the rest then goes through the page cache (a refused direct
/// write wrote nothing, so the same block is written again).
fn write_blocks(
    mut file: File,
    mut direct: bool,
    blocks: Receiver<Block>,
    back: SyncSender<Block>,
) -> io::Result<(File, bool)> {
    for block in blocks {
        match file.write_all(block.data()) {
            Ok(()) => {}
            Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => {
                set_buffered(&file)?;
                direct = false;
                file.write_all(block.data())?;
            }
            Err(e) => return Err(e),
        }
        // The filler may be gone (an error on its side): the block is simply dropped.
        let _ = back.try_send(block);
    }
    Ok((file, direct))
}

/// Clears `O_DIRECT` on an open file.
fn set_buffered(file: &File) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    rustix::fs::fcntl_setfl(file, flags - rustix::fs::OFlags::DIRECT)?;
    Ok(())
}

impl Write for DirectFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(BUF - self.block.len);
        let at = self.block.start + self.block.len;
        self.block.buf[at..at + n].copy_from_slice(&data[..n]);
        self.block.len += n;
        if self.block.len == BUF {
            self.send_blocks()?;
        }
        Ok(n)
    }

    /// Once the writer runs, hands it every whole aligned block; a tail shorter than a block
    /// (and a blob smaller than one block) waits for [`DirectFile::finish`] (a direct write
    /// cannot end mid-block). Blocks are on their way, not necessarily written, on return.
    fn flush(&mut self) -> io::Result<()> {
        if self.writer.is_some() {
            self.send_blocks()?;
        }
        Ok(())
    }
}

/// The file under a blob writer: buffered (small blobs, fsynced at commit) or [`DirectFile`]
/// (layer blobs, published unsynced behind a boot-id marker).
pub(crate) enum BlobFile {
    /// Through the page cache, in 1 MiB writes.
    Buffered(io::BufWriter<File>),
    /// Around the page cache.
    Direct(DirectFile),
}

impl BlobFile {
    /// Writes what is buffered and returns the file.
    pub(crate) fn finish(self) -> io::Result<File> {
        match self {
            BlobFile::Buffered(b) => b.into_inner().map_err(|e| e.into_error()),
            BlobFile::Direct(d) => d.finish(),
        }
    }
}

impl Write for BlobFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            BlobFile::Buffered(b) => b.write(data),
            BlobFile::Direct(d) => d.write(data),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            BlobFile::Buffered(b) => b.flush(),
            BlobFile::Direct(d) => d.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_sizes_round_trip() {
        // Also on /dev/shm where it exists: a tmpfs may refuse O_DIRECT (then buffered).
        let shm = tempfile::tempdir_in("/dev/shm").ok();
        for dir in [tempfile::tempdir().ok(), shm].into_iter().flatten() {
            round_trips_in(dir.path());
        }
    }

    fn round_trips_in(dir: &Path) {
        for size in [
            0usize,
            1,
            511,
            4096,
            4097,
            BUF - 1,
            BUF,
            BUF + 4095,
            3 * BUF + 123,
        ] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 4096) as u8).collect();
            let path = dir.join(format!("f{size}"));
            let mut f = DirectFile::create(&path).unwrap();
            // Uneven writes, with a flush in the middle.
            let (a, b) = data.split_at(size / 3);
            for piece in a.chunks(777) {
                f.write_all(piece).unwrap();
            }
            f.flush().unwrap();
            f.write_all(b).unwrap();
            drop(f.finish().unwrap());
            assert_eq!(std::fs::read(&path).unwrap(), data, "size {size}");
        }
    }

    #[test]
    fn refuses_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(&path, b"keep").unwrap();
        assert!(DirectFile::create(&path).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"keep");
    }
}
