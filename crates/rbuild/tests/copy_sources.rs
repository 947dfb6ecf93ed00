//! End-to-end tests of COPY/ADD source selection as BuildKit does it: a wildcard source that
//! matches nothing copies nothing (and is not an error, with or without other sources), a plain
//! source that does not exist stays an error, and `--from` refuses variables (COPY `--from=$VAR`,
//! RUN `--mount from=$VAR`) with the file, line, column and a caret. The real rbuild binary builds
//! Dockerfiles generated in temporary directories against a registry holding the busybox base.

use std::fs;
use std::path::Path;
use std::process::Output;

mod common;

use common::*;

/// A context directory holding `dockerfile` and the given `(path, contents)` files.
fn context(dockerfile: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    for (name, body) in files {
        let p = ctx.path().join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, body).unwrap();
    }
    ctx
}

/// Builds `ctx` into a local directory `dest`.
fn build_local(root: &Path, ctx: &Path, base: &str, dest: &Path) -> Output {
    let o = format!("type=local,dest={}", dest.display());
    build(root, ctx, base, &["--output", &o])
}

/// rbuild's stderr without the json progress lines (the error report).
fn error_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| match serde_json::from_str::<serde_json::Value>(l) {
            Err(_) => Some(l.to_string()),
            Ok(_) => json_error_report(l),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn optional_lockfile_wildcard_copies_the_rest() {
    let Some(env) = env() else { return };
    let ctx = context(
        "ARG BASE\nFROM $BASE\nWORKDIR /app\nCOPY package.json yarn.lock* ./\n\
         ADD package.json pnpm-lock.yaml* /add/\nRUN ls -A /app > /app-list.txt\n",
        &[("package.json", "{\"name\":\"x\"}\n")],
    );
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = build_local(root.path(), ctx.path(), &env.base, out.path());
    assert_ok(&o);
    assert_eq!(
        fs::read_to_string(out.path().join("app/package.json")).unwrap(),
        "{\"name\":\"x\"}\n"
    );
    assert_eq!(
        fs::read_to_string(out.path().join("app-list.txt")).unwrap(),
        "package.json\n"
    );
    assert_eq!(
        fs::read_to_string(out.path().join("add/package.json")).unwrap(),
        "{\"name\":\"x\"}\n"
    );
    assert!(!out.path().join("add/pnpm-lock.yaml").exists());

    // With the lock file present, the same line copies both.
    fs::write(ctx.path().join("yarn.lock"), "# lock\n").unwrap();
    let out2 = tempfile::tempdir().unwrap();
    let o = build_local(root.path(), ctx.path(), &env.base, out2.path());
    assert_ok(&o);
    assert_eq!(
        fs::read_to_string(out2.path().join("app-list.txt")).unwrap(),
        "package.json\nyarn.lock\n"
    );
}

#[test]
fn only_wildcard_matching_nothing_creates_nothing_and_keeps_its_key() {
    let Some(env) = env() else { return };
    // BuildKit's file backend returns before the copy when the wildcard matched nothing, so the
    // destination directory is not created either.
    let dockerfile = "ARG BASE\nFROM $BASE\nCOPY *.nomatch /newdir/\nADD missing-*.tar /adddir/\n\
                      COPY sub/*.txt /subdir/\nRUN echo done > /done.txt\n";
    let ctx = context(dockerfile, &[("sub/readme.md", "not a txt\n")]);
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = build_local(root.path(), ctx.path(), &env.base, out.path());
    assert_ok(&o);
    assert_eq!(
        fs::read_to_string(out.path().join("done.txt")).unwrap(),
        "done\n"
    );
    for d in ["newdir", "adddir", "subdir"] {
        assert!(
            fs::symlink_metadata(out.path().join(d)).is_err(),
            "/{d} was created"
        );
    }

    // The empty match gives a stable cache key: the same build again is all cached.
    let out2 = tempfile::tempdir().unwrap();
    let o = build_local(root.path(), ctx.path(), &env.base, out2.path());
    assert_ok(&o);
    let (ran, cached) = ran_and_cached(&o);
    assert!(ran.is_empty(), "ran {ran:?}");
    assert!(
        cached.iter().any(|n| n.contains("RUN echo done")),
        "cached {cached:?}"
    );

    // A file that now matches changes the key: the COPY runs again and copies it.
    fs::write(ctx.path().join("a.nomatch"), "now here\n").unwrap();
    let out3 = tempfile::tempdir().unwrap();
    let o = build_local(root.path(), ctx.path(), &env.base, out3.path());
    assert_ok(&o);
    let (ran, _) = ran_and_cached(&o);
    assert!(
        ran.iter().any(|n| n.contains("COPY *.nomatch")),
        "ran {ran:?}"
    );
    assert_eq!(
        fs::read_to_string(out3.path().join("newdir/a.nomatch")).unwrap(),
        "now here\n"
    );
}

#[test]
fn missing_plain_source_is_still_an_error() {
    let Some(env) = env() else { return };
    for line in ["COPY package.json yarn.lock ./", "ADD yarn.lock /x/"] {
        let ctx = context(
            &format!("ARG BASE\nFROM $BASE\n{line}\n"),
            &[("package.json", "{}\n")],
        );
        let root = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let o = build_local(root.path(), ctx.path(), &env.base, out.path());
        let err = error_text(&o);
        assert_eq!(o.status.code(), Some(1), "{line}: {err}");
        assert!(err.contains("\"/yarn.lock\": not found"), "{line}: {err}");
    }
}

#[test]
fn copy_from_variable_is_refused_with_its_position() {
    let Some(env) = env() else { return };
    for from in ["$SRC", "${SRC}", "${SRC:-builder}"] {
        let dockerfile = format!(
            "ARG BASE\nARG SRC=builder\nFROM $BASE AS builder\nRUN echo hi > /x\n\
             FROM $BASE\nCOPY --from={from} /x /x\n"
        );
        let ctx = context(&dockerfile, &[]);
        let root = tempfile::tempdir().unwrap();
        let o = build(root.path(), ctx.path(), &env.base, &[]);
        assert_eq!(o.status.code(), Some(1), "--from={from} built");
        let err = error_text(&o);
        assert!(
            err.contains(
                "ERROR: failed to solve: variable expansion is not supported for --from, define \
                 a new stage with FROM using ARG from global scope as a workaround"
            ),
            "{err}"
        );
        assert!(
            err.contains("Dockerfile:6\n")
                && err.contains(&format!("   6 | >>> COPY --from={from} /x /x\n")),
            "{err}"
        );
    }

    // A literal stage name keeps working, and so does an alias stage for a variable image.
    let ctx = context(
        "ARG BASE\nFROM $BASE AS builder\nRUN echo hi > /x\nFROM $BASE AS img\n\
         FROM $BASE\nCOPY --from=builder /x /x\nCOPY --from=img /bin/busybox /bb\n",
        &[],
    );
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = build_local(root.path(), ctx.path(), &env.base, out.path());
    assert_ok(&o);
    assert_eq!(fs::read_to_string(out.path().join("x")).unwrap(), "hi\n");
    assert!(out.path().join("bb").is_file());
}

#[test]
fn run_mount_from_variable_is_refused() {
    let Some(env) = env() else { return };
    let ctx = context(
        "ARG BASE\nFROM $BASE\nENV ttt=test\nRUN --mount=type=bind,from=$BASE,target=/m true\n",
        &[],
    );
    let root = tempfile::tempdir().unwrap();
    let o = build(root.path(), ctx.path(), &env.base, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = error_text(&o);
    assert!(
        err.contains(
            "ERROR: failed to solve: 'from' doesn't support variable expansion, define alias \
             stage instead"
        ),
        "{err}"
    );
    assert!(
        err.contains("Dockerfile:4\n")
            && err.contains("   4 | >>> RUN --mount=type=bind,from=$BASE,target=/m true\n"),
        "{err}"
    );
}
