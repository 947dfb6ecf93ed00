//! Safe layer application: every path is resolved inside the root with `openat2(RESOLVE_IN_ROOT)`,
//! so neither `..` nor absolute or relative symlinks can make an entry land outside it.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags, CWD};
use tar::EntryType;

use crate::diff::{OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::error::{IoContext, Result, SnapshotError};
use crate::fsutil::{
    copy_entry, is_whiteout, lookup_in_layers, opaque_xattr, overlay_xattr_prefix, remove_any,
    set_mtime, set_xattr,
};

/// How whiteouts are recorded.
pub(crate) enum Whiteouts<'a> {
    /// Into an overlay upper dir: `.wh.x` becomes a 0:0 char device, `.wh..wh..opq` the
    /// `trusted.overlay.opaque=y` xattr. `lowers` (top-most first) are the parent chain, used for
    /// hardlinks to lower files and the metadata of implicitly created parent dirs.
    Overlay { lowers: &'a [PathBuf] },
    /// Into a full tree: whiteouts delete.
    Delete,
}

/// Applies the layer `tar` onto the directory `root`.
pub(crate) fn apply_tar(root: &Path, tar: &mut dyn Read, mode: &Whiteouts<'_>) -> Result<()> {
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx("open", root)?;
    let mut ap = Applier {
        root,
        root_fd,
        mode,
        written: BTreeSet::new(),
        dir_times: Vec::new(),
    };
    let mut archive = tar::Archive::new(tar);
    let entries = archive.entries().map_err(|source| SnapshotError::Tar {
        context: "read".into(),
        source,
    })?;
    for entry in entries {
        let mut entry = entry.map_err(|source| SnapshotError::Tar {
            context: "read entry header".into(),
            source,
        })?;
        ap.entry(&mut entry)?;
    }
    // Directory mtimes last: creating children changed them.
    for (rel, t) in std::mem::take(&mut ap.dir_times).into_iter().rev() {
        if let Some(fd) = ap.resolve_dir(&rel, false)? {
            set_mtime(&proc_path(&fd), t)?;
        }
    }
    Ok(())
}

/// xattr names and values of one entry.
type Xattrs = Vec<(OsString, Vec<u8>)>;
/// (uid, gid, mode, mtime) of one entry.
type Owner = (u32, u32, u32, i64);

struct Applier<'a> {
    root: &'a Path,
    root_fd: OwnedFd,
    mode: &'a Whiteouts<'a>,
    /// Paths written by this layer (for opaque dirs in `Delete` mode).
    written: BTreeSet<PathBuf>,
    /// Directories whose mtime must be set at the end.
    dir_times: Vec<(PathBuf, (i64, i64))>,
}

/// `/proc/self/fd/N/.`: a path that names exactly the already-resolved directory `fd` (the
/// trailing `.` makes `*_NOFOLLOW` calls act on the directory, not on the magic link).
fn proc_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/.", fd.as_raw_fd()))
}

/// Cleans a tar path lexically: drops `.` and a leading `/`, applies `..`; `None` for the root.
/// A `..` that would climb above the root is an error.
fn clean(path: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(SnapshotError::PathEscape {
                        path: path.to_path_buf(),
                    });
                }
            }
            Component::Normal(n) => out.push(n),
        }
    }
    Ok(out)
}

/// Where a new entry goes: its path in the tar, relative to the layer root, through the
/// parent's descriptor (`/proc/self/fd/N/name`), and under the root for messages.
struct Placed {
    raw: PathBuf,
    rel: PathBuf,
    target: PathBuf,
    full: PathBuf,
}

/// The link target of a symlink or hardlink entry (`what` names which, for the error).
fn link_name<R: Read>(entry: &tar::Entry<'_, R>, at: &Placed, what: &str) -> Result<PathBuf> {
    entry
        .link_name()
        .map_err(|source| SnapshotError::Tar {
            context: format!("{}: link name", at.raw.display()),
            source,
        })?
        .map(|l| l.into_owned())
        .ok_or_else(|| SnapshotError::BadEntry {
            path: at.raw.clone(),
            reason: format!("{what} without a target"),
        })
}

/// The device number of a character or block device entry (0 for a FIFO).
fn device_number<R: Read>(entry: &tar::Entry<'_, R>, kind: EntryType, at: &Placed) -> Result<u64> {
    if kind == EntryType::Fifo {
        return Ok(0);
    }
    let h = entry.header();
    let ctx = |source| SnapshotError::Tar {
        context: format!("{}: device number", at.raw.display()),
        source,
    };
    let major = h.device_major().map_err(ctx)?.unwrap_or(0);
    let minor = h.device_minor().map_err(ctx)?.unwrap_or(0);
    Ok(rustix::fs::makedev(major, minor))
}

