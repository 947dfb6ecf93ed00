//! The shared conformance suite (`../shared/conformance/run.sh --builder rbuild`, BuildKit's
//! recorded image summaries) run rootless: every case is built by the real binary as the
//! unprivileged test user through `scripts/rootless-as.sh`, and the same cases must pass as in
//! root mode (`conformance.rs`).
//!
//! Skips visibly without `../shared` (`RBUILD_REQUIRE_SHARED=1` makes that a failure), without
//! root (needed to create the test user) or without `newuidmap`/`newgidmap`. The onbuild cases
//! push to the suite's fixed reference on 127.0.0.1:5000, as the root-mode run does; both push
//! the same image there.

mod common;

use common::rootless::{home_of, setup, USER};
use rbuild_testsupport::shared_dir;
use std::path::Path;
use std::process::Command;

/// The cases that pass in root mode (`conformance.rs`); rootless must reach the same.
const MIN_PASSING: usize = 34;

#[test]
fn conformance_cases_match_buildkit_rootless() {
    let Some(shared) = shared_dir().expect("shared dir check") else {
        return;
    };
    let Some(setup) = setup() else { return };
    let conformance = shared.join("conformance");
    let serve = Command::new("bash")
        .arg(conformance.join("serve-base.sh"))
        .output()
        .expect("run serve-base.sh");
    assert!(
        serve.status.success(),
        "serve-base.sh failed: {}",
        String::from_utf8_lossy(&serve.stderr)
    );
    // The user's own scratch: rootless-as.sh copies each context there and keeps the state
    // root below it.
    let home = home_of(USER);
    let out_dir = tempfile::tempdir().unwrap();
    let wrapper = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/rootless-as.sh");
    let out = Command::new("bash")
        .arg(conformance.join("run.sh"))
        .args(["--builder", "rbuild"])
        .env("RBUILD", &wrapper)
        .env("ROOTLESS_USER", USER)
        .env("ROOTLESS_BIN", &setup.rbuild)
        .env("ROOTLESS_HOME", home.path())
        .env(
            "DOCKER_CONFIG",
            rbuild_testsupport::isolated_docker_config(home.path()),
        )
        .env("CONFORMANCE_OUT", out_dir.path())
        .output()
        .expect("run conformance");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("conformance:"))
        .unwrap_or_else(|| {
            panic!(
                "no summary line:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let passed: usize = last
        .trim_start_matches("conformance: ")
        .split('/')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .expect("P/N in summary");
    assert!(
        passed >= MIN_PASSING,
        "rootless conformance: {last} (root mode passes {MIN_PASSING})\n{stdout}"
    );
}
