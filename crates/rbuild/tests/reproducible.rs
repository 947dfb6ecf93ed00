//! Reproducible images: with SOURCE_DATE_EPOCH (environment or build arg), two builds of the same
//! inputs from empty roots give the same manifest digest, and no timestamp is later than the epoch.

use rbuild_testsupport::{registry_with_busybox, require_root};
use std::io::Read;
use std::path::Path;
use std::process::Command;

const RBUILD: &str = env!("CARGO_BIN_EXE_rbuild");
const EPOCH: i64 = 1_700_000_000;

fn build(root: &Path, context: &Path, base: &str, via_build_arg: bool) -> rbuild_oci::ImageRecord {
    let mut cmd = Command::new(RBUILD);
    cmd.arg("--root")
        .arg(root)
        .env(
            "DOCKER_CONFIG",
            rbuild_testsupport::isolated_docker_config(root),
        )
        .args(["build", "-t", "repro:1", "--progress=plain", "--build-arg"])
        .arg(format!("BASE={base}"));
    if via_build_arg {
        cmd.arg("--build-arg")
            .arg(format!("SOURCE_DATE_EPOCH={EPOCH}"));
    } else {
        cmd.env("SOURCE_DATE_EPOCH", EPOCH.to_string());
    }
    let out = cmd.arg(context).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = rbuild_oci::Store::open(root).unwrap();
    let desc = store.resolve_tag("repro:1").unwrap().expect("tagged");
    store.read_image(&desc.digest).unwrap()
}

#[test]
fn same_inputs_from_empty_roots_give_the_same_digest() {
    if !require_root().unwrap() {
        return;
    }
    let (_registry, base) = registry_with_busybox().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "ARG BASE\nFROM $BASE\nCOPY a.txt /a.txt\nRUN mkdir /made && echo made > /made/at-build-time-but-clamped && cp /a.txt /made/\nENV X=1\n").unwrap();
    std::fs::write(ctx.path().join("a.txt"), "content\n").unwrap();
    let first_root = tempfile::tempdir().unwrap();
    let second_root = tempfile::tempdir().unwrap();
    let first = build(first_root.path(), ctx.path(), &base, false);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = build(second_root.path(), ctx.path(), &base, true);
    assert_eq!(
        first.manifest_digest, second.manifest_digest,
        "manifests differ:\n{:?}\n{:?}",
        first.config, second.config
    );
    assert_eq!(
        first.config.created.as_deref(),
        Some("2023-11-14T22:13:20Z")
    );
    assert!(first.config.history.iter().all(|h| h.created.as_deref()
        == Some("2023-11-14T22:13:20Z")
        || h.created
            .as_deref()
            .is_some_and(|c| c < "2023-11-14T22:13:20Z")));
    // Every entry of the built layers is clamped to the epoch.
    let store = rbuild_oci::Store::open(first_root.path()).unwrap();
    for layer in &first.manifest.layers[1..] {
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(
            store.open_blob(&layer.digest).unwrap(),
        ));
        for entry in tar.entries().unwrap() {
            let entry = entry.unwrap();
            let mtime = entry.header().mtime().unwrap();
            assert!(
                mtime as i64 <= EPOCH,
                "{:?} has mtime {mtime}",
                entry.path().unwrap()
            );
        }
    }
    let mut buf = Vec::new();
    store
        .open_blob(&first.manifest.config.digest)
        .unwrap()
        .read_to_end(&mut buf)
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&buf).contains("2026-"),
        "no build-time timestamps in the config"
    );
}
