//! Layers as the store keeps them (uncompressed) and their compressed variants for pushes and
//! archives: made once, remembered in the store, reused; reuse across compressions; a canceled
//! compression leaves neither a blob nor a mapping. Real snapshots (overlayfs where the kernel
//! allows it), so every test needs root (`SKIPPED: needs root` otherwise).

use rbuild_exporter::{
    assemble_image, ensure_layer, image_variant, layer_variant, ExportError, LayerOptions,
};
use rbuild_oci::{Compression, Digest, ImageConfig, MediaType, Store};
use rbuild_snapshotter::{SnapshotId, Snapshotter};
use rbuild_testsupport::require_root;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

struct Env {
    snap: Snapshotter,
    store: Store,
    _dir: tempfile::TempDir,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let snap = Snapshotter::open(&dir.path().join("snapshots")).unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    Env {
        snap,
        store,
        _dir: dir,
    }
}

fn snapshot(snap: &Snapshotter, f: impl FnOnce(&Path)) -> SnapshotId {
    let active = snap.prepare(None).unwrap();
    {
        let mount = active.mount().unwrap();
        f(mount.path());
    }
    snap.commit(active).unwrap()
}

/// `len` bytes that gzip cannot shrink much (xorshift), so compressing them takes a while.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn stored() -> LayerOptions {
    LayerOptions {
        compression: Compression::None,
        ..LayerOptions::default()
    }
}

fn config() -> ImageConfig {
    ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        ..ImageConfig::default()
    }
}

