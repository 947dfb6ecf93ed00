//! Overlay mounts, unmounting, `/proc/self/mountinfo` parsing and [`MountGuard`].

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::mount::{
    fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount, unmount,
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};

use crate::error::{Result, SnapshotError};

/// Largest option string `mount(2)` accepts (one page).
const MOUNT_DATA_MAX: usize = 4095;

/// Mounts overlayfs at `target`.
///
/// `lowerdirs` are listed top-most first and must not be empty. With `upperdir` and `workdir` empty
/// paths (`Path::new("")`) the mount has no upper layer and is read-only. Uses the new mount API with
/// one `lowerdir+` per layer (no option-length limit), falling back to `lowerdir=a:b:c` through
/// `fsconfig` and then `mount(2)` on kernels without `lowerdir+` (before 6.8). A writable mount
/// made through `fsconfig` is `volatile` (no syncs; the work dir must be emptied before it is
/// mounted again, as [`crate::Snapshotter::commit`] does).
pub fn mount_overlay(
    lowerdirs: &[PathBuf],
    upperdir: &Path,
    workdir: &Path,
    target: &Path,
    readonly: bool,
) -> Result<(), SnapshotError> {
    let err = |source: std::io::Error| SnapshotError::MountOverlay {
        target: target.to_path_buf(),
        source,
    };
    if lowerdirs.is_empty() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no lower directories",
        )));
    }
    let has_upper = !upperdir.as_os_str().is_empty();
    let spec = Overlay {
        lowerdirs,
        upperdir,
        workdir,
        target,
        readonly,
        has_upper,
    };
    match mount_overlay_fsopen(&spec, true) {
        Ok(()) => return Ok(()),
        // ENOSYS: no new mount API; EINVAL: most likely no `lowerdir+` (kernel < 6.8).
        Err(e)
            if e.raw_os_error() == Some(libc::ENOSYS) || e.raw_os_error() == Some(libc::EINVAL) => {
        }
        Err(e) => return Err(err(e)),
    }
    let joined = join_lowerdirs(lowerdirs);
    if mount_overlay_fsopen(&spec, false).is_ok() {
        return Ok(());
    }
    let mut data = format!("lowerdir={joined}");
    if crate::fsutil::in_user_namespace() {
        data.push_str(",userxattr");
    }
    if has_upper {
        data.push_str(&format!(
            ",upperdir={},workdir={}",
            escape_option(&upperdir.to_string_lossy()),
            escape_option(&workdir.to_string_lossy())
        ));
        data.push_str(",index=off,metacopy=off");
        if !crate::fsutil::in_user_namespace() {
            data.push_str(",redirect_dir=off");
        }
    }
    if data.len() > MOUNT_DATA_MAX {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} lower directories need {} bytes of mount options (max {MOUNT_DATA_MAX})",
                lowerdirs.len(),
                data.len()
            ),
        )));
    }
    let flags = if readonly {
        MountFlags::RDONLY
    } else {
        MountFlags::empty()
    };
    let data = std::ffi::CString::new(data)
        .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    rustix::mount::mount("overlay", target, "overlay", flags, Some(data.as_c_str()))
        .map_err(|e| err(e.into()))
}

/// An overlay mount as [`mount_overlay`] was asked for it.
struct Overlay<'a> {
    lowerdirs: &'a [PathBuf],
    upperdir: &'a Path,
    workdir: &'a Path,
    target: &'a Path,
    readonly: bool,
    has_upper: bool,
}

