//! Copying one entry or a whole tree: ownership (kept, reset to 0:0 or forced), modes (octal or
//! symbolic), symlinks kept as links, hardlink groups kept as links, device nodes recreated,
//! mtimes preserved, and the `.dockerignore` / `--exclude` filters applied while walking.

use super::data::{copy_file, Mover};
use crate::dockerignore::{keeps_anything, Matcher, Verdict};
use rbuild_llb::SymbolicMode;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Settings for one copy.
pub struct CopySettings {
    /// Owner for every created entry; None keeps the source's (or 0:0 for the build context).
    pub owner: Option<(u32, u32)>,
    /// Reset ownership to 0:0 (sources from the build context).
    pub reset_owner: bool,
    /// Mode override.
    pub mode: Option<u32>,
    /// Symbolic mode (wins over `mode`), applied to each entry's own mode.
    pub symbolic: Option<SymbolicMode>,
    /// `.dockerignore` of the build context (paths relative to the source root).
    pub exclude: Option<Matcher>,
    /// `--exclude` patterns, matched against paths relative to each source (a file source: its name).
    pub source_exclude: Option<Matcher>,
}

impl CopySettings {
    /// Settings that keep everything as it is in the source.
    pub fn plain(reset_owner: bool) -> Self {
        CopySettings {
            owner: None,
            reset_owner,
            mode: None,
            symbolic: None,
            exclude: None,
            source_exclude: None,
        }
    }

    /// `rel`: relative to the source root (dockerignore); `srel`: relative to the copied source.
    fn verdict(&self, rel: &Path, srel: &Path, is_dir: bool) -> Verdict {
        let of = |m: &Option<Matcher>, p: &Path| match m {
            Some(m) => m.verdict(&p.to_string_lossy(), is_dir),
            None => Verdict::Keep,
        };
        of(&self.exclude, rel).and(of(&self.source_exclude, srel))
    }

    /// True when the walk keeps `src` (at `rel` / `srel`): an excluded directory is kept only
    /// when something under it is re-included, as BuildKit creates parents only for kept paths.
    fn keeps(&self, src: &Path, rel: &Path, srel: &Path, is_dir: bool) -> io::Result<bool> {
        match self.verdict(rel, srel, is_dir) {
            Verdict::Keep => Ok(true),
            Verdict::Drop => Ok(false),
            Verdict::Probe => keeps_anything(src, &mut |host, _, d| {
                let (r, s) = under(src, host, rel, srel);
                self.verdict(&r, &s, d)
            }),
        }
    }

    /// True when the `.dockerignore` removes source `rel` (at `host`) from the context: an
    /// excluded directory holding re-included paths stays (with only those paths under it).
    pub(super) fn ignored(&self, rel: &Path, host: &Path) -> io::Result<bool> {
        let Some(m) = &self.exclude else {
            return Ok(false);
        };
        let is_dir = fs::symlink_metadata(host).is_ok_and(|m| m.is_dir());
        Ok(match m.verdict(&rel.to_string_lossy(), is_dir) {
            Verdict::Keep => false,
            Verdict::Drop => true,
            Verdict::Probe => !keeps_anything(host, &mut |h, _, d| {
                let tail = h.strip_prefix(host).unwrap_or(h);
                m.verdict(&rel.join(tail).to_string_lossy(), d)
            })?,
        })
    }

    pub(super) fn source_excluded(&self, name: &Path) -> bool {
        self.source_exclude
            .as_ref()
            .is_some_and(|m| m.excluded(&name.to_string_lossy()))
    }

    pub(super) fn mode_for(&self, meta: &fs::Metadata) -> u32 {
        match (&self.symbolic, self.mode) {
            (Some(s), _) => s.apply(meta.mode(), meta.is_dir()),
            (None, Some(m)) => m,
            (None, None) => meta.mode() & 0o7777,
        }
    }
}

/// The hardlink groups met during one COPY/ADD source: a source file's (device, inode) to the
/// destination path of its first copy, so later names of the same file become links to it (as
/// BuildKit's copier does). A name whose partners are not copied stays a plain file.
/// It also carries how file bytes are moved ([`Mover`], learnt from the first file).
#[derive(Default)]
pub(super) struct Links {
    first: HashMap<(u64, u64), PathBuf>,
    mover: Mover,
}

impl Links {
    /// The destination to link `dest` to, or None when it must be copied (and is recorded as
    /// the first copy of its group when the source has other links).
    fn source_for(&mut self, meta: &fs::Metadata, dest: &Path) -> Option<PathBuf> {
        if !meta.is_file() || meta.nlink() < 2 {
            return None;
        }
        let key = (meta.dev(), meta.ino());
        match self.first.get(&key) {
            Some(first) if fs::symlink_metadata(first).is_ok_and(|m| m.is_file()) => {
                Some(first.clone())
            }
            _ => {
                self.first.insert(key, dest.to_path_buf());
                None
            }
        }
    }
}

