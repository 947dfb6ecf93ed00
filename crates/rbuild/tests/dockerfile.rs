//! End-to-end tests of Dockerfile semantics (issue 3 points 1, 2, 3, 5 and 7): directives,
//! instruction metadata in the config, ARG scoping, ONBUILD, stdin inputs and actionable errors.

use rbuild_testsupport::need_tool;
use serde_json::Value;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;

use common::*;

fn run(root: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = rbuild_at(root)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rbuild");
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// The raw config JSON of an image in an OCI layout (skopeo would drop Docker-only fields such as
/// Healthcheck, Shell and OnBuild), after checking that skopeo reads the image too.
fn config_of(layout: &Path, name: &str) -> Value {
    // An output layout names its entry by the tag alone, as BuildKit's does.
    let tag = name.rsplit_once(':').map_or(name, |(_, t)| t);
    let skopeo = need_tool("skopeo").unwrap();
    let out = Command::new(skopeo)
        .args(["inspect", "--config"])
        .arg(format!("oci:{}:{tag}", layout.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = rbuild_oci::Store::open(layout).unwrap();
    let desc = store.resolve_tag(tag).unwrap().expect("tag in layout");
    let record = store.read_image(&desc.digest).unwrap();
    serde_json::from_slice(&store.read_blob(&record.manifest.config.digest).unwrap()).unwrap()
}

#[test]
fn metadata_instructions_land_in_the_config() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let layout = dest.path().join("oci");
    let fsdir = dest.path().join("fs");
    let oci_output = format!("type=oci,dest={},tar=false", layout.display());
    let local_output = format!("type=local,dest={}", fsdir.display());
    let out = build(
        root.path(),
        &testdata("metadata"),
        &env.base,
        &[
            "-t",
            "meta:1",
            "--output",
            &oci_output,
            "--output",
            &local_output,
        ],
    );
    assert_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: Dockerfile: `# syntax=example.com/custom/frontend:1`"),
        "{stderr}"
    );
    let config = config_of(&layout, "meta:1");
    let c = &config["config"];
    assert_eq!(config["author"], "Jane Doe <jane@example.com>");
    assert_eq!(c["Shell"], serde_json::json!(["/bin/sh", "-ec"]));
    assert_eq!(
        c["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "wget -q -O- http://localhost/ || exit 1"])
    );
    assert_eq!(c["Healthcheck"]["Interval"], 30_000_000_000i64);
    assert_eq!(c["Healthcheck"]["Timeout"], 5_000_000_000i64);
    assert_eq!(c["Healthcheck"]["StartPeriod"], 60_000_000_000i64);
    assert_eq!(c["Healthcheck"]["Retries"], 4);
    assert_eq!(c["StopSignal"], "SIGTERM");
    for v in ["/data", "/logs", "/cache"] {
        assert!(c["Volumes"].get(v).is_some(), "volume {v} in {c}");
    }
    for p in ["8000/tcp", "8001/tcp", "8002/tcp", "53/udp"] {
        assert!(c["ExposedPorts"].get(p).is_some(), "port {p} in {c}");
    }
    assert_eq!(c["User"], "app:staff");
    assert_eq!(c["WorkingDir"], "/home/app/work");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(c["Cmd"], serde_json::json!(["/bin/sh", "-ec", "echo hi"]));
    assert_eq!(
        fs::read_to_string(fsdir.join("shell.txt")).unwrap().trim(),
        "shell /bin/sh"
    );
    let id = fs::read_to_string(fsdir.join("tmp/id.txt")).unwrap();
    assert!(id.starts_with("uid=1000(app) gid=50(staff)"), "{id}");
    use std::os::unix::fs::MetadataExt;
    let wd = fs::metadata(fsdir.join("home/app/work")).unwrap();
    assert_eq!(
        (wd.uid(), wd.gid()),
        (1000, 50),
        "WORKDIR is created for the USER"
    );
    let made = fs::metadata(fsdir.join("home/app/work/made-by-app")).unwrap();
    assert_eq!(made.uid(), 1000);
}

#[test]
fn arg_scoping_platform_args_and_proxy_args() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let output = format!("type=local,dest={}", dest.path().display());
    let ctx = testdata("args");
    let build = |extra: &[&str]| {
        let mut args = vec!["--output", output.as_str()];
        args.extend_from_slice(extra);
        common::build(root.path(), &ctx, &env.base, &args)
    };
    let out = build(&[
        "--build-arg",
        "LOCAL=from-cli",
        "--build-arg",
        "HTTP_PROXY=http://proxy.one:3128",
    ]);
    assert_ok(&out);
    let args = fs::read_to_string(dest.path().join("args.txt")).unwrap();
    assert_eq!(args.trim(), "GLOBAL=global-default LOCAL=from-cli UNUSED=unset PLATFORM=linux/amd64 ARCH=amd64 ENV=from-cli-fallback");
    assert_eq!(
        fs::read_to_string(dest.path().join("proxy.txt"))
            .unwrap()
            .trim(),
        "proxy=http://proxy.one:3128"
    );
    // A different proxy value does not invalidate the cache (BuildKit keeps proxy args out of cache keys).
    let out = build(&[
        "--build-arg",
        "LOCAL=from-cli",
        "--build-arg",
        "HTTP_PROXY=http://proxy.two:3128",
    ]);
    assert_ok(&out);
    let (ran, _) = ran_and_cached(&out);
    assert!(
        !ran.iter().any(|n| n.contains("RUN")),
        "proxy change reran {ran:?}"
    );
    assert_reported_cached(&out, "> /proxy.txt");
}

#[test]
fn onbuild_triggers_run_in_the_child_and_are_not_inherited() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let layout = dest.path().join("oci");
    // The parent is only in the local store: FROM resolves stored tags without a registry round trip.
    let parent = format!("{}/onbuild-parent:1", env.registry.addr());
    let base = format!("BASE={}", env.base);
    assert_ok(&run(
        root.path(),
        &[
            "build",
            "-t",
            &parent,
            "--build-arg",
            &base,
            testdata("onbuild-base").to_str().unwrap(),
        ],
        None,
    ));
    let parent_arg = format!("PARENT={parent}");
    let fsdir = dest.path().join("fs");
    let out = run(
        root.path(),
        &[
            "build",
            "-t",
            "child:1",
            "--build-arg",
            &parent_arg,
            "--output",
            &format!("type=local,dest={}", fsdir.display()),
            "--output",
            &format!("type=oci,dest={},tar=false", layout.display()),
            testdata("onbuild-child").to_str().unwrap(),
        ],
        None,
    );
    assert_ok(&out);
    assert_eq!(
        fs::read_to_string(fsdir.join("onbuild-ran.txt")).unwrap(),
        "triggered\n"
    );
    assert_eq!(
        fs::read_to_string(fsdir.join("from-child-context.txt")).unwrap(),
        "child context file\n"
    );
    assert_eq!(
        fs::read_to_string(fsdir.join("after.txt")).unwrap(),
        "after-trigger\n"
    );
    let config = config_of(&layout, "child:1");
    assert!(
        config["config"]
            .get("OnBuild")
            .is_none_or(|v| v.is_null() || v.as_array().is_some_and(|a| a.is_empty())),
        "{config}"
    );
    assert_eq!(config["config"]["Labels"]["role"], "base");
}

