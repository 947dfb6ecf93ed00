//! Integration tests of the exporter on real snapshots (overlayfs where the kernel allows it):
//! layer blobs and their caching, reproducibility, OCI layout / archives checked with umoci and
//! skopeo, and the local filesystem output.
//!
//! Every test needs root (mounts, chown, setuid bits): it prints `SKIPPED: needs root` otherwise,
//! or fails when `RBUILD_REQUIRE_ROOT=1`.

use rbuild_exporter::{
    assemble_image, ensure_layer, write_docker_archive, write_local, write_oci, Layer, LayerOptions,
};
use rbuild_oci::{Digest, ImageConfig, MediaType, RunConfig, Store, LAYER_LABEL_GZIP};
use rbuild_snapshotter::{SnapshotId, Snapshotter};
use rbuild_testsupport::{files_below, need_tool, require_root};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A snapshotter and a content store in one temp dir (fields drop in order: store/snapshotter
/// before the directory).
struct Env {
    snap: Snapshotter,
    store: Store,
    dir: tempfile::TempDir,
}

fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = Snapshotter::open(&dir.path().join("snapshots")).expect("open snapshotter");
    let store = Store::open(&dir.path().join("store")).expect("open store");
    eprintln!("snapshotter backend: {:?}", snap.backend());
    Env { snap, store, dir }
}

fn root_or_skip() -> bool {
    require_root().expect("root check")
}

/// Prepares a snapshot on `parent`, runs `f` on its mounted tree, unmounts and commits it.
fn commit_with(
    snap: &Snapshotter,
    parent: Option<&SnapshotId>,
    f: impl FnOnce(&Path),
) -> SnapshotId {
    let active = snap.prepare(parent).expect("prepare");
    {
        let mount = active.mount().expect("mount");
        f(mount.path());
    }
    snap.commit(active).expect("commit")
}

fn write_file(path: &Path, data: &[u8], mode: u32) {
    fs::write(path, data).unwrap();
    // chmod after writing: a write would clear a setuid bit.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn make_dir(path: &Path, mode: u32) {
    fs::create_dir(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

const TOOL: &[u8] = b"#!/bin/sh\necho tool\n";

/// Base layer: dirs, a setuid file, a 0600 file, a symlink, a chowned file, files to delete later.
fn base_content(root: &Path) {
    make_dir(&root.join("bin"), 0o755);
    write_file(&root.join("bin/tool"), TOOL, 0o4755);
    make_dir(&root.join("etc"), 0o755);
    write_file(&root.join("etc/secret"), b"s3cret\n", 0o600);
    std::os::unix::fs::symlink("secret", root.join("etc/link")).unwrap();
    write_file(&root.join("etc/old.conf"), b"old\n", 0o644);
    write_file(&root.join("etc/owned"), b"owned\n", 0o640);
    std::os::unix::fs::chown(root.join("etc/owned"), Some(1234), Some(5678)).unwrap();
    make_dir(&root.join("data"), 0o750);
    write_file(&root.join("data/keep.txt"), b"keep\n", 0o644);
    write_file(&root.join("gone.txt"), b"gone\n", 0o644);
}

/// Top layer: deletes a base file at the root and one in a subdir, adds a file.
fn top_content(root: &Path) {
    fs::remove_file(root.join("gone.txt")).unwrap();
    fs::remove_file(root.join("etc/old.conf")).unwrap();
    write_file(&root.join("new.txt"), b"new\n", 0o640);
}

/// base + top snapshots.
fn two_snapshots(snap: &Snapshotter) -> (SnapshotId, SnapshotId) {
    let base = commit_with(snap, None, base_content);
    let top = commit_with(snap, Some(&base), top_content);
    (base, top)
}

#[derive(Debug, Clone, PartialEq)]
struct TarEntry {
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: Option<String>,
    data: Vec<u8>,
}

/// Entries of an uncompressed tar in archive order (directory names without the trailing `/`).
fn tar_entries(tar_bytes: &[u8]) -> Vec<(String, TarEntry)> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let name = name.trim_end_matches('/').to_string();
        let header = entry.header().clone();
        let link = entry
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned());
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.push((
            name,
            TarEntry {
                kind: header.entry_type(),
                mode: header.mode().unwrap(),
                uid: header.uid().unwrap(),
                gid: header.gid().unwrap(),
                mtime: header.mtime().unwrap(),
                link,
                data,
            },
        ));
    }
    out
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

