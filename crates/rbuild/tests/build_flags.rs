//! The build flags CI pipelines type, as buildx takes them: every image reference (`-t`, an
//! output's `name=`, `--cache-to ref=`, a FROM after expansion) checked with the docker reference
//! grammar before anything runs; `-q` (only the image ID on stdout), `--iidfile`, `--label`,
//! `--annotation`; `-o -` / `dest=-` streams (refused on a terminal) and `-o DIR`; a `docker
//! load` of the stream where a docker daemon is reachable; connect errors in plain words.

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

/// A busybox context writing `/hi.txt`.
fn hi_context() -> tempfile::TempDir {
    context("ARG BASE\nFROM $BASE\nRUN echo hi > /hi.txt\n")
}

/// The entry names of the tar `bytes`, read by GNU tar.
fn tar_names(bytes: &[u8]) -> Vec<String> {
    use std::io::Write;
    let mut child = std::process::Command::new("tar")
        .args(["-tf", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run tar");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("feed tar");
    let out = child.wait_with_output().expect("tar");
    assert!(out.status.success(), "tar cannot read the stream");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .collect()
}

#[test]
fn quiet_prints_only_the_image_id_and_iidfile_labels_annotations_land() {
    let Some(env) = env() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let ctx = hi_context();
    let iid = tmp.path().join("iid");
    let iid_arg = iid.to_string_lossy().into_owned();
    let out = build(
        &root,
        ctx.path(),
        &env.base,
        &[
            "-q",
            "--iidfile",
            &iid_arg,
            "-t",
            "flags:1",
            "--label",
            "org.example.team=build",
            "--label",
            "empty",
            "--annotation",
            "org.opencontainers.image.source=https://example.com/x",
            "--annotation",
            "manifest:org.example.kind=test",
        ],
    );
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.starts_with("sha256:") && stdout.len() == 7 + 64 + 1 && stdout.ends_with('\n'),
        "stdout is not one image ID: {stdout:?}"
    );
    assert!(
        !stderr_text(&out).contains("RUN echo hi"),
        "-q printed progress: {}",
        stderr_text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&iid).expect("iidfile"),
        stdout.trim_end()
    );
    let store =
        rbuild_oci::Store::open(&rbuild_build::StateDir::new(root.clone()).store()).expect("store");
    let desc = store
        .resolve_tag("flags:1")
        .expect("read tag")
        .expect("tagged");
    let record = store.read_image(&desc.digest).expect("image");
    assert_eq!(record.manifest.config.digest.to_string(), stdout.trim_end());
    let labels = record.config.config.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("org.example.team").map(String::as_str),
        Some("build")
    );
    assert_eq!(labels.get("empty").map(String::as_str), Some(""));
    let annotations = record.manifest.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("org.opencontainers.image.source")
            .map(String::as_str),
        Some("https://example.com/x")
    );
    assert_eq!(
        annotations.get("org.example.kind").map(String::as_str),
        Some("test")
    );

    // A cached rebuild prints the same ID; a bad annotation type is refused.
    let again = build(
        &root,
        ctx.path(),
        &env.base,
        &[
            "-q",
            "-t",
            "flags:1",
            "--label",
            "org.example.team=build",
            "--label",
            "empty",
            "--annotation",
            "org.opencontainers.image.source=https://example.com/x",
            "--annotation",
            "manifest:org.example.kind=test",
        ],
    );
    assert_ok(&again);
    assert_eq!(String::from_utf8_lossy(&again.stdout), stdout);
    let bad = build(&root, ctx.path(), &env.base, &["--annotation", "index:k=v"]);
    assert!(!bad.status.success());
    assert!(stderr_text(&bad).contains("annotation type `index` is not supported"));
}

