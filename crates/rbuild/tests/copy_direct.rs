//! COPY writes the contents of directories it creates straight into the snapshot's upper dir
//! (`worker::fsops::DirectUpper`), the rest through the overlay mount. These builds check that
//! the result is the one the mount alone gives: copies into directories of lower layers, a
//! directory replacing a lower file, a directory re-created where a middle layer whited one out
//! (nothing of the old one shows again), symlinked destinations, hardlink groups split across
//! both sides, many files (copied in parallel) and two sources of one COPY into one new dir.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

mod common;

use common::*;

fn write(path: &Path, body: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, body).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

const DOCKERFILE: &str = r#"ARG BASE
FROM ${BASE}
RUN mkdir -p /t/lowerdir/keep /real /t/hidden/sub \
 && echo lower > /t/lowerdir/keep/old && echo f > /t/was_file \
 && echo h > /t/hidden/sub/h && ln -s /real /t/link
RUN rm -rf /t/hidden && rm /t/was_file && echo again > /t/was_file
COPY tree/ /t/
COPY more/ extra/ /t/newdir/both/
COPY via/ /t/link/
RUN cd /t && find . /real | sort > /listing.txt \
 && stat -c '%h %a %u:%g %Y %n' newdir/hard1 lowerdir/hard2 newdir/exec.sh newdir/sym > /stat.txt \
 && cat hidden/sub/x.txt was_file/inner.txt lowerdir/new/n.txt /real/sub/deep.txt > /cat.txt \
 && ls bulk | wc -l > /bulk.txt && cat bulk/f117.txt >> /bulk.txt
"#;

#[test]
fn copy_below_created_dirs_matches_the_overlay_view() {
    let Some(env) = env() else { return };
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    fs::write(c.join("Dockerfile"), DOCKERFILE).unwrap();
    let t = c.join("tree");
    write(&t.join("lowerdir/new/n.txt"), "merged\n", 0o644);
    write(&t.join("was_file/inner.txt"), "replaced a file\n", 0o644);
    write(&t.join("hidden/sub/x.txt"), "recreated\n", 0o644);
    write(&c.join("via/sub/deep.txt"), "through the link\n", 0o600);
    write(&t.join("newdir/hard1"), "linked\n", 0o640);
    fs::hard_link(t.join("newdir/hard1"), t.join("lowerdir/hard2")).unwrap();
    write(&t.join("newdir/exec.sh"), "#!/bin/sh\n", 0o755);
    symlink("exec.sh", t.join("newdir/sym")).unwrap();
    for i in 0..300 {
        write(
            &t.join(format!("bulk/f{i}.txt")),
            &format!("bulk {i}\n"),
            0o644,
        );
    }
    write(&c.join("more/m.txt"), "more\n", 0o644);
    write(&c.join("extra/e.txt"), "extra\n", 0o644);
    let mtime = fs::metadata(t.join("newdir/exec.sh")).unwrap().mtime();

    let root = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let out = build(
        root.path(),
        c,
        &env.base,
        &[
            "--output",
            &format!("type=local,dest={}", dest.path().display()),
        ],
    );
    assert_ok(&out);
    let d = dest.path();
    let listing = fs::read_to_string(d.join("listing.txt")).unwrap();
    let lines: Vec<&str> = listing
        .lines()
        .filter(|l| !l.starts_with("./bulk/"))
        .collect();
    assert_eq!(
        lines,
        [
            ".",
            "./bulk",
            "./hidden",
            "./hidden/sub",
            "./hidden/sub/x.txt",
            "./link",
            "./lowerdir",
            "./lowerdir/hard2",
            "./lowerdir/keep",
            "./lowerdir/keep/old",
            "./lowerdir/new",
            "./lowerdir/new/n.txt",
            "./newdir",
            "./newdir/both",
            "./newdir/both/e.txt",
            "./newdir/both/m.txt",
            "./newdir/exec.sh",
            "./newdir/hard1",
            "./newdir/sym",
            "./was_file",
            "./was_file/inner.txt",
            "/real",
            "/real/sub",
            "/real/sub/deep.txt",
        ],
        "the whited-out /t/hidden/sub/h must not come back"
    );
    assert_eq!(
        fs::read_to_string(d.join("cat.txt")).unwrap(),
        "recreated\nreplaced a file\nmerged\nthrough the link\n"
    );
    let stat = fs::read_to_string(d.join("stat.txt")).unwrap();
    let stat: Vec<&str> = stat.lines().collect();
    assert_eq!(
        stat[0],
        format!(
            "2 640 0:0 {} newdir/hard1",
            fs::metadata(t.join("newdir/hard1")).unwrap().mtime()
        )
    );
    assert!(stat[1].starts_with("2 640 0:0 "), "{}", stat[1]);
    assert_eq!(stat[2], format!("1 755 0:0 {mtime} newdir/exec.sh"));
    assert!(
        stat[3].starts_with("1 777 0:0 ") && stat[3].ends_with("newdir/sym"),
        "{}",
        stat[3]
    );
    assert_eq!(
        fs::read_to_string(d.join("bulk.txt")).unwrap(),
        "300\nbulk 117\n"
    );
    assert!(fs::symlink_metadata(d.join("t/link"))
        .unwrap()
        .file_type()
        .is_symlink());
}
