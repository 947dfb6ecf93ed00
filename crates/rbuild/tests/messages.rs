//! Snapshot tests of what the rbuild CLI prints when a build fails: its exit code and stderr, for
//! Dockerfile parse errors and conversion errors (BuildKit's excerpt with `>>>` on the failing
//! lines, then `ERROR: failed to solve: ...`), a failed RUN's report (BuildKit's box), a missing
//! COPY source, registry auth and connection failures on pull and push (also through a
//! `credHelpers` entry) and missing images (at their FROM line), the OOM killer, and bad flags
//! and specs.
//!
//! The snapshots live in `tests/snapshots/messages__*.snap`; digests, temp paths, ports and
//! timings are filtered out, so a snapshot changes only when the wording does. Review a change
//! with `cargo insta review` (or run with `INSTA_UPDATE=always` and read the diff).

mod common;

use common::*;
use rbuild_testsupport::{
    make_busybox_layout, push_layout_with_creds, require_root, RefusedPort, RegistryOptions,
    TestRegistry, REQUIRE_ROOT_ENV,
};
use std::fs;
use std::path::Path;
use std::process::Output;

/// A build context whose Dockerfile is `dockerfile`.
fn context(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    fs::write(dir.path().join("a.txt"), "a\n").unwrap();
    dir
}

/// `rbuild --root ROOT build --progress=plain ARGS... CONTEXT` in a fresh root.
fn rbuild_build(ctx: &Path, args: &[&str]) -> Output {
    let root = tempfile::tempdir().unwrap();
    rbuild_at(root.path())
        .args(["build", "--progress=plain"])
        .args(args)
        .arg(ctx)
        .output()
        .expect("run rbuild")
}

/// The settings every snapshot of this file is taken with: the snapshot's path is its name only,
/// and the filters that make output independent of the run.
fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_prepend_module_to_snapshot(true);
    s.set_omit_expression(true);
    let tmp = regex_escape(&std::env::temp_dir().display().to_string());
    for (re, with) in [
        (r"sha256:[0-9a-f]{64}".to_string(), "sha256:[DIGEST]"),
        (r"\b[0-9a-f]{64}\b".to_string(), "[HEX]"),
        (format!(r"{tmp}/\.tmp[A-Za-z0-9]+"), "[TMP]"),
        (format!(r"{tmp}/rbuild-[a-z]+-[A-Za-z0-9]+"), "[TMP]"),
        (r"127\.0\.0\.1:\d+".to_string(), "127.0.0.1:[PORT]"),
        // BuildKit's plain progress: `#3 0.123 output` and `#3 DONE 0.4s`.
        (r"(?m)^(#\d+) \d+\.\d+ ".to_string(), "$1 [T] "),
        (r"\b\d+\.\d+s\b".to_string(), "[T]s"),
    ] {
        s.add_filter(&re, with);
    }
    s
}

/// Escapes regex metacharacters of a literal path.
fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let meta = "\\.+*?()|[]{}^$".contains(c);
            meta.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// Asserts rbuild exited with `code` without a panic, then snapshots its exit code and output.
fn snapshot(name: &str, out: &Output, code: i32) {
    let err = stderr_text(out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{name}: want exit code {code} (101 is a panic), got {:?}\nstdout:\n{stdout}\nstderr:\n{err}",
        out.status
    );
    assert!(
        !err.contains("panicked at"),
        "{name}: rbuild panicked:\n{err}"
    );
    let mut text = format!("exit code: {code}\n--- stderr ---\n{err}");
    if !stdout.trim().is_empty() {
        text.push_str(&format!("--- stdout ---\n{stdout}"));
    }
    settings().bind(|| insta::assert_snapshot!(name, text));
}

// --- Dockerfile parse errors: the excerpt, `ERROR: failed to solve: dockerfile parse error on line N: ...` ---

