//! Content keys of `COPY --from` / bind mounts of stages ([`rbuild_worker::content_key`]): the
//! digest of what the op reads from a filesystem input covers content, type, mode, owner,
//! xattrs, symlink targets and hardlinks but not mtimes; it follows the copy's wildcard and
//! `--exclude` rules; the worker memoises it per snapshot. The digests are pinned: they enter
//! cache keys, so changing them needs a bump of `rbuild_solver::KEY_VERSION`.

mod common;

use rbuild_llb::{CopyAction, FileAction, FileOp, Op};
use rbuild_solver::{Executor, KEY_VERSION};
use rbuild_worker::content_key::{input_digest, selection_digest, Selection};
use rbuild_worker::{Value, WorkVertex, Worker};
use std::fs;
use std::os::unix::fs::{lchown, PermissionsExt};
use std::path::Path;

fn copy(src: &str, excludes: &[&str]) -> CopyAction {
    CopyAction {
        exclude_patterns: excludes.iter().map(|s| s.to_string()).collect(),
        ..CopyAction::new(1, src, "/app/")
    }
}

fn digest(root: &Path, s: &Selection) -> String {
    hex::encode(selection_digest(root, s).expect("digest"))
}

#[test]
fn selection_digests_are_pinned_and_cover_what_the_copy_keeps() {
    if !common::root_or_skip("selection_digests_are_pinned_and_cover_what_the_copy_keeps") {
        return;
    }
    assert_eq!(KEY_VERSION, 3, "the digest format is part of key version 3");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    common::context_fixture(root);
    let src = Selection::Copy(copy("src", &[]));
    let got = vec![
        digest(root, &src),
        digest(root, &Selection::Copy(copy("src/*.c", &[]))),
        digest(root, &Selection::Copy(copy("src", &["*.log", "target"]))),
        digest(root, &Selection::Copy(copy("missing", &[]))),
        digest(root, &Selection::Bind("src".into())),
    ];
    let want = vec![
        "7a07e345294f0fb48f8dcaf5400c490db3e8bcf656d60d4b919adaec24a7a206",
        "b4f67ff3908d56ade688ac814bb62cf06a3e3ba3594f1eb509a645bd9bdf90cd",
        "ce583c66a3be79e0f1b52d8d8bad4c200cf9ac9d49b4a45ce45dec31fcdf2b8e",
        "a1aa9f1a8ba0f70b88e02bdc9ea88d0483283315f7d64043064f02fc297e0c86",
        "42c6817381b707824fbf28ac4b01c2f00f288026a3b9b8ae677c0924aaf48ea9",
    ];
    assert_eq!(got, want);

    let before = digest(root, &src);
    // mtimes do not count.
    let main = root.join("src/main.c");
    fs::File::options()
        .write(true)
        .open(&main)
        .and_then(|f| f.set_modified(std::time::SystemTime::UNIX_EPOCH))
        .expect("mtime");
    assert_eq!(digest(root, &src), before, "an mtime changed the digest");
    // A file outside the selection does not count.
    fs::write(root.join("README.md"), "other\n").expect("write");
    assert_eq!(digest(root, &src), before);
    // Owners, modes, xattrs, content and hardlinks do.
    lchown(&main, Some(0), Some(0)).expect("chown");
    let owner = digest(root, &src);
    assert_ne!(owner, before, "an owner change kept the digest");
    fs::set_permissions(&main, fs::Permissions::from_mode(0o600)).expect("chmod");
    let mode = digest(root, &src);
    assert_ne!(mode, owner, "a mode change kept the digest");
    if rustix::fs::lsetxattr(&main, "user.test", b"1", rustix::fs::XattrFlags::empty()).is_ok() {
        assert_ne!(digest(root, &src), mode, "an xattr kept the digest");
    }
    let xattr = digest(root, &src);
    fs::hard_link(&main, root.join("src/again.c")).expect("link");
    let linked = digest(root, &src);
    fs::remove_file(root.join("src/again.c")).expect("rm");
    fs::copy(&main, root.join("src/again.c")).expect("copy");
    // (the copy took main.c's mode; give it the same owner)
    lchown(root.join("src/again.c"), Some(0), Some(0)).expect("chown");
    if rustix::fs::lsetxattr(
        root.join("src/again.c"),
        "user.test",
        b"1",
        rustix::fs::XattrFlags::empty(),
    )
    .is_ok()
    {
        assert_ne!(digest(root, &src), linked, "a hardlink looked like a copy");
    }
    assert_ne!(linked, xattr);
    fs::write(&main, "changed\n").expect("write");
    assert_ne!(
        digest(root, &src),
        linked,
        "a content change kept the digest"
    );
}

fn copy_from_vertex() -> WorkVertex {
    let op = Op::File(FileOp {
        actions: vec![FileAction::Copy(copy("src", &[]))],
    });
    WorkVertex {
        digest: rbuild_llb::vertex_digest(&op, &[]),
        op,
        context_inputs: vec![false, false],
        context_excludes: vec![],
        platform: None,
    }
}

#[tokio::test]
async fn the_worker_digests_a_snapshot_once() {
    if !common::root_or_skip("the_worker_digests_a_snapshot_once") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let snapshotter =
        rbuild_snapshotter::Snapshotter::open(&state.join("snapshots")).expect("snapshots");
    let index = rbuild_solver::CacheIndex::open(&state.join(rbuild_solver::INDEX_FILE_NAME))
        .expect("index");
    let worker = |index: Option<rbuild_solver::CacheIndex>| {
        Worker::new(
            rbuild_oci::Store::open(&state.join("store")).expect("store"),
            snapshotter.clone(),
            rbuild_sandbox::Sandbox::new("/nonexistent/rbuild".into()),
            rbuild_registry::RegistryClient::new().expect("registry client"),
            state.join("cache-mounts"),
        )
        .with_index(index)
    };
    let active = snapshotter.prepare(None).expect("prepare");
    common::context_fixture(active.upperdir());
    let expected =
        input_digest(&[
            selection_digest(active.upperdir(), &Selection::Copy(copy("src", &[])))
                .expect("digest"),
        ]);
    let id = snapshotter.commit(active).expect("commit");
    let vertex = copy_from_vertex();
    let with_index = worker(Some(index));
    assert_eq!(with_index.content_inputs(&vertex), [1]);
    let value = Value::Fs(Some(id));
    let first = with_index
        .content_digest(&vertex, 1, &value)
        .await
        .expect("content digest");
    assert_eq!(first.digest, expected);

    // Snapshots never change; tamper with one anyway to see that the memo answers.
    let main = walk_find(&state.join("snapshots"), "main.c").expect("main.c in the snapshot");
    fs::write(&main, "tampered\n").expect("tamper");
    let again = with_index
        .content_digest(&vertex, 1, &value)
        .await
        .expect("content digest");
    assert_eq!(again.digest, first.digest, "the memo was not used");
    let fresh = worker(None)
        .content_digest(&vertex, 1, &value)
        .await
        .expect("content digest");
    assert_ne!(
        fresh.digest, first.digest,
        "without the memo the file is read"
    );
}

fn walk_find(dir: &Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        let meta = fs::symlink_metadata(&path).ok()?;
        if meta.is_dir() {
            if let Some(found) = walk_find(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
    }
    None
}
