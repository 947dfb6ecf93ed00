//! The sending side of fsutil's DiffCopy protocol, as the session's `FileSync/DiffCopy` serves a
//! local directory (the build context) to the daemon: one STAT packet per kept entry in
//! fsutil's walk order (a directory's entries sorted by name, depth first), an empty STAT to end
//! the listing, then the regular files the daemon asks for (REQ by the entry's index) as DATA
//! packets ending with an empty one, until the daemon's FIN, which is answered with FIN.
//! `.dockerignore` patterns and the daemon's include/exclude/followpaths metadata filter the walk.

use crate::proto::fsutil_types::{packet::PacketType, Packet, Stat};
use rbuild_worker::dockerignore::{Matcher, Verdict};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::Status;

/// Go's `os.FileMode` bits that fsutil's `Stat.mode` carries.
mod go_mode {
    pub const DIR: u32 = 1 << 31;
    pub const SYMLINK: u32 = 1 << 27;
    pub const DEVICE: u32 = 1 << 26;
    pub const NAMED_PIPE: u32 = 1 << 25;
    pub const SOCKET: u32 = 1 << 24;
    pub const SETUID: u32 = 1 << 23;
    pub const SETGID: u32 = 1 << 22;
    pub const CHAR_DEVICE: u32 = 1 << 21;
    pub const STICKY: u32 = 1 << 20;
    /// Every type bit: a mode without them is a regular file, whose data can be requested.
    pub const TYPE: u32 = DIR | SYMLINK | NAMED_PIPE | SOCKET | DEVICE | CHAR_DEVICE | (1 << 19);
}

/// Size of one DATA packet's payload.
const CHUNK: usize = 32 * 1024;

/// What to send of one directory.
#[derive(Debug, Clone)]
pub struct WalkFilter {
    /// `.dockerignore`-style exclude patterns (rbuild's own, and the daemon's `exclude-patterns`).
    pub excludes: Vec<String>,
    /// The daemon's `include-patterns` (and `followpaths`): when any, only paths they match
    /// (and the directories leading to them) are sent.
    pub includes: Vec<String>,
}

/// One entry of the listing: its stat and where it is on the host.
struct Entry {
    stat: Stat,
    host: PathBuf,
}

/// Converts a file's metadata to Go's `FileMode` bits as fsutil sends them.
pub(crate) fn go_file_mode(meta: &fs::Metadata) -> u32 {
    let mode = meta.permissions().mode();
    let mut out = mode & 0o777;
    if mode & 0o4000 != 0 {
        out |= go_mode::SETUID;
    }
    if mode & 0o2000 != 0 {
        out |= go_mode::SETGID;
    }
    if mode & 0o1000 != 0 {
        out |= go_mode::STICKY;
    }
    let ft = meta.file_type();
    if ft.is_dir() {
        out |= go_mode::DIR;
    } else if ft.is_symlink() {
        out |= go_mode::SYMLINK;
    } else if ft.is_block_device() {
        out |= go_mode::DEVICE;
    } else if ft.is_char_device() {
        out |= go_mode::DEVICE | go_mode::CHAR_DEVICE;
    } else if ft.is_fifo() {
        out |= go_mode::NAMED_PIPE;
    } else if ft.is_socket() {
        out |= go_mode::SOCKET;
    }
    out
}

/// The stat fsutil sends for `meta` at `rel`: owners reset to 0:0 as BuildKit's client does.
fn stat_of(rel: &str, host: &Path, meta: &fs::Metadata) -> io::Result<Stat> {
    let mode = go_file_mode(meta);
    let linkname = if meta.file_type().is_symlink() {
        fs::read_link(host)?
            .as_os_str()
            .to_string_lossy()
            .into_owned()
    } else {
        String::new()
    };
    let (devmajor, devminor) = if mode & go_mode::DEVICE != 0 {
        let rdev = meta.rdev();
        (
            i64::from(rustix::fs::major(rdev)),
            i64::from(rustix::fs::minor(rdev)),
        )
    } else {
        (0, 0)
    };
    Ok(Stat {
        path: rel.to_string(),
        mode,
        uid: 0,
        gid: 0,
        size: if meta.is_file() { meta.len() as i64 } else { 0 },
        mod_time: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        linkname,
        devmajor,
        devminor,
        xattrs: Default::default(),
    })
}