#[test]
fn from_platform_errors() {
    let ctx = context("FROM --platform=$NOPE scratch\n");
    snapshot("from_platform_empty", &rbuild_build(ctx.path(), &[]), 1);
    let ctx = context("ARG P=linux/bogus\nFROM --platform=$P scratch\n");
    snapshot("from_platform_invalid", &rbuild_build(ctx.path(), &[]), 1);
}

#[test]
fn platform_flag_errors() {
    let ctx = context("FROM scratch\n");
    snapshot(
        "platform_flag_invalid",
        &rbuild_build(ctx.path(), &["--platform", "linux/amd64,bogus"]),
        2,
    );
    snapshot(
        "platform_multi_docker_output",
        &rbuild_build(
            ctx.path(),
            &[
                "--platform",
                "linux/amd64,linux/arm64",
                "--output",
                "type=docker,dest=/nonexistent/x.tar",
            ],
        ),
        1,
    );
}

#[test]
fn parse_error_unknown_instruction() {
    let ctx = context("FROM scratch\nFOO bar\n");
    snapshot(
        "parse_unknown_instruction",
        &rbuild_build(ctx.path(), &[]),
        1,
    );
}

#[test]
fn parse_error_unterminated_quote() {
    let ctx = context("FROM scratch\nENV A=\"unterminated\n");
    snapshot(
        "parse_unterminated_quote",
        &rbuild_build(ctx.path(), &[]),
        1,
    );
}

#[test]
fn parse_error_unterminated_heredoc() {
    let ctx = context("FROM scratch\nCOPY <<EOF /x\nabc\n");
    snapshot(
        "parse_unterminated_heredoc",
        &rbuild_build(ctx.path(), &[]),
        1,
    );
}

#[test]
fn parse_error_copy_without_destination() {
    let ctx = context("FROM scratch\nCOPY a.txt\n");
    snapshot("parse_copy_one_argument", &rbuild_build(ctx.path(), &[]), 1);
}

#[test]
fn parse_error_bad_healthcheck_duration() {
    let ctx = context("FROM scratch\nHEALTHCHECK --interval=soon CMD true\n");
    snapshot(
        "parse_bad_healthcheck_interval",
        &rbuild_build(ctx.path(), &[]),
        1,
    );
}

#[test]
fn parse_error_unknown_flag_on_a_continued_instruction() {
    // Every line of the instruction is marked, as BuildKit marks a multi-line instruction.
    let ctx = context("FROM scratch\nCOPY --chmown=1 \\\n  a.txt /x\nENV A=b\n");
    snapshot("parse_unknown_flag", &rbuild_build(ctx.path(), &[]), 1);
}

#[test]
fn parse_error_healthcheck_negative_retries() {
    let ctx = context("FROM scratch\nHEALTHCHECK --retries=-1 CMD true\n");
    snapshot(
        "parse_healthcheck_negative_retries",
        &rbuild_build(ctx.path(), &[]),
        1,
    );
}

#[test]
fn parse_error_healthcheck_interval_below_minimum() {
    let ctx = context("FROM scratch\nHEALTHCHECK --timeout=500us CMD true\n");
    snapshot(
        "parse_healthcheck_interval_below_minimum",
        &rbuild_build(ctx.path(), &[]),
        1,
    );
}

#[test]
fn parse_error_empty_dockerfile() {
    // No line to point at: the message alone.
    let ctx = context("# syntax=docker/dockerfile:1\n\n");
    snapshot("parse_no_instructions", &rbuild_build(ctx.path(), &[]), 1);
}

// --- Inputs that cannot be read: BuildKit's words, Go's `no such file or directory` ---

#[test]
fn input_error_no_dockerfile() {
    let ctx = tempfile::tempdir().unwrap();
    snapshot("input_no_dockerfile", &rbuild_build(ctx.path(), &[]), 1);
}

#[test]
fn input_error_no_context() {
    let ctx = tempfile::tempdir().unwrap();
    snapshot(
        "input_no_context",
        &rbuild_build(&ctx.path().join("nope"), &[]),
        1,
    );
}

