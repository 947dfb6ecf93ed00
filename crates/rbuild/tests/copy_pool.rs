//! The copy pool (`worker::fsops::CopyPool`): a rebuild after editing one context file links
//! the unchanged files of its COPYs to the earlier build's copies (same inode in both
//! snapshots' upper dirs), below directories the COPY creates and through the overlay mount
//! (a file copied into an existing directory), and the layers are byte for byte those of a
//! build with the pool off (`RBUILD_COPY_POOL=0`): same diff IDs, with hardlinked context
//! files, odd modes, `--chown` and `--chmod`.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

mod common;

use common::*;

const DOCKERFILE: &str = r#"ARG BASE
FROM ${BASE}
RUN mkdir -p /data
COPY stamp.txt /data/stamp.txt
COPY files/ /data/files/
COPY --chown=7:8 --chmod=0604 files/ /owned/
COPY big.bin /data/big.bin
COPY big.bin /data/again.bin
RUN cat /data/files/d1/f3.txt /data/big.bin /owned/d1/f3.txt | md5sum > /sum
"#;

fn write(path: &Path, body: &[u8], mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, body).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn context() -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    fs::write(c.join("Dockerfile"), DOCKERFILE).unwrap();
    write(&c.join("stamp.txt"), b"one\n", 0o644);
    let modes = [0o644, 0o600, 0o755, 0o4755, 0o2711, 0o400];
    for d in 0..3 {
        for i in 0..60 {
            let body = format!("dir {d} file {i}\n").repeat(i + 1);
            write(
                &c.join(format!("files/d{d}/f{i}.txt")),
                body.as_bytes(),
                modes[i % modes.len()],
            );
        }
    }
    fs::hard_link(c.join("files/d0/f1.txt"), c.join("files/d2/hard.txt")).unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    write(&c.join("big.bin"), &big, 0o640);
    ctx
}

/// Builds `ctx` into `root` (tag `pool:1`, times clamped so two roots give equal layers);
/// returns the diff IDs.
fn build_tagged(root: &Path, ctx: &Path, base: &str, pool: bool) -> Vec<String> {
    let mut cmd = rbuild_at(root);
    cmd.args(["build", "--progress=plain", "-t", "pool:1"])
        .args(["--build-arg", &format!("BASE={base}")])
        .args(["--build-arg", "SOURCE_DATE_EPOCH=1700000000"]);
    if !pool {
        cmd.env("RBUILD_COPY_POOL", "0");
    }
    let out = cmd.arg(ctx).output().unwrap();
    assert_ok(&out);
    let store = rbuild_oci::Store::open(root).unwrap();
    let desc = store.resolve_tag("pool:1").unwrap().expect("tagged");
    let image = store.read_image(&desc.digest).unwrap();
    image
        .config
        .rootfs
        .diff_ids
        .iter()
        .map(|d| d.to_string())
        .collect()
}

/// Every regular file below the snapshots' upper dirs: path in the upper -> (snapshot, inode).
fn files_by_path(root: &Path) -> HashMap<PathBuf, Vec<(String, u64)>> {
    let snaps = root.join("snapshots-v1/snapshots");
    let mut out: HashMap<PathBuf, Vec<(String, u64)>> = HashMap::new();
    for snap in fs::read_dir(&snaps).unwrap() {
        let snap = snap.unwrap();
        let id = snap.file_name().to_string_lossy().into_owned();
        let upper = snap.path().join("fs");
        let mut stack = vec![upper.clone()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                let m = fs::symlink_metadata(&p).unwrap();
                if m.is_dir() {
                    stack.push(p);
                } else if m.is_file() {
                    let rel = p.strip_prefix(&upper).unwrap().to_path_buf();
                    out.entry(rel).or_default().push((id.clone(), m.ino()));
                }
            }
        }
    }
    out
}

