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
        KEY_VERSION, 2,
        "the checksum format is part of key version 2: a new version needs new pins below"
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
            "c48eed3fe1ab21abe2d7317c0f3d450e1661429c5f6345174b104fa6b2c594e9",
        ),
        (
            ".",
            "21d115e3efe37457b85d42d72915f65bcba41b327ae8e524516d1df9f03b07d0",
        ),
        (
            "src/main.c",
            "2706cc1a08d221280b7e8ae7a9707f20c32b539e2c393982baeac446842a1793",
        ),
        (
            "src/link",
            "ca773ec1612b7ab2aa10bce521e9f593d55ab854ad95660880d98d4287249daf",
        ),
        (
            "src/*.sh",
            "686ffe8019a0bbc94a4b662877609321440c35e98672884e816d2cfff1f8d0af",
        ),
        (
            "src --exclude=*.c",
            "471bf4002a23063ebf2af29fcdce2cdff3f636bc7d5283b28bf0485a071b3365",
        ),
    ];
    let want: Vec<(&str, String)> = want.into_iter().map(|(p, h)| (p, h.to_string())).collect();
    assert_eq!(got, want);
}

#[test]
fn mtimes_and_excluded_paths_do_not_count_but_owners_and_modes_do() {
    if !common::root_or_skip("mtimes_and_excluded_paths_do_not_count_but_owners_and_modes_do") {
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
    // The owner counts (BuildKit's client resets context owners to 0:0 before hashing; rbuild
    // does not, see ARCHITECTURE.md "Cache keys").
    lchown(root.join("src/main.c"), Some(1001), None).expect("chown");
    let chowned = sum(root, "src", &[]);
    assert_ne!(chowned, before);
    lchown(root.join("src/main.c"), Some(1000), None).expect("chown back");
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
