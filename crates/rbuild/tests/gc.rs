//! Garbage collection end to end: the automatic collection keeps a root under its budget, prune
//! keeps what tags reach and leaves a store that rebuilds, a killed prune is repaired by the
//! next run, and du reports the areas. FROM scratch + COPY of generated files: no registry.

mod common;

use common::{rbuild_at, stderr_text};
use rbuild_build::StateDir;
use rbuild_oci::{Digest, Store};
use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

const MB: u64 = 1_000_000;

/// Incompressible bytes from a seed (xorshift), so a layer blob is as large as its file.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A context whose image is one COPY of a `size`-byte file made from `seed`.
fn context(seed: u64, size: usize) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY data.bin /data.bin\nCOPY note.txt /note.txt\n",
    )
    .unwrap();
    std::fs::write(ctx.path().join("data.bin"), noise(seed, size)).unwrap();
    std::fs::write(ctx.path().join("note.txt"), format!("variant {seed}\n")).unwrap();
    ctx
}

fn build(root: &Path, ctx: &Path, extra: &[&str]) -> Output {
    let out = rbuild_at(root)
        .args(["build", "--progress=plain"])
        .args(extra)
        .arg(ctx)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn prune(root: &Path, args: &[&str]) -> String {
    let out = rbuild_at(root).arg("prune").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "prune failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Allocated bytes of the store's blobs and the snapshots.
fn used(root: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let Ok(m) = std::fs::symlink_metadata(p) else {
            return 0;
        };
        let mut n = m.blocks() * 512;
        if m.is_dir() {
            for e in std::fs::read_dir(p).unwrap().flatten() {
                n += walk(&e.path());
            }
        }
        n
    }
    walk(&root.join("blobs")) + walk(&root.join("snapshots-v1/snapshots"))
}

/// Every blob's content hashes to its name; returns how many there are.
fn verify_blobs(root: &Path) -> usize {
    let dir = root.join("blobs/sha256");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let bytes = std::fs::read(e.path()).unwrap();
        assert_eq!(
            Digest::sha256_of(&bytes).hex(),
            name,
            "blob {name} is corrupt"
        );
        n += 1;
    }
    n
}

/// Every tagged image's manifest, config and layers are in the store.
fn assert_tags_complete(root: &Path) -> usize {
    let store = Store::open(root).unwrap();
    let tags = store.tags().unwrap();
    for t in &tags {
        let image = store.read_image(&t.descriptor.digest).unwrap();
        for l in &image.manifest.layers {
            assert!(
                store.has_blob(&l.digest),
                "{}: layer {} missing",
                t.name,
                l.digest
            );
        }
    }
    tags.len()
}

