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
