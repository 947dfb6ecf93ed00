//! Reading the summary of `../shared/conformance/run.sh`, shared by the root and rootless runs.

use std::process::Output;

/// The number of cases that pass today; raise it when more pass, never lower it.
pub const MIN_PASSING: usize = 34;

/// Prints run.sh's output and returns its `conformance: P/N` summary line and P.
pub fn summary(out: &Output) -> (String, usize) {
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
    (last.to_string(), passed)
}

/// Runs `serve-base.sh`, which serves the cases' base at 127.0.0.1:5000, and returns the suite's
/// directory (`SHARED/conformance`).
pub fn serve_base(shared: &std::path::Path) -> std::path::PathBuf {
    let conformance = shared.join("conformance");
    let serve = std::process::Command::new("bash")
        .arg(conformance.join("serve-base.sh"))
        .output()
        .expect("run serve-base.sh");
    assert!(
        serve.status.success(),
        "serve-base.sh failed: {}",
        String::from_utf8_lossy(&serve.stderr)
    );
    conformance
}

/// A copy of the suite whose `run.sh` has each `(from, to)` replacement applied to its rbuild
/// adapter ("adapt here if its CLI differs"); every replacement must change the script.
pub fn adapted_harness(conformance: &std::path::Path, edits: &[(&str, &str)]) -> tempfile::TempDir {
    let harness = tempfile::tempdir().expect("tempdir");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", conformance.display()))
        .arg(harness.path())
        .status()
        .expect("copy the conformance suite");
    assert!(copied.success());
    let run_sh = harness.path().join("run.sh");
    let mut script = std::fs::read_to_string(&run_sh).expect("read run.sh");
    for (from, to) in edits {
        assert!(
            script.contains(from),
            "run.sh's rbuild adapter changed: update this test (missing {from:?})"
        );
        script = script.replace(from, to);
    }
    std::fs::write(&run_sh, script).expect("write run.sh");
    harness
}

/// Runs the harness's `run.sh --builder rbuild` with `RBUILD=rbuild`, a fresh state root and an
/// isolated docker config.
pub fn run_harness(harness: &std::path::Path, rbuild: &str) -> Output {
    let root = tempfile::tempdir().expect("tempdir");
    let out_dir = tempfile::tempdir().expect("tempdir");
    std::process::Command::new("bash")
        .arg(harness.join("run.sh"))
        .args(["--builder", "rbuild"])
        .env("RBUILD", rbuild)
        .env("RBUILD_ROOT", root.path())
        .env(
            "DOCKER_CONFIG",
            rbuild_testsupport::isolated_docker_config(root.path()),
        )
        .env("CONFORMANCE_OUT", out_dir.path())
        .output()
        .expect("run conformance")
}