/// Checks the stored blob of `layer` against its descriptor and diff ID; returns the tar bytes.
fn verify_blob(store: &Store, layer: &Layer) -> Vec<u8> {
    assert_eq!(
        layer.descriptor.media_type.as_str(),
        MediaType::OCI_LAYER_GZIP
    );
    let blob = store
        .read_blob(&layer.descriptor.digest)
        .expect("blob in store");
    assert_eq!(
        Digest::sha256_of(&blob),
        layer.descriptor.digest,
        "blob digest"
    );
    assert_eq!(blob.len() as u64, layer.descriptor.size, "blob size");
    let tar = gunzip(&blob);
    assert_eq!(
        Digest::sha256_of(&tar),
        layer.diff_id.0,
        "diff id = sha256 of the uncompressed tar"
    );
    tar
}

fn names(entries: &[(String, TarEntry)]) -> Vec<&str> {
    entries.iter().map(|(n, _)| n.as_str()).collect()
}

fn entry<'a>(entries: &'a [(String, TarEntry)], name: &str) -> &'a TarEntry {
    &entries
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no tar entry {name} in {:?}", names(entries)))
        .1
}

#[test]
fn ensure_layer_blob_matches_descriptor_and_diff_id() {
    if !root_or_skip() {
        return;
    }
    let e = env();
    let (base, top) = two_snapshots(&e.snap);
    let opts = LayerOptions::default();

    let l1 = ensure_layer(&e.snap, &e.store, &base, &opts).expect("base layer");
    let entries = tar_entries(&verify_blob(&e.store, &l1));
    assert_eq!(
        names(&entries),
        [
            "bin",
            "bin/tool",
            "data",
            "data/keep.txt",
            "etc",
            "etc/link",
            "etc/old.conf",
            "etc/owned",
            "etc/secret",
            "gone.txt"
        ],
        "base layer entries (sorted, depth first)"
    );
    let tool = entry(&entries, "bin/tool");
    assert_eq!(tool.kind, tar::EntryType::Regular);
    assert_eq!(tool.mode, 0o4755);
    assert_eq!(tool.data, TOOL);
    let secret = entry(&entries, "etc/secret");
    assert_eq!(
        (secret.kind, secret.mode, secret.data.as_slice()),
        (tar::EntryType::Regular, 0o600, &b"s3cret\n"[..])
    );
    let link = entry(&entries, "etc/link");
    assert_eq!(link.kind, tar::EntryType::Symlink);
    assert_eq!(link.link.as_deref(), Some("secret"));
    let data = entry(&entries, "data");
    assert_eq!((data.kind, data.mode), (tar::EntryType::Directory, 0o750));
    let owned = entry(&entries, "etc/owned");
    assert_eq!((owned.uid, owned.gid, owned.mode), (1234, 5678, 0o640));
    assert_eq!((secret.uid, secret.gid), (0, 0));

    let l2 = ensure_layer(&e.snap, &e.store, &top, &opts).expect("top layer");
    assert_ne!(l1.diff_id, l2.diff_id);
    assert_ne!(l1.descriptor.digest, l2.descriptor.digest);
    let entries = tar_entries(&verify_blob(&e.store, &l2));
    assert_eq!(
        names(&entries),
        [".wh.gone.txt", "etc", "etc/.wh.old.conf", "new.txt"],
        "top layer entries"
    );
    for wh in [".wh.gone.txt", "etc/.wh.old.conf"] {
        let w = entry(&entries, wh);
        assert_eq!(
            w.kind,
            tar::EntryType::Regular,
            "{wh} is an empty regular file"
        );
        assert!(w.data.is_empty());
    }
    let new = entry(&entries, "new.txt");
    assert_eq!((new.mode, new.data.as_slice()), (0o640, &b"new\n"[..]));
    assert_eq!(entry(&entries, "etc").kind, tar::EntryType::Directory);

    // Nothing left behind in the store's temp dir.
    assert_eq!(
        fs::read_dir(e.store.root().join("tmp/blobs").join(e.store.owner()))
            .unwrap()
            .count(),
        0
    );
}

