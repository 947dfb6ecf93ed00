//! Consumers of a stored multi-platform image (an OCI index in the store) against the real
//! binary: `pull --platform` (one platform's manifest, or an index of several, each unpacked),
//! `push` of an index (read back with skopeo: the raw index, `--override-arch arm64`), `images`,
//! `inspect --platform`, `history`, `rmi`, and the outputs of a stored index. The fixture is the
//! busybox base as an index of linux/amd64 and linux/arm64/v8 (same layer, per-architecture
//! config; the arm64 image never runs), pushed to the test registry with skopeo.

mod common;

use common::{assert_ok, rbuild_at};
use rbuild_oci::{Digest, Index, Manifest};
use rbuild_testsupport::{make_busybox_index_layout, push_layout, skopeo, TestRegistry};
use serde_json::Value;
use std::path::Path;
use std::process::Output;
use std::sync::OnceLock;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A registry serving `ADDR/multi:latest`, the amd64+arm64 busybox index, and its digest.
struct Fixture {
    registry: TestRegistry,
    reference: String,
    index: Digest,
}

/// The shared fixture; None (after a printed skip) when not root.
fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        if !rbuild_testsupport::require_root().expect("root check") {
            return None;
        }
        let registry = TestRegistry::start().expect("start registry");
        let tmp = tempfile::tempdir().unwrap();
        let layout = tmp.path().join("layout");
        let index = make_busybox_index_layout(&layout, &["amd64", "arm64"]).unwrap();
        let reference = format!("{}/multi:latest", registry.addr());
        push_layout(&layout, &reference).unwrap();
        Some(Fixture {
            registry,
            reference,
            index,
        })
    })
    .as_ref()
}

/// A fresh root holding the fixture pulled for both platforms (an index named by the full
/// reference).
fn root_with_index(f: &Fixture) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let out = rbuild_at(root.path())
        .args([
            "pull",
            "--platform",
            "linux/amd64,linux/arm64",
            &f.reference,
        ])
        .output()
        .unwrap();
    assert_ok(&out);
    root
}

