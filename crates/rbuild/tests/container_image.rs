//! The rbuild container image end to end (docs/container.md): the image is built by the rbuild
//! binary under test from `packaging/container/Dockerfile` (context prepared by
//! `packaging/container/prepare-context.sh`), loaded into the local dockerd, and run
//! unprivileged: `--user 1000:1000`, `--security-opt seccomp=unconfined --security-opt
//! apparmor=unconfined`, no `--privileged`, no added devices or capabilities, `--network=host`.
//! In it rbuild builds a Dockerfile (a RUN that chowns, a `COPY --chown`, a RUN that reaches the
//! test registry over the default network) from a read-only bind-mounted context and pushes the
//! result to a loopback registry; the pushed layers must carry the in-image owners.
//!
//! The two ways around docker's masked `/proc` are both run: `systempaths=unconfined` with the
//! full process sandbox (RUN is pid 1 of its own namespace), and the default masks with
//! `RBUILD_NO_PROCESS_SANDBOX=1` (RUN shares rbuild's pid namespace); with neither the build
//! fails with the error that names both. A `--memory` limit is a warning (no delegated cgroup
//! in a container), not a failure.
//!
//! Needs root and docker.io (dockerd is started as the bench starts it when it is not running):
//! skips loudly without them, unless `RBUILD_REQUIRE_ROOT=1` or `CI` is set.

mod common;

use rbuild_oci::{Digest, Index, Manifest};
use rbuild_testsupport::{ensure_dockerd, skopeo, Docker};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The state volume and user of the image (examples/kubernetes relies on them too).
const STATE_DIR: &str = "/home/rbuild/.local/share/rbuild";

/// The image under test, loaded into dockerd.
struct Fixture {
    docker: Docker,
    image: String,
    /// The test registry's address.
    registry: String,
    /// A read-only context for the builds in the container.
    context: tempfile::TempDir,
    _root: tempfile::TempDir,
}

/// Removes the test's image from dockerd when the test ends, passed or not (the containers
/// are `--rm`, their anonymous volumes go with them).
impl Drop for Fixture {
    fn drop(&mut self) {
        self.docker.remove_image(&self.image);
    }
}

fn text(out: &Output) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the image with the rbuild under test and loads it into dockerd.
fn fixture() -> Option<Fixture> {
    let env = common::env()?;
    let docker = ensure_dockerd().expect("docker daemon")?;
    let root = tempfile::tempdir().expect("temp dir");
    let ctx = root.path().join("image-context");
    let out = Command::new("bash")
        .arg(workspace().join("packaging/container/prepare-context.sh"))
        .arg(&ctx)
        .arg(common::RBUILD)
        .output()
        .expect("run prepare-context.sh");
    assert!(out.status.success(), "prepare-context.sh: {}", text(&out));
    let image = format!("rbuild-test-image:{}", std::process::id());
    let archive = root.path().join("image.tar");
    let base = format!("BASE={}", env.base);
    let dest = format!("type=docker,dest={}", archive.display());
    let out = common::rbuild_at(&root.path().join("state"))
        .args([
            "build",
            "--progress=plain",
            "--build-arg",
            &base,
            "-t",
            &image,
        ])
        .args(["--output", &dest])
        .arg(&ctx)
        .output()
        .expect("run rbuild");
    assert!(out.status.success(), "building the image: {}", text(&out));
    docker
        .run(&["load", "-i", &archive.to_string_lossy()])
        .expect("docker load");
    Some(Fixture {
        docker,
        image,
        registry: env.registry.addr(),
        context: build_context(),
        _root: root,
    })
}

/// A context readable by the container's user: a RUN that chowns, one that reaches the
/// registry over the default network and records its pid, and a `COPY --chown`.
fn build_context() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("Dockerfile"),
        "ARG BASE\n\
         FROM $BASE\n\
         ARG REG\n\
         RUN mkdir /data && echo hi > /data/f && chown -R 123:456 /data\n\
         RUN wget -q -O /dev/null http://$REG/v2/ && echo \"pid $$\" > /pid.txt\n\
         COPY --chown=7:8 hello.txt /hello.txt\n",
    )
    .expect("write Dockerfile");
    std::fs::write(dir.path().join("hello.txt"), "hello\n").expect("write hello.txt");
    for (p, mode) in [
        (dir.path().to_path_buf(), 0o755),
        (dir.path().join("Dockerfile"), 0o644),
        (dir.path().join("hello.txt"), 0o644),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    dir
}

