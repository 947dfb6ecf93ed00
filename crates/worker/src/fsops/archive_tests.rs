//! Tests of ADD's unpacking of hostile archives: every name and link is resolved with the
//! destination as `/` (as BuildKit's chrooted untar does), and nothing lands outside it.

use super::*;
use std::os::unix::fs::{symlink, MetadataExt};

/// One raw tar entry; names are written byte for byte (the tar crate's setters refuse `..`).
enum E<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (name, link, kind, data, mode): (&str, &str, _, &[u8], _) = match e {
            E::File(n, d) => (n, "", tar::EntryType::Regular, d, 0o644),
            E::Dir(n) => (n, "", tar::EntryType::Directory, b"", 0o755),
            E::Symlink(n, l) => (n, l, tar::EntryType::Symlink, b"", 0o777),
            E::Hardlink(n, l) => (n, l, tar::EntryType::Link, b"", 0o644),
        };
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        builder.append(&h, data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// A rootfs to unpack into and, beside it, a host directory no archive may change.
struct Fixture {
    _dir: tempfile::TempDir,
    rootfs: PathBuf,
    victim: PathBuf,
    tar: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        let victim = dir.path().join("victim");
        fs::create_dir_all(&rootfs).unwrap();
        fs::create_dir_all(&victim).unwrap();
        fs::write(victim.join("victim.txt"), "untouched\n").unwrap();
        let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        fs::File::open(&victim)
            .unwrap()
            .set_times(fs::FileTimes::new().set_modified(old))
            .unwrap();
        Fixture {
            tar: dir.path().join("a.tar"),
            _dir: dir,
            rootfs,
            victim,
        }
    }

    /// The victim's path as a string (an absolute path; inside the rootfs it means the
    /// rootfs's own path).
    fn victim(&self) -> String {
        self.victim.to_string_lossy().into_owned()
    }

    /// `ADD a.tar /in/` of `entries`.
    fn add(&self, entries: &[E]) -> io::Result<bool> {
        fs::write(&self.tar, tar_of(entries)).unwrap();
        try_unpack(&self.tar, "a.tar", &self.rootfs, "/in/", None)
    }

    fn inside(&self, path: &str) -> PathBuf {
        self.rootfs.join("in").join(path.trim_start_matches('/'))
    }

    fn assert_victim_untouched(&self) {
        let names: Vec<_> = fs::read_dir(&self.victim)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["victim.txt"], "written outside");
        assert_eq!(
            fs::read_to_string(self.victim.join("victim.txt")).unwrap(),
            "untouched\n"
        );
        let mtime = fs::metadata(&self.victim).unwrap().mtime();
        assert_eq!(mtime, 1_000_000_000, "victim directory's mtime changed");
    }
}

