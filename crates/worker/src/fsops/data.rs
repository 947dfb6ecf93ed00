//! One regular file's copy through descriptors: the destination is created exclusively (an
//! existing entry is removed first only when the create says it is there), the bytes move in the
//! kernel (`copy_file_range` where the two filesystems allow it, else `sendfile`, else plain
//! reads and writes), and owner, mode and times are set on the open descriptor, so the
//! destination path is looked up once instead of once per call.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};

use rustix::fs::{Gid, Mode, Timespec, Timestamps, Uid};
use rustix::io::Errno;

/// How bytes are moved, learnt from the first file of a copy: 0 untried, 1 `copy_file_range`,
/// 2 `sendfile`, 3 reads and writes.
#[derive(Default)]
pub(super) struct Mover(AtomicU8);

const UNTRIED: u8 = 0;
const RANGE: u8 = 1;
const SENDFILE: u8 = 2;
const PLAIN: u8 = 3;

impl Mover {
    /// Copies `len` bytes of `input` to `output` (both at offset 0).
    fn copy(&self, input: &mut File, output: &mut File, len: u64) -> io::Result<()> {
        let mut done = 0u64;
        let mut how = self.0.load(Ordering::Relaxed);
        while done < len {
            let want = usize::try_from(len - done)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            let step = match how {
                UNTRIED | RANGE => rustix::fs::copy_file_range(&*input, None, &*output, None, want),
                SENDFILE => rustix::fs::sendfile(&*output, &*input, None, want),
                _ => return plain_copy(input, output),
            };
            match step {
                // The source shrank while being copied: stop at its end, as a read would.
                Ok(0) => break,
                Ok(n) => {
                    if how == UNTRIED {
                        how = RANGE;
                        self.0.store(RANGE, Ordering::Relaxed);
                    }
                    done += n as u64;
                }
                Err(Errno::INTR) => {}
                Err(e) if done == 0 && unsupported(e) => {
                    how = if how <= RANGE { SENDFILE } else { PLAIN };
                    self.0.store(how, Ordering::Relaxed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// Errors that mean "not between these files", not "the copy failed".
fn unsupported(e: Errno) -> bool {
    matches!(
        e,
        Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP | Errno::PERM
    )
}

fn plain_copy(input: &mut File, output: &mut File) -> io::Result<()> {
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        output.write_all(&buf[..n])?;
    }
}

/// Creates `dest` exclusively; when something is in the way (a file, a symlink, a directory
/// tree) it is removed and the create tried once more (then the flag is true).
fn create_exclusive(dest: &Path, mode: u32) -> io::Result<(File, bool)> {
    let open = || {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(dest)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            match fs::symlink_metadata(dest) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(dest)?,
                _ => fs::remove_file(dest)?,
            }
            Ok((open()?, true))
        }
        other => other.map(|f| (f, false)),
    }
}

/// Copies the regular file `src` (whose metadata is `meta`) to `dest`, owned by `uid`:`gid`
/// with permission bits `mode` and the source's access and modification times.
pub(super) fn copy_file(
    src: &Path,
    dest: &Path,
    meta: &fs::Metadata,
    (uid, gid): (u32, u32),
    mode: u32,
    mover: &Mover,
) -> io::Result<Made> {
    let mut input = File::open(src)?;
    // Created with the permission bits (the umask may clear some; checked below), so that the
    // usual file, created by root for 0:0, needs no chown or chmod: each would dirty the inode
    // once more.
    let (mut output, replaced) = create_exclusive(dest, mode & 0o777)?;
    mover.copy(&mut input, &mut output, meta.len())?;
    let inode = set_meta(&output, meta, (uid, gid), mode)?;
    Ok(Made { replaced, inode })
}

/// Creates `dest` as [`copy_file`] would, with the size of `meta`'s file but no data (a
/// sparse file: the copy pool's placeholder, see `pool`).
pub(super) fn placeholder_file(
    dest: &Path,
    meta: &fs::Metadata,
    owner: (u32, u32),
    mode: u32,
) -> io::Result<Made> {
    let (output, replaced) = create_exclusive(dest, mode & 0o777)?;
    output.set_len(meta.len())?;
    let inode = set_meta(&output, meta, owner, mode)?;
    Ok(Made { replaced, inode })
}

/// Fills the open file `output` with the bytes of `src` (its first `len`), keeping its times
/// as `meta` says (the copy pool's fallback for a placeholder it could not replace).
pub(super) fn fill_file(output: &mut File, src: &Path, meta: &fs::Metadata) -> io::Result<()> {
    let mut input = File::open(src)?;
    Mover::default().copy(&mut input, output, meta.len())?;
    rustix::fs::futimens(&*output, &times_of(meta))?;
    Ok(())
}

fn times_of(meta: &fs::Metadata) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    }
}

/// What [`copy_file`] made.
pub(super) struct Made {
    /// Something that was at the destination was replaced.
    pub replaced: bool,
    /// The new file's device and inode (as the filesystem written to reports them).
    pub inode: (u64, u64),
}

/// Owner, mode and the source's times on a file just created; returns its device and inode.
fn set_meta(
    output: &File,
    meta: &fs::Metadata,
    (uid, gid): (u32, u32),
    mode: u32,
) -> io::Result<(u64, u64)> {
    let made = rustix::fs::fstat(output)?;
    if made.st_uid != uid || made.st_gid != gid {
        // Owner before mode: a chown clears setuid/setgid bits.
        rustix::fs::fchown(output, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
    }
    if made.st_mode & 0o7777 != mode || mode & 0o7000 != 0 {
        rustix::fs::fchmod(output, Mode::from_raw_mode(mode))?;
    }
    rustix::fs::futimens(output, &times_of(meta))?;
    Ok((made.st_dev, made.st_ino))
}

/// Sets `path`'s access and modification times to `meta`'s (the link itself for a symlink).
pub(super) fn set_mtime(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    use rustix::fs::{Timespec, Timestamps};
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Copies `src` to `dest` as root would for 0:0 (or, unprivileged, for the caller).
    fn copy(src: &Path, dest: &Path, mode: u32, mover: &Mover) {
        let meta = fs::symlink_metadata(src).unwrap();
        let me = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        copy_file(src, dest, &meta, me, mode, mover).unwrap();
    }

    #[test]
    fn bytes_mode_and_times_within_and_across_filesystems() {
        let dir = tempfile::tempdir().unwrap();
        // /dev/shm is a tmpfs where it exists: `copy_file_range` to another filesystem fails
        // and the copy falls back (remembered for the rest of the copy).
        let shm = tempfile::tempdir_in("/dev/shm").ok();
        let other = shm.as_ref().map_or(dir.path(), |d| d.path());
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for (i, from) in [dir.path(), other].into_iter().enumerate() {
            let mover = Mover::default();
            let src = from.join(format!("src{i}"));
            fs::write(&src, &big).unwrap();
            fs::set_permissions(&src, fs::Permissions::from_mode(0o751)).unwrap();
            let times = Timestamps {
                last_access: Timespec {
                    tv_sec: 1_000_000,
                    tv_nsec: 5,
                },
                last_modification: Timespec {
                    tv_sec: 1_600_000_000,
                    tv_nsec: 7,
                },
            };
            rustix::fs::utimensat(rustix::fs::CWD, &src, &times, rustix::fs::AtFlags::empty())
                .unwrap();
            let dest = dir.path().join(format!("dest{i}"));
            copy(&src, &dest, 0o4751, &mover);
            // (metadata first: reading the copy may update its atime)
            let m = fs::metadata(&dest).unwrap();
            assert_eq!(m.permissions().mode() & 0o7777, 0o4751, "setuid kept");
            assert_eq!((m.mtime(), m.mtime_nsec()), (1_600_000_000, 7));
            assert_eq!((m.atime(), m.atime_nsec()), (1_000_000, 5));
            assert_eq!(fs::read(&dest).unwrap(), big);
            assert_ne!(mover.0.load(Ordering::Relaxed), UNTRIED);
            // The learnt method serves the next file too; an empty file copies as empty.
            let empty = from.join(format!("empty{i}"));
            fs::write(&empty, b"").unwrap();
            copy(&empty, &dir.path().join(format!("e{i}")), 0o600, &mover);
            assert_eq!(fs::read(dir.path().join(format!("e{i}"))).unwrap(), b"");
        }
    }

    #[test]
    fn whatever_is_in_the_way_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::write(&src, b"new").unwrap();
        let mover = Mover::default();
        // A directory tree, a file, a dangling symlink (never followed) at the destination.
        let d = dir.path().join("d");
        fs::create_dir_all(d.join("sub")).unwrap();
        fs::write(d.join("sub/f"), b"x").unwrap();
        copy(&src, &d, 0o644, &mover);
        let f = dir.path().join("f");
        fs::write(&f, b"old old old").unwrap();
        copy(&src, &f, 0o644, &mover);
        let l = dir.path().join("l");
        std::os::unix::fs::symlink(dir.path().join("target"), &l).unwrap();
        copy(&src, &l, 0o644, &mover);
        for p in [&d, &f, &l] {
            assert!(
                fs::symlink_metadata(p).unwrap().is_file(),
                "{}",
                p.display()
            );
            assert_eq!(fs::read(p).unwrap(), b"new");
        }
        assert!(
            !dir.path().join("target").exists(),
            "the link was not followed"
        );
    }
}
