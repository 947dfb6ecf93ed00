//! Reading back what a test pushed: one platform's image copied out of the registry with
//! `skopeo copy --override-arch`, its top layer's file and its config's architecture.

use rbuild_oci::{Digest, Index, Manifest};
use rbuild_testsupport::skopeo;
use serde_json::Value;
use std::path::Path;
use std::process::Output;

/// The content of `path` in the top layer of `reference`'s image for `arch` (copied out with
/// `skopeo --override-arch`), and the architecture its config names. The layer must be gzip.
pub fn file_of(reference: &str, arch: &str, path: &str) -> (String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let dest = dir.path().join("img");
    let out = skopeo("copy", None)
        .expect("skopeo")
        .args(["--override-arch", arch, "--src-tls-verify=false", "-q"])
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:x", dest.display()))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |p: &Path| std::fs::read(p).expect("read the copied layout");
    let layout: Index = serde_json::from_slice(&read(&dest.join("index.json"))).expect("index");
    let blob = |d: &Digest| read(&dest.join("blobs/sha256").join(d.hex()));
    let manifest: Manifest =
        serde_json::from_slice(&blob(&layout.manifests[0].digest)).expect("manifest");
    let config: Value = serde_json::from_slice(&blob(&manifest.config.digest)).expect("config");
    let top = manifest.layers.last().expect("a layer");
    assert_eq!(
        top.media_type.as_str(),
        rbuild_oci::MediaType::OCI_LAYER_GZIP
    );
    let bytes = blob(&top.digest);
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let mut text = String::new();
    for entry in tar.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        if entry.path().expect("path") == Path::new(path) {
            std::io::Read::read_to_string(&mut entry, &mut text).expect("read file");
        }
    }
    let arch = config["architecture"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (text, arch)
}

/// The platforms an index lists, read raw by `skopeo inspect --raw SOURCE` (a transport
/// reference: `docker://...` on a loopback registry without TLS, `oci-archive:...`).
pub fn index_platforms(source: &str) -> Vec<String> {
    let mut cmd = skopeo("inspect", None).expect("skopeo");
    cmd.arg("--raw");
    if source.starts_with("docker://") {
        cmd.arg("--tls-verify=false");
    }
    let out: Output = cmd.arg(source).output().expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index: Index = serde_json::from_slice(&out.stdout).expect("an index");
    (index.manifests.iter())
        .filter_map(|m| m.platform.as_ref().map(|p| p.to_string()))
        .collect()
}
