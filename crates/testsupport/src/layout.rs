//! Writing the busybox base image as an OCI image layout: one linux/amd64 image, or an OCI index
//! with one manifest per architecture, tagged `latest`.

use crate::arm64::arm64_busybox_rootfs_tar_bytes;
use crate::busybox::{busybox_config, busybox_rootfs_tar_bytes};
use crate::{io_err, TestError};
use flate2::write::GzEncoder;
use rbuild_oci::{
    canonical_json, Descriptor, DiffId, Digest, Index, Manifest, MediaType, Platform,
    ANNOTATION_REF_NAME,
};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes blobs, `oci-layout` and `index.json` of an OCI image layout directory.
struct LayoutWriter {
    dir: PathBuf,
}

impl LayoutWriter {
    fn new(dir: &Path) -> Result<Self, TestError> {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(io_err("create", &blobs))?;
        let layout = dir.join("oci-layout");
        fs::write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(io_err("write", &layout))?;
        Ok(LayoutWriter {
            dir: dir.to_path_buf(),
        })
    }

    fn blob(&self, media_type: &str, bytes: &[u8]) -> Result<Descriptor, TestError> {
        let digest = Digest::sha256_of(bytes);
        let path = self.dir.join("blobs/sha256").join(digest.hex());
        fs::write(&path, bytes).map_err(io_err("write", &path))?;
        Ok(Descriptor {
            media_type: MediaType::new(media_type),
            digest,
            size: bytes.len() as u64,
            platform: None,
            annotations: None,
        })
    }

    fn json_blob<T: serde::Serialize>(
        &self,
        media_type: &str,
        value: &T,
    ) -> Result<Descriptor, TestError> {
        let bytes = canonical_json(value)
            .map_err(|e| TestError::Other(format!("serialise {media_type}: {e}")))?;
        self.blob(media_type, &bytes)
    }

    fn finish(&self, mut top: Descriptor, tag: &str) -> Result<(), TestError> {
        top.annotations = Some(BTreeMap::from([(
            ANNOTATION_REF_NAME.to_string(),
            tag.to_string(),
        )]));
        let index = Index {
            schema_version: 2,
            media_type: Some(MediaType::new(MediaType::OCI_INDEX)),
            manifests: vec![top],
            annotations: None,
        };
        let bytes = canonical_json(&index)
            .map_err(|e| TestError::Other(format!("serialise index.json: {e}")))?;
        let path = self.dir.join("index.json");
        fs::write(&path, bytes).map_err(io_err("write", &path))
    }
}

/// Writes the gzip layer and per-architecture manifests; returns the manifest descriptors.
fn write_busybox_images(
    w: &LayoutWriter,
    architectures: &[&str],
) -> Result<Vec<Descriptor>, TestError> {
    write_images_of(w, &busybox_rootfs_tar_bytes()?, architectures)
}

/// Writes `tar` as one gzip layer and a manifest per architecture over it.
fn write_images_of(
    w: &LayoutWriter,
    tar: &[u8],
    architectures: &[&str],
) -> Result<Vec<Descriptor>, TestError> {
    let diff_id = DiffId(Digest::sha256_of(tar));
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(tar)
        .and_then(|_| gz.flush())
        .map_err(|e| TestError::Other(format!("gzip: {e}")))?;
    let gz = gz
        .finish()
        .map_err(|e| TestError::Other(format!("gzip: {e}")))?;
    let layer = w.blob(MediaType::OCI_LAYER_GZIP, &gz)?;
    let mut out = Vec::new();
    for arch in architectures {
        let config = w.json_blob(
            MediaType::OCI_CONFIG,
            &busybox_config(arch, diff_id.clone()),
        )?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MediaType::new(MediaType::OCI_MANIFEST)),
            config,
            layers: vec![layer.clone()],
            annotations: None,
        };
        let mut desc = w.json_blob(MediaType::OCI_MANIFEST, &manifest)?;
        desc.platform = Some(Platform {
            architecture: arch.to_string(),
            os: "linux".into(),
            variant: (*arch == "arm64").then(|| "v8".to_string()),
            os_version: None,
        });
        out.push(desc);
    }
    Ok(out)
}