// --- Conversion errors: the Dockerfile parses but does not make a build ---

#[test]
fn convert_error_expose_bad_protocol() {
    // BuildKit: `Invalid proto: tcpx` (Docker's port-spec parser).
    let ctx = context("FROM scratch\nEXPOSE 8080 80/tcpx\n");
    snapshot(
        "convert_expose_bad_proto",
        &rbuild_build(ctx.path(), &[]),
        1,
    );
}

#[test]
fn convert_error_expose_bad_port() {
    let ctx = context("FROM scratch\nEXPOSE http\n");
    snapshot("convert_expose_bad_port", &rbuild_build(ctx.path(), &[]), 1);
}

#[test]
fn convert_error_unterminated_variable() {
    // BuildKit's lexer names the word it could not expand.
    let ctx = context("FROM scratch\nWORKDIR /app/${DIR\n");
    snapshot(
        "convert_unterminated_variable",
        &rbuild_build(ctx.path(), &[]),
        1,
    );
}

#[test]
fn convert_error_stage_used_before_defined() {
    let ctx = context("FROM scratch AS a\nCOPY --from=a /x /y\n");
    snapshot(
        "convert_copy_from_own_stage",
        &rbuild_build(ctx.path(), &[]),
        1,
    );
}

#[test]
fn unknown_copy_from_stage_is_pulled_and_hinted() {
    // Like BuildKit, a `--from` that names no stage is an image; resolving `docker.io/library/
    // buidler` goes to a proxy that refuses (never to the internet), and the error hints at the
    // stage names.
    let ctx = context("FROM scratch AS builder\nFROM scratch\nCOPY --from=buidler /a /b\n");
    let root = tempfile::tempdir().unwrap();
    let proxy = RefusedPort::bind().unwrap();
    let mut cmd = rbuild_at(root.path());
    no_internet(&mut cmd, &proxy)
        .args(["build", "--progress=plain"])
        .arg(ctx.path());
    let out = cmd.output().expect("run rbuild");
    snapshot("convert_copy_from_unknown_stage", &out, 1);
}

#[test]
fn convert_error_unknown_target_stage() {
    let ctx = context("FROM scratch AS a\nFROM scratch AS b\n");
    snapshot(
        "convert_unknown_target",
        &rbuild_build(ctx.path(), &["--target", "nope"]),
        1,
    );
}

#[test]
fn convert_error_bad_chmod() {
    let ctx = context("FROM scratch\nCOPY --chmod=u+rwz a.txt /b\n");
    snapshot("convert_bad_chmod", &rbuild_build(ctx.path(), &[]), 1);
}

#[test]
fn convert_error_cache_mount_without_target() {
    let ctx = context("FROM scratch\nRUN --mount=type=cache true\n");
    snapshot(
        "convert_mount_without_target",
        &rbuild_build(ctx.path(), &[]),
        1,
    );
}

#[test]
fn convert_error_mount_unknown_key() {
    let ctx = context("FROM scratch\nRUN --mount=type=bind,target=/x,colour=red true\n");
    snapshot(
        "convert_mount_unknown_key",
        &rbuild_build(ctx.path(), &[]),
        1,
    );
}

#[test]
fn convert_error_secret_mount_without_id() {
    let ctx = context("FROM scratch\nRUN --mount=type=secret true\n");
    snapshot(
        "convert_secret_mount_without_id",
        &rbuild_build(ctx.path(), &[]),
        1,
    );
}

#[test]
fn convert_error_blank_base_name() {
    let ctx = context("ARG NOPE\nFROM $NOPE\n");
    snapshot("convert_blank_base_name", &rbuild_build(ctx.path(), &[]), 1);
}

#[test]
fn convert_error_unsupported_network() {
    let ctx = context("FROM scratch\nRUN --network=bridge true\n");
    snapshot(
        "convert_unsupported_network",
        &rbuild_build(ctx.path(), &[]),
        1,
    );
}

