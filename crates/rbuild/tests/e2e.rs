//! End-to-end tests: the real rbuild binary builds Dockerfiles from `testdata/` against a real
//! `docker-registry` on a loopback port (base image made from Debian's busybox-static), with real
//! namespaces and overlayfs; results are checked with umoci, skopeo and rbuild's own store reader.

use rbuild_testsupport::{need_tool, require_root};
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

mod common;

use common::*;

fn rbuild(root: &Path, args: &[&str]) -> Output {
    rbuild_at(root).args(args).output().expect("run rbuild")
}

fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for entry in fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            fs::copy(entry.path(), to).unwrap();
        }
    }
}

#[test]
fn multistage_build_is_read_back_by_umoci_skopeo_and_rbuild() {
    let Some(env) = env() else { return };
    let umoci = need_tool("umoci").unwrap();
    let skopeo = need_tool("skopeo").unwrap();
    let root = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let layout = out_dir.path().join("layout");
    let output = format!("type=oci,dest={},tar=false", layout.display());
    let out = build(
        root.path(),
        &testdata("multistage"),
        &env.base,
        &["-t", "e2e/multi:1", "--output", &output],
    );
    assert_ok(&out);

    // umoci: the final filesystem.
    let bundle = out_dir.path().join("bundle");
    let st = Command::new(&umoci)
        .args(["unpack", "--image"])
        .arg(format!("{}:1", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        fs::read_to_string(rootfs.join("opt/app/app.txt")).unwrap(),
        "application payload\n"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("opt/app/sub/built.txt")).unwrap(),
        "built\n"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("opt/copied-from-index.txt")).unwrap(),
        "application payload\n"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(rootfs.join("opt/app/sub"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o700
    );
    assert!(
        !rootfs.join("src").exists(),
        "builder stage files must not leak into the final stage"
    );
    assert!(rootfs.join("bin/busybox").is_file());

    // skopeo: the config.
    let st = Command::new(&skopeo)
        .args(["inspect", "--config"])
        .arg(format!("oci:{}:1", layout.display()))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let config: Value = serde_json::from_slice(&st.stdout).unwrap();
    let c = &config["config"];
    assert_eq!(c["Cmd"], serde_json::json!(["cat", "/opt/app/app.txt"]));
    assert_eq!(c["User"], "nobody");
    assert_eq!(c["Labels"]["org.example.kind"], "multistage");
    assert!(
        c["ExposedPorts"].get("8080/tcp").is_some() && c["ExposedPorts"].get("53/udp").is_some()
    );
    let env_list: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(env_list.contains(&"APP_HOME=/opt/app"));
    assert!(
        !env_list.iter().any(|e| e.starts_with("BUILDER_ONLY")),
        "builder ENV leaked: {env_list:?}"
    );
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);

    // rbuild's own reader: the local store holds the same image under the tag.
    let store = rbuild_oci::Store::open(root.path()).unwrap();
    let desc = store
        .resolve_tag("e2e/multi:1")
        .unwrap()
        .expect("tag in store");
    let record = store.read_image(&desc.digest).unwrap();
    assert_eq!(record.manifest.layers.len(), 3);
    assert_eq!(record.config.config.user.as_deref(), Some("nobody"));
    let images = rbuild(root.path(), &["images"]);
    assert_ok(&images);
    let listing = String::from_utf8_lossy(&images.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["e2e/multi", "1"])),
        "rbuild images:\n{listing}"
    );
}

#[test]
fn run_is_isolated_pid1_and_cannot_see_host_files() {
    let Some(env) = env() else { return };
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("host-marker");
    fs::write(&marker, "secret").unwrap();
    let root = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let marker_arg = format!("MARKER={}", marker.display());
    let output = format!("type=local,dest={}", dest.path().display());
    let out = build(
        root.path(),
        &testdata("isolation"),
        &env.base,
        &["--build-arg", &marker_arg, "--output", &output],
    );
    assert_ok(&out);
    assert_eq!(
        fs::read_to_string(dest.path().join("pid.txt"))
            .unwrap()
            .trim(),
        "1"
    );
    assert_eq!(
        fs::read_to_string(dest.path().join("marker.txt"))
            .unwrap()
            .trim(),
        "hidden"
    );
    assert_eq!(
        fs::read_to_string(dest.path().join("hostname.txt"))
            .unwrap()
            .trim(),
        "buildkitsandbox"
    );
    assert_eq!(fs::read_to_string(&marker).unwrap(), "secret");
}