/// One attempt through `fsopen`/`fsconfig`/`fsmount`/`move_mount`, with one `lowerdir+` per
/// layer or (`lowerdir_plus` false) one `lowerdir=a:b:c`.
fn mount_overlay_fsopen(spec: &Overlay<'_>, lowerdir_plus: bool) -> std::io::Result<()> {
    let Overlay {
        lowerdirs,
        upperdir,
        workdir,
        target,
        readonly,
        has_upper,
    } = *spec;
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    // In a user namespace (rootless) overlayfs keeps its xattrs under `user.overlay.`.
    if crate::fsutil::in_user_namespace() {
        fsconfig_set_flag(&fs, "userxattr")?;
    }
    if lowerdir_plus {
        for dir in lowerdirs {
            fsconfig_set_string(&fs, "lowerdir+", dir.as_path())?;
        }
    } else {
        fsconfig_set_string(&fs, "lowerdir", join_lowerdirs(lowerdirs).as_str())?;
    }
    if has_upper {
        fsconfig_set_string(&fs, "upperdir", upperdir)?;
        fsconfig_set_string(&fs, "workdir", workdir)?;
        // Diffs read the upper dir directly: no redirects, no metadata-only copy-ups, no index.
        // Best effort: these are the defaults on most kernels anyway.
        // With `userxattr` the kernel refuses `redirect_dir=off` but already implies `nofollow`
        // (no redirects created or followed).
        for key in ["redirect_dir", "index", "metacopy"] {
            if key == "redirect_dir" && crate::fsutil::in_user_namespace() {
                continue;
            }
            let _ = fsconfig_set_string(&fs, key, "off");
        }
        // No syncs: unmounting a writable overlay otherwise runs `syncfs` on the upper
        // filesystem (every process's dirty pages), and each copy-up fsyncs. Durability is the
        // snapshotter's business (its commit). Best effort: `volatile` needs Linux 5.10.
        let _ = fsconfig_set_flag(&fs, "volatile");
    }
    if readonly {
        fsconfig_set_flag(&fs, "ro")?;
    }
    fsconfig_create(&fs)?;
    let attrs = if readonly {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    } else {
        MountAttrFlags::empty()
    };
    let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)?;
    move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

/// `a:b:c` with `:` `,` and `\` escaped as overlayfs expects.
fn join_lowerdirs(lowerdirs: &[PathBuf]) -> String {
    lowerdirs
        .iter()
        .map(|d| escape_option(&d.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(":")
}

fn escape_option(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ':' | ',' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Lazily detaches the mount at `target` (`umount2(MNT_DETACH)`).
pub(crate) fn unmount_detach(target: &Path) -> Result<()> {
    unmount(target, UnmountFlags::DETACH).map_err(|e| SnapshotError::Unmount {
        target: target.to_path_buf(),
        source: e.into(),
    })
}

/// Mount points at or below `root` in this mount namespace, deepest first.
pub(crate) fn mounts_under(root: &Path) -> Result<Vec<PathBuf>> {
    let info = std::fs::read("/proc/self/mountinfo").map_err(|source| SnapshotError::Io {
        op: "read",
        path: PathBuf::from("/proc/self/mountinfo"),
        source,
    })?;
    let mut found: Vec<PathBuf> = parse_mountinfo_targets(&info)
        .into_iter()
        .filter(|p| p.starts_with(root))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    Ok(found)
}

/// The mount point (5th field, octal escapes decoded) of each line of a mountinfo file.
pub(crate) fn parse_mountinfo_targets(info: &[u8]) -> Vec<PathBuf> {
    info.split(|b| *b == b'\n')
        .filter_map(|line| line.split(|b| *b == b' ').nth(4))
        .map(|field| PathBuf::from(OsString::from_vec(unescape_octal(field))))
        .collect()
}

fn unescape_octal(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 4 <= field.len() {
            let digits = &field[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(b) = u8::try_from(v) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// A mounted (or, for the copy backend, merely borrowed) directory.
///
/// Dropping it detaches the mount (`MNT_DETACH`) and removes the mount-point directory; a guard
/// of the copy backend only releases its hold on the active snapshot.
#[derive(Debug)]
pub struct MountGuard {
    path: PathBuf,
    mounted: bool,
    /// Keeps an [`crate::Active`] from being committed while this guard is alive.
    _hold: Option<Arc<()>>,
}

impl MountGuard {
    pub(crate) fn mounted(path: PathBuf, hold: Option<Arc<()>>) -> MountGuard {
        MountGuard {
            path,
            mounted: true,
            _hold: hold,
        }
    }

    pub(crate) fn plain(path: PathBuf, hold: Option<Arc<()>>) -> MountGuard {
        MountGuard {
            path,
            mounted: false,
            _hold: hold,
        }
    }

    /// The directory where the snapshot's tree is visible.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.mounted {
            // Best effort: a failure leaves a mount that the next `Snapshotter::open` repairs.
            let _ = unmount_detach(&self.path);
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_targets_are_unescaped() {
        let info =
            b"36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
                     37 35 0:5 / /proc rw - proc proc rw\n";
        let t = parse_mountinfo_targets(info);
        assert_eq!(
            t,
            vec![PathBuf::from("/mnt/with space"), PathBuf::from("/proc")]
        );
    }

    #[test]
    fn lowerdir_escaping() {
        let s = join_lowerdirs(&[PathBuf::from("/a:b"), PathBuf::from("/c,d")]);
        assert_eq!(s, "/a\\:b:/c\\,d");
    }
}
