//! Durability without waiting for the disk, end to end: a build leaves boot-id markers on its
//! snapshots (`snapshots-v1/snapshots/<id>/unsynced`) and layer blobs
//! (`rbuild-unsynced-v1/<hex>`), never on configs or manifests; markers of this boot are
//! honoured by the next build; after a simulated OS crash (a fake boot id written into the
//! markers) the snapshots count as missing and their steps run again, and the blobs count as
//! missing and the exporter makes them again. The store stays an OCI layout umoci reads.
//! FROM scratch + COPY: no registry.

mod common;

use common::{assert_ok, assert_reported_cached, ran_and_cached, rbuild_at};
use rbuild_oci::{Digest, Store, UNSYNCED_DIR};
use std::fs;
use std::path::{Path, PathBuf};

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_string()
}

fn context() -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY a.txt /a.txt\nCOPY b.txt /b.txt\n",
    )
    .unwrap();
    fs::write(ctx.path().join("a.txt"), "a\n".repeat(10_000)).unwrap();
    fs::write(ctx.path().join("b.txt"), b"b\n").unwrap();
    ctx
}

fn build(root: &Path, ctx: &Path, tag: &str) -> std::process::Output {
    let out = rbuild_at(root)
        .args(["build", "--progress=json", "-t", tag])
        .arg(ctx)
        .output()
        .unwrap();
    assert_ok(&out);
    out
}

/// The markers of committed snapshots.
fn snapshot_markers(root: &Path) -> Vec<PathBuf> {
    fs::read_dir(root.join("snapshots-v1/snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("unsynced"))
        .filter(|p| p.exists())
        .collect()
}

/// The image's config and layer digests.
fn image(root: &Path, tag: &str) -> (Digest, Vec<Digest>) {
    let store = Store::open(root).unwrap();
    let desc = store.resolve_tag(tag).unwrap().expect("tagged");
    let rec = store.read_image(&desc.digest).unwrap();
    let layers = rec
        .manifest
        .layers
        .iter()
        .map(|l| l.digest.clone())
        .collect();
    (rec.manifest.config.digest, layers)
}

fn blob_marker(root: &Path, d: &Digest) -> PathBuf {
    root.join(UNSYNCED_DIR).join(d.hex())
}

#[test]
fn markers_of_this_boot_are_honoured_and_another_boots_are_made_again() {
    if !rbuild_testsupport::require_root().unwrap() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let ctx = context();
    build(root, ctx.path(), "dur:1");
    let boot = boot_id();

    // The build left markers of this boot on its snapshots and layer blobs, none on the config.
    let snaps = snapshot_markers(root);
    assert!(snaps.len() >= 2, "{snaps:?}");
    for m in &snaps {
        assert_eq!(fs::read_to_string(m).unwrap(), boot, "{}", m.display());
    }
    let (config, layers) = image(root, "dur:1");
    assert_eq!(layers.len(), 2);
    for l in &layers {
        assert_eq!(fs::read_to_string(blob_marker(root, l)).unwrap(), boot);
    }
    assert!(!blob_marker(root, &config).exists());

    // Markers of this boot are honoured: the last step is cached (and nothing runs).
    let out = build(root, ctx.path(), "dur:2");
    assert_reported_cached(&out, "COPY b.txt");
    assert!(ran_and_cached(&out).0.iter().all(|n| !n.contains("COPY")));

    // An OS crash before the data reached the disk: only the blobs' markers name another boot
    // (one empty, as when its content was lost too). The steps stay cached; the exporter makes
    // the layer blobs again from their snapshots.
    fs::write(blob_marker(root, &layers[0]), "another-boot").unwrap();
    fs::write(blob_marker(root, &layers[1]), "").unwrap();
    {
        let store = Store::open(root).unwrap();
        assert!(!store.has_blob(&layers[0]) && !store.has_blob(&layers[1]));
    }
    let out = build(root, ctx.path(), "dur:3");
    assert_reported_cached(&out, "COPY b.txt");
    let (_, again) = image(root, "dur:3");
    assert_eq!(again, layers, "the same layers, made again");
    let store = Store::open(root).unwrap();
    for l in &layers {
        assert_eq!(fs::read_to_string(blob_marker(root, l)).unwrap(), boot);
        assert!(store.has_blob(l));
        assert_eq!(Digest::sha256_of(&store.read_blob(l).unwrap()), *l);
    }

    // Now the snapshots' markers name another boot: the steps run again.
    for m in snapshot_markers(root) {
        fs::write(m, "another-boot").unwrap();
    }
    let out = build(root, ctx.path(), "dur:4");
    let (ran, _) = ran_and_cached(&out);
    for step in ["COPY a.txt", "COPY b.txt"] {
        assert!(ran.iter().any(|n| n.contains(step)), "{step}: {ran:?}");
    }
    assert_eq!(image(root, "dur:4").1, layers);

    // The store with its markers' directory is still a layout umoci reads.
    let Ok(umoci) = rbuild_testsupport::need_tool("umoci") else {
        eprintln!("umoci not installed: layout check skipped");
        return;
    };
    let bundle = tempfile::tempdir().unwrap();
    let st = std::process::Command::new(umoci)
        .args(["unpack", "--image"])
        .arg(format!("{}:dur:4", root.display()))
        .arg(bundle.path().join("b"))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert_eq!(
        fs::read_to_string(bundle.path().join("b/rootfs/b.txt")).unwrap(),
        "b\n"
    );
}
