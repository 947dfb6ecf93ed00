//! Small filesystem helpers: xattrs, metadata copies, tree copies, recursive removal.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, Timespec, Timestamps, Uid, CWD};

use crate::error::{IoContext, Result};

/// Whether this process runs in a user namespace other than the initial one (rootless mode):
/// overlayfs is then mounted with `userxattr` and keeps its xattrs under `user.overlay.`,
/// since `trusted.*` needs CAP_SYS_ADMIN in the initial namespace.
pub fn in_user_namespace() -> bool {
    static IN_USERNS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *IN_USERNS.get_or_init(|| {
        std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| {
            let fields: Vec<&str> = m.split_whitespace().collect();
            fields != ["0", "0", "4294967295"]
        })
    })
}

/// Prefix of the xattrs overlayfs keeps for itself (whiteouts, opaque dirs, origin, redirect,
/// ...): `trusted.overlay.`, or `user.overlay.` in a user namespace.
pub(crate) fn overlay_xattr_prefix() -> &'static [u8] {
    if in_user_namespace() {
        b"user.overlay."
    } else {
        b"trusted.overlay."
    }
}

/// The xattr that marks an opaque directory in an overlay upper/lower dir
/// (`trusted.overlay.opaque`, or `user.overlay.opaque` in a user namespace).
pub(crate) fn opaque_xattr() -> &'static str {
    if in_user_namespace() {
        "user.overlay.opaque"
    } else {
        "trusted.overlay.opaque"
    }
}

/// `true` for an overlay whiteout: a character device with device number 0:0.
pub(crate) fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// `true` when `dir` carries `trusted.overlay.opaque=y`.
pub(crate) fn is_opaque(dir: &Path) -> bool {
    let mut buf = [0u8; 8];
    matches!(rustix::fs::lgetxattr(dir, opaque_xattr(), &mut buf[..]), Ok(n) if n >= 1 && buf[0] == b'y')
}

/// All xattrs of `path` (not following a final symlink), sorted by name.
pub(crate) fn list_xattrs(path: &Path) -> Result<Vec<(OsString, Vec<u8>)>> {
    let size = match rustix::fs::llistxattr_query(path) {
        Ok(0) => return Ok(Vec::new()),
        Ok(n) => n,
        Err(e) if e == rustix::io::Errno::NOTSUP || e == rustix::io::Errno::PERM => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e).ctx("list xattrs of", path),
    };
    let mut names = vec![0u8; size];
    let n = rustix::fs::llistxattr(path, &mut names[..]).ctx("list xattrs of", path)?;
    names.truncate(n);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = OsStr::from_bytes(name);
        let len = match rustix::fs::lgetxattr_query(path, name) {
            Ok(l) => l,
            // Removed between list and get.
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(e).ctx("read xattr of", path),
        };
        let mut value = vec![0u8; len];
        let got = rustix::fs::lgetxattr(path, name, &mut value[..]).ctx("read xattr of", path)?;
        value.truncate(got);
        out.push((name.to_os_string(), value));
    }
    out.sort();
    Ok(out)
}

/// Sets an xattr on `path` without following a final symlink.
pub(crate) fn set_xattr(path: &Path, name: &OsStr, value: &[u8]) -> Result<()> {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .ctx("set xattr on", path)
}

/// Sets atime and mtime of `path` (not following a final symlink).
pub(crate) fn set_mtime(path: &Path, (sec, nsec): (i64, i64)) -> Result<()> {
    let ts = Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    };
    let times = Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).ctx("set times of", path)
}

/// Removes whatever is at `path` (recursively for directories); a missing path is fine.
pub(crate) fn remove_any(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx("stat", path),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).ctx("remove dir", path),
        Ok(_) => std::fs::remove_file(path).ctx("remove", path),
    }
}

/// Copies one non-directory entry (file, symlink, device, fifo, socket) with its metadata and xattrs.
/// `skip_overlay_xattrs` drops `trusted.overlay.*`.
pub(crate) fn copy_entry(
    src: &Path,
    dst: &Path,
    meta: &Metadata,
    skip_overlay_xattrs: bool,
) -> Result<()> {
    let ft = meta.file_type();
    if ft.is_file() {
        std::fs::copy(src, dst).map_err(|source| crate::SnapshotError::Io {
            op: "copy file to",
            path: dst.to_path_buf(),
            source,
        })?;
    } else if ft.is_symlink() {
        let target = std::fs::read_link(src).ctx("read link", src)?;
        std::os::unix::fs::symlink(&target, dst).ctx("create symlink", dst)?;
    } else {
        let kind = if ft.is_char_device() {
            FileType::CharacterDevice
        } else if ft.is_block_device() {
            FileType::BlockDevice
        } else if ft.is_fifo() {
            FileType::Fifo
        } else {
            FileType::Socket
        };
        rustix::fs::mknodat(
            CWD,
            dst,
            kind,
            Mode::from_raw_mode(meta.mode() & 0o7777),
            meta.rdev(),
        )
        .ctx("mknod", dst)?;
    }
    copy_meta(src, dst, meta, skip_overlay_xattrs)
}

