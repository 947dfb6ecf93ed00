//! Commits without a `syncfs`: the `unsynced` boot-id marker, what a snapshot of another boot
//! means, the sweep that clears this boot's markers after a sync, and volatile writable overlay
//! mounts.

use rbuild_snapshotter::{Backend, SnapshotError, Snapshotter};

use crate::require_root;
use crate::util::*;

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_string()
}

fn commit_file(
    sn: &Snapshotter,
    parent: Option<&rbuild_snapshotter::SnapshotId>,
    name: &str,
) -> rbuild_snapshotter::SnapshotId {
    let active = sn.prepare(parent).unwrap();
    write(&active.upperdir().join(name), name);
    sn.commit(active).unwrap()
}

#[test]
fn commit_marks_and_a_later_sweep_clears() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let sn = Snapshotter::open_with_backend(&root, Backend::Copy).unwrap();
    let a = commit_file(&sn, None, "a");
    let marker = sn.root().join("snapshots").join(&a.0).join("unsynced");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), boot_id());
    assert!(sn.exists(&a));
    let b = commit_file(&sn, Some(&a), "b");
    let marker_b = sn.root().join("snapshots").join(&b.0).join("unsynced");
    // Nothing syncs on the build's path: the drop leaves the markers of this boot, and they are
    // honoured by the next process.
    drop(sn);
    assert!(marker.exists() && marker_b.exists());
    let sn = Snapshotter::open_with_backend(&root, Backend::Copy).unwrap();
    assert!(sn.exists(&a) && sn.exists(&b));
    // A sweep leaves markers younger than its minimum age (the one at open uses 45 s) and those
    // of another boot; with no minimum it syncs and removes this boot's.
    let other = commit_file(&sn, None, "other");
    let marker_other = sn.root().join("snapshots").join(&other.0).join("unsynced");
    std::fs::write(&marker_other, "another-boot").unwrap();
    assert_eq!(
        sn.sweep_unsynced(std::time::Duration::from_secs(3600))
            .unwrap(),
        0
    );
    assert!(marker.exists() && marker_b.exists());
    assert_eq!(sn.sweep_unsynced(std::time::Duration::ZERO).unwrap(), 2);
    assert!(!marker.exists() && !marker_b.exists());
    assert!(marker_other.exists(), "another boot's marker stays");
    assert!(sn.exists(&a) && sn.exists(&b) && !sn.exists(&other));
}

#[test]
fn a_snapshot_of_another_boot_counts_as_missing_with_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let sn = Snapshotter::open_with_backend(&root, Backend::Copy).unwrap();
    let a = commit_file(&sn, None, "a");
    let b = commit_file(&sn, Some(&a), "b");
    let c = commit_file(&sn, None, "c");
    let good = commit_file(&sn, None, "good");
    drop(sn);
    // As an OS crash before the flush leaves them: the marker names the boot it was written in
    // (or is empty when its data was lost too); one of the current boot is fine.
    let snaps = root.join("snapshots");
    std::fs::write(snaps.join(&a.0).join("unsynced"), "another-boot").unwrap();
    std::fs::write(snaps.join(&c.0).join("unsynced"), "").unwrap();
    std::fs::write(snaps.join(&good.0).join("unsynced"), boot_id()).unwrap();
    let sn = Snapshotter::open_with_backend(&root, Backend::Copy).unwrap();
    assert!(!sn.exists(&a));
    assert!(
        !sn.exists(&b),
        "a child of an unsure snapshot is unsure too"
    );
    assert!(!sn.exists(&c));
    assert!(sn.exists(&good));
    assert!(matches!(
        sn.prepare(Some(&b)),
        Err(SnapshotError::NotFound(_))
    ));
    assert!(matches!(sn.view(Some(&a)), Err(SnapshotError::NotFound(_))));
    // Removing them still works (garbage collection).
    sn.remove(&b).unwrap();
    sn.remove(&a).unwrap();
    sn.remove(&c).unwrap();
}

#[test]
fn writable_overlay_mounts_are_volatile_and_remount_after_commit() {
    require_root!();
    let env = Env::new(Backend::Overlay);
    let base = commit_file(&env.sn, None, "f");
    let active = env.sn.prepare(Some(&base)).unwrap();
    let m = active.mount().unwrap();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(&*m.path().to_string_lossy()))
        .expect("mounted");
    assert!(line.contains("volatile"), "{line}");
    // A copy-up and a new file through the volatile mount land in the upper dir.
    write(&m.path().join("f"), "changed");
    write(&m.path().join("g"), "g");
    drop(m);
    assert_eq!(read(&active.upperdir().join("f")), "changed");
    let top = env.sn.commit(active).unwrap();
    // The commit empties the work dir (overlay refuses to mount a volatile one again): the next
    // snapshot on top mounts, and so does a view.
    let next = env.sn.prepare(Some(&top)).unwrap();
    let m = next.mount().unwrap();
    assert_eq!(read(&m.path().join("f")), "changed");
    drop(m);
    env.sn.abort(next).unwrap();
    let v = env.sn.view(Some(&top)).unwrap();
    assert_eq!(read(&v.path().join("g")), "g");
}
