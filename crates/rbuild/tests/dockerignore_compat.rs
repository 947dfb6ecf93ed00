//! End-to-end tests of `.dockerignore` exceptions as BuildKit applies them: an excluded directory
//! is walked for re-included (`!`) paths but appears in the result only when something under it is
//! kept (and then with its own mode), and the COPY cache key agrees with what is copied. The real
//! rbuild binary builds a context generated in a tempdir (`COPY . /ctx/`) against the busybox base
//! in a loopback registry, and the exported filesystem is compared path by path.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

mod common;

use common::*;

/// A context with `files` (parents created) and empty `dirs`, and a Dockerfile outside it whose
/// `Dockerfile.dockerignore` holds `ignore` (so the Dockerfile itself is not in the context).
struct Case {
    ctx: tempfile::TempDir,
    df_dir: tempfile::TempDir,
}

impl Case {
    fn new(files: &[&str], dirs: &[&str], ignore: &str) -> Case {
        let ctx = tempfile::tempdir().unwrap();
        for f in files {
            let p = ctx.path().join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, f.as_bytes()).unwrap();
        }
        for d in dirs {
            fs::create_dir_all(ctx.path().join(d)).unwrap();
        }
        let df_dir = tempfile::tempdir().unwrap();
        fs::write(
            df_dir.path().join("Dockerfile"),
            "ARG BASE\nFROM $BASE\nCOPY . /ctx/\n",
        )
        .unwrap();
        fs::write(df_dir.path().join("Dockerfile.dockerignore"), ignore).unwrap();
        Case { ctx, df_dir }
    }

    /// Builds into `dest` and returns the rbuild output.
    fn build(&self, env: &Env, root: &Path, dest: Option<&Path>) -> std::process::Output {
        let file = self.df_dir.path().join("Dockerfile");
        let mut extra = vec!["-f".to_string(), file.display().to_string()];
        if let Some(d) = dest {
            extra.push("--output".into());
            extra.push(format!("type=local,dest={}", d.display()));
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        build(root, self.ctx.path(), &env.base, &extra)
    }
}

/// Every path under `dir`, relative, directories with a trailing `/`.
fn tree(dir: &Path) -> BTreeSet<String> {
    fn walk(top: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(top).unwrap().display().to_string();
            if e.file_type().unwrap().is_dir() {
                out.insert(format!("{rel}/"));
                walk(top, &e.path(), out);
            } else {
                out.insert(rel);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn set(paths: &[&str]) -> BTreeSet<String> {
    paths.iter().map(|p| p.to_string()).collect()
}

/// Builds `case` and returns the paths under `/ctx` of the exported filesystem.
fn copied(env: &Env, root: &Path, case: &Case) -> BTreeSet<String> {
    let dest = tempfile::tempdir().unwrap();
    assert_ok(&case.build(env, root, Some(dest.path())));
    tree(&dest.path().join("ctx"))
}

#[test]
fn wildcard_children_with_exception_leave_no_empty_subdir() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let case = Case::new(
        &[
            "app.txt",
            "logs/a.log",
            "logs/keep1.log",
            "logs/keep2.log",
            "logs/sub/b.log",
            "logs/sub/keep3.log",
        ],
        &["logs/empty"],
        "logs/*\n!logs/keep*\n",
    );
    assert_eq!(
        copied(env, root.path(), &case),
        set(&["app.txt", "logs/", "logs/keep1.log", "logs/keep2.log"])
    );
    // The cache key agrees: a new excluded directory (nothing re-included) keeps COPY cached.
    fs::create_dir_all(case.ctx.path().join("logs/newdir/deeper")).unwrap();
    fs::write(case.ctx.path().join("logs/sub/other.log"), "x").unwrap();
    let again = case.build(env, root.path(), None);
    assert_ok(&again);
    let (ran, _) = ran_and_cached(&again);
    assert!(
        !ran.iter().any(|n| n.contains("COPY")),
        "an excluded empty directory changed the COPY cache key: {ran:?}"
    );
    assert_reported_cached(&again, "COPY . /ctx/");
    // And a re-included file does change it.
    fs::write(case.ctx.path().join("logs/keep9.log"), "new").unwrap();
    let dest = tempfile::tempdir().unwrap();
    let third = case.build(env, root.path(), Some(dest.path()));
    assert_ok(&third);
    let (ran, _) = ran_and_cached(&third);
    assert!(ran.iter().any(|n| n.contains("COPY")), "{ran:?}");
    assert!(dest.path().join("ctx/logs/keep9.log").is_file());
}

#[test]
fn everything_excluded_but_a_dir_and_a_glob() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let case = Case::new(
        &[
            ".git/HEAD",
            ".git/objects/ab/cdef",
            "node_modules/x/index.js",
            "README.md",
            "src/main.rs",
            "src/lib/util.rs",
            "config/app.yml",
            "config/app.json",
            "config/sub/deep.yml",
        ],
        &["src/empty", "config/emptydir"],
        "*\n!src\n!config/*.yml\n",
    );
    assert_eq!(
        copied(env, root.path(), &case),
        set(&[
            "src/",
            "src/main.rs",
            "src/lib/",
            "src/lib/util.rs",
            "src/empty/",
            "config/",
            "config/app.yml",
        ])
    );
}

#[test]
fn nested_excluded_dirs_only_keep_the_reincluded_path() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let case = Case::new(
        &[
            "src/app.js",
            "src/node_modules/pkg/index.js",
            "important/node_modules/keep.me",
            "important/node_modules/other.js",
            "important/node_modules/dir/x.js",
            "important/readme",
        ],
        &[],
        "**/node_modules\n!important/node_modules/keep.me\n",
    );
    assert_eq!(
        copied(env, root.path(), &case),
        set(&[
            "src/",
            "src/app.js",
            "important/",
            "important/readme",
            "important/node_modules/",
            "important/node_modules/keep.me",
        ])
    );
}

