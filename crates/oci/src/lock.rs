//! Locks that let several rbuild processes share one state root: owner locks that mark a
//! process's private directories as live (so an open sweeps only what dead processes left
//! behind), exclusive `flock`s that report a long wait through a [`WaitReporter`], and the pid
//! holding a lock (read from `/proc/locks`).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a lock wait lasts before it is reported.
pub const REPORT_AFTER: Duration = Duration::from_secs(1);

/// A wait for a lock that another process holds, reported after [`REPORT_AFTER`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The state root (or file) being waited for.
    pub root: PathBuf,
    /// The pid holding the lock, when `/proc/locks` names it.
    pub holder: Option<u32>,
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.holder {
            Some(pid) => write!(f, "waiting for {} (held by pid {pid})", self.root.display()),
            None => write!(
                f,
                "waiting for {} (held by another process)",
                self.root.display()
            ),
        }
    }
}

/// A callback told when a lock wait takes longer than [`REPORT_AFTER`] (the CLI prints it).
#[derive(Clone)]
pub struct WaitReporter(Arc<dyn Fn(&Waiting) + Send + Sync>);

impl WaitReporter {
    /// Wraps `f`.
    pub fn new(f: impl Fn(&Waiting) + Send + Sync + 'static) -> WaitReporter {
        WaitReporter(Arc::new(f))
    }

    /// Calls the callback.
    pub fn report(&self, waiting: &Waiting) {
        (self.0)(waiting)
    }
}

impl fmt::Debug for WaitReporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WaitReporter")
    }
}

/// Tries an exclusive `flock` without waiting: `Ok(false)` when another open file holds it.
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Calls `reporter` with a [`Waiting`] for `root` (holder read from `/proc/locks` for `lock_path`)
/// unless `done` receives (or disconnects) within [`REPORT_AFTER`]. Runs on its own thread so
/// the caller can block in the kernel meanwhile.
pub fn report_if_slow(
    reporter: Option<&WaitReporter>,
    root: &Path,
    lock_path: &Path,
) -> Option<std::sync::mpsc::Sender<()>> {
    let reporter = reporter?.clone();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (root, lock_path) = (root.to_path_buf(), lock_path.to_path_buf());
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(REPORT_AFTER) {
            reporter.report(&Waiting {
                root,
                holder: holder_pid(&lock_path),
            });
        }
    });
    Some(tx)
}

