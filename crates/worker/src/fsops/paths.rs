//! Paths inside a mounted root: resolving a path the way the kernel would with the root as `/`
//! (symlinks included) without ever leaving the root, and `mkdir -p` built on that resolution.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Resolves `path` (absolute inside the root) to a host path under `root`, following symlinks
/// as the kernel would if `root` were `/`, so a link can never lead outside `root`.
pub fn resolve_in_root(root: &Path, path: &str, follow_last: bool) -> io::Result<PathBuf> {
    resolve_parts_in_root(root, components(path), follow_last)
}

/// [`resolve_in_root`] for a path given as its normal and `..` components (names need not be
/// UTF-8): `..` climbs from what is resolved so far and stops at `root`, like `/..` does.
pub(super) fn resolve_parts_in_root(
    root: &Path,
    parts: Vec<OsString>,
    follow_last: bool,
) -> io::Result<PathBuf> {
    let mut resolved = PathBuf::new();
    let shown = Path::new("/").join(parts.iter().collect::<PathBuf>());
    let mut pending: Vec<OsString> = parts.into_iter().rev().collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let host = root.join(&candidate);
        let is_last = pending.is_empty();
        match fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() && (!is_last || follow_last) => {
                links += 1;
                if links > 40 {
                    return Err(io::Error::other(format!(
                        "too many levels of symbolic links in {}",
                        shown.display()
                    )));
                }
                let target = fs::read_link(&host)?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for c in path_components(&target).into_iter().rev() {
                    pending.push(c);
                }
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

/// The normal and `..` components of `path` (root and `.` dropped).
pub(super) fn components(path: &str) -> Vec<OsString> {
    path_components(Path::new(path))
}

/// [`components`] of a path that need not be UTF-8.
fn path_components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// mkdir -p of `path` inside `root`; created directories get `owner` (default 0:0) and `mode`.
pub fn mkdir_all(root: &Path, path: &str, owner: Option<(u32, u32)>, mode: u32) -> io::Result<()> {
    let mut current = String::new();
    for part in components(path) {
        current.push('/');
        current.push_str(&part.to_string_lossy());
        let host = resolve_in_root(root, &current, true)?;
        match fs::metadata(&host) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "cannot create directory {current}: a file is in the way"
                )))
            }
            Err(_) => {
                fs::create_dir(&host)?;
                fs::set_permissions(&host, fs::Permissions::from_mode(mode))?;
                let (uid, gid) = owner.unwrap_or((0, 0));
                std::os::unix::fs::lchown(&host, Some(uid), Some(gid))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_stay_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("real/sub")).unwrap();
        symlink("/real", root.join("abs")).unwrap();
        symlink("../../../../real", root.join("rel")).unwrap();
        assert_eq!(
            resolve_in_root(root, "/abs/sub", true).unwrap(),
            root.join("real/sub")
        );
        assert_eq!(
            resolve_in_root(root, "/rel/sub", true).unwrap(),
            root.join("real/sub")
        );
        assert_eq!(
            resolve_in_root(root, "/../../etc", true).unwrap(),
            root.join("etc")
        );
        assert_eq!(
            resolve_in_root(root, "/abs", false).unwrap(),
            root.join("abs")
        );
    }

    #[test]
    fn dotdot_after_a_symlink_climbs_from_its_target_and_loops_stop() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("real/sub")).unwrap();
        symlink("/real/sub", root.join("a")).unwrap();
        // As the kernel does: `a/..` is the parent of a's target, not the root.
        assert_eq!(
            resolve_in_root(root, "/a/../x", true).unwrap(),
            root.join("real/x")
        );
        // Names that are not UTF-8 are resolved as they are.
        let odd = OsString::from(std::ffi::OsStr::from_bytes(b"n\xff"));
        assert_eq!(
            resolve_parts_in_root(root, vec!["a".into(), odd.clone()], true).unwrap(),
            root.join("real/sub").join(&odd)
        );
        symlink("/loop2", root.join("loop1")).unwrap();
        symlink("/loop1", root.join("loop2")).unwrap();
        let err = resolve_in_root(root, "/loop1/x", true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "too many levels of symbolic links in /loop1/x"
        );
    }
}
