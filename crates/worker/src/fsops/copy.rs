//! Copying one entry or a whole tree: ownership (kept, reset to 0:0 or forced), modes (octal or
//! symbolic), symlinks kept as links, hardlink groups kept as links, device nodes recreated,
//! mtimes preserved, and the `.dockerignore` / `--exclude` filters applied while walking.

use super::data::{copy_file, set_mtime, Mover};
use super::pool::{CopyPool, Key};
use crate::dockerignore::{keeps_anything, Matcher, Verdict};
use rbuild_llb::SymbolicMode;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// The destination is an overlay mount whose upper dir may be written directly below
    /// directories the copy creates (see [`DirectUpper`]); None: everything through the mount.
    pub direct: Option<DirectUpper>,
    /// The copy pool of the op (sources from the build context only): files identical to an
    /// earlier copy are linked to it (see [`CopyPool`]).
    pub pool: Option<Arc<CopyPool>>,
}

/// An overlay mount of an active snapshot and its upper dir. A directory the copy creates
/// through the mount (nothing was there, or a non-directory it replaced, which leaves it
/// opaque) shows nothing of the lower layers, so what goes below it can be written straight
/// into the upper dir: the same entries, without overlay's per-call cost, and with in-kernel
/// copies between files of one filesystem. Nothing below such a directory is looked up through
/// the mount before it is written, so the mount caches nothing stale. Hardlinks and device
/// nodes still go through the mount.
#[derive(Debug, Clone)]
pub struct DirectUpper {
    /// Where the snapshot is mounted.
    pub mount: PathBuf,
    /// The snapshot's upper dir.
    pub upper: PathBuf,
}

impl DirectUpper {
    /// The upper-dir path of `path` when it is a path of the mount.
    fn to_upper(&self, path: &Path) -> Option<PathBuf> {
        path.strip_prefix(&self.mount)
            .ok()
            .map(|rel| self.upper.join(rel))
    }

    /// The mount's path of `path` when it is an upper-dir path, else `path` itself.
    fn to_mount(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.upper) {
            Ok(rel) => self.mount.join(rel),
            Err(_) => path.to_path_buf(),
        }
    }
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
            direct: None,
            pool: None,
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
/// It also carries how file bytes are moved ([`Mover`], learnt from the first file) and the
/// plain file copies not done yet: they run in parallel, bounded by the cores, when
/// [`Links::flush`] is called (before a directory's times are set, as creating entries in it
/// changes them, and at the end of each source), or when [`BATCH`] of them are waiting.
#[derive(Default)]
pub(super) struct Links {
    first: HashMap<(u64, u64), PathBuf>,
    mover: Mover,
    batch: Vec<FileJob>,
    pool: Option<Arc<CopyPool>>,
}

/// Plain file copies that wait before [`Links::flush`] runs them (bounds the memory they take).
const BATCH: usize = 4096;

/// Fewer waiting copies than this run on the calling thread (a thread costs more than they do).
const PARALLEL_MIN: usize = 64;

/// One plain file copy: source, destination, the source's metadata, owner and mode.
struct FileJob {
    src: PathBuf,
    dest: PathBuf,
    meta: fs::Metadata,
    owner: (u32, u32),
    mode: u32,
    /// The pool key when the copy may be served by the pool.
    key: Option<Key>,
}

impl Links {
    /// Links for one source of a copy with `settings` (its pool, if any).
    pub(super) fn new(settings: &CopySettings) -> Links {
        Links {
            pool: settings.pool.clone(),
            ..Links::default()
        }
    }

    /// Something in the destination was removed or replaced (see [`CopyPool::taint`]).
    fn taint(&self) {
        if let Some(pool) = &self.pool {
            pool.taint();
        }
    }

