//! Shared build cache between machines (`--cache-to` / `--cache-from`): machine A builds and
//! exports its cache (to a registry as an OCI image manifest, or to an OCI layout directory);
//! machine B (a fresh `--root`, the context at another path) imports it and must run no RUN,
//! produce the same image, and download only the blobs the final image needs.

use rbuild_oci::{Descriptor, Digest, Manifest, Store};
use rbuild_testsupport::skopeo;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Output;

mod common;

use common::*;

const EPOCH: &str = "SOURCE_DATE_EPOCH=1700000000";
const CACHE_CONFIG: &str = "application/vnd.rbuild.cache.config.v1+json";

fn write_context(dir: &Path, last_run: &str) {
    fs::create_dir_all(dir).unwrap();
    fs::write(
        dir.join("Dockerfile"),
        format!(
            "ARG BASE\nFROM $BASE\nCOPY app.txt /app.txt\nRUN echo one > /one.txt && cat /app.txt >> /one.txt\nRUN {last_run}\n"
        ),
    )
    .unwrap();
    fs::write(dir.join("app.txt"), "payload\n").unwrap();
}

const LAST_RUN: &str = "echo two > /two.txt && cat /one.txt >> /two.txt";

fn cache_build(root: &Path, ctx: &Path, base: &str, tag: &str, extra: &[&str]) -> Output {
    let mut args = vec!["--build-arg", EPOCH, "-t", tag];
    args.extend_from_slice(extra);
    let out = build(root, ctx, base, &args);
    assert_ok(&out);
    out
}

/// The manifest digest tagged `tag` in the store at `root`.
fn image_of(root: &Path, tag: &str) -> (Digest, rbuild_oci::ImageRecord) {
    let store = Store::open(root).unwrap();
    let desc = store.resolve_tag(tag).unwrap().expect("tagged image");
    (desc.digest.clone(), store.read_image(&desc.digest).unwrap())
}

/// The layers of `record` (stored at `root`) as a cache export or push sends them: built layers
/// (kept uncompressed in the store) as their remembered gzip variants, pulled ones as they are.
fn distributed_layers(root: &Path, record: &rbuild_oci::ImageRecord) -> Vec<Descriptor> {
    let store = Store::open(root).unwrap();
    record
        .manifest
        .layers
        .iter()
        .zip(&record.config.rootfs.diff_ids)
        .map(|(l, diff)| {
            if l.media_type.as_str() == "application/vnd.oci.image.layer.v1.tar" {
                store
                    .variant(&diff.0, rbuild_oci::Compression::Gzip)
                    .expect("a gzip variant of a built layer")
            } else {
                l.clone()
            }
        })
        .collect()
}

/// The digest of A's image as a push or cache export distributes it: the same config and
/// annotations over [`distributed_layers`].
fn distributed_digest(root: &Path, record: &rbuild_oci::ImageRecord) -> Digest {
    let manifest = Manifest {
        layers: distributed_layers(root, record),
        ..record.manifest.clone()
    };
    Digest::sha256_of(&rbuild_oci::canonical_json(&manifest).unwrap())
}

