//! Overlay specifics: detection, crash repair in a separate process, deep chains, rootfs specs.

use std::path::PathBuf;

use rbuild_snapshotter::{mount_overlay, Backend, RootfsSpec, Snapshotter};

use crate::require_root;
use crate::util::*;

const CRASH_ENV: &str = "RBUILD_TEST_CRASH_ROOT";

#[test]
fn open_detects_overlay() {
    require_root!();
    if std::env::var_os(rbuild_snapshotter::BACKEND_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sn = Snapshotter::open(&dir.path().join("s")).unwrap();
    assert_eq!(sn.backend(), Backend::Overlay);
    assert!(mounts_under(sn.root()).is_empty(), "probe mount cleaned up");
    assert_eq!(std::fs::read_dir(sn.temp_dir()).unwrap().count(), 0);
}

/// Run as a child process by `crash_repair`: leaves an active snapshot and mounts, then exits
/// without any cleanup.
#[test]
#[ignore = "helper for crash_repair"]
fn crash_child() {
    let Some(root) = std::env::var_os(CRASH_ENV) else {
        return;
    };
    let sn = Snapshotter::open_with_backend(std::path::Path::new(&root), Backend::Overlay).unwrap();
    let base = sn
        .apply_layer(
            None,
            &mut &TarB::new().file("f", 0o644, 0, b"f").finish()[..],
        )
        .unwrap();
    let active = sn.prepare(Some(&base)).unwrap();
    let m = active.mount().unwrap();
    write(&m.path().join("new"), "x");
    let v = sn.view(Some(&base)).unwrap();
    std::mem::forget((active, m, v));
    std::process::exit(0);
}

#[test]
fn crash_repair() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "overlay_only::crash_child",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_ENV, &root)
        .status()
        .unwrap();
    assert!(status.success());
    let canon = std::fs::canonicalize(&root).unwrap();
    assert_eq!(mounts_under(&canon).len(), 2, "the child left two mounts");
    assert_eq!(std::fs::read_dir(canon.join("active")).unwrap().count(), 1);
    let sn = Snapshotter::open_with_backend(&root, Backend::Overlay).unwrap();
    assert!(mounts_under(&canon).is_empty(), "mounts repaired");
    let names = |area: &str| -> Vec<PathBuf> {
        std::fs::read_dir(canon.join(area))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    };
    assert_eq!(
        names("active"),
        vec![own_dir(&sn, "active")],
        "active snapshot deleted"
    );
    assert_eq!(
        std::fs::read_dir(own_dir(&sn, "active")).unwrap().count(),
        0
    );
    assert_eq!(names("mnt"), vec![own_dir(&sn, "mnt")]);
    assert_eq!(
        names("owners").len(),
        1,
        "the dead owner's lock file is gone"
    );
    assert_eq!(
        std::fs::read_dir(canon.join("snapshots")).unwrap().count(),
        1,
        "committed snapshot kept"
    );
    drop(sn);
}

#[test]
fn deep_chain_mounts_with_lowerdir_plus() {
    require_root!();
    let env = Env::new(Backend::Overlay);
    let mut parent = None;
    for i in 0..60 {
        let t = TarB::new().file(&format!("f{i}"), 0o644, 0, b"x").finish();
        parent = Some(apply(&env, parent.as_ref(), &t));
    }
    let v = env.sn.view(parent.as_ref()).unwrap();
    assert_eq!(std::fs::read_dir(v.path()).unwrap().count(), 60);
    let active = env.sn.prepare(parent.as_ref()).unwrap();
    match active.rootfs() {
        RootfsSpec::Overlay {
            lowerdirs,
            upperdir,
            workdir,
        } => {
            assert_eq!(lowerdirs.len(), 60);
            assert_eq!(&upperdir, active.upperdir());
            assert!(workdir.is_dir());
        }
        RootfsSpec::Dir(_) => panic!("overlay backend"),
    }
    env.sn.abort(active).unwrap();
}

#[test]
fn mount_overlay_directly() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| -> PathBuf {
        let p = dir.path().join(n);
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    let (l1, l2, up, work, target) = (d("l1"), d("l2"), d("up"), d("work"), d("mnt"));
    write(&l1.join("a"), "top");
    write(&l2.join("a"), "bottom");
    write(&l2.join("b"), "b");
    mount_overlay(&[l1.clone(), l2.clone()], &up, &work, &target, false).unwrap();
    let a = read(&target.join("a"));
    std::fs::remove_file(target.join("b")).unwrap();
    rustix::mount::unmount(&target, rustix::mount::UnmountFlags::DETACH).unwrap();
    assert_eq!(a, "top");
    assert!(
        std::fs::symlink_metadata(up.join("b")).is_ok(),
        "whiteout in upper"
    );
    assert!(mounts_under(dir.path()).is_empty());
}

#[test]
fn copy_backend_rootfs_is_a_dir() {
    require_root!();
    let env = Env::new(Backend::Copy);
    let base = apply(
        &env,
        None,
        &TarB::new()
            .file("f", 0o644, 0, b"f")
            .hardlink("g", "f")
            .finish(),
    );
    let active = env.sn.prepare(Some(&base)).unwrap();
    let RootfsSpec::Dir(p) = active.rootfs() else {
        panic!("copy backend")
    };
    assert_eq!(read(&p.join("f")), "f");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(p.join("f")).unwrap().ino(),
        std::fs::metadata(p.join("g")).unwrap().ino(),
        "hardlinks kept by the copy"
    );
    env.sn.abort(active).unwrap();
}

/// A second snapshotter opened on the same root (as by a concurrent build) sweeps nothing the
/// first one uses: its active snapshot, mounts and temp dir stay, and it can still commit.
#[test]
fn open_beside_a_live_snapshotter_sweeps_nothing_of_it() {
    require_root!();
    let env = Env::new(Backend::Overlay);
    let base = apply(&env, None, &TarB::new().file("f", 0o644, 0, b"f").finish());
    let active = env.sn.prepare(Some(&base)).unwrap();
    let m = active.mount().unwrap();
    write(&m.path().join("new"), "x");
    let view = env.sn.view(Some(&base)).unwrap();
    let before = mounts_under(&env.root()).len();
    let second = Snapshotter::open_with_backend(&env.root(), Backend::Overlay).unwrap();
    assert_ne!(second.temp_dir(), env.sn.temp_dir());
    assert_eq!(
        mounts_under(&env.root()).len(),
        before,
        "no mount of the live one detached"
    );
    assert_eq!(read(&m.path().join("new")), "x");
    assert_eq!(read(&view.path().join("f")), "f");
    drop((m, view));
    let id = env.sn.commit(active).unwrap();
    assert!(second.exists(&id));
    drop(second);
}
