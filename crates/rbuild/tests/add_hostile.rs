//! A hostile local archive in `ADD`: entries that climb out with `..`, absolute entry names, an
//! absolute symlink followed by a file written through it, a symlink replaced by a file of the
//! same name, hardlinks to paths outside, and a destination that is itself a symlink out. Nothing
//! may land outside the image's rootfs (the host directory the links point at stays untouched),
//! and what lands inside is checked entry by entry.
//!
//! BuildKit (containerd's `archive.Apply`) resolves every entry inside the destination as if it
//! were `/`. Where rbuild differs today, the test pins rbuild's behaviour and says so: entries
//! climbing out with `..` are skipped (BuildKit writes them clamped to the destination), and a
//! file through a symlink that leads out of the destination fails the build (BuildKit writes it
//! below the destination). Both are safe; neither writes outside.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

mod common;

use common::{assert_ok, env, RBUILD};

/// One raw tar entry: names are written byte for byte (the tar crate's setters refuse `..`).
enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

fn archive(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (name, link, kind, data): (&str, &str, tar::EntryType, &[u8]) = match e {
            Entry::File(n, d) => (n, "", tar::EntryType::Regular, d),
            Entry::Symlink(n, l) => (n, l, tar::EntryType::Symlink, b""),
            Entry::Hardlink(n, l) => (n, l, tar::EntryType::Link, b""),
        };
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        builder.append(&h, data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// Builds `FROM base` + `prelude` + `ADD a.tar /in/` with the archive, into a local directory.
fn add_build(tar: &[u8], prelude: &str) -> (Output, tempfile::TempDir) {
    let env = env().expect("checked by the caller");
    let ctx = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("a.tar"), tar).unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        format!("ARG BASE\nFROM $BASE\n{prelude}ADD a.tar /in/\n"),
    )
    .unwrap();
    let out = Command::new(RBUILD)
        .arg("--root")
        .arg(root.path())
        .env("DOCKER_CONFIG", ctx.path().join("no-docker-config"))
        .args(["build", "--progress=plain", "--build-arg"])
        .arg(format!("BASE={}", env.base))
        .arg("--output")
        .arg(format!("type=local,dest={}", dest.path().display()))
        .arg(ctx.path())
        .output()
        .unwrap();
    (out, dest)
}

/// Every path below `dir` (relative, sorted), and `dir`'s listing must equal `want`.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}

/// A host directory with one file, which no archive may change.
struct Victim {
    dir: tempfile::TempDir,
}

impl Victim {
    fn new() -> Victim {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("victim.txt"), "untouched\n").unwrap();
        Victim { dir }
    }
    fn path(&self) -> String {
        self.dir.path().to_string_lossy().into_owned()
    }
    fn assert_untouched(&self) {
        assert_eq!(tree(self.dir.path()), ["victim.txt"], "written outside");
        assert_eq!(
            fs::read_to_string(self.dir.path().join("victim.txt")).unwrap(),
            "untouched\n"
        );
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn dotdot_and_absolute_entry_names_stay_inside() {
    let Some(_) = env() else { return };
    let victim = Victim::new();
    let up = format!("../../../../../../../..{}/dotdot.txt", victim.path());
    let tar = archive(&[
        Entry::File("ok.txt", b"ok\n"),
        Entry::File("../escape.txt", b"bad\n"),
        Entry::File("sub/../../escape2.txt", b"bad\n"),
        Entry::File(&up, b"bad\n"),
        Entry::File("/abs-entry.txt", b"abs\n"),
        Entry::Hardlink("ok-link.txt", "ok.txt"),
    ]);
    let (out, dest) = add_build(&tar, "");
    assert_ok(&out);
    victim.assert_untouched();
    // The absolute name is taken relative to the destination, a hardlink inside is kept; the
    // climbing entries are skipped (BuildKit would write escape.txt and escape2.txt to /in).
    let dir = dest.path().join("in");
    assert_eq!(
        tree(&dir),
        ["abs-entry.txt", "ok-link.txt", "ok.txt"],
        "{}",
        stderr(&out)
    );
    assert_eq!(
        fs::read_to_string(dir.join("abs-entry.txt")).unwrap(),
        "abs\n"
    );
    assert!(!dest.path().join("escape.txt").exists());
    assert!(!dest.path().join("escape2.txt").exists());
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(dir.join("ok.txt")).unwrap().ino(),
        fs::metadata(dir.join("ok-link.txt")).unwrap().ino()
    );
}

