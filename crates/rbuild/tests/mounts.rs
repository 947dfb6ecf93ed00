//! End-to-end tests of `RUN --mount` (cache, bind, tmpfs, secret) and `--secret`: the real rbuild
//! binary against a real `docker-registry` with a busybox base, real namespaces and overlayfs.
//! Images are exported as OCI layouts and every layer blob is read back.

use rbuild_testsupport::{isolated_docker_config, require_root, shared_dir};
use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

use common::*;

fn build_env(
    root: &Path,
    context: &Path,
    base: &str,
    extra: &[&str],
    vars: &[(&str, &str)],
) -> Output {
    let base_arg = format!("BASE={base}");
    let mut cmd = rbuild_at(root);
    cmd.args(["build", "--progress=json", "--build-arg", &base_arg])
        .args(extra)
        .arg(context);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("run rbuild")
}

fn build(root: &Path, context: &Path, base: &str, extra: &[&str]) -> Output {
    build_env(root, context, base, extra, &[])
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "rbuild failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(dir: &Path, rel: &str) -> String {
    fs::read_to_string(dir.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// The blobs of an OCI layout (raw bytes, and gunzipped when they are gzip).
fn blobs(layout: &Path) -> Vec<(PathBuf, Vec<u8>, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    for e in fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let path = e.unwrap().path();
        let raw = fs::read(&path).unwrap();
        let mut plain = Vec::new();
        let gunzipped = flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut plain)
            .ok()
            .map(|_| plain);
        out.push((path, raw, gunzipped));
    }
    out
}

/// Every path (without leading `/` or `./`) in every layer of the layout.
fn layer_paths(layout: &Path) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for (_, _, plain) in blobs(layout) {
        let Some(plain) = plain else { continue };
        let mut ar = tar::Archive::new(plain.as_slice());
        let Ok(entries) = ar.entries() else { continue };
        for e in entries {
            let e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            paths.insert(
                p.trim_start_matches("./")
                    .trim_start_matches('/')
                    .trim_end_matches('/')
                    .to_string(),
            );
        }
    }
    paths
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            files_under(&e.path(), out);
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}

fn sha256_hex(data: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn cache_mount_persists_across_builds_and_never_enters_a_layer() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let ctx = testdata("mount-cache");
    let mut seen = Vec::new();
    // Second build: a changed step (STEP=2); third: --no-cache with the same step.
    for (i, (step, extra)) in [("1", None), ("2", None), ("2", Some("--no-cache"))]
        .into_iter()
        .enumerate()
    {
        let layout = out.path().join(format!("oci{i}"));
        let local = out.path().join(format!("fs{i}"));
        let step_arg = format!("STEP={step}");
        let o1 = format!("type=oci,dest={},tar=false", layout.display());
        let o2 = format!("type=local,dest={}", local.display());
        let mut args = vec!["--build-arg", &step_arg, "--output", &o1, "--output", &o2];
        args.extend(extra);
        let o = build(root.path(), &ctx, &env.base, &args);
        assert_ok(&o);
        seen.push(read(&local, "seen.txt"));
        // uid/gid/mode apply to the new cache dir; the id came from an ARG.
        assert_eq!(read(&local, "cache-stat.txt"), "1 2 750\n");
        assert_eq!(read(&local, "locked.txt"), "locked-ok\n");
        // A cache seeded from a stage's directory.
        assert_eq!(read(&local, "seeded.txt"), "seeded\n");
        assert!(!local.join("seeded").exists());
        // Targets that the image did not have (and their created parents) are not in the result.
        assert!(!local.join("cache").exists(), "mount point leaked");
        assert!(!local.join("var").exists(), "created parents leaked");
        let paths = layer_paths(&layout);
        for p in &paths {
            assert!(
                !(p == "cache" || p.starts_with("cache/") || p.starts_with("var")),
                "cache mount path {p} is in a layer"
            );
        }
    }
    assert_eq!(seen, ["run 1\n", "run 1\nrun 2\n", "run 1\nrun 2\nrun 2\n"]);
    let cache_root = root.path().join("cache-mounts-v1");
    assert!(
        cache_root.is_dir(),
        "caches live under ROOT/cache-mounts-v1"
    );
}