#[test]
fn network_none_has_only_loopback() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let output = format!("type=local,dest={}", dest.path().display());
    let out = build(
        root.path(),
        &testdata("network"),
        &env.base,
        &["--network=none", "--output", &output],
    );
    assert_ok(&out);
    let netdev = fs::read_to_string(dest.path().join("netdev.txt")).unwrap();
    let ifaces: Vec<&str> = netdev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, vec!["lo"], "{netdev}");
}

#[test]
fn rebuilds_run_only_what_changed() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    copy_dir(&testdata("cache-steps"), ctx.path());
    fs::write(ctx.path().join("first.txt"), "one\n").unwrap();
    fs::write(ctx.path().join("second.txt"), "two\n").unwrap();

    let cold = build(root.path(), ctx.path(), &env.base, &["-t", "e2e/cache"]);
    assert_ok(&cold);
    let (ran, _) = ran_and_cached(&cold);
    assert_eq!(
        ran.iter().filter(|n| n.contains("RUN")).count(),
        2,
        "cold build runs both RUNs: {ran:?}"
    );

    // No-op: nothing runs.
    let noop = build(root.path(), ctx.path(), &env.base, &["-t", "e2e/cache"]);
    assert_ok(&noop);
    let (ran, cached) = ran_and_cached(&noop);
    assert!(
        ran.iter()
            .all(|n| !n.contains("RUN") && !n.contains("COPY")),
        "no-op rebuild ran {ran:?}"
    );
    // The last step is reported as a cache hit under its own name (its inputs are not needed,
    // so they get no event, as in BuildKit).
    assert!(
        cached.iter().any(|n| n.contains("RUN cat /second.txt")),
        "no-op rebuild reports the last RUN cached: {cached:?}"
    );
    // The same in BuildKit's plain progress: `#N RUN ...` then `#N CACHED`.
    let plain = Command::new(RBUILD)
        .arg("--root")
        .arg(root.path())
        .env("DOCKER_CONFIG", ctx.path().join("no-docker-config"))
        .args([
            "build",
            "--progress=plain",
            "-t",
            "e2e/cache",
            "--build-arg",
        ])
        .arg(format!("BASE={}", env.base))
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_ok(&plain);
    let text = String::from_utf8_lossy(&plain.stderr);
    let lines: Vec<&str> = text.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.starts_with('#') && l.ends_with("RUN cat /second.txt > /after-second.txt"))
        .unwrap_or_else(|| panic!("no step header for the last RUN:\n{text}"));
    let number = lines[header].split(' ').next().unwrap();
    assert_eq!(
        lines.get(header + 1).copied(),
        Some(format!("{number} CACHED").as_str()),
        "{text}"
    );
    // Only the build's own vertices (`[internal] load ...`, `exporting to image`) are DONE.
    let steps: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with('#') && l.contains(" [") && !l.contains(" [internal] "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(
        !steps.iter().any(|n| text.contains(&format!("{n} DONE "))),
        "a no-op rebuild ran a step:\n{text}"
    );

    // Change the second file: only the steps after its COPY run.
    fs::write(ctx.path().join("second.txt"), "two, changed\n").unwrap();
    let changed = build(root.path(), ctx.path(), &env.base, &["-t", "e2e/cache"]);
    assert_ok(&changed);
    let (ran, cached) = ran_and_cached(&changed);
    assert!(
        cached.iter().any(|n| n.contains("RUN cat /first.txt")),
        "the RUN before the changed COPY is reported cached: {cached:?}"
    );
    let ran_runs: Vec<&String> = ran.iter().filter(|n| n.contains("RUN")).collect();
    assert_eq!(
        ran_runs.len(),
        1,
        "only the RUN after the changed COPY runs: {ran:?}"
    );
    assert!(ran_runs[0].contains("after-second"));
    assert!(
        !ran.iter().any(|n| n.contains("first.txt")),
        "the first COPY stays cached: {ran:?}"
    );
}

