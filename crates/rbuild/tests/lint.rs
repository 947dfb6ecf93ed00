//! `rbuild check`, `rbuild build --check` and the warnings a build lists at its end, against the
//! real binary: BuildKit's text with excerpts, `--format json|sarif`, exit statuses, the
//! `# check=` directives, `.hadolint.yaml` and `.dockerignore` read from the context.

mod common;

use common::rbuild_at;
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Output;

/// The issue's Dockerfile: every line is worth a warning.
const ISSUE: &str = "FROM debian as Builder\nMAINTAINER me\nENV A b\nARG SECRET_PASSWORD\nRUN apt-get update && apt-get install curl\nCMD echo hi\n";

fn context(dockerfile: &str, extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    for (name, text) in extra {
        fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn run(root: &Path, args: &[&str], ctx: &Path) -> Output {
    rbuild_at(root)
        .args(args)
        .arg(ctx)
        .output()
        .expect("run rbuild")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_prints_buildkit_warnings_with_excerpts_and_exits_1() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context(ISSUE, &[]);
    let o = run(root.path(), &["check"], ctx.path());
    assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
    let text = out(&o);
    assert!(text.starts_with("Check complete, "), "{text}");
    assert!(text.contains("warnings have been found!\n"), "{text}");
    for needle in [
        "\nWARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/\n'as' and 'FROM' keywords' casing do not match\nDockerfile:1\n--------------------\n   1 | >>> FROM debian as Builder\n",
        "WARNING: StageNameCasing - https://docs.docker.com/go/dockerfile/rule/stage-name-casing/\nStage name 'Builder' should be lowercase\n",
        "WARNING: MaintainerDeprecated - ",
        "WARNING: LegacyKeyValueFormat - ",
        "Do not use ARG or ENV instructions for sensitive data (ARG \"SECRET_PASSWORD\")",
        "WARNING: JSONArgsRecommended - ",
        "WARNING: DL3006 - https://github.com/hadolint/hadolint/wiki/DL3006\nAlways tag the image version explicitly\n",
        "WARNING: DL3014 - ",
        "WARNING: DL3015 - ",
        "WARNING: DL3009 - ",
        "WARNING: DL3025 - ",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(err(&o).is_empty(), "{}", err(&o));
}

#[test]
fn a_clean_dockerfile_passes() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context("FROM busybox:1.36\nCOPY a /a\nCMD [\"sh\"]\n", &[]);
    let o = run(root.path(), &["check"], ctx.path());
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert_eq!(out(&o), "Check complete, no warnings found.\n");
}

#[test]
fn json_and_sarif_formats() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context("FROM busybox:1.36 as base\n", &[]);
    let o = run(root.path(), &["check", "--format", "json"], ctx.path());
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).expect("one JSON document");
    assert_eq!(v["warnings"][0]["ruleName"], "FromAsCasing");
    assert_eq!(
        v["warnings"][0]["location"]["ranges"][0]["start"]["line"],
        1
    );
    let o = run(root.path(), &["check", "--format=sarif"], ctx.path());
    let v: Value = serde_json::from_slice(&o.stdout).expect("one SARIF document");
    assert_eq!(v["version"], "2.1.0");
    assert_eq!(v["runs"][0]["results"][0]["ruleId"], "FromAsCasing");
}