impl Applier<'_> {
    /// Opens directory `rel` (resolved inside the root; symlinks stay inside). With `create`,
    /// missing components are made (overlay: with the metadata of the same dir in the lower
    /// layers, like a copy-up). `None` when it does not exist and `create` is false.
    fn resolve_dir(&mut self, rel: &Path, create: bool) -> Result<Option<OwnedFd>> {
        match self.open_in_root(rel) {
            Ok(fd) => return Ok(Some(fd)),
            Err(rustix::io::Errno::NOENT) if create => {}
            Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) if !create => {
                return Ok(None)
            }
            Err(e) => return Err(e).ctx("open dir in layer root", self.root.join(rel)),
        }
        // Walk down, creating what is missing.
        let mut prefix = PathBuf::new();
        let mut fd = rustix::io::dup(&self.root_fd).ctx("dup", self.root)?;
        for comp in rel.components() {
            prefix.push(comp);
            match self.open_in_root(&prefix) {
                Ok(next) => {
                    fd = next;
                    continue;
                }
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(e).ctx("open dir in layer root", self.root.join(&prefix)),
            }
            let name = comp.as_os_str();
            let target = proc_path(&fd).join(name);
            std::fs::create_dir(&target).map_err(|source| match source.kind() {
                std::io::ErrorKind::AlreadyExists => SnapshotError::BadEntry {
                    path: prefix.clone(),
                    reason: "a parent directory is a dangling symlink or not a directory".into(),
                },
                _ => SnapshotError::Io {
                    op: "create dir",
                    path: self.root.join(&prefix),
                    source,
                },
            })?;
            if let Whiteouts::Overlay { lowers } = self.mode {
                if let Some(lower) = lookup_in_layers(lowers, &prefix) {
                    let meta = std::fs::symlink_metadata(&lower).ctx("stat", &lower)?;
                    if meta.is_dir() {
                        crate::fsutil::copy_meta(&lower, &target, &meta, true)?;
                        self.dir_times
                            .push((prefix.clone(), (meta.mtime(), meta.mtime_nsec())));
                    }
                }
            }
            fd = self
                .open_in_root(&prefix)
                .ctx("open dir in layer root", self.root.join(&prefix))?;
        }
        Ok(Some(fd))
    }

    fn open_in_root(&self, rel: &Path) -> rustix::io::Result<OwnedFd> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        rustix::fs::openat2(
            &self.root_fd,
            rel,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// Applies one tar entry: skips extension headers, then the layer root's own metadata, a
    /// whiteout or an opaque marker, or a new entry replacing what is there.
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let raw = entry
            .path()
            .map_err(|source| SnapshotError::Tar {
                context: "entry path".into(),
                source,
            })?
            .into_owned();
        let rel = clean(&raw)?;
        let (parent, name) = match (rel.parent(), rel.file_name()) {
            (Some(p), Some(n)) => (p.to_path_buf(), n.to_os_string()),
            // The root itself ("./"): only its metadata can change.
            _ => return self.root_entry(entry, kind, raw),
        };
        let name_b = name.as_bytes();
        if name_b == OPAQUE_MARKER.as_bytes() {
            return self.opaque(&parent);
        }
        if let Some(hidden) = name_b.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            let hidden = OsStr::from_bytes(hidden);
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(SnapshotError::BadEntry {
                    path: raw,
                    reason: "whiteout without a name".into(),
                });
            }
            return self.whiteout(&parent, hidden);
        }
        let dir = self
            .resolve_dir(&parent, true)?
            .ok_or_else(|| SnapshotError::BadEntry {
                path: raw.clone(),
                reason: "parent missing".into(),
            })?;
        let at = Placed {
            target: proc_path(&dir).join(&name),
            full: self.root.join(&rel),
            raw,
            rel,
        };
        self.new_entry(entry, kind, &at)
    }

    /// A directory entry for the layer root: its metadata and mtime.
    fn root_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: EntryType,
        raw: PathBuf,
    ) -> Result<()> {
        if kind != EntryType::Directory {
            return Err(SnapshotError::BadEntry {
                path: raw,
                reason: "a non-directory entry for the root".into(),
            });
        }
        let fd =
            self.resolve_dir(Path::new(""), false)?
                .ok_or_else(|| SnapshotError::BadEntry {
                    path: raw.clone(),
                    reason: "root missing".into(),
                })?;
        let (xattrs, owner) = self.header_meta(entry)?;
        self.set_meta(&proc_path(&fd), owner, &xattrs, false)?;
        self.dir_times.push((PathBuf::new(), (owner.3, 0)));
        Ok(())
    }

    /// Writes the entry at `at.target`, replacing what is there (a directory onto a directory
    /// merges), with its metadata.
    fn new_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: EntryType,
        at: &Placed,
    ) -> Result<()> {
        let (target, full) = (&at.target, &at.full);
        let existing = match std::fs::symlink_metadata(target) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).ctx("stat", full),
        };
        let was_whiteout = existing.as_ref().is_some_and(is_whiteout);
        let existing_dir = existing.as_ref().is_some_and(|m| m.is_dir());
        if existing.is_some() && !(existing_dir && kind == EntryType::Directory) {
            remove_any(target)?;
        }
        self.written.insert(at.rel.clone());
        let (xattrs, owner) = self.header_meta(entry)?;
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(target)
                    .ctx("create", full)?;
                std::io::copy(entry, &mut f).map_err(|source| SnapshotError::Tar {
                    context: format!("{}: read data", at.raw.display()),
                    source,
                })?;
                drop(f);
                self.set_meta(target, owner, &xattrs, false)?;
                set_mtime(target, (owner.3, 0))?;
            }
            EntryType::Directory => {
                if !existing_dir {
                    std::fs::create_dir(target).ctx("create dir", full)?;
                }
                if was_whiteout {
                    // `.wh.d` then `d/` in one layer: the new dir replaces the lower one.
                    if let Whiteouts::Overlay { .. } = self.mode {
                        set_xattr(target, OsStr::new(opaque_xattr()), b"y")?;
                    }
                }
                self.set_meta(target, owner, &xattrs, false)?;
                self.dir_times.push((at.rel.clone(), (owner.3, 0)));
            }
            EntryType::Symlink => {
                let link = link_name(entry, at, "symlink")?;
                std::os::unix::fs::symlink(&link, target).ctx("create symlink", full)?;
                self.set_meta(target, owner, &xattrs, true)?;
                set_mtime(target, (owner.3, 0))?;
            }
            EntryType::Link => {
                let link = link_name(entry, at, "hardlink")?;
                self.hardlink(&clean(&link)?, target, full)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let dev = device_number(entry, kind, at)?;
                let ft = match kind {
                    EntryType::Char => FileType::CharacterDevice,
                    EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let made = rustix::fs::mknodat(
                    CWD,
                    target,
                    ft,
                    Mode::from_raw_mode(owner.2 & 0o7777),
                    dev,
                );
                if made == Err(rustix::io::Errno::PERM)
                    && kind != EntryType::Fifo
                    && crate::fsutil::in_user_namespace()
                {
                    // Rootless: a user namespace may not create device nodes, so a base
                    // image's device is left out, as containerd's layer apply does in a user
                    // namespace (rootless BuildKit, Podman); the rest of the layer applies.
                    self.written.remove(&at.rel);
                    return Ok(());
                }
                made.ctx("mknod", full)?;
                self.set_meta(target, owner, &xattrs, false)?;
                set_mtime(target, (owner.3, 0))?;
            }
            other => {
                self.written.remove(&at.rel);
                return Err(SnapshotError::BadEntry {
                    path: at.raw.clone(),
                    reason: format!("unsupported entry type {other:?}"),
                });
            }
        }
        Ok(())
    }

    /// xattrs (PAX `SCHILY.xattr.*`, overlay-private ones dropped) and (uid, gid, mode, mtime).
    fn header_meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> Result<(Xattrs, Owner)> {
        let mut xattrs = Vec::new();
        let tar_ctx = |source| SnapshotError::Tar {
            context: "pax header".into(),
            source,
        };
        if let Some(exts) = entry.pax_extensions().map_err(tar_ctx)? {
            for ext in exts {
                let ext = ext.map_err(tar_ctx)?;
                let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                    continue;
                };
                if name.starts_with(overlay_xattr_prefix()) {
                    continue;
                }
                xattrs.push((
                    OsStr::from_bytes(name).to_os_string(),
                    ext.value_bytes().to_vec(),
                ));
            }
        }
        let h = entry.header();
        let num = |r: std::io::Result<u64>, what: &str| {
            r.map_err(|source| SnapshotError::Tar {
                context: format!("header {what}"),
                source,
            })
        };
        let uid = u32::try_from(num(h.uid(), "uid")?).unwrap_or(u32::MAX);
        let gid = u32::try_from(num(h.gid(), "gid")?).unwrap_or(u32::MAX);
        let mode = h.mode().map_err(|source| SnapshotError::Tar {
            context: "header mode".into(),
            source,
        })?;
        let mtime = i64::try_from(num(h.mtime(), "mtime")?).unwrap_or(i64::MAX);
        Ok((xattrs, (uid, gid, mode, mtime)))
    }

    /// Owner, xattrs (after chown, which drops `security.capability`), then mode.
    fn set_meta(
        &self,
        target: &Path,
        (uid, gid, mode, mtime): Owner,
        xattrs: &[(OsString, Vec<u8>)],
        symlink: bool,
    ) -> Result<()> {
        rustix::fs::chownat(
            CWD,
            target,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .ctx("chown", target)?;
        for (name, value) in xattrs {
            set_xattr(target, name, value)?;
        }
        let _ = mtime;
        if !symlink {
            rustix::fs::chmodat(
                CWD,
                target,
                Mode::from_raw_mode(mode & 0o7777),
                rustix::fs::AtFlags::empty(),
            )
            .ctx("chmod", target)?;
        }
        Ok(())
    }

    fn hardlink(&mut self, link_rel: &Path, target: &Path, full: &Path) -> Result<()> {
        let (lparent, lname) = match (link_rel.parent(), link_rel.file_name()) {
            (Some(p), Some(n)) => (p.to_path_buf(), n.to_os_string()),
            _ => {
                return Err(SnapshotError::BadEntry {
                    path: full.to_path_buf(),
                    reason: "hardlink to the root".into(),
                })
            }
        };
        if let Some(ldir) = self.resolve_dir(&lparent, false)? {
            let src = proc_path(&ldir).join(&lname);
            match std::fs::symlink_metadata(&src) {
                Ok(m) if !is_whiteout(&m) && !m.is_dir() => {
                    return std::fs::hard_link(&src, target).ctx("hardlink", full);
                }
                Ok(m) if m.is_dir() => {
                    return Err(SnapshotError::BadEntry {
                        path: full.to_path_buf(),
                        reason: "hardlink to a directory".into(),
                    })
                }
                _ => {}
            }
        }
        // Not in this layer: in overlay mode the target lives in a lower dir; copy it up.
        if let Whiteouts::Overlay { lowers } = self.mode {
            if let Some(lower) = lookup_in_layers(lowers, link_rel) {
                let meta = std::fs::symlink_metadata(&lower).ctx("stat", &lower)?;
                if !meta.is_dir() {
                    return copy_entry(&lower, target, &meta, true);
                }
            }
        }
        Err(SnapshotError::BadEntry {
            path: full.to_path_buf(),
            reason: format!("hardlink target {} not found", link_rel.display()),
        })
    }

    fn whiteout(&mut self, parent: &Path, hidden: &OsStr) -> Result<()> {
        match self.mode {
            Whiteouts::Overlay { .. } => {
                let dir =
                    self.resolve_dir(parent, true)?
                        .ok_or_else(|| SnapshotError::BadEntry {
                            path: parent.to_path_buf(),
                            reason: "whiteout parent missing".into(),
                        })?;
                let target = proc_path(&dir).join(hidden);
                remove_any(&target)?;
                let full = self.root.join(parent).join(hidden);
                rustix::fs::mknodat(
                    CWD,
                    &target,
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rustix::fs::makedev(0, 0),
                )
                .ctx("create whiteout", &full)?;
            }
            Whiteouts::Delete => {
                if let Some(dir) = self.resolve_dir(parent, false)? {
                    remove_any(&proc_path(&dir).join(hidden))?;
                }
            }
        }
        Ok(())
    }

    fn opaque(&mut self, dir_rel: &Path) -> Result<()> {
        match self.mode {
            Whiteouts::Overlay { .. } => {
                let dir =
                    self.resolve_dir(dir_rel, true)?
                        .ok_or_else(|| SnapshotError::BadEntry {
                            path: dir_rel.to_path_buf(),
                            reason: "opaque dir missing".into(),
                        })?;
                set_xattr(&proc_path(&dir), OsStr::new(opaque_xattr()), b"y")?;
            }
            Whiteouts::Delete => {
                let Some(dir) = self.resolve_dir(dir_rel, false)? else {
                    return Ok(());
                };
                let p = proc_path(&dir);
                for name in crate::fsutil::sorted_names(&p)? {
                    let child = dir_rel.join(&name);
                    // Keep what this layer wrote: the marker hides lower layers only.
                    let kept = self
                        .written
                        .range(child.clone()..)
                        .next()
                        .is_some_and(|w| w.starts_with(&child));
                    if !kept {
                        remove_any(&p.join(&name))?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(
            clean(Path::new("./a/b/../c")).unwrap(),
            PathBuf::from("a/c")
        );
        assert_eq!(
            clean(Path::new("/etc/passwd")).unwrap(),
            PathBuf::from("etc/passwd")
        );
        assert_eq!(clean(Path::new("./")).unwrap(), PathBuf::new());
        assert!(matches!(
            clean(Path::new("../../etc/x")),
            Err(SnapshotError::PathEscape { .. })
        ));
        assert!(matches!(
            clean(Path::new("a/../../x")),
            Err(SnapshotError::PathEscape { .. })
        ));
    }
}
