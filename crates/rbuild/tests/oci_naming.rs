//! How `--output type=oci` (tarball and `tar=false` directory) and `type=docker` name the image,
//! as BuildKit (containerd's archive exporter) does: `org.opencontainers.image.ref.name` is the tag
//! alone and `io.containerd.image.name` the full name, so `skopeo ... oci-archive:out.tar:1` and
//! `umoci unpack --image dir:1` find the image. The local store (`--root`) keeps full names as its
//! refs, which skopeo, umoci and `rbuild images` read.

mod common;

use common::{assert_ok, env, rbuild_at};
use rbuild_testsupport::need_tool;
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Command;

/// One build; a fixed SOURCE_DATE_EPOCH makes every build of the test the same image.
fn build(root: &Path, ctx: &Path, base: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["--build-arg", "SOURCE_DATE_EPOCH=1700000000"];
    args.extend_from_slice(extra);
    common::build(root, ctx, base, &args)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A file of an uncompressed tar archive.
fn tar_member(archive: &Path, name: &str) -> Vec<u8> {
    let mut ar = tar::Archive::new(fs::File::open(archive).unwrap());
    for entry in ar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some(name) {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            return data;
        }
    }
    panic!("{name} not in {}", archive.display());
}

/// (ref.name, io.containerd.image.name, digest) of every index entry; "-" for a missing annotation.
fn entries(index: &[u8]) -> Vec<(String, String, String)> {
    let index: Value = serde_json::from_slice(index).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let ann = |k: &str| m["annotations"][k].as_str().unwrap_or("-").to_string();
            (
                ann("org.opencontainers.image.ref.name"),
                ann("io.containerd.image.name"),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn oci_outputs_name_entries_by_tag_like_buildkit() {
    let Some(env) = env() else { return };
    let skopeo = need_tool("skopeo").unwrap();
    let umoci = need_tool("umoci").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "ARG BASE\nFROM $BASE\nCOPY hello.txt /hello.txt\n",
    )
    .unwrap();
    fs::write(ctx.join("hello.txt"), "named\n").unwrap();
    let root = dir.path().join("root");
    let out_tar = dir.path().join("out.tar");
    let out_dir = dir.path().join("out");
    let docker_tar = dir.path().join("docker.tar");

    // Tarball.
    let out = build(
        &root,
        &ctx,
        &env.base,
        &[
            "-t",
            "app/x:1",
            "--output",
            &format!("type=oci,dest={}", out_tar.display()),
        ],
    );
    assert_ok(&out);
    let tar_entries = entries(&tar_member(&out_tar, "index.json"));
    assert_eq!(tar_entries.len(), 1, "{tar_entries:?}");
    let (ref_name, image_name, digest) = &tar_entries[0];
    assert_eq!(ref_name, "1");
    assert_eq!(image_name, "docker.io/app/x:1");
    let inspect: Value = serde_json::from_str(&run(Command::new(&skopeo)
        .arg("inspect")
        .arg(format!("oci-archive:{}:1", out_tar.display()))))
    .unwrap();
    assert_eq!(inspect["Digest"].as_str(), Some(digest.as_str()));
    let copied = dir.path().join("copied");
    run(Command::new(&skopeo)
        .args(["--insecure-policy", "copy", "-q", "--preserve-digests"])
        .arg(format!("oci-archive:{}:1", out_tar.display()))
        .arg(format!("oci:{}:copy", copied.display())));
    let copied_entries = entries(&fs::read(copied.join("index.json")).unwrap());
    assert_eq!(&copied_entries[0].2, digest);

    // Directory, several names: one entry each.
    let out = build(
        &root,
        &ctx,
        &env.base,
        &[
            "-t",
            "app/x:1",
            "-t",
            "127.0.0.1:5000/y",
            "--output",
            &format!("type=oci,dest={},tar=false", out_dir.display()),
        ],
    );
    assert_ok(&out);
    let dir_entries = entries(&fs::read(out_dir.join("index.json")).unwrap());
    assert_eq!(
        dir_entries,
        vec![
            ("1".into(), "docker.io/app/x:1".into(), digest.clone()),
            (
                "latest".into(),
                "127.0.0.1:5000/y:latest".into(),
                digest.clone()
            ),
        ]
    );
    let bundle = dir.path().join("bundle");
    run(Command::new(&umoci)
        .args(["unpack", "--image"])
        .arg(format!("{}:1", out_dir.display()))
        .arg(&bundle));
    assert_eq!(
        fs::read_to_string(bundle.join("rootfs/hello.txt")).unwrap(),
        "named\n"
    );
    assert!(bundle.join("rootfs/bin/busybox").is_file());

    // No name: one entry without annotations, as BuildKit writes it.
    let unnamed = dir.path().join("unnamed");
    let out = build(
        &root,
        &ctx,
        &env.base,
        &[
            "--output",
            &format!("type=oci,dest={},tar=false", unnamed.display()),
        ],
    );
    assert_ok(&out);
    let index: Value =
        serde_json::from_slice(&fs::read(unnamed.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert!(
        index["manifests"][0].get("annotations").is_none(),
        "{index}"
    );

    // Without -t, the output's own `name=` names it.
    let named = dir.path().join("named");
    let out = build(
        &root,
        &ctx,
        &env.base,
        &[
            "--output",
            &format!("type=oci,dest={},tar=false,name=app/z:2", named.display()),
        ],
    );
    assert_ok(&out);
    assert_eq!(
        entries(&fs::read(named.join("index.json")).unwrap()),
        vec![("2".into(), "docker.io/app/z:2".into(), digest.clone())]
    );

    // The docker archive: short names in RepoTags, index.json named as the OCI output.
    let out = build(
        &root,
        &ctx,
        &env.base,
        &[
            "-t",
            "app/x:1",
            "--output",
            &format!("type=docker,dest={}", docker_tar.display()),
        ],
    );
    assert_ok(&out);
    let manifest: Value =
        serde_json::from_slice(&tar_member(&docker_tar, "manifest.json")).unwrap();
    assert_eq!(manifest[0]["RepoTags"], serde_json::json!(["app/x:1"]));
    assert_eq!(entries(&tar_member(&docker_tar, "index.json")), tar_entries);
    let inspect: Value = serde_json::from_str(&run(Command::new(&skopeo)
        .arg("inspect")
        .arg(format!("docker-archive:{}:app/x:1", docker_tar.display()))))
    .unwrap();
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2, "{inspect}");

    // The local store keeps the full names it was given as refs; skopeo and umoci read them.
    // The store keeps the layers uncompressed, so its manifest is another than the archives'
    // (gzip layers) over the same config.
    let store_entries = entries(&fs::read(root.join("index.json")).unwrap());
    let local = store_entries
        .iter()
        .find(|(r, n, _)| r == "app/x:1" && n == "app/x:1")
        .map(|(_, _, d)| d.clone())
        .unwrap_or_else(|| panic!("{store_entries:?}"));
    assert_ne!(&local, digest);
    let manifest_at = |dir: &Path, d: &str| -> Value {
        let path = dir.join("blobs/sha256").join(&d["sha256:".len()..]);
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    };
    let (stored, archived) = (manifest_at(&root, &local), manifest_at(&out_dir, digest));
    assert_eq!(stored["config"], archived["config"]);
    assert!(archived["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"));
    let digest = &local;
    let inspect: Value = serde_json::from_str(&run(Command::new(&skopeo)
        .arg("inspect")
        .arg(format!("oci:{}:app/x:1", root.display()))))
    .unwrap();
    assert_eq!(inspect["Digest"].as_str(), Some(digest.as_str()));
    let store_bundle = dir.path().join("store-bundle");
    run(Command::new(&umoci)
        .args(["unpack", "--image"])
        .arg(format!("{}:app/x:1", root.display()))
        .arg(&store_bundle));
    assert_eq!(
        fs::read_to_string(store_bundle.join("rootfs/hello.txt")).unwrap(),
        "named\n"
    );
    let images = run(rbuild_at(&root).arg("images"));
    assert!(
        images
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["app/x", "1"])),
        "rbuild images:\n{images}"
    );
}
