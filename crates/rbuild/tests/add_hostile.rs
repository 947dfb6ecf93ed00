//! A hostile local archive in `ADD`: entries that climb out with `..`, absolute entry names, an
//! absolute symlink followed by a file written through it, a symlink replaced by a file of the
//! same name, hardlinks to paths outside, and a destination that is itself a symlink out. Nothing
//! may land outside the image's rootfs (the host directory the links point at stays untouched),
//! and what lands inside is checked entry by entry.
//!
//! The reference is BuildKit: its file op unpacks an ADD archive with moby's
//! `chrootarchive.Untar`, which chroots into the destination directory and untars there, so
//! every entry name and every link is resolved by the kernel with the destination as `/`:
//! `../../x` and `/x` both land at `<dest>/x`, a symlink to `/etc` followed by a later entry
//! leads to `<dest>/etc`, and a hardlink to `/etc/passwd` links `<dest>/etc/passwd`. What the
//! resolution finds missing fails as it fails there (`no such file or directory`).

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

mod common;

use common::{assert_ok, env, RBUILD};

/// One raw tar entry: names are written byte for byte (the tar crate's setters refuse `..`).
enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

fn archive(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (name, link, kind, data): (&str, &str, tar::EntryType, &[u8]) = match e {
            Entry::File(n, d) => (n, "", tar::EntryType::Regular, d),
            Entry::Dir(n) => (n, "", tar::EntryType::Directory, b""),
            Entry::Symlink(n, l) => (n, l, tar::EntryType::Symlink, b""),
            Entry::Hardlink(n, l) => (n, l, tar::EntryType::Link, b""),
        };
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
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
    // BuildKit untars in a chroot at the destination: the absolute name is taken relative to
    // the destination, the climbing names stop at it (`../escape.txt` is `/in/escape.txt`,
    // the long one lands at `/in/<victim path>/dotdot.txt` with its parents created), and a
    // hardlink inside is kept.
    let dir = dest.path().join("in");
    let mut want = vec![
        "abs-entry.txt".to_string(),
        "escape.txt".to_string(),
        "escape2.txt".to_string(),
        "ok-link.txt".to_string(),
        "ok.txt".to_string(),
    ];
    let mut at = String::new();
    for part in victim.path().trim_start_matches('/').split('/') {
        if !at.is_empty() {
            at.push('/');
        }
        at.push_str(part);
        want.push(at.clone());
    }
    want.push(format!("{at}/dotdot.txt"));
    want.sort();
    assert_eq!(tree(&dir), want, "{}", stderr(&out));
    assert_eq!(fs::read_to_string(dir.join("escape.txt")).unwrap(), "bad\n");
    assert_eq!(
        fs::read_to_string(dir.join("escape2.txt")).unwrap(),
        "bad\n"
    );
    assert_eq!(
        fs::read_to_string(dir.join(&at).join("dotdot.txt")).unwrap(),
        "bad\n"
    );
    assert_eq!(
        fs::read_to_string(dir.join("abs-entry.txt")).unwrap(),
        "abs\n"
    );
    // Nothing climbed above the destination into the rest of the image.
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

    // A file through that link: the link is resolved inside the destination (BuildKit's
    // chroot), where nothing is at the victim's path, so the write fails with "no such file or
    // directory", as in BuildKit. The message names the path in the image, not rbuild's mounts.
    let tar = archive(&[
        Entry::Symlink("victim-dir", &victim.path()),
        Entry::File("victim-dir/through.txt", b"through\n"),
        Entry::File("victim-dir/victim.txt", b"overwritten\n"),
    ]);
    let (out, _dest) = add_build(&tar, "");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "failed to unpack a.tar into /in/: /in/victim-dir/through.txt: \
             No such file or directory"
        ),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("snapshots-v1"), "{}", stderr(&out));
    victim.assert_untouched();

    // With the victim's path present inside the destination (directory entries first), the
    // files land there, below the destination, as in BuildKit; a relative link climbing out
    // stops at the destination too.
    let mut dirs = Vec::new();
    let mut at = String::new();
    for part in victim.path().trim_start_matches('/').split('/') {
        at.push_str(part);
        at.push('/');
        dirs.push(at.clone());
    }
    let victim_path = victim.path();
    let mut entries: Vec<Entry> = dirs.iter().map(|d| Entry::Dir(d)).collect();
    entries.extend([
        Entry::Symlink("victim-dir", &victim_path),
        Entry::File("victim-dir/through.txt", b"through\n"),
        Entry::File("victim-dir/victim.txt", b"overwritten\n"),
        Entry::Symlink("up", "../../../../../../../.."),
        Entry::File("up/rel.txt", b"rel\n"),
    ]);
    let (out, dest) = add_build(&archive(&entries), "");
    assert_ok(&out);
    victim.assert_untouched();
    let inner = dest.path().join("in").join(&at);
    assert_eq!(
        fs::read_to_string(inner.join("through.txt")).unwrap(),
        "through\n"
    );
    assert_eq!(
        fs::read_to_string(inner.join("victim.txt")).unwrap(),
        "overwritten\n"
    );
    assert_eq!(
        fs::read_to_string(dest.path().join("in/rel.txt")).unwrap(),
        "rel\n"
    );
    assert!(!dest.path().join("rel.txt").exists());
}

#[test]
fn hardlink_targets_resolve_inside_the_destination() {
    let Some(_) = env() else { return };
    let victim = Victim::new();
    // BuildKit joins a hardlink's target to the destination (its chroot's `/`): a link to an
    // absolute or climbing path links the file of that name inside the destination, and fails
    // with "no such file or directory" when there is none.
    for link in [
        format!("{}/victim.txt", victim.path()),
        format!("../../../../../../../..{}/victim.txt", victim.path()),
    ] {
        let tar = archive(&[
            Entry::File("ok.txt", b"ok\n"),
            Entry::Hardlink("out-link", &link),
        ]);
        let (out, _dest) = add_build(&tar, "");
        assert_eq!(out.status.code(), Some(1), "{link}: {}", stderr(&out));
        let want = format!(
            "/in/out-link: link to /in{}/victim.txt: No such file or directory",
            victim.path()
        );
        assert!(stderr(&out).contains(&want), "{link}: {}", stderr(&out));
        assert!(!stderr(&out).contains("snapshots-v1"), "{}", stderr(&out));
        victim.assert_untouched();
    }
    let tar = archive(&[
        Entry::File("ok.txt", b"ok\n"),
        Entry::Hardlink("climb", "../../ok.txt"),
        Entry::Hardlink("abs", "/ok.txt"),
    ]);
    let (out, dest) = add_build(&tar, "");
    assert_ok(&out);
    victim.assert_untouched();
    use std::os::unix::fs::MetadataExt;
    let dir = dest.path().join("in");
    let ino = fs::metadata(dir.join("ok.txt")).unwrap().ino();
    for name in ["climb", "abs"] {
        assert_eq!(fs::metadata(dir.join(name)).unwrap().ino(), ino, "{name}");
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
