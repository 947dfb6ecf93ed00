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
        .args(["pull", "--platform", "linux/amd64,linux/arm64", &f.reference])
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
