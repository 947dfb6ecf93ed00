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

/// A parsed symbolic mode (`u+x,g-w,o=r`, `a=rX`, `go=u`) as chmod(1) and BSD setmode(3) read
/// it, without a umask (BuildKit applies none); applied to each copied entry's own mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolicMode {
    clauses: Vec<ModeClause>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ModeClause {
    /// The bits the `who` part selects (u = 0o4700, g = 0o2070, o = 0o1007; none or `a` = all).
    who: u32,
    actions: Vec<(u8, ModePerm)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ModePerm {
    /// Some of `rwxXst`.
    Bits(Vec<u8>),
    /// Another class's current bits: `u`, `g` or `o`.
    Copy(u8),
}

impl SymbolicMode {
    /// Parses a comma-separated list of `[ugoa]*([-+=]([rwxXst]*|[ugo]))+` clauses.
    pub fn parse(s: &str) -> Result<SymbolicMode, String> {
        let bad = || format!("invalid chmod parameter: {s}");
        let mut clauses = Vec::new();
        for clause in s.split(',') {
            let b = clause.as_bytes();
            let mut i = 0;
            let mut who = 0;
            while i < b.len() && matches!(b[i], b'u' | b'g' | b'o' | b'a') {
                who |= match b[i] {
                    b'u' => 0o4700,
                    b'g' => 0o2070,
                    b'o' => 0o1007,
                    _ => 0o7777,
                };
                i += 1;
            }
            if who == 0 {
                who = 0o7777;
            }
            if i >= b.len() {
                return Err(bad());
            }
            let mut actions = Vec::new();
            while i < b.len() {
                let op = b[i];
                if !matches!(op, b'+' | b'-' | b'=') {
                    return Err(bad());
                }
                i += 1;
                if i < b.len() && matches!(b[i], b'u' | b'g' | b'o') {
                    actions.push((op, ModePerm::Copy(b[i])));
                    i += 1;
                    continue;
                }
                let start = i;
                while i < b.len() && matches!(b[i], b'r' | b'w' | b'x' | b'X' | b's' | b't') {
                    i += 1;
                }
                actions.push((op, ModePerm::Bits(b[start..i].to_vec())));
            }
            clauses.push(ModeClause { who, actions });
        }
        Ok(SymbolicMode { clauses })
    }

    /// The new mode of an entry whose mode is `mode` (`X` needs `is_dir` or an existing x bit).
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let mut mode = mode & 0o7777;
        for c in &self.clauses {
            for (op, perm) in &c.actions {
                let bits = match perm {
                    ModePerm::Copy(from) => {
                        let v = match from {
                            b'u' => (mode >> 6) & 7,
                            b'g' => (mode >> 3) & 7,
                            _ => mode & 7,
                        };
                        v * 0o111
                    }
                    ModePerm::Bits(set) => set.iter().fold(0, |acc, ch| {
                        acc | match ch {
                            b'r' => 0o444,
                            b'w' => 0o222,
                            b'x' => 0o111,
                            b'X' if is_dir || mode & 0o111 != 0 => 0o111,
                            b's' => 0o6000,
                            b't' => 0o1000,
                            _ => 0,
                        }
                    }),
                };
                let affected = bits & c.who;
                mode = match op {
                    b'+' => mode | affected,
                    b'-' => mode & !affected,
                    _ => {
                        // `=` resets the class; directories keep set-id bits unless named (as chmod).
                        let clear = c.who & if is_dir { 0o1777 } else { 0o7777 };
                        (mode & !clear) | affected
                    }
                };
            }
        }
        mode
    }
}

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
    pub exclude: Option<crate::dockerignore::Matcher>,
    /// `--exclude` patterns, matched against paths relative to each source (a file source: its name).
    pub source_exclude: Option<crate::dockerignore::Matcher>,
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
    fn skip(&self, rel: &Path, srel: &Path, is_dir: bool) -> bool {
        let hit = |m: &Option<crate::dockerignore::Matcher>, p: &Path| {
            m.as_ref().is_some_and(|m| {
                m.excluded(&p.to_string_lossy()) && !(is_dir && m.has_exceptions())
            })
        };
        hit(&self.exclude, rel) || hit(&self.source_exclude, srel)
    }

    fn ignored(&self, rel: &Path) -> bool {
        self.exclude
            .as_ref()
            .is_some_and(|m| m.excluded(&rel.to_string_lossy()))
    }

    fn source_excluded(&self, name: &Path) -> bool {
        self.source_exclude
            .as_ref()
            .is_some_and(|m| m.excluded(&name.to_string_lossy()))
    }

    fn mode_for(&self, meta: &fs::Metadata) -> u32 {
        match (&self.symbolic, self.mode) {
            (Some(s), _) => s.apply(meta.mode(), meta.is_dir()),
            (None, Some(m)) => m,
            (None, None) => meta.mode() & 0o7777,
        }
    }

    fn changes_mode(&self) -> bool {
        self.mode.is_some() || self.symbolic.is_some()
    }
}

