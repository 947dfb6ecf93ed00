//! Tests of COPY/ADD through [`super::copy_action`]: destination rules, flags (`--chmod`,
//! `--exclude`, `--parents`), archives and symlinks.

use super::*;
use rbuild_llb::CopyAction;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[test]
fn copy_rules() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    fs::create_dir_all(src.path().join("dir/inner")).unwrap();
    fs::write(src.path().join("dir/inner/f"), "x").unwrap();
    fs::write(src.path().join("a.txt"), "a").unwrap();
    fs::write(src.path().join("b.txt"), "b").unwrap();
    let settings = CopySettings::plain(true);
    copy_action(src.path(), dst.path(), &action("dir", "/x"), &settings).unwrap();
    assert!(dst.path().join("x/inner/f").is_file());
    copy_action(src.path(), dst.path(), &action("*.txt", "/t"), &settings).unwrap();
    assert!(dst.path().join("t/a.txt").is_file() && dst.path().join("t/b.txt").is_file());
    copy_action(
        src.path(),
        dst.path(),
        &action("a.txt", "/renamed"),
        &settings,
    )
    .unwrap();
    assert_eq!(fs::read_to_string(dst.path().join("renamed")).unwrap(), "a");
    copy_action(src.path(), dst.path(), &action("a.txt", "/x"), &settings).unwrap();
    assert!(dst.path().join("x/a.txt").is_file());
    let err = copy_action(src.path(), dst.path(), &action("missing", "/y"), &settings).unwrap_err();
    assert!(err.to_string().contains("/missing"));
}

fn action(s: &str, d: &str) -> CopyAction {
    CopyAction::new(1, s, d)
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn symbolic_chmod_applies_per_entry() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    fs::create_dir(src.path().join("d")).unwrap();
    fs::write(src.path().join("d/f"), "x").unwrap();
    fs::set_permissions(src.path().join("d/f"), fs::Permissions::from_mode(0o664)).unwrap();
    fs::set_permissions(src.path().join("d"), fs::Permissions::from_mode(0o775)).unwrap();
    let mut settings = CopySettings::plain(true);
    settings.symbolic = Some(SymbolicMode::parse("u+x,g-w,o=r").unwrap());
    copy_action(src.path(), dst.path(), &action("/", "/out/"), &settings).unwrap();
    assert_eq!(mode_of(&dst.path().join("out/d/f")), 0o744);
    assert_eq!(mode_of(&dst.path().join("out/d")), 0o754);
}

#[test]
fn excludes_are_relative_to_each_source() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    fs::create_dir_all(src.path().join("dir/sub")).unwrap();
    for f in [
        "dir/a.txt",
        "dir/b.md",
        "dir/sub/c.txt",
        "dir/sub/d.md",
        "top.md",
        "top.txt",
    ] {
        fs::write(src.path().join(f), f).unwrap();
    }
    let mut settings = CopySettings::plain(true);
    settings.source_exclude = Some(crate::dockerignore::Matcher::new(&["*.md", "sub/*.txt"]));
    copy_action(src.path(), dst.path(), &action("dir", "/d/"), &settings).unwrap();
    assert!(dst.path().join("d/a.txt").is_file());
    assert!(!dst.path().join("d/b.md").exists());
    assert!(!dst.path().join("d/sub/c.txt").exists());
    assert!(
        dst.path().join("d/sub/d.md").exists(),
        "*.md is top-level only"
    );
    copy_action(src.path(), dst.path(), &action("top*", "/t/"), &settings).unwrap();
    assert!(dst.path().join("t/top.txt").is_file() && !dst.path().join("t/top.md").exists());
    // Everything excluded is not an error.
    copy_action(
        src.path(),
        dst.path(),
        &action("top.md", "/none/"),
        &settings,
    )
    .unwrap();
    assert!(!dst.path().join("none/top.md").exists());
}