fn blobs_in(root: &Path) -> BTreeSet<String> {
    fs::read_dir(root.join("blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect()
}

fn runs(names: &[String]) -> Vec<&String> {
    names.iter().filter(|n| n.contains("RUN")).collect()
}

/// Machine B: builds from the imported cache without running anything and holds only the final
/// image's blobs (plus the base image's manifest and config, resolved before solving).
fn check_machine_b(base: &str, cache_from: &str, a_digest: &Digest) -> tempfile::TempDir {
    let root_b = tempfile::tempdir().unwrap();
    let ctx_b = tempfile::tempdir().unwrap();
    write_context(&ctx_b.path().join("elsewhere"), LAST_RUN);
    let out = cache_build(
        root_b.path(),
        &ctx_b.path().join("elsewhere"),
        base,
        "sc/app:1",
        &["--cache-from", cache_from],
    );
    let (ran, cached) = ran_and_cached(&out);
    assert!(runs(&ran).is_empty(), "B ran {ran:?}");
    assert!(
        cached.iter().any(|n| n.contains("RUN echo two")),
        "B reported the last RUN cached: {cached:?}"
    );
    let (b_digest, b_record) = image_of(root_b.path(), "sc/app:1");
    // B keeps the cache's gzip layers as they came, so its image is A's as distributed.
    assert_eq!(
        &b_digest, a_digest,
        "B's image differs from A's distributed one"
    );
    let mut needed: BTreeSet<String> = b_record
        .manifest
        .layers
        .iter()
        .map(|l| l.digest.to_string())
        .collect();
    needed.insert(b_digest.to_string());
    needed.insert(b_record.manifest.config.digest.to_string());
    let base_store = Store::open(root_b.path()).unwrap();
    let base_desc = base_store
        .tags()
        .unwrap()
        .into_iter()
        .find(|t| t.name.contains("busybox"))
        .expect("base image tagged");
    let base_record = base_store.read_image(&base_desc.descriptor.digest).unwrap();
    needed.insert(base_desc.descriptor.digest.to_string());
    needed.insert(base_record.manifest.config.digest.to_string());
    let extra: Vec<_> = blobs_in(root_b.path())
        .difference(&needed)
        .cloned()
        .collect();
    assert!(
        extra.is_empty(),
        "B downloaded blobs the image does not need: {extra:?}"
    );
    root_b
}

#[test]
fn registry_cache_mode_max_is_shared_between_machines() {
    let Some(env) = env() else { return };
    let cache_ref = format!("{}/cache:1", env.registry.addr());

    // Machine A.
    let root_a = tempfile::tempdir().unwrap();
    let ctx_a = tempfile::tempdir().unwrap();
    write_context(ctx_a.path(), LAST_RUN);
    let to = format!("type=registry,ref={cache_ref},mode=max");
    let out = cache_build(
        root_a.path(),
        ctx_a.path(),
        &env.base,
        "sc/app:1",
        &["--cache-to", &to],
    );
    let (ran, _) = ran_and_cached(&out);
    assert_eq!(runs(&ran).len(), 2, "A ran {ran:?}");
    let (_, a_record) = image_of(root_a.path(), "sc/app:1");

    // The registry holds an image manifest with a cache config.
    let st = skopeo("inspect", None)
        .unwrap()
        .args(["--raw", "--tls-verify=false"])
        .arg(format!("docker://{cache_ref}"))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let manifest: Manifest = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(
        manifest.media_type.as_ref().map(|m| m.as_str()),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    assert_eq!(manifest.config.media_type.as_str(), CACHE_CONFIG);
    for layer in distributed_layers(root_a.path(), &a_record) {
        assert!(manifest.layers.iter().any(|l| l.digest == layer.digest));
    }
    let st = skopeo("inspect", None)
        .unwrap()
        .args(["--config", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{cache_ref}"))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let config: Value = serde_json::from_slice(&st.stdout).unwrap();
    // mode=max: FROM, COPY and both RUNs.
    let records = config["rbuild.cache.records"].as_array().unwrap();
    assert!(records.len() >= 4, "{config}");

    // Machine B: everything from the cache.
    check_machine_b(
        &env.base,
        &format!("type=registry,ref={cache_ref}"),
        &distributed_digest(root_a.path(), &a_record),
    );

    // Machine C changes the last RUN: the first RUN comes from the cache (its layers are
    // fetched and unpacked as the input of the second), the second runs.
    let root_c = tempfile::tempdir().unwrap();
    let ctx_c = tempfile::tempdir().unwrap();
    write_context(ctx_c.path(), "cat /one.txt > /three.txt");
    let from = format!("type=registry,ref={cache_ref}");
    let out = cache_build(
        root_c.path(),
        ctx_c.path(),
        &env.base,
        "sc/app:3",
        &[
            "--cache-from",
            &from,
            "--output",
            &format!("type=local,dest={}", root_c.path().join("fs").display()),
        ],
    );
    let (ran, cached) = ran_and_cached(&out);
    assert_eq!(runs(&ran).len(), 1, "C ran {ran:?}");
    assert!(ran[0].contains("three"), "C ran {ran:?}");
    assert!(
        runs(&cached).iter().any(|n| n.contains("one")),
        "C cached {cached:?}"
    );
    assert_eq!(
        fs::read_to_string(root_c.path().join("fs/three.txt")).unwrap(),
        "one\npayload\n"
    );
}

#[test]
fn local_cache_mode_min_is_shared_between_machines() {
    let Some(env) = env() else { return };
    let cache_dir = tempfile::tempdir().unwrap();
    let layout = cache_dir.path().join("cache");

    let root_a = tempfile::tempdir().unwrap();
    let ctx_a = tempfile::tempdir().unwrap();
    write_context(ctx_a.path(), LAST_RUN);
    let to = format!("type=local,dest={}", layout.display());
    let out = cache_build(
        root_a.path(),
        ctx_a.path(),
        &env.base,
        "sc/app:1",
        &["--cache-to", &to],
    );
    let (ran, _) = ran_and_cached(&out);
    assert_eq!(runs(&ran).len(), 2, "A ran {ran:?}");
    let (_, a_record) = image_of(root_a.path(), "sc/app:1");

    // An OCI layout whose index names one image manifest with the cache config; mode=min
    // records the final result only, whose layers are exactly the image's.
    let cache = Store::open(&layout).unwrap();
    let tags = cache.tags().unwrap();
    assert_eq!(tags.len(), 1);
    let manifest: Manifest =
        serde_json::from_slice(&cache.read_blob(&tags[0].descriptor.digest).unwrap()).unwrap();
    assert_eq!(manifest.config.media_type.as_str(), CACHE_CONFIG);
    assert_eq!(
        manifest.layers,
        distributed_layers(root_a.path(), &a_record)
    );
    let config: Value =
        serde_json::from_slice(&cache.read_blob(&manifest.config.digest).unwrap()).unwrap();
    assert_eq!(config["rbuild.cache.records"].as_array().unwrap().len(), 1);

    let root_b = check_machine_b(
        &env.base,
        &format!("type=local,src={}", layout.display()),
        &distributed_digest(root_a.path(), &a_record),
    );

    // A later build on B, without --cache-from, hits B's own index.
    let ctx = tempfile::tempdir().unwrap();
    write_context(ctx.path(), LAST_RUN);
    let out = cache_build(root_b.path(), ctx.path(), &env.base, "sc/app:1", &[]);
    let (ran, cached) = ran_and_cached(&out);
    assert!(runs(&ran).is_empty(), "B ran {ran:?}");
    assert!(
        cached.iter().any(|n| n.contains("RUN echo two")),
        "B's own index reports the last RUN cached: {cached:?}"
    );
}

#[test]
fn unreadable_cache_from_is_a_warning() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    write_context(ctx.path(), LAST_RUN);
    let missing = format!("type=registry,ref={}/no-such-cache:1", env.registry.addr());
    let out = cache_build(
        root.path(),
        ctx.path(),
        &env.base,
        "sc/app:w",
        &["--cache-from", &missing],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: failed to import cache from"),
        "{stderr}"
    );
    let (ran, _) = ran_and_cached(&out);
    assert_eq!(runs(&ran).len(), 2, "ran {ran:?}");
    let bad = build(
        root.path(),
        ctx.path(),
        &env.base,
        &["--cache-to", "type=registry,mode=max"],
    );
    let bad_err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{bad_err}");
    assert!(
        bad_err.contains("error: --cache-to `type=registry,mode=max`: type=registry needs ref=REF"),
        "{bad_err}"
    );
}
