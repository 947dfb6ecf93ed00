//! Source selection for COPY/ADD: expanding a source pattern (wildcards per component) under
//! the source root, checking which matches exist and are not excluded, and the `--parents`
//! pivot (`/./`) that decides where each match lands.

use super::copy::CopySettings;
use super::paths::{components, resolve_in_root};
use crate::glob::{glob_match, has_wildcard};
use rbuild_llb::CopyAction;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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

/// The sources `action` selects under `src_root`: (path relative to the root, host path).
/// Errors name a missing non-wildcard source; an empty result is allowed only where BuildKit
/// allows it (empty wildcard allowed, or everything removed by `--exclude`).
pub(super) fn matched_sources(
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
        let excluded = !rel.as_os_str().is_empty() && settings.ignored(&rel, &host)?;
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
