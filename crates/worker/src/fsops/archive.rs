//! ADD's archive handling: detecting a tar (plain, gzip, bzip2, xz or zstd) by its bytes rather
//! than its name, and unpacking it into the destination directory (with `--chown` applied to every
//! unpacked entry, as BuildKit v0.23+ does; `--chmod` does not apply to unpacked entries).
//! Every entry name and link is resolved with the destination as `/`, as BuildKit's chrooted
//! untar resolves them, so nothing an archive holds can land outside the destination.

use super::paths::{mkdir_all, resolve_in_root, resolve_parts_in_root};
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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
/// `owner`, every unpacked entry is owned by it; otherwise the archive's owners are kept. Errors
/// name `src_name` (the source as the Dockerfile gives it) and paths inside the image.
pub(super) fn try_unpack(
    src: &Path,
    src_name: &str,
    dest_root: &Path,
    dest: &str,
    owner: Option<(u32, u32)>,
) -> io::Result<bool> {
    let Some(kind) = archive_kind(src)? else {
        return Ok(false);
    };
    let unpack = || -> io::Result<()> {
        mkdir_all(dest_root, dest, owner, 0o755)?;
        let target = resolve_in_root(dest_root, dest, true)?;
        let unpacker = Unpacker {
            root: &target,
            shown_root: in_image(dest_root, &target),
            owner,
        };
        unpacker.unpack(decompressed(src, kind)?)
    };
    unpack().map_err(|e| {
        let cause = scrubbed(&e, dest_root);
        io::Error::new(
            e.kind(),
            format!("failed to unpack {src_name} into {dest}: {cause}"),
        )
    })?;
    Ok(true)
}

/// The path inside the image of `host`, a path below the mounted root `dest_root`.
fn in_image(dest_root: &Path, host: &Path) -> PathBuf {
    Path::new("/").join(host.strip_prefix(dest_root).unwrap_or(host))
}

/// The innermost cause of `e`, with any host path below `dest_root` shown as the path inside
/// the image.
fn scrubbed(e: &io::Error, dest_root: &Path) -> String {
    let text = innermost(e);
    match dest_root.to_string_lossy() {
        root if root.len() > 1 => text.replace(&*root, ""),
        _ => text,
    }
}

/// Unpacks archive entries into one destination directory, resolving every entry as BuildKit
/// does: it untars in a chroot at the destination (moby's `chrootarchive.Untar`, called by its
/// file op for ADD), so each name and each link is resolved with the destination as `/`.
struct Unpacker<'a> {
    /// The destination directory (host path), the root every entry is resolved in.
    root: &'a Path,
    /// The destination's path inside the image, for messages.
    shown_root: PathBuf,
    /// The `--chown` owner of every entry, if any.
    owner: Option<(u32, u32)>,
}

