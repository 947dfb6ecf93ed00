//! End-to-end tests of COPY/ADD details where BuildKit's copier differs from a naive copy:
//! hardlink groups kept within one COPY (from the context and from a stage, in the layer tar and
//! in the `type=local` / `type=tar` outputs), existing nested directories taking the source
//! directory's metadata (`COPY rootfs/ /`), and `ADD --chown` owning the entries of an unpacked
//! local archive. The real rbuild binary builds contexts generated in a tempdir.

use serde_json::Value;
use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

mod common;

use common::*;

fn write(path: &Path, body: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, body).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn output(kind: &str, dest: &Path) -> String {
    format!("type={kind},dest={}", dest.display())
}

fn meta(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn mode(p: &Path) -> u32 {
    meta(p).mode() & 0o7777
}

/// Entries of a tar stream: path -> (entry type, link target).
fn tar_entries(r: impl Read) -> HashMap<String, (tar::EntryType, Option<String>)> {
    let mut archive = tar::Archive::new(r);
    let mut out = HashMap::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let path = entry
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        let link = entry
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().to_string());
        out.insert(path, (entry.header().entry_type(), link));
    }
    out
}

/// The entries of the last layer of the image in the OCI layout directory `dir`.
fn last_layer(dir: &Path) -> HashMap<String, (tar::EntryType, Option<String>)> {
    let blob = |digest: &str| {
        dir.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: Value =
        serde_json::from_slice(&fs::read(blob(manifest_digest)).unwrap()).unwrap();
    let layer = manifest["layers"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let file = fs::File::open(blob(layer["digest"].as_str().unwrap())).unwrap();
    let media = layer["mediaType"].as_str().unwrap();
    if media.ends_with("gzip") {
        tar_entries(flate2::read::GzDecoder::new(file))
    } else if media.ends_with("zstd") {
        tar_entries(zstd::stream::read::Decoder::new(file).unwrap())
    } else {
        tar_entries(file)
    }
}

fn is_link_to(
    entries: &HashMap<String, (tar::EntryType, Option<String>)>,
    name: &str,
    target: &str,
) -> bool {
    entries.get(name).is_some_and(|(kind, link)| {
        *kind == tar::EntryType::Link
            && link
                .as_deref()
                .map(|l| l.trim_start_matches("./").trim_start_matches('/'))
                == Some(target)
    })
}

#[test]
fn hardlinks_stay_linked_within_one_copy() {
    let Some(env) = env() else { return };
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    write(
        &c.join("Dockerfile"),
        "ARG BASE\n\
         FROM $BASE AS src\n\
         RUN mkdir /s && echo stage > /s/one && ln /s/one /s/two\n\
         FROM $BASE\n\
         COPY tree/ /tree/\n\
         COPY lone /lone\n\
         COPY --from=src /s /froms\n",
        0o644,
    );
    write(&c.join("tree/a"), "linked\n", 0o640);
    fs::create_dir_all(c.join("tree/sub")).unwrap();
    fs::hard_link(c.join("tree/a"), c.join("tree/sub/b")).unwrap();
    write(&c.join("tree/plain"), "plain\n", 0o644);
    write(&c.join("lone"), "lone\n", 0o644);
    fs::hard_link(c.join("lone"), c.join("partner")).unwrap();

    let root = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let local = dest.path().join("fs");
    let out = build(
        root.path(),
        c,
        &env.base,
        &["--output", &output("local", &local)],
    );
    assert_ok(&out);
    let (a, b) = (meta(&local.join("tree/a")), meta(&local.join("tree/sub/b")));
    assert_eq!(a.ino(), b.ino(), "context hardlinks stay linked");
    assert_eq!(
        fs::read_to_string(local.join("tree/sub/b")).unwrap(),
        "linked\n"
    );
    assert_eq!(mode(&local.join("tree/a")), 0o640);
    assert_eq!(meta(&local.join("tree/plain")).nlink(), 1);
    assert_eq!(
        meta(&local.join("lone")).nlink(),
        1,
        "partner not copied: a plain file"
    );
    let (one, two) = (
        meta(&local.join("froms/one")),
        meta(&local.join("froms/two")),
    );
    assert_eq!(one.ino(), two.ino(), "stage hardlinks stay linked");

    // The layer of `COPY --from=src` holds a link entry, as do the earlier COPY's layer and the
    // `type=tar` output.
    let oci = dest.path().join("oci");
    let out = build(
        root.path(),
        c,
        &env.base,
        &["--output", &format!("{},tar=false", output("oci", &oci))],
    );
    assert_ok(&out);
    let layer = last_layer(&oci);
    assert!(
        is_link_to(&layer, "froms/two", "froms/one"),
        "layer entries: {layer:?}"
    );
    let tarball = dest.path().join("fs.tar");
    let out = build(
        root.path(),
        c,
        &env.base,
        &["--output", &output("tar", &tarball)],
    );
    assert_ok(&out);
    let entries = tar_entries(fs::File::open(&tarball).unwrap());
    assert!(
        is_link_to(&entries, "tree/sub/b", "tree/a"),
        "tar output: {:?}",
        entries.get("tree/sub/b")
    );
    assert_eq!(entries["lone"].0, tar::EntryType::Regular);
}

#[test]
fn copy_over_existing_dirs_takes_source_metadata() {
    let Some(env) = env() else { return };
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    write(
        &c.join("Dockerfile"),
        "ARG BASE\n\
         FROM $BASE\n\
         RUN chmod 1777 /tmp && mkdir -p /opt/data /srv/sub && chown 5:6 /opt/data \
         && chmod 0700 /opt/data /srv/sub && chmod 0711 /srv && chown 9:9 /srv\n\
         COPY rootfs/ /\n\
         COPY --chown=7:8 extra/ /srv/\n",
        0o644,
    );
    write(&c.join("rootfs/tmp/marker"), "m\n", 0o644);
    write(&c.join("rootfs/opt/data/file"), "d\n", 0o644);
    write(&c.join("extra/sub/x"), "x\n", 0o644);
    fs::set_permissions(c.join("rootfs/tmp"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(c.join("rootfs/opt/data"), fs::Permissions::from_mode(0o751)).unwrap();
    fs::set_permissions(c.join("extra/sub"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(c.join("extra"), fs::Permissions::from_mode(0o700)).unwrap();

    let root = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let out = build(
        root.path(),
        c,
        &env.base,
        &["--output", &output("local", dest.path())],
    );
    assert_ok(&out);
    let d = dest.path();
    assert_eq!(mode(&d.join("tmp")), 0o755, "/tmp takes the source's 0755");
    assert_eq!(mode(&d.join("opt/data")), 0o751);
    let data = meta(&d.join("opt/data"));
    assert_eq!((data.uid(), data.gid()), (0, 0), "and the source's owner");
    let src_mtime = meta(&c.join("rootfs/opt/data")).mtime();
    assert_eq!(data.mtime(), src_mtime, "and the source's mtime");
    // The top-level destination keeps its own mode and owner.
    assert_eq!(mode(&d.join("srv")), 0o711);
    let srv = meta(&d.join("srv"));
    assert_eq!((srv.uid(), srv.gid()), (9, 9));
    // Nested existing directories take the source's mode with the --chown owner.
    assert_eq!(mode(&d.join("srv/sub")), 0o755);
    let sub = meta(&d.join("srv/sub"));
    assert_eq!((sub.uid(), sub.gid()), (7, 8));
    let x = meta(&d.join("srv/sub/x"));
    assert_eq!((x.uid(), x.gid()), (7, 8));
}

#[test]
fn add_chown_owns_unpacked_archive_entries() {
    let Some(env) = env() else { return };
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    write(
        &c.join("Dockerfile"),
        "ARG BASE\n\
         FROM $BASE\n\
         ADD --chown=1000:1001 --chmod=600 pkg.tar.gz /opt/\n\
         ADD pkg.tar.gz /kept/\n",
        0o644,
    );
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o750);
    dir.set_uid(3);
    dir.set_gid(4);
    dir.set_mtime(1_600_000_000);
    dir.set_size(0);
    builder
        .append_data(&mut dir, "app/", std::io::empty())
        .unwrap();
    let mut file = tar::Header::new_gnu();
    file.set_mode(0o755);
    file.set_uid(3);
    file.set_gid(4);
    file.set_mtime(1_600_000_000);
    file.set_size(4);
    builder
        .append_data(&mut file, "app/run", &b"run\n"[..])
        .unwrap();
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_uid(3);
    link.set_gid(4);
    link.set_size(0);
    builder.append_link(&mut link, "app/latest", "run").unwrap();
    let gz = builder.into_inner().unwrap().finish().unwrap();
    fs::write(c.join("pkg.tar.gz"), gz).unwrap();

    let root = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let out = build(
        root.path(),
        c,
        &env.base,
        &["--output", &output("local", dest.path())],
    );
    assert_ok(&out);
    let d = dest.path();
    for p in ["opt/app", "opt/app/run", "opt/app/latest"] {
        let m = meta(&d.join(p));
        assert_eq!((m.uid(), m.gid()), (1000, 1001), "{p} takes --chown");
    }
    // --chmod does not apply to unpacked entries (BuildKit passes no mode to the unpacker).
    assert_eq!(mode(&d.join("opt/app")), 0o750);
    assert_eq!(mode(&d.join("opt/app/run")), 0o755);
    assert_eq!(meta(&d.join("opt/app")).mtime(), 1_600_000_000);
    // Without --chown the archive's owners are kept.
    let kept = meta(&d.join("kept/app/run"));
    assert_eq!((kept.uid(), kept.gid()), (3, 4));
}
