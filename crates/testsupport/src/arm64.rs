//! The arm64 busybox fixture: Debian's `busybox-static` package for arm64 (downloaded once with
//! `apt-get download busybox-static:arm64` into a cache directory, never installed), its root
//! filesystem tar (the same layout as the amd64 one), and the emulator that runs it here.
//!
//! Without the package the fixture skips loudly ([`arm64_busybox_deb`] returns `None`), unless
//! the environment requires it (`RBUILD_REQUIRE_ROOT=1` or `CI=true`), where it fails.

use crate::busybox::rootfs_tar_of;
use crate::{io_err, need_tool, run, TestError, REQUIRE_ROOT_ENV};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Env var: the directory that holds (or receives) `busybox-static_*_arm64.deb`.
pub const ARM64_DEB_DIR_ENV: &str = "RBUILD_DEB_CACHE";
/// The default of [`ARM64_DEB_DIR_ENV`] (`.ci/run` downloads the package there).
pub const DEFAULT_DEB_DIR: &str = "/var/cache/rbuild-test/debs";

/// True when a missing fixture must fail the test instead of skipping it.
fn required() -> bool {
    std::env::var(REQUIRE_ROOT_ENV).as_deref() == Ok("1")
        || std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn deb_dir() -> PathBuf {
    std::env::var_os(ARM64_DEB_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DEB_DIR))
}

fn find_deb(dir: &Path) -> Option<PathBuf> {
    let mut debs: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("busybox-static_") && n.ends_with("_arm64.deb"))
        })
        .collect();
    debs.sort();
    debs.pop()
}

/// Downloads the package into `dir` (root only; the arm64 architecture must be known to apt,
/// as `.ci/run` arranges: `dpkg --add-architecture arm64 && apt-get update`).
fn download(dir: &Path) -> Result<(), TestError> {
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    run(Command::new("apt-get")
        .args(["download", "-q", "busybox-static:arm64"])
        .current_dir(dir))
    .map(|_| ())
}

/// The cached `busybox-static_*_arm64.deb`, downloaded first if missing (as root). `None` after
/// printing `SKIPPED: ...` when it cannot be had, or an error when the environment requires it.
pub fn arm64_busybox_deb() -> Result<Option<PathBuf>, TestError> {
    let dir = deb_dir();
    if let Some(deb) = find_deb(&dir) {
        return Ok(Some(deb));
    }
    let why = if rustix::process::geteuid().is_root() {
        match download(&dir) {
            Ok(()) => match find_deb(&dir) {
                Some(deb) => return Ok(Some(deb)),
                None => "apt-get download left no .deb".to_string(),
            },
            Err(e) => e.to_string(),
        }
    } else {
        "not root, cannot download it".to_string()
    };
    let message = format!(
        "busybox-static:arm64 not found in {} ({why}); run .ci/run, or: dpkg --add-architecture arm64 && apt-get update && (cd {} && apt-get download busybox-static:arm64)",
        dir.display(),
        dir.display()
    );
    if required() {
        return Err(TestError::Required(message));
    }
    println!("SKIPPED: {message}");
    eprintln!("SKIPPED: {message}");
    Ok(None)
}

/// `/bin/busybox` of the arm64 package (read with `dpkg-deb --fsys-tarfile`).
pub fn arm64_busybox_binary(deb: &Path) -> Result<Vec<u8>, TestError> {
    let out = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .output()
        .map_err(|e| TestError::Other(format!("dpkg-deb --fsys-tarfile {}: {e}", deb.display())))?;
    if !out.status.success() {
        return Err(TestError::Other(format!(
            "dpkg-deb --fsys-tarfile {}: {}",
            deb.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let mut ar = tar::Archive::new(out.stdout.as_slice());
    let bad = |e: std::io::Error| TestError::Other(format!("read {}: {e}", deb.display()));
    for entry in ar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        if path.trim_start_matches("./") == "bin/busybox" {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(bad)?;
            return Ok(data);
        }
    }
    Err(TestError::Other(format!(
        "{} has no ./bin/busybox",
        deb.display()
    )))
}

/// The user-mode emulator of arm64 on this host (`qemu-aarch64-static`), if installed.
pub fn qemu_aarch64() -> Option<PathBuf> {
    need_tool("qemu-aarch64-static").ok()
}

/// The arm64 busybox root filesystem tar (the layout of the amd64 one: /bin/busybox, a link
/// per applet, /etc/passwd, /etc/group, /tmp, /root), or `None` (skipped) without the package.
/// The applets are listed by the arm64 busybox itself under `qemu-aarch64-static` when it is
/// installed, else by the host's busybox (the same Debian version has the same applets).
pub fn arm64_busybox_rootfs_tar_bytes() -> Result<Option<Vec<u8>>, TestError> {
    let Some(deb) = arm64_busybox_deb()? else {
        return Ok(None);
    };
    let binary = arm64_busybox_binary(&deb)?;
    let list = match qemu_aarch64() {
        Some(qemu) => {
            let tmp =
                tempfile::tempdir().map_err(io_err("create temp dir", std::env::temp_dir()))?;
            let bb = tmp.path().join("busybox");
            fs::write(&bb, &binary).map_err(io_err("write", &bb))?;
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&bb, fs::Permissions::from_mode(0o755))
                .map_err(io_err("chmod", &bb))?;
            run(Command::new(qemu).arg(&bb).arg("--list"))?
        }
        None => {
            let bb = need_tool("busybox")?;
            run(Command::new(bb).arg("--list"))?
        }
    };
    rootfs_tar_of(binary, &list).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm64_rootfs_has_an_aarch64_busybox() {
        let Some(tar) = arm64_busybox_rootfs_tar_bytes().unwrap() else {
            return;
        };
        let mut ar = tar::Archive::new(tar.as_slice());
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            if name == "bin/busybox" {
                let mut head = [0u8; 20];
                e.read_exact(&mut head).unwrap();
                // ELF, 64-bit, little-endian, e_machine 183 (AArch64).
                assert_eq!(&head[..6], b"\x7fELF\x02\x01");
                assert_eq!(u16::from_le_bytes([head[18], head[19]]), 183);
            }
            names.push(name);
        }
        for want in ["bin/busybox", "bin/sh", "bin/uname", "etc/passwd", "tmp/"] {
            assert!(names.iter().any(|n| n == want), "missing {want}");
        }
        assert_eq!(tar, arm64_busybox_rootfs_tar_bytes().unwrap().unwrap());
    }
}