// --- Bad flags and specs: caught before a build starts ---

#[test]
fn flag_error_unknown_output_type() {
    let ctx = context("FROM scratch\n");
    snapshot(
        "flag_output_unknown_type",
        &rbuild_build(ctx.path(), &["-o", "type=floppy,dest=/x"]),
        1,
    );
}

#[test]
fn flag_error_output_without_type() {
    let ctx = context("FROM scratch\n");
    snapshot(
        "flag_output_without_type",
        &rbuild_build(ctx.path(), &["--output", "dest=out"]),
        1,
    );
}

// The following are usage errors: like clap's own, rbuild exits 2 for them (run_flags.rs and
// the cache/secret spec parsers), which is not a panic's 101.

#[test]
fn flag_error_secret_not_key_value() {
    let ctx = context("FROM scratch\n");
    snapshot(
        "flag_secret_not_key_value",
        &rbuild_build(ctx.path(), &["--secret", "mytoken"]),
        2,
    );
}

#[test]
fn flag_error_secret_unknown_key() {
    let ctx = context("FROM scratch\n");
    snapshot(
        "flag_secret_unknown_key",
        &rbuild_build(ctx.path(), &["--secret", "id=a,path=/x"]),
        2,
    );
}

#[test]
fn flag_error_ssh_key_file() {
    let ctx = context("FROM scratch\n");
    snapshot(
        "flag_ssh_key_file",
        &rbuild_build(ctx.path(), &["--ssh", "default=/etc/passwd"]),
        2,
    );
}

#[test]
fn ssh_required_but_not_forwarded() {
    // The step fails while its mounts are prepared (needs the root the shared env checks).
    let Some(_env) = env() else { return };
    let ctx = context("FROM scratch\nRUN --mount=type=ssh,required true\n");
    snapshot(
        "ssh_required_not_forwarded",
        &rbuild_build(ctx.path(), &[]),
        1,
    );
}

#[test]
fn flag_error_bad_memory_size() {
    let ctx = context("FROM scratch\n");
    snapshot(
        "flag_memory_bad_size",
        &rbuild_build(ctx.path(), &["--memory", "12q"]),
        2,
    );
}

#[test]
fn flag_error_memory_below_minimum() {
    let ctx = context("FROM scratch\n");
    snapshot(
        "flag_memory_below_minimum",
        &rbuild_build(ctx.path(), &["-m", "4m"]),
        2,
    );
}

#[test]
fn flag_error_bad_cache_to() {
    let ctx = context("FROM scratch\n");
    snapshot(
        "flag_cache_to_unknown_type",
        &rbuild_build(ctx.path(), &["--cache-to", "type=s3,bucket=x"]),
        2,
    );
}

// --- Build-time failures (root: a registry with the busybox base and the sandbox) ---

#[test]
fn failed_run_report() {
    let Some(env) = env() else { return };
    let ctx = context(
        "ARG BASE\nFROM $BASE\nRUN echo first\nRUN echo compiling && echo \"error: it broke\" && exit 3\nRUN echo never\n",
    );
    let base = format!("BASE={}", env.base);
    snapshot(
        "failed_run_report",
        &rbuild_build(ctx.path(), &["--build-arg", &base]),
        1,
    );
}

#[test]
fn base_image_not_found() {
    let Some(env) = env() else { return };
    let ctx = context(&format!(
        "FROM {}/no-such-image:1.0\nRUN true\n",
        env.registry.addr()
    ));
    snapshot("base_image_not_found", &rbuild_build(ctx.path(), &[]), 1);
}

#[test]
fn base_tag_not_found() {
    let Some(env) = env() else { return };
    let ctx = context(&format!(
        "FROM {}/busybox:no-such-tag\nRUN true\n",
        env.registry.addr()
    ));
    snapshot("base_tag_not_found", &rbuild_build(ctx.path(), &[]), 1);
}

