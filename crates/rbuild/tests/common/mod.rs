//! Shared harness of the CLI end-to-end tests: one registry with the busybox base per test binary,
//! the `testdata/` locator, and running the real rbuild binary with json progress.

#![allow(dead_code)]

pub mod attack;
pub mod conformance;
pub mod k8s_job;
pub mod pushed;
pub mod remote;
pub mod rootless;
pub mod stored;

use rbuild_testsupport::{
    isolated_docker_config, registry_with_busybox, require_root, TestRegistry,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The rbuild binary under test.
pub const RBUILD: &str = env!("CARGO_BIN_EXE_rbuild");

/// A registry holding the busybox base image, shared by the tests of one binary.
pub struct Env {
    /// The running registry (stopped when the test binary exits).
    pub registry: TestRegistry,
    /// `ADDR/busybox:latest`.
    pub base: String,
}

/// Starts the registry on first use; None (after a printed skip) when not root.
pub fn env() -> Option<&'static Env> {
    static ENV: OnceLock<Option<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        if !require_root().expect("root check") {
            return None;
        }
        let (registry, base) = registry_with_busybox().expect("start registry with busybox base");
        Some(Env { registry, base })
    })
    .as_ref()
}

/// A directory under the workspace's `testdata/`.
pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name)
}

/// `rbuild --root ROOT` with `DOCKER_CONFIG` pointing below ROOT (no config.json there), so the
/// host's `~/.docker/config.json` never leaks into a test; a test of credentials sets its own
/// `DOCKER_CONFIG` on the returned command, which wins.
pub fn rbuild_at(root: &Path) -> Command {
    let mut cmd = Command::new(RBUILD);
    cmd.arg("--root")
        .arg(root)
        .env("DOCKER_CONFIG", isolated_docker_config(root));
    cmd
}

/// Sends `cmd`'s registry traffic for anything but loopback to `proxy` (a [`RefusedPort`] the
/// test holds) through the standard proxy variables, so a test whose Dockerfile names a Docker
/// Hub image fails with "connection refused" instead of reaching the internet.
///
/// [`RefusedPort`]: rbuild_testsupport::RefusedPort
pub fn no_internet<'c>(
    cmd: &'c mut Command,
    proxy: &rbuild_testsupport::RefusedPort,
) -> &'c mut Command {
    let url = format!("http://{}", proxy.addr());
    for var in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
        cmd.env(var, &url);
    }
    for var in ["NO_PROXY", "no_proxy"] {
        cmd.env(var, "127.0.0.1,localhost");
    }
    cmd.env_remove("ALL_PROXY").env_remove("all_proxy")
}

/// `rbuild --root ROOT build --progress=json --build-arg BASE=... EXTRA... CONTEXT`.
pub fn build(root: &Path, context: &Path, base: &str, extra: &[&str]) -> Output {
    let base_arg = format!("BASE={base}");
    rbuild_at(root)
        .args(["build", "--progress=json", "--build-arg", &base_arg])
        .args(extra)
        .arg(context)
        .output()
        .expect("run rbuild")
}

/// rbuild's stderr as text, a `--progress=json` build's final `error` event replaced by the
/// report it carries (the text a plain build prints).
pub fn stderr_text(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr);
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| json_error_report(l).unwrap_or_else(|| l.to_string()))
        .collect();
    if text.ends_with('\n') {
        lines.push(String::new());
    }
    lines.join("\n")
}

/// The report of a `--progress=json` build's final `error` event, when `line` is one.
pub fn json_error_report(line: &str) -> Option<String> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v["event"] != "error" || v.get("vertex").is_some() {
        return None;
    }
    v["message"].as_str().map(str::to_string)
}

/// Fails the test with rbuild's output unless it succeeded.
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "rbuild failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The json progress events rbuild printed on stderr.
pub fn events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("event").is_some())
        .collect()
}

/// Names of the steps that ran (a `started` event) and of those reported cached.
pub fn ran_and_cached(out: &Output) -> (Vec<String>, Vec<String>) {
    let evs = events(out);
    let pick = |kind: &str| {
        evs.iter()
            .filter(|e| e["event"] == kind)
            // The build's own vertices (`[internal] load ...`, `exporting to image`) have no
            // cache key; they are not steps.
            .filter(|e| kind != "started" || !e["cache_key"].is_null())
            .map(|e| e["name"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    (pick("started"), pick("cached"))
}

/// Fails unless rbuild's json progress reports a step whose name contains `step` as `cached`
/// (the positive proof of a cache hit: a test that only checks that nothing `started` would
/// also pass if the event were renamed or the step skipped).
pub fn assert_reported_cached(out: &Output, step: &str) {
    let (ran, cached) = ran_and_cached(out);
    assert!(
        cached.iter().any(|n| n.contains(step)),
        "`{step}` was not reported cached; cached: {cached:?}, ran: {ran:?}"
    );
    assert!(
        !ran.iter().any(|n| n.contains(step)),
        "`{step}` ran instead of hitting the cache: {ran:?}"
    );
}

/// Writes `BIN/docker-credential-NAME`: `store` saves its input to `stored`, `get` answers
/// carol's credentials once something was stored (else "not found", as docker's helpers do);
/// with `calls`, each call appends `ACTION INPUT` to that file.
pub fn write_cred_helper(bin: &Path, name: &str, stored: &Path, calls: Option<&Path>) {
    let helper = bin.join(format!("docker-credential-{name}"));
    let log = calls
        .map(|c| format!("echo \"$1 $input\" >> {}\n", c.display()))
        .unwrap_or_default();
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\ninput=$(cat)\n{log}case \"$1\" in\n  store) printf '%s' \"$input\" > {s} ;;\n  get) if [ -f {s} ]; then echo '{{\"ServerURL\":\"'$input'\",\"Username\":\"carol\",\"Secret\":\"pw-carol\"}}'; else echo 'credentials not found in native keychain'; exit 1; fi ;;\n  *) exit 1 ;;\nesac\n",
            s = stored.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
}
