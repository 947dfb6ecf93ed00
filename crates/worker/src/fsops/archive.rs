//! ADD's archive handling: detecting a tar (plain, gzip, bzip2, xz or zstd) by its bytes rather
//! than its name, and unpacking it into the destination directory (with `--chown` applied to every
//! unpacked entry, as BuildKit v0.23+ does; `--chmod` does not apply to unpacked entries).

use super::paths::{mkdir_all, resolve_in_root};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// The archive formats ADD extracts: a tar, plain or compressed (detected by magic bytes, as
/// Docker does; a file named `.tar.gz` that is not one is copied as a file).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum ArchiveKind {
    Tar,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

fn compression_of(header: &[u8]) -> ArchiveKind {
    if header.starts_with(&[0x1f, 0x8b]) {
        ArchiveKind::Gzip
    } else if header.starts_with(b"BZh") {
        ArchiveKind::Bzip2
    } else if header.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        ArchiveKind::Xz
    } else if header.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        ArchiveKind::Zstd
    } else {
        ArchiveKind::Tar
    }
}

/// A reader fed by a decoder running on another thread (for decoders that only write);
/// the decoder's error is returned at the end of the stream.
struct ThreadReader {
    pipe: io::PipeReader,
    handle: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Read for ThreadReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.pipe.read(buf)?;
        if n == 0 && !buf.is_empty() {
            if let Some(h) = self.handle.take() {
                h.join()
                    .map_err(|_| io::Error::other("xz decoder panicked"))??;
            }
        }
        Ok(n)
    }
}

fn decompressed(path: &Path, kind: ArchiveKind) -> io::Result<Box<dyn Read>> {
    let file = io::BufReader::new(fs::File::open(path)?);
    Ok(match kind {
        ArchiveKind::Tar => Box::new(file),
        ArchiveKind::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
        ArchiveKind::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(file)),
        ArchiveKind::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(file)?),
        ArchiveKind::Xz => {
            let (reader, mut writer) = io::pipe()?;
            let mut input = file;
            let handle = std::thread::spawn(move || {
                lzma_rs::xz_decompress(&mut input, &mut writer)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
            });
            Box::new(ThreadReader {
                pipe: reader,
                handle: Some(handle),
            })
        }
    })
}

/// True when `block` is a valid tar header (ustar/GNU magic, or a v7 header whose checksum holds).
fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 || block.iter().all(|&b| b == 0) {
        return false;
    }
    let field = String::from_utf8_lossy(&block[148..156]);
    let Ok(stored) = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
    else {
        return false;
    };
    let sum: u32 = block[..512]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u32
            }
        })
        .sum();
    sum == stored
}

fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            m => n += m,
        }
    }
    Ok(n)
}

fn archive_kind(path: &Path) -> io::Result<Option<ArchiveKind>> {
    let mut header = [0u8; 512];
    let n = read_up_to(&mut fs::File::open(path)?, &mut header)?;
    let kind = compression_of(&header[..n]);
    let mut block = [0u8; 512];
    let m = match decompressed(path, kind) {
        Ok(mut r) => match read_up_to(&mut r, &mut block) {
            Ok(m) => m,
            Err(_) => return Ok(None),
        },
        Err(_) => return Ok(None),
    };
    Ok(is_tar_header(&block[..m]).then_some(kind))
}

/// Unpacks `src` into `dest` when it is a tar archive (returns false when it is not). With an
/// `owner`, every unpacked entry is owned by it; otherwise the archive's owners are kept.
pub(super) fn try_unpack(
    src: &Path,
    dest_root: &Path,
    dest: &str,
    owner: Option<(u32, u32)>,
) -> io::Result<bool> {
    let Some(kind) = archive_kind(src)? else {
        return Ok(false);
    };
    mkdir_all(dest_root, dest, owner, 0o755)?;
    let target = resolve_in_root(dest_root, dest, true)?;
    let mut archive = tar::Archive::new(decompressed(src, kind)?);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(owner.is_none());
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(true);
    // Unpacked one entry at a time, to chown each with an owner and to give directories their
    // archive mtimes at the end (entries written into a directory change its mtime, and the
    // tar crate sets no directory mtime).
    let mut dirs: Vec<(PathBuf, u64)> = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let Some(rel) = clean_entry_path(&entry.path()?) else {
            continue;
        };
        if !entry.unpack_in(&target)? {
            continue;
        }
        let path = target.join(&rel);
        let header = entry.header();
        let kind = header.entry_type();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
            if !kind.is_symlink() && !kind.is_hard_link() {
                // A chown clears setuid/setgid bits: restore the entry's own mode.
                let mode = header.mode()? & 0o7777;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
            }
        }
        if kind.is_dir() {
            dirs.push((path, header.mtime()?));
        }
    }
    for (dir, mtime) in dirs.iter().rev() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(*mtime);
        let times = fs::FileTimes::new().set_accessed(t).set_modified(t);
        fs::File::open(dir)?.set_times(times)?;
    }
    Ok(true)
}

/// An archive entry's path below the destination, without `/` or `.` parts; None for the
/// destination itself or a path that climbs out (`..`), which the unpacker skips.
fn clean_entry_path(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}