#[test]
fn missing_copy_source() {
    // The step fails while its cache key is computed: BuildKit's `failed to compute cache key`,
    // with the COPY line.
    let Some(_env) = env() else { return };
    let ctx = context("FROM scratch\nCOPY a.txt /a.txt\nCOPY nope.txt /x\n");
    snapshot("missing_copy_source", &rbuild_build(ctx.path(), &[]), 1);
}

#[test]
fn registry_connection_refused() {
    // A registry port nothing listens on: the retries, then the FROM line, BuildKit's `failed to
    // resolve source metadata` and what to check in plain words.
    let port = RefusedPort::bind().unwrap();
    let ctx = context(&format!("FROM {}/busybox:latest\nRUN true\n", port.addr()));
    snapshot(
        "registry_connection_refused",
        &rbuild_build(ctx.path(), &[]),
        1,
    );
}

#[test]
fn registry_auth_failure() {
    if !require_root().expect("root check") {
        return;
    }
    let reg = TestRegistry::start_with(&RegistryOptions {
        htpasswd: Some(("alice".into(), "right-password".into())),
        ..Default::default()
    })
    .expect("start htpasswd registry");
    let ctx = context(&format!("FROM {}/busybox:latest\n", reg.addr()));
    // Anonymous: the registry answers 401 to the manifest request.
    snapshot("registry_auth_anonymous", &rbuild_build(ctx.path(), &[]), 1);
    // Wrong password in DOCKER_CONFIG: 401 again, with the credentials sent.
    let cfg = wrong_password_config(&reg.addr());
    let root = tempfile::tempdir().unwrap();
    let out = rbuild_at(root.path())
        .env("DOCKER_CONFIG", cfg.path())
        .args(["build", "--progress=plain"])
        .arg(ctx.path())
        .output()
        .expect("run rbuild");
    snapshot("registry_auth_wrong_password", &out, 1);
}