fn blob_stamp(store: &Store, layer: &Layer) -> (u64, i64, i64) {
    let md = fs::metadata(store.blob_path(&layer.descriptor.digest)).unwrap();
    (md.ino(), md.mtime(), md.mtime_nsec())
}

#[test]
fn ensure_layer_is_cached_in_a_label_and_recreated_when_the_blob_is_gone() {
    if !root_or_skip() {
        return;
    }
    let e = env();
    let (base, _top) = two_snapshots(&e.snap);
    let opts = LayerOptions::default();

    assert_eq!(e.snap.label(&base, LAYER_LABEL_GZIP).unwrap(), None);
    let first = ensure_layer(&e.snap, &e.store, &base, &opts).unwrap();
    let label = e
        .snap
        .label(&base, LAYER_LABEL_GZIP)
        .unwrap()
        .expect("label set after the first call");
    let from_label: Layer = serde_json::from_str(&label).unwrap();
    assert_eq!(from_label, first);
    let stamp = blob_stamp(&e.store, &first);

    std::thread::sleep(std::time::Duration::from_millis(20));
    let second = ensure_layer(&e.snap, &e.store, &base, &opts).unwrap();
    assert_eq!(second, first);
    assert_eq!(
        blob_stamp(&e.store, &second),
        stamp,
        "blob was not rewritten"
    );

    // The label is trusted while its blob exists: no diff is computed (a fake label pointing at
    // some other stored blob is returned as is).
    let (fake_digest, fake_size) = e.store.write_blob(b"not really a layer").unwrap();
    let mut fake = first.clone();
    fake.descriptor.digest = fake_digest.clone();
    fake.descriptor.size = fake_size;
    e.snap
        .set_label(
            &base,
            LAYER_LABEL_GZIP,
            &serde_json::to_string(&fake).unwrap(),
        )
        .unwrap();
    assert_eq!(ensure_layer(&e.snap, &e.store, &base, &opts).unwrap(), fake);

    // Once the labelled blob is gone, the layer is made again (same bytes: the diff is
    // deterministic) and the label is repaired.
    fs::remove_file(e.store.blob_path(&fake_digest)).unwrap();
    let again = ensure_layer(&e.snap, &e.store, &base, &opts).unwrap();
    assert_eq!(again, first);
    let repaired: Layer =
        serde_json::from_str(&e.snap.label(&base, LAYER_LABEL_GZIP).unwrap().unwrap()).unwrap();
    assert_eq!(repaired, first);

    // Deleting the real blob: the next call recreates it with the same content.
    fs::remove_file(e.store.blob_path(&first.descriptor.digest)).unwrap();
    assert!(!e.store.has_blob(&first.descriptor.digest));
    let recreated = ensure_layer(&e.snap, &e.store, &base, &opts).unwrap();
    assert_eq!(recreated, first);
    assert!(e.store.has_blob(&first.descriptor.digest));
    verify_blob(&e.store, &recreated);
    // (Inode and mtime together: a freed inode number may be reused at once.)
    assert_ne!(
        blob_stamp(&e.store, &recreated),
        stamp,
        "a new blob file was written"
    );

    // A SOURCE_DATE_EPOCH layer is cached under its own label and leaves the plain one alone.
    let sde = ensure_layer(
        &e.snap,
        &e.store,
        &base,
        &LayerOptions {
            source_date_epoch: Some(0),
            ..Default::default()
        },
    )
    .unwrap();
    verify_blob(&e.store, &sde);
    assert_ne!(sde.diff_id, first.diff_id, "clamped mtimes change the tar");
    let labels = e.snap.labels(&base).unwrap();
    assert!(
        labels.contains_key(&format!("{LAYER_LABEL_GZIP}.sde0")),
        "labels: {labels:?}"
    );
    let plain: Layer = serde_json::from_str(&labels[LAYER_LABEL_GZIP]).unwrap();
    assert_eq!(plain, first);
    assert_eq!(
        ensure_layer(&e.snap, &e.store, &base, &opts).unwrap(),
        first
    );
}