impl Unpacker<'_> {
    fn unpack(&self, reader: Box<dyn Read>) -> io::Result<()> {
        let mut archive = tar::Archive::new(reader);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(self.owner.is_none());
        archive.set_preserve_mtime(true);
        archive.set_overwrite(true);
        archive.set_unpack_xattrs(true);
        // Unpacked one entry at a time, to chown each with an owner and to give directories their
        // archive mtimes at the end (entries written into a directory change its mtime, and the
        // tar crate sets no directory mtime).
        let mut dirs: Vec<(Vec<OsString>, u64)> = Vec::new();
        for entry in archive.entries()? {
            let mut entry = entry?;
            if entry.header().entry_type().is_pax_global_extensions() {
                continue;
            }
            // The destination itself (`.`, `/`, `..`) is left as it is (BuildKit skips `./`).
            let Some(parts) = clamped(&entry.path()?) else {
                continue;
            };
            let is_dir = is_dir_entry(&entry);
            self.place(&mut entry, &parts, is_dir)
                .map_err(|e| self.about(&parts, e))?;
            if is_dir {
                dirs.push((parts, entry.header().mtime()?));
            }
        }
        for (parts, mtime) in dirs.iter().rev() {
            self.set_dir_mtime(parts, *mtime)
                .map_err(|e| self.about(parts, e))?;
        }
        Ok(())
    }

    /// Writes one entry at `parts` (below the root): parents are resolved inside the root (a
    /// symlink on the way is followed there, never on the host), a missing parent is created,
    /// and whatever is in the way is replaced (a directory is merged into a directory).
    fn place(
        &self,
        entry: &mut tar::Entry<Box<dyn Read>>,
        parts: &[OsString],
        is_dir: bool,
    ) -> io::Result<()> {
        let Some((name, parent)) = parts.split_last() else {
            return Ok(());
        };
        self.implied_dirs(parent)?;
        let path = resolve_parts_in_root(self.root, parent.to_vec(), true)?.join(name);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() && is_dir => {}
            Ok(m) if m.is_dir() => fs::remove_dir_all(&path)?,
            Ok(_) => fs::remove_file(&path)?,
            Err(_) => {}
        }
        let kind = entry.header().entry_type();
        if kind.is_hard_link() {
            // The target is resolved inside the root too (a link named `/etc/passwd` or
            // `../../x` means the destination's `etc/passwd` or `x`), its last part not followed.
            let link = entry.link_name()?.unwrap_or_default().into_owned();
            let link_parts = clamped(&link).unwrap_or_default();
            let target = resolve_parts_in_root(self.root, link_parts.clone(), false)?;
            fs::hard_link(&target, &path).map_err(|e| {
                let shown = self.shown_root.join(link_parts.iter().collect::<PathBuf>());
                io::Error::new(
                    e.kind(),
                    format!("link to {}: {}", shown.display(), os_message(&e)),
                )
            })?;
        } else {
            entry.unpack(&path)?;
        }
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
            if !kind.is_symlink() && !kind.is_hard_link() {
                // A chown clears setuid/setgid bits: restore the entry's own mode.
                let mode = entry.header().mode()? & 0o7777;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
            }
        }
        Ok(())
    }

    /// Creates the missing parents of an entry (0755, as BuildKit's implied directories), when
    /// the parent itself is absent. Symlinks on the way are followed inside the root; one that
    /// leads nowhere is an error, as `mkdir` through it would be.
    fn implied_dirs(&self, parent: &[OsString]) -> io::Result<()> {
        for i in 1..=parent.len() {
            let at = resolve_parts_in_root(self.root, parent[..i].to_vec(), false)?;
            match fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => {}
                // The parent itself as a symlink is used as it is (an entry through a link
                // that leads nowhere then fails on its own); one further up must be a directory.
                Ok(m) if m.is_symlink() && i == parent.len() => {}
                Ok(m) if m.is_symlink() => {
                    let to = resolve_parts_in_root(self.root, parent[..i].to_vec(), true)?;
                    if !fs::metadata(&to).is_ok_and(|m| m.is_dir()) {
                        return Err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!("mkdir {}: file exists", self.shown(&parent[..i]).display()),
                        ));
                    }
                }
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotADirectory,
                        format!("{}: not a directory", self.shown(&parent[..i]).display()),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&at)?;
                    fs::set_permissions(&at, fs::Permissions::from_mode(0o755))?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Gives the directory at `parts` its archive mtime, re-resolved inside the root (a later
    /// entry may have replaced it or a parent with a symlink, which is then left alone).
    fn set_dir_mtime(&self, parts: &[OsString], mtime: u64) -> io::Result<()> {
        let path = resolve_parts_in_root(self.root, parts.to_vec(), false)?;
        if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            return Ok(());
        }
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
        let times = fs::FileTimes::new().set_accessed(t).set_modified(t);
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(
                (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::DIRECTORY).bits() as i32,
            )
            .open(&path)?
            .set_times(times)
    }

    /// The image path of the entry at `parts`.
    fn shown(&self, parts: &[OsString]) -> PathBuf {
        self.shown_root.join(parts.iter().collect::<PathBuf>())
    }

    /// `e` prefixed by the image path of the entry it is about.
    fn about(&self, parts: &[OsString], e: io::Error) -> io::Error {
        let msg = format!("{}: {}", self.shown(parts).display(), innermost(&e));
        io::Error::new(e.kind(), msg)
    }
}

/// The text of the innermost cause of `e` (the tar crate wraps OS errors in messages naming
/// host paths); an OS error without Rust's ` (os error N)` suffix, as it follows a path.
fn innermost(e: &io::Error) -> String {
    let mut inner: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    match inner.downcast_ref::<io::Error>() {
        Some(os) if os.raw_os_error().is_some() => os_message(os),
        _ => inner.to_string(),
    }
}

/// An OS error's text without Rust's ` (os error N)` suffix.
fn os_message(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// True for a directory entry (including an old-style header whose name ends in `/`, which
/// the tar crate unpacks as a directory).
fn is_dir_entry<R: Read>(entry: &tar::Entry<R>) -> bool {
    let header = entry.header();
    header.entry_type().is_dir()
        || (header.as_ustar().is_none() && entry.path_bytes().ends_with(b"/"))
}

/// An archive name's parts below the destination, cleaned the way BuildKit's unpacker sees
/// them with the destination as `/`: `/` and `.` parts dropped, `..` climbing at most to the
/// destination (so `../../x` and `/x` both mean `x`). None for the destination itself.
fn clamped(p: &Path) -> Option<Vec<OsString>> {
    let mut out: Vec<OsString> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
#[path = "archive_tests.rs"]
mod tests;