#[test]
fn a_rebuild_links_unchanged_files_and_makes_the_same_layers() {
    let Some(env) = env() else { return };
    let ctx = context();
    let c = ctx.path();
    let pooled = tempfile::tempdir().unwrap();
    build_tagged(pooled.path(), c, &env.base, true);

    // Edit the stamp (every COPY after it re-runs on a changed parent) and one file.
    write(&c.join("stamp.txt"), b"two\n", 0o644);
    write(&c.join("files/d1/f5.txt"), b"edited\n", 0o644);
    let with_pool = build_tagged(pooled.path(), c, &env.base, true);

    let by_path = files_by_path(pooled.path());
    let shared = |rel: &str| {
        let v = &by_path[Path::new(rel)];
        assert_eq!(v.len(), 2, "{rel} in two snapshots: {v:?}");
        v[0].1 == v[1].1
    };
    assert!(shared("data/files/d1/f3.txt"), "linked below a created dir");
    assert!(shared("owned/d1/f3.txt"), "linked with --chown/--chmod");
    assert!(!shared("data/files/d1/f5.txt"), "the edited file is a copy");
    // The hardlink group is copied as a group of its own in each build.
    assert!(!shared("data/files/d2/hard.txt"));
    // Through the mount: the rebuild's big.bin is linked to the first build's latest copy of
    // it (its again.bin, the pool's newest entry); the rebuild's again.bin, whose candidate
    // is then an ancestor, is a copy. Two COPYs of one file in one build stay two files.
    let big = &by_path[Path::new("data/big.bin")];
    let again = &by_path[Path::new("data/again.bin")];
    assert_eq!((big.len(), again.len()), (2, 2));
    // (snapshot ids grow with time: sorted, the first build's come first)
    let (mut big, mut again) = (big.clone(), again.clone());
    big.sort();
    again.sort();
    assert_eq!(big[1].1, again[0].1, "linked through the mount");
    assert!([big[0].1, big[1].1, again[0].1]
        .iter()
        .all(|i| *i != again[1].1));
    assert_ne!(big[0].1, again[0].1);

    // The same context built from scratch without the pool: the same layers.
    let plain = tempfile::tempdir().unwrap();
    let without = build_tagged(plain.path(), c, &env.base, false);
    assert_eq!(with_pool, without);
    // And a pool rebuild after a GC that removed the first build's snapshots still works.
    let out = rbuild_at(pooled.path())
        .args(["prune", "-f"])
        .output()
        .unwrap();
    assert_ok(&out);
    write(&c.join("stamp.txt"), b"three\n", 0o644);
    let after_gc = build_tagged(pooled.path(), c, &env.base, true);
    assert_eq!(after_gc.len(), with_pool.len());
    assert_eq!(
        after_gc[3..],
        with_pool[3..],
        "layers after the stamp are the same"
    );
}

/// Later steps write pooled files only through overlay copy-up: a RUN that appends to and
/// chmods a linked file changes its own layer, never the inode the COPY snapshots share.
#[test]
fn a_run_that_changes_a_linked_file_leaves_the_shared_inode_alone() {
    let Some(env) = env() else { return };
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    fs::write(
        c.join("Dockerfile"),
        "ARG BASE\nFROM ${BASE}\nCOPY stamp.txt /stamp.txt\nCOPY app/ /app/\n\
         RUN echo more >> /app/a.txt && chmod 600 /app/a.txt && touch -d @1000 /app/a.txt\n",
    )
    .unwrap();
    write(&c.join("stamp.txt"), b"one\n", 0o644);
    write(&c.join("app/a.txt"), b"original\n", 0o644);
    let root = tempfile::tempdir().unwrap();
    build_tagged(root.path(), c, &env.base, true);
    write(&c.join("stamp.txt"), b"two\n", 0o644);
    build_tagged(root.path(), c, &env.base, true);
    let copies = &files_by_path(root.path())[Path::new("app/a.txt")];
    // Two COPY snapshots sharing one inode, two RUN snapshots with copied-up files.
    assert_eq!(copies.len(), 4, "{copies:?}");
    let snaps = root.path().join("snapshots-v1/snapshots");
    let mut shared = 0;
    for (id, ino) in copies {
        let path = snaps.join(id).join("fs/app/a.txt");
        let m = fs::metadata(&path).unwrap();
        let body = fs::read_to_string(&path).unwrap();
        if m.nlink() == 2 {
            shared += 1;
            assert_eq!(body, "original\n");
            assert_eq!(m.mode() & 0o7777, 0o644);
            assert_ne!(m.mtime(), 1000);
        } else {
            assert_eq!(body, "original\nmore\n", "the RUN's own copy ({ino})");
            assert_eq!(m.mode() & 0o7777, 0o600);
        }
    }
    assert_eq!(shared, 2, "the rebuild linked the COPY: {copies:?}");
}