/// `docker run --rm --network=host --user 1000:1000 --security-opt seccomp=unconfined
/// --security-opt apparmor=unconfined EXTRA... -v CONTEXT:/ctx:ro IMAGE ARGS...`: nothing more
/// privileged than that ever runs.
fn run_image(f: &Fixture, extra: &[&str], args: &[&str]) -> Output {
    let volume = format!("{}:/ctx:ro", f.context.path().display());
    f.docker
        .cmd("run")
        .args(["--rm", "--network=host", "--user", "1000:1000"])
        .args(["--security-opt", "seccomp=unconfined"])
        .args(["--security-opt", "apparmor=unconfined"])
        .args(extra)
        .args(["-v", &volume, &f.image])
        .args(args)
        .output()
        .expect("docker run")
}

/// `build BUILD_FLAGS... --push -t REG/NAME:1 /ctx` in the container.
fn build_in_container(
    f: &Fixture,
    extra: &[&str],
    build_flags: &[&str],
    name: &str,
) -> (Output, String) {
    let reference = format!("{}/{name}:1", f.registry);
    let base = format!("BASE={}/busybox:latest", f.registry);
    let reg = format!("REG={}", f.registry);
    let mut args = vec!["build", "--progress=plain", "--build-arg", &base];
    args.extend(["--build-arg", &reg, "--push", "-t", &reference]);
    args.extend(build_flags);
    args.push("/ctx");
    let out = run_image(f, extra, &args);
    (out, reference)
}

/// Every layer entry of a pushed image: path -> (uid, gid, content of a regular file).
fn pushed_entries(reference: &str) -> BTreeMap<String, (u64, u64, String)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let dest = dir.path().join("img");
    let out = skopeo("copy", None)
        .expect("skopeo")
        .args(["--src-tls-verify=false", "-q"])
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:x", dest.display()))
        .output()
        .expect("run skopeo");
    assert!(out.status.success(), "skopeo copy: {}", text(&out));
    let read = |p: &Path| std::fs::read(p).expect("read the copied layout");
    let layout: Index = serde_json::from_slice(&read(&dest.join("index.json"))).expect("index");
    let blob = |d: &Digest| read(&dest.join("blobs/sha256").join(d.hex()));
    let manifest: Manifest =
        serde_json::from_slice(&blob(&layout.manifests[0].digest)).expect("manifest");
    let mut entries = BTreeMap::new();
    for layer in &manifest.layers {
        let bytes = blob(&layer.digest);
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        for entry in tar.entries().expect("tar") {
            let mut entry = entry.expect("entry");
            let header = entry.header().clone();
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            let mut content = Vec::new();
            if header.entry_type().is_file() {
                std::io::Read::read_to_end(&mut entry, &mut content).expect("read file");
            }
            let content = String::from_utf8_lossy(&content).into_owned();
            let owner = (header.uid().expect("uid"), header.gid().expect("gid"));
            entries.insert(
                path.trim_end_matches('/').to_string(),
                (owner.0, owner.1, content),
            );
        }
    }
    entries
}

/// The owners a RUN and `COPY --chown` gave, as the image sees them (never a subuid).
fn assert_in_image_owners(entries: &BTreeMap<String, (u64, u64, String)>) {
    let owner = |p: &str| {
        let (uid, gid, _) = entries
            .get(p)
            .unwrap_or_else(|| panic!("{p} in {entries:?}"));
        (*uid, *gid)
    };
    assert_eq!(owner("data"), (123, 456));
    assert_eq!(owner("data/f"), (123, 456));
    assert_eq!(owner("hello.txt"), (7, 8));
    assert_eq!(owner("pid.txt"), (0, 0));
    assert_eq!(entries["hello.txt"].2, "hello\n");
}

