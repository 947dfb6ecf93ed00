//! `RUN --mount=type=secret` values never leave the RUN: not in `--cache-to` exports (local
//! directory and registry, mode=max), nor in a pushed image, nor in `type=docker`, `type=tar`,
//! `type=oci` (tarball) outputs. Every file is searched raw, and again decompressed (gzip, zstd)
//! and unpacked (tar entries, recursively), so a secret inside a compressed layer inside an
//! archive is found. (mounts.rs covers the OCI directory, local outputs and the state root.)

use rbuild_testsupport::{registry_with_busybox, require_root, skopeo};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::{assert_ok, testdata, RBUILD};

const FILE_SECRET: &[u8] = b"rbuild-outputs-secret-FILE-7d41c0b2e9";
const ENV_SECRET: &str = "rbuild-outputs-secret-ENV-93af5e1c08";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Where `needle` occurs in `data` (raw, or after gunzip/unzstd, or in a tar entry, at any
/// depth), as a path of what was unwrapped; `what` names `data` in the result.
fn find(data: &[u8], needle: &[u8], what: &str, unwrapped: &mut usize) -> Option<String> {
    if contains(data, needle) {
        return Some(what.to_string());
    }
    if data.starts_with(&[0x1f, 0x8b]) {
        let mut plain = Vec::new();
        if flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut plain)
            .is_ok()
        {
            *unwrapped += 1;
            return find(&plain, needle, &format!("{what} (gunzipped)"), unwrapped);
        }
    }
    if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        if let Ok(plain) = zstd::decode_all(data) {
            *unwrapped += 1;
            return find(&plain, needle, &format!("{what} (unzstd)"), unwrapped);
        }
    }
    if data.len() > 262 && &data[257..262] == b"ustar" {
        let mut archive = tar::Archive::new(data);
        let entries = archive.entries().ok()?;
        *unwrapped += 1;
        for entry in entries {
            let Ok(mut entry) = entry else { break };
            let name = entry
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let mut body = Vec::new();
            if entry.read_to_end(&mut body).is_err() {
                break;
            }
            if let Some(hit) = find(&body, needle, &format!("{what}!{name}"), unwrapped) {
                return Some(hit);
            }
        }
    }
    None
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let t = e.file_type().unwrap();
        if t.is_dir() {
            files_under(&e.path(), out);
        } else if t.is_file() {
            out.push(e.path());
        }
    }
}

/// Asserts no file below `dir` holds either secret; returns how many files and how many
/// decompressed or unpacked streams were searched (so an empty search shows).
fn assert_no_secret(dir: &Path) -> (usize, usize) {
    let mut files = Vec::new();
    files_under(dir, &mut files);
    let mut unwrapped = 0;
    for f in &files {
        let data = fs::read(f).unwrap();
        for needle in [FILE_SECRET, ENV_SECRET.as_bytes()] {
            let hit = find(&data, needle, &f.display().to_string(), &mut unwrapped);
            assert!(hit.is_none(), "secret found in {}", hit.unwrap_or_default());
        }
    }
    (files.len(), unwrapped)
}

#[test]
fn secrets_are_absent_from_cache_exports_pushes_and_archives() {
    if !require_root().unwrap() {
        return;
    }
    let (registry, base) = registry_with_busybox().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (root, outs, config) = (
        dir.path().join("root"),
        dir.path().join("outs"),
        dir.path().join("docker-config"),
    );
    fs::create_dir_all(&outs).unwrap();
    let secret_file = dir.path().join("tok");
    fs::write(&secret_file, FILE_SECRET).unwrap();
    let image = format!("{}/secret/app:1", registry.addr());
    let cache_ref = format!("{}/secret/cache:1", registry.addr());
    let out = Command::new(RBUILD)
        .arg("--root")
        .arg(&root)
        .env("DOCKER_CONFIG", &config)
        .env("RBUILD_OUTPUTS_TOKEN", ENV_SECRET)
        .args(["build", "--progress=plain", "--push", "-t", &image])
        .arg("--build-arg")
        .arg(format!("BASE={base}"))
        .arg("--secret")
        .arg(format!("id=tok,src={}", secret_file.display()))
        .args(["--secret", "id=envtok,env=RBUILD_OUTPUTS_TOKEN"])
        .arg("--cache-to")
        .arg(format!(
            "type=local,dest={},mode=max",
            outs.join("cache").display()
        ))
        .arg("--cache-to")
        .arg(format!("type=registry,ref={cache_ref},mode=max"))
        .arg("--output")
        .arg(format!(
            "type=docker,dest={}",
            outs.join("docker.tar").display()
        ))
        .arg("--output")
        .arg(format!("type=tar,dest={}", outs.join("fs.tar").display()))
        .arg("--output")
        .arg(format!("type=oci,dest={}", outs.join("oci.tar").display()))
        .arg("--output")
        .arg(format!(
            "type=oci,dest={},tar=false,compression=zstd,force-compression=true",
            outs.join("oci-zstd").display()
        ))
        .arg(testdata("mount-secret"))
        .output()
        .unwrap();
    assert_ok(&out);
    // The secrets were there to leak: the RUNs read them (their hashes are in the image).
    let mut fs_tar = tar::Archive::new(fs::File::open(outs.join("fs.tar")).unwrap());
    let mut hashes = String::new();
    for entry in fs_tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        if name.ends_with("-hash.txt") {
            entry.read_to_string(&mut hashes).unwrap();
        }
    }
    assert!(
        hashes.contains(&rbuild_oci::Digest::sha256_of(FILE_SECRET).hex().to_string())
            && hashes.contains(
                &rbuild_oci::Digest::sha256_of(ENV_SECRET.as_bytes())
                    .hex()
                    .to_string()
            ),
        "the RUNs did not see the secrets: {hashes}"
    );
    for stream in [&out.stdout, &out.stderr] {
        assert!(!contains(stream, FILE_SECRET) && !contains(stream, ENV_SECRET.as_bytes()));
    }

    // The search reaches into layers: the hash a RUN wrote is found in each archive and in the
    // zstd layout.
    let marker = rbuild_oci::Digest::sha256_of(FILE_SECRET).hex().to_string();
    for archive in ["docker.tar", "oci.tar", "fs.tar"] {
        let data = fs::read(outs.join(archive)).unwrap();
        let hit = find(&data, marker.as_bytes(), archive, &mut 0);
        assert!(hit.is_some(), "the search misses {archive}'s content");
    }
    let mut layout_files = Vec::new();
    files_under(&outs.join("oci-zstd"), &mut layout_files);
    assert!(
        layout_files.iter().any(|f| {
            find(&fs::read(f).unwrap(), marker.as_bytes(), "", &mut 0)
                .is_some_and(|hit| hit.contains("(unzstd)"))
        }),
        "the search misses zstd layers"
    );

    // Local outputs and the local cache export.
    let (files, unwrapped) = assert_no_secret(&outs);
    assert!(
        files >= 10 && unwrapped >= 8,
        "{files} files, {unwrapped} streams"
    );
    // Everything the registry stores: the pushed image and the registry cache export.
    let (files, unwrapped) = assert_no_secret(&registry.storage_dir());
    assert!(
        files >= 10 && unwrapped >= 4,
        "{files} files, {unwrapped} streams"
    );
    // (The registry really holds both.)
    for reference in [&image, &cache_ref] {
        let st = skopeo("inspect", None)
            .unwrap()
            .args(["--raw", "--tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{reference}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
}