#[test]
fn parents_keep_paths_below_the_pivot() {
    assert_eq!(parents_pivot("x/./y/*.txt"), PathBuf::from("x"));
    assert_eq!(parents_pivot("./x/a.txt"), PathBuf::new());
    assert_eq!(parents_pivot("/a/b/./c"), PathBuf::from("a/b"));
    assert_eq!(
        parents_target(Path::new("x/y/a.txt"), Path::new("x")),
        PathBuf::from("y/a.txt")
    );
    assert_eq!(
        parents_target(Path::new("x/y/a.txt"), Path::new("")),
        PathBuf::from("x/y/a.txt")
    );
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    fs::create_dir_all(src.path().join("x/y/z")).unwrap();
    fs::create_dir_all(src.path().join("w/y")).unwrap();
    fs::write(src.path().join("x/y/a.txt"), "xa").unwrap();
    fs::write(src.path().join("w/y/a.txt"), "wa").unwrap();
    fs::write(src.path().join("x/y/z/deep"), "deep").unwrap();
    fs::set_permissions(src.path().join("x/y"), fs::Permissions::from_mode(0o750)).unwrap();
    let settings = CopySettings::plain(true);
    let mut a = action("*/y/a.txt", "/no_pivot/");
    a.parents = true;
    copy_action(src.path(), dst.path(), &a, &settings).unwrap();
    assert_eq!(
        fs::read_to_string(dst.path().join("no_pivot/x/y/a.txt")).unwrap(),
        "xa"
    );
    assert_eq!(
        fs::read_to_string(dst.path().join("no_pivot/w/y/a.txt")).unwrap(),
        "wa"
    );
    assert_eq!(
        mode_of(&dst.path().join("no_pivot/x/y")),
        0o750,
        "parent dirs keep the source's mode"
    );
    let mut a = action("x/./y/a.txt", "/pivot/");
    a.parents = true;
    copy_action(src.path(), dst.path(), &a, &settings).unwrap();
    assert!(dst.path().join("pivot/y/a.txt").is_file());
    assert!(!dst.path().join("pivot/x").exists());
    let mut a = action("x/./y/z", "/dirs/");
    a.parents = true;
    copy_action(src.path(), dst.path(), &a, &settings).unwrap();
    assert!(dst.path().join("dirs/y/z/deep").is_file());
}

fn tar_with(name: &str, body: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1);
    h.set_uid(0);
    h.set_gid(0);
    b.append_data(&mut h, name, body).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn archives_of_every_compression_are_unpacked() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let tar = tar_with("inner.txt", b"payload");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    bz.write_all(&tar).unwrap();
    let mut xz = Vec::new();
    lzma_rs::xz_compress(&mut io::Cursor::new(&tar), &mut xz).unwrap();
    let zst = zstd::encode_all(io::Cursor::new(&tar), 3).unwrap();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("a.tar", tar.clone()),
        ("a.tar.gz", gz.finish().unwrap()),
        ("a.tar.bz2", bz.finish().unwrap()),
        ("a.tar.xz", xz),
        ("a.tar.zst", zst),
    ];
    for (name, bytes) in files {
        fs::write(src.path().join(name), bytes).unwrap();
        let mut a = action(name, &format!("/{name}.d/"));
        a.attempt_unpack = true;
        copy_action(src.path(), dst.path(), &a, &CopySettings::plain(true)).unwrap();
        assert_eq!(
            fs::read_to_string(dst.path().join(format!("{name}.d/inner.txt"))).unwrap(),
            "payload",
            "{name}"
        );
    }
    // A .tar.gz that is not an archive (a gzip of plain text, or no gzip at all) is a file.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"just text").unwrap();
    fs::write(src.path().join("fake.tar.gz"), gz.finish().unwrap()).unwrap();
    fs::write(src.path().join("plain.tar.gz"), "not compressed").unwrap();
    for name in ["fake.tar.gz", "plain.tar.gz"] {
        let mut a = action(name, "/files/");
        a.attempt_unpack = true;
        copy_action(src.path(), dst.path(), &a, &CopySettings::plain(true)).unwrap();
        assert!(dst.path().join("files").join(name).is_file(), "{name}");
    }
}