#[test]
fn bind_mounts_from_context_and_stage_and_tmpfs() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    // A private copy of the context, so a write through a mount would show.
    let ctx = out.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    for f in ["Dockerfile", "input.txt", "ignored.txt", ".dockerignore"] {
        fs::copy(testdata("mount-bind").join(f), ctx.join(f)).unwrap();
    }
    let layout = out.path().join("oci");
    let local = out.path().join("fs");
    let o1 = format!("type=oci,dest={},tar=false", layout.display());
    let o2 = format!("type=local,dest={}", local.display());
    let o = build(
        root.path(),
        &ctx,
        &env.base,
        &["--output", &o1, "--output", &o2],
    );
    assert_ok(&o);
    // From the context: a file, and the whole context without .dockerignore'd files.
    assert_eq!(read(&local, "ctx.txt"), "bound\n");
    assert_eq!(
        read(&local, "ctx-list.txt"),
        ".dockerignore\nDockerfile\ninput.txt\n"
    );
    // rw: the write is visible to the RUN, then discarded (the context is untouched).
    assert_eq!(read(&local, "ctx-rw.txt"), "changed\n");
    assert_eq!(
        read(&local, "ctx-rw-list.txt"),
        ".dockerignore\nDockerfile\ninput.txt\n"
    );
    assert_eq!(
        fs::read_to_string(ctx.join("input.txt")).unwrap(),
        "bound\n"
    );
    // From a stage: read-only by default, rw writes are discarded.
    assert_eq!(read(&local, "stage.txt"), "from-stage\n");
    assert_eq!(read(&local, "stage-ro.txt"), "readonly\n");
    assert_eq!(read(&local, "stage-rw.txt"), "changed\n");
    assert_eq!(read(&local, "stage-after-rw.txt"), "from-stage\n");
    // From an image.
    assert_eq!(read(&local, "img.txt"), "img-ok\n");
    // tmpfs: fresh, empty, really a tmpfs.
    assert_eq!(read(&local, "tmpfs-list.txt"), "");
    assert_eq!(read(&local, "tmpfs-type.txt"), "tmpfs\n");
    // No mount point (or parent created for one) is in the image.
    for gone in ["in.txt", "ctx", "mnt", "scratch", "data"] {
        assert!(!local.join(gone).exists(), "/{gone} leaked into the image");
    }
    let paths = layer_paths(&layout);
    for p in &paths {
        for gone in ["in.txt", "ctx", "mnt", "scratch", "data"] {
            assert!(
                !(p == gone || p.starts_with(&format!("{gone}/"))),
                "/{p} is in a layer"
            );
        }
    }

    // The bind source is part of the cache key: a changed context file reruns the step.
    let o = build(root.path(), &ctx, &env.base, &["--output", &o2]);
    assert_ok(&o);
    let err = stderr_text(&o);
    assert!(
        !err.lines()
            .any(|l| l.contains("\"event\":\"started\"") && l.contains("RUN")),
        "an unchanged build reran steps:\n{err}"
    );
    assert_reported_cached(&o, "echo img-ok > /img.txt");
    fs::write(ctx.join("input.txt"), "rebound\n").unwrap();
    let o = build(root.path(), &ctx, &env.base, &["--output", &o2]);
    assert_ok(&o);
    assert_eq!(read(&local, "ctx.txt"), "rebound\n");
    // An ignored file changing does not invalidate the whole-context bind step.
    fs::write(ctx.join("ignored.txt"), "still ignored\n").unwrap();
    let o = build(root.path(), &ctx, &env.base, &["--output", &o2]);
    assert_ok(&o);
    let err = stderr_text(&o);
    let started: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("\"event\":\"started\"") && l.contains("RUN"))
        .collect();
    assert!(started.is_empty(), "steps reran: {started:?}");
    assert_reported_cached(&o, "echo img-ok > /img.txt");
}

