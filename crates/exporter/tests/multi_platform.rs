//! A multi-platform image as the exporter writes it out: an index over two platforms' images
//! (amd64 and arm64 configs over real snapshots) gets its layers compressed per platform for a
//! push or an archive, goes whole into an OCI archive that skopeo reads per platform
//! (`--override-arch`), is refused by the docker archive with BuildKit's message, and is written
//! as a directory per platform by the `local` and `tar` outputs; GC reachability keeps every
//! platform's blobs. Real snapshots, so the tests need root (`SKIPPED` otherwise).

use rbuild_exporter::{
    assemble_image, assemble_index, ensure_layer, image_variant, write_docker_archive,
    write_local_platforms, write_oci, write_tar_platforms, ExportError, LayerOptions,
};
use rbuild_oci::{
    Compression, Descriptor, ImageConfig, Index, Manifest, MediaType, Platform, Store,
};
use rbuild_snapshotter::{SnapshotId, Snapshotter};
use rbuild_testsupport::{require_root, skopeo};
use std::fs;
use std::path::Path;

struct Env {
    snap: Snapshotter,
    store: Store,
    dir: tempfile::TempDir,
    /// (platform, top snapshot, manifest) per platform.
    images: Vec<(Platform, SnapshotId, Descriptor)>,
    index: Descriptor,
}

/// Two images, `/arch` = `x86_64` (linux/amd64) and `aarch64` (linux/arm64), and their index.
fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let snap = Snapshotter::open(&dir.path().join("snapshots")).unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let stored = LayerOptions {
        compression: Compression::None,
        ..LayerOptions::default()
    };
    let mut images = Vec::new();
    for (arch, uname) in [("amd64", "x86_64"), ("arm64", "aarch64")] {
        let active = snap.prepare(None).unwrap();
        {
            let mount = active.mount().unwrap();
            fs::write(mount.path().join("arch"), format!("{uname}\n")).unwrap();
        }
        let top = snap.commit(active).unwrap();
        let layer = ensure_layer(&snap, &store, &top, &stored).unwrap();
        let config = ImageConfig {
            architecture: arch.into(),
            os: "linux".into(),
            ..ImageConfig::default()
        };
        let (desc, _) = assemble_image(&store, config, std::slice::from_ref(&layer)).unwrap();
        images.push((Platform::new("linux", arch, None), top, desc));
    }
    let manifests: Vec<Descriptor> = images.iter().map(|(_, _, d)| d.clone()).collect();
    let index = assemble_index(&store, &manifests).unwrap();
    Env {
        snap,
        store,
        dir,
        images,
        index,
    }
}

fn read_index(store: &Store, d: &Descriptor) -> Index {
    serde_json::from_slice(&store.read_blob(&d.digest).unwrap()).unwrap()
}

#[test]
fn an_index_is_compressed_per_platform_and_archived_whole() {
    if !require_root().unwrap() {
        return;
    }
    let e = env();
    let stored = read_index(&e.store, &e.index);
    assert_eq!(
        e.index.media_type.as_str(),
        MediaType::OCI_INDEX,
        "an OCI index, as buildx pushes"
    );
    let archs: Vec<_> = stored
        .manifests
        .iter()
        .map(|d| d.platform.as_ref().unwrap().architecture.as_str())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);

    // gzip for distribution: a new index over each platform's gzip manifest, platforms kept.
    let gz = image_variant(&e.store, &e.index, &LayerOptions::default(), 0).unwrap();
    assert_ne!(gz.digest, e.index.digest);
    let gz_index = read_index(&e.store, &gz);
    for (child, (platform, _, local)) in gz_index.manifests.iter().zip(&e.images) {
        assert_ne!(child.digest, local.digest);
        assert_eq!(
            child.platform.as_ref().unwrap().architecture,
            platform.architecture
        );
        let m: Manifest =
            serde_json::from_slice(&e.store.read_blob(&child.digest).unwrap()).unwrap();
        assert_eq!(m.layers[0].media_type.as_str(), MediaType::OCI_LAYER_GZIP);
    }
    // Made once: asking again gives the same index.
    assert_eq!(
        image_variant(&e.store, &e.index, &LayerOptions::default(), 0).unwrap(),
        gz
    );

    // An OCI archive holds the index; skopeo copies one platform out of it.
    let tar = e.dir.path().join("out.tar");
    write_oci(&e.store, &gz, &["multi:1".to_string()], &tar, true).unwrap();
    let arm = e.dir.path().join("arm");
    let out = skopeo("copy", None)
        .unwrap()
        .args(["--override-arch", "arm64", "-q"])
        .arg(format!("oci-archive:{}:1", tar.display()))
        .arg(format!("oci:{}:x", arm.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let layout: Index = serde_json::from_slice(&fs::read(arm.join("index.json")).unwrap()).unwrap();
    let blob = |d: &rbuild_oci::Digest| fs::read(arm.join("blobs/sha256").join(d.hex())).unwrap();
    let m: Manifest = serde_json::from_slice(&blob(&layout.manifests[0].digest)).unwrap();
    let config: ImageConfig = serde_json::from_slice(&blob(&m.config.digest)).unwrap();
    assert_eq!(config.architecture, "arm64");
    let layer_bytes = blob(&m.layers[0].digest);
    let mut layer = tar::Archive::new(flate2::read::GzDecoder::new(&layer_bytes[..]));
    let mut arch = String::new();
    for entry in layer.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap() == Path::new("arch") {
            std::io::Read::read_to_string(&mut entry, &mut arch).unwrap();
        }
    }
    assert_eq!(arch, "aarch64\n");
    // The archive's index.json names the image index itself.
    let dir = e.dir.path().join("oci-dir");
    write_oci(&e.store, &gz, &["multi:1".to_string()], &dir, false).unwrap();
    let top: Index = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(top.manifests.len(), 1);
    assert_eq!(top.manifests[0].digest, gz.digest);
    assert_eq!(top.manifests[0].media_type.as_str(), MediaType::OCI_INDEX);

    // The docker archive refuses, in BuildKit's words.
    let err = write_docker_archive(&e.store, &gz, &[], &e.dir.path().join("d.tar")).unwrap_err();
    assert!(matches!(err, ExportError::ManifestList));
    assert_eq!(
        err.to_string(),
        "docker exporter does not currently support exporting manifest lists"
    );
    assert!(!e.dir.path().join("d.tar").exists());

    // Tagged, the index keeps every platform's blobs reachable.
    e.store.set_tag("multi:1", &e.index).unwrap();
    let reached = e.store.reachable_from_tags().unwrap();
    for (_, _, d) in &e.images {
        let rec = e.store.read_image(&d.digest).unwrap();
        assert!(reached.contains(&d.digest));
        assert!(reached.contains(&rec.manifest.config.digest));
        assert!(rec
            .manifest
            .layers
            .iter()
            .all(|l| reached.contains(&l.digest)));
    }
}