#[test]
fn dockerfile_and_context_from_stdin() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let dockerfile = format!(
        "FROM {}\nCOPY hello.txt /hello.txt\nRUN cat /hello.txt > /copy.txt\n",
        env.base
    );
    // -f - : the Dockerfile on stdin, the context from a directory.
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("hello.txt"), "from dir\n").unwrap();
    let out_dir = dest.path().join("a");
    assert_ok(&run(
        root.path(),
        &[
            "build",
            "-f",
            "-",
            "--output",
            &format!("type=local,dest={}", out_dir.display()),
            ctx.path().to_str().unwrap(),
        ],
        Some(dockerfile.as_bytes()),
    ));
    assert_eq!(
        fs::read_to_string(out_dir.join("copy.txt")).unwrap(),
        "from dir\n"
    );
    // - : a tar context (gzip-compressed) on stdin, with its Dockerfile inside.
    let mut tar_bytes = Vec::new();
    {
        let gz = flate2::write::GzEncoder::new(&mut tar_bytes, flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        for (name, data) in [
            ("Dockerfile", dockerfile.as_bytes()),
            ("hello.txt", b"from tar\n".as_slice()),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap();
    }
    let out_dir = dest.path().join("b");
    assert_ok(&run(
        root.path(),
        &[
            "build",
            "--output",
            &format!("type=local,dest={}", out_dir.display()),
            "-",
        ],
        Some(&tar_bytes),
    ));
    assert_eq!(
        fs::read_to_string(out_dir.join("copy.txt")).unwrap(),
        "from tar\n"
    );
    // - : a bare Dockerfile on stdin (no context).
    let bare = format!("FROM {}\nRUN echo bare > /bare.txt\n", env.base);
    let out_dir = dest.path().join("c");
    assert_ok(&run(
        root.path(),
        &[
            "build",
            "--output",
            &format!("type=local,dest={}", out_dir.display()),
            "-",
        ],
        Some(bare.as_bytes()),
    ));
    assert_eq!(
        fs::read_to_string(out_dir.join("bare.txt")).unwrap(),
        "bare\n"
    );
}

#[test]
fn errors_name_what_exists() {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch AS first\nCOPY x /x\nRUNN echo\n",
    )
    .unwrap();
    let out = run(root.path(), &["build", ctx.path().to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_text(&out);
    assert!(
        err.contains("Dockerfile:3\n") && err.contains("did you mean") && err.contains("RUN"),
        "{err}"
    );
    assert!(err.contains("   3 | >>> RUNN echo\n"), "{err}");

    // A misspelled flag: BuildKit's wording, a suggestion and the flags the instruction takes.
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY --chwon=1 x /x\n",
    )
    .unwrap();
    let out = run(root.path(), &["build", ctx.path().to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_text(&out);
    // (After the progress of the build's first vertices, as BuildKit's.)
    assert!(
        err.trim_end().ends_with(
            "Dockerfile:2\n\
             --------------------\n   1 |     FROM scratch\n   2 | >>> COPY --chwon=1 x /x\n\
             \x20  3 |     \n--------------------\n\
             ERROR: failed to solve: dockerfile parse error on line 2: unknown flag: --chwon (did you mean --chown?)\n\
             hint: COPY takes --chown, --from, --chmod, --link, --exclude, --parents"
        ),
        "{err}"
    );

    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch AS first\nFROM scratch AS second\n",
    )
    .unwrap();
    let out = run(
        root.path(),
        &["build", "--target", "thrid", ctx.path().to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_text(&out);
    assert!(
        err.contains("thrid") && err.contains("first, second"),
        "{err}"
    );
}

#[test]
fn unknown_copy_from_stage_names_the_stages() {
    if env().is_none() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch AS builder\nFROM scratch\nCOPY --from=buidler /x /x\n",
    )
    .unwrap();
    // `buidler` is pulled as docker.io/library/buidler: through a proxy that refuses, never the
    // internet.
    let proxy = rbuild_testsupport::RefusedPort::bind().unwrap();
    let mut cmd = rbuild_at(root.path());
    let out = no_internet(&mut cmd, &proxy)
        .arg("build")
        .arg(ctx.path())
        .output()
        .expect("run rbuild");
    let err = stderr_text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("buidler") && err.contains("stages: builder"),
        "{err}"
    );
}

#[test]
fn heredocs_in_run_and_copy() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let output = format!("type=local,dest={}", dest.path().display());
    let out = build(
        root.path(),
        &testdata("heredoc"),
        &env.base,
        &["--output", &output],
    );
    assert_ok(&out);
    let read =
        |p: &str| fs::read_to_string(dest.path().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(read("run-heredoc.txt"), "hello world\n");
    assert!(dest.path().join("made-by-heredoc").is_dir());
    assert_eq!(
        read("shebang.txt"),
        "tabs stripped, run by the interpreter\n"
    );
    assert_eq!(read("one.txt"), "first world\n");
    assert_eq!(
        read("two.txt"),
        "second $NAME\n",
        "a quoted delimiter switches expansion off"
    );
    assert_eq!(read("etc/greeting.conf"), "greeting=hello world\n");
    assert_eq!(read("opt/RAW"), "literal $NAME\n");
    assert_eq!(read("opt/SCRIPT"), "echo world\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(dest.path().join("opt/SCRIPT"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o755
    );
}

#[test]
fn dockerignore_and_per_dockerfile_ignore_files() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    let src = testdata("dockerignore");
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(ctx.path())
        .status()
        .unwrap();
    assert!(status.success());
    let dest = tempfile::tempdir().unwrap();
    let output = format!("type=local,dest={}", dest.path().join("a").display());
    assert_ok(&build(
        root.path(),
        ctx.path(),
        &env.base,
        &["--output", &output],
    ));
    let c = dest.path().join("a/ctx");
    assert!(c.join("keep.txt").is_file());
    assert!(!c.join("top.log").exists(), "*.log excludes top-level logs");
    assert!(c.join("logs/deep.log").is_file(), "*.log is top level only");
    assert!(
        !c.join("logs/x.tmp").exists(),
        "**/*.tmp excludes at any depth"
    );
    assert!(c.join("sub/keep.txt").is_file(), "! re-includes");
    assert!(!c.join("sub/other.txt").exists());
    // An ignored file's change keeps the COPY cached.
    fs::write(ctx.path().join("top.log"), "changed log").unwrap();
    let again = build(root.path(), ctx.path(), &env.base, &[]);
    assert_ok(&again);
    let (ran, _) = ran_and_cached(&again);
    assert!(
        !ran.iter().any(|n| n.contains("COPY")),
        "ignored change reran {ran:?}"
    );
    assert_reported_cached(&again, "COPY . /ctx/");
    // NAME.dockerignore beside the Dockerfile wins over .dockerignore.
    let output = format!("type=local,dest={}", dest.path().join("b").display());
    let file = ctx.path().join("special.Dockerfile");
    assert_ok(&build(
        root.path(),
        ctx.path(),
        &env.base,
        &["-f", file.to_str().unwrap(), "--output", &output],
    ));
    let c = dest.path().join("b/ctx");
    assert!(!c.join("keep.txt").exists());
    assert!(c.join("top.log").is_file() && c.join("sub/other.txt").is_file());
}