/// `skopeo inspect --raw` of `reference` (a registry on loopback without TLS).
fn raw_manifest(reference: &str) -> Vec<u8> {
    let out = skopeo("inspect", None)
        .unwrap()
        .args(["--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo inspect: {}", stderr(&out));
    out.stdout
}

/// `rbuild inspect ARGS...` as its JSON array.
fn inspect(root: &Path, args: &[&str]) -> Vec<Value> {
    let out = rbuild_at(root).arg("inspect").args(args).output().unwrap();
    assert_ok(&out);
    serde_json::from_slice::<Value>(&out.stdout)
        .expect("inspect prints JSON")
        .as_array()
        .expect("an array")
        .clone()
}

#[test]
fn pull_platforms_stores_an_index_and_one_platform_its_manifest() {
    let Some(f) = fixture() else { return };
    let root = root_with_index(f);
    // Both platforms asked: the registry's index itself, digest and all.
    let images = rbuild_at(root.path())
        .args(["images", "--digests", "--no-trunc"])
        .output()
        .unwrap();
    assert_ok(&images);
    assert!(
        stdout(&images).contains(&f.index.to_string()),
        "{}",
        stdout(&images)
    );
    // Every platform is unpacked (one shared layer here: one snapshot).
    let du = rbuild_at(root.path()).arg("du").output().unwrap();
    assert_ok(&du);
    assert!(
        stdout(&du)
            .lines()
            .any(|l| l.starts_with("Snapshots") && l.split_whitespace().nth(1) == Some("1")),
        "{}",
        stdout(&du)
    );

    // One platform: that platform's manifest, as `docker pull --platform`.
    let one = tempfile::tempdir().unwrap();
    let out = rbuild_at(one.path())
        .args(["pull", "--platform", "linux/aarch64", &f.reference])
        .output()
        .unwrap();
    assert_ok(&out);
    let digest_line = stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("Digest: ").map(str::to_string))
        .expect("a Digest line");
    assert_ne!(digest_line, f.index.to_string());
    let image = &inspect(one.path(), &[&f.reference])[0];
    assert_eq!(image["Architecture"], "arm64");
    assert_eq!(image["Descriptor"]["digest"], digest_line.as_str());

    // A platform the index lacks: the platforms it has.
    let out = rbuild_at(one.path())
        .args(["pull", "--platform", "linux/s390x", &f.reference])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("linux/s390x"), "{}", stderr(&out));
    assert!(stderr(&out).contains("linux/arm64"), "{}", stderr(&out));

    // A bad specifier is a usage error.
    let out = rbuild_at(one.path())
        .args(["pull", "--platform", "linux/", &f.reference])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn push_of_an_index_pushes_every_platform_and_the_index() {
    let Some(f) = fixture() else { return };
    let root = root_with_index(f);
    let target = format!("{}/pushed/multi:v1", f.registry.addr());
    let tag = rbuild_at(root.path())
        .args(["tag", &f.reference, &target])
        .output()
        .unwrap();
    assert_ok(&tag);
    let meta = root.path().join("meta.json");
    let out = rbuild_at(root.path())
        .args(["push", "--metadata-file"])
        .arg(&meta)
        .arg(&target)
        .output()
        .unwrap();
    assert_ok(&out);
    // The registry has the index, byte for byte, with both platforms.
    let raw = raw_manifest(&target);
    assert_eq!(Digest::sha256_of(&raw), f.index);
    let index: Index = serde_json::from_slice(&raw).unwrap();
    let mut archs: Vec<String> = index
        .manifests
        .iter()
        .map(|d| d.platform.as_ref().unwrap().architecture.clone())
        .collect();
    archs.sort();
    assert_eq!(archs, ["amd64", "arm64"]);
    // buildx's metadata names the index (no config digest for an index).
    let doc: Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_eq!(doc["containerimage.digest"], f.index.to_string().as_str());
    assert_eq!(
        doc["containerimage.descriptor"]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert!(doc.get("containerimage.config.digest").is_none(), "{doc}");
    // Each platform's image copies out on its own: arm64's config says arm64.
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("arm64");
    let out = skopeo("copy", None)
        .unwrap()
        .args(["--override-arch", "arm64", "--src-tls-verify=false", "-q"])
        .arg(format!("docker://{target}"))
        .arg(format!("oci:{}:x", dest.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy: {}", stderr(&out));
    let layout: Index =
        serde_json::from_slice(&std::fs::read(dest.join("index.json")).unwrap()).unwrap();
    let blob = |d: &Digest| std::fs::read(dest.join("blobs/sha256").join(d.hex())).unwrap();
    let manifest: Manifest = serde_json::from_slice(&blob(&layout.manifests[0].digest)).unwrap();
    let config: Value = serde_json::from_slice(&blob(&manifest.config.digest)).unwrap();
    assert_eq!(config["architecture"], "arm64");

    // A second push finds every blob there already and uploads nothing.
    let again = rbuild_at(root.path())
        .args(["push", &target])
        .output()
        .unwrap();
    assert_ok(&again);
    assert_eq!(stdout(&again).trim(), f.index.to_string());
}

#[test]
fn images_inspect_history_and_rmi_of_an_index() {
    let Some(f) = fixture() else { return };
    let root = root_with_index(f);
    // One row, ID = the index digest, both platforms named.
    let out = rbuild_at(root.path())
        .args(["images", "--format", "json"])
        .output()
        .unwrap();
    assert_ok(&out);
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{}", stdout(&out));
    assert_eq!(lines[0]["ID"], f.index.hex()[..12]);
    assert_eq!(lines[0]["Digest"], f.index.to_string().as_str());
    assert_eq!(lines[0]["Platform"], "linux/amd64,linux/arm64");
    let table = rbuild_at(root.path())
        .args(["images", "--platforms"])
        .output()
        .unwrap();
    assert_ok(&table);
    let text = stdout(&table);
    assert!(text.lines().next().unwrap().contains("PLATFORM"), "{text}");
    assert!(text.contains("linux/amd64,linux/arm64"), "{text}");

    // inspect: the host's platform by default, another with --platform.
    let host = &inspect(root.path(), &[&f.reference])[0];
    assert_eq!(host["Id"], f.index.to_string().as_str());
    assert_eq!(host["Architecture"], "amd64");
    let arm = &inspect(root.path(), &["--platform", "linux/arm64", &f.reference])[0];
    assert_eq!(arm["Architecture"], "arm64");
    let out = rbuild_at(root.path())
        .args(["inspect", "--platform", "linux/riscv64", &f.reference])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no manifest for platform linux/riscv64")
            && stderr(&out).contains("linux/amd64, linux/arm64"),
        "{}",
        stderr(&out)
    );
    let hist = rbuild_at(root.path())
        .args(["history", "--platform", "linux/arm64", &f.reference])
        .output()
        .unwrap();
    assert_ok(&hist);
    assert!(stdout(&hist).starts_with("IMAGE"), "{}", stdout(&hist));

    // Garbage collection keeps every platform's blobs while the index is named.
    let prune = rbuild_at(root.path())
        .args(["prune", "-a", "-f"])
        .output()
        .unwrap();
    assert_ok(&prune);
    let arm = &inspect(root.path(), &["--platform", "linux/arm64", &f.reference])[0];
    assert_eq!(arm["Architecture"], "arm64");

    // rmi drops the name: the image is gone from the list.
    let rmi = rbuild_at(root.path())
        .args(["rmi", &f.reference])
        .output()
        .unwrap();
    assert_ok(&rmi);
    assert!(
        stdout(&rmi).contains(&format!("Untagged: {}", f.reference)),
        "{}",
        stdout(&rmi)
    );
    assert!(
        stdout(&rmi).contains(&f.index.to_string()),
        "{}",
        stdout(&rmi)
    );
    let out = rbuild_at(root.path())
        .args(["images", "-q"])
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(stdout(&out), "");
}

/// An uncompressed tar holding one file `arch` with `text`.
fn arch_layer(text: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(text.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, "arch", text.as_bytes()).unwrap();
    b.into_inner().unwrap()
}

/// Stores `name` in the root's store as a built multi-platform image is stored: an OCI index
/// over a linux/amd64 and a linux/arm64 image, each the busybox layer plus a layer with `/arch`
/// (`x86_64` resp. `aarch64`), layers uncompressed as a build keeps them. Returns the index.
fn store_built_index(root: &Path, name: &str) -> rbuild_oci::Descriptor {
    use rbuild_oci::{Descriptor, DiffId, MediaType, Store};
    let store_dir = rbuild_build::StateDir::new(root).store();
    std::fs::create_dir_all(&store_dir).unwrap();
    let store = Store::open(&store_dir).unwrap();
    let layer = |bytes: Vec<u8>| {
        let (digest, size) = store.write_blob(&bytes).unwrap();
        let desc = Descriptor {
            media_type: MediaType::new(MediaType::OCI_LAYER_TAR),
            digest: digest.clone(),
            size,
            platform: None,
            annotations: None,
        };
        (desc, DiffId(digest))
    };
    let (base, base_id) = layer(rbuild_testsupport::busybox_rootfs_tar_bytes().unwrap());
    let mut manifests = Vec::new();
    for (arch, uname) in [("amd64", "x86_64"), ("arm64", "aarch64")] {
        let (top, top_id) = layer(arch_layer(&format!("{uname}\n")));
        let mut config = rbuild_testsupport::busybox_config(arch, base_id.clone());
        config.rootfs.diff_ids.push(top_id);
        config.history.push(rbuild_oci::History {
            created_by: Some(format!("RUN uname -m > /arch # {arch}")),
            ..Default::default()
        });
        let (desc, _) = store.write_image(&config, vec![base.clone(), top]).unwrap();
        manifests.push(desc);
    }
    let index = rbuild_oci::Index {
        manifests,
        ..rbuild_oci::Index::empty()
    };
    let (digest, size, _) = store.write_json_blob(&index).unwrap();
    let desc = Descriptor {
        media_type: MediaType::new(MediaType::OCI_INDEX),
        digest,
        size,
        platform: None,
        annotations: None,
    };
    store.set_tag(name, &desc).unwrap();
    desc
}

#[test]
fn push_of_a_built_index_compresses_each_platform_and_pushes_an_oci_index() {
    let Some(f) = fixture() else { return };
    let root = tempfile::tempdir().unwrap();
    let target = format!("{}/built/multi:1", f.registry.addr());
    let local = store_built_index(root.path(), &target);
    let meta = root.path().join("meta.json");
    let out = rbuild_at(root.path())
        .args(["push", "--metadata-file"])
        .arg(&meta)
        .arg(&target)
        .output()
        .unwrap();
    assert_ok(&out);
    let raw = raw_manifest(&target);
    let pushed: Index = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        pushed.media_type.as_ref().map(|m| m.as_str()),
        Some(rbuild_oci::MediaType::OCI_INDEX)
    );
    // Layers go gzip-compressed, so the pushed index is a new one over new manifests.
    assert_ne!(Digest::sha256_of(&raw), local.digest);
    let platforms: Vec<String> = pushed
        .manifests
        .iter()
        .map(|d| {
            let p = d.platform.as_ref().unwrap();
            format!("{}/{}", p.os, p.architecture)
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    assert_eq!(
        common::pushed::file_of(&target, "amd64", "arch"),
        ("x86_64\n".to_string(), "amd64".to_string())
    );
    assert_eq!(
        common::pushed::file_of(&target, "arm64", "arch"),
        ("aarch64\n".to_string(), "arm64".to_string())
    );
    // The metadata names the pushed index; stdout prints its digest.
    let doc: Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    let pushed_digest = Digest::sha256_of(&raw).to_string();
    assert_eq!(doc["containerimage.digest"], pushed_digest.as_str());
    assert_eq!(
        doc["containerimage.descriptor"]["digest"],
        pushed_digest.as_str()
    );
    assert_eq!(stdout(&out).trim(), pushed_digest);
}

#[test]
fn import_platform_names_the_platform_in_the_config() {
    if !rbuild_testsupport::require_root().expect("root check") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let tar = root.path().join("rootfs.tar");
    rbuild_testsupport::make_busybox_rootfs_tar(&tar).unwrap();
    for (platform, name, arch, variant) in [
        ("linux/aarch64", "imp:arm64", "arm64", None),
        ("linux/arm", "imp:arm", "arm", Some("v7")),
    ] {
        let out = rbuild_at(root.path())
            .arg("import")
            .arg(&tar)
            .args([name, "--platform", platform])
            .output()
            .unwrap();
        assert_ok(&out);
        let image = &inspect(root.path(), &[name])[0];
        assert_eq!(image["Os"], "linux");
        assert_eq!(image["Architecture"], arch);
        assert_eq!(image["Variant"].as_str(), variant, "{image}");
    }
    let out = rbuild_at(root.path())
        .args(["images", "--format", "json"])
        .output()
        .unwrap();
    assert_ok(&out);
    let mut platforms: Vec<String> = stdout(&out)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["Platform"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    platforms.sort();
    assert_eq!(platforms, ["linux/arm/v7", "linux/arm64"]);
    let bad = rbuild_at(root.path())
        .arg("import")
        .arg(&tar)
        .args(["imp:bad", "--platform", "linux/"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
}