/// `rel` / `srel` of `host`, a path below `top` (whose own are `rel` / `srel`).
fn under(
    top: &Path,
    host: &Path,
    rel: &Path,
    srel: &Path,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let tail = host.strip_prefix(top).unwrap_or(host);
    (rel.join(tail), srel.join(tail))
}

/// Copies the entries of the directory `src` into the existing directory `dest`; nested
/// directories that already exist take their source's metadata.
pub(super) fn copy_dir_contents(
    src: &Path,
    dest: &Path,
    settings: &CopySettings,
    links: &mut Links,
    rel: &Path,
    srel: &Path,
) -> io::Result<()> {
    let mut names: Vec<OsString> = fs::read_dir(src)?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    for name in names {
        let s = src.join(&name);
        let child_rel = rel.join(&name);
        let child_srel = srel.join(&name);
        let meta = fs::symlink_metadata(&s)?;
        if !settings.keeps(&s, &child_rel, &child_srel, meta.is_dir())? {
            continue;
        }
        copy_entry(
            &s,
            &dest.join(&name),
            &meta,
            settings,
            links,
            EntryPaths {
                rel: &child_rel,
                srel: &child_srel,
                nested: true,
            },
        )?;
    }
    Ok(())
}

/// Where an entry sits in the copy: `rel` relative to the source root (`.dockerignore`), `srel`
/// relative to the copied source (`--exclude`), and whether it is below the top-level source.
pub(super) struct EntryPaths<'a> {
    /// Path relative to the source root.
    pub rel: &'a Path,
    /// Path relative to the copied source.
    pub srel: &'a Path,
    /// Below the copied source: an existing directory here takes the source's metadata (mode,
    /// owner, mtime), as in BuildKit; the top-level destination keeps its own mode and owner.
    pub nested: bool,
}

/// Copies one entry (a directory recursively) from `src` to `dest`.
pub(super) fn copy_entry(
    src: &Path,
    dest: &Path,
    meta: &fs::Metadata,
    settings: &CopySettings,
    links: &mut Links,
    at: EntryPaths<'_>,
) -> io::Result<()> {
    let (uid, gid) = match settings.owner {
        Some(o) => o,
        None if settings.reset_owner => (0, 0),
        None => (meta.uid(), meta.gid()),
    };
    let mode = settings.mode_for(meta);
    let ft = meta.file_type();
    if ft.is_dir() {
        let created = match fs::symlink_metadata(dest) {
            Ok(m) if m.is_dir() => false,
            Ok(_) => {
                fs::remove_file(dest)?;
                fs::create_dir(dest)?;
                true
            }
            Err(_) => {
                fs::create_dir(dest)?;
                true
            }
        };
        copy_dir_contents(src, dest, settings, links, at.rel, at.srel)?;
        if created || at.nested {
            std::os::unix::fs::lchown(dest, Some(uid), Some(gid))?;
            fs::set_permissions(dest, fs::Permissions::from_mode(mode))?;
        }
        set_mtime(dest, meta)?;
        return Ok(());
    }
    if ft.is_file() {
        match links.source_for(meta, dest) {
            None => return copy_file(src, dest, meta, (uid, gid), mode, &links.mover),
            Some(first) => {
                remove_existing(dest)?;
                fs::hard_link(&first, dest)?;
                return set_mtime(dest, meta);
            }
        }
    }
    remove_existing(dest)?;
    if ft.is_symlink() {
        let target = fs::read_link(src)?;
        symlink(&target, dest)?;
        std::os::unix::fs::lchown(dest, Some(uid), Some(gid))?;
    } else {
        // Devices, fifos and sockets: recreate the node.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dest,
            rustix::fs::FileType::from_raw_mode(meta.mode()),
            rustix::fs::Mode::from_raw_mode(meta.mode()),
            meta.rdev(),
        )?;
        std::os::unix::fs::lchown(dest, Some(uid), Some(gid))?;
    }
    set_mtime(dest, meta)
}

/// Removes whatever is at `dest` (a directory with its contents); nothing there is fine.
fn remove_existing(dest: &Path) -> io::Result<()> {
    if let Ok(existing) = fs::symlink_metadata(dest) {
        if existing.is_dir() {
            fs::remove_dir_all(dest)?;
        } else {
            fs::remove_file(dest)?;
        }
    }
    Ok(())
}

pub(super) fn set_mtime(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    use rustix::fs::{Timespec, Timestamps};
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}
