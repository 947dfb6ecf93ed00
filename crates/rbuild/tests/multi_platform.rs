//! Multi-platform builds (`--platform linux/amd64,linux/arm64`) against a real registry serving
//! a busybox index with both platforms: one solve for every target, a `FROM
//! --platform=$BUILDPLATFORM` builder stage that runs once natively, per-platform final stages
//! `FROM scratch`, the automatic platform ARGs in the files, an OCI index in the store with each
//! platform's manifest and config, bases resolved per platform, BuildKit's error for a platform
//! an index lacks, and the cache round trip. (RUN in a foreign-architecture stage needs
//! emulation and is tested with it.)

use rbuild_oci::{Descriptor, Index, Manifest, Platform, Store};
use rbuild_testsupport::{make_busybox_index_layout, push_layout, require_root, TestRegistry};
use std::fs;
use std::path::Path;
use std::process::Output;

mod common;

use common::stored::{file_in_image, read_json};
use common::{assert_ok, events, rbuild_at, stderr_text};

/// A registry serving `ADDR/busybox:multi`, an index of linux/amd64 and linux/arm64/v8.
fn registry_with_multi_busybox() -> (TestRegistry, String) {
    let reg = TestRegistry::start().expect("registry");
    let tmp = tempfile::tempdir().expect("tmp");
    let layout = tmp.path().join("layout");
    make_busybox_index_layout(&layout, &["amd64", "arm64"]).expect("layout");
    let reference = format!("{}/busybox:multi", reg.addr());
    push_layout(&layout, &reference).expect("push");
    (reg, reference)
}

fn build(root: &Path, ctx: &Path, args: &[&str]) -> Output {
    rbuild_at(root)
        .args(["build", "--progress=json"])
        .args(args)
        .arg(ctx)
        .output()
        .expect("run rbuild")
}

/// The descriptor a store name points at.
fn tagged(root: &Path, name: &str) -> Descriptor {
    let store = Store::open(root).expect("store");
    store
        .resolve_tag(name)
        .expect("index.json")
        .unwrap_or_else(|| panic!("{name} is not tagged"))
}

/// How many times a step whose name contains `step` was started (executed).
fn runs_of(out: &Output, step: &str) -> usize {
    events(out)
        .iter()
        .filter(|e| e["event"] == "started" && !e["cache_key"].is_null())
        .filter(|e| e["name"].as_str().is_some_and(|n| n.contains(step)))
        .count()
}