#[test]
fn secrets_are_readable_in_run_and_appear_nowhere_else() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file_secret = b"rbuild-test-secret-FILE-5c1e9a77d0";
    let env_secret = "rbuild-test-secret-ENV-e02b6f1934";
    let secret_file = out.path().join("tok");
    fs::write(&secret_file, file_secret).unwrap();
    let layout = out.path().join("oci");
    let local = out.path().join("fs");
    let o1 = format!("type=oci,dest={},tar=false", layout.display());
    let o2 = format!("type=local,dest={}", local.display());
    let s1 = format!("id=tok,src={}", secret_file.display());
    let o = build_env(
        root.path(),
        &testdata("mount-secret"),
        &env.base,
        &[
            "--secret",
            &s1,
            "--secret",
            "type=env,id=envtok,src=RBUILD_TEST_TOKEN",
            "--output",
            &o1,
            "--output",
            &o2,
        ],
        &[("RBUILD_TEST_TOKEN", env_secret)],
    );
    assert_ok(&o);
    // Readable inside the RUN (checked through hashes, so the image never holds the value).
    assert_eq!(
        read(&local, "file-hash.txt").trim(),
        sha256_hex(file_secret)
    );
    assert_eq!(
        read(&local, "env-hash.txt").trim(),
        sha256_hex(env_secret.as_bytes())
    );
    assert_eq!(read(&local, "file-stat.txt"), "400 0 0\n");
    assert_eq!(read(&local, "env-file.txt"), "nofile\n");
    assert_eq!(read(&local, "creds-stat.txt"), "440 1 2\n");
    assert_eq!(read(&local, "optional.txt"), "absent\n");
    assert!(!local.join("run").exists(), "/run/secrets leaked");
    assert!(!local.join("etc/app").exists(), "/etc/app leaked");

    let needles: [&[u8]; 2] = [file_secret, env_secret.as_bytes()];
    // Not in any blob (layers gunzipped, config, manifests) ...
    for (path, raw, plain) in blobs(&layout) {
        for n in needles {
            assert!(!contains(&raw, n), "secret in blob {}", path.display());
            if let Some(p) = &plain {
                assert!(!contains(p, n), "secret in layer {}", path.display());
            }
        }
    }
    // ... nor in the json progress output ...
    for n in needles {
        assert!(
            !contains(&o.stdout, n) && !contains(&o.stderr, n),
            "secret in the output"
        );
    }
    // ... nor anywhere in the state dir (cache index, store, snapshots, cache mounts).
    let mut files = Vec::new();
    files_under(root.path(), &mut files);
    assert!(files
        .iter()
        .any(|f| f.ends_with(rbuild_solver::INDEX_FILE_NAME)));
    for f in files {
        let data = fs::read(&f).unwrap_or_default();
        for n in needles {
            assert!(!contains(&data, n), "secret in {}", f.display());
        }
    }

    // The secret's value is not part of the cache key: another value reuses the cached steps.
    fs::write(&secret_file, b"another value").unwrap();
    let o = build_env(
        root.path(),
        &testdata("mount-secret"),
        &env.base,
        &[
            "--secret",
            &s1,
            "--secret",
            "id=envtok,env=RBUILD_TEST_TOKEN",
        ],
        &[("RBUILD_TEST_TOKEN", "different")],
    );
    assert_ok(&o);
    let err = stderr_text(&o);
    assert!(
        !err.lines()
            .any(|l| l.contains("\"event\":\"started\"") && l.contains("RUN")),
        "a changed secret value invalidated the cache:\n{err}"
    );
    assert_reported_cached(&o, "> /optional.txt");
}

#[test]
fn missing_required_secret_fails_naming_it() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let o = build(
        root.path(),
        &testdata("mount-secret-missing"),
        &env.base,
        &["--secret", "id=other,env=PATH"],
    );
    let err = stderr_text(&o);
    assert_eq!(o.status.code(), Some(1), "want exit code 1:\n{err}");
    assert!(
        err.contains("secret needed-token: not found"),
        "error does not name the secret:\n{err}"
    );
}

#[test]
fn conformance_case_52_run_mount_cache() {
    let Some(shared) = shared_dir().expect("shared dir check") else {
        return;
    };
    if !require_root().expect("root check") {
        return;
    }
    let conformance = shared.join("conformance");
    let serve = Command::new("bash")
        .arg(conformance.join("serve-base.sh"))
        .output()
        .expect("run serve-base.sh");
    assert!(serve.status.success(), "serve-base.sh failed");
    let out_dir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(conformance.join("run.sh"))
        .args(["--builder", "rbuild", "52"])
        .env("RBUILD", RBUILD)
        .env("RBUILD_ROOT", root.path())
        .env("DOCKER_CONFIG", isolated_docker_config(root.path()))
        .env("CONFORMANCE_OUT", out_dir.path())
        .output()
        .expect("run conformance");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("PASS 52-run-mount-cache"),
        "case 52 failed:\n{stdout}\n{}",
        fs::read_to_string(out_dir.path().join("52-run-mount-cache.diff")).unwrap_or_default()
    );
}
