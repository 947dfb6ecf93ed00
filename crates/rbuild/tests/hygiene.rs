//! Test hygiene, checked over the sources of every crate's tests (`crates/*/tests/**/*.rs`): no
//! test lets a client read the host's registry credentials. An rbuild process a test spawns gets
//! a `DOCKER_CONFIG` of the test's own (`common::rbuild_at` does it), and skopeo talks to a
//! registry only with an `--authfile` (`rbuild_testsupport::skopeo` passes an empty one), since
//! without it skopeo reads `~/.docker/config.json` and `auth.json` of whoever runs the tests.
//!
//! The scan is textual and deliberately simple: a spawn is a line with `Command::new(` naming
//! rbuild (`RBUILD`, `CARGO_BIN_EXE_rbuild`) or skopeo, or a script handed the binary through
//! `.env("RBUILD", ..)`. An rbuild spawn passes when `DOCKER_CONFIG` (or
//! `isolated_docker_config`) is set in the rest of its block; a skopeo spawn passes when its
//! statement passes `--authfile`, or reads only local transports (`oci:`, `oci-archive:`,
//! `docker-archive:`, `dir:`) and never `docker://`.

use std::fs;
use std::path::{Path, PathBuf};

/// One offending spawn: 1-based line number and what is wrong.
#[derive(Debug, PartialEq, Eq)]
struct Violation {
    line: usize,
    what: &'static str,
}

/// The leading spaces of a line.
fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Lines `from..=to` (clamped) joined, for substring checks.
fn window(lines: &[&str], from: usize, to: usize) -> String {
    lines[from..=to.min(lines.len() - 1)].join("\n")
}

/// The index of the line closing the block that line `i` is in (the first later `}` indented
/// less than line `i`), or the last line.
fn block_end(lines: &[&str], i: usize) -> usize {
    let own = indent(lines[i]);
    (i + 1..lines.len())
        .find(|&j| lines[j].trim_start().starts_with('}') && indent(lines[j]) < own)
        .unwrap_or(lines.len() - 1)
}

/// The index of the line ending the statement that starts at line `i` (the first line ending
/// in `;`), or the block's end.
fn statement_end(lines: &[&str], i: usize) -> usize {
    let end = block_end(lines, i);
    (i..=end)
        .find(|&j| lines[j].trim_end().ends_with(';'))
        .unwrap_or(end)
}

/// The spawns in one test source that may read the host's credentials.
fn scan(source: &str) -> Vec<Violation> {
    let lines: Vec<&str> = source.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        let spawned = line.split_once("Command::new(").map(|(_, rest)| rest);
        let rbuild = spawned
            .is_some_and(|r| r.starts_with("RBUILD") || r.contains("CARGO_BIN_EXE_rbuild"))
            || line.contains(".env(\"RBUILD\"");
        let skopeo = spawned.is_some_and(|r| {
            let arg = r.split_once(')').map_or(r, |(a, _)| a);
            arg.contains("skopeo")
        });
        if rbuild {
            let w = window(&lines, i.saturating_sub(3), block_end(&lines, i));
            if !w.contains("DOCKER_CONFIG") && !w.contains("isolated_docker_config") {
                found.push(Violation {
                    line: i + 1,
                    what: "rbuild spawned without a DOCKER_CONFIG of the test's own \
                           (use common::rbuild_at or set DOCKER_CONFIG)",
                });
            }
        }
        if skopeo {
            let w = window(&lines, i.saturating_sub(3), statement_end(&lines, i));
            let local_only = !w.contains("docker://")
                && ["\"oci:", "\"oci-archive:", "\"docker-archive:", "\"dir:"]
                    .iter()
                    .any(|t| w.contains(t));
            if !w.contains("authfile") && !local_only {
                found.push(Violation {
                    line: i + 1,
                    what: "skopeo spawned without --authfile (use rbuild_testsupport::skopeo)",
                });
            }
        }
    }
    found
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_test_reads_the_hosts_registry_credentials() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("crates/");
    let mut files = Vec::new();
    for krate in fs::read_dir(&crates).expect("read crates/").flatten() {
        rust_files(&krate.path().join("tests"), &mut files);
    }
    files.sort();
    // This file's own samples below are offenders on purpose.
    let this = Path::new(file!()).file_name().expect("file name");
    files.retain(|f| {
        !(f.file_name() == Some(this) && f.parent().is_some_and(|p| p.ends_with("rbuild/tests")))
    });
    assert!(
        files.len() > 20 && files.iter().any(|f| f.ends_with("rbuild/tests/push.rs")),
        "the scan found too few test files under {}: {files:?}",
        crates.display()
    );
    let mut report = Vec::new();
    let mut spawns = 0;
    for f in &files {
        let text = fs::read_to_string(f).expect("read test source");
        spawns += text.matches("Command::new(RBUILD)").count();
        for v in scan(&text) {
            report.push(format!("{}:{}: {}", f.display(), v.line, v.what));
        }
    }
    assert!(spawns > 10, "found only {spawns} rbuild spawns to check");
    assert!(report.is_empty(), "{}", report.join("\n"));
}

/// The scanner flags what it must (so the test above can fail) and passes the accepted forms.
#[test]
fn the_scan_flags_spawns_without_their_own_credentials() {
    let bad_rbuild = r#"
fn build(root: &Path) -> Output {
    let mut cmd = Command::new(RBUILD);
    cmd.env("RUST_LOG", "x");
    cmd.arg("--root").arg(root).output().unwrap()
}
fn script() {
    let out = Command::new("bash")
        .arg("run.sh")
        .env("RBUILD", RBUILD)
        .output()
        .unwrap();
}
"#;
    let lines: Vec<usize> = scan(bad_rbuild).iter().map(|v| v.line).collect();
    assert_eq!(lines, [3, 10]);

    let good_rbuild = r#"
fn build(root: &Path) -> Output {
    let mut cmd = Command::new(RBUILD);
    cmd.env("DOCKER_CONFIG", isolated_docker_config(root));
    cmd.output().unwrap()
}
fn helper(root: &Path) -> Output {
    rbuild_at(root).arg("build").output().unwrap()
}
"#;
    assert_eq!(scan(good_rbuild), []);

    let bad_skopeo = r#"
fn inspect(r: &str) {
    let st = Command::new(need_tool("skopeo").unwrap())
        .args(["inspect", "--creds", "u:p"])
        .arg(format!("docker://{r}"))
        .output()
        .unwrap();
    let reference = format!("docker://{r}");
    let st = Command::new(&skopeo).arg("inspect").arg(&reference).output();
}
"#;
    let lines: Vec<usize> = scan(bad_skopeo).iter().map(|v| v.line).collect();
    assert_eq!(lines, [3, 9]);

    let good_skopeo = r#"
fn inspect(r: &str, layout: &Path) {
    let st = skopeo("inspect", None).unwrap().arg(format!("docker://{r}")).output();
    let st = Command::new(&skopeo)
        .args(["inspect", "--authfile", "empty.json"])
        .arg(format!("docker://{r}"))
        .output();
    let st = Command::new(&skopeo)
        .args(["inspect", "--config"])
        .arg(format!("oci:{}:1", layout.display()))
        .output();
    // Command::new(RBUILD) in a comment is not a spawn.
}
"#;
    assert_eq!(scan(good_skopeo), []);
}
