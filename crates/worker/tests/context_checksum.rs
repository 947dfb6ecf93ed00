//! Pins the build-context checksum (`rbuild_worker::checksum`) of a fixture tree to exact bytes.
//! These digests are the content part of every COPY/ADD-from-context and `RUN --mount` key: a
//! change here changes every such key, so it must come with a bump of
//! `rbuild_solver::KEY_VERSION` (the checksum format is versioned by it) and new pins here and
//! in `cache_keys.rs`.
//!
//! What counts: the pattern, each selected path, entry type, mode (permission and setuid/
//! setgid/sticky bits), uid, gid, a file's size and content, a symlink's target, a directory's
//! sorted child names; what does not: mtime, ctime, inode, and paths the excludes drop.

mod common;

use rbuild_solver::KEY_VERSION;
use rbuild_worker::checksum::StatCache;
use rbuild_worker::dockerignore::Matcher;
use std::os::unix::fs::lchown;
use std::path::Path;

fn sum(root: &Path, pattern: &str, source_exclude: &[&str]) -> String {
    let source = Matcher::new(source_exclude);
    let digest = StatCache::new(None)
        .with_excludes(Some(Matcher::new(common::EXCLUDES)))
        .checksum_filtered(
            root,
            pattern,
            true,
            true,
            (!source.is_empty()).then_some(&source),
        )
        .expect("checksum");
    hex::encode(digest)
}

#[test]
fn the_context_checksum_of_a_fixture_tree_is_pinned() {
    if !common::root_or_skip("the_context_checksum_of_a_fixture_tree_is_pinned") {
        return;
    }
    assert_eq!(
        KEY_VERSION, 3,
        "the checksum format is part of key version 3: a new version needs new pins below"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    common::context_fixture(root);
    let got: Vec<(&str, String)> = vec![
        ("src", sum(root, "src", &[])),
        (".", sum(root, ".", &[])),
        ("src/main.c", sum(root, "src/main.c", &[])),
        ("src/link", sum(root, "src/link", &[])),
        ("src/*.sh", sum(root, "src/*.sh", &[])),
        ("src --exclude=*.c", sum(root, "src", &["*.c"])),
    ];
    let want = vec![
        (
            "src",
            "dc2a4b86ad94c10fb0d7f2e40c064d82359ccbb983b4572628e474e2cfbfa4c0",
        ),
        (
            ".",
            "5b2fd17650aca2818d343e5a0308ac7288c8419d967ef4d6da317f310587e330",
        ),
        (
            "src/main.c",
            "2e99d62f66b1277b60fd1bce12902979f15f6e54666c79a8f5c2962031aeb5f6",
        ),
        (
            "src/link",
            "f4ce2fb2851a34a8050753f65890810036c67e841c00bd74a4533e244972f0a6",
        ),
        (
            "src/*.sh",
            "42786913bff3e002903cd643b2654274c6241ce9f17ea5c6ee1568690517ef62",
        ),
        (
            "src --exclude=*.c",
            "d6756b13a49fc3d8b136727f11ed4cce85f959be7e935af32b40b595a2604f33",
        ),
    ];
    let want: Vec<(&str, String)> = want.into_iter().map(|(p, h)| (p, h.to_string())).collect();
    assert_eq!(got, want);
}

#[test]
fn mtimes_owners_and_excluded_paths_do_not_count_but_modes_do() {
    if !common::root_or_skip("mtimes_owners_and_excluded_paths_do_not_count_but_modes_do") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    common::context_fixture(root);
    let before = sum(root, "src", &[]);
    // A new mtime, and a write to an excluded file: same checksum.
    std::fs::File::options()
        .write(true)
        .open(root.join("src/main.c"))
        .and_then(|f| f.set_modified(std::time::UNIX_EPOCH))
        .expect("set mtime");
    std::fs::write(root.join("src/target/junk.o"), "changed").expect("write");
    std::fs::write(root.join("src/other.log"), "more noise").expect("write");
    assert_eq!(sum(root, "src", &[]), before);
    // The owner does not count (COPY gives context files 0:0; BuildKit's client resets context
    // owners before hashing), so checkouts owned by different users share keys.
    lchown(root.join("src/main.c"), Some(1001), Some(1002)).expect("chown");
    assert_eq!(sum(root, "src", &[]), before);
    // The mode counts, including the setuid bit.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root.join("src/run.sh"),
        std::fs::Permissions::from_mode(0o750),
    )
    .expect("chmod");
    assert_ne!(sum(root, "src", &[]), before);
}
