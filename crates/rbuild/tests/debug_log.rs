//! Debug logging (`--debug`, `-v`, `RUST_LOG`): a rebuild after a change logs, for each step,
//! its cache key and why it hit or missed (naming the changed file or input), the registry's
//! requests and timings; without the flag no log line appears.

use std::fs;
use std::path::Path;
use std::process::Output;

mod common;

use common::*;

/// `rbuild build --progress=json` with `env` set (and `RUST_LOG` removed unless given).
fn build_with(
    root: &Path,
    context: &Path,
    base: &str,
    flags: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let base_arg = format!("BASE={base}");
    let mut cmd = rbuild_at(root);
    cmd.env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(flags)
        .args(["build", "--progress=json", "--build-arg", &base_arg])
        .arg(context)
        .output()
        .expect("run rbuild")
}

/// The stderr lines that are not json progress events.
fn other_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
        .map(str::to_string)
        .collect()
}

/// The log lines: `TIMESTAMP LEVEL TARGET: message fields`.
fn log_lines(out: &Output) -> Vec<String> {
    other_lines(out)
        .into_iter()
        .filter(|l| {
            let mut words = l.split_whitespace();
            let stamp = words.next().unwrap_or_default();
            let level = words.next().unwrap_or_default();
            stamp.ends_with('Z')
                && stamp.starts_with(|c: char| c.is_ascii_digit())
                && ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level)
        })
        .collect()
}

/// The log lines with `message` that mention `vertex`.
fn lines_about<'a>(lines: &'a [String], message: &str, vertex: &str) -> Vec<&'a String> {
    lines
        .iter()
        .filter(|l| l.contains(message) && l.contains(vertex))
        .collect()
}

#[test]
fn debug_logs_say_why_steps_missed_and_nothing_is_logged_without_the_flag() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    fs::copy(
        testdata("cache-steps").join("Dockerfile"),
        ctx.path().join("Dockerfile"),
    )
    .unwrap();
    fs::write(ctx.path().join("first.txt"), "one\n").unwrap();
    fs::write(ctx.path().join("second.txt"), "two\n").unwrap();

    // Cold, with --debug: every step is new; the base image's pull shows its requests.
    let cold = build_with(root.path(), ctx.path(), &env.base, &["--debug"], &[]);
    assert_ok(&cold);
    let lines = log_lines(&cold);
    let new_copy = lines_about(&lines, "cache miss", "COPY first.txt");
    assert!(
        new_copy.iter().any(|l| l.contains("new vertex")),
        "cold build: the COPY is a new vertex:\n{}",
        lines.join("\n")
    );
    assert!(
        lines.iter().any(|l| l.contains("registry request")
            && l.contains("method=GET")
            && l.contains("/manifests/")
            && l.contains("status=200")),
        "cold build logs the manifest request:\n{}",
        lines.join("\n")
    );
    assert!(
        lines.iter().any(|l| l.contains("executed")
            && l.contains("RUN cat /first.txt")
            && l.contains("exec_time=")),
        "cold build logs the RUN's time:\n{}",
        lines.join("\n")
    );

    // The pipeline's phases log their times.
    for phase in ["load", "resolve", "plan", "solve", "export", "outputs"] {
        assert!(
            lines.iter().any(|l| l.contains("phase finished")
                && l.contains(&format!("phase=\"{phase}\""))
                && l.contains("phase_time=")),
            "cold build logs the {phase} phase's time:\n{}",
            lines.join("\n")
        );
    }
    for (message, field) in [
        ("layer pulled", "unpack_time="),
        ("layer exported", "export_time="),
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(message) && l.contains(field)),
            "cold build logs `{message}` with its time:\n{}",
            lines.join("\n")
        );
    }

    // No-op without the flag: only json progress on stderr, no log line.
    let quiet = build_with(root.path(), ctx.path(), &env.base, &[], &[]);
    assert_ok(&quiet);
    assert_eq!(log_lines(&quiet), Vec::<String>::new());
    let others = other_lines(&quiet);
    assert!(
        others.is_empty(),
        "nothing but JSON events on stderr: {others:?}"
    );
    assert!(
        !events(&quiet).is_empty(),
        "the progress events are still there"
    );

    // Change the second file and rebuild with -v: its COPY misses because that context file
    // changed, the RUN after it because its input (that COPY) changed; the first RUN hits (and
    // the first COPY below it is not needed at all).
    fs::write(ctx.path().join("second.txt"), "two, changed\n").unwrap();
    let changed = build_with(root.path(), ctx.path(), &env.base, &["-v"], &[]);
    assert_ok(&changed);
    let lines = log_lines(&changed);
    let all = lines.join("\n");
    let copy_miss = lines_about(&lines, "cache miss", "COPY second.txt");
    assert!(
        copy_miss
            .iter()
            .any(|l| l.contains("content changed: context second.txt")),
        "the COPY's miss names the changed file:\n{all}"
    );
    let run_miss = lines_about(&lines, "cache miss", "RUN cat /second.txt");
    assert!(
        run_miss
            .iter()
            .any(|l| l.contains("input changed: #0") && l.contains("COPY second.txt")),
        "the RUN's miss names its changed input:\n{all}"
    );
    assert!(
        !lines_about(&lines, "cache hit", "RUN cat /first.txt").is_empty(),
        "the unchanged RUN is logged as a hit:\n{all}"
    );
    assert!(
        lines_about(&lines, "cache miss", "COPY first.txt").is_empty(),
        "the unchanged COPY does not miss:\n{all}"
    );
    assert!(
        lines.iter().any(|l| l.contains("cache key")
            && l.contains("COPY first.txt")
            && l.contains("key=")
            && l.contains("key_time=")),
        "keys are logged:\n{all}"
    );

    // RUST_LOG alone turns logging on too (a no-op rebuild: hits only).
    let by_env = build_with(
        root.path(),
        ctx.path(),
        &env.base,
        &[],
        &[("RUST_LOG", "rbuild=debug")],
    );
    assert_ok(&by_env);
    let lines = log_lines(&by_env);
    assert!(
        !lines_about(&lines, "cache hit", "RUN cat /second.txt").is_empty(),
        "RUST_LOG=rbuild=debug logs hits:\n{}",
        lines.join("\n")
    );
    assert!(lines_about(&lines, "cache miss", "RUN").is_empty());
}
