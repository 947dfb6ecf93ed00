//! File operations done by rbuild itself inside a mounted rootfs: the COPY/ADD and WORKDIR/mkdir
//! entry points the worker calls. The parts live in submodules by concern: `paths` (resolving
//! inside a root, mkdir -p), `sources` (source wildcards and `--parents`), `copy` (tree copy with
//! ownership and modes), `data` (one file's bytes and metadata through descriptors) and
//! `archive` (ADD's tar extraction). Symbolic `--chmod` modes are [`rbuild_llb::SymbolicMode`],
//! the grammar the frontend validates with.

mod archive;
mod copy;
mod data;
mod paths;
mod pool;
#[cfg(test)]
mod pool_tests;
mod sources;
#[cfg(test)]
mod tests;

pub use crate::glob::{glob_match, has_wildcard};
pub use copy::{CopySettings, DirectUpper};
pub use paths::{mkdir_all, resolve_in_root};
pub use pool::{forget_snapshots, CopyPool, PoolStats, POOL_ENV};
pub use rbuild_llb::SymbolicMode;
pub use sources::{expand_sources, parents_pivot, parents_target};

use archive::try_unpack;
use copy::{copy_dir_contents, copy_entry, EntryPaths, Links};
use data::set_mtime;
use rbuild_llb::{CopyAction, MkdirAction};
use sources::matched_sources;
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
    let mut links = Links::new(settings);
    for (rel, host) in existing {
        let meta = fs::symlink_metadata(&host)?;
        if meta.is_dir() {
            mkdir_all(dest_root, &action.dest, parent_owner, 0o755)?;
            let target = resolve_in_root(dest_root, &action.dest, true)?;
            copy_dir_contents(&host, &target, settings, &mut links, &rel, Path::new(""))?;
            links.flush()?;
            // The top-level destination keeps its mode and owner but takes the source's mtime
            // (BuildKit's copier restores the source timestamp on a directory it did not create).
            set_mtime(&target, &meta)?;
        } else if action.attempt_unpack
            && meta.is_file()
            && try_unpack(
                &host,
                &rel.to_string_lossy(),
                dest_root,
                &action.dest,
                parent_owner,
            )?
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
            let at = EntryPaths {
                rel: &rel,
                srel: Path::new(&name),
                nested: false,
            };
            copy_entry(&host, &target, &meta, settings, &mut links, at)?;
            links.flush()?;
        }
    }
    Ok(())
}

/// `--parents`: every match lands at `DEST/<its path below the pivot>`; the parent directories in
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
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut links = Links::new(settings);
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
                if !seen.insert(dir.clone()) {
                    continue;
                }
                match fs::symlink_metadata(&dir) {
                    // An existing parent takes its source's mode (not `--chmod`'s), keeping its
                    // owner and mtime, as BuildKit's copier does for the parents of a match.
                    Ok(m) if m.is_dir() => {
                        fs::set_permissions(
                            &dir,
                            fs::Permissions::from_mode(src_meta.mode() & 0o7777),
                        )?;
                    }
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
        // BuildKit copies `--parents` matches as include patterns below the pivot, so each
        // match is nested: an existing directory there takes the source's metadata.
        let at = EntryPaths {
            rel: &rel,
            srel: &name,
            nested: true,
        };
        copy_entry(
            &host,
            &dest_dir.join(&kept),
            &meta,
            settings,
            &mut links,
            at,
        )?;
        links.flush()?;
    }
    for (dir, meta) in made.iter().rev() {
        set_mtime(dir, meta)?;
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