#[test]
fn dash_streams_archives_to_stdout_and_a_bare_dir_is_local() {
    let Some(env) = env() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let ctx = hi_context();
    let cwd = tempfile::tempdir().expect("cwd");
    let run = |extra: &[&str]| {
        let base_arg = format!("BASE={}", env.base);
        let out = rbuild_at(&root)
            .current_dir(cwd.path())
            .args([
                "build",
                "--progress=plain",
                "-t",
                "stream:1",
                "--build-arg",
                &base_arg,
            ])
            .args(extra)
            .arg(ctx.path())
            .output()
            .expect("run rbuild");
        assert_ok(&out);
        out.stdout
    };
    // `-o -`: the root filesystem as a tar on stdout.
    let rootfs = tar_names(&run(&["-o", "-"]));
    assert!(rootfs.iter().any(|n| n == "hi.txt"), "{rootfs:?}");
    assert!(
        rootfs.iter().any(|n| n == "bin/busybox" || n == "bin/sh"),
        "{rootfs:?}"
    );
    // dest=- for the docker and oci archives.
    let docker = tar_names(&run(&["-o", "type=docker,dest=-"]));
    assert!(docker.iter().any(|n| n == "manifest.json"), "{docker:?}");
    let oci = tar_names(&run(&["-o", "type=oci,dest=-"]));
    assert!(oci.iter().any(|n| n == "oci-layout"), "{oci:?}");
    assert!(oci.iter().any(|n| n == "index.json"), "{oci:?}");
    let tar = tar_names(&run(&["-o", "type=tar,dest=-"]));
    assert_eq!(tar, rootfs);
    assert!(
        std::fs::read_dir(cwd.path()).expect("cwd").next().is_none(),
        "a file was written in the working directory (a file named `-`?)"
    );
    // `-o DIR`: type=local.
    let dir = tmp.path().join("out");
    let dir_arg = dir.to_string_lossy().into_owned();
    assert!(run(&["-o", &dir_arg]).is_empty());
    assert_eq!(
        std::fs::read_to_string(dir.join("hi.txt")).expect("hi.txt"),
        "hi\n"
    );
}

#[test]
fn docker_loads_the_stdout_archive() {
    let Some(env) = env() else { return };
    let reachable = std::process::Command::new("docker")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !reachable {
        eprintln!("SKIP docker_loads_the_stdout_archive: no docker daemon reachable");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let ctx = hi_context();
    let base_arg = format!("BASE={}", env.base);
    let out = rbuild_at(&root)
        .args([
            "build",
            "--progress=plain",
            "-t",
            "rbuild-load-test:1",
            "--build-arg",
            &base_arg,
        ])
        .args(["-o", "type=docker,dest=-"])
        .arg(ctx.path())
        .output()
        .expect("run rbuild");
    assert_ok(&out);
    use std::io::Write;
    let mut load = std::process::Command::new("docker")
        .arg("load")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run docker load");
    load.stdin
        .take()
        .expect("stdin")
        .write_all(&out.stdout)
        .expect("feed docker load");
    let loaded = load.wait_with_output().expect("docker load");
    assert!(loaded.status.success(), "docker load failed");
    assert!(
        String::from_utf8_lossy(&loaded.stdout).contains("rbuild-load-test:1"),
        "{}",
        String::from_utf8_lossy(&loaded.stdout)
    );
}

#[test]
fn a_refused_connection_reads_in_plain_words() {
    // Held bound (not listening): connecting is refused.
    let refused = rbuild_testsupport::RefusedPort::bind().expect("bind");
    let ctx = context(&format!("FROM 127.0.0.1:{}/x:1\n", refused.port()));
    let (code, stderr, _) = refused_build(ctx.path());
    assert_eq!(code, Some(1), "{stderr}");
    // BuildKit's `ERROR: failed to solve: ...` line, then a hint in plain words.
    let error = (stderr.lines())
        .find(|l| l.starts_with("ERROR: failed to solve: "))
        .unwrap_or_default();
    assert!(
        stderr.contains("\nhint: nothing accepts connections at registry"),
        "{stderr}"
    );
    assert!(
        error.ends_with(&format!(
            "cannot connect to registry 127.0.0.1:{}: connection refused",
            refused.port()
        )),
        "{stderr}"
    );
    for rust_words in ["os error", "tcp connect", "error sending request"] {
        assert!(!stderr.contains(rust_words), "{stderr}");
    }
}

fn refused_build(ctx: &Path) -> (Option<i32>, String, bool) {
    refused(ctx, &["--progress=plain"])
}

#[test]
fn a_stream_to_a_terminal_is_refused_as_buildx() {
    let Ok(script) = rbuild_testsupport::need_tool("script") else {
        eprintln!("SKIP a_stream_to_a_terminal_is_refused_as_buildx: no `script` for a terminal");
        return;
    };
    let ctx = context("FROM scratch\n");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    // `script` runs rbuild with a pseudo-terminal as its stdout.
    let line = format!(
        "{RBUILD} --root {} build -o - {}",
        root.display(),
        ctx.path().display()
    );
    let out = std::process::Command::new(script)
        .args(["-qec", &line, "/dev/null"])
        .env(
            "DOCKER_CONFIG",
            rbuild_testsupport::isolated_docker_config(&root),
        )
        .output()
        .expect("run script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "error: dest file is required for tar exporter. refusing to write to console"
        ),
        "{text}"
    );
}
