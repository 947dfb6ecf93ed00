//! Rootless outputs (issue 14 point 2): one build by the real binary as the unprivileged test user
//! (`common::rootless`) with every exporter at once, `type=local`, `type=tar`, `type=oci` (a
//! directory, read back with umoci) and `type=docker`, and the owners of a RUN that chowns and
//! of `COPY --chown` checked in each: the in-image uid/gid, never a host subordinate id. A local
//! directory is written by the user, so its files belong to the user (as BuildKit's rootless
//! local export), with the content and modes of the image.
//!
//! Needs root (to create the users) and `newuidmap`/`newgidmap`: skips loudly without them,
//! unless `RBUILD_REQUIRE_ROOT=1` (CI), which fails instead.

mod common;

use common::rootless::{home_of, id_of, rbuild_as, setup, text, umoci_owners, write_as, USER};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// The files whose owners the build sets, with the (uid, gid) each must have in the image.
const OWNED: &[(&str, (u32, u32))] = &[
    ("d/a", (0, 0)),
    ("d/b", (1000, 1000)),
    ("d/sub", (7, 8)),
    ("d/sub/c", (65534, 65534)),
    ("f.txt", (123, 456)),
    // `--chown=UID` alone: the group is the same number (docker's documented rule).
    ("g.txt", (1000, 1000)),
];

/// (path, uid, gid) of every entry of a tar stream's entries, recursing into entries that are
/// themselves tars (a docker archive's layers), gzip or plain.
fn tar_owners(data: &[u8], out: &mut Vec<(String, u64, u64)>) {
    let mut a = tar::Archive::new(data);
    for e in a.entries().expect("tar entries") {
        let mut e = e.expect("tar entry");
        let path = e.path().expect("path").to_string_lossy().into_owned();
        let (uid, gid) = (
            e.header().uid().expect("uid"),
            e.header().gid().expect("gid"),
        );
        let mut inner = Vec::new();
        e.read_to_end(&mut inner).expect("read entry");
        if inner.starts_with(&[0x1f, 0x8b]) {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&inner[..])
                .read_to_end(&mut plain)
                .expect("gunzip");
            inner = plain;
        }
        if inner.len() > 262 && &inner[257..262] == b"ustar" {
            tar_owners(&inner, out);
        } else {
            out.push((path.trim_start_matches("./").to_string(), uid, gid));
        }
    }
}

/// Fails unless every [`OWNED`] path has its owner in `entries`, and no entry has a host
/// subordinate id.
fn assert_owners(what: &str, entries: &[(String, u64, u64)]) {
    for (path, (uid, gid)) in OWNED {
        let found = entries
            .iter()
            .rev()
            .find(|(p, _, _)| p.trim_end_matches('/') == *path)
            .map(|&(_, u, g)| (u, g));
        assert_eq!(
            found,
            Some((u64::from(*uid), u64::from(*gid))),
            "{what}: owner of {path}"
        );
    }
    assert!(
        entries.iter().all(|&(_, u, g)| u < 65536 && g < 65536),
        "{what}: a host subuid reached the output: {entries:?}"
    );
}

#[test]
fn rootless_outputs_carry_in_image_owners() {
    let Some(setup) = setup() else { return };
    let home = home_of(USER);
    let h = home.path();
    write_as(USER, h, "ctx/f.txt", "f\n");
    write_as(USER, h, "ctx/g.txt", "g\n");
    write_as(
        USER,
        h,
        "ctx/Dockerfile",
        &format!(
            "FROM {}\n\
             RUN mkdir -p /d/sub && echo a > /d/a && echo b > /d/b && echo c > /d/sub/c && \
                 chown 1000:1000 /d/b && chown 7:8 /d/sub && chown nobody:nogroup /d/sub/c && \
                 chmod 0640 /d/b\n\
             COPY --chown=123:456 f.txt /f.txt\n\
             COPY --chown=1000 g.txt /g.txt\n",
            setup.base
        ),
    );
    let out = h.join("out");
    let outputs = [
        format!("type=local,dest={}", out.join("local").display()),
        format!("type=tar,dest={}", out.join("fs.tar").display()),
        format!(
            "type=oci,dest={},tar=false,name=img:1",
            out.join("oci").display()
        ),
        format!(
            "type=docker,dest={},name=img:1",
            out.join("docker.tar").display()
        ),
    ];
    let mut args = vec!["build", "--progress=plain", "--network=none"];
    for o in &outputs {
        args.extend(["-o", o.as_str()]);
    }
    args.push("ctx");
    let built = rbuild_as(setup, USER, h, &args);
    assert!(built.status.success(), "{}", text(&built));

    // type=tar: the image's filesystem as one tar.
    let mut entries = Vec::new();
    tar_owners(
        &std::fs::read(out.join("fs.tar")).expect("fs.tar"),
        &mut entries,
    );
    assert_owners("type=tar", &entries);

    // type=docker: the layers inside the archive.
    let mut entries = Vec::new();
    tar_owners(
        &std::fs::read(out.join("docker.tar")).expect("docker.tar"),
        &mut entries,
    );
    assert_owners("type=docker", &entries);

    // type=oci: the layers of the layout, listed, and the image unpacked by umoci.
    let mut entries = Vec::new();
    for blob in std::fs::read_dir(out.join("oci/blobs/sha256")).expect("oci blobs") {
        let data = std::fs::read(blob.expect("blob").path()).expect("read blob");
        if data.starts_with(&[0x1f, 0x8b]) || (data.len() > 262 && &data[257..262] == b"ustar") {
            let mut wrapped = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_cksum();
            wrapped
                .append_data(&mut h, "layer", &data[..])
                .expect("wrap");
            tar_owners(&wrapped.into_inner().expect("tar"), &mut entries);
        }
    }
    assert_owners("type=oci layers", &entries);
    if let Some(owners) = umoci_owners(
        &out.join("oci"),
        "1",
        &OWNED.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
    ) {
        let want: Vec<Option<(u32, u32)>> = OWNED.iter().map(|&(_, o)| Some(o)).collect();
        assert_eq!(
            owners, want,
            "umoci unpack of the type=oci output: {OWNED:?}"
        );
    }

    // type=local: written by the user, so owned by the user; content and modes as built.
    let local = out.join("local");
    let uid = id_of(USER, "-u");
    for (path, _) in OWNED {
        let meta = std::fs::symlink_metadata(local.join(path))
            .unwrap_or_else(|e| panic!("type=local lacks {path}: {e}"));
        assert_eq!(meta.uid(), uid, "type=local owner of {path}");
    }
    assert_eq!(
        std::fs::read_to_string(local.join("d/b")).expect("d/b"),
        "b\n"
    );
    let mode = std::fs::metadata(local.join("d/b"))
        .expect("d/b")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o640, "type=local mode of d/b");
    assert_eq!(
        std::fs::read_to_string(local.join("f.txt")).expect("f.txt"),
        "f\n"
    );
    assert!(
        Path::new(&local.join("bin/busybox")).exists(),
        "no base files in type=local"
    );
    // The user can clean the output up (no directory of a subordinate id inside).
    let rm = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            USER,
            "--regid",
            USER,
            "--init-groups",
            "--",
            "rm",
            "-rf",
        ])
        .arg(&local)
        .output()
        .expect("run rm as the test user");
    assert!(
        rm.status.success(),
        "the user cannot remove its type=local output: {}",
        text(&rm)
    );
    assert!(!local.exists());
}