/// Walks `root` in fsutil's order, keeping what `filter` keeps (blocking).
fn walk(root: &Path, filter: &WalkFilter) -> io::Result<Vec<Entry>> {
    let excludes = Matcher::new(&filter.excludes);
    let includes: Vec<Vec<String>> = filter
        .includes
        .iter()
        .map(|p| {
            p.split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|p| !p.is_empty())
        .collect();
    let include_matcher = Matcher::new(&filter.includes);
    let include_verdict = |rel: &str, is_dir: bool| -> Verdict {
        if includes.is_empty() {
            return Verdict::Keep;
        }
        let parts: Vec<&str> = rel.split('/').collect();
        if include_matcher.excluded(rel) {
            // Matched by an include pattern (or under a matched directory).
            return Verdict::Keep;
        }
        let leads_to = includes.iter().any(|inc| {
            inc.len() > parts.len()
                && inc
                    .iter()
                    .zip(&parts)
                    .all(|(i, p)| i == p || i.contains(['*', '?', '[']))
        });
        if is_dir && leads_to {
            Verdict::Probe
        } else {
            Verdict::Drop
        }
    };
    let mut out = Vec::new();
    walk_dir(root, "", &excludes, &include_verdict, &mut out)?;
    Ok(out)
}

/// Appends the kept entries under `dir` (relative path `prefix`) to `out`; returns whether any
/// was kept.
fn walk_dir(
    dir: &Path,
    prefix: &str,
    excludes: &Matcher,
    include: &dyn Fn(&str, bool) -> Verdict,
    out: &mut Vec<Entry>,
) -> io::Result<bool> {
    let mut names: Vec<_> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut kept = false;
    for name in names {
        let host = dir.join(&name);
        let name = name.to_string_lossy();
        let rel = if prefix.is_empty() {
            name.into_owned()
        } else {
            format!("{prefix}/{name}")
        };
        let meta = fs::symlink_metadata(&host)?;
        let is_dir = meta.is_dir();
        let verdict = excludes.verdict(&rel, is_dir).and(include(&rel, is_dir));
        match verdict {
            Verdict::Drop => {}
            Verdict::Keep => {
                out.push(Entry {
                    stat: stat_of(&rel, &host, &meta)?,
                    host: host.clone(),
                });
                kept = true;
                if is_dir {
                    walk_dir(&host, &rel, excludes, include, out)?;
                }
            }
            Verdict::Probe => {
                let at = out.len();
                out.push(Entry {
                    stat: stat_of(&rel, &host, &meta)?,
                    host: host.clone(),
                });
                if walk_dir(&host, &rel, excludes, include, out)? {
                    kept = true;
                } else {
                    out.truncate(at);
                }
            }
        }
    }
    Ok(kept)
}

fn packet(kind: PacketType) -> Packet {
    Packet {
        r#type: kind as i32,
        ..Default::default()
    }
}

/// Serves `root` to one DiffCopy call: returns the stream of packets to send; `incoming` are
/// the daemon's packets.
pub(crate) fn send_dir(
    root: PathBuf,
    filter: WalkFilter,
    mut incoming: tonic::Streaming<Packet>,
) -> mpsc::Receiver<Result<Packet, Status>> {
    let (tx, rx) = mpsc::channel::<Result<Packet, Status>>(64);
    tokio::spawn(async move {
        let listing = {
            let root = root.clone();
            tokio::task::spawn_blocking(move || walk(&root, &filter)).await
        };
        let entries = match listing {
            Ok(Ok(entries)) => Arc::new(entries),
            Ok(Err(e)) => {
                let mut p = packet(PacketType::PacketErr);
                p.data = format!("walking {}: {e}", root.display())
                    .into_bytes()
                    .into();
                let _ = tx.send(Ok(p)).await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                return;
            }
        };
        let stats_tx = tx.clone();
        let stat_entries = entries.clone();
        let stats = tokio::spawn(async move {
            for entry in stat_entries.iter() {
                let mut p = packet(PacketType::PacketStat);
                p.stat = Some(entry.stat.clone());
                if stats_tx.send(Ok(p)).await.is_err() {
                    return;
                }
            }
            let _ = stats_tx.send(Ok(packet(PacketType::PacketStat))).await;
        });
        let mut pending = Vec::new();
        loop {
            let message = match incoming.message().await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "DiffCopy stream from the daemon ended");
                    break;
                }
            };
            match PacketType::try_from(message.r#type) {
                Ok(PacketType::PacketReq) => {
                    let Some(entry) = entries.get(message.id as usize) else {
                        let mut p = packet(PacketType::PacketErr);
                        p.data = format!("invalid file id {}", message.id)
                            .into_bytes()
                            .into();
                        let _ = tx.send(Ok(p)).await;
                        break;
                    };
                    if entry.stat.mode & go_mode::TYPE != 0 {
                        continue;
                    }
                    let host = entry.host.clone();
                    let id = message.id;
                    let tx = tx.clone();
                    pending.push(tokio::task::spawn_blocking(move || {
                        send_file(&host, id, &tx)
                    }));
                }
                Ok(PacketType::PacketFin) => {
                    let _ = stats.await;
                    for p in pending.drain(..) {
                        let _ = p.await;
                    }
                    let _ = tx.send(Ok(packet(PacketType::PacketFin))).await;
                    break;
                }
                Ok(PacketType::PacketErr) => {
                    tracing::debug!(
                        message = %String::from_utf8_lossy(&message.data),
                        "the daemon reported a file sync error"
                    );
                    break;
                }
                _ => {}
            }
        }
    });
    rx
}

