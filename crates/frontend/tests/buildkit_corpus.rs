//! BuildKit's own parser and shell-lexer test data, read from the shared conformance directory
//! (`$RBUILD_SHARED` or `<workspace>/../shared`, then `conformance/buildkit-parser/`).
//!
//! When the directory is missing the tests print `SKIPPED: ../shared not found` and pass, unless
//! `RBUILD_REQUIRE_SHARED=1` is set.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;

use rbuild_frontend::{dump, parse, Lexer};

fn corpus_dir() -> Option<PathBuf> {
    let shared = match std::env::var_os("RBUILD_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    let dir = shared.join("conformance/buildkit-parser");
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("RBUILD_REQUIRE_SHARED").as_deref() == Ok("1") {
        panic!("RBUILD_REQUIRE_SHARED=1 but {} not found", dir.display());
    }
    println!("SKIPPED: ../shared not found ({})", dir.display());
    eprintln!("SKIPPED: ../shared not found ({})", dir.display());
    None
}

fn case_dirs(dir: PathBuf) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

#[test]
fn parser_testfiles() {
    let Some(dir) = corpus_dir() else { return };
    let cases = case_dirs(dir.join("parser/testfiles"));
    let mut failures = Vec::new();
    let mut passed = 0;
    for case in &cases {
        let name = case
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let src = fs::read_to_string(case.join("Dockerfile")).expect("read Dockerfile");
        let expected = fs::read_to_string(case.join("result")).expect("read result");
        match parse(&src) {
            Err(e) => failures.push(format!("{name}: parse error: {}", e.render("Dockerfile"))),
            Ok(df) => {
                let got: Vec<String> = df.instructions.iter().map(dump).collect();
                let want: Vec<&str> = expected.lines().collect();
                if got.len() != want.len() || got.iter().zip(&want).any(|(g, w)| g != w) {
                    let mut msg = format!("{name}: {} lines, expected {}\n", got.len(), want.len());
                    for i in 0..got.len().max(want.len()) {
                        let g = got.get(i).map(String::as_str).unwrap_or("<none>");
                        let w = want.get(i).copied().unwrap_or("<none>");
                        if g != w {
                            msg.push_str(&format!(
                                "  line {}:\n    got  {g}\n    want {w}\n",
                                i + 1
                            ));
                        }
                    }
                    failures.push(msg);
                } else {
                    passed += 1;
                }
            }
        }
    }
    println!("parser testfiles: {passed}/{} passed", cases.len());
    assert_eq!(cases.len(), 33, "expected 33 BuildKit parser cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn parser_testfiles_negative() {
    let Some(dir) = corpus_dir() else { return };
    let cases = case_dirs(dir.join("parser/testfiles-negative"));
    let mut failures = Vec::new();
    for case in &cases {
        let src = fs::read_to_string(case.join("Dockerfile")).expect("read Dockerfile");
        match parse(&src) {
            Ok(_) => failures.push(format!("{}: parsed but must fail", case.display())),
            Err(e) => println!("{}: {}", case.display(), e),
        }
    }
    println!(
        "negative parser cases: {}/{} failed as required",
        cases.len() - failures.len(),
        cases.len()
    );
    assert_eq!(cases.len(), 4, "expected 4 BuildKit negative cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn shell_env_var_test() {
    let Some(dir) = corpus_dir() else { return };
    let text = fs::read_to_string(dir.join("shell/envVarTest")).expect("read envVarTest");
    let env: HashMap<&str, &str> = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .into();
    let getter = |k: &str| env.get(k).map(|v| v.to_string());
    let lexer = Lexer::new('\\');
    let (mut total, mut failures) = (0, Vec::new());
    for (no, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        let line = line.trim_start_matches([' ', '\t']);
        if line.is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split('|').collect();
        assert_eq!(parts.len(), 3, "line {}: {line:?}", no + 1);
        let (platform, input, expected) = (parts[0].trim(), parts[1].trim(), parts[2].trim());
        if platform != "A" && platform != "U" {
            continue;
        }
        total += 1;
        let got = lexer.process_word(input, &getter);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(_), "error") => false,
            (Ok(g), e) => g == e,
            (Err(_), _) => false,
        };
        if !ok {
            failures.push(format!(
                "line {}: {input:?} => {got:?}, expected {expected:?}",
                no + 1
            ));
        }
    }
    println!("envVarTest: {}/{total} passed", total - failures.len());
    assert!(total > 200, "too few envVarTest cases read: {total}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn shell_words_test() {
    let Some(dir) = corpus_dir() else { return };
    let text = fs::read_to_string(dir.join("shell/wordsTest")).expect("read wordsTest");
    let lexer = Lexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    let (mut total, mut failures) = (0, Vec::new());
    for (no, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            let rest = rest.trim_start_matches(' ');
            let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
            env.push((k.to_string(), v.to_string()));
            continue;
        }
        let parts: Vec<&str> = line.split('|').collect();
        assert_eq!(parts.len(), 2, "line {}: {line:?}", no + 1);
        let input = parts[0].trim();
        let expected: Vec<&str> = parts[1].trim_start_matches(' ').split(',').collect();
        total += 1;
        let getter = |k: &str| {
            env.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        let got = match lexer.process_words(input, &getter) {
            Ok(w) => w,
            Err(_) => vec!["error".to_string()],
        };
        if got != expected {
            failures.push(format!(
                "line {}: {input:?} => {got:?}, expected {expected:?}",
                no + 1
            ));
        }
    }
    println!("wordsTest: {}/{total} passed", total - failures.len());
    assert!(total > 20, "too few wordsTest cases read: {total}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
