//! Reproducible images: with SOURCE_DATE_EPOCH (environment or build arg), two builds of the same
//! inputs from empty roots give the same manifest digest, and no timestamp is later than the epoch;
//! without it, the config's times are those of the build (read by GNU `date`, not rbuild) and a
//! rebuild whose every step is cached gives the same digest again.

use rbuild_testsupport::{registry_with_busybox, require_root};
use std::io::Read;
use std::path::Path;
use std::process::Command;

const RBUILD: &str = env!("CARGO_BIN_EXE_rbuild");
const EPOCH: i64 = 1_700_000_000;

/// How the epoch reaches rbuild.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Epoch {
    Env,
    BuildArg,
    Unset,
}

fn build(root: &Path, context: &Path, base: &str, epoch: Epoch) -> rbuild_oci::ImageRecord {
    let mut cmd = Command::new(RBUILD);
    cmd.arg("--root")
        .arg(root)
        .env(
            "DOCKER_CONFIG",
            rbuild_testsupport::isolated_docker_config(root),
        )
        .env_remove("SOURCE_DATE_EPOCH")
        .args(["build", "-t", "repro:1", "--progress=plain", "--build-arg"])
        .arg(format!("BASE={base}"));
    match epoch {
        Epoch::BuildArg => {
            cmd.arg("--build-arg")
                .arg(format!("SOURCE_DATE_EPOCH={EPOCH}"));
        }
        Epoch::Env => {
            cmd.env("SOURCE_DATE_EPOCH", EPOCH.to_string());
        }
        Epoch::Unset => {}
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
    let first = build(first_root.path(), ctx.path(), &base, Epoch::Env);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = build(second_root.path(), ctx.path(), &base, Epoch::BuildArg);
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
        // The store keeps built layers uncompressed.
        assert_eq!(
            layer.media_type.as_str(),
            "application/vnd.oci.image.layer.v1.tar"
        );
        let mut tar = tar::Archive::new(store.open_blob(&layer.digest).unwrap());
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
    // Every time in the config, read by GNU date from the stored bytes, is at most the epoch
    // (the build ran years after it), and the config's own and this build's steps' are the epoch.
    let times = config_times(&buf);
    assert!(times.len() >= 4, "{times:?}");
    assert!(times.iter().all(|(_, t)| *t <= EPOCH), "{times:?}");
    assert_eq!(times[0], ("created".to_string(), EPOCH));
    assert!(
        times.iter().filter(|(_, t)| *t == EPOCH).count() >= 4,
        "{times:?}"
    );
}

/// `(field, Unix seconds)` of the config's `created` (first) and of every history entry's, each
/// converted by GNU `date` (an independent parser).
fn config_times(config: &[u8]) -> Vec<(String, i64)> {
    let v: serde_json::Value = serde_json::from_slice(config).unwrap();
    let mut out = vec![("created".to_string(), v["created"].clone())];
    for (i, h) in v["history"].as_array().unwrap().iter().enumerate() {
        out.push((format!("history[{i}]"), h["created"].clone()));
    }
    out.into_iter()
        .map(|(field, t)| {
            let text = t
                .as_str()
                .unwrap_or_else(|| panic!("{field} has no time: {v}"));
            let out = Command::new("date")
                .args(["-u", "+%s", "-d", text])
                .output()
                .unwrap();
            assert!(out.status.success(), "date cannot read {field} {text}");
            let secs = String::from_utf8(out.stdout)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            (field, secs)
        })
        .collect()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn without_epoch_the_config_carries_the_build_time() {
    if !require_root().unwrap() {
        return;
    }
    let (_registry, base) = registry_with_busybox().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM $BASE\nCOPY a.txt /a.txt\nRUN cp /a.txt /b.txt\nENV X=1\n",
    )
    .unwrap();
    std::fs::write(ctx.path().join("a.txt"), "content\n").unwrap();
    let root = tempfile::tempdir().unwrap();
    let start = now();
    let record = build(root.path(), ctx.path(), &base, Epoch::Unset);
    let end = now() + 1;
    let store = rbuild_oci::Store::open(root.path()).unwrap();
    let times = config_times(&store.read_blob(&record.manifest.config.digest).unwrap());
    let in_window = |t: i64| (start..=end).contains(&t);
    assert!(
        in_window(times[0].1),
        "created {} outside the build [{start}, {end}]: {times:?}",
        times[0].1
    );
    // The base's history keeps its own (1970) time; each of this build's three steps has a time
    // of the build.
    let (built, older): (Vec<_>, Vec<_>) = times[1..].iter().partition(|(_, t)| in_window(*t));
    assert_eq!(built.len(), 3, "{times:?}");
    assert!(older.iter().all(|(_, t)| *t < start), "{times:?}");
}

#[test]
fn cached_rebuilds_without_epoch_give_the_same_digest() {
    if !require_root().unwrap() {
        return;
    }
    let (_registry, base) = registry_with_busybox().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM $BASE\nCOPY a.txt /a.txt\nRUN cp /a.txt /b.txt\nENV X=1\n",
    )
    .unwrap();
    std::fs::write(ctx.path().join("a.txt"), "content\n").unwrap();
    let root = tempfile::tempdir().unwrap();
    let first = build(root.path(), ctx.path(), &base, Epoch::Unset);
    // The clock moves past a whole second (the times' resolution) between the builds.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = build(root.path(), ctx.path(), &base, Epoch::Unset);
    let third = build(root.path(), ctx.path(), &base, Epoch::Unset);
    assert_eq!(
        second.manifest_digest, first.manifest_digest,
        "a cached rebuild changed the image"
    );
    assert_eq!(third.manifest_digest, first.manifest_digest);
    assert_eq!(second.manifest.config.digest, first.manifest.config.digest);

    // A changed step gives a new image, whose unchanged steps keep their times.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(ctx.path().join("a.txt"), "changed\n").unwrap();
    let changed = build(root.path(), ctx.path(), &base, Epoch::Unset);
    assert_ne!(changed.manifest_digest, first.manifest_digest);
    let store = rbuild_oci::Store::open(root.path()).unwrap();
    let before = config_times(&store.read_blob(&first.manifest.config.digest).unwrap());
    let after = config_times(&store.read_blob(&changed.manifest.config.digest).unwrap());
    assert_eq!(before.len(), after.len());
    let base_entries = before.len() - 4;
    assert_eq!(before[1..=base_entries], after[1..=base_entries]);
    assert!(after[0].1 > before[0].1, "{before:?} {after:?}");
}