/// One test, so the image is built once and removed at its end; the phases run in order.
#[test]
fn container_image_builds_and_pushes_unprivileged() {
    let Some(f) = fixture() else { return };
    image_runs_as_rbuild_with_its_state_volume(&f);
    container_builds_and_pushes_with_the_full_process_sandbox(&f);
    masked_proc_needs_systempaths_or_no_process_sandbox(&f);
    kubernetes_job_container_builds_and_pushes(&f);
}

/// The container of examples/kubernetes/job.yaml, turned into `docker run` arguments by
/// `common::k8s_job` (user, profiles, environment, volumes, limits, arguments as the kubelet
/// would give them), with the test's image and registry in place of the example's, the
/// context in the workspace volume and an anonymous-access config.json as the Secret.
fn kubernetes_job_container_builds_and_pushes(f: &Fixture) {
    use common::k8s_job::{self, Volumes};
    if !k8s_job::python_tools() {
        return;
    }
    let job = k8s_job::load(&k8s_job::examples_dir().join("job.yaml")).remove(0);
    let auth = tempfile::tempdir().expect("temp dir");
    std::fs::write(auth.path().join("config.json"), "{\"auths\": {}}\n").expect("config.json");
    for (p, mode) in [
        (auth.path().to_path_buf(), 0o755),
        (auth.path().join("config.json"), 0o644),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let volumes = Volumes {
        host_dirs: vec![
            ("registry-auth".into(), auth.path().to_path_buf()),
            ("workspace".into(), f.context.path().to_path_buf()),
        ],
    };
    let args = k8s_job::docker_run_args(&job, "rbuild", Some(&f.image), &volumes)
        .expect("the Job's container as docker arguments");
    let repo = format!("{}/k8s-app", f.registry);
    let mut args: Vec<String> = args
        .into_iter()
        .map(|a| a.replace("registry.example.com/team/app", &repo))
        .collect();
    // The test context's build args go before the context (the Job's last argument).
    let context = args.pop().expect("context argument");
    args.extend([
        "--build-arg".into(),
        format!("BASE={}/busybox:latest", f.registry),
    ]);
    args.extend(["--build-arg".into(), format!("REG={}", f.registry)]);
    args.push(context);
    assert!(!args.iter().any(|a| a == "--privileged"), "{args:?}");
    let out = f
        .docker
        .cmd("run")
        .args(["--rm", "--network=host"])
        .args(&args)
        .output()
        .expect("docker run");
    let report = text(&out);
    assert!(out.status.success(), "docker run {args:?}: {report}");
    let entries = pushed_entries(&format!("{repo}:latest"));
    assert_in_image_owners(&entries);
    // The registry cache was exported (mode=max) next to the image.
    let cache = skopeo("inspect", None)
        .expect("skopeo")
        .args(["--tls-verify=false", "--raw"])
        .arg(format!("docker://{repo}:buildcache"))
        .output()
        .expect("run skopeo");
    assert!(
        cache.status.success(),
        "no cache exported: {}",
        text(&cache)
    );
}

/// The image's user, entrypoint, state volume, map helpers and `rbuild info`.
fn image_runs_as_rbuild_with_its_state_volume(f: &Fixture) {
    let config = f
        .docker
        .run(&[
            "image",
            "inspect",
            "--format",
            "{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Volumes}}",
            &f.image,
        ])
        .expect("docker image inspect");
    assert_eq!(
        config.trim(),
        format!("1000:1000|[\"/usr/local/bin/rbuild\"]|{{\"{STATE_DIR}\":{{}}}}")
    );
    // The map helpers carry file capabilities (the setuid bit would not do in a container).
    let out = run_image(
        f,
        &["--entrypoint", "/bin/sh"],
        &["-c", "ls -l /usr/bin/newuidmap /usr/bin/newgidmap && id"],
    );
    let listing = text(&out);
    assert!(out.status.success(), "{listing}");
    assert!(
        listing.contains("uid=1000(rbuild) gid=1000(rbuild)"),
        "{listing}"
    );
    assert!(!listing.contains("rws"), "no setuid bit: {listing}");
    let out = run_image(f, &[], &["info"]);
    let info = text(&out);
    assert!(out.status.success(), "{info}");
    for line in [
        format!("Root: {STATE_DIR}"),
        "Rootless: true".to_string(),
        " uid map: 0 -> 1000, 1-65536 -> 100000-165535 (65536 ids)".to_string(),
        "Snapshotter: overlay".to_string(),
        "Network: host (RBUILD_DEFAULT_NETWORK=host".to_string(),
        "Process sandbox: true".to_string(),
    ] {
        assert!(info.contains(&line), "`{line}` in {info}");
    }
    let out = run_image(f, &["-e", "RBUILD_NO_PROCESS_SANDBOX=1"], &["info"]);
    let info = text(&out);
    assert!(
        info.contains("Process sandbox: false (RBUILD_NO_PROCESS_SANDBOX=1)"),
        "{info}"
    );
}

/// `--security-opt systempaths=unconfined`: each RUN has its own pid namespace and /proc.
fn container_builds_and_pushes_with_the_full_process_sandbox(f: &Fixture) {
    let (out, reference) = build_in_container(
        f,
        &["--security-opt", "systempaths=unconfined"],
        &["--memory", "64m"],
        "sandboxed",
    );
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    // No delegated cgroup in a container: limits are a warning, not a failure.
    assert!(
        report.contains("WARNING: --memory not enforced: rootless mode without a delegated"),
        "{report}"
    );
    let entries = pushed_entries(&reference);
    assert_in_image_owners(&entries);
    // The RUN was pid 1 of a pid namespace of its own.
    assert_eq!(entries["pid.txt"].2, "pid 1\n");
}

/// docker's masked /proc: the clear error, then `RBUILD_NO_PROCESS_SANDBOX=1`.
fn masked_proc_needs_systempaths_or_no_process_sandbox(f: &Fixture) {
    // docker's default masks: the kernel refuses a new /proc, and the error says what to do.
    let (out, _) = build_in_container(f, &[], &[], "refused");
    let report = text(&out);
    assert!(!out.status.success(), "{report}");
    for fix in [
        "--security-opt systempaths=unconfined",
        "procMount: Unmasked",
        "RBUILD_NO_PROCESS_SANDBOX=1",
    ] {
        assert!(report.contains(fix), "`{fix}` in {report}");
    }
    // BuildKit's --oci-worker-no-process-sandbox: RUN shares rbuild's pid namespace and /proc.
    let (out, reference) =
        build_in_container(f, &["-e", "RBUILD_NO_PROCESS_SANDBOX=1"], &[], "shared-pid");
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("WARNING: RBUILD_NO_PROCESS_SANDBOX is set"),
        "{report}"
    );
    let entries = pushed_entries(&reference);
    assert_in_image_owners(&entries);
    let pid = &entries["pid.txt"].2;
    assert!(pid.starts_with("pid ") && pid != "pid 1\n", "{pid}");
}