/// Takes an exclusive `flock` on `file` (at `lock_path`), waiting as long as it takes; when the
/// wait exceeds [`REPORT_AFTER`], `reporter` hears `waiting for ROOT (held by pid N)`.
pub fn lock_exclusive(
    file: &File,
    lock_path: &Path,
    root: &Path,
    reporter: Option<&WaitReporter>,
) -> io::Result<()> {
    if try_lock_exclusive(file)? {
        return Ok(());
    }
    let _done = report_if_slow(reporter, root, lock_path);
    loop {
        match file.lock() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// The pid holding a lock (flock, POSIX or OFD with a pid) on the file at `path`, from
/// `/proc/locks`; `None` when it cannot be told (no such entry, or another pid namespace).
pub fn holder_pid(path: &Path) -> Option<u32> {
    let meta = std::fs::metadata(path).ok()?;
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let mut inode_only = None;
    for line in text.lines() {
        // "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF" (blocked waiters start with "->").
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) == Some(&"->") || fields.len() < 6 {
            continue;
        }
        let (Ok(pid), Some(id)) = (fields[4].parse::<i64>(), fields.get(5)) else {
            continue;
        };
        let mut parts = id.split(':');
        let (Some(ma), Some(mi), Some(ino)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if ino.parse::<u64>().ok() != Some(meta.ino()) || pid <= 0 {
            continue;
        }
        let same_dev = u32::from_str_radix(ma, 16).ok() == Some(major)
            && u32::from_str_radix(mi, 16).ok() == Some(minor);
        if same_dev {
            return u32::try_from(pid).ok();
        }
        inode_only = inode_only.or(u32::try_from(pid).ok());
    }
    inode_only
}

static OWNER_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A live process's claim on its private directories: the file `OWNERS/<name>`, held with an
/// exclusive `flock` while this value lives. Directories named `<name>` (e.g. `active/<name>`)
/// belong to it; [`sweep_dead`] removes them only once the lock is free (the owner died).
#[derive(Debug)]
pub struct OwnerLock {
    name: String,
    path: PathBuf,
    _file: File,
}

impl OwnerLock {
    /// Creates and locks a new owner file in `owners` (created if needed). The name starts with
    /// the pid, e.g. `1234-18a2b3c4d5e6f-0`.
    pub fn acquire(owners: &Path) -> io::Result<OwnerLock> {
        let mut last = None;
        for _ in 0..16 {
            std::fs::create_dir_all(owners)?;
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let name = format!(
                "{}-{nanos:x}-{}",
                std::process::id(),
                OWNER_COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let path = owners.join(&name);
            let file = match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                // The owners dir was removed meanwhile: create it again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if !try_lock_exclusive(&file)? {
                continue;
            }
            // A sweeper may have locked and unlinked the fresh file before we locked it: only a
            // lock on the file that is still at `path` counts.
            let on_disk = std::fs::metadata(&path);
            let mine = file.metadata()?;
            match on_disk {
                Ok(m) if m.ino() == mine.ino() && m.dev() == mine.dev() => {
                    return Ok(OwnerLock {
                        name,
                        path,
                        _file: file,
                    })
                }
                _ => continue,
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("could not create an owner lock")))
    }

    /// The owner's name (the name of its private directories).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OwnerLock {
    fn drop(&mut self) {
        // Still locked here, so no sweeper is working on it.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What [`sweep_dead`] found: private directories of dead owners (already unlocked owners are
/// kept locked until the sweep ends).
#[derive(Debug, Default)]
pub struct Sweep {
    /// Directories to remove.
    pub dirs: Vec<PathBuf>,
    held: Vec<(PathBuf, File)>,
}

/// Finds what dead processes left: every entry of the `areas` (e.g. `active/`, `tmp/`) whose
/// name has no locked owner file in `owners` (the owner died, or the entry predates owner
/// locks), plus owner files nobody holds. Call [`Sweep::finish`] to delete them (after, e.g.,
/// detaching mounts under [`Sweep::dirs`]).
pub fn sweep_dead(owners: &Path, areas: &[PathBuf]) -> io::Result<Sweep> {
    let mut sweep = Sweep::default();
    let mut checked = std::collections::HashMap::<std::ffi::OsString, bool>::new();
    let mut is_dead = |name: &std::ffi::OsStr, sweep: &mut Sweep| -> io::Result<bool> {
        if let Some(dead) = checked.get(name) {
            return Ok(*dead);
        }
        let path = owners.join(name);
        let dead = match OpenOptions::new().write(true).open(&path) {
            Ok(f) => {
                if try_lock_exclusive(&f)? {
                    sweep.held.push((path, f));
                    true
                } else {
                    false
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(e),
        };
        checked.insert(name.to_os_string(), dead);
        Ok(dead)
    };
    for area in areas {
        let entries = match std::fs::read_dir(area) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            if is_dead(&entry.file_name(), &mut sweep)? {
                sweep.dirs.push(entry.path());
            }
        }
    }
    match std::fs::read_dir(owners) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry?;
                is_dead(&entry.file_name(), &mut sweep)?;
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(sweep)
}

impl Sweep {
    /// True when nothing was left behind.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.held.is_empty()
    }

    /// Deletes the dead owners' directories, then their owner files (while still locked).
    pub fn finish(self) -> io::Result<()> {
        for dir in &self.dirs {
            let result = match std::fs::symlink_metadata(dir) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(dir),
                Ok(_) => std::fs::remove_file(dir),
                Err(e) => Err(e),
            };
            match result {
                // Another sweeper got there first.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        for (path, _file) in &self.held {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn live_owners_are_kept_dead_ones_swept() {
        let dir = tempfile::tempdir().unwrap();
        let owners = dir.path().join("owners");
        let area = dir.path().join("active");
        std::fs::create_dir_all(&area).unwrap();
        let live = OwnerLock::acquire(&owners).unwrap();
        assert!(live.name().starts_with(&format!("{}-", std::process::id())));
        std::fs::create_dir(area.join(live.name())).unwrap();
        // A dead owner: its file exists but nobody holds it.
        std::fs::write(owners.join("1-dead-0"), b"").unwrap();
        std::fs::create_dir(area.join("1-dead-0")).unwrap();
        // An entry without any owner file (older layout or a crash before the lock).
        std::fs::write(area.join("loose"), b"x").unwrap();
        let sweep = sweep_dead(&owners, std::slice::from_ref(&area)).unwrap();
        assert_eq!(sweep.dirs.len(), 2, "{:?}", sweep.dirs);
        sweep.finish().unwrap();
        assert!(area.join(live.name()).is_dir());
        assert!(!area.join("1-dead-0").exists());
        assert!(!area.join("loose").exists());
        assert!(!owners.join("1-dead-0").exists());
        assert!(live.path().exists());
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists());
    }

    #[test]
    fn long_wait_is_reported_with_the_holder_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.lock");
        let holder = File::create(&path).unwrap();
        assert!(try_lock_exclusive(&holder).unwrap());
        assert_eq!(holder_pid(&path), Some(std::process::id()));
        let seen = Arc::new(Mutex::new(Vec::<Waiting>::new()));
        let seen2 = seen.clone();
        let reporter = WaitReporter::new(move |w| seen2.lock().unwrap().push(w.clone()));
        let (p2, root) = (path.clone(), dir.path().to_path_buf());
        let waiter = std::thread::spawn(move || {
            let f = OpenOptions::new().write(true).open(&p2).unwrap();
            lock_exclusive(&f, &p2, &root, Some(&reporter)).unwrap();
        });
        std::thread::sleep(REPORT_AFTER + Duration::from_millis(500));
        assert!(!waiter.is_finished(), "the lock is still held");
        drop(holder);
        waiter.join().unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].holder, Some(std::process::id()));
        assert_eq!(
            seen[0].to_string(),
            format!(
                "waiting for {} (held by pid {})",
                dir.path().display(),
                std::process::id()
            )
        );
    }

    #[test]
    fn short_waits_are_not_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let holder = File::create(&path).unwrap();
        assert!(try_lock_exclusive(&holder).unwrap());
        let seen = Arc::new(Mutex::new(0));
        let seen2 = seen.clone();
        let reporter = WaitReporter::new(move |_| *seen2.lock().unwrap() += 1);
        let (p2, root) = (path.clone(), dir.path().to_path_buf());
        let waiter = std::thread::spawn(move || {
            let f = OpenOptions::new().write(true).open(&p2).unwrap();
            lock_exclusive(&f, &p2, &root, Some(&reporter)).unwrap();
        });
        std::thread::sleep(Duration::from_millis(100));
        drop(holder);
        waiter.join().unwrap();
        std::thread::sleep(REPORT_AFTER + Duration::from_millis(200));
        assert_eq!(*seen.lock().unwrap(), 0);
    }
}
