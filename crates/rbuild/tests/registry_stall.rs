//! `FROM` an image on a registry that accepts connections and never answers: the real binary,
//! a real `docker-registry` behind the stalling proxy, `RBUILD_REGISTRY_STALL_TIMEOUT=1`. The
//! build fails within a bounded time, says which registry stalled on what, and shows its
//! retries while waiting, both while resolving the base image and while pulling its layers.

use rbuild_testsupport::{registry_with_busybox, require_root, Fault, FaultProxy, FaultRule};
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const RBUILD: &str = env!("CARGO_BIN_EXE_rbuild");

/// Far above 3 attempts of 1 s each; only proves that the failure is bounded.
const BOUND: Duration = Duration::from_secs(60);

fn build(root: &Path, ctx: &Path) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new(RBUILD)
        .arg("--root")
        .arg(root)
        .args(["build", "--progress=plain"])
        .arg(ctx)
        .env("RBUILD_REGISTRY_STALL_TIMEOUT", "1")
        .env("RBUILD_REGISTRY_CONNECT_TIMEOUT", "1")
        .env("DOCKER_CONFIG", root.join("no-docker-config"))
        .output()
        .expect("run rbuild");
    (out, started.elapsed())
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The first layer of the image `name` in the store at `root`.
fn first_layer(root: &Path, name: &str) -> String {
    let read = |digest: &str| -> Value {
        let hex = digest.trim_start_matches("sha256:");
        serde_json::from_slice(&fs::read(root.join("blobs/sha256").join(hex)).unwrap()).unwrap()
    };
    let index: Value = serde_json::from_slice(&fs::read(root.join("index.json")).unwrap()).unwrap();
    let manifest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        .unwrap_or_else(|| panic!("{name} not in the store: {index}"))["digest"]
        .as_str()
        .unwrap()
        .to_string();
    read(&manifest)["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn from_a_stalled_registry_fails_clearly_with_retry_notices() {
    if !require_root().unwrap() {
        return;
    }
    let (reg, base) = registry_with_busybox().unwrap();
    let proxy = FaultProxy::start(&reg.addr()).unwrap();
    let via = base.replacen(&reg.addr(), &proxy.addr(), 1);
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {via}\nCOPY hello.txt /hello.txt\n"),
    )
    .unwrap();
    fs::write(ctx.join("hello.txt"), "stall\n").unwrap();

    // The manifest request is accepted and never answered: resolving the base fails.
    proxy.add(FaultRule::new("GET", "/manifests/", Fault::Stall, 100));
    let (out, took) = build(&dir.path().join("root1"), &ctx);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(took < BOUND, "took {took:?}\n{all}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "no response from registry {} for 1s while fetching",
            proxy.addr()
        )) && stderr.contains("/manifests/")
            && stderr.contains("attempt 3 of 3"),
        "{all}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("no response for 1s") && l.contains("retrying")),
        "no retry notice:\n{all}"
    );
    assert_eq!(proxy.count("GET", "/manifests/"), 3, "{}", proxy.log_text());

    // Through an honest proxy the build works; then only the layer stalls (fresh root): the
    // step that pulls it logs the retries and fails naming the blob.
    proxy.clear_rules();
    let good = dir.path().join("good");
    let (out, _) = build(&good, &ctx);
    assert!(out.status.success(), "{}", text(&out));
    let layer = first_layer(&good, &via);
    proxy.add(FaultRule::new("GET", &layer, Fault::Stall, 100));
    let (out, took) = build(&dir.path().join("root2"), &ctx);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(took < BOUND, "took {took:?}\n{all}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("blob {layer}"))
            && stderr.contains(&format!("no response from registry {}", proxy.addr()))
            && stderr.contains("attempt 3 of 3"),
        "{all}"
    );
    assert!(
        stderr.lines().any(|l| l.starts_with('#')
            && l.contains("no response for 1s")
            && l.contains("retrying")),
        "no retry notice in the step's log:\n{all}"
    );
}