/// The sources `action` selects under `src_root`: (path relative to the root, host path).
/// Errors name a missing non-wildcard source; an empty result is allowed only where BuildKit
/// allows it (empty wildcard allowed, or everything removed by `--exclude`).
fn matched_sources(
    src_root: &Path,
    action: &CopyAction,
    settings: &CopySettings,
) -> io::Result<Vec<(PathBuf, PathBuf)>> {
    let sources = expand_sources(src_root, &action.src, action.allow_wildcard)?;
    let wildcard = action.allow_wildcard && has_wildcard(&action.src);
    let mut existing = Vec::new();
    let mut excluded_by_flag = false;
    for rel in sources {
        let host = resolve_in_root(src_root, &rel.to_string_lossy(), action.follow_symlinks)?;
        let excluded = !rel.as_os_str().is_empty() && settings.ignored(&rel);
        if excluded && wildcard {
            continue;
        }
        if let Some(name) = rel.file_name() {
            if settings.source_excluded(Path::new(name)) {
                excluded_by_flag = true;
                continue;
            }
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
    if existing.is_empty() && !action.allow_empty_wildcard && !excluded_by_flag {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no source files were specified: \"{}\" matched nothing",
                action.src
            ),
        ));
    }
    Ok(existing)
}

/// The part of `action.src` before its `/./` pivot (for `--parents`), cleaned; empty when none.
pub fn parents_pivot(src: &str) -> PathBuf {
    let Some(i) = src.find("/./") else {
        return PathBuf::new();
    };
    let mut out = PathBuf::new();
    for c in components(&src[..i]) {
        if c == ".." {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out
}

/// Where a source at `rel` (relative to the source root) lands under the destination directory
/// with `--parents`: its path below the pivot (or the whole path when there is no pivot).
pub fn parents_target(rel: &Path, pivot: &Path) -> PathBuf {
    match rel.strip_prefix(pivot) {
        Ok(kept) if !kept.as_os_str().is_empty() => kept.to_path_buf(),
        _ => rel.file_name().map(PathBuf::from).unwrap_or_default(),
    }
}

/// Performs one COPY/ADD action from `src_root` into `dest_root` (both host paths of mounted trees).
pub fn copy_action(
    src_root: &Path,
    dest_root: &Path,
    action: &CopyAction,
    settings: &CopySettings,
) -> io::Result<()> {
    if action.parents {
        return copy_with_parents(src_root, dest_root, action, settings);
    }
    let existing = matched_sources(src_root, action, settings)?;
    if existing.is_empty() {
        return Ok(());
    }
    let wildcard = action.allow_wildcard && has_wildcard(&action.src);
    let dest_slash = action.dest.ends_with('/');
    let dest_host = resolve_in_root(dest_root, &action.dest, true)?;
    let dest_is_dir = dest_slash || existing.len() > 1 || wildcard || dest_host.is_dir();
    let parent_owner = settings.owner;
    for (rel, host) in existing {
        let meta = fs::symlink_metadata(&host)?;
        if meta.is_dir() {
            mkdir_all(dest_root, &action.dest, parent_owner, 0o755)?;
            let target = resolve_in_root(dest_root, &action.dest, true)?;
            copy_dir_contents(&host, &target, settings, &rel, Path::new(""))?;
        } else if action.attempt_unpack
            && meta.is_file()
            && try_unpack(&host, dest_root, &action.dest, parent_owner)?
        {
            continue;
        } else {
            let name = rel
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_else(|| OsString::from("."));
            let target = if dest_is_dir {
                mkdir_all(dest_root, &action.dest, parent_owner, 0o755)?;
                resolve_in_root(dest_root, &action.dest, true)?.join(&name)
            } else {
                if let Some(parent) = Path::new(action.dest.trim_end_matches('/')).parent() {
                    mkdir_all(dest_root, &parent.to_string_lossy(), parent_owner, 0o755)?;
                }
                dest_host.clone()
            };
            copy_entry(&host, &target, &meta, settings, &rel, Path::new(&name))?;
        }
    }
    Ok(())
}

/// `--parents`: every match lands at DEST/<its path below the pivot>; the parent directories in
/// between are created with their source's mode and mtime (and the copy's owner).
fn copy_with_parents(
    src_root: &Path,
    dest_root: &Path,
    action: &CopyAction,
    settings: &CopySettings,
) -> io::Result<()> {
    let existing = matched_sources(src_root, action, settings)?;
    if existing.is_empty() {
        return Ok(());
    }
    let pivot = parents_pivot(&action.src);
    mkdir_all(dest_root, &action.dest, settings.owner, 0o755)?;
    let dest_dir = resolve_in_root(dest_root, &action.dest, true)?;
    let mut made: Vec<(PathBuf, fs::Metadata)> = Vec::new();
    for (rel, host) in existing {
        let kept = parents_target(&rel, &pivot);
        let mut dir = dest_dir.clone();
        let mut src_rel = if rel.starts_with(&pivot) {
            pivot.clone()
        } else {
            rel.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        if let Some(parent) = kept.parent() {
            for comp in parent.components() {
                src_rel.push(comp);
                dir.push(comp);
                let src_meta =
                    fs::metadata(resolve_in_root(src_root, &src_rel.to_string_lossy(), true)?)?;
                match fs::symlink_metadata(&dir) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        return Err(io::Error::other(format!(
                            "cannot create directory {}: a file is in the way",
                            dir.display()
                        )))
                    }
                    Err(_) => {
                        fs::create_dir(&dir)?;
                        let (uid, gid) = match settings.owner {
                            Some(o) => o,
                            None if settings.reset_owner => (0, 0),
                            None => (src_meta.uid(), src_meta.gid()),
                        };
                        std::os::unix::fs::lchown(&dir, Some(uid), Some(gid))?;
                        fs::set_permissions(
                            &dir,
                            fs::Permissions::from_mode(settings.mode_for(&src_meta)),
                        )?;
                        made.push((dir.clone(), src_meta));
                    }
                }
            }
        }
        let meta = fs::symlink_metadata(&host)?;
        let name = kept.file_name().map(PathBuf::from).unwrap_or_default();
        copy_entry(&host, &dest_dir.join(&kept), &meta, settings, &rel, &name)?;
    }
    for (dir, meta) in made.iter().rev() {
        set_mtime(dir, meta)?;
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
        if settings.skip(&child_rel, &child_srel, meta.is_dir()) {
            continue;
        }
        copy_entry(
            &s,
            &dest.join(&name),
            &meta,
            settings,
            &child_rel,
            &child_srel,
        )?;
    }
    Ok(())
}

fn copy_entry(
    src: &Path,
    dest: &Path,
    meta: &fs::Metadata,
    settings: &CopySettings,
    rel: &Path,
    srel: &Path,
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
        copy_dir_contents(src, dest, settings, rel, srel)?;
        if created || settings.changes_mode() || settings.owner.is_some() {
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
    let mut archive = tar::Archive::new(decompressed(src, kind)?);
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
        let settings = CopySettings::plain(true);
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
            mode_str: None,
            exclude_patterns: vec![],
            parents: false,
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

#[cfg(test)]
mod copy_flag_tests {
    use super::*;
    use std::io::Write;

    fn action(s: &str, d: &str) -> CopyAction {
        CopyAction {
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
            mode_str: None,
            exclude_patterns: vec![],
            parents: false,
        }
    }

    fn mode_of(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn symbolic_modes_parse_and_apply_like_chmod() {
        let m = SymbolicMode::parse("u+x,g-w,o=r").unwrap();
        assert_eq!(m.apply(0o664, false), 0o744);
        assert_eq!(m.apply(0o775, true), 0o754);
        let m = SymbolicMode::parse("a=rX").unwrap();
        assert_eq!(m.apply(0o600, false), 0o444);
        assert_eq!(m.apply(0o700, false), 0o555);
        assert_eq!(m.apply(0o700, true), 0o555);
        assert_eq!(
            SymbolicMode::parse("go=u").unwrap().apply(0o750, false),
            0o777
        );
        assert_eq!(
            SymbolicMode::parse("go=u-w").unwrap().apply(0o750, false),
            0o755
        );
        assert_eq!(
            SymbolicMode::parse("+x").unwrap().apply(0o644, false),
            0o755
        );
        assert_eq!(
            SymbolicMode::parse("u+s,+t").unwrap().apply(0o755, true),
            0o5755
        );
        assert_eq!(
            SymbolicMode::parse("o-rwx").unwrap().apply(0o777, false),
            0o770
        );
        assert_eq!(
            SymbolicMode::parse("ug=rw,o=").unwrap().apply(0o777, false),
            0o660
        );
        for bad in ["", "u", "x+r", "u+q", "u+r,", "755x", "u!r"] {
            assert!(SymbolicMode::parse(bad).is_err(), "{bad} must be rejected");
        }
    }

    #[test]
    fn symbolic_chmod_applies_per_entry() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        fs::create_dir(src.path().join("d")).unwrap();
        fs::write(src.path().join("d/f"), "x").unwrap();
        fs::set_permissions(src.path().join("d/f"), fs::Permissions::from_mode(0o664)).unwrap();
        fs::set_permissions(src.path().join("d"), fs::Permissions::from_mode(0o775)).unwrap();
        let mut settings = CopySettings::plain(true);
        settings.symbolic = Some(SymbolicMode::parse("u+x,g-w,o=r").unwrap());
        copy_action(src.path(), dst.path(), &action("/", "/out/"), &settings).unwrap();
        assert_eq!(mode_of(&dst.path().join("out/d/f")), 0o744);
        assert_eq!(mode_of(&dst.path().join("out/d")), 0o754);
    }

    #[test]
    fn excludes_are_relative_to_each_source() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("dir/sub")).unwrap();
        for f in [
            "dir/a.txt",
            "dir/b.md",
            "dir/sub/c.txt",
            "dir/sub/d.md",
            "top.md",
            "top.txt",
        ] {
            fs::write(src.path().join(f), f).unwrap();
        }
        let mut settings = CopySettings::plain(true);
        settings.source_exclude = Some(crate::dockerignore::Matcher::new(&["*.md", "sub/*.txt"]));
        copy_action(src.path(), dst.path(), &action("dir", "/d/"), &settings).unwrap();
        assert!(dst.path().join("d/a.txt").is_file());
        assert!(!dst.path().join("d/b.md").exists());
        assert!(!dst.path().join("d/sub/c.txt").exists());
        assert!(
            dst.path().join("d/sub/d.md").exists(),
            "*.md is top-level only"
        );
        copy_action(src.path(), dst.path(), &action("top*", "/t/"), &settings).unwrap();
        assert!(dst.path().join("t/top.txt").is_file() && !dst.path().join("t/top.md").exists());
        // Everything excluded is not an error.
        copy_action(
            src.path(),
            dst.path(),
            &action("top.md", "/none/"),
            &settings,
        )
        .unwrap();
        assert!(!dst.path().join("none/top.md").exists());
    }

    #[test]
    fn parents_keep_paths_below_the_pivot() {
        assert_eq!(parents_pivot("x/./y/*.txt"), PathBuf::from("x"));
        assert_eq!(parents_pivot("./x/a.txt"), PathBuf::new());
        assert_eq!(parents_pivot("/a/b/./c"), PathBuf::from("a/b"));
        assert_eq!(
            parents_target(Path::new("x/y/a.txt"), Path::new("x")),
            PathBuf::from("y/a.txt")
        );
        assert_eq!(
            parents_target(Path::new("x/y/a.txt"), Path::new("")),
            PathBuf::from("x/y/a.txt")
        );
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("x/y/z")).unwrap();
        fs::create_dir_all(src.path().join("w/y")).unwrap();
        fs::write(src.path().join("x/y/a.txt"), "xa").unwrap();
        fs::write(src.path().join("w/y/a.txt"), "wa").unwrap();
        fs::write(src.path().join("x/y/z/deep"), "deep").unwrap();
        fs::set_permissions(src.path().join("x/y"), fs::Permissions::from_mode(0o750)).unwrap();
        let settings = CopySettings::plain(true);
        let mut a = action("*/y/a.txt", "/no_pivot/");
        a.parents = true;
        copy_action(src.path(), dst.path(), &a, &settings).unwrap();
        assert_eq!(
            fs::read_to_string(dst.path().join("no_pivot/x/y/a.txt")).unwrap(),
            "xa"
        );
        assert_eq!(
            fs::read_to_string(dst.path().join("no_pivot/w/y/a.txt")).unwrap(),
            "wa"
        );
        assert_eq!(
            mode_of(&dst.path().join("no_pivot/x/y")),
            0o750,
            "parent dirs keep the source's mode"
        );
        let mut a = action("x/./y/a.txt", "/pivot/");
        a.parents = true;
        copy_action(src.path(), dst.path(), &a, &settings).unwrap();
        assert!(dst.path().join("pivot/y/a.txt").is_file());
        assert!(!dst.path().join("pivot/x").exists());
        let mut a = action("x/./y/z", "/dirs/");
        a.parents = true;
        copy_action(src.path(), dst.path(), &a, &settings).unwrap();
        assert!(dst.path().join("dirs/y/z/deep").is_file());
    }

    fn tar_with(name: &str, body: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, name, body).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn archives_of_every_compression_are_unpacked() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let tar = tar_with("inner.txt", b"payload");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        bz.write_all(&tar).unwrap();
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut io::Cursor::new(&tar), &mut xz).unwrap();
        let zst = zstd::encode_all(io::Cursor::new(&tar), 3).unwrap();
        let files: Vec<(&str, Vec<u8>)> = vec![
            ("a.tar", tar.clone()),
            ("a.tar.gz", gz.finish().unwrap()),
            ("a.tar.bz2", bz.finish().unwrap()),
            ("a.tar.xz", xz),
            ("a.tar.zst", zst),
        ];
        for (name, bytes) in files {
            fs::write(src.path().join(name), bytes).unwrap();
            let mut a = action(name, &format!("/{name}.d/"));
            a.attempt_unpack = true;
            copy_action(src.path(), dst.path(), &a, &CopySettings::plain(true)).unwrap();
            assert_eq!(
                fs::read_to_string(dst.path().join(format!("{name}.d/inner.txt"))).unwrap(),
                "payload",
                "{name}"
            );
        }
        // A .tar.gz that is not an archive (a gzip of plain text, or no gzip at all) is a file.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"just text").unwrap();
        fs::write(src.path().join("fake.tar.gz"), gz.finish().unwrap()).unwrap();
        fs::write(src.path().join("plain.tar.gz"), "not compressed").unwrap();
        for name in ["fake.tar.gz", "plain.tar.gz"] {
            let mut a = action(name, "/files/");
            a.attempt_unpack = true;
            copy_action(src.path(), dst.path(), &a, &CopySettings::plain(true)).unwrap();
            assert!(dst.path().join("files").join(name).is_file(), "{name}");
        }
    }

    #[test]
    fn symlink_rules() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        fs::create_dir(src.path().join("tree")).unwrap();
        fs::write(src.path().join("target.txt"), "T").unwrap();
        symlink("target.txt", src.path().join("link.txt")).unwrap();
        symlink("../target.txt", src.path().join("tree/inner-link")).unwrap();
        let settings = CopySettings::plain(true);
        // A symlink named as the source is followed.
        copy_action(
            src.path(),
            dst.path(),
            &action("link.txt", "/a/"),
            &settings,
        )
        .unwrap();
        let m = fs::symlink_metadata(dst.path().join("a/link.txt")).unwrap();
        assert!(m.is_file());
        // Symlinks inside a copied tree are kept.
        copy_action(src.path(), dst.path(), &action("tree", "/b/"), &settings).unwrap();
        assert_eq!(
            fs::read_link(dst.path().join("b/inner-link")).unwrap(),
            PathBuf::from("../target.txt")
        );
        // The destination resolves through the image's own symlinks without escaping the root.
        fs::create_dir(dst.path().join("real")).unwrap();
        symlink("/real", dst.path().join("abs")).unwrap();
        symlink("../../../../../../", dst.path().join("up")).unwrap();
        copy_action(
            src.path(),
            dst.path(),
            &action("target.txt", "/abs/"),
            &settings,
        )
        .unwrap();
        assert!(dst.path().join("real/target.txt").is_file());
        copy_action(
            src.path(),
            dst.path(),
            &action("target.txt", "/up/escaped.txt"),
            &settings,
        )
        .unwrap();
        assert!(dst.path().join("escaped.txt").is_file());
        // A source symlink cannot lead out of the source root either.
        symlink("/../../../etc/hostname", src.path().join("evil")).unwrap();
        let err =
            copy_action(src.path(), dst.path(), &action("evil", "/e"), &settings).unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
    }
}