#[test]
fn source_date_epoch_layers_are_reproducible_across_roots() {
    if !root_or_skip() {
        return;
    }
    let opts = LayerOptions {
        source_date_epoch: Some(0),
        ..Default::default()
    };
    let mut results = Vec::new();
    for round in 0..2 {
        let e = env();
        let (base, top) = two_snapshots(&e.snap);
        let l1 = ensure_layer(&e.snap, &e.store, &base, &opts).unwrap();
        let l2 = ensure_layer(&e.snap, &e.store, &top, &opts).unwrap();
        for l in [&l1, &l2] {
            let entries = tar_entries(&verify_blob(&e.store, l));
            for (name, ent) in &entries {
                assert_eq!(
                    ent.mtime, 0,
                    "round {round}: {name} mtime clamped to SOURCE_DATE_EPOCH"
                );
            }
        }
        results.push((l1, l2));
        // Different wall-clock mtimes in the second round.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_eq!(
        results[0], results[1],
        "same content -> same diff ids and blob digests"
    );
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn image_config() -> ImageConfig {
    ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: RunConfig {
            env: Some(vec!["PATH=/usr/bin:/bin".into(), "FOO=bar".into()]),
            cmd: Some(vec!["/bin/tool".into(), "--flag".into()]),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Builds the two-layer image in `e`'s store; returns (manifest descriptor, layers, top snapshot).
fn build_image(e: &Env) -> (rbuild_oci::Descriptor, Vec<Layer>, SnapshotId) {
    let (base, top) = two_snapshots(&e.snap);
    let opts = LayerOptions::default();
    let layers = vec![
        ensure_layer(&e.snap, &e.store, &base, &opts).unwrap(),
        ensure_layer(&e.snap, &e.store, &top, &opts).unwrap(),
    ];
    let (desc, manifest) = assemble_image(&e.store, image_config(), &layers).unwrap();
    assert_eq!(
        manifest.layers,
        layers
            .iter()
            .map(|l| l.descriptor.clone())
            .collect::<Vec<_>>()
    );
    let record = e.store.read_image(&desc.digest).unwrap();
    assert_eq!(record.config.rootfs.kind, "layers");
    assert_eq!(
        record.config.rootfs.diff_ids,
        layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()
    );
    (desc, layers, top)
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// The merged filesystem of the test image, as unpacked somewhere.
fn assert_final_tree(root: &Path) {
    assert_eq!(fs::read(root.join("bin/tool")).unwrap(), TOOL);
    assert_eq!(mode_of(&root.join("bin/tool")), 0o4755);
    assert_eq!(fs::read(root.join("etc/secret")).unwrap(), b"s3cret\n");
    assert_eq!(mode_of(&root.join("etc/secret")), 0o600);
    assert_eq!(
        fs::read_link(root.join("etc/link")).unwrap(),
        PathBuf::from("secret")
    );
    assert!(fs::symlink_metadata(root.join("etc/link"))
        .unwrap()
        .file_type()
        .is_symlink());
    let owned = fs::metadata(root.join("etc/owned")).unwrap();
    assert_eq!(
        (owned.uid(), owned.gid(), owned.mode() & 0o7777),
        (1234, 5678, 0o640)
    );
    assert_eq!(mode_of(&root.join("data")), 0o750);
    assert_eq!(fs::read(root.join("data/keep.txt")).unwrap(), b"keep\n");
    assert_eq!(fs::read(root.join("new.txt")).unwrap(), b"new\n");
    assert_eq!(mode_of(&root.join("new.txt")), 0o640);
    assert!(
        fs::symlink_metadata(root.join("gone.txt")).is_err(),
        "whited-out gone.txt must not exist"
    );
    assert!(
        fs::symlink_metadata(root.join("etc/old.conf")).is_err(),
        "whited-out etc/old.conf must not exist"
    );
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for ent in fs::read_dir(&dir).unwrap() {
            let ent = ent.unwrap();
            let name = ent.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(".wh."),
                "whiteout {} leaked",
                ent.path().display()
            );
            if ent.file_type().unwrap().is_dir() {
                stack.push(ent.path());
            }
        }
    }
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("bad JSON ({e}): {s}"))
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn oci_layout_dir_and_tar_are_readable_by_umoci_and_skopeo() {
    if !root_or_skip() {
        return;
    }
    need_tool("umoci").unwrap();
    need_tool("skopeo").unwrap();
    let e = env();
    let (desc, layers, _top) = build_image(&e);
    let tag = "myapp:latest";
    e.store.set_tag(tag, &desc).unwrap();
    let tagged = e.store.resolve_tag(tag).unwrap().expect("tag resolves");
    assert_eq!(tagged.digest, desc.digest);
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
    let blob_digests: Vec<String> = layers
        .iter()
        .map(|l| l.descriptor.digest.to_string())
        .collect();

    // The local store keeps full names as its refs; skopeo and umoci read them.
    let store_ref = format!("oci:{}:{tag}", e.store.root().display());
    let inspect = json(&run(Command::new("skopeo").arg("inspect").arg(&store_ref)));
    assert_eq!(
        inspect["Digest"].as_str(),
        Some(desc.digest.to_string().as_str())
    );
    let store_bundle = e.dir.path().join("store-bundle");
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", e.store.root().display()))
        .arg(&store_bundle));
    assert_final_tree(&store_bundle.join("rootfs"));

    // Outputs name entries as BuildKit (containerd's exporter) does: the tag alone as ref name.
    let tag = "latest";
    // Directory layout.
    let layout = e.dir.path().join("layout");
    write_oci(&e.store, &desc, &["myapp".to_string()], &layout, false).unwrap();
    let cfg = json(&run(Command::new("skopeo")
        .arg("inspect")
        .arg("--config")
        .arg(format!("oci:{}:{tag}", layout.display()))));
    assert_eq!(
        strings(&cfg["config"]["Env"]),
        ["PATH=/usr/bin:/bin", "FOO=bar"]
    );
    assert_eq!(strings(&cfg["config"]["Cmd"]), ["/bin/tool", "--flag"]);
    assert_eq!(strings(&cfg["rootfs"]["diff_ids"]), diff_ids);
    let inspect = json(&run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:{tag}", layout.display()))));
    assert_eq!(strings(&inspect["Layers"]), blob_digests);
    assert_eq!(
        inspect["Digest"].as_str(),
        Some(desc.digest.to_string().as_str())
    );

    let bundle = e.dir.path().join("bundle");
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle));
    assert_final_tree(&bundle.join("rootfs"));

    // Tarball layout.
    let archive = e.dir.path().join("image.oci.tar");
    write_oci(&e.store, &desc, &["myapp".to_string()], &archive, true).unwrap();
    let inspect = json(&run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}:{tag}", archive.display()))));
    assert_eq!(strings(&inspect["Layers"]), blob_digests);
    assert_eq!(
        inspect["Env"],
        serde_json::json!(["PATH=/usr/bin:/bin", "FOO=bar"])
    );
    let cfg = json(&run(Command::new("skopeo")
        .arg("inspect")
        .arg("--config")
        .arg(format!("oci-archive:{}:{tag}", archive.display()))));
    assert_eq!(strings(&cfg["rootfs"]["diff_ids"]), diff_ids);
    // Strict tar readers accept every header (all numeric fields are octal numbers), and the
    // blobs in the archive are the store's.
    let files = tar_files(&archive);
    assert_eq!(files["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
    let index = json(std::str::from_utf8(&files["index.json"]).unwrap());
    assert_eq!(
        index["manifests"][0]["digest"].as_str(),
        Some(desc.digest.to_string().as_str())
    );
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"].as_str(),
        Some(tag)
    );
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"].as_str(),
        Some("docker.io/library/myapp:latest")
    );
    for layer in &layers {
        let data = &files[&format!("blobs/sha256/{}", layer.descriptor.digest.hex())];
        assert_eq!(Digest::sha256_of(data), layer.descriptor.digest);
    }
    // No temp file left next to the output.
    assert!(!archive.with_extension("rbuild-tmp").exists());
}

