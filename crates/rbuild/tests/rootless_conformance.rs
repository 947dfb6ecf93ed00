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

use common::conformance::MIN_PASSING;
use common::rootless::{home_of, setup, USER};
use rbuild_testsupport::shared_dir;
use std::path::Path;
use std::process::Command;

#[test]
fn conformance_cases_match_buildkit_rootless() {
    let Some(shared) = shared_dir().expect("shared dir check") else {
        return;
    };
    let Some(setup) = setup() else { return };
    let conformance = common::conformance::serve_base(&shared);
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
    let (last, passed) = common::conformance::summary(&out);
    assert!(
        passed >= MIN_PASSING,
        "rootless conformance: {last} (root mode passes {MIN_PASSING})"
    );
}
