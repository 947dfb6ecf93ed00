//! File operations done by rbuild itself inside a mounted rootfs: resolving paths without escaping
//! the root, COPY/ADD with Docker's source and destination rules, archive extraction, mkdir.

use rbuild_llb::{CopyAction, MkdirAction};
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Resolves `path` (absolute inside the root) to a host path under `root`, following symlinks
/// as the kernel would if `root` were `/`, so a link can never lead outside `root`.
pub fn resolve_in_root(root: &Path, path: &str, follow_last: bool) -> io::Result<PathBuf> {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<OsString> = components(path).into_iter().rev().collect();
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
                        "too many levels of symbolic links in {path}"
                    )));
                }
                let target = fs::read_link(&host)?;
                let target_str = target.to_string_lossy().to_string();
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for c in components(&target_str).into_iter().rev() {
                    pending.push(c);
                }
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

fn components(path: &str) -> Vec<OsString> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// True when `s` holds glob characters.
pub fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Matches one path component against a glob (`*`, `?`, `[...]`, `\` escapes).
pub fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pattern[1..], name) || (!name.is_empty() && glob_match(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob_match(&pattern[1..], &name[1..]),
        (Some(b'['), Some(&c)) => {
            let Some(end) = pattern
                .iter()
                .skip(1)
                .position(|&b| b == b']')
                .map(|p| p + 1)
            else {
                return name.first() == Some(&b'[') && glob_match(&pattern[1..], &name[1..]);
            };
            let class = &pattern[1..end];
            let (negate, class) = match class.first() {
                Some(b'^') | Some(b'!') => (true, &class[1..]),
                _ => (false, class),
            };
            let mut matched = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    matched |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    matched |= class[i] == c;
                    i += 1;
                }
            }
            matched != negate && glob_match(&pattern[end + 1..], &name[1..])
        }
        (Some(b'\\'), Some(&c)) if pattern.len() > 1 => {
            pattern[1] == c && glob_match(&pattern[2..], &name[1..])
        }
        (Some(&p), Some(&c)) => p == c && glob_match(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// Expands a source pattern relative to `root` into matching paths (relative, sorted).
pub fn expand_sources(
    root: &Path,
    pattern: &str,
    allow_wildcard: bool,
) -> io::Result<Vec<PathBuf>> {
    let parts = components(pattern);
    if !allow_wildcard || !has_wildcard(pattern) {
        let mut rel = PathBuf::new();
        for p in parts {
            if p == ".." {
                rel.pop();
            } else {
                rel.push(p);
            }
        }
        return Ok(vec![rel]);
    }
    let mut current = vec![PathBuf::new()];
    for part in parts {
        let mut next = Vec::new();
        let part_str = part.to_string_lossy().to_string();
        for base in &current {
            if part_str == ".." {
                let mut b = base.clone();
                b.pop();
                next.push(b);
            } else if has_wildcard(&part_str) {
                let dir = resolve_in_root(root, &base.to_string_lossy(), true)?;
                let Ok(entries) = fs::read_dir(&dir) else {
                    continue;
                };
                let mut names: Vec<OsString> = entries
                    .filter_map(|e| e.ok().map(|e| e.file_name()))
                    .collect();
                names.sort();
                for name in names {
                    if glob_match(part_str.as_bytes(), name.as_bytes()) {
                        next.push(base.join(name));
                    }
                }
            } else {
                next.push(base.join(&part));
            }
        }
        current = next;
    }
    Ok(current)
}

/// Settings for one copy.
pub struct CopySettings {
    /// Owner for every created entry; None keeps the source's (or 0:0 for the build context).
    pub owner: Option<(u32, u32)>,
    /// Reset ownership to 0:0 (sources from the build context).
    pub reset_owner: bool,
    /// Mode override.
    pub mode: Option<u32>,
    /// `.dockerignore` of the build context (paths relative to the source root).
    pub exclude: Option<crate::dockerignore::Matcher>,
}

impl CopySettings {
    fn skip(&self, rel: &Path) -> bool {
        self.exclude
            .as_ref()
            .is_some_and(|m| m.excluded(&rel.to_string_lossy()))
    }

    fn walk_excluded(&self) -> bool {
        self.exclude.as_ref().is_some_and(|m| m.has_exceptions())
    }
}

/// Performs one COPY/ADD action from `src_root` into `dest_root` (both host paths of mounted trees).
pub fn copy_action(
    src_root: &Path,
    dest_root: &Path,
    action: &CopyAction,
    settings: &CopySettings,
) -> io::Result<()> {
    let sources = expand_sources(src_root, &action.src, action.allow_wildcard)?;
    let wildcard = action.allow_wildcard && has_wildcard(&action.src);
    let mut existing = Vec::new();
    for rel in sources {
        let host = resolve_in_root(src_root, &rel.to_string_lossy(), action.follow_symlinks)?;
        let excluded = !rel.as_os_str().is_empty() && settings.skip(&rel);
        if excluded && wildcard {
            continue;
        }
        if fs::symlink_metadata(&host).is_ok() && !excluded {
            existing.push((rel, host));
        } else if !wildcard {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("\"/{}\": not found", rel.display()),
            ));
        }
    }
    if existing.is_empty() {
        if action.allow_empty_wildcard {
            return Ok(());
        }
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no source files were specified: \"{}\" matched nothing",
                action.src
            ),
        ));
    }
    let dest_slash = action.dest.ends_with('/');
    let dest_host = resolve_in_root(dest_root, &action.dest, true)?;
    let dest_is_dir = dest_slash || existing.len() > 1 || wildcard || dest_host.is_dir();
    let parent_owner = settings.owner;
    for (rel, host) in existing {
        let meta = fs::symlink_metadata(&host)?;
        if meta.is_dir() {
            mkdir_all(dest_root, &action.dest, parent_owner, 0o755)?;
            let target = resolve_in_root(dest_root, &action.dest, true)?;
            copy_dir_contents(&host, &target, settings, &rel)?;
        } else if action.attempt_unpack
            && meta.is_file()
            && try_unpack(&host, dest_root, &action.dest, parent_owner)?
        {
            continue;
        } else {
            let target = if dest_is_dir {
                mkdir_all(dest_root, &action.dest, parent_owner, 0o755)?;
                let name = rel
                    .file_name()
                    .map(|n| n.to_os_string())
                    .unwrap_or_else(|| OsString::from("."));
                resolve_in_root(dest_root, &action.dest, true)?.join(name)
            } else {
                if let Some(parent) = Path::new(action.dest.trim_end_matches('/')).parent() {
                    mkdir_all(dest_root, &parent.to_string_lossy(), parent_owner, 0o755)?;
                }
                dest_host.clone()
            };
            copy_entry(&host, &target, &meta, settings, &rel)?;
        }
    }
    Ok(())
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

/// The WORKDIR / mkdir action.
pub fn mkdir_action(
    root: &Path,
    action: &MkdirAction,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    mkdir_all(root, &action.path, owner, action.mode)
}

fn copy_dir_contents(
    src: &Path,
    dest: &Path,
    settings: &CopySettings,
    rel: &Path,
) -> io::Result<()> {
    let mut names: Vec<OsString> = fs::read_dir(src)?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    for name in names {
        let s = src.join(&name);
        let child_rel = rel.join(&name);
        let meta = fs::symlink_metadata(&s)?;
        if settings.skip(&child_rel) && !(meta.is_dir() && settings.walk_excluded()) {
            continue;
        }
        copy_entry(&s, &dest.join(&name), &meta, settings, &child_rel)?;
    }
    Ok(())
}

fn copy_entry(
    src: &Path,
    dest: &Path,
    meta: &fs::Metadata,
    settings: &CopySettings,
    rel: &Path,
) -> io::Result<()> {
    let (uid, gid) = match settings.owner {
        Some(o) => o,
        None if settings.reset_owner => (0, 0),
        None => (meta.uid(), meta.gid()),
    };
    let mode = settings.mode.unwrap_or(meta.mode() & 0o7777);
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
        copy_dir_contents(src, dest, settings, rel)?;
        if created || settings.mode.is_some() || settings.owner.is_some() {
            std::os::unix::fs::lchown(dest, Some(uid), Some(gid))?;
            fs::set_permissions(dest, fs::Permissions::from_mode(mode))?;
        }
        set_mtime(dest, meta)?;
        return Ok(());
    }
    if let Ok(existing) = fs::symlink_metadata(dest) {
        if existing.is_dir() {
            fs::remove_dir_all(dest)?;
        } else {
            fs::remove_file(dest)?;
        }
    }
    if ft.is_symlink() {
        let target = fs::read_link(src)?;
        symlink(&target, dest)?;
        std::os::unix::fs::lchown(dest, Some(uid), Some(gid))?;
    } else if ft.is_file() {
        let mut input = fs::File::open(src)?;
        let mut output = fs::File::create(dest)?;
        io::copy(&mut input, &mut output)?;
        drop(output);
        std::os::unix::fs::lchown(dest, Some(uid), Some(gid))?;
        fs::set_permissions(dest, fs::Permissions::from_mode(mode))?;
    } else {
        // Devices, fifos and sockets: recreate the node.
        let path = std::ffi::CString::new(dest.as_os_str().as_bytes()).map_err(io::Error::other)?;
        // SAFETY: mknod with a valid NUL-terminated path and plain integers.
        let rc = unsafe { libc::mknod(path.as_ptr(), meta.mode(), meta.rdev()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        std::os::unix::fs::lchown(dest, Some(uid), Some(gid))?;
    }
    set_mtime(dest, meta)
}

fn set_mtime(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let times = [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ];
    // SAFETY: valid path and a two-element timespec array as utimensat requires.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The archive formats ADD extracts.
#[derive(Debug, PartialEq, Eq)]
enum ArchiveKind {
    Tar,
    Gzip,
}

fn archive_kind(path: &Path) -> io::Result<Option<ArchiveKind>> {
    let mut header = [0u8; 512];
    let mut file = fs::File::open(path)?;
    let mut n = 0;
    while n < header.len() {
        let r = file.read(&mut header[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    if n >= 2 && header[0] == 0x1f && header[1] == 0x8b {
        // Only a gzip that holds a tar counts as an archive.
        let mut decoder = flate2::read::GzDecoder::new(fs::File::open(path)?);
        let mut inner = [0u8; 512];
        let mut m = 0;
        while m < inner.len() {
            match decoder.read(&mut inner[m..]) {
                Ok(0) => break,
                Ok(r) => m += r,
                Err(_) => return Ok(None),
            }
        }
        return Ok((m >= 262 && &inner[257..262] == b"ustar").then_some(ArchiveKind::Gzip));
    }
    Ok((n >= 262 && &header[257..262] == b"ustar").then_some(ArchiveKind::Tar))
}

fn try_unpack(
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
    let file = fs::File::open(src)?;
    let reader: Box<dyn Read> = match kind {
        ArchiveKind::Tar => Box::new(io::BufReader::new(file)),
        ArchiveKind::Gzip => Box::new(flate2::read::GzDecoder::new(io::BufReader::new(file))),
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(true);
    archive.unpack(&target)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn globs() {
        assert!(glob_match(b"*.txt", b"a.txt"));
        assert!(!glob_match(b"*.txt", b"a.tx"));
        assert!(glob_match(b"f?le[0-9]", b"file7"));
        assert!(!glob_match(b"[!a]x", b"ax"));
    }

    #[test]
    fn copy_rules() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("dir/inner")).unwrap();
        fs::write(src.path().join("dir/inner/f"), "x").unwrap();
        fs::write(src.path().join("a.txt"), "a").unwrap();
        fs::write(src.path().join("b.txt"), "b").unwrap();
        let settings = CopySettings {
            owner: None,
            reset_owner: true,
            mode: None,
            exclude: None,
        };
        let action = |s: &str, d: &str| CopyAction {
            src_input: 1,
            src: s.into(),
            dest: d.into(),
            owner: None,
            mode: None,
            follow_symlinks: true,
            dir_copy_contents: true,
            attempt_unpack: false,
            create_dest_path: true,
            allow_wildcard: true,
            allow_empty_wildcard: false,
        };
        copy_action(src.path(), dst.path(), &action("dir", "/x"), &settings).unwrap();
        assert!(dst.path().join("x/inner/f").is_file());
        copy_action(src.path(), dst.path(), &action("*.txt", "/t"), &settings).unwrap();
        assert!(dst.path().join("t/a.txt").is_file() && dst.path().join("t/b.txt").is_file());
        copy_action(
            src.path(),
            dst.path(),
            &action("a.txt", "/renamed"),
            &settings,
        )
        .unwrap();
        assert_eq!(fs::read_to_string(dst.path().join("renamed")).unwrap(), "a");
        copy_action(src.path(), dst.path(), &action("a.txt", "/x"), &settings).unwrap();
        assert!(dst.path().join("x/a.txt").is_file());
        let err =
            copy_action(src.path(), dst.path(), &action("missing", "/y"), &settings).unwrap_err();
        assert!(err.to_string().contains("/missing"));
    }
}