fn decompress(store: &Store, digest: &Digest, media_type: &MediaType) -> Vec<u8> {
    let file = fs::File::open(store.blob_path(digest)).unwrap();
    let mut out = Vec::new();
    match media_type.layer_compression() {
        Some(Compression::Gzip) => {
            flate2::read::GzDecoder::new(file)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some(Compression::Zstd) => {
            zstd::stream::read::Decoder::new(file)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
        }
        _ => {
            std::io::BufReader::new(file).read_to_end(&mut out).unwrap();
        }
    }
    out
}

fn tmp_entries(store: &Store) -> usize {
    fs::read_dir(store.root().join("tmp/blobs").join(store.owner()))
        .unwrap()
        .count()
}

#[test]
fn stored_layers_are_uncompressed_and_variants_are_made_once() {
    if !require_root().unwrap() {
        return;
    }
    let e = env();
    let id = snapshot(&e.snap, |root| {
        fs::write(root.join("a.txt"), b"hello variants\n").unwrap();
    });
    let layer = ensure_layer(&e.snap, &e.store, &id, &stored()).unwrap();
    assert_eq!(
        layer.descriptor.media_type.as_str(),
        MediaType::OCI_LAYER_TAR
    );
    assert_eq!(layer.descriptor.digest, layer.diff_id.0, "blob = diff tar");
    let (image, _) = assemble_image(&e.store, config(), std::slice::from_ref(&layer)).unwrap();
    let tar = fs::read(e.store.blob_path(&layer.diff_id.0)).unwrap();

    // gzip by default: a new manifest over the gzip variant, same config.
    let gz = image_variant(&e.store, &image, &LayerOptions::default(), 0).unwrap();
    assert_ne!(gz.digest, image.digest);
    let local = e.store.read_image(&image.digest).unwrap();
    let distributed = e.store.read_image(&gz.digest).unwrap();
    assert_eq!(distributed.manifest.config, local.manifest.config);
    let gz_layer = &distributed.manifest.layers[0];
    assert_eq!(gz_layer.media_type.as_str(), MediaType::OCI_LAYER_GZIP);
    assert_eq!(
        decompress(&e.store, &gz_layer.digest, &gz_layer.media_type),
        tar
    );
    assert_eq!(
        e.store
            .variant(&layer.diff_id.0, Compression::Gzip)
            .map(|d| d.digest),
        Some(gz_layer.digest.clone())
    );
    // Made once: the second conversion reuses the blob (same inode and mtime).
    let stamp = |d: &Digest| {
        let m = fs::metadata(e.store.blob_path(d)).unwrap();
        (m.ino(), m.mtime_nsec())
    };
    let before = stamp(&gz_layer.digest);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(
        image_variant(&e.store, &image, &LayerOptions::default(), 0).unwrap(),
        gz
    );
    assert_eq!(stamp(&gz_layer.digest), before);

    // zstd is a variant of its own; uncompressed asks for nothing new.
    let zstd_opts = LayerOptions {
        compression: Compression::Zstd,
        ..LayerOptions::default()
    };
    let zs = image_variant(&e.store, &image, &zstd_opts, 0).unwrap();
    let zs_layer = &e.store.read_image(&zs.digest).unwrap().manifest.layers[0];
    assert_eq!(zs_layer.media_type.as_str(), MediaType::OCI_LAYER_ZSTD);
    assert_eq!(
        decompress(&e.store, &zs_layer.digest, &zs_layer.media_type),
        tar
    );
    assert_eq!(
        image_variant(&e.store, &image, &stored(), 0).unwrap(),
        image
    );
    assert_eq!(e.store.variants().unwrap().len(), 2);

    // Cross-compression reuse: a gzip layer stays gzip for a zstd output without
    // force-compression, and is recompressed (from its gzip) with it.
    let gz_as_layer = rbuild_exporter::Layer {
        descriptor: gz_layer.clone(),
        diff_id: layer.diff_id.clone(),
    };
    assert_eq!(
        layer_variant(&e.store, &gz_as_layer, None, &zstd_opts).unwrap(),
        gz_as_layer
    );
    let forced = LayerOptions {
        force_compression: true,
        ..zstd_opts.clone()
    };
    let re = layer_variant(&e.store, &gz_as_layer, None, &forced).unwrap();
    assert_eq!(
        re.descriptor.digest, zs_layer.digest,
        "the remembered zstd variant"
    );
    assert_eq!(tmp_entries(&e.store), 0);
}

#[test]
fn canceled_compression_leaves_no_blob_and_no_mapping() {
    if !require_root().unwrap() {
        return;
    }
    let e = env();
    let id = snapshot(&e.snap, |root| {
        fs::write(root.join("big.bin"), noise(48 << 20, 7)).unwrap();
    });
    let layer = ensure_layer(&e.snap, &e.store, &id, &stored()).unwrap();
    let blobs_before = e.store.list_blobs().unwrap().len();
    let cancel = Arc::new(AtomicBool::new(false));
    let opts = LayerOptions {
        gzip_level: Some(9),
        cancel: Some(cancel.clone()),
        ..LayerOptions::default()
    };
    // Cancel as soon as the variant's temp blob exists (compression under way).
    let watcher = {
        let (cancel, tmp) = (
            cancel.clone(),
            e.store.root().join("tmp/blobs").join(e.store.owner()),
        );
        std::thread::spawn(move || {
            for _ in 0..20_000 {
                if fs::read_dir(&tmp).map(|d| d.count() > 0).unwrap_or(false) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            cancel.store(true, Ordering::Relaxed);
        })
    };
    let r = layer_variant(&e.store, &layer, None, &opts);
    watcher.join().unwrap();
    assert!(matches!(r, Err(ExportError::Canceled)), "{r:?}");
    assert_eq!(e.store.variant(&layer.diff_id.0, Compression::Gzip), None);
    assert!(e.store.variants().unwrap().is_empty(), "no mapping");
    assert_eq!(e.store.list_blobs().unwrap().len(), blobs_before, "no blob");
    assert_eq!(tmp_entries(&e.store), 0, "no temp file left");
    // The next, uncanceled attempt makes it.
    cancel.store(false, Ordering::Relaxed);
    let made = layer_variant(&e.store, &layer, None, &opts).unwrap();
    assert_eq!(
        e.store.variant(&layer.diff_id.0, Compression::Gzip),
        Some(made.descriptor.clone())
    );
}

/// A one-file layer on its own parent (each call a new parent, as a COPY after a changed step),
/// then `tweak` applied to its one file.
fn file_layer(snap: &Snapshotter, tweak: impl FnOnce(&Path)) -> SnapshotId {
    let parent = snapshot(snap, |root| {
        fs::write(root.join("stamp"), noise(64, rand_seed())).unwrap();
    });
    let active = snap.prepare(Some(&parent)).unwrap();
    {
        let mount = active.mount().unwrap();
        let dir = mount.path().join("app");
        fs::create_dir(&dir).unwrap();
        let file = dir.join("data.bin");
        fs::write(&file, noise(3 << 20, 5)).unwrap();
        std::os::unix::fs::chown(&file, Some(1000), Some(1000)).unwrap();
        fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        fs::File::open(&file).unwrap().set_modified(when).unwrap();
        tweak(&file);
        fs::File::open(&dir).unwrap().set_modified(when).unwrap();
    }
    snap.commit(active).unwrap()
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn identical_tar_streams_reuse_the_layer_and_any_difference_does_not() {
    if !require_root().unwrap() {
        return;
    }
    let e = env();
    let first = ensure_layer(&e.snap, &e.store, &file_layer(&e.snap, |_| {}), &stored()).unwrap();
    let blobs = e.store.list_blobs().unwrap().len();
    let stamp = fs::metadata(e.store.blob_path(&first.descriptor.digest))
        .unwrap()
        .ino();
    // The same content on another parent: the same layer, no new blob.
    let again = ensure_layer(&e.snap, &e.store, &file_layer(&e.snap, |_| {}), &stored()).unwrap();
    assert_eq!(again, first);
    assert_eq!(e.store.list_blobs().unwrap().len(), blobs);
    assert_eq!(
        fs::metadata(e.store.blob_path(&first.descriptor.digest))
            .unwrap()
            .ino(),
        stamp
    );
    assert_eq!(e.store.layer_contents().unwrap().len(), 1);

    // One changed byte, mode, owner, mtime or xattr: another layer.
    type Tweak = Box<dyn FnOnce(&Path)>;
    let tweaks: Vec<(&str, Tweak)> = vec![
        (
            "byte",
            Box::new(|f: &Path| {
                let mut data = fs::read(f).unwrap();
                data[1 << 20] ^= 1;
                let when = fs::metadata(f).unwrap().modified().unwrap();
                fs::write(f, data).unwrap();
                fs::File::open(f).unwrap().set_modified(when).unwrap();
            }),
        ),
        (
            "mode",
            Box::new(|f: &Path| {
                fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap()
            }),
        ),
        (
            "owner",
            Box::new(|f: &Path| std::os::unix::fs::chown(f, Some(1000), Some(1001)).unwrap()),
        ),
        (
            "mtime",
            Box::new(|f: &Path| {
                let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1);
                fs::File::open(f).unwrap().set_modified(when).unwrap();
            }),
        ),
        (
            "xattr",
            Box::new(|f: &Path| {
                rustix::fs::setxattr(f, "user.rbuild.test", b"1", rustix::fs::XattrFlags::empty())
                    .unwrap()
            }),
        ),
    ];
    let mut seen = vec![first.diff_id.clone()];
    for (what, tweak) in tweaks {
        let layer =
            ensure_layer(&e.snap, &e.store, &file_layer(&e.snap, tweak), &stored()).unwrap();
        assert!(
            !seen.contains(&layer.diff_id),
            "a changed {what} reused an earlier layer"
        );
        seen.push(layer.diff_id.clone());
    }
}
