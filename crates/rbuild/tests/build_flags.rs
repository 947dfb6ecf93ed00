//! The build flags CI pipelines type, as buildx takes them: every image reference (`-t`, an
//! output's `name=`, `--cache-to ref=`, a FROM after expansion) checked with the docker reference
//! grammar before anything runs.

mod common;

use common::*;
use std::path::Path;

/// A context whose Dockerfile is `dockerfile`.
fn context(dockerfile: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().expect("tempdir");
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).expect("write Dockerfile");
    ctx
}

/// Runs `rbuild build ARGS CONTEXT` on a fresh root; returns (exit code, stderr, whether the
/// root was created).
fn refused(ctx: &Path, args: &[&str]) -> (Option<i32>, String, bool) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let out = rbuild_at(&root)
        .arg("build")
        .args(args)
        .arg(ctx)
        .output()
        .expect("run rbuild");
    (out.status.code(), stderr_text(&out), root.exists())
}

#[test]
fn bad_tags_are_refused_with_dockers_message_before_anything_runs() {
    let ctx = context("FROM scratch\nRUN never-runs\n");
    let cases = [
        ("", "invalid reference format"),
        ("bad tag", "invalid reference format"),
        (
            "UPPER/Case:1",
            "invalid reference format: repository name (UPPER/Case) must be lowercase",
        ),
        ("foo:bar:baz", "invalid reference format"),
        ("../../x:y", "invalid reference format"),
    ];
    for (tag, why) in cases {
        let (code, stderr, created) = refused(ctx.path(), &["-t", tag]);
        assert_eq!(code, Some(1), "-t {tag:?}: {stderr}");
        assert_eq!(
            stderr.trim_end(),
            format!("error: invalid argument \"{tag}\" for \"-t, --tag\" flag: {why}"),
            "-t {tag:?}"
        );
        assert!(!created, "-t {tag:?} touched the root");
    }
}

#[test]
fn output_names_cache_refs_and_base_images_are_checked_too() {
    let ctx = context("FROM scratch\n");
    let (code, stderr, created) = refused(ctx.path(), &["-o", "type=image,name=ok:1,name=No"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "invalid argument \"No\" for \"-o, --output\" flag: invalid reference format: repository name (library/No) must be lowercase"
        ),
        "{stderr}"
    );
    assert!(!created);
    let (code, stderr, _) = refused(ctx.path(), &["-o", "type=docker,dest=/x.tar,name=a:b:c"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("invalid reference format"), "{stderr}");
    let (code, stderr, created) = refused(ctx.path(), &["--cache-to", "type=registry,ref=x y"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("ref=x y: invalid reference format"),
        "{stderr}"
    );
    assert!(!created);

    // A FROM whose expansion is no reference fails before any pull, with BuildKit's words.
    let ctx = context("ARG IMG=Busy/Box:1\nFROM $IMG\n");
    let (code, stderr, _) = refused(ctx.path(), &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "failed to parse stage name \"Busy/Box:1\": invalid reference format: repository name (Busy/Box) must be lowercase"
        ),
        "{stderr}"
    );
}

#[test]
fn good_references_pass_the_check() {
    // A valid name with a registry port, a digest-free tag and separators reaches the build
    // (which then fails on its own: the Dockerfile is empty), not the reference check.
    let ctx = context("");
    let (_, stderr, _) = refused(
        ctx.path(),
        &["-t", "127.0.0.1:5000/a/b__c.d-e:v1.0_x", "-t", "plain"],
    );
    assert!(!stderr.contains("invalid reference format"), "{stderr}");
    assert!(!stderr.contains("invalid argument"), "{stderr}");
}