/// The two settings are checked before anything runs: the no-process-sandbox mode is refused
/// outside rootless mode (as BuildKit refuses it), and a network other than `private` or
/// `host` is named with what it may be. Needs no docker.
#[test]
fn engine_settings_are_checked() {
    if common::env().is_none() {
        return;
    }
    let root = tempfile::tempdir().expect("temp dir");
    let run = |var: &str, value: &str| {
        let out = common::rbuild_at(root.path())
            .arg("info")
            .env(var, value)
            .output()
            .expect("run rbuild");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run("RBUILD_NO_PROCESS_SANDBOX", "1");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("error: RBUILD_NO_PROCESS_SANDBOX needs rootless mode"),
        "{stderr}"
    );
    let (code, stderr) = run("RBUILD_DEFAULT_NETWORK", "bridge");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr
            .contains("error: invalid RBUILD_DEFAULT_NETWORK=\"bridge\": expected private or host"),
        "{stderr}"
    );
    let out = common::rbuild_at(root.path())
        .arg("info")
        .env("RBUILD_DEFAULT_NETWORK", "host")
        .output()
        .expect("run rbuild");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Network: host (RBUILD_DEFAULT_NETWORK=host"),
        "{stdout}"
    );
    assert!(stdout.contains("Process sandbox: true"), "{stdout}");
}
