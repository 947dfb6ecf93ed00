//! Runs `../shared/conformance/run.sh --builder rbuild` (BuildKit's recorded image summaries) with
//! the rbuild binary and requires at least the number of passing cases this project has reached.
//! The cases build `FROM 127.0.0.1:5000/busybox:latest`, so `serve-base.sh` serves the base there.

mod common;

use common::conformance::MIN_PASSING;
use rbuild_testsupport::{require_root, shared_dir};
use std::process::Command;

#[test]
fn conformance_cases_match_buildkit() {
    let Some(shared) = shared_dir().expect("shared dir check") else {
        return;
    };
    if !require_root().expect("root check") {
        return;
    }
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
    let out_dir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    // run.sh's rbuild adapter (`build_rbuild`, "adapt here if its CLI differs") asks for
    // `type=oci,dest=D`, which is a tarball in rbuild as in BuildKit; its push helper for cases
    // that later cases build FROM (36 -> 37) can only push an OCI *directory*. Run a copy whose
    // adapter adds `tar=false`, so the whole suite runs; nothing else is changed.
    let harness = tempfile::tempdir().unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", conformance.display()))
        .arg(harness.path())
        .status()
        .expect("copy conformance");
    assert!(copied.success());
    let run_sh = harness.path().join("run.sh");
    let script = std::fs::read_to_string(&run_sh).expect("read run.sh");
    let adapted = script.replace(
        r#"--output "type=oci,dest=$dest""#,
        r#"--output "type=oci,dest=$dest,tar=false""#,
    );
    assert_ne!(
        script, adapted,
        "run.sh's rbuild adapter changed: update this test"
    );
    std::fs::write(&run_sh, adapted).expect("write run.sh");
    let out = Command::new("bash")
        .arg(&run_sh)
        .args(["--builder", "rbuild"])
        .env("RBUILD", env!("CARGO_BIN_EXE_rbuild"))
        .env("RBUILD_ROOT", root.path())
        .env(
            "DOCKER_CONFIG",
            rbuild_testsupport::isolated_docker_config(root.path()),
        )
        .env("CONFORMANCE_OUT", out_dir.path())
        .output()
        .expect("run conformance");
    let (last, passed) = common::conformance::summary(&out);
    assert!(
        passed >= MIN_PASSING,
        "conformance regressed: {last} (need {MIN_PASSING})"
    );
}