/// Makes an OCI image layout at `dir` (tag `latest`) holding the linux/amd64 busybox base image:
/// one gzip layer with /bin/busybox and all applet links, /etc/passwd, /etc/group, /tmp, /root;
/// Env PATH=... and Cmd ["sh"]. Deterministic: the same busybox binary gives the same digests.
pub fn make_busybox_layout(dir: &Path) -> Result<(), TestError> {
    let w = LayoutWriter::new(dir)?;
    let mut descs = write_busybox_images(&w, &["amd64"])?;
    let mut top = descs.remove(0);
    top.platform = None;
    w.finish(top, "latest")
}

/// Like [`make_busybox_layout`], but tag `latest` is an OCI index with one manifest per architecture
/// (same layer, per-architecture config; `arm64` gets variant `v8`). Push it with
/// [`push_layout`](crate::push_layout).
pub fn make_busybox_index_layout(dir: &Path, architectures: &[&str]) -> Result<Digest, TestError> {
    let w = LayoutWriter::new(dir)?;
    let manifests = write_busybox_images(&w, architectures)?;
    let index = Index {
        schema_version: 2,
        media_type: Some(MediaType::new(MediaType::OCI_INDEX)),
        manifests,
        annotations: None,
    };
    let top = w.json_blob(MediaType::OCI_INDEX, &index)?;
    let digest = top.digest.clone();
    w.finish(top, "latest")?;
    Ok(digest)
}

/// Like [`make_busybox_index_layout`], but a real multi-platform busybox: `latest` is an OCI
/// index of the linux/amd64 image (the host's busybox-static) and the linux/arm64/v8 image
/// (Debian's busybox-static for arm64, see [`arm64_busybox_rootfs_tar_bytes`]), each with its
/// own layer. `None` (skipped loudly) without the arm64 package, unless the environment
/// requires it. Returns the index's digest.
pub fn make_busybox_multiarch_layout(dir: &Path) -> Result<Option<Digest>, TestError> {
    let Some(arm64) = arm64_busybox_rootfs_tar_bytes()? else {
        return Ok(None);
    };
    let w = LayoutWriter::new(dir)?;
    let mut manifests = write_busybox_images(&w, &["amd64"])?;
    manifests.extend(write_images_of(&w, &arm64, &["arm64"])?);
    let index = Index {
        schema_version: 2,
        media_type: Some(MediaType::new(MediaType::OCI_INDEX)),
        manifests,
        annotations: None,
    };
    let top = w.json_blob(MediaType::OCI_INDEX, &index)?;
    let digest = top.digest.clone();
    w.finish(top, "latest")?;
    Ok(Some(digest))
}

/// Like [`make_busybox_layout`], for the arm64 busybox alone: one linux/arm64 image (config
/// `architecture` `arm64`, variant `v8`); `None` (skipped) without the package.
pub fn make_arm64_busybox_layout(dir: &Path) -> Result<Option<()>, TestError> {
    let Some(arm64) = arm64_busybox_rootfs_tar_bytes()? else {
        return Ok(None);
    };
    let w = LayoutWriter::new(dir)?;
    let mut descs = write_images_of(&w, &arm64, &["arm64"])?;
    let mut top = descs.remove(0);
    top.platform = None;
    w.finish(top, "latest").map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{need_tool, BUSYBOX_PATH};
    use rbuild_oci::ImageConfig;

    #[test]
    fn layout_is_deterministic() {
        if need_tool("busybox").is_err() {
            println!("SKIPPED: busybox not installed");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        make_busybox_layout(&t.path().join("a")).unwrap();
        make_busybox_layout(&t.path().join("b")).unwrap();
        let a = fs::read(t.path().join("a/index.json")).unwrap();
        assert_eq!(a, fs::read(t.path().join("b/index.json")).unwrap());
        let index: Index = serde_json::from_slice(&a).unwrap();
        let m: Manifest = serde_json::from_slice(
            &fs::read(
                t.path()
                    .join("a/blobs/sha256")
                    .join(index.manifests[0].digest.hex()),
            )
            .unwrap(),
        )
        .unwrap();
        let c: ImageConfig = serde_json::from_slice(
            &fs::read(t.path().join("a/blobs/sha256").join(m.config.digest.hex())).unwrap(),
        )
        .unwrap();
        assert_eq!(c.env_var("PATH"), Some(BUSYBOX_PATH));
        assert_eq!(c.config.cmd, Some(vec!["sh".to_string()]));
    }
}