    fn push(&mut self, job: FileJob) -> io::Result<()> {
        self.batch.push(job);
        if self.batch.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Runs the waiting file copies, on up to one thread per core; the first error wins.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        let jobs = std::mem::take(&mut self.batch);
        let candidates = match &self.pool {
            Some(pool) => pool.lookup(&jobs.iter().map(|j| j.key).collect::<Vec<_>>()),
            None => Vec::new(),
        };
        let pool = self.pool.as_deref();
        let run = |(i, job): (usize, &FileJob)| {
            if let (Some(pool), Some(key)) = (pool, job.key) {
                let candidate = candidates.get(i).and_then(|c| c.as_deref());
                if let Some(c) = candidate {
                    if let Some(inode) =
                        pool.try_link(c, &job.src, &job.dest, &job.meta, job.owner, job.mode)?
                    {
                        pool.record(key, &job.dest, inode, None);
                        return Ok(());
                    }
                }
            }
            let made = copy_file(
                &job.src,
                &job.dest,
                &job.meta,
                job.owner,
                job.mode,
                &self.mover,
            )?;
            if let Some(pool) = pool {
                if made.replaced {
                    pool.taint();
                }
                if let Some(key) = job.key {
                    pool.record(key, &job.dest, made.inode, Some((&job.src, &job.meta)));
                }
            }
            Ok(())
        };
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(8);
        if jobs.len() < PARALLEL_MIN || threads < 2 {
            return jobs.iter().enumerate().try_for_each(run);
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let failed = std::sync::Mutex::new(None::<io::Error>);
        let work = || loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(job) = jobs.get(i) else { break };
            if let Err(e) = run((i, job)) {
                next.store(jobs.len(), std::sync::atomic::Ordering::Relaxed);
                if let Ok(mut slot) = failed.lock() {
                    slot.get_or_insert(e);
                }
                break;
            }
        };
        std::thread::scope(|scope| {
            for _ in 1..threads {
                scope.spawn(work);
            }
            work();
        });
        match failed.into_inner() {
            Ok(Some(e)) => Err(e),
            Ok(None) => Ok(()),
            Err(_) => Err(io::Error::other("a file copy thread panicked")),
        }
    }

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
                links.taint();
                fs::remove_file(dest)?;
                fs::create_dir(dest)?;
                true
            }
            Err(_) => {
                fs::create_dir(dest)?;
                true
            }
        };
        let upper = match &settings.direct {
            Some(d) if created => d.to_upper(dest),
            _ => None,
        };
        copy_dir_contents(
            src,
            upper.as_deref().unwrap_or(dest),
            settings,
            links,
            at.rel,
            at.srel,
        )?;
        links.flush()?;
        if created || at.nested {
            std::os::unix::fs::lchown(dest, Some(uid), Some(gid))?;
            fs::set_permissions(dest, fs::Permissions::from_mode(mode))?;
        }
        set_mtime(dest, meta)?;
        return Ok(());
    }
    // Hardlinks and device nodes are made through the mount (a link's two names may lie on
    // both sides of it, and overlay treats some devices specially).
    let through_mount = settings
        .direct
        .as_ref()
        .map(|d| d.to_mount(dest))
        .filter(|_| !(ft.is_symlink() || ft.is_file() && meta.nlink() < 2));
    let dest = through_mount.as_deref().unwrap_or(dest);
    if ft.is_file() {
        if meta.nlink() > 1 {
            // The group's first copy may be waiting in the batch: `source_for` checks it exists.
            links.flush()?;
        }
        match links.source_for(meta, dest) {
            None => {
                let key = links
                    .pool
                    .as_ref()
                    .and_then(|_| CopyPool::key(meta, (uid, gid), mode));
                return links.push(FileJob {
                    src: src.to_path_buf(),
                    dest: dest.to_path_buf(),
                    meta: meta.clone(),
                    owner: (uid, gid),
                    mode,
                    key,
                });
            }
            Some(first) => {
                if remove_existing(dest)? {
                    links.taint();
                }
                fs::hard_link(&first, dest)?;
                return set_mtime(dest, meta);
            }
        }
    }
    if remove_existing(dest)? {
        links.taint();
    }
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
/// True when something was removed.
fn remove_existing(dest: &Path) -> io::Result<bool> {
    if let Ok(existing) = fs::symlink_metadata(dest) {
        if existing.is_dir() {
            fs::remove_dir_all(dest)?;
        } else {
            fs::remove_file(dest)?;
        }
        return Ok(true);
    }
    Ok(false)
}
