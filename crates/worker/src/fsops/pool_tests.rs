//! Tests of the copy pool on a real overlay snapshotter and cache index: unchanged context
//! files become links to an earlier committed copy (below created directories and through the
//! mount), changed ones are copied, ancestors are never linked from, owners count, an op that
//! replaced something records nothing, and GC's forgetting leaves linked files intact.

use super::*;
use rbuild_llb::CopyAction;
use rbuild_snapshotter::{Backend, SnapshotId, Snapshotter};
use rbuild_solver::CacheIndex;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::Arc;

fn action(s: &str, d: &str, owner: Option<(u32, u32)>) -> (CopyAction, Option<(u32, u32)>) {
    let a = CopyAction::new(1, s, d);
    (a, owner)
}

struct Fixture {
    _tmp: tempfile::TempDir,
    snap: Snapshotter,
    index: CacheIndex,
    ctx: std::path::PathBuf,
}

/// An overlay snapshotter, an index and a context; None (after a printed skip) without overlay.
fn fixture() -> Option<Fixture> {
    let tmp = tempfile::tempdir().unwrap();
    let snap = Snapshotter::open(&tmp.path().join("snapshots")).ok();
    let Some(snap) = snap.filter(|s| s.backend() == Backend::Overlay) else {
        assert!(
            std::env::var("RBUILD_REQUIRE_ROOT").map_or(true, |v| v != "1"),
            "overlay snapshotter required"
        );
        println!("SKIPPED: no overlay snapshotter (not root?)");
        return None;
    };
    let index = CacheIndex::open(&tmp.path().join("index.redb")).unwrap();
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(ctx.join("dir/sub")).unwrap();
    for i in 0..40 {
        let p = ctx.join(format!("dir/sub/f{i}"));
        fs::write(&p, format!("file {i}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640 + (i % 2) * 0o100)).unwrap();
    }
    fs::write(ctx.join("dir/sub/pair1"), "pair\n").unwrap();
    fs::hard_link(ctx.join("dir/sub/pair1"), ctx.join("dir/sub/pair2")).unwrap();
    fs::write(ctx.join("big"), vec![7u8; 300_000]).unwrap();
    Some(Fixture {
        _tmp: tmp,
        snap,
        index,
        ctx,
    })
}

impl Fixture {
    /// A committed snapshot holding the directory `/data`.
    fn base(&self) -> SnapshotId {
        let active = self.snap.prepare(None).unwrap();
        fs::create_dir(active.upperdir().join("data")).unwrap();
        self.snap.commit(active).unwrap()
    }

    /// One File op of `actions` on `parent`, with the pool; its snapshot and what the pool did.
    fn op(
        &self,
        parent: Option<&SnapshotId>,
        actions: &[(CopyAction, Option<(u32, u32)>)],
    ) -> (SnapshotId, PoolStats) {
        let active = self.snap.prepare(parent).unwrap();
        let mount = active.mount().unwrap();
        let root = mount.path().to_path_buf();
        let upper = active.upperdir().to_path_buf();
        let pool = Arc::new(
            CopyPool::new(
                self.index.clone(),
                self.snap.clone(),
                root.clone(),
                upper.clone(),
                active.id().clone(),
                parent,
            )
            .unwrap(),
        );
        for (a, owner) in actions {
            let mut settings = CopySettings::plain(true);
            settings.owner = *owner;
            settings.direct = Some(DirectUpper {
                mount: root.clone(),
                upper: upper.clone(),
            });
            settings.pool = Some(pool.clone());
            copy_action(&self.ctx, &root, a, &settings).unwrap();
        }
        drop(mount);
        pool.settle().unwrap();
        let id = self.snap.commit(active).unwrap();
        let stats = pool.finish(&id).unwrap();
        (id, stats)
    }

    fn file(&self, id: &SnapshotId, rel: &str) -> fs::Metadata {
        let upper = self.snap.committed_upper(id).unwrap();
        fs::symlink_metadata(upper.join(rel)).unwrap()
    }
}

#[test]
fn unchanged_files_are_linked_changed_ones_copied() {
    let Some(f) = fixture() else { return };
    let base = f.base();
    let dir = [action("dir/", "/data/dir/", None)];
    let big = [action("big", "/data/big", None)];
    let (s1, st1) = f.op(Some(&base), &dir);
    assert_eq!((st1.linked, st1.copied, st1.recorded), (0, 40, 40));
    let (b1, _) = f.op(Some(&base), &big);

    // One file changes; the same COPYs run again on a new parent.
    fs::write(f.ctx.join("dir/sub/f7"), "changed\n").unwrap();
    let base2 = f.base();
    let (s2, st2) = f.op(Some(&base2), &dir);
    assert_eq!((st2.linked, st2.copied, st2.recorded), (39, 1, 40));
    let same = |rel: &str| f.file(&s1, rel).ino() == f.file(&s2, rel).ino();
    assert!(same("data/dir/sub/f3") && same("data/dir/sub/f8"));
    assert!(!same("data/dir/sub/f7"), "a changed file is copied");
    assert_eq!(f.file(&s2, "data/dir/sub/f3").nlink(), 2);
    assert_eq!(f.file(&s2, "data/dir/sub/f3").mode() & 0o7777, 0o740);
    // The hardlink pair is copied as a pair of its own, never pooled.
    let (p1, p2) = (
        f.file(&s2, "data/dir/sub/pair1"),
        f.file(&s2, "data/dir/sub/pair2"),
    );
    assert_eq!((p1.ino(), p1.nlink()), (p2.ino(), 2));
    assert_ne!(p1.ino(), f.file(&s1, "data/dir/sub/pair1").ino());

    // A file copied into an existing directory goes through the mount: a placeholder, then
    // the link once the mount is gone; the directory keeps its times.
    let (b2, stb) = f.op(Some(&base2), &big);
    assert_eq!((stb.linked, stb.copied), (1, 0));
    let (old, new) = (f.file(&b1, "data/big"), f.file(&b2, "data/big"));
    assert_eq!((old.ino(), new.nlink()), (new.ino(), 2));
    let upper = f.snap.committed_upper(&b2).unwrap();
    assert_eq!(
        fs::read(upper.join("data/big")).unwrap(),
        vec![7u8; 300_000]
    );
    let names: Vec<_> = fs::read_dir(upper.join("data")).unwrap().collect();
    assert_eq!(names.len(), 1, "no temporary link is left");

    // Never linked from an ancestor: the same files copied again on top of s2 are copies.
    let (s3, st3) = f.op(Some(&s2), &[action("dir/", "/again/", None)]);
    assert_eq!((st3.linked, st3.copied), (0, 40));
    assert_ne!(
        f.file(&s3, "again/sub/f3").ino(),
        f.file(&s2, "data/dir/sub/f3").ino()
    );
    // Nor an inode an ancestor holds through the pool: x links s3's copies (the pool's newest)
    // and the table then names x; an op on s3 must not link x's files (s3's own inodes).
    let (x, stx) = f.op(Some(&base2), &dir);
    assert_eq!(stx.linked, 40);
    assert_eq!(
        f.file(&x, "data/dir/sub/f3").ino(),
        f.file(&s3, "again/sub/f3").ino()
    );
    let (_, st4) = f.op(Some(&s3), &[action("dir/", "/third/", None)]);
    assert_eq!((st4.linked, st4.copied), (0, 40));

    // The owner is part of the identity.
    let (_, st5) = f.op(Some(&base2), &[action("dir/", "/data/dir/", Some((5, 6)))]);
    assert_eq!(st5.linked, 0);

    // GC: removing s1 (and forgetting it) leaves s2's linked files whole.
    f.snap.remove(&s1).unwrap();
    forget_snapshots(&f.index, std::slice::from_ref(&s1)).unwrap();
    let m = f.file(&s2, "data/dir/sub/f3");
    assert_eq!(m.nlink(), 1);
    let upper2 = f.snap.committed_upper(&s2).unwrap();
    assert_eq!(
        fs::read_to_string(upper2.join("data/dir/sub/f3")).unwrap(),
        "file 3\n"
    );
}

#[test]
fn an_op_that_replaced_something_records_nothing() {
    let Some(f) = fixture() else { return };
    fs::create_dir_all(f.ctx.join("other/sub")).unwrap();
    fs::write(f.ctx.join("other/sub/f1"), "other\n").unwrap();
    let base = f.base();
    // The second source lands on a path the first one wrote: no entry of the op is recorded.
    let (_, st) = f.op(
        Some(&base),
        &[
            action("dir/", "/data/x/", None),
            action("other/", "/data/x/", None),
        ],
    );
    assert_eq!(st.recorded, 0);
    assert!(st.copied >= 40);
    let (_, again) = f.op(Some(&base), &[action("dir/", "/data/x/", None)]);
    assert_eq!(again.linked, 0, "nothing to link from");
}

#[test]
fn a_placeholder_changed_before_it_is_settled_gets_the_real_bytes() {
    let Some(f) = fixture() else { return };
    let base = f.base();
    let (b1, _) = f.op(Some(&base), &[action("big", "/data/big", None)]);
    let src = f.ctx.join("big");
    let meta = fs::symlink_metadata(&src).unwrap();
    let mode = meta.mode() & 0o7777;

    let base2 = f.base();
    let active = f.snap.prepare(Some(&base2)).unwrap();
    let mount = active.mount().unwrap();
    let root = mount.path().to_path_buf();
    let upper = active.upperdir().to_path_buf();
    let pool = CopyPool::new(
        f.index.clone(),
        f.snap.clone(),
        root.clone(),
        upper.clone(),
        active.id().clone(),
        Some(&base2),
    )
    .unwrap();
    let key = CopyPool::key(&meta, (0, 0), mode);
    let candidate = pool.lookup(&[key]).remove(0).expect("a candidate");
    let dest = root.join("data/big");
    let linked = pool
        .try_link(&candidate, &src, &dest, &meta, (0, 0), mode)
        .unwrap();
    assert!(linked.is_some());
    // Through the mount the placeholder already looks final (size, mode), without the data.
    assert_eq!(fs::metadata(&dest).unwrap().len(), 300_000);
    // Something changes it in place before the op ends: it must not become the shared inode.
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o600)).unwrap();
    drop(mount);
    pool.settle().unwrap();
    let id = f.snap.commit(active).unwrap();
    let stats = pool.finish(&id).unwrap();
    assert_eq!((stats.linked, stats.copied, stats.recorded), (0, 1, 0));
    let made = upper_file(&f, &id, "data/big");
    assert_eq!(fs::read(&made).unwrap(), vec![7u8; 300_000]);
    let m = fs::metadata(&made).unwrap();
    assert_eq!((m.nlink(), m.mode() & 0o7777), (1, 0o600));
    let shared = fs::metadata(upper_file(&f, &b1, "data/big")).unwrap();
    assert_eq!((shared.nlink(), shared.mode() & 0o7777), (1, mode));
}

fn upper_file(f: &Fixture, id: &SnapshotId, rel: &str) -> std::path::PathBuf {
    f.snap.committed_upper(id).unwrap().join(rel)
}
