//! Checks the crate dependency rule of ARCHITECTURE.md against `cargo metadata`: each crate depends
//! only on the workspace crates listed for it, and only the CLI uses clap or indicatif.

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
            "rbuild",
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