#[test]
fn names_are_clamped_to_the_destination() {
    let parts = |p: &str| {
        clamped(Path::new(p)).map(|v| {
            v.iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(parts("a/b"), Some(vec!["a".into(), "b".into()]));
    assert_eq!(parts("../x"), Some(vec!["x".into()]));
    assert_eq!(parts("../../../x/./y"), Some(vec!["x".into(), "y".into()]));
    assert_eq!(parts("sub/../../x"), Some(vec!["x".into()]));
    assert_eq!(parts("/abs"), Some(vec!["abs".into()]));
    assert_eq!(parts("./"), None);
    assert_eq!(parts("/"), None);
    assert_eq!(parts(".."), None);
}

#[test]
fn climbing_and_absolute_names_land_in_the_destination() {
    let f = Fixture::new();
    let up = format!("../../../../../../../..{}/dotdot.txt", f.victim());
    f.add(&[
        E::File("ok.txt", b"ok\n"),
        E::File("../escape.txt", b"1\n"),
        E::File("sub/../../escape2.txt", b"2\n"),
        E::File(&up, b"3\n"),
        E::File("/abs.txt", b"4\n"),
    ])
    .unwrap();
    f.assert_victim_untouched();
    assert_eq!(fs::read_to_string(f.inside("escape.txt")).unwrap(), "1\n");
    assert_eq!(fs::read_to_string(f.inside("escape2.txt")).unwrap(), "2\n");
    let dotdot = f.inside(&format!("{}/dotdot.txt", f.victim()));
    assert_eq!(fs::read_to_string(dotdot).unwrap(), "3\n");
    assert_eq!(fs::read_to_string(f.inside("abs.txt")).unwrap(), "4\n");
    assert!(!f.rootfs.join("escape.txt").exists());
    // The implied parent directories are 0755.
    let implied = f.inside(f.victim().split('/').nth(1).unwrap());
    assert_eq!(fs::metadata(implied).unwrap().mode() & 0o7777, 0o755);
}

#[test]
fn files_through_symlinks_resolve_inside_the_destination() {
    let f = Fixture::new();
    let victim = f.victim();
    // Directory entries make the victim's path exist inside the destination.
    let mut dirs = Vec::new();
    let mut at = String::new();
    for part in victim.trim_start_matches('/').split('/') {
        at.push_str(part);
        at.push('/');
        dirs.push(at.clone());
    }
    let mut entries: Vec<E> = dirs.iter().map(|d| E::Dir(d)).collect();
    entries.extend([
        E::Symlink("abs", &victim),
        E::File("abs/through.txt", b"through\n"),
        E::File("abs/victim.txt", b"overwritten\n"),
        E::Symlink("up", "../../../../../.."),
        E::File("up/rel.txt", b"rel\n"),
    ]);
    f.add(&entries).unwrap();
    f.assert_victim_untouched();
    assert_eq!(fs::read_link(f.inside("abs")).unwrap(), f.victim);
    let inner = f.inside(&victim);
    assert_eq!(
        fs::read_to_string(inner.join("through.txt")).unwrap(),
        "through\n"
    );
    assert_eq!(
        fs::read_to_string(inner.join("victim.txt")).unwrap(),
        "overwritten\n"
    );
    assert_eq!(fs::read_to_string(f.inside("rel.txt")).unwrap(), "rel\n");
    // Directories get their archive mtimes after their contents are written.
    assert_eq!(fs::metadata(&inner).unwrap().mtime(), 1_600_000_000);
}

#[test]
fn a_file_through_a_link_to_nowhere_fails_naming_image_paths() {
    let f = Fixture::new();
    let err = f
        .add(&[E::Symlink("out", &f.victim()), E::File("out/x.txt", b"x\n")])
        .unwrap_err();
    f.assert_victim_untouched();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    let msg = err.to_string();
    assert_eq!(
        msg,
        "failed to unpack a.tar into /in/: /in/out/x.txt: No such file or directory"
    );
    // A dangling link further up: the implied directory cannot be made through it.
    let err = f
        .add(&[
            E::Symlink("out", &f.victim()),
            E::File("out/sub/x.txt", b"x\n"),
        ])
        .unwrap_err();
    f.assert_victim_untouched();
    assert_eq!(
        err.to_string(),
        "failed to unpack a.tar into /in/: /in/out/sub/x.txt: mkdir /in/out: file exists"
    );
}

#[test]
fn hardlink_targets_resolve_inside_the_destination() {
    let f = Fixture::new();
    f.add(&[
        E::File("ok.txt", b"ok\n"),
        E::Hardlink("climb", "../../ok.txt"),
        E::Hardlink("abs", "/ok.txt"),
        E::Symlink("dl", "/"),
        E::Hardlink("via", "dl/ok.txt"),
        // A hardlink to a symlink links the symlink itself.
        E::Hardlink("dl2", "dl"),
    ])
    .unwrap();
    let ino = fs::metadata(f.inside("ok.txt")).unwrap().ino();
    for name in ["climb", "abs", "via"] {
        assert_eq!(fs::metadata(f.inside(name)).unwrap().ino(), ino, "{name}");
    }
    assert_eq!(fs::read_link(f.inside("dl2")).unwrap(), Path::new("/"));

    for link in [
        format!("{}/victim.txt", f.victim()),
        format!("../../../../../../..{}/victim.txt", f.victim()),
    ] {
        let err = f
            .add(&[E::Symlink("v", &f.victim()), E::Hardlink("out-link", &link)])
            .unwrap_err();
        f.assert_victim_untouched();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "failed to unpack a.tar into /in/: /in/out-link: link to /in{}/victim.txt: \
                 No such file or directory",
                f.victim()
            )
        );
    }
    // Through a symlink to the victim: resolved inside, where nothing is.
    let err = f
        .add(&[
            E::Symlink("v", &f.victim()),
            E::Hardlink("out-link", "v/victim.txt"),
        ])
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    f.assert_victim_untouched();
    assert!(!err.to_string().contains("rootfs"), "{err}");
}

#[test]
fn replaced_entries_never_lead_outside() {
    let f = Fixture::new();
    // A directory later replaced by a symlink out: its mtime is not set through the link.
    // A symlink later replaced by a file: the file replaces the link.
    f.add(&[
        E::Dir("d/"),
        E::File("d/f", b"f\n"),
        E::Symlink("d", &f.victim()),
        E::Symlink("r", &format!("{}/victim.txt", f.victim())),
        E::File("r", b"replaced\n"),
    ])
    .unwrap();
    f.assert_victim_untouched();
    assert_eq!(fs::read_link(f.inside("d")).unwrap(), f.victim);
    assert!(fs::symlink_metadata(f.inside("r")).unwrap().is_file());
    assert_eq!(fs::read_to_string(f.inside("r")).unwrap(), "replaced\n");
}

#[test]
fn a_destination_symlinked_out_is_resolved_in_the_rootfs() {
    let f = Fixture::new();
    symlink(&f.victim, f.rootfs.join("in")).unwrap();
    // The link's target's parent exists in the image (as /tmp does in the end-to-end test).
    let parent = f.victim.parent().unwrap().to_string_lossy().into_owned();
    fs::create_dir_all(f.rootfs.join(parent.trim_start_matches('/'))).unwrap();
    f.add(&[E::File("landed.txt", b"landed\n")]).unwrap();
    f.assert_victim_untouched();
    let landed = f
        .rootfs
        .join(f.victim().trim_start_matches('/'))
        .join("landed.txt");
    assert_eq!(fs::read_to_string(landed).unwrap(), "landed\n");
}
