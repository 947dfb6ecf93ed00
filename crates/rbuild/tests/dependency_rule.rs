//! Checks the crate dependency rule of ARCHITECTURE.md against `cargo metadata`: each crate depends
//! only on the workspace crates listed for it, and only the CLI uses clap or indicatif or prints.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

fn allowed() -> BTreeMap<&'static str, Vec<&'static str>> {
    BTreeMap::from([
        ("rbuild-oci", vec![]),
        ("rbuild-llb", vec!["rbuild-oci"]),
        ("rbuild-frontend", vec!["rbuild-llb", "rbuild-oci"]),
        ("rbuild-solver", vec!["rbuild-oci"]),
        ("rbuild-snapshotter", vec!["rbuild-oci"]),
        ("rbuild-sandbox", vec![]),
        ("rbuild-registry", vec!["rbuild-oci"]),
        (
            "rbuild-worker",
            vec![
                "rbuild-llb",
                "rbuild-solver",
                "rbuild-snapshotter",
                "rbuild-sandbox",
                "rbuild-registry",
                "rbuild-oci",
            ],
        ),
        (
            "rbuild-exporter",
            vec!["rbuild-oci", "rbuild-registry", "rbuild-snapshotter"],
        ),
        ("rbuild-testsupport", vec!["rbuild-oci"]),
        (
            "rbuild-build",
            vec![
                "rbuild-oci",
                "rbuild-llb",
                "rbuild-frontend",
                "rbuild-solver",
                "rbuild-snapshotter",
                "rbuild-sandbox",
                "rbuild-registry",
                "rbuild-worker",
                "rbuild-exporter",
            ],
        ),
        (
            "rbuild",
            vec![
                "rbuild-build",
                "rbuild-oci",
                "rbuild-llb",
                "rbuild-frontend",
                "rbuild-solver",
                "rbuild-snapshotter",
                "rbuild-sandbox",
                "rbuild-registry",
                "rbuild-worker",
                "rbuild-exporter",
                "rbuild-testsupport",
            ],
        ),
    ])
}

#[test]
fn crates_follow_the_dependency_rule() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let rules = allowed();
    let packages = meta["packages"].as_array().expect("packages array");
    let mut seen = BTreeSet::new();
    let mut violations = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap_or_default();
        seen.insert(name.to_string());
        let Some(allowed) = rules.get(name) else {
            violations.push(format!("{name}: not in the crate map of ARCHITECTURE.md"));
            continue;
        };
        for dep in package["dependencies"].as_array().into_iter().flatten() {
            let dep_name = dep["name"].as_str().unwrap_or_default();
            let is_dev = dep["kind"].as_str() == Some("dev");
            if dep_name.starts_with("rbuild") && !is_dev && !allowed.contains(&dep_name) {
                violations.push(format!("{name} depends on {dep_name}"));
            }
            if (dep_name == "clap" || dep_name == "indicatif") && name != "rbuild" {
                violations.push(format!("{name} uses {dep_name}: only the CLI may"));
            }
            if dep_name == "rbuild-testsupport" && !is_dev && name != "rbuild-testsupport" {
                violations.push(format!("{name} uses test support outside dev-dependencies"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "dependency rule violated:\n{}",
        violations.join("\n")
    );
    for expected in [
        "rbuild-build",
        "rbuild-frontend",
        "rbuild-solver",
        "rbuild-snapshotter",
        "rbuild-exporter",
    ] {
        assert!(
            seen.contains(expected),
            "{expected} is missing from the workspace"
        );
    }
}

/// Library code never prints: the CLI renders what the libraries report. Scans every library
/// source file up to its first `#[cfg(test)]` (test modules and test utilities may print).
#[test]
fn only_the_cli_prints() {
    let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // The sandbox helper is a re-exec of the binary; it reports misuse on its own stderr.
    let allowed_files = ["sandbox/src/helper.rs", "sandbox/src/testutil.rs"];
    let mut offenders = Vec::new();
    let mut scanned = 0;
    for krate in std::fs::read_dir(&crates).expect("crates dir") {
        let krate = krate.expect("crate entry").path();
        let name = krate
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if name == "rbuild" || name == "testsupport" {
            continue;
        }
        let mut stack = vec![krate.join("src")];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.expect("dir entry").path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let rel = path
                    .strip_prefix(&crates)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .to_string();
                let file = path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                if !rel.ends_with(".rs")
                    || file == "tests.rs"
                    || allowed_files.contains(&rel.as_str())
                {
                    continue;
                }
                scanned += 1;
                let text = std::fs::read_to_string(&path).expect("source file");
                for (n, line) in text.lines().enumerate() {
                    let code = line.trim_start();
                    if code.starts_with("#[cfg(test)]") {
                        break;
                    }
                    if code.starts_with("//") {
                        continue;
                    }
                    if ["println!", "eprintln!", "print!(", "eprint!("]
                        .iter()
                        .any(|m| code.contains(m))
                    {
                        offenders.push(format!("{rel}:{}: {code}", n + 1));
                    }
                }
            }
        }
    }
    assert!(scanned > 50, "scanned only {scanned} library files");
    assert!(
        offenders.is_empty(),
        "library code prints (report through a typed event or error instead):\n{}",
        offenders.join("\n")
    );
}
