//! Layer diffs: a snapshot's changes against its parent as an uncompressed OCI layer tar.

use std::collections::HashMap;
use std::fs::Metadata;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use crate::error::{IoContext, Result, SnapshotError};
use crate::fsutil::{
    is_opaque, is_whiteout, list_xattrs, overlay_xattr_prefix, same_content, sorted_names,
};

/// Options for [`crate::Snapshotter::write_diff`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffOptions {
    /// Clamp every entry's mtime to at most this Unix time (`SOURCE_DATE_EPOCH`).
    pub source_date_epoch: Option<i64>,
}

/// The OCI whiteout prefix.
pub(crate) const WHITEOUT_PREFIX: &str = ".wh.";
/// The OCI opaque-directory marker.
pub(crate) const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Writes tar entries with numeric owners, PAX xattrs, clamped mtimes and hardlink detection.
struct Emitter<'a> {
    builder: tar::Builder<&'a mut dyn Write>,
    epoch: Option<i64>,
    /// (dev, ino) of multiply-linked files already written -> their path in the tar.
    inodes: HashMap<(u64, u64), PathBuf>,
}

fn tar_err(context: impl std::fmt::Display, source: std::io::Error) -> SnapshotError {
    SnapshotError::Tar {
        context: context.to_string(),
        source,
    }
}