#[test]
fn absolute_symlinks_are_kept_and_never_written_through() {
    let Some(_) = env() else { return };
    let victim = Victim::new();
    // A link to the host's directory (absolute, so inside the image it means the image's path):
    // kept as a symlink with its target verbatim.
    let tar = archive(&[
        Entry::Symlink("etc-link", "/etc"),
        Entry::Symlink("victim-dir", &victim.path()),
        // A symlink to the victim file, then a regular file of the same name: the file replaces
        // the link (as in BuildKit), the victim is not written through it.
        Entry::Symlink("replaced", &format!("{}/victim.txt", victim.path())),
        Entry::File("replaced", b"replaced\n"),
    ]);
    let (out, dest) = add_build(&tar, "");
    assert_ok(&out);
    victim.assert_untouched();
    let dir = dest.path().join("in");
    assert_eq!(
        fs::read_link(dir.join("etc-link"))
            .unwrap()
            .to_string_lossy(),
        "/etc"
    );
    assert_eq!(
        fs::read_link(dir.join("victim-dir"))
            .unwrap()
            .to_string_lossy(),
        victim.path()
    );
    let replaced = fs::symlink_metadata(dir.join("replaced")).unwrap();
    assert!(replaced.is_file(), "{replaced:?}");
    assert_eq!(
        fs::read_to_string(dir.join("replaced")).unwrap(),
        "replaced\n"
    );

    // A file through that link: refused (BuildKit would write it at
    // /in/<victim path>/through.txt); the host's directory gets nothing either way.
    let tar = archive(&[
        Entry::Symlink("victim-dir", &victim.path()),
        Entry::File("victim-dir/through.txt", b"through\n"),
        Entry::File("victim-dir/victim.txt", b"overwritten\n"),
    ]);
    let (out, _dest) = add_build(&tar, "");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("outside of destination"),
        "{}",
        stderr(&out)
    );
    victim.assert_untouched();
}

#[test]
fn hardlinks_out_are_refused() {
    let Some(_) = env() else { return };
    let victim = Victim::new();
    for link in [
        format!("{}/victim.txt", victim.path()),
        format!("../../../../../../../..{}/victim.txt", victim.path()),
    ] {
        let tar = archive(&[
            Entry::File("ok.txt", b"ok\n"),
            Entry::Hardlink("out-link", &link),
        ]);
        let (out, _dest) = add_build(&tar, "");
        // BuildKit resolves the target inside the destination, finds nothing there and fails
        // as well.
        assert_eq!(out.status.code(), Some(1), "{link}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("outside of destination"),
            "{link}: {}",
            stderr(&out)
        );
        victim.assert_untouched();
    }
}

#[test]
fn destination_symlinked_out_resolves_inside_the_rootfs() {
    let Some(_) = env() else { return };
    let victim = Victim::new();
    // /in is a symlink to the host's victim directory's path: inside the image that path is
    // the image's own, so the archive lands there, in the rootfs.
    let tar = archive(&[Entry::File("landed.txt", b"landed\n")]);
    let prelude = format!("RUN ln -s {} /in\n", victim.path());
    let (out, dest) = add_build(&tar, &prelude);
    assert_ok(&out);
    victim.assert_untouched();
    let inside = dest
        .path()
        .join(victim.path().trim_start_matches('/'))
        .join("landed.txt");
    assert_eq!(fs::read_to_string(&inside).unwrap(), "landed\n");
}
