//! Test helpers: tar building/reading, mount checks.

use std::io::Read;
use std::path::{Path, PathBuf};

use rbuild_snapshotter::{Backend, DiffOptions, SnapshotId, Snapshotter};
use tar::{EntryType, Header};

pub const MTIME: u64 = 1_600_000_000;

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Skips (loudly) without root; `RBUILD_REQUIRE_ROOT=1` turns the skip into a failure.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::util::is_root() {
            if std::env::var_os("RBUILD_REQUIRE_ROOT").is_some() {
                panic!("this test needs root");
            }
            eprintln!("SKIPPED: needs root");
            return;
        }
    };
}

pub struct Env {
    pub _dir: tempfile::TempDir,
    pub sn: Snapshotter,
}

impl Env {
    pub fn new(backend: Backend) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let sn = Snapshotter::open_with_backend(&dir.path().join("snapshots-v1"), backend)
            .expect("open");
        Env { _dir: dir, sn }
    }

    pub fn root(&self) -> PathBuf {
        self.sn.root().to_path_buf()
    }

    /// This snapshotter's own dir in `area` (`active`, `mnt`, `tmp`).
    pub fn own(&self, area: &str) -> PathBuf {
        own_dir(&self.sn, area)
    }

    pub fn diff(&self, id: &SnapshotId, opts: &DiffOptions) -> Vec<u8> {
        let mut out = Vec::new();
        self.sn.write_diff(id, &mut out, opts).expect("write_diff");
        out
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let left = mounts_under(&self.root());
            assert!(left.is_empty(), "mounts left behind: {left:?}");
        }
    }
}

/// Mount points under `root` per /proc/self/mountinfo.
pub fn mounts_under(root: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let prefix = root.to_string_lossy().into_owned();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// One tar entry, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct E {
    pub path: String,
    pub kind: EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub link: Option<String>,
    pub data: Vec<u8>,
    pub xattrs: Vec<(String, Vec<u8>)>,
    pub dev: (u32, u32),
    pub uname: Vec<u8>,
}

pub fn read_entries(bytes: &[u8]) -> Vec<E> {
    let mut ar = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        let mut xattrs = Vec::new();
        if let Some(exts) = e.pax_extensions().expect("pax") {
            for x in exts {
                let x = x.expect("pax ext");
                if let Some(name) = x.key().expect("key").strip_prefix("SCHILY.xattr.") {
                    xattrs.push((name.to_string(), x.value_bytes().to_vec()));
                }
            }
        }
        let h = e.header().clone();
        let path = e.path().expect("path").to_string_lossy().into_owned();
        let link = e
            .link_name()
            .expect("link")
            .map(|l| l.to_string_lossy().into_owned());
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("data");
        out.push(E {
            path,
            kind: h.entry_type(),
            mode: h.mode().expect("mode"),
            uid: h.uid().expect("uid"),
            gid: h.gid().expect("gid"),
            mtime: h.mtime().expect("mtime"),
            link,
            data,
            xattrs,
            dev: (
                h.device_major().ok().flatten().unwrap_or(0),
                h.device_minor().ok().flatten().unwrap_or(0),
            ),
            uname: h.username_bytes().map(|b| b.to_vec()).unwrap_or_default(),
        });
    }
    out
}

pub fn find<'a>(entries: &'a [E], path: &str) -> Option<&'a E> {
    entries
        .iter()
        .find(|e| e.path.trim_end_matches('/') == path.trim_end_matches('/'))
}

pub fn paths(entries: &[E]) -> Vec<String> {
    entries.iter().map(|e| e.path.clone()).collect()
}

/// `tar -tvf -` (GNU tar) over `bytes`.
pub fn gnu_tar_list(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("tar")
        .args(["--numeric-owner", "-tvf", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run GNU tar");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("write to tar");
    let out = child.wait_with_output().expect("tar output");
    assert!(
        out.status.success(),
        "tar -tvf failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds layer tars for tests, including hostile names the `tar` crate would refuse.
pub struct TarB {
    b: tar::Builder<Vec<u8>>,
}

impl TarB {
    pub fn new() -> TarB {
        TarB {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: EntryType, mode: u32, uid: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_mtime(MTIME);
        h.set_size(0);
        h
    }

    /// Appends with the name written raw (no `..` check), for short names.
    fn raw(&mut self, mut h: Header, name: &str, link: Option<&str>, data: &[u8]) -> &mut Self {
        {
            let old = h.as_old_mut();
            old.name = [0; 100];
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                old.linkname = [0; 100];
                old.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, data).expect("append");
        self
    }

    pub fn xattrs(&mut self, x: &[(&str, &[u8])]) -> &mut Self {
        let keys: Vec<(String, &[u8])> = x
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
            .collect();
        self.b
            .append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), *v)))
            .expect("pax");
        self
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.raw(Self::header(EntryType::Directory, mode, 0), name, None, b"")
    }

    pub fn file(&mut self, name: &str, mode: u32, uid: u64, data: &[u8]) -> &mut Self {
        self.raw(
            Self::header(EntryType::Regular, mode, uid),
            name,
            None,
            data,
        )
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            Self::header(EntryType::Symlink, 0o777, 0),
            name,
            Some(target),
            b"",
        )
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            Self::header(EntryType::Link, 0o644, 0),
            name,
            Some(target),
            b"",
        )
    }

    pub fn fifo(&mut self, name: &str) -> &mut Self {
        self.raw(Self::header(EntryType::Fifo, 0o600, 0), name, None, b"")
    }

    pub fn chardev(&mut self, name: &str, major: u32, minor: u32) -> &mut Self {
        let mut h = Self::header(EntryType::Char, 0o666, 0);
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        self.raw(h, name, None, b"")
    }

    pub fn whiteout(&mut self, name: &str) -> &mut Self {
        self.raw(Self::header(EntryType::Regular, 0, 0), name, None, b"")
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().expect("finish tar")
    }
}

pub fn apply(env: &Env, parent: Option<&SnapshotId>, tar: &[u8]) -> SnapshotId {
    env.sn
        .apply_layer(parent, &mut &tar[..])
        .expect("apply_layer")
}

pub fn mkfifo(p: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
}

pub fn write(p: &Path, data: &str) {
    std::fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// `sn`'s own dir in `area` (`active`, `mnt`, `tmp`): named like its temp dir.
pub fn own_dir(sn: &Snapshotter, area: &str) -> PathBuf {
    let owner = sn.temp_dir().file_name().expect("owner name");
    sn.root().join(area).join(owner)
}