/// The files of an (uncompressed) tar archive on disk.
fn tar_files(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let bytes = fs::read(path).unwrap();
    tar_entries(&bytes)
        .into_iter()
        .map(|(n, e)| (n, e.data))
        .collect()
}

#[test]
fn docker_archive_is_readable_by_skopeo_and_tags_get_latest() {
    if !root_or_skip() {
        return;
    }
    need_tool("skopeo").unwrap();
    let e = env();
    let (desc, layers, _top) = build_image(&e);
    let archive = e.dir.path().join("image.docker.tar");
    write_docker_archive(&e.store, &desc, &["myapp".to_string()], &archive).unwrap();

    let files = tar_files(&archive);
    let manifest = json(std::str::from_utf8(&files["manifest.json"]).unwrap());
    let entries = manifest.as_array().expect("manifest.json is an array");
    assert_eq!(entries.len(), 1);
    assert_eq!(strings(&entries[0]["RepoTags"]), ["myapp:latest"]);
    let config_path = entries[0]["Config"].as_str().unwrap();
    let config = json(std::str::from_utf8(&files[config_path]).unwrap());
    assert_eq!(
        strings(&config["rootfs"]["diff_ids"]),
        layers
            .iter()
            .map(|l| l.diff_id.to_string())
            .collect::<Vec<_>>()
    );
    let layer_paths = strings(&entries[0]["Layers"]);
    assert_eq!(layer_paths.len(), 2);
    for (path, layer) in layer_paths.iter().zip(&layers) {
        let data = files
            .get(path)
            .unwrap_or_else(|| panic!("{path} listed in manifest.json but not in the archive"));
        assert_eq!(Digest::sha256_of(data), layer.descriptor.digest);
    }

    let inspect = json(&run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("docker-archive:{}", archive.display()))));
    assert_eq!(strings(&inspect["Layers"]).len(), 2, "inspect: {inspect}");
    assert_eq!(
        inspect["Env"],
        serde_json::json!(["PATH=/usr/bin:/bin", "FOO=bar"])
    );
    let cfg = json(&run(Command::new("skopeo")
        .arg("inspect")
        .arg("--config")
        .arg(format!("docker-archive:{}", archive.display()))));
    assert_eq!(strings(&cfg["config"]["Cmd"]), ["/bin/tool", "--flag"]);
    // The tagged name also works as a docker-archive reference.
    run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("docker-archive:{}:myapp:latest", archive.display())));
    assert!(!archive.with_extension("rbuild-tmp").exists());
}

