//! The busybox base image's contents: a deterministic root filesystem tar built from the host's
//! busybox-static binary (applet links, /etc/passwd, /etc/group, /tmp, /root) and its image config.

use crate::{io_err, need_tool, run, TestError};
use rbuild_oci::{DiffId, History, ImageConfig, RootFs, RunConfig};
use std::fs;
use std::path::Path;
use std::process::Command;

/// The PATH of the busybox base image config.
pub const BUSYBOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

struct TarEntry {
    path: String,
    kind: Kind,
    mode: u32,
}

enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

/// The host's busybox binary and its applet list.
fn host_busybox() -> Result<(Vec<u8>, String), TestError> {
    let bb = need_tool("busybox")?;
    let bb = fs::canonicalize(&bb).unwrap_or(bb);
    let binary = fs::read(&bb).map_err(io_err("read", &bb))?;
    let list = run(Command::new(&bb).arg("--list"))?;
    Ok((binary, list))
}

fn busybox_entries(binary: Vec<u8>, list: &str) -> Vec<TarEntry> {
    let mut entries = vec![
        TarEntry { path: "bin".into(), kind: Kind::Dir, mode: 0o755 },
        TarEntry { path: "bin/busybox".into(), kind: Kind::File(binary), mode: 0o755 },
        TarEntry { path: "etc".into(), kind: Kind::Dir, mode: 0o755 },
        TarEntry { path: "etc/group".into(), kind: Kind::File(b"root:x:0:\nnogroup:x:65534:\n".to_vec()), mode: 0o644 },
        TarEntry {
            path: "etc/passwd".into(),
            kind: Kind::File(b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n".to_vec()),
            mode: 0o644,
        },
        TarEntry { path: "root".into(), kind: Kind::Dir, mode: 0o700 },
        TarEntry { path: "tmp".into(), kind: Kind::Dir, mode: 0o1777 },
        TarEntry { path: "usr".into(), kind: Kind::Dir, mode: 0o755 },
        TarEntry { path: "usr/bin".into(), kind: Kind::Dir, mode: 0o755 },
        TarEntry { path: "usr/bin/env".into(), kind: Kind::Symlink("/bin/busybox".into()), mode: 0o777 },
    ];
    let mut applets: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .collect();
    applets.sort_unstable();
    applets.dedup();
    for a in applets {
        entries.push(TarEntry {
            path: format!("bin/{a}"),
            kind: Kind::Symlink("busybox".into()),
            mode: 0o777,
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    entries
}

/// The uncompressed busybox root filesystem tar (sorted, mtime 0, numeric owners 0:0).
pub fn busybox_rootfs_tar_bytes() -> Result<Vec<u8>, TestError> {
    let (binary, list) = host_busybox()?;
    rootfs_tar_of(binary, &list)
}

/// The root filesystem tar of a busybox `binary` with a link per applet of `list`.
pub(crate) fn rootfs_tar_of(binary: Vec<u8>, list: &str) -> Result<Vec<u8>, TestError> {
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    let werr = |e: std::io::Error| TestError::Other(format!("write busybox tar: {e}"));
    for e in busybox_entries(binary, list) {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mode(e.mode);
        match e.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, format!("{}/", e.path), std::io::empty())
                    .map_err(werr)?;
            }
            Kind::File(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, &e.path, data.as_slice())
                    .map_err(werr)?;
            }
            Kind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, &e.path, &target).map_err(werr)?;
            }
        }
    }
    b.into_inner().map_err(werr)
}

/// Writes the busybox root filesystem as an uncompressed tar (for `FROM scratch` + `ADD rootfs.tar /`).
pub fn make_busybox_rootfs_tar(path: &Path) -> Result<(), TestError> {
    let bytes = busybox_rootfs_tar_bytes()?;
    fs::write(path, bytes).map_err(io_err("write", path))
}

/// The busybox base image's config for `architecture` (linux).
pub fn busybox_config(architecture: &str, diff_id: DiffId) -> ImageConfig {
    ImageConfig {
        architecture: architecture.to_string(),
        os: "linux".into(),
        created: Some("1970-01-01T00:00:00Z".into()),
        config: RunConfig {
            env: Some(vec![format!("PATH={BUSYBOX_PATH}")]),
            cmd: Some(vec!["sh".into()]),
            ..Default::default()
        },
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![diff_id],
        },
        history: vec![History {
            created: Some("1970-01-01T00:00:00Z".into()),
            created_by: Some("rbuild-testsupport: busybox-static base".into()),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_tar_is_deterministic_and_complete() {
        if need_tool("busybox").is_err() {
            println!("SKIPPED: busybox not installed");
            return;
        }
        let a = busybox_rootfs_tar_bytes().unwrap();
        let b = busybox_rootfs_tar_bytes().unwrap();
        assert_eq!(a, b);
        let mut ar = tar::Archive::new(a.as_slice());
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            assert_eq!(e.header().mtime().unwrap(), 0);
            assert_eq!(e.header().uid().unwrap(), 0);
            let name = e.path().unwrap().to_string_lossy().into_owned();
            if name == "tmp/" {
                assert_eq!(e.header().mode().unwrap(), 0o1777);
            }
            names.push(name);
        }
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for want in [
            "bin/busybox",
            "bin/sh",
            "bin/ls",
            "bin/sha256sum",
            "bin/[",
            "bin/whoami",
            "etc/passwd",
            "etc/group",
            "root/",
            "tmp/",
        ] {
            assert!(names.iter().any(|n| n == want), "missing {want}");
        }
    }
}

#[cfg(test)]
mod root_tests {
    use super::*;
    use crate::require_root;

    /// The rootfs really works: unpack it and run a few applets in a chroot.
    #[test]
    fn rootfs_runs_in_chroot() {
        if !require_root().unwrap() || need_tool("busybox").is_err() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let tar = busybox_rootfs_tar_bytes().unwrap();
        let root = t.path().join("rootfs");
        fs::create_dir(&root).unwrap();
        let mut ar = tar::Archive::new(tar.as_slice());
        ar.set_preserve_permissions(true);
        ar.unpack(&root).unwrap();
        let out = Command::new("chroot")
            .arg(&root)
            .args(["/bin/sh", "-c", "echo hi > /tmp/x && cat /tmp/x && whoami && id -u nobody && ls -ld /tmp && test -d /root && echo ok"])
            .env_clear()
            .env("PATH", BUSYBOX_PATH)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines[0..3], ["hi", "root", "65534"], "{stdout}");
        assert!(lines[3].starts_with("drwxrwxrwt"), "{stdout}");
        assert_eq!(lines[4], "ok");
    }
}