#[test]
fn filesystem_outputs_write_a_directory_per_platform() {
    if !require_root().unwrap() {
        return;
    }
    let e = env();
    let platforms: Vec<_> = e
        .images
        .iter()
        .map(|(p, top, _)| (p.clone(), Some(top.clone())))
        .collect();
    let local = e.dir.path().join("local");
    write_local_platforms(&e.snap, &platforms, &local).unwrap();
    assert_eq!(
        fs::read_to_string(local.join("linux_amd64/arch")).unwrap(),
        "x86_64\n"
    );
    assert_eq!(
        fs::read_to_string(local.join("linux_arm64/arch")).unwrap(),
        "aarch64\n"
    );

    let tar_path = e.dir.path().join("fs.tar");
    write_tar_platforms(&e.snap, &platforms, &tar_path).unwrap();
    let mut names = Vec::new();
    let mut archive = tar::Archive::new(fs::File::open(&tar_path).unwrap());
    for entry in archive.entries().unwrap() {
        names.push(entry.unwrap().path().unwrap().display().to_string());
    }
    let names: Vec<&str> = names.iter().map(|n| n.trim_end_matches('/')).collect();
    assert_eq!(
        names,
        [
            "linux_amd64",
            "linux_amd64/arch",
            "linux_arm64",
            "linux_arm64/arch"
        ]
    );
}

#[test]
fn a_cache_export_holds_every_platforms_results() {
    if !require_root().unwrap() {
        return;
    }
    let e = env();
    // One record per platform's result, as the build's cache export passes them.
    let records: Vec<(String, Option<SnapshotId>)> = e
        .images
        .iter()
        .map(|(p, top, _)| (format!("key-{}", p.architecture), Some(top.clone())))
        .collect();
    let desc = rbuild_exporter::write_cache_manifest(
        &e.store,
        &e.snap,
        &records,
        &[],
        &LayerOptions::default(),
        "amd64",
    )
    .unwrap();
    let layout = e.dir.path().join("cache");
    rbuild_exporter::write_cache_layout(&e.store, &desc, &layout, "latest").unwrap();
    let read =
        |d: &rbuild_oci::Digest| fs::read(layout.join("blobs/sha256").join(d.hex())).unwrap();
    let manifest: Manifest = serde_json::from_slice(&read(&desc.digest)).unwrap();
    let config: rbuild_oci::cache::CacheConfig =
        serde_json::from_slice(&read(&manifest.config.digest)).unwrap();
    let keys: Vec<&str> = config.records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["key-amd64", "key-arm64"]);
    // Each platform's result has its own layer, in the manifest and in its record's chain.
    assert_eq!(manifest.layers.len(), 2);
    assert_eq!(config.records[0].chain, [0]);
    assert_eq!(config.records[1].chain, [1]);
    for (record, (_, top, _)) in config.records.iter().zip(&e.images) {
        let layer = ensure_layer(
            &e.snap,
            &e.store,
            top,
            &LayerOptions {
                compression: Compression::None,
                ..LayerOptions::default()
            },
        )
        .unwrap();
        assert_eq!(config.layers[record.chain[0]].diff_id, layer.diff_id);
    }
}