/// Sends one file's content as DATA packets and the empty DATA that ends it (blocking).
fn send_file(host: &Path, id: u32, tx: &mpsc::Sender<Result<Packet, Status>>) {
    if let Ok(mut file) = fs::File::open(host) {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let mut p = packet(PacketType::PacketData);
                    p.id = id;
                    p.data = bytes::Bytes::copy_from_slice(&buf[..n]);
                    if tx.blocking_send(Ok(p)).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
    let mut p = packet(PacketType::PacketData);
    p.id = id;
    let _ = tx.blocking_send(Ok(p));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(root: &Path, filter: &WalkFilter) -> Vec<(String, u32)> {
        walk(root, filter)
            .unwrap()
            .into_iter()
            .map(|e| (e.stat.path, e.stat.mode))
            .collect()
    }

    /// fsutil's order: a directory's entries sorted by name, each directory followed by its
    /// children (so `a/x` before `a-b`, as fsutil's path comparison with `/` lowest requires).
    #[test]
    fn the_walk_follows_fsutils_order_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("a")).unwrap();
        fs::write(root.join("a/x"), "x").unwrap();
        fs::write(root.join("a-b"), "ab").unwrap();
        fs::write(root.join("B"), "upper").unwrap();
        std::os::unix::fs::symlink("a/x", root.join("link")).unwrap();
        fs::set_permissions(root.join("a-b"), fs::Permissions::from_mode(0o4755)).unwrap();
        let all = WalkFilter {
            excludes: vec![],
            includes: vec![],
        };
        let got = listing(root, &all);
        let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["B", "a", "a/x", "a-b", "link"]);
        let mode = |p: &str| got.iter().find(|(q, _)| q == p).unwrap().1;
        assert_eq!(mode("a") & go_mode::DIR, go_mode::DIR);
        assert_eq!(mode("link") & go_mode::SYMLINK, go_mode::SYMLINK);
        assert_eq!(mode("a-b"), go_mode::SETUID | 0o755);
        assert_eq!(mode("B") & go_mode::TYPE, 0);
    }

    /// `.dockerignore` patterns with an exception, and the daemon's include patterns.
    #[test]
    fn excludes_and_includes_filter_the_walk() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("logs/keep")).unwrap();
        fs::write(root.join("logs/a.log"), "").unwrap();
        fs::write(root.join("logs/keep/b.log"), "").unwrap();
        fs::write(root.join("main.go"), "").unwrap();
        fs::write(root.join("secret"), "").unwrap();
        let excluded = WalkFilter {
            excludes: vec!["logs".into(), "!logs/keep".into(), "secret".into()],
            includes: vec![],
        };
        let paths: Vec<String> = listing(root, &excluded).into_iter().map(|e| e.0).collect();
        assert_eq!(paths, ["logs", "logs/keep", "logs/keep/b.log", "main.go"]);
        let included = WalkFilter {
            excludes: vec![],
            includes: vec!["logs/keep".into()],
        };
        let paths: Vec<String> = listing(root, &included).into_iter().map(|e| e.0).collect();
        assert_eq!(paths, ["logs", "logs/keep", "logs/keep/b.log"]);
    }
}
