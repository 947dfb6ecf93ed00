//! The same suite against every backend (containerd's snapshotter test-suite idea).

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use rbuild_snapshotter::{Backend, DiffOptions, SnapshotError};
use tar::EntryType;

use crate::require_root;
use crate::util::*;

/// Base: a.txt, gone.txt, olddir/{x,y}, keep/k
fn make_base(env: &Env) -> rbuild_snapshotter::SnapshotId {
    let active = env.sn.prepare(None).expect("prepare");
    {
        let m = active.mount().expect("mount");
        let p = m.path();
        write(&p.join("a.txt"), "old");
        write(&p.join("gone.txt"), "bye");
        std::fs::create_dir_all(p.join("olddir")).unwrap();
        write(&p.join("olddir/x"), "x");
        write(&p.join("olddir/y"), "y");
        std::fs::create_dir_all(p.join("keep")).unwrap();
        write(&p.join("keep/k"), "k");
    }
    env.sn.commit(active).expect("commit")
}

pub fn diff_of_changes(backend: Backend) {
    require_root!();
    let env = Env::new(backend);
    let base = make_base(&env);
    let active = env.sn.prepare(Some(&base)).expect("prepare");
    {
        let m = active.mount().expect("mount");
        let p = m.path();
        assert_eq!(
            read(&p.join("keep/k")),
            "k",
            "lower files visible in the mount"
        );
        write(&p.join("a.txt"), "new content");
        std::fs::remove_file(p.join("gone.txt")).unwrap();
        std::fs::remove_dir_all(p.join("olddir")).unwrap();
        std::fs::create_dir(p.join("olddir")).unwrap();
        write(&p.join("olddir/new"), "n");
        write(&p.join("h1"), "hard");
        std::fs::hard_link(p.join("h1"), p.join("h2")).unwrap();
        write(&p.join("suid"), "#!/bin/sh\n");
        std::fs::set_permissions(p.join("suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::os::unix::fs::symlink("a.txt", p.join("sl")).unwrap();
        mkfifo(&p.join("fifo"));
        rustix::fs::chownat(
            rustix::fs::CWD,
            p.join("h1"),
            Some(rustix::fs::Uid::from_raw(1000)),
            Some(rustix::fs::Gid::from_raw(1000)),
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
        rustix::fs::lsetxattr(
            p.join("a.txt"),
            "user.test",
            b"v1",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    }
    // Committing while mounted is refused; here the guard is already gone.
    let id = env.sn.commit(active).expect("commit");
    assert_eq!(env.sn.parent(&id).unwrap(), Some(base.clone()));

    let bytes = env.diff(&id, &DiffOptions::default());
    let es = read_entries(&bytes);
    let names = paths(&es);
    let a = find(&es, "a.txt").expect("a.txt in diff");
    assert_eq!(a.data, b"new content");
    assert_eq!(a.xattrs, vec![("user.test".to_string(), b"v1".to_vec())]);
    assert!(names.contains(&".wh.gone.txt".to_string()), "{names:?}");
    assert!(
        find(&es, "keep/k").is_none(),
        "unchanged files are not in the diff: {names:?}"
    );
    match backend {
        Backend::Overlay => {
            let d = names.iter().position(|n| n == "olddir/").expect("olddir/");
            assert_eq!(names[d + 1], "olddir/.wh..wh..opq", "{names:?}");
        }
        Backend::Copy => {
            assert!(names.contains(&"olddir/.wh.x".to_string()), "{names:?}");
            assert!(names.contains(&"olddir/.wh.y".to_string()), "{names:?}");
        }
    }
    assert_eq!(find(&es, "olddir/new").expect("olddir/new").data, b"n");
    let h1 = find(&es, "h1").expect("h1");
    assert_eq!(
        (h1.kind, h1.uid, h1.gid, h1.data.as_slice()),
        (EntryType::Regular, 1000, 1000, &b"hard"[..])
    );
    let h2 = find(&es, "h2").expect("h2");
    assert_eq!((h2.kind, h2.link.as_deref()), (EntryType::Link, Some("h1")));
    assert_eq!(find(&es, "suid").expect("suid").mode, 0o4755);
    let sl = find(&es, "sl").expect("sl");
    assert_eq!(
        (sl.kind, sl.link.as_deref()),
        (EntryType::Symlink, Some("a.txt"))
    );
    assert_eq!(find(&es, "fifo").expect("fifo").kind, EntryType::Fifo);
    assert!(
        es.iter().all(|e| e.uname.iter().all(|b| *b == 0)),
        "no user names"
    );
    // Sorted depth-first: parents before children, siblings by name.
    let mut sorted = names.clone();
    sorted.sort_by(|x, y| {
        let k = |s: &str| {
            s.trim_end_matches('/')
                .split('/')
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let (kx, ky) = (k(x), k(y));
        // The opaque marker comes right after its directory.
        let w = |v: &Vec<String>| {
            v.iter()
                .map(|c| {
                    if c == ".wh..wh..opq" {
                        String::new()
                    } else {
                        c.clone()
                    }
                })
                .collect::<Vec<_>>()
        };
        w(&kx).cmp(&w(&ky))
    });
    assert_eq!(names, sorted);

    let listing = gnu_tar_list(&bytes);
    assert!(listing.contains("-rwsr-xr-x 0/0"), "{listing}");
    assert!(listing.contains("h2 link to h1"), "{listing}");
    assert!(listing.contains("sl -> a.txt"), "{listing}");
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with('p') && l.ends_with("fifo")),
        "{listing}"
    );
    assert!(listing.contains("1000/1000"), "{listing}");
}

pub fn chain_of_three_in_view(backend: Backend) {
    require_root!();
    let env = Env::new(backend);
    let l1 = apply(
        &env,
        None,
        &TarB::new()
            .file("f1", 0o644, 0, b"1")
            .dir("d", 0o755)
            .file("d/in1", 0o644, 0, b"i1")
            .finish(),
    );
    let l2 = apply(
        &env,
        Some(&l1),
        &TarB::new()
            .file("f2", 0o644, 0, b"2")
            .file("d/in2", 0o644, 0, b"i2")
            .finish(),
    );
    let l3 = apply(
        &env,
        Some(&l2),
        &TarB::new()
            .file("f3", 0o644, 0, b"3")
            .whiteout(".wh.f1")
            .finish(),
    );
    assert_eq!(env.sn.parent(&l3).unwrap(), Some(l2.clone()));
    assert_eq!(env.sn.parent(&l1).unwrap(), None);
    {
        let v = env.sn.view(Some(&l3)).expect("view");
        let p = v.path();
        assert!(!p.join("f1").exists(), "f1 deleted by l3");
        assert_eq!(read(&p.join("f2")), "2");
        assert_eq!(read(&p.join("f3")), "3");
        assert_eq!(read(&p.join("d/in1")), "i1");
        assert_eq!(read(&p.join("d/in2")), "i2");
        if backend == Backend::Overlay {
            assert!(
                std::fs::write(p.join("nope"), "x").is_err(),
                "views are read-only"
            );
        }
        let v2 = env.sn.view(Some(&l2)).expect("view l2");
        assert_eq!(read(&v2.path().join("f1")), "1");
        assert!(!v2.path().join("f3").exists());
        let empty = env.sn.view(None).expect("empty view");
        assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
    }
}

pub fn apply_whiteouts_devices_and_lower_hardlinks(backend: Backend) {
    require_root!();
    let env = Env::new(backend);
    let base = apply(
        &env,
        None,
        &TarB::new()
            .file("a", 0o644, 0, b"a")
            .file("keep", 0o640, 7, b"kept")
            .dir("d", 0o755)
            .file("d/x", 0o644, 0, b"x")
            .file("d/y", 0o644, 0, b"y")
            .dir("e", 0o700)
            .file("e/z", 0o644, 0, b"z")
            .finish(),
    );
    let top = apply(
        &env,
        Some(&base),
        &TarB::new()
            .whiteout(".wh.a")
            .dir("d", 0o755)
            .whiteout("d/.wh..wh..opq")
            .file("d/new", 0o644, 0, b"new")
            .whiteout("e/.wh.z")
            .hardlink("hl", "keep")
            .dir("dev", 0o755)
            .chardev("dev/null", 1, 3)
            .fifo("p")
            .finish(),
    );
    let v = env.sn.view(Some(&top)).expect("view");
    let p = v.path();
    assert!(!p.join("a").exists());
    let d: Vec<_> = std::fs::read_dir(p.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(d, vec![std::ffi::OsString::from("new")]);
    assert_eq!(std::fs::read_dir(p.join("e")).unwrap().count(), 0);
    assert_eq!(
        std::fs::metadata(p.join("e")).unwrap().mode() & 0o7777,
        0o700,
        "implicit parent keeps lower metadata"
    );
    assert_eq!(read(&p.join("hl")), "kept");
    assert_eq!(std::fs::metadata(p.join("hl")).unwrap().uid(), 7);
    let null = std::fs::symlink_metadata(p.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    assert!(std::fs::symlink_metadata(p.join("p"))
        .unwrap()
        .file_type()
        .is_fifo());
    // The base is unchanged.
    let vb = env.sn.view(Some(&base)).expect("view base");
    assert_eq!(read(&vb.path().join("a")), "a");
    assert_eq!(read(&vb.path().join("d/x")), "x");
}

pub fn malicious_layers_stay_inside(backend: Backend) {
    require_root!();
    let env = Env::new(backend);
    let outside = tempfile::tempdir().unwrap();
    let out = outside.path().to_string_lossy().into_owned();
    // `..` escapes are refused outright.
    let err = env
        .sn
        .apply_layer(
            None,
            &mut &TarB::new().file("../../etc/x", 0o644, 0, b"pwn").finish()[..],
        )
        .unwrap_err();
    assert!(matches!(err, SnapshotError::PathEscape { .. }), "{err}");
    let err = env
        .sn
        .apply_layer(
            None,
            &mut &TarB::new()
                .file("x", 0o644, 0, b"x")
                .hardlink("h", "../../../../etc/passwd")
                .finish()[..],
        )
        .unwrap_err();
    assert!(matches!(err, SnapshotError::PathEscape { .. }), "{err}");
    // A symlink to an outside dir that does not exist inside: refused, nothing written outside.
    let err = env
        .sn
        .apply_layer(
            None,
            &mut &TarB::new()
                .symlink("abs", &out)
                .file("abs/pwned", 0o644, 0, b"1")
                .finish()[..],
        )
        .unwrap_err();
    assert!(matches!(err, SnapshotError::BadEntry { .. }), "{err}");
    assert!(
        !outside.path().join("pwned").exists(),
        "wrote through an absolute symlink"
    );
    // Symlinks, absolute or relative, resolve inside the root.
    let mut t = TarB::new();
    let mut prefix = String::new();
    for comp in out.trim_start_matches('/').split('/') {
        prefix.push_str(comp);
        prefix.push('/');
        t.dir(&prefix, 0o755);
    }
    let id = apply(
        &env,
        None,
        &t.symlink("abs", &out)
            .file("abs/pwned", 0o644, 0, b"1")
            .symlink("rel", "../../../../../../../../..")
            .file("rel/pwned2", 0o644, 0, b"2")
            .symlink("slash", "/")
            .hardlink("slash/pwned3", "abs/pwned")
            .finish(),
    );
    assert!(
        !outside.path().join("pwned").exists(),
        "wrote through an absolute symlink"
    );
    assert!(!Path::new("/pwned2").exists() && !Path::new("/pwned3").exists());
    let v = env.sn.view(Some(&id)).expect("view");
    // Inside, the links resolve against the snapshot's own root.
    let inner = v.path().join(out.trim_start_matches('/')).join("pwned");
    assert_eq!(read(&inner), "1");
    assert_eq!(read(&v.path().join("pwned2")), "2");
    assert_eq!(read(&v.path().join("pwned3")), "1");
    // No active snapshot leaks from the failed applies.
    assert_eq!(std::fs::read_dir(env.own("active")).unwrap().count(), 0);
}

fn sample_layer() -> Vec<u8> {
    TarB::new()
        .dir("bin/", 0o755)
        .xattrs(&[(
            "security.capability",
            &[1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
        )])
        .file("bin/ping", 0o755, 0, b"ELF")
        .file("bin/su", 0o4755, 0, b"su")
        .dir("etc/", 0o755)
        .xattrs(&[("user.a", b"1"), ("user.b", b"2")])
        .file("etc/conf", 0o600, 1000, b"conf")
        .hardlink("etc/conf2", "etc/conf")
        .symlink("etc/link", "/etc/conf")
        .fifo("etc/pipe")
        .dir("srv/", 0o1777)
        .finish()
}

pub fn apply_then_diff_round_trips(backend: Backend) {
    require_root!();
    let env = Env::new(backend);
    let input = sample_layer();
    let id = apply(&env, None, &input);
    let out = env.diff(&id, &DiffOptions::default());
    let (a, b) = (read_entries(&input), read_entries(&out));
    assert_eq!(paths(&a), paths(&b));
    for (x, y) in a.iter().zip(&b) {
        if x.kind == EntryType::Link {
            // A link entry carries the shared inode's metadata; only the target matters.
            assert_eq!((&x.path, x.kind, &x.link), (&y.path, y.kind, &y.link));
        } else {
            assert_eq!(x, y, "entry {}", x.path);
        }
    }
    // A second layer with whiteouts round-trips through its own diff.
    let layer2 = TarB::new()
        .whiteout(".wh.srv")
        .dir("etc/", 0o755)
        .whiteout("etc/.wh..wh..opq")
        .file("etc/only", 0o644, 0, b"only")
        .finish();
    let id2 = apply(&env, Some(&id), &layer2);
    let es = read_entries(&env.diff(&id2, &DiffOptions::default()));
    let names = paths(&es);
    assert!(names.contains(&".wh.srv".to_string()), "{names:?}");
    assert_eq!(read_entries(&layer2).len(), 4);
    match backend {
        Backend::Overlay => assert_eq!(names, paths(&read_entries(&layer2))),
        Backend::Copy => {
            for gone in [
                "etc/.wh.conf",
                "etc/.wh.conf2",
                "etc/.wh.link",
                "etc/.wh.pipe",
            ] {
                assert!(names.contains(&gone.to_string()), "{gone} in {names:?}");
            }
        }
    }
    // And the result applies onto the parent again to the same tree.
    let v = env.sn.view(Some(&id2)).unwrap();
    let mut etc: Vec<_> = std::fs::read_dir(v.path().join("etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    etc.sort();
    assert_eq!(etc, vec![std::ffi::OsString::from("only")]);
    assert!(!v.path().join("srv").exists());
}

pub fn deterministic_diffs(backend: Backend) {
    require_root!();
    let env = Env::new(backend);
    let active = env.sn.prepare(None).unwrap();
    {
        let m = active.mount().unwrap();
        for i in 0..20 {
            write(&m.path().join(format!("f{i:02}")), &"x".repeat(i * 100));
        }
        std::fs::create_dir(m.path().join("dir")).unwrap();
        write(&m.path().join("dir/inner"), "i");
    }
    let id = env.sn.commit(active).unwrap();
    let one = env.diff(&id, &DiffOptions::default());
    let two = env.diff(&id, &DiffOptions::default());
    assert_eq!(one, two, "two diffs of one snapshot are byte-identical");
    let clamped = env.diff(
        &id,
        &DiffOptions {
            source_date_epoch: Some(1000),
        },
    );
    let es = read_entries(&clamped);
    assert!(!es.is_empty());
    assert!(es.iter().all(|e| e.mtime <= 1000), "all mtimes clamped");
    assert_eq!(
        clamped,
        env.diff(
            &id,
            &DiffOptions {
                source_date_epoch: Some(1000)
            }
        )
    );
}

pub fn labels_and_removal(backend: Backend) {
    require_root!();
    let env = Env::new(backend);
    let a = apply(&env, None, &TarB::new().file("a", 0o644, 0, b"a").finish());
    let b = apply(
        &env,
        Some(&a),
        &TarB::new().file("b", 0o644, 0, b"b").finish(),
    );
    assert_eq!(env.sn.label(&a, "k").unwrap(), None);
    env.sn
        .set_label(&a, "containerd.io/uncompressed", "sha256:abc")
        .unwrap();
    env.sn.set_label(&a, "k", "v").unwrap();
    env.sn.set_label(&a, "k", "v2").unwrap();
    let reopened =
        rbuild_snapshotter::Snapshotter::open_with_backend(&env.root(), backend).unwrap();
    assert_eq!(reopened.label(&a, "k").unwrap().as_deref(), Some("v2"));
    assert_eq!(
        reopened
            .label(&a, "containerd.io/uncompressed")
            .unwrap()
            .as_deref(),
        Some("sha256:abc")
    );
    assert!(matches!(
        env.sn.remove(&a),
        Err(SnapshotError::HasChildren { .. })
    ));
    env.sn.remove(&b).unwrap();
    assert!(!env.sn.exists(&b));
    env.sn.remove(&a).unwrap();
    assert!(!env.sn.exists(&a));
    assert!(matches!(env.sn.parent(&a), Err(SnapshotError::NotFound(_))));
    let bad = rbuild_snapshotter::SnapshotId("../x".into());
    assert!(matches!(
        env.sn.parent(&bad),
        Err(SnapshotError::InvalidId(_))
    ));
    assert!(!env.sn.exists(&bad));
    // Abort and still-mounted commits.
    let act = env.sn.prepare(None).unwrap();
    let guard = act.mount().unwrap();
    write(&guard.path().join("x"), "x");
    let err = env.sn.commit(act).unwrap_err();
    assert!(matches!(err, SnapshotError::StillMounted(_)), "{err}");
    drop(guard);
    let act = env.sn.prepare(None).unwrap();
    env.sn.abort(act).unwrap();
    assert_eq!(std::fs::read_dir(env.own("active")).unwrap().count(), 0);
}

macro_rules! suite {
    ($backend:ident, $modname:ident) => {
        mod $modname {
            use rbuild_snapshotter::Backend;
            #[test]
            fn diff_of_changes() {
                super::diff_of_changes(Backend::$backend)
            }
            #[test]
            fn chain_of_three_in_view() {
                super::chain_of_three_in_view(Backend::$backend)
            }
            #[test]
            fn apply_whiteouts_devices_and_lower_hardlinks() {
                super::apply_whiteouts_devices_and_lower_hardlinks(Backend::$backend)
            }
            #[test]
            fn malicious_layers_stay_inside() {
                super::malicious_layers_stay_inside(Backend::$backend)
            }
            #[test]
            fn apply_then_diff_round_trips() {
                super::apply_then_diff_round_trips(Backend::$backend)
            }
            #[test]
            fn deterministic_diffs() {
                super::deterministic_diffs(Backend::$backend)
            }
            #[test]
            fn labels_and_removal() {
                super::labels_and_removal(Backend::$backend)
            }
        }
    };
}

suite!(Overlay, overlay);
suite!(Copy, copy);
