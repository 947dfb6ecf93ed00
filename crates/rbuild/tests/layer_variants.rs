//! The compressed layers of archives and pushes, end to end: the store keeps built layers
//! uncompressed, an `--output type=oci|docker` gets gzip (or the output's `compression=`), and a
//! process killed while compressing leaves a store with no mapping to a missing or partial blob,
//! which the next export completes. FROM scratch + COPY of generated files: no registry.

mod common;

use common::{assert_ok, rbuild_at};
use rbuild_oci::{Compression, Digest, MediaType, Store};
use std::path::Path;
use std::time::{Duration, Instant};

/// Incompressible bytes (xorshift), so compressing them takes a measurable while.
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

fn context(size: usize) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY big.bin /big.bin\nCOPY note.txt /note.txt\n",
    )
    .unwrap();
    std::fs::write(ctx.path().join("big.bin"), noise(3, size)).unwrap();
    std::fs::write(ctx.path().join("note.txt"), b"note\n").unwrap();
    ctx
}

fn build(root: &Path, ctx: &Path, extra: &[&str]) -> std::process::Output {
    rbuild_at(root)
        .args(["build", "--progress=plain", "--gc-keep-storage", "0"])
        .args(extra)
        .arg(ctx)
        .output()
        .unwrap()
}

/// Every mapping names a present blob whose bytes hash to its name.
fn assert_consistent(store: &Store) {
    for v in store.variants().unwrap() {
        let bytes = std::fs::read(store.blob_path(&v.descriptor.digest))
            .unwrap_or_else(|e| panic!("{v:?} names a missing blob: {e}"));
        assert_eq!(Digest::sha256_of(&bytes), v.descriptor.digest, "{v:?}");
        assert_eq!(bytes.len() as u64, v.descriptor.size);
    }
}

#[test]
fn archives_get_compressed_layers_and_a_killed_export_leaves_a_consistent_store() {
    if !rbuild_testsupport::require_root().unwrap() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let ctx = context(96 << 20);
    let first = build(root.path(), ctx.path(), &["-t", "big:1"]);
    assert_ok(&first);
    // A layer over 64 MiB reports its progress (BuildKit-like lines), ending with `done`.
    let text = String::from_utf8_lossy(&first.stderr).into_owned();
    assert!(
        text.lines()
            .any(|l| l.starts_with("exporting layer ") && l.ends_with("MiB")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("exporting layer ") && l.ends_with(" done")),
        "{text}"
    );
    let store = Store::open(root.path()).unwrap();
    let image = store.resolve_tag("big:1").unwrap().unwrap();
    let record = store.read_image(&image.digest).unwrap();
    for l in &record.manifest.layers {
        assert_eq!(l.media_type.as_str(), MediaType::OCI_LAYER_TAR);
    }
    assert!(
        store.variants().unwrap().is_empty(),
        "a build compresses nothing"
    );

    // A cached rebuild with an archive output only compresses: kill it mid-way.
    let tar = out.path().join("big.tar");
    let spec = format!("type=oci,dest={},compression-level=9", tar.display());
    let mut child = rbuild_at(root.path())
        .args([
            "build",
            "--progress=plain",
            "--gc-keep-storage",
            "0",
            "-t",
            "big:1",
        ])
        .args(["-o", &spec])
        .arg(ctx.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let tmp = root.path().join(rbuild_oci::STORE_TMP_DIR);
    let started = Instant::now();
    let mut saw_temp_blob = false;
    while started.elapsed() < Duration::from_secs(60) {
        let busy = std::fs::read_dir(&tmp)
            .into_iter()
            .flatten()
            .flatten()
            .any(|owner| {
                std::fs::read_dir(owner.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|f| {
                        // A compressed layer under way (not a small config or manifest).
                        f.file_name().to_string_lossy().starts_with("blob-")
                            && f.metadata().is_ok_and(|m| m.len() > 4 << 20)
                    })
            });
        if busy {
            saw_temp_blob = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        saw_temp_blob,
        "the export finished before it could be killed"
    );
    let store = Store::open(root.path()).unwrap();
    assert_consistent(&store);
    assert!(
        store
            .variant(&record.config.rootfs.diff_ids[0].0, Compression::Gzip)
            .is_none(),
        "no mapping for the interrupted layer"
    );

    // The next export completes it; the archive holds gzip layers over the same config.
    let done = build(root.path(), ctx.path(), &["-t", "big:1", "-o", &spec]);
    assert_ok(&done);
    let text = String::from_utf8_lossy(&done.stderr).into_owned();
    let diff = &record.config.rootfs.diff_ids[0].0;
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("compressing layer {diff} ")) && l.contains("MiB / ")),
        "{text}"
    );
    assert_consistent(&store);
    for diff in &record.config.rootfs.diff_ids {
        let v = store
            .variant(&diff.0, Compression::Gzip)
            .expect("variant made");
        assert_eq!(v.media_type.as_str(), MediaType::OCI_LAYER_GZIP);
    }
    let archive = tar::Archive::new(std::fs::File::open(&tar).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    let gz = store
        .variant(&record.config.rootfs.diff_ids[0].0, Compression::Gzip)
        .unwrap();
    assert!(
        archive.contains(&format!("blobs/sha256/{}", gz.digest.hex())),
        "{archive:?}"
    );
    assert!(
        !archive.contains(&format!(
            "blobs/sha256/{}",
            record.manifest.layers[0].digest.hex()
        )),
        "the uncompressed blob is not in the archive"
    );
    // JSON progress: typed layer events (a zstd archive is a new variant to make).
    let zstd = format!(
        "type=oci,dest={},compression=zstd",
        out.path().join("z.tar").display()
    );
    let json = rbuild_at(root.path())
        .args([
            "build",
            "--progress=json",
            "--gc-keep-storage",
            "0",
            "-t",
            "big:1",
        ])
        .args(["-o", &zstd])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_ok(&json);
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&json.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["event"] == "layer")
        .collect();
    let tar_size = record.manifest.layers[0].size;
    assert!(
        events.iter().any(|e| e["action"] == "compressing"
            && e["layer"] == diff.to_string().as_str()
            && e["total"] == tar_size
            && e["finished"] == true
            && e["current"] == tar_size),
        "{events:?}"
    );
    // The store itself still reads (skopeo, as `oci:ROOT:TAG`).
    let dest = tempfile::tempdir().unwrap();
    let sk = rbuild_testsupport::skopeo("copy", None)
        .unwrap()
        .arg(format!("oci:{}:big:1", root.path().display()))
        .arg(format!("dir:{}", dest.path().display()))
        .output()
        .unwrap();
    assert!(
        sk.status.success(),
        "{}",
        String::from_utf8_lossy(&sk.stderr)
    );
}