#[test]
fn check_directives_skip_and_error() {
    let root = tempfile::tempdir().unwrap();
    let skip = context(
        "# check=skip=FromAsCasing,DL3006\nFROM debian as base\n",
        &[],
    );
    let o = run(root.path(), &["check"], skip.path());
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let error = context("# check=error=true\nFROM busybox:1 as base\n", &[]);
    let o = run(root.path(), &["check"], error.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains("WARNING: FromAsCasing"), "{}", out(&o));
    assert!(
        err(&o).contains("ERROR: lint violation found for rules: FromAsCasing"),
        "{}",
        err(&o)
    );
    // The build argument replaces the directive, as BuildKit's.
    let o = run(
        root.path(),
        &["check", "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=all"],
        error.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    let bad = context("# check=nope\nFROM busybox:1\n", &[]);
    let o = run(root.path(), &["check"], bad.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("invalid check option"), "{}", err(&o));
}

#[test]
fn hadolint_config_and_inline_ignores_are_honoured() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context(
        "FROM debian:12\n# hadolint ignore=DL3014\nRUN apt-get install --no-install-recommends curl\nRUN echo a\n",
        &[(".hadolint.yaml", "ignored:\n  - DL3059\nfailure-threshold: error\n")],
    );
    let o = run(root.path(), &["check"], ctx.path());
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(out(&o), "Check complete, no warnings found.\n");
    // Below the threshold: printed, but the exit status stays 0.
    let ctx = context(
        "FROM debian\n",
        &[(".hadolint.yaml", "failure-threshold: error\n")],
    );
    let o = run(root.path(), &["check"], ctx.path());
    assert_eq!(o.status.code(), Some(0));
    assert!(out(&o).contains("WARNING: DL3006"), "{}", out(&o));
    let ctx = context(
        "FROM debian:12\n",
        &[(
            ".hadolint.yaml",
            "trustedRegistries:\n  - my.registry:5000\n",
        )],
    );
    let o = run(root.path(), &["check"], ctx.path());
    assert!(out(&o).contains("WARNING: DL3026"), "{}", out(&o));
}

#[test]
fn copy_of_a_dockerignored_file_is_flagged() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context(
        "FROM busybox:1\nCOPY secret.txt /s\nCOPY app /app\n",
        &[
            (".dockerignore", "secret.txt\n"),
            ("secret.txt", "x"),
            ("app", "y"),
        ],
    );
    let o = run(root.path(), &["check"], ctx.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out(&o)
            .contains("Attempting to Copy file \"secret.txt\" that is excluded by .dockerignore"),
        "{}",
        out(&o)
    );
    assert!(!out(&o).contains("\"app\""), "{}", out(&o));
}

#[test]
fn check_reports_a_parse_error_as_the_build_does() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context("FROM busybox:1\nRUNN x\n", &[]);
    let o = run(root.path(), &["check"], ctx.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("RUNN"), "{}", err(&o));
}

#[test]
fn build_check_lints_without_building() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context(ISSUE, &[]);
    let o = run(
        root.path(),
        &["build", "--check", "-t", "never:built"],
        ctx.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(out(&o).contains("WARNING: FromAsCasing"), "{}", out(&o));
    // Nothing was pulled or built (debian is not reachable from the test anyway).
    let images = rbuild_at(root.path())
        .args(["images", "-q"])
        .output()
        .unwrap();
    assert!(out(&images).trim().is_empty(), "{}", out(&images));
    let ctx = context("FROM scratch\nCOPY a /a\n", &[]);
    let o = rbuild_at(root.path())
        .args(["build", "--check", "-f"])
        .arg(ctx.path().join("Dockerfile"))
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert_eq!(out(&o), "Check complete, no warnings found.\n");
}

#[test]
fn a_build_lists_its_warnings_at_the_end() {
    if !rbuild_testsupport::require_root().expect("root check") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let ctx = context("FROM scratch as base\nCOPY a /a\nCMD /a\n", &[("a", "x")]);
    let o = run(root.path(), &["build", "--progress=plain"], ctx.path());
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let text = err(&o);
    let tail = " 2 warnings found (use --debug to expand):\n - FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)\n - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 3)\n";
    assert!(text.ends_with(tail), "{text}");
    // hadolint's rules are for `check` only, as BuildKit's build lists its own checks.
    assert!(!text.contains("DL3025"), "{text}");
    // A failed build lists them too, before its error.
    let ctx = context("FROM scratch as base\nCOPY missing /a\n", &[]);
    let o = run(root.path(), &["build", "--progress=plain"], ctx.path());
    assert_eq!(o.status.code(), Some(1));
    let text = err(&o);
    let at = text.find(" 1 warning found").expect(&text);
    assert!(
        text[at..].contains("missing"),
        "warnings come before the error: {text}"
    );
    // `# check=error=true` fails the build before it starts.
    let ctx = context(
        "# check=error=true\nFROM scratch as base\nCOPY a /a\n",
        &[("a", "x")],
    );
    let o = run(root.path(), &["build", "--progress=plain"], ctx.path());
    assert_eq!(o.status.code(), Some(1));
    let text = err(&o);
    assert!(
        text.contains("ERROR: failed to solve: lint violation found for rules: FromAsCasing"),
        "{text}"
    );
    assert!(
        !text.contains("COPY a /a\n#"),
        "the build must not start: {text}"
    );
}