/// skopeo copies the tagged image out of the store (checking every digest on the way).
fn skopeo_reads(root: &Path, tag: &str) {
    let dest = tempfile::tempdir().unwrap();
    let out = rbuild_testsupport::skopeo("copy", None)
        .unwrap()
        .arg(format!("oci:{}:{tag}", root.display()))
        .arg(format!("dir:{}", dest.path().display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo cannot read {tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn root_only() -> bool {
    rbuild_testsupport::require_root().unwrap()
}

#[test]
fn automatic_gc_keeps_the_root_under_its_budget() {
    if !root_only() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let budget = 20 * 1024 * 1024; // `20MB` in docker's size grammar
    let one_build = 12 * MB;
    let mut max = 0;
    for i in 0..30 {
        let ctx = context(i, 5 * MB as usize);
        build(
            root.path(),
            ctx.path(),
            &["-t", "gc/app:1", "--gc-keep-storage", "20MB"],
        );
        let now = used(root.path());
        max = max.max(now);
        assert!(
            now <= budget + one_build,
            "after build {i} the root holds {now} bytes (budget {budget})"
        );
    }
    eprintln!("largest root after a build: {max} bytes");
    assert!(verify_blobs(root.path()) > 0);
    assert_eq!(assert_tags_complete(root.path()), 1);
    skopeo_reads(root.path(), "gc/app:1");
    // The remaining image exports, and its cache still hits.
    let ctx = context(29, 5 * MB as usize);
    let dest = root.path().join("out.tar");
    let out = build(
        root.path(),
        ctx.path(),
        &[
            "-t",
            "gc/app:1",
            "-o",
            &format!("type=oci,dest={}", dest.display()),
        ],
    );
    assert!(dest.metadata().unwrap().len() > 5 * MB);
    assert!(String::from_utf8_lossy(&out.stderr).contains("CACHED"));
    // Off means off: nothing is collected.
    let before = used(root.path());
    for i in 100..103 {
        let ctx = context(i, MB as usize);
        build(root.path(), ctx.path(), &["--gc-keep-storage", "off"]);
    }
    assert!(used(root.path()) > before + 2 * MB);
}

#[test]
fn prune_keeps_what_tags_reach_and_all_leaves_a_store_that_rebuilds() {
    if !root_only() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let off = ["--gc-keep-storage", "0"];
    let kept = context(1, MB as usize);
    build(root.path(), kept.path(), &["-t", "keep:1", off[0], off[1]]);
    for i in 2..5 {
        let ctx = context(i, MB as usize);
        build(root.path(), ctx.path(), &off);
    }
    let state = StateDir::new(root.path());
    let before = used(root.path());
    let text = prune(root.path(), &["-f"]);
    assert!(text.contains("Total reclaimed space: "), "{text}");
    assert!(
        used(root.path()) + 3 * MB < before,
        "dangling images were not removed"
    );
    assert_eq!(rbuild_build::gc::unreachable_count(&state).unwrap(), (0, 0));
    assert_eq!(assert_tags_complete(root.path()), 1);
    verify_blobs(root.path());

    // A fresh record survives `until=24h`.
    build(root.path(), kept.path(), &["-t", "keep:1", off[0], off[1]]);
    let du = rbuild_at(root.path()).args(["du", "-v"]).output().unwrap();
    let du = String::from_utf8_lossy(&du.stdout).into_owned();
    assert!(
        du.contains("Build Cache") && du.contains("Last used:"),
        "{du}"
    );
    let text = prune(root.path(), &["-f", "--filter", "until=24h"]);
    assert!(!text.contains("Deleted build cache objects"), "{text}");

    let text = prune(root.path(), &["-f", "--all"]);
    assert!(text.contains("Deleted build cache objects"), "{text}");
    assert!(!root
        .path()
        .join("snapshots-v1/snapshots")
        .read_dir()
        .unwrap()
        .any(|_| true));
    assert_eq!(assert_tags_complete(root.path()), 1);
    verify_blobs(root.path());
    let out = build(root.path(), kept.path(), &["-t", "keep:1", off[0], off[1]]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("CACHED [2/"));
    assert_eq!(assert_tags_complete(root.path()), 1);
}

#[test]
fn prune_asks_first_and_no_means_no() {
    if !root_only() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let ctx = context(7, MB as usize);
    build(root.path(), ctx.path(), &["--gc-keep-storage", "off"]);
    let before = used(root.path());
    let mut child = rbuild_at(root.path())
        .arg("prune")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"n\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("WARNING! This will remove all dangling build cache. Are you sure you want to continue? [y/N]"),
        "{text}"
    );
    assert_eq!(used(root.path()), before);
}

#[test]
fn a_killed_prune_is_repaired_by_the_next_run() {
    if !root_only() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    build(
        root.path(),
        context(1, MB as usize).path(),
        &["-t", "keep:1", "--gc-keep-storage", "off"],
    );
    for round in 0..3u64 {
        for i in 0..4 {
            let ctx = context(10 + round * 10 + i, MB as usize);
            build(root.path(), ctx.path(), &["--gc-keep-storage", "off"]);
        }
        let mut child = rbuild_at(root.path())
            .args(["prune", "-f", "--all"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20 + 40 * round));
        let _ = child.kill();
        let _ = child.wait();
    }
    // A collection killed after deleting the records, before the snapshots: orphan snapshots.
    for i in 0..3 {
        build(
            root.path(),
            context(50 + i, MB as usize).path(),
            &["--gc-keep-storage", "off"],
        );
    }
    {
        let index =
            rbuild_solver::CacheIndex::open(&root.path().join(rbuild_solver::INDEX_FILE_NAME))
                .unwrap();
        let keys: Vec<_> = index
            .results()
            .unwrap()
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert!(!keys.is_empty());
        index.remove_results(&keys).unwrap();
    }
    let (orphans, _) = rbuild_build::gc::unreachable_count(&StateDir::new(root.path())).unwrap();
    assert!(orphans >= 3, "{orphans}");
    // ... killed while deleting a snapshot it had moved into its temp dir.
    let moved = root
        .path()
        .join("snapshots-v1/tmp/1-1-1/18ecb31ddd1cbace003e970001/fs");
    std::fs::create_dir_all(&moved).unwrap();
    std::fs::write(moved.join("f"), noise(5, 100_000)).unwrap();
    // A leftover trash dir, as a collection killed while emptying it leaves.
    let trash = root.path().join("tmp/gc-trash/cache-mounts-1/x");
    std::fs::create_dir_all(&trash).unwrap();
    std::fs::write(trash.join("f"), b"left over").unwrap();
    prune(root.path(), &["-f"]);
    assert!(!root.path().join("tmp/gc-trash").exists());
    assert!(!root.path().join("snapshots-v1/tmp/1-1-1").exists());
    assert_eq!(
        rbuild_build::gc::unreachable_count(&StateDir::new(root.path())).unwrap(),
        (0, 0)
    );
    assert_eq!(assert_tags_complete(root.path()), 1);
    verify_blobs(root.path());
    build(
        root.path(),
        context(1, MB as usize).path(),
        &["-t", "keep:1"],
    );
    build(
        root.path(),
        context(99, MB as usize).path(),
        &["-t", "other:1"],
    );
    assert_eq!(assert_tags_complete(root.path()), 2);
}

#[test]
fn prune_waits_for_a_running_build() {
    if !root_only() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let ctx = context(3, MB as usize);
    build(root.path(), ctx.path(), &["--gc-keep-storage", "off"]);
    let state = StateDir::new(root.path());
    // What a build holds while it runs.
    let lease = rbuild_build::gc::BuildLease::acquire(&state, None).unwrap();
    let before = used(root.path());
    let mut child = rbuild_at(root.path())
        .args(["prune", "-f", "--all"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "prune ran during a build"
    );
    assert_eq!(used(root.path()), before);
    drop(lease);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let err = stderr_text(&out);
    assert!(err.contains("waiting for"), "{err}");
    assert!(used(root.path()) < before);
}

#[test]
fn prune_all_empties_cache_mounts_and_du_counts_them() {
    let Some(env) = common::env() else { return };
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM $BASE\nRUN --mount=type=cache,target=/c head -c 300000 /dev/urandom > /c/blob && echo ok > /ok\n",
    )
    .unwrap();
    let out = common::build(
        root.path(),
        ctx.path(),
        &env.base,
        &["-t", "mounts:1", "--gc-keep-storage", "off"],
    );
    common::assert_ok(&out);
    let du = rbuild_at(root.path()).arg("du").output().unwrap();
    let du = String::from_utf8_lossy(&du.stdout).into_owned();
    let line = du
        .lines()
        .find(|l| l.starts_with("Cache Mounts"))
        .unwrap_or_default()
        .to_string();
    assert!(line.split_whitespace().nth(2) == Some("1"), "{du}");
    let mounts = root.path().join("cache-mounts-v1");
    assert!(mounts.read_dir().unwrap().any(|_| true));
    // Without --all the cache mounts stay.
    prune(root.path(), &["-f"]);
    assert!(mounts.read_dir().unwrap().any(|_| true));
    prune(root.path(), &["-f", "--all"]);
    assert!(!mounts.read_dir().unwrap().any(|_| true));
    assert!(!root.path().join("tmp/gc-trash").exists());
    // The base image and the result stay tagged and readable; a rebuild works.
    assert_eq!(assert_tags_complete(root.path()), 2);
    skopeo_reads(root.path(), "mounts:1");
    let out = common::build(root.path(), ctx.path(), &env.base, &["-t", "mounts:1"]);
    common::assert_ok(&out);
    verify_blobs(root.path());
}

#[test]
fn keep_storage_drops_the_least_recently_used_first() {
    if !root_only() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let variants: Vec<_> = (0..3).map(|i| context(200 + i, MB as usize)).collect();
    for v in &variants {
        build(root.path(), v.path(), &["--gc-keep-storage", "off"]);
        // Use times have a resolution of one second.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let text = prune(root.path(), &["-f", "--keep-storage", "3MB"]);
    assert!(text.contains("Deleted build cache objects"), "{text}");
    assert!(
        used(root.path()) <= 3 * 1024 * 1024,
        "{}",
        used(root.path())
    );
    let cached = |v: &tempfile::TempDir| {
        let out = build(root.path(), v.path(), &["--gc-keep-storage", "off"]);
        String::from_utf8_lossy(&out.stderr).contains("CACHED")
    };
    // The newest stays cached; the oldest was dropped.
    assert!(cached(&variants[2]));
    assert!(!cached(&variants[0]));
}

#[test]
fn the_roots_config_file_sets_the_budget_and_flag_and_env_win() {
    if !root_only() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    std::fs::write(
        root.path().join("config.json"),
        r#"{"gc": {"keepStorage": "20MB"}}"#,
    )
    .unwrap();
    let budget = 20 * 1024 * 1024;
    let one_build = 12 * MB;
    let quiet_build = |ctx: &Path, extra: &[&str], env: Option<&str>| {
        let mut cmd = rbuild_at(root.path());
        cmd.env_remove("RBUILD_GC_KEEP_STORAGE");
        if let Some(v) = env {
            cmd.env("RBUILD_GC_KEEP_STORAGE", v);
        }
        let out = cmd
            .args(["build", "--progress=plain", "-t", "cfg/app:1"])
            .args(extra)
            .arg(ctx)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "build failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    for i in 0..8 {
        let ctx = context(200 + i, 5 * MB as usize);
        quiet_build(ctx.path(), &[], None);
        let now = used(root.path());
        assert!(
            now <= budget + one_build,
            "after build {i} the root holds {now} bytes (config.json budget {budget})"
        );
    }
    // The environment wins over the file, and the flag over both: with `off`, nothing goes.
    let before = used(root.path());
    for i in 300..303 {
        let ctx = context(i, 5 * MB as usize);
        quiet_build(ctx.path(), &[], Some("off"));
    }
    let grown = used(root.path());
    assert!(grown > before + 10 * MB, "env off kept everything");
    for i in 400..402 {
        let ctx = context(i, 5 * MB as usize);
        quiet_build(ctx.path(), &["--gc-keep-storage", "off"], Some("20MB"));
    }
    assert!(
        used(root.path()) > grown + 8 * MB,
        "flag off kept everything"
    );
    // A malformed file is a warning naming it; the build itself succeeds.
    std::fs::write(root.path().join("config.json"), "{not json").unwrap();
    let ctx = context(500, MB as usize);
    let out = quiet_build(ctx.path(), &[], None);
    let err = stderr_text(&out);
    assert!(
        err.contains("warning: ignoring the garbage collection settings of")
            && err.contains("config.json"),
        "{err}"
    );
}

/// The compressed variants that archives (and pushes) made live as long as the uncompressed
/// layers they were made from: a collection drops the variants of unreachable layers together
/// with their blobs, keeps those of tagged images (reused by the next export), and leaves no
/// mapping that names a missing blob.
#[test]
fn compressed_variants_live_as_long_as_their_layers() {
    if !root_only() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let off = ["--gc-keep-storage", "0"];
    let (kept, dropped) = (context(11, 300_000), context(12, 300_000));
    let oci = |name: &str| format!("type=oci,dest={}", out_dir.path().join(name).display());
    for (ctx, tag) in [(&kept, "keep:1"), (&dropped, "drop:1")] {
        let dest = oci(tag);
        build(
            root.path(),
            ctx.path(),
            &["-t", tag, "-o", &dest, off[0], off[1]],
        );
    }
    let store = Store::open(root.path()).unwrap();
    let layers_of = |tag: &str| {
        let d = store.resolve_tag(tag).unwrap().unwrap();
        store.read_image(&d.digest).unwrap().config.rootfs.diff_ids
    };
    let (keep_layers, drop_layers) = (layers_of("keep:1"), layers_of("drop:1"));
    assert_eq!(store.variants().unwrap().len(), 4);
    let gz = rbuild_oci::Compression::Gzip;
    let drop_blobs: Vec<_> = drop_layers
        .iter()
        .map(|l| store.variant(&l.0, gz).unwrap().digest)
        .collect();
    let keep_blobs: Vec<_> = keep_layers
        .iter()
        .map(|l| store.variant(&l.0, gz).unwrap().digest)
        .collect();

    assert_eq!(
        store.layer_contents().unwrap().len(),
        4,
        "layers by content"
    );
    let rmi = rbuild_at(root.path())
        .args(["rmi", "drop:1"])
        .output()
        .unwrap();
    assert!(
        rmi.status.success(),
        "{}",
        String::from_utf8_lossy(&rmi.stderr)
    );
    prune(root.path(), &["-f", "--all"]);
    let state = StateDir::new(root.path());
    assert_eq!(rbuild_build::gc::unreachable_count(&state).unwrap(), (0, 0));
    let left = store.variants().unwrap();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().all(|v| store.has_blob(&v.descriptor.digest)));
    assert!(drop_blobs.iter().all(|b| !store.has_blob(b)));
    assert!(keep_blobs.iter().all(|b| store.has_blob(b)));
    // Layers-by-content entries go with their blobs, prefix markers with their entries.
    let contents = store.layer_contents().unwrap();
    assert_eq!(contents.len(), 2, "{contents:?}");
    assert!(contents
        .iter()
        .all(|c| store.has_blob(&c.layer.descriptor.digest)));
    let mut prefixes: Vec<String> = contents.iter().map(|c| c.prefix.clone()).collect();
    prefixes.sort();
    prefixes.dedup();
    let mut markers = store.content_prefixes().unwrap();
    markers.sort();
    assert_eq!(markers, prefixes);
    verify_blobs(root.path());
    skopeo_reads(root.path(), "keep:1");

    // The next archive of the kept image (its layers rebuilt to the same bytes) reuses the
    // remembered variants.
    let dest = oci("again");
    build(
        root.path(),
        kept.path(),
        &["-t", "keep:1", "-o", &dest, off[0], off[1]],
    );
    assert_eq!(store.variants().unwrap(), left);
    assert_eq!(layers_of("keep:1"), keep_layers);
}
