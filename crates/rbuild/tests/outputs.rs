//! Output types and layer compression: `compression=gzip|zstd|uncompressed` (+ level and
//! force-compression), compressed variants reused rather than recomputed, and `type=tar`.

use rbuild_testsupport::{need_tool, registry_with_busybox, require_root};
use std::path::Path;
use std::process::Command;

const RBUILD: &str = env!("CARGO_BIN_EXE_rbuild");

fn build(root: &Path, ctx: &Path, base: &str, output: &str) {
    let out = Command::new(RBUILD)
        .arg("--root")
        .arg(root)
        .env(
            "DOCKER_CONFIG",
            rbuild_testsupport::isolated_docker_config(root),
        )
        .args(["build", "-t", "out:1", "--progress=plain", "--build-arg"])
        .arg(format!("BASE={base}"))
        .args(["--output", output])
        .arg(ctx)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn media_types(layout: &Path) -> Vec<String> {
    let store = rbuild_oci::Store::open(layout).unwrap();
    let desc = store.resolve_tag("1").unwrap().expect("tag");
    store
        .read_image(&desc.digest)
        .unwrap()
        .manifest
        .layers
        .iter()
        .map(|l| l.media_type.as_str().to_string())
        .collect()
}

/// Checks every layer of the layout's image `1` with tools other than rbuild: its blob starts
/// with the magic of its media type, the `zstd`/`gzip` CLI decompresses it, `sha256sum` of the
/// result is the config's diff ID, and GNU tar lists it. Returns the layers' media types.
fn check_layers_with_cli(layout: &Path) -> Vec<String> {
    let (zstd, gzip) = (need_tool("zstd").unwrap(), need_tool("gzip").unwrap());
    let blob = |digest: &str| {
        layout
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap())
    };
    let json = |digest: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(blob(digest)).unwrap()).unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = json(index["manifests"][0]["digest"].as_str().unwrap());
    let config = json(manifest["config"]["digest"].as_str().unwrap());
    let layers = manifest["layers"].as_array().unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(layers.len(), diff_ids.len());
    let mut types = Vec::new();
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        let media = layer["mediaType"].as_str().unwrap();
        let path = blob(layer["digest"].as_str().unwrap());
        let bytes = std::fs::read(&path).unwrap();
        let tool = if media.ends_with("+zstd") {
            assert_eq!(
                bytes[..4],
                [0x28, 0xb5, 0x2f, 0xfd],
                "{media}: not a zstd frame"
            );
            Some(&zstd)
        } else if media.ends_with("+gzip") {
            assert_eq!(bytes[..2], [0x1f, 0x8b], "{media}: not gzip");
            Some(&gzip)
        } else {
            assert_eq!(media, "application/vnd.oci.image.layer.v1.tar");
            assert_eq!(
                &bytes[257..262],
                b"ustar",
                "uncompressed layer is not a tar"
            );
            None
        };
        let tar = match tool {
            Some(t) => {
                let out = Command::new(t).arg("-dc").arg(&path).output().unwrap();
                assert!(
                    out.status.success(),
                    "{} -dc {}: {}",
                    t.display(),
                    path.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
                out.stdout
            }
            None => bytes,
        };
        let mut sha = Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut sha.stdin.take().unwrap(), &tar).unwrap();
        let sum = String::from_utf8(sha.wait_with_output().unwrap().stdout).unwrap();
        assert_eq!(
            format!("sha256:{}", sum.split_whitespace().next().unwrap()),
            diff_id.as_str().unwrap(),
            "{media} layer decompressed by {tool:?} is not its diff ID"
        );
        let tar_path = layout.join("layer-check.tar");
        std::fs::write(&tar_path, &tar).unwrap();
        let listed = Command::new("tar")
            .arg("-tf")
            .arg(&tar_path)
            .output()
            .unwrap();
        assert!(
            listed.status.success(),
            "GNU tar cannot list the {media} layer"
        );
        std::fs::remove_file(&tar_path).unwrap();
        types.push(media.to_string());
    }
    types
}