#[test]
fn same_size_same_mtime_content_change_is_noticed() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    copy_dir(&testdata("cache-steps"), ctx.path());
    fs::write(ctx.path().join("first.txt"), "AAAA\n").unwrap();
    fs::write(ctx.path().join("second.txt"), "two\n").unwrap();
    let dest = tempfile::tempdir().unwrap();
    let output = format!("type=local,dest={}", dest.path().display());
    assert_ok(&build(root.path(), ctx.path(), &env.base, &[]));

    let path = ctx.path().join("first.txt");
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    fs::write(&path, "BBBB\n").unwrap();
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), mtime);

    let out = build(root.path(), ctx.path(), &env.base, &["--output", &output]);
    assert_ok(&out);
    let (ran, _) = ran_and_cached(&out);
    assert!(
        ran.iter().any(|n| n.contains("after-first")),
        "content change with same size and mtime must rerun: {ran:?}"
    );
    assert_eq!(
        fs::read_to_string(dest.path().join("after-first.txt")).unwrap(),
        "BBBB\n"
    );
}

#[test]
fn syntax_error_points_at_its_line() {
    let root = tempfile::tempdir().unwrap();
    let out = rbuild(
        root.path(),
        &["build", testdata("syntax-error").to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Dockerfile:4\n"), "{err}");
    assert!(err.contains(">>> FROBNICATE x"), "{err}");
    assert!(
        err.contains("ERROR: failed to solve: dockerfile parse error on line 4: "),
        "{err}"
    );
}

#[test]
fn missing_copy_source_is_named() {
    if !require_root().unwrap() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let out = rbuild(
        root.path(),
        &[
            "build",
            "--progress=plain",
            testdata("missing-source").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does-not-exist.txt"), "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
}

#[test]
fn failing_run_reports_line_exit_code_and_output() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let out = build(root.path(), &testdata("failing-run"), &env.base, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_text(&out);
    assert!(err.contains("exit code: 3"), "{err}");
    assert!(err.contains("Dockerfile:4"), "{err}");
    assert!(
        err.contains(">>> RUN echo \"some output before failing\" && exit 3"),
        "{err}"
    );
    assert!(err.contains("some output before failing"), "{err}");
}

#[test]
fn docker_archive_output_is_readable_by_skopeo() {
    let Some(env) = env() else { return };
    let skopeo = need_tool("skopeo").unwrap();
    let root = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let archive = dest.path().join("image.tar");
    let oci_tar = dest.path().join("oci.tar");
    let out = build(
        root.path(),
        &testdata("network"),
        &env.base,
        &[
            "-t",
            "e2e/docker:2",
            "--output",
            &format!("type=docker,dest={}", archive.display()),
            "--output",
            &format!("type=oci,dest={}", oci_tar.display()),
        ],
    );
    assert_ok(&out);
    let st = Command::new(&skopeo)
        .args(["inspect", "--config"])
        .arg(format!("docker-archive:{}", archive.display()))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "skopeo docker-archive: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let config: Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    let st = Command::new(&skopeo)
        .args(["inspect"])
        .arg(format!("oci-archive:{}:2", oci_tar.display()))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "skopeo oci-archive: {}",
        String::from_utf8_lossy(&st.stderr)
    );
}

#[test]
fn a_closed_stdout_pipe_ends_quietly_with_sigpipes_status() {
    // `rbuild images | head -0`: the reader is gone before rbuild writes its first line.
    let tmp = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = rbuild_at(tmp.path())
        .arg("images")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(
        stderr.is_empty(),
        "rbuild printed on a closed pipe: {stderr}"
    );
}