#[test]
fn symlink_rules() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    fs::create_dir(src.path().join("tree")).unwrap();
    fs::write(src.path().join("target.txt"), "T").unwrap();
    symlink("target.txt", src.path().join("link.txt")).unwrap();
    symlink("../target.txt", src.path().join("tree/inner-link")).unwrap();
    let settings = CopySettings::plain(true);
    // A symlink named as the source is followed.
    copy_action(
        src.path(),
        dst.path(),
        &action("link.txt", "/a/"),
        &settings,
    )
    .unwrap();
    let m = fs::symlink_metadata(dst.path().join("a/link.txt")).unwrap();
    assert!(m.is_file());
    // Symlinks inside a copied tree are kept.
    copy_action(src.path(), dst.path(), &action("tree", "/b/"), &settings).unwrap();
    assert_eq!(
        fs::read_link(dst.path().join("b/inner-link")).unwrap(),
        PathBuf::from("../target.txt")
    );
    // The destination resolves through the image's own symlinks without escaping the root.
    fs::create_dir(dst.path().join("real")).unwrap();
    symlink("/real", dst.path().join("abs")).unwrap();
    symlink("../../../../../../", dst.path().join("up")).unwrap();
    copy_action(
        src.path(),
        dst.path(),
        &action("target.txt", "/abs/"),
        &settings,
    )
    .unwrap();
    assert!(dst.path().join("real/target.txt").is_file());
    copy_action(
        src.path(),
        dst.path(),
        &action("target.txt", "/up/escaped.txt"),
        &settings,
    )
    .unwrap();
    assert!(dst.path().join("escaped.txt").is_file());
    // A source symlink cannot lead out of the source root either.
    symlink("/../../../etc/hostname", src.path().join("evil")).unwrap();
    let err = copy_action(src.path(), dst.path(), &action("evil", "/e"), &settings).unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
}

#[test]
fn hardlink_groups_are_kept_within_one_copy() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    fs::create_dir_all(src.path().join("d/sub")).unwrap();
    fs::write(src.path().join("d/a"), "linked").unwrap();
    fs::hard_link(src.path().join("d/a"), src.path().join("d/sub/b")).unwrap();
    fs::write(src.path().join("lone"), "lone").unwrap();
    fs::hard_link(src.path().join("lone"), src.path().join("partner")).unwrap();
    let settings = CopySettings::plain(true);
    copy_action(src.path(), dst.path(), &action("d", "/out"), &settings).unwrap();
    let a = fs::metadata(dst.path().join("out/a")).unwrap();
    let b = fs::metadata(dst.path().join("out/sub/b")).unwrap();
    assert_eq!(a.ino(), b.ino(), "links of each other stay links");
    assert_eq!(a.nlink(), 2);
    let src_a = fs::metadata(src.path().join("d/a")).unwrap();
    assert_ne!(a.ino(), src_a.ino(), "the first name is a real copy");
    // A name whose partner is not copied is a plain file.
    copy_action(src.path(), dst.path(), &action("lone", "/lone"), &settings).unwrap();
    assert_eq!(fs::metadata(dst.path().join("lone")).unwrap().nlink(), 1);
    // Separate sources of one COPY are separate copies (BuildKit copies each on its own).
    copy_action(
        src.path(),
        dst.path(),
        &action("partner", "/partner"),
        &settings,
    )
    .unwrap();
    assert_eq!(fs::metadata(dst.path().join("partner")).unwrap().nlink(), 1);
}