/// Copies xattrs, owner, mode and times from `src` (whose metadata is `meta`) to `dst`.
pub(crate) fn copy_meta(
    src: &Path,
    dst: &Path,
    meta: &Metadata,
    skip_overlay_xattrs: bool,
) -> Result<()> {
    let symlink = meta.file_type().is_symlink();
    rustix::fs::chownat(
        CWD,
        dst,
        Some(Uid::from_raw(meta.uid())),
        Some(Gid::from_raw(meta.gid())),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .ctx("chown", dst)?;
    for (name, value) in list_xattrs(src)? {
        if skip_overlay_xattrs && name.as_bytes().starts_with(overlay_xattr_prefix()) {
            continue;
        }
        set_xattr(dst, &name, &value)?;
    }
    if !symlink {
        rustix::fs::chmodat(
            CWD,
            dst,
            Mode::from_raw_mode(meta.mode() & 0o7777),
            AtFlags::empty(),
        )
        .ctx("chmod", dst)?;
    }
    set_mtime(dst, (meta.mtime(), meta.mtime_nsec()))
}

/// Copies the tree `src` into the existing directory `dst`, preserving hardlinks, owners, modes,
/// mtimes, xattrs, symlinks and special files. Symlinks are never followed.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let mut links = HashMap::new();
    let mut dirs = Vec::new();
    copy_dir_contents(src, dst, &mut links, &mut dirs)?;
    let meta = std::fs::symlink_metadata(src).ctx("stat", src)?;
    dirs.push((src.to_path_buf(), dst.to_path_buf(), meta));
    // Directory metadata last (children change mtimes), deepest first.
    for (s, d, m) in dirs {
        copy_meta(&s, &d, &m, false)?;
    }
    Ok(())
}

fn copy_dir_contents(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
    dirs: &mut Vec<(PathBuf, PathBuf, Metadata)>,
) -> Result<()> {
    for name in sorted_names(src)? {
        let s = src.join(&name);
        let d = dst.join(&name);
        let meta = std::fs::symlink_metadata(&s).ctx("stat", &s)?;
        if meta.is_dir() {
            std::fs::create_dir(&d).ctx("create dir", &d)?;
            copy_dir_contents(&s, &d, links, dirs)?;
            dirs.push((s, d, meta));
            continue;
        }
        if meta.nlink() > 1 {
            if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                std::fs::hard_link(first, &d).ctx("hardlink", &d)?;
                continue;
            }
            links.insert((meta.dev(), meta.ino()), d.clone());
        }
        copy_entry(&s, &d, &meta, false)?;
    }
    Ok(())
}

/// The entry names of `dir`, sorted bytewise.
pub(crate) fn sorted_names(dir: &Path) -> Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).ctx("read dir", dir)? {
        names.push(entry.ctx("read dir", dir)?.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// Finds `rel` in an overlay stack of `layers` (top-most first) the way overlayfs would: a
/// whiteout hides it, a non-directory ancestor hides it, an opaque ancestor hides lower layers.
/// Returns the path of the visible entry in the layer that provides it.
pub(crate) fn lookup_in_layers(layers: &[PathBuf], rel: &Path) -> Option<PathBuf> {
    let comps: Vec<_> = rel.components().collect();
    if comps.is_empty() {
        return layers.first().cloned();
    }
    for layer in layers {
        let mut p = layer.clone();
        let mut opaque_above = false;
        for (i, comp) in comps.iter().enumerate() {
            p.push(comp);
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                break;
            };
            if is_whiteout(&meta) {
                return None;
            }
            if i + 1 == comps.len() {
                return Some(p);
            }
            if !meta.is_dir() {
                return None;
            }
            if is_opaque(&p) {
                opaque_above = true;
            }
        }
        if opaque_above {
            return None;
        }
    }
    None
}

/// Bytes of `a` and `b` are equal (both regular files).
pub(crate) fn same_content(a: &Path, b: &Path) -> Result<bool> {
    use std::io::Read;
    let mut fa = std::fs::File::open(a).ctx("open", a)?;
    let mut fb = std::fs::File::open(b).ctx("open", b)?;
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let na = read_full(&mut fa, &mut ba).ctx("read", a)?;
        let nb = read_full(&mut fb, &mut bb).ctx("read", b)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
    fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        Ok(n)
    }
}

/// Writes `data` to `path` atomically (temp file in the same dir, fsync, rename).
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = OsString::from(".tmp-");
    tmp_name.push(path.file_name().unwrap_or(OsStr::new("file")));
    tmp_name.push(format!("-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let mut f = std::fs::File::create(&tmp).ctx("create", &tmp)?;
    f.write_all(data).ctx("write", &tmp)?;
    f.sync_all().ctx("fsync", &tmp)?;
    drop(f);
    std::fs::rename(&tmp, path).ctx("rename into place", path)?;
    Ok(())
}