/// GNU tar's listing of the layout's last layer, decompressed by the CLI for its media type.
fn last_layer_file(layout: &Path, name: &str) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |digest: &str| {
        layout
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap())
    };
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let media = layer["mediaType"].as_str().unwrap();
    let flag = if media.ends_with("+zstd") {
        "--zstd"
    } else if media.ends_with("+gzip") {
        "--gzip"
    } else {
        "--no-auto-compress"
    };
    let out = Command::new("tar")
        .args(["-x", "-O", flag, "-f"])
        .arg(blob(layer["digest"].as_str().unwrap()))
        .arg(name)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar {flag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn compression_variants_and_tar_output() {
    if !require_root().unwrap() {
        return;
    }
    let skopeo = need_tool("skopeo").unwrap();
    let (_registry, base) = registry_with_busybox().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM $BASE\nRUN echo zstd-me > /z.txt\n",
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();

    // zstd: built layers are zstd, the pulled base layer keeps its gzip blob (no force).
    let zstd_dir = dest.path().join("zstd");
    build(
        root.path(),
        ctx.path(),
        &base,
        &format!(
            "type=oci,dest={},tar=false,compression=zstd,compression-level=5",
            zstd_dir.display()
        ),
    );
    let types = media_types(&zstd_dir);
    assert_eq!(check_layers_with_cli(&zstd_dir), types);
    assert_eq!(last_layer_file(&zstd_dir, "z.txt"), "zstd-me\n");
    assert_eq!(
        types,
        vec![
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd"
        ]
    );
    let st = Command::new(&skopeo)
        .args(["inspect"])
        .arg(format!("oci:{}:1", zstd_dir.display()))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );

    // force-compression recompresses the base too.
    let forced = dest.path().join("forced");
    build(
        root.path(),
        ctx.path(),
        &base,
        &format!(
            "type=oci,dest={},tar=false,compression=zstd,force-compression=true",
            forced.display()
        ),
    );
    assert!(media_types(&forced).iter().all(|t| t.ends_with("+zstd")));
    assert_eq!(check_layers_with_cli(&forced), media_types(&forced));
    assert_eq!(last_layer_file(&forced, "z.txt"), "zstd-me\n");

    // uncompressed.
    let plain = dest.path().join("plain");
    build(
        root.path(),
        ctx.path(),
        &base,
        &format!(
            "type=oci,dest={},tar=false,compression=uncompressed,force-compression=true",
            plain.display()
        ),
    );
    assert!(media_types(&plain)
        .iter()
        .all(|t| t == "application/vnd.oci.image.layer.v1.tar"));
    assert_eq!(check_layers_with_cli(&plain), media_types(&plain));
    assert_eq!(last_layer_file(&plain, "z.txt"), "zstd-me\n");

    // The zstd blob of the RUN layer is reused, not recomputed, by a later build.
    let store = rbuild_oci::Store::open(root.path()).unwrap();
    let zstd_layer = {
        let s = rbuild_oci::Store::open(&zstd_dir).unwrap();
        let d = s.resolve_tag("1").unwrap().unwrap();
        s.read_image(&d.digest).unwrap().manifest.layers[1]
            .digest
            .clone()
    };
    let before = std::fs::metadata(store.blob_path(&zstd_layer)).unwrap();
    let again = dest.path().join("again");
    build(
        root.path(),
        ctx.path(),
        &base,
        &format!(
            "type=oci,dest={},tar=false,compression=zstd",
            again.display()
        ),
    );
    let after = std::fs::metadata(store.blob_path(&zstd_layer)).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (before.ino(), before.mtime_nsec()),
        (after.ino(), after.mtime_nsec()),
        "blob rewritten"
    );

    // type=tar: the final filesystem as a tarball.
    let tarball = dest.path().join("fs.tar");
    build(
        root.path(),
        ctx.path(),
        &base,
        &format!("type=tar,dest={}", tarball.display()),
    );
    let mut archive = tar::Archive::new(std::fs::File::open(&tarball).unwrap());
    let mut names = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().to_string();
        if name == "z.txt" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut entry, &mut s).unwrap();
            assert_eq!(s, "zstd-me\n");
        }
        names.push(name);
    }
    assert!(
        names.contains(&"bin/busybox".to_string()) && names.contains(&"z.txt".to_string()),
        "{names:?}"
    );
}