#[test]
fn existing_nested_dirs_take_the_source_metadata() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    fs::create_dir_all(src.path().join("rootfs/tmp/inner")).unwrap();
    fs::write(src.path().join("rootfs/tmp/inner/f"), "f").unwrap();
    fs::set_permissions(
        src.path().join("rootfs/tmp"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    fs::set_permissions(src.path().join("rootfs"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::create_dir_all(dst.path().join("tmp/inner")).unwrap();
    fs::set_permissions(dst.path().join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::chown(dst.path().join("tmp/inner"), Some(1234), Some(1234)).ok();
    fs::set_permissions(dst.path(), fs::Permissions::from_mode(0o751)).unwrap();
    let settings = CopySettings::plain(true);
    copy_action(src.path(), dst.path(), &action("rootfs/", "/"), &settings).unwrap();
    assert_eq!(mode_of(&dst.path().join("tmp")), 0o755, "/tmp loses 1777");
    assert_eq!(
        mode_of(dst.path()),
        0o751,
        "the top-level destination keeps its mode"
    );
    let inner = fs::metadata(dst.path().join("tmp/inner")).unwrap();
    assert_eq!(
        (inner.uid(), inner.gid()),
        (0, 0),
        "nested dirs take the owner"
    );
    let src_tmp = fs::metadata(src.path().join("rootfs/tmp")).unwrap();
    let dst_tmp = fs::metadata(dst.path().join("tmp")).unwrap();
    assert_eq!(dst_tmp.mtime(), src_tmp.mtime(), "and the mtime");
}

#[test]
fn archive_entries_take_the_chown_owner() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o750);
    h.set_uid(7);
    h.set_gid(7);
    h.set_mtime(1_000_000);
    h.set_size(0);
    b.append_data(&mut h, "pkg/", io::empty()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o4755);
    h.set_uid(7);
    h.set_gid(7);
    h.set_size(3);
    h.set_mtime(1_000_000);
    b.append_data(&mut h, "pkg/tool", &b"abc"[..]).unwrap();
    fs::write(src.path().join("a.tar"), b.into_inner().unwrap()).unwrap();
    let mut add = action("a.tar", "/x/");
    add.attempt_unpack = true;
    let mut settings = CopySettings::plain(true);
    settings.owner = Some((1000, 1001));
    settings.mode = Some(0o600);
    copy_action(src.path(), dst.path(), &add, &settings).unwrap();
    for p in ["x/pkg", "x/pkg/tool"] {
        let m = fs::symlink_metadata(dst.path().join(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (1000, 1001), "{p}");
    }
    assert_eq!(
        mode_of(&dst.path().join("x/pkg/tool")),
        0o4755,
        "--chmod not applied"
    );
    assert_eq!(mode_of(&dst.path().join("x/pkg")), 0o750);
    let dir = fs::metadata(dst.path().join("x/pkg")).unwrap();
    assert_eq!(dir.mtime(), 1_000_000);
}

#[test]
fn parents_matches_are_nested_for_metadata() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    fs::create_dir_all(src.path().join("x/y/z")).unwrap();
    fs::write(src.path().join("x/y/z/f"), "f").unwrap();
    fs::write(src.path().join("x/y/g"), "g").unwrap();
    fs::hard_link(src.path().join("x/y/g"), src.path().join("x/y/z/g2")).unwrap();
    fs::set_permissions(src.path().join("x/y"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(src.path().join("x/y/z"), fs::Permissions::from_mode(0o705)).unwrap();
    fs::create_dir_all(dst.path().join("out/y/z")).unwrap();
    fs::set_permissions(dst.path().join("out/y"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(
        dst.path().join("out/y/z"),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let settings = CopySettings::plain(true);
    let mut a = action("x/./y/*", "/out/");
    a.parents = true;
    copy_action(src.path(), dst.path(), &a, &settings).unwrap();
    // The existing parent takes its source's mode; the existing match takes its source's mode.
    assert_eq!(mode_of(&dst.path().join("out/y")), 0o750);
    assert_eq!(mode_of(&dst.path().join("out/y/z")), 0o705);
    // Hardlinks across the matches of one `--parents` source stay linked.
    let g = fs::metadata(dst.path().join("out/y/g")).unwrap();
    let g2 = fs::metadata(dst.path().join("out/y/z/g2")).unwrap();
    assert_eq!(g.ino(), g2.ino());
}

/// Fifos (and, as root, device nodes) are recreated with their type, mode, device number and
/// mtime.
#[test]
fn special_files_are_recreated() {
    use rustix::fs::{mknodat, FileType, Mode, CWD};
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let fifo = src.path().join("fifo");
    mknodat(CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o640), 0).unwrap();
    let root = rustix::process::geteuid().is_root();
    if root {
        let dev = rustix::fs::makedev(1, 3);
        mknodat(
            CWD,
            src.path().join("null"),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o600),
            dev,
        )
        .unwrap();
    }
    copy_action(
        src.path(),
        dst.path(),
        &action("/", "/out"),
        &CopySettings::plain(true),
    )
    .unwrap();
    let (a, b) = (
        fs::symlink_metadata(&fifo).unwrap(),
        fs::symlink_metadata(dst.path().join("out/fifo")).unwrap(),
    );
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&b.file_type()));
    assert_eq!(
        (b.mode(), b.mtime(), b.mtime_nsec()),
        (a.mode(), a.mtime(), a.mtime_nsec())
    );
    if root {
        let b = fs::symlink_metadata(dst.path().join("out/null")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &b.file_type()
        ));
        assert_eq!(
            (b.rdev(), b.mode() & 0o7777),
            (rustix::fs::makedev(1, 3), 0o600)
        );
    }
}