/// A `DOCKER_CONFIG` directory whose `config.json` gives `alice` a wrong password for `addr`.
fn wrong_password_config(addr: &str) -> tempfile::TempDir {
    let cfg = tempfile::tempdir().unwrap();
    fs::write(
        cfg.path().join("config.json"),
        format!(r#"{{"auths":{{"{addr}":{{"username":"alice","password":"wrong"}}}}}}"#),
    )
    .unwrap();
    cfg
}

#[test]
fn push_auth_failure() {
    let Some(env) = env() else { return };
    let reg = TestRegistry::start_with(&RegistryOptions {
        htpasswd: Some(("alice".into(), "right-password".into())),
        ..Default::default()
    })
    .expect("start htpasswd registry");
    let ctx = context("ARG BASE\nFROM $BASE\nCOPY a.txt /a.txt\n");
    let root = tempfile::tempdir().unwrap();
    let target = format!("{}/alice/app:1", reg.addr());
    let base = format!("BASE={}", env.base);
    let built = rbuild_at(root.path())
        .args([
            "build",
            "--progress=plain",
            "--build-arg",
            &base,
            "-t",
            &target,
        ])
        .arg(ctx.path())
        .output()
        .expect("run rbuild");
    assert_ok(&built);
    // Anonymous: the registry answers 401 to the first request of the push.
    let out = rbuild_at(root.path())
        .args(["push", &target])
        .output()
        .expect("run rbuild");
    snapshot("push_auth_anonymous", &out, 1);
    // A wrong password in DOCKER_CONFIG: 401 again, with the credentials sent.
    let cfg = wrong_password_config(&reg.addr());
    let out = rbuild_at(root.path())
        .env("DOCKER_CONFIG", cfg.path())
        .args(["push", &target])
        .output()
        .expect("run rbuild");
    snapshot("push_auth_wrong_password", &out, 1);
}

/// Pulling a `FROM` image from a registry whose `credHelpers` entry names `docker-credential-xyz`
/// (a script on PATH): the helper is asked for that registry; while it knows no credentials the
/// pull fails naming it, once it answers carol's the build pulls and succeeds.
#[test]
fn base_pull_goes_through_cred_helpers() {
    if !require_root().expect("root check") {
        return;
    }
    let reg = TestRegistry::start_with(&RegistryOptions {
        htpasswd: Some(("carol".into(), "pw-carol".into())),
        ..Default::default()
    })
    .expect("start htpasswd registry");
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    make_busybox_layout(&layout).unwrap();
    let base = format!("{}/private/busybox:latest", reg.addr());
    push_layout_with_creds(&layout, &base, Some(("carol", "pw-carol"))).unwrap();
    let (cfg, bin) = (dir.path().join("docker"), dir.path().join("bin"));
    fs::create_dir_all(&cfg).unwrap();
    fs::create_dir_all(&bin).unwrap();
    fs::write(
        cfg.join("config.json"),
        format!(r#"{{"credHelpers":{{"{}":"xyz"}}}}"#, reg.addr()),
    )
    .unwrap();
    let (stored, calls) = (dir.path().join("xyz-store.json"), dir.path().join("calls"));
    write_cred_helper(&bin, "xyz", &stored, Some(&calls));
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let ctx = context(&format!("FROM {base}\nCOPY a.txt /a.txt\n"));
    let build = || {
        let root = tempfile::tempdir().unwrap();
        rbuild_at(root.path())
            .env("DOCKER_CONFIG", &cfg)
            .env("PATH", &path)
            .args(["build", "--progress=plain"])
            .arg(ctx.path())
            .output()
            .expect("run rbuild")
    };
    let get = format!("get {}", reg.addr());
    let asked = || fs::read_to_string(&calls).unwrap_or_default();

    // The helper knows nothing yet: it exits 1 with "credentials not found in native keychain",
    // which docker reads as "no credentials": the pull goes anonymous and the registry refuses.
    snapshot("registry_auth_cred_helper_not_found", &build(), 1);
    let log = asked();
    assert!(
        !log.is_empty() && log.lines().all(|l| l == get),
        "the helper was asked for the registry: {log:?}"
    );

    // The helper answers carol's credentials: the base is pulled with them.
    fs::write(&stored, "{}").unwrap();
    fs::remove_file(&calls).unwrap();
    let out = build();
    assert_ok(&out);
    let log = asked();
    assert!(
        !log.is_empty() && log.lines().all(|l| l == get),
        "the pull asked the helper: {log:?}"
    );
}

/// Whether the kernel's memory cgroup controller (v1 or v2) that `--memory` needs is enabled
/// (`/proc/cgroups`: name, hierarchy, cgroups, enabled); else a visible skip.
fn memory_cgroup() -> bool {
    let table = fs::read_to_string("/proc/cgroups").unwrap_or_default();
    let enabled = table.lines().any(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols.first() == Some(&"memory") && cols.get(3) == Some(&"1")
    });
    if enabled {
        return true;
    }
    assert_ne!(
        std::env::var(REQUIRE_ROOT_ENV).as_deref(),
        Ok("1"),
        "no memory cgroup controller and {REQUIRE_ROOT_ENV}=1 forbids skipping"
    );
    println!("SKIPPED: no memory cgroup controller");
    eprintln!("SKIPPED: no memory cgroup controller");
    false
}

#[test]
fn oom_killed_run() {
    let Some(env) = env() else { return };
    if !memory_cgroup() {
        return;
    }
    // dd allocates one 200 MiB block: more than memory + swap (64m + 64m).
    let ctx = context(
        "ARG BASE\nFROM $BASE\nRUN echo allocating && dd if=/dev/zero of=/dev/null bs=200M count=1\n",
    );
    let base = format!("BASE={}", env.base);
    snapshot(
        "oom_killed_run",
        &rbuild_build(ctx.path(), &["--build-arg", &base, "--memory", "64m"]),
        1,
    );
}
