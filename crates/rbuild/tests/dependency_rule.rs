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
        ("rbuild-lint", vec!["rbuild-frontend"]),
        ("rbuild-buildkit", vec!["rbuild-llb", "rbuild-oci"]),
        (
            "rbuild-build",
            vec![
                "rbuild-oci",
                "rbuild-llb",
                "rbuild-frontend",
                "rbuild-lint",
                "rbuild-solver",
                "rbuild-snapshotter",
                "rbuild-sandbox",
                "rbuild-registry",
                "rbuild-worker",
                "rbuild-exporter",
                "rbuild-buildkit",
            ],
        ),
        (
            "rbuild",
            vec![
                "rbuild-build",
                "rbuild-lint",
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
                "rbuild-buildkit",
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
                    || file.ends_with("_tests.rs")
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

/// The modules of one crate import each other without cycles, at every level of nesting: for
/// every crate, the graph "module A names an item of module B in code" is acyclic, where an
/// import is lifted to the two sibling modules it crosses between (`convert/copy.rs` naming
/// `super::run::x` is an edge copy -> run inside `convert`; `a/x.rs` naming `crate::b::y` is
/// an edge a -> b at the top). Paths are read from `crate::` and `super::` paths in code and
/// from grouped imports (`use crate::{a::X, b::{Y, Z}}`); comments, doc links and test code
/// (files named `*test*`, everything from `#[cfg(test)]` on) do not count. A module naming
/// its own ancestors (`super::Type`, `crate::Type`: items of the parent or re-exports at the
/// crate root) does not count either: a type's `impl` blocks may live in the modules that use
/// it.
#[test]
fn modules_of_a_crate_do_not_import_each_other_in_a_cycle() {
    /// The module path of a source file relative to `src` (`a/b.rs`, `a/b/mod.rs` -> `[a, b]`;
    /// `lib.rs`, `main.rs` -> `[]`).
    fn module_of(rel: &std::path::Path) -> Vec<String> {
        let mut parts: Vec<String> = rel
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .collect();
        if parts.last().is_some_and(|l| l == "mod") || parts == ["lib"] || parts == ["main"] {
            parts.pop();
        }
        parts
    }

    /// The code of a file: comments (so doc links too) and the contents of string and char
    /// literals removed, cut at `#[cfg(test)]`.
    fn code_of(text: &str) -> String {
        let chars: Vec<char> = text.chars().collect();
        let mut out = String::new();
        let mut i = 0;
        while i < chars.len() {
            let (c, next) = (chars[i], chars.get(i + 1).copied());
            if c == '/' && next == Some('/') {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            } else if c == '/' && next == Some('*') {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if chars[i] == '\n' {
                            out.push('\n');
                        }
                        i += 1;
                    }
                }
            } else if c == 'r' && (next == Some('"') || next == Some('#')) {
                // A raw string r"..." / r#"..."# (or an identifier starting with r).
                let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
                if chars.get(i + 1 + hashes) != Some(&'"') {
                    out.push(c);
                    i += 1;
                    continue;
                }
                i += 2 + hashes;
                while i < chars.len() {
                    if chars[i] == '"'
                        && chars[i + 1..].iter().take_while(|&&h| h == '#').count() >= hashes
                    {
                        i += 1 + hashes;
                        break;
                    }
                    if chars[i] == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
                out.push_str("\"\"");
            } else if c == '"' {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\n' {
                        out.push('\n');
                    }
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            } else if c == '\'' && next == Some('\\') {
                // An escaped char literal: '\n', '\'', '\u{..}'.
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                if c.is_alphanumeric() || c == '_' {
                    // A whole identifier, so that `r` inside `for` is no raw string.
                    while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                        out.push(chars[i]);
                        i += 1;
                    }
                    continue;
                }
                out.push(c);
                i += 1;
            }
        }
        let mut code = String::new();
        for line in out.lines() {
            if line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            code.push_str(line);
            code.push('\n');
        }
        code
    }

    /// The paths a use tree names: `crate::{a::X, b::{Y, Z as W}}` -> `crate::a::X`,
    /// `crate::b::Y`, `crate::b::Z`.
    fn expand_use(tree: &str) -> Vec<String> {
        let tree: String = tree.split_whitespace().collect::<Vec<_>>().join(" ");
        let Some(open) = tree.find('{') else {
            let path = tree.split(" as ").next().unwrap_or("").replace(' ', "");
            return vec![path];
        };
        let close = tree.rfind('}').unwrap_or(tree.len());
        let prefix = tree[..open].replace(' ', "");
        let inner = &tree[open + 1..close];
        let (mut parts, mut depth, mut cur) = (Vec::new(), 0, String::new());
        for ch in inner.chars() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(std::mem::take(&mut cur));
                    continue;
                }
                _ => {}
            }
            cur.push(ch);
        }
        parts.push(cur);
        parts
            .iter()
            .filter(|p| !p.trim().is_empty())
            .flat_map(|p| expand_use(p))
            .map(|p| format!("{prefix}{p}"))
            .collect()
    }

    /// Every `crate::...` and `super::...` path of `code`: use trees expanded, then the paths
    /// in the remaining code.
    fn paths_in(code: &str) -> Vec<String> {
        let mut paths = Vec::new();
        let mut rest = String::new();
        let mut at = 0;
        while let Some(i) = code[at..].find("use ") {
            let start = at + i;
            let is_word = start == 0
                || !code[..start]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_');
            let Some(end) = code[start..].find(';').map(|e| start + e) else {
                break;
            };
            if is_word {
                rest.push_str(&code[at..start]);
                paths.extend(expand_use(&code[start + 4..end]));
            } else {
                rest.push_str(&code[at..end]);
            }
            at = end;
        }
        rest.push_str(&code[at..]);
        for root in ["crate::", "super::"] {
            for (i, _) in rest.match_indices(root) {
                let before = rest[..i].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue; // part of a longer path (`super::super::`) or another word
                }
                let path: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                paths.push(path);
            }
        }
        paths
    }

    /// The module a path names an item of (the longest known module prefix), from `from`.
    fn target_of(
        path: &str,
        from: &[String],
        modules: &BTreeSet<Vec<String>>,
    ) -> Option<Vec<String>> {
        let mut segs = path.split("::").filter(|s| !s.is_empty());
        let mut base: Vec<String> = match segs.next()? {
            "crate" => Vec::new(),
            "super" => from[..from.len().checked_sub(1)?].to_vec(),
            _ => return None,
        };
        let mut found = base.clone();
        for seg in segs {
            if seg == "super" && base == found {
                base.pop();
                found = base.clone();
                continue;
            }
            base.push(seg.to_string());
            if modules.contains(&base) {
                found = base.clone();
            } else {
                break;
            }
        }
        Some(found)
    }

    let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cycles = Vec::new();
    let mut edges_seen = 0;
    let mut nested_edges = 0;
    for krate in std::fs::read_dir(&crates).expect("crates dir") {
        let src = krate.expect("crate entry").path().join("src");
        if !src.is_dir() {
            continue;
        }
        let files: Vec<(Vec<String>, std::path::PathBuf)> = rust_files(&src)
            .into_iter()
            .map(|f| (module_of(f.strip_prefix(&src).expect("under src")), f))
            .collect();
        let modules: BTreeSet<Vec<String>> = files.iter().map(|(m, _)| m.clone()).collect();
        // Module -> sibling modules it names items of (both as `a::b` paths).
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (module, file) in &files {
            if file
                .file_name()
                .is_some_and(|f| f.to_string_lossy().contains("test"))
            {
                continue;
            }
            let text = std::fs::read_to_string(file).expect("source file");
            for path in paths_in(&code_of(&text)) {
                let Some(target) = target_of(&path, module, &modules) else {
                    continue;
                };
                // Lift to the siblings under the common ancestor; ancestors and descendants
                // of the module itself do not count.
                let common = module
                    .iter()
                    .zip(&target)
                    .take_while(|(a, b)| a == b)
                    .count();
                if common == module.len() || common == target.len() {
                    continue;
                }
                let (a, b) = (module[..=common].join("::"), target[..=common].join("::"));
                if common > 0 {
                    nested_edges += 1;
                }
                graph.entry(a).or_default().insert(b);
            }
        }
        edges_seen += graph.values().map(BTreeSet::len).sum::<usize>();
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
        edges_seen > 20 && nested_edges > 5,
        "found only {edges_seen} module imports ({nested_edges} inside nested modules): the scan is broken"
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