impl<'a> Emitter<'a> {
    fn new(out: &'a mut dyn Write, opts: &DiffOptions) -> Emitter<'a> {
        let mut builder = tar::Builder::new(out);
        builder.follow_symlinks(false);
        Emitter {
            builder,
            epoch: opts.source_date_epoch,
            inodes: HashMap::new(),
        }
    }

    fn mtime(&self, t: i64) -> u64 {
        let t = match self.epoch {
            Some(e) if t > e => e,
            _ => t,
        };
        u64::try_from(t).unwrap_or(0)
    }

    /// An empty regular file (a whiteout or opaque marker).
    fn marker(&mut self, rel: &Path, mtime: i64) -> Result<()> {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        h.set_mtime(self.mtime(mtime));
        self.builder
            .append_data(&mut h, rel, std::io::empty())
            .map_err(|e| tar_err(rel.display(), e))
    }

    /// The entry for the file at `abs`, named `rel` in the tar.
    fn entry(&mut self, rel: &Path, abs: &Path, meta: &Metadata) -> Result<()> {
        let mut h = Header::new_gnu();
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(u64::from(meta.uid()));
        h.set_gid(u64::from(meta.gid()));
        h.set_mtime(self.mtime(meta.mtime()));
        h.set_size(0);
        let xattrs: Vec<(String, Vec<u8>)> = list_xattrs(abs)?
            .into_iter()
            .filter(|(n, _)| !n.as_bytes().starts_with(overlay_xattr_prefix()))
            .map(|(n, v)| (format!("SCHILY.xattr.{}", n.to_string_lossy()), v))
            .collect();
        let ft = meta.file_type();
        let ctx = |e| tar_err(rel.display(), e);
        if ft.is_file() && meta.nlink() > 1 {
            if let Some(first) = self.inodes.get(&(meta.dev(), meta.ino())) {
                let first = first.clone();
                h.set_entry_type(EntryType::Link);
                return self.builder.append_link(&mut h, rel, &first).map_err(ctx);
            }
            self.inodes
                .insert((meta.dev(), meta.ino()), rel.to_path_buf());
        }
        if !xattrs.is_empty() {
            self.builder
                .append_pax_extensions(xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(ctx)?;
        }
        if ft.is_dir() {
            h.set_entry_type(EntryType::Directory);
            let mut name = rel.as_os_str().to_os_string();
            name.push("/");
            self.builder
                .append_data(&mut h, Path::new(&name), std::io::empty())
                .map_err(ctx)
        } else if ft.is_file() {
            h.set_entry_type(EntryType::Regular);
            h.set_size(meta.len());
            let f = std::fs::File::open(abs).ctx("open", abs)?;
            // Never write more (or less) than the header promises, even if the file changes.
            let mut reader = std::io::Read::take(f, meta.len());
            let mut counted = CountingReader {
                inner: &mut reader,
                n: 0,
            };
            self.builder
                .append_data(&mut h, rel, &mut counted)
                .map_err(ctx)?;
            if counted.n != meta.len() {
                return Err(SnapshotError::Io {
                    op: "read (file shrank while writing the layer)",
                    path: abs.to_path_buf(),
                    source: std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
                });
            }
            Ok(())
        } else if ft.is_symlink() {
            h.set_entry_type(EntryType::Symlink);
            let target = std::fs::read_link(abs).ctx("read link", abs)?;
            self.builder.append_link(&mut h, rel, &target).map_err(ctx)
        } else if ft.is_char_device() || ft.is_block_device() {
            h.set_entry_type(if ft.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            });
            let dev = meta.rdev();
            h.set_device_major(rustix::fs::major(dev)).map_err(ctx)?;
            h.set_device_minor(rustix::fs::minor(dev)).map_err(ctx)?;
            self.builder
                .append_data(&mut h, rel, std::io::empty())
                .map_err(ctx)
        } else if ft.is_fifo() {
            h.set_entry_type(EntryType::Fifo);
            self.builder
                .append_data(&mut h, rel, std::io::empty())
                .map_err(ctx)
        } else {
            // Sockets cannot be represented in a layer (Docker skips them too).
            Ok(())
        }
    }

    fn finish(mut self) -> Result<()> {
        self.builder.finish().map_err(|e| tar_err("finish", e))?;
        self.builder
            .get_mut()
            .flush()
            .map_err(|e| tar_err("flush", e))
    }
}

/// Counts the bytes read through it.
struct CountingReader<R> {
    inner: R,
    n: u64,
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Overlay backend: the snapshot's `fs` dir is an upper dir. Whiteout devices become `.wh.NAME`,
/// opaque dirs get `.wh..wh..opq` right after their own entry.
pub(crate) fn write_overlay_diff(
    upper: &Path,
    out: &mut dyn Write,
    opts: &DiffOptions,
) -> Result<()> {
    let mut em = Emitter::new(out, opts);
    walk_upper(&mut em, upper, Path::new(""))?;
    em.finish()
}

fn walk_upper(em: &mut Emitter<'_>, abs_dir: &Path, rel_dir: &Path) -> Result<()> {
    // Sorted by the name written to the tar (a whiteout `x` is written as `.wh.x`).
    let mut children = Vec::new();
    for name in sorted_names(abs_dir)? {
        let abs = abs_dir.join(&name);
        let meta = std::fs::symlink_metadata(&abs).ctx("stat", &abs)?;
        let emitted = if is_whiteout(&meta) {
            whiteout_name(&name)
        } else {
            name
        };
        children.push((emitted, abs, meta));
    }
    children.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (emitted, abs, meta) in children {
        let rel = rel_dir.join(&emitted);
        if is_whiteout(&meta) {
            em.marker(&rel, meta.mtime())?;
            continue;
        }
        em.entry(&rel, &abs, &meta)?;
        if meta.is_dir() {
            if is_opaque(&abs) {
                em.marker(&rel.join(OPAQUE_MARKER), meta.mtime())?;
            }
            walk_upper(em, &abs, &rel)?;
        }
    }
    Ok(())
}

fn whiteout_name(name: &std::ffi::OsStr) -> std::ffi::OsString {
    let mut wh = std::ffi::OsString::from(WHITEOUT_PREFIX);
    wh.push(name);
    wh
}

/// Copy backend: compare the full tree `new` with the full tree `old` (containerd's naive differ).
pub(crate) fn write_naive_diff(
    new: &Path,
    old: &Path,
    out: &mut dyn Write,
    opts: &DiffOptions,
) -> Result<()> {
    let mut em = Emitter::new(out, opts);
    let mut pending = Vec::new();
    walk_compare(&mut em, new, old, Path::new(""), &mut pending)?;
    em.finish()
}

/// A directory whose header is written only if something below it changed.
struct PendingDir {
    rel: PathBuf,
    abs: PathBuf,
    meta: Metadata,
}

fn flush(em: &mut Emitter<'_>, pending: &mut Vec<PendingDir>) -> Result<()> {
    for d in pending.drain(..) {
        em.entry(&d.rel, &d.abs, &d.meta)?;
    }
    Ok(())
}

fn stat_opt(p: &Path) -> Result<Option<Metadata>> {
    match std::fs::symlink_metadata(p) {
        Ok(m) => Ok(Some(m)),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            Ok(None)
        }
        Err(e) => Err(e).ctx("stat", p),
    }
}

fn walk_compare(
    em: &mut Emitter<'_>,
    new: &Path,
    old: &Path,
    rel_dir: &Path,
    pending: &mut Vec<PendingDir>,
) -> Result<()> {
    let new_dir = new.join(rel_dir);
    let old_dir = old.join(rel_dir);
    let mut names = sorted_names(&new_dir)?;
    if stat_opt(&old_dir)?.is_some_and(|m| m.is_dir()) {
        names.extend(sorted_names(&old_dir)?);
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        names.dedup();
    }
    let dir_mtime = std::fs::symlink_metadata(&new_dir)
        .ctx("stat", &new_dir)?
        .mtime();
    let mut children = Vec::new();
    for name in names {
        let rel = rel_dir.join(&name);
        let (a_abs, b_abs) = (new.join(&rel), old.join(&rel));
        let (a, b) = (stat_opt(&a_abs)?, stat_opt(&b_abs)?);
        let emitted = if a.is_none() {
            whiteout_name(&name)
        } else {
            name
        };
        children.push((emitted, rel, a_abs, b_abs, a, b));
    }
    // Sorted by the name written to the tar (a deleted `x` is written as `.wh.x`).
    children.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (emitted, rel, a_abs, b_abs, a, b) in children {
        match (a, b) {
            (None, None) => {}
            (None, Some(_)) => {
                flush(em, pending)?;
                em.marker(&rel_dir.join(emitted), dir_mtime)?;
            }
            (Some(a), None) => {
                flush(em, pending)?;
                em.entry(&rel, &a_abs, &a)?;
                if a.is_dir() {
                    emit_all(em, &a_abs, &rel)?;
                }
            }
            (Some(a), Some(b)) => {
                if a.is_dir() && b.is_dir() {
                    let depth = pending.len();
                    if differs(&a_abs, &a, &b_abs, &b)? {
                        flush(em, pending)?;
                        em.entry(&rel, &a_abs, &a)?;
                    } else {
                        pending.push(PendingDir {
                            rel: rel.clone(),
                            abs: a_abs.clone(),
                            meta: a,
                        });
                    }
                    walk_compare(em, new, old, &rel, pending)?;
                    pending.truncate(depth);
                } else if a.is_dir() {
                    flush(em, pending)?;
                    em.entry(&rel, &a_abs, &a)?;
                    emit_all(em, &a_abs, &rel)?;
                } else if differs(&a_abs, &a, &b_abs, &b)? {
                    flush(em, pending)?;
                    em.entry(&rel, &a_abs, &a)?;
                }
            }
        }
    }
    Ok(())
}

/// Every entry below `abs_dir`.
fn emit_all(em: &mut Emitter<'_>, abs_dir: &Path, rel_dir: &Path) -> Result<()> {
    for name in sorted_names(abs_dir)? {
        let abs = abs_dir.join(&name);
        let rel = rel_dir.join(&name);
        let meta = std::fs::symlink_metadata(&abs).ctx("stat", &abs)?;
        em.entry(&rel, &abs, &meta)?;
        if meta.is_dir() {
            emit_all(em, &abs, &rel)?;
        }
    }
    Ok(())
}

/// containerd's naive comparison: type, mode, owner, device, size, mtime, link target, xattrs; for
/// regular files whose mtimes have no sub-second part (possibly truncated), also the content.
fn differs(a_abs: &Path, a: &Metadata, b_abs: &Path, b: &Metadata) -> Result<bool> {
    if a.mode() != b.mode() || a.uid() != b.uid() || a.gid() != b.gid() {
        return Ok(true);
    }
    let ft = a.file_type();
    if (ft.is_char_device() || ft.is_block_device()) && a.rdev() != b.rdev() {
        return Ok(true);
    }
    if !ft.is_dir() && a.len() != b.len() {
        return Ok(true);
    }
    if a.mtime() != b.mtime() || a.mtime_nsec() != b.mtime_nsec() {
        return Ok(true);
    }
    if ft.is_symlink()
        && std::fs::read_link(a_abs).ctx("read link", a_abs)?
            != std::fs::read_link(b_abs).ctx("read link", b_abs)?
    {
        return Ok(true);
    }
    if list_xattrs(a_abs)? != list_xattrs(b_abs)? {
        return Ok(true);
    }
    if ft.is_file() && a.mtime_nsec() == 0 {
        return Ok(!same_content(a_abs, b_abs)?);
    }
    Ok(false)
}