fn step_names(out: &Output) -> Vec<String> {
    let mut names: Vec<String> = events(out)
        .iter()
        .filter_map(|e| e["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The manifest digest the build's FROM step was pinned to.
fn from_digest(out: &Output) -> String {
    let from = step_names(out)
        .into_iter()
        .find(|n| n.contains("FROM ") && n.contains('@'))
        .expect("FROM step");
    from.rsplit('@').next().expect("digest").trim().to_string()
}

const CROSS: &str = "FROM --platform=$BUILDPLATFORM BASE AS build
RUN echo built-once >> /common
ARG TARGETARCH
ARG TARGETPLATFORM
RUN mkdir -p /out && echo \"$TARGETARCH $TARGETPLATFORM $(uname -m)\" > /out/arch
FROM scratch
ARG TARGETOS
COPY --from=build /common /common
COPY --from=build /out/arch /arch
";

#[test]
fn a_cross_compiling_build_runs_its_builder_once_and_stores_an_index() {
    if !require_root().expect("root check") {
        return;
    }
    let (_registry, base) = registry_with_multi_busybox();
    let root = tempfile::tempdir().expect("root");
    let ctx = tempfile::tempdir().expect("ctx");
    fs::write(ctx.path().join("Dockerfile"), CROSS.replace("BASE", &base)).expect("write");
    let iid = root.path().join("iid");
    let iidfile = iid.display().to_string();
    let args = [
        "--platform",
        "linux/amd64,linux/arm64",
        "-t",
        "cross:1",
        "--iidfile",
        &iidfile,
    ];
    let out = build(root.path(), ctx.path(), &args);
    assert_ok(&out);
    // The builder's common RUN ran once, natively, for both targets; its TARGETARCH step once
    // per target (its environment differs), still on the build platform.
    assert_eq!(
        runs_of(&out, "RUN echo built-once"),
        1,
        "{:?}",
        step_names(&out)
    );
    assert_eq!(
        runs_of(&out, "RUN mkdir -p /out"),
        2,
        "{:?}",
        step_names(&out)
    );
    let names = step_names(&out);
    // BuildKit's platform prefixes (`->arm64`: the stage declared the target's ARGs).
    for expected in [
        "[linux/amd64 build 2/3] RUN echo built-once >> /common",
        "[linux/amd64 build 3/3] RUN mkdir -p /out && echo \"amd64 linux/amd64 $(uname -m)\" > /out/arch",
        "[linux/amd64->arm64 build 3/3] RUN mkdir -p /out && echo \"arm64 linux/arm64 $(uname -m)\" > /out/arch",
        "[linux/arm64 stage-1 2/2] COPY --from=build /out/arch /arch",
        "[linux/amd64 internal] load metadata for ",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(expected)),
            "no step `{expected}` in {names:#?}"
        );
    }
    // The stored image is an OCI index with both platforms.
    let desc = tagged(root.path(), "cross:1");
    assert_eq!(desc.media_type.0, "application/vnd.oci.image.index.v1+json");
    // The image ID of a multi-platform build is its index's digest (buildx).
    assert_eq!(
        fs::read_to_string(&iid).expect("iidfile"),
        desc.digest.to_string()
    );
    let index: Index = read_json(root.path(), &desc);
    let platforms: Vec<String> = index
        .manifests
        .iter()
        .map(|d| d.platform.as_ref().expect("platform").to_string())
        .collect();
    assert_eq!(platforms, vec!["linux/amd64", "linux/arm64"]);
    let host_arch = std::env::consts::ARCH;
    for (entry, arch) in index.manifests.iter().zip(["amd64", "arm64"]) {
        let manifest: Manifest = read_json(root.path(), entry);
        let config: rbuild_oci::ImageConfig = read_json(root.path(), &manifest.config);
        assert_eq!(
            (config.os.as_str(), config.architecture.as_str()),
            ("linux", arch)
        );
        let seen = file_in_image(root.path(), &manifest, "arch").expect("/arch");
        assert_eq!(seen.trim(), format!("{arch} linux/{arch} {host_arch}"));
        let common = file_in_image(root.path(), &manifest, "common").expect("/common");
        assert_eq!(common, "built-once\n");
        assert!(
            Platform::new("linux", arch, None).same_as(entry.platform.as_ref().expect("platform"))
        );
    }
    // Built again: every step cached, the same index.
    let again = build(root.path(), ctx.path(), &args);
    assert_ok(&again);
    assert_eq!(runs_of(&again, "RUN"), 0, "{:?}", step_names(&again));
    assert_eq!(tagged(root.path(), "cross:1").digest, desc.digest);
    // Outputs of the index, as buildx writes them: a directory per platform for type=local,
    // an OCI archive holding the index for type=oci (read back with skopeo).
    let local = root.path().join("local");
    let oci = root.path().join("image.oci.tar");
    let outputs = [
        format!("type=local,dest={}", local.display()),
        format!("type=oci,dest={}", oci.display()),
    ];
    for output in &outputs {
        let out = build(
            root.path(),
            ctx.path(),
            &["--platform", "linux/amd64,linux/arm64", "--output", output],
        );
        assert_ok(&out);
    }
    for arch in ["amd64", "arm64"] {
        let file = local.join(format!("linux_{arch}")).join("arch");
        let text = fs::read_to_string(&file).expect("a directory per platform");
        assert!(text.starts_with(&format!("{arch} linux/{arch}")), "{text}");
    }
    let platforms = common::pushed::index_platforms(&format!("oci-archive:{}", oci.display()));
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
}

#[test]
fn bases_resolve_per_platform_and_a_missing_platform_is_buildkits_error() {
    if !require_root().expect("root check") {
        return;
    }
    let (_registry, base) = registry_with_multi_busybox();
    let root = tempfile::tempdir().expect("root");
    let ctx = tempfile::tempdir().expect("ctx");
    fs::write(ctx.path().join("f"), "x\n").expect("write");
    fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {base}\nCOPY f /f\n"),
    )
    .expect("write");
    // The host's build first: the base's tag in the store now names the host's manifest.
    let out = build(root.path(), ctx.path(), &["-t", "host:1"]);
    assert_ok(&out);
    let manifest: Manifest = read_json(root.path(), &tagged(root.path(), "host:1"));
    let config: rbuild_oci::ImageConfig = read_json(root.path(), &manifest.config);
    assert_eq!(config.architecture, Platform::host().architecture);
    let host_from = from_digest(&out);
    // One platform: a plain manifest (as buildx), the base's arm64 manifest (the stored
    // host one does not suit), arm64's config.
    let out = build(
        root.path(),
        ctx.path(),
        &["--platform", "linux/arm64", "-t", "one:1"],
    );
    assert_ok(&out);
    let desc = tagged(root.path(), "one:1");
    assert_eq!(
        desc.media_type.0,
        "application/vnd.oci.image.manifest.v1+json"
    );
    let manifest: Manifest = read_json(root.path(), &desc);
    let config: rbuild_oci::ImageConfig = read_json(root.path(), &manifest.config);
    assert_eq!(config.architecture, "arm64");
    // The FROM is pinned to the index's arm64 manifest (stored by the resolution).
    let arm_from = from_digest(&out);
    assert_ne!(arm_from, host_from);
    let store = Store::open(root.path()).expect("store");
    let pinned = store
        .read_image(&arm_from.parse().expect("digest"))
        .expect("pinned base stored");
    assert_eq!(pinned.config.architecture, "arm64");
    // The host's tag was not moved by the arm64 resolution: a host rebuild is all cached.
    let out = build(root.path(), ctx.path(), &["-t", "host:1"]);
    assert_ok(&out);
    assert_eq!(from_digest(&out), host_from);
    // A platform the index lacks: BuildKit's message, at the FROM.
    let out = build(root.path(), ctx.path(), &["--platform", "linux/s390x"]);
    assert!(!out.status.success());
    let text = stderr_text(&out);
    assert!(
        text.contains("no match for platform in manifest sha256:") && text.contains(": not found"),
        "{text}"
    );
    assert!(text.contains(">>> FROM "), "{text}");
    assert!(
        text.contains("failed to resolve source metadata for"),
        "{text}"
    );
}