#[test]
fn write_local_copies_the_merged_filesystem() {
    if !root_or_skip() {
        return;
    }
    let e = env();
    let (_base, top) = two_snapshots(&e.snap);
    let dest = e.dir.path().join("out/local");
    write_local(&e.snap, Some(&top), &dest).unwrap();
    assert_final_tree(&dest);

    // No views stay mounted.
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = e.snap.root().to_string_lossy().into_owned();
    assert!(!mounts.contains(&root), "a view of {root} is still mounted");

    // An empty image gives an empty directory.
    let empty = e.dir.path().join("empty");
    write_local(&e.snap, None, &empty).unwrap();
    assert_eq!(fs::read_dir(&empty).unwrap().count(), 0);
}

#[test]
fn a_canceled_layer_stops_midway_and_leaves_nothing() {
    if !root_or_skip() {
        return;
    }
    let e = env();
    // Incompressible data, so the layer is still being written when the flag is raised.
    let mut noise = vec![0u8; 48 << 20];
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut noise)
        .unwrap();
    let id = commit_with(&e.snap, None, |root| {
        write_file(&root.join("noise"), &noise, 0o644)
    });
    let flag = Arc::new(AtomicBool::new(false));
    let opts = LayerOptions {
        cancel: Some(flag.clone()),
        ..Default::default()
    };
    let tmp = e.dir.path().join("store/tmp/blobs");
    let blobs = e.dir.path().join("store/blobs/sha256");
    let before = files_below(&blobs);
    let watcher = {
        let (flag, tmp) = (flag.clone(), tmp.clone());
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            while files_below(&tmp) == 0 && start.elapsed() < std::time::Duration::from_secs(60) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            flag.store(true, Ordering::SeqCst);
        })
    };
    let r = ensure_layer(&e.snap, &e.store, &id, &opts);
    watcher.join().unwrap();
    assert!(
        matches!(r, Err(rbuild_exporter::ExportError::Canceled)),
        "{r:?}"
    );
    assert_eq!(files_below(&tmp), 0, "the temp blob was left behind");
    assert_eq!(files_below(&blobs), before, "a canceled layer was stored");
    assert!(
        e.snap.labels(&id).unwrap().is_empty(),
        "a canceled layer was labelled"
    );
    // Without the flag the same layer is made as usual.
    flag.store(false, Ordering::SeqCst);
    let layer = ensure_layer(&e.snap, &e.store, &id, &opts).unwrap();
    verify_blob(&e.store, &layer);
}
