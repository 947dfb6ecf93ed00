//! Layer blob files written around the page cache (`O_DIRECT`). A built layer's tar is written
//! once and read again only by a push or an export, so pushing gigabytes of it through the page
//! cache just evicts the snapshots the next steps read and makes the kernel throttle the build's
//! other writers. [`DirectFile`] writes whole aligned blocks directly; the unaligned tail (and
//! every write on a filesystem that refuses `O_DIRECT`) goes through the page cache as usual.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Alignment of direct writes: offsets, lengths and buffer addresses (the page size covers every
/// logical block size Linux filesystems use).
const ALIGN: usize = 4096;
/// Bytes gathered before one direct write.
const BUF: usize = 1 << 20;

/// A new file written with `O_DIRECT` in aligned 1 MiB blocks (see the module doc).
pub(crate) struct DirectFile {
    file: File,
    /// `BUF + ALIGN` bytes; the block starts at `start`, the first aligned address.
    buf: Vec<u8>,
    start: usize,
    /// Bytes waiting in the block.
    len: usize,
    /// Still writing with `O_DIRECT`.
    direct: bool,
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
        let (file, direct) = match open(libc::O_DIRECT) {
            Ok(f) => (f, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (open(0)?, false),
            Err(e) => return Err(e),
        };
        let buf = vec![0u8; BUF + ALIGN];
        let start = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        Ok(DirectFile {
            file,
            buf,
            start,
            len: 0,
            direct,
        })
    }

    /// Writes the block's whole aligned part and keeps the tail (< [`ALIGN`] bytes) in front.
    fn write_blocks(&mut self) -> io::Result<()> {
        let whole = if self.direct {
            self.len / ALIGN * ALIGN
        } else {
            self.len
        };
        if whole == 0 {
            return Ok(());
        }
        let block = &self.buf[self.start..self.start + whole];
        match self.file.write_all(block) {
            Ok(()) => {}
            // A filesystem may take the flag at open and still refuse a direct write (a larger
            // logical block size): the rest goes through the page cache. A failed direct write
            // wrote nothing at the file's offset, so the same block is written again.
            Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                self.set_buffered()?;
                return self.write_blocks();
            }
            Err(e) => return Err(e),
        }
        self.buf
            .copy_within(self.start + whole..self.start + self.len, self.start);
        self.len -= whole;
        Ok(())
    }

    /// Clears `O_DIRECT` on the open file.
    fn set_buffered(&mut self) -> io::Result<()> {
        let flags = rustix::fs::fcntl_getfl(&self.file)?;
        rustix::fs::fcntl_setfl(&self.file, flags - rustix::fs::OFlags::DIRECT)?;
        self.direct = false;
        Ok(())
    }

    /// Writes what is left and returns the file (not synced).
    pub(crate) fn finish(mut self) -> io::Result<File> {
        self.write_blocks()?;
        if self.len > 0 {
            self.set_buffered()?;
            self.write_blocks()?;
        }
        Ok(self.file)
    }
}

impl Write for DirectFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(BUF - self.len);
        let at = self.start + self.len;
        self.buf[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        if self.len == BUF {
            self.write_blocks()?;
        }
        Ok(n)
    }

    /// Writes every whole aligned block; a tail shorter than a block waits for
    /// [`DirectFile::finish`] (a direct write cannot end mid-block).
    fn flush(&mut self) -> io::Result<()> {
        self.write_blocks()
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
        let dir = tempfile::tempdir().unwrap();
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
            let path = dir.path().join(format!("f{size}"));
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