#[test]
fn a_multi_platform_cache_round_trip_reuses_both_platforms() {
    if !require_root().expect("root check") {
        return;
    }
    let (_registry, base) = registry_with_multi_busybox();
    let ctx = tempfile::tempdir().expect("ctx");
    fs::write(ctx.path().join("Dockerfile"), CROSS.replace("BASE", &base)).expect("write");
    let cache = tempfile::tempdir().expect("cache");
    let cache_to = format!("type=local,dest={},mode=max", cache.path().display());
    let cache_from = format!("type=local,src={}", cache.path().display());
    let platforms = "linux/amd64,linux/arm64";
    let first = tempfile::tempdir().expect("root");
    let out = build(
        first.path(),
        ctx.path(),
        &["--platform", platforms, "--cache-to", &cache_to],
    );
    assert_ok(&out);
    let second = tempfile::tempdir().expect("root");
    let args = [
        "--platform",
        platforms,
        "--cache-from",
        &cache_from,
        "-t",
        "c:1",
    ];
    let out = build(second.path(), ctx.path(), &args);
    assert_ok(&out);
    assert_eq!(runs_of(&out, "RUN"), 0, "{:?}", step_names(&out));
    let index: Index = read_json(second.path(), &tagged(second.path(), "c:1"));
    assert_eq!(index.manifests.len(), 2);
    // A docker archive of several platforms is refused (as BuildKit's docker exporter), before
    // anything runs.
    let dest = second.path().join("image.tar");
    let output = format!("type=docker,dest={}", dest.display());
    let out = build(
        second.path(),
        ctx.path(),
        &["--platform", platforms, "--output", &output],
    );
    assert!(!out.status.success());
    assert!(!dest.exists());
    assert!(
        stderr_text(&out)
            .contains("docker exporter does not currently support exporting manifest lists"),
        "{}",
        stderr_text(&out)
    );
}
