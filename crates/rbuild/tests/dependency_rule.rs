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

/// The top-level modules of one crate import each other without cycles: for every crate, the
/// graph "module A names `crate::B::...` in code" (comments, doc links and test code aside) is
/// acyclic. Items re-exported at the crate root (`crate::Type`) do not count: a type's `impl`
/// blocks may live in the modules that use it.
#[test]
fn modules_of_a_crate_do_not_import_each_other_in_a_cycle() {
    let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cycles = Vec::new();
    let mut edges_seen = 0;
    for krate in std::fs::read_dir(&crates).expect("crates dir") {
        let src = krate.expect("crate entry").path().join("src");
        let Ok(entries) = std::fs::read_dir(&src) else {
            continue;
        };
        // Top-level module name -> the sources that belong to it.
        let mut modules: BTreeMap<String, Vec<std::path::PathBuf>> = BTreeMap::new();
        for entry in entries {
            let path = entry.expect("dir entry").path();
            let stem = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            if stem == "lib" || stem == "main" {
                continue;
            }
            modules.entry(stem).or_default().extend(rust_files(&path));
        }
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (module, files) in &modules {
            let uses = graph.entry(module.clone()).or_default();
            for file in files {
                if file
                    .file_name()
                    .is_some_and(|f| f.to_string_lossy().contains("test"))
                {
                    continue;
                }
                let text = std::fs::read_to_string(file).expect("source file");
                for line in text.lines() {
                    let code = line.trim_start();
                    if code.starts_with("#[cfg(test)]") {
                        break;
                    }
                    if code.starts_with("//") {
                        continue;
                    }
                    for (i, _) in code.match_indices("crate::") {
                        let rest = &code[i + "crate::".len()..];
                        let name: String = rest
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        let is_module_path = rest[name.len()..].starts_with("::")
                            || rest[name.len()..].starts_with(";")
                            || rest[name.len()..].starts_with(" as ");
                        if name != *module && modules.contains_key(&name) && is_module_path {
                            uses.insert(name);
                        }
                    }
                }
            }
            edges_seen += uses.len();
        }
        for start in graph.keys() {
            // Depth-first search for a path back to `start`.
            let mut stack = vec![(start.clone(), vec![start.clone()])];
            let mut seen = BTreeSet::new();
            while let Some((at, path)) = stack.pop() {
                for next in graph.get(&at).into_iter().flatten() {
                    if next == start {
                        cycles.push(format!(
                            "{}: {} -> {start}",
                            src.display(),
                            path.join(" -> ")
                        ));
                    } else if seen.insert(next.clone()) {
                        let mut longer = path.clone();
                        longer.push(next.clone());
                        stack.push((next.clone(), longer));
                    }
                }
            }
        }
    }
    assert!(
        edges_seen > 20,
        "found only {edges_seen} module imports: the scan is broken"
    );
    assert!(
        cycles.is_empty(),
        "modules import each other in a cycle (move the shared part into its own module):\n{}",
        cycles.join("\n")
    );
}

/// `path` if it is a Rust file, or every Rust file below it.
fn rust_files(path: &std::path::Path) -> Vec<std::path::PathBuf> {
    if path.is_file() {
        return if path.extension().is_some_and(|e| e == "rs") {
            vec![path.to_path_buf()]
        } else {
            vec![]
        };
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
        out.extend(rust_files(&entry.path()));
    }
    out
}