#[test]
fn excluded_dir_with_reincluded_child_keeps_its_own_mode() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let case = Case::new(
        &[
            "data/secret.key",
            "data/inner/keep.txt",
            "data/inner/drop.txt",
        ],
        &[],
        "data\n!data/inner/keep.txt\n",
    );
    let chmod = |p: &str, mode: u32| {
        fs::set_permissions(case.ctx.path().join(p), fs::Permissions::from_mode(mode)).unwrap()
    };
    chmod("data", 0o750);
    chmod("data/inner", 0o701);
    let dest = tempfile::tempdir().unwrap();
    assert_ok(&case.build(env, root.path(), Some(dest.path())));
    let c = dest.path().join("ctx");
    assert_eq!(
        tree(&c),
        set(&["data/", "data/inner/", "data/inner/keep.txt"])
    );
    let mode = |p: &str| fs::metadata(c.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        mode("data"),
        0o750,
        "the excluded parent keeps its own mode"
    );
    assert_eq!(mode("data/inner"), 0o701);
}

#[test]
fn excluded_source_dir_with_reincluded_child_is_still_a_source() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let case = Case::new(
        &["data/drop.txt", "data/inner/keep.txt", "gone/x.txt"],
        &[],
        "data\ngone\n!data/inner/keep.txt\n",
    );
    let df = case.df_dir.path().join("Dockerfile");
    fs::write(&df, "ARG BASE\nFROM $BASE\nCOPY data /d/\nCOPY dat* /w/\n").unwrap();
    let dest = tempfile::tempdir().unwrap();
    assert_ok(&case.build(env, root.path(), Some(dest.path())));
    assert_eq!(
        tree(&dest.path().join("d")),
        set(&["inner/", "inner/keep.txt"])
    );
    assert_eq!(
        tree(&dest.path().join("w")),
        set(&["inner/", "inner/keep.txt"])
    );
    // A source the .dockerignore removes entirely is still not found.
    fs::write(&df, "ARG BASE\nFROM $BASE\nCOPY gone /g/\n").unwrap();
    let out = case.build(env, root.path(), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "COPY of an ignored directory: {stderr}"
    );
    assert!(
        stderr.contains("\\\"/gone\\\": not found") || stderr.contains("\"/gone\": not found"),
        "{stderr}"
    );
}
