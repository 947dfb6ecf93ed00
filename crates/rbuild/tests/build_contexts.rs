//! `--build-context NAME=DIR|docker-image://REF` and `--no-cache-filter STAGE` against the real
//! binary. No registry: every image starts `FROM scratch` with the host's static busybox copied
//! in for RUN, and the `docker-image://` override names an image built into the store earlier in
//! the same test.

mod common;

use common::{assert_ok, assert_reported_cached, ran_and_cached, rbuild_at, stderr_text};
use rbuild_testsupport::require_root;
use std::path::Path;
use std::process::Output;

const BUSYBOX: &str = "/bin/busybox";

/// True when the test can run (root, a static busybox on the host); prints why when not.
fn ready() -> bool {
    if !require_root().expect("root check") {
        return false;
    }
    if !Path::new(BUSYBOX).is_file() {
        println!("SKIPPED: no {BUSYBOX} on this host");
        eprintln!("SKIPPED: no {BUSYBOX} on this host");
        return false;
    }
    true
}

/// A context directory with `Dockerfile` and the host's busybox as `busybox`.
fn context(dir: &Path, dockerfile: &str) {
    std::fs::create_dir_all(dir).expect("mkdir context");
    std::fs::write(dir.join("Dockerfile"), dockerfile).expect("write Dockerfile");
    std::fs::copy(BUSYBOX, dir.join("busybox")).expect("copy busybox");
}

/// `rbuild build --progress=json EXTRA... CONTEXT` under `root`.
fn build(root: &Path, ctx: &Path, extra: &[&str]) -> Output {
    rbuild_at(root)
        .args(["build", "--progress=json"])
        .args(extra)
        .arg(ctx)
        .output()
        .expect("run rbuild")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Fails unless a step whose name contains `step` ran (was not taken from the cache).
fn assert_ran(out: &Output, step: &str) {
    let (ran, cached) = ran_and_cached(out);
    assert!(
        ran.iter().any(|n| n.contains(step)),
        "`{step}` did not run; ran: {ran:?}, cached: {cached:?}"
    );
    assert!(
        !cached.iter().any(|n| n.contains(step)),
        "`{step}` was reported cached: {cached:?}"
    );
}

const NAMED_DIR_DOCKERFILE: &str = r#"FROM scratch AS tools
COPY busybox /bin/busybox
FROM tools AS other
RUN ["/bin/busybox", "sh", "-c", "echo other > /other.txt"]
FROM tools AS build
COPY --from=lib a.txt /a.txt
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox cat /a.txt > /seen.txt"]
RUN --mount=from=lib,target=/m ["/bin/busybox", "sh", "-c", "/bin/busybox cat /m/b.txt > /mounted.txt"]
FROM lib
COPY --from=build /seen.txt /mounted.txt /
COPY --from=other /other.txt /other.txt
"#;

#[test]
fn a_named_directory_serves_copy_from_and_from_and_only_its_dependents_rerun() {
    if !ready() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root, ctx, lib) = (
        tmp.path().join("root"),
        tmp.path().join("ctx"),
        tmp.path().join("lib"),
    );
    context(&ctx, NAMED_DIR_DOCKERFILE);
    // The main context's a.txt differs: the output proves which one was read.
    std::fs::write(ctx.join("a.txt"), "main context\n").expect("write");
    std::fs::create_dir_all(&lib).expect("mkdir lib");
    std::fs::write(lib.join("a.txt"), "from lib\n").expect("write");
    std::fs::write(lib.join("b.txt"), "b one\n").expect("write");
    std::fs::write(lib.join("secret.txt"), "never copied\n").expect("write");
    // The named directory's own .dockerignore applies to it.
    std::fs::write(lib.join(".dockerignore"), "secret.txt\n").expect("write");
    let flag = format!("lib={}", lib.display());
    let out_dir = tmp.path().join("out");
    let dest = format!("type=local,dest={}", out_dir.display());

    let first = build(&root, &ctx, &["--build-context", &flag, "-o", &dest]);
    assert_ok(&first);
    assert_eq!(read(&out_dir.join("seen.txt")), "from lib\n");
    assert_eq!(
        read(&out_dir.join("mounted.txt")),
        "b one\n",
        "RUN --mount from=lib"
    );
    assert_eq!(read(&out_dir.join("a.txt")), "from lib\n", "FROM lib");
    assert_eq!(read(&out_dir.join("b.txt")), "b one\n", "FROM lib");
    assert_eq!(read(&out_dir.join("other.txt")), "other\n");
    assert!(
        !out_dir.join("secret.txt").exists(),
        "lib's .dockerignore was not applied"
    );
    assert!(
        !out_dir.join("Dockerfile").exists(),
        "FROM lib took the main context"
    );

    // Unchanged: the last step is a cache hit (so nothing below it is even looked up).
    let again = build(&root, &ctx, &["--build-context", &flag]);
    assert_ok(&again);
    assert_reported_cached(&again, "COPY --from=other");
    assert!(ran_and_cached(&again).0.is_empty(), "a step ran");

    // A changed file in the named directory re-runs what reads it, nothing else: `COPY
    // --from=lib a.txt` is keyed by the content of a.txt (unchanged), so the RUN after it stays
    // cached, while the RUN that mounts lib (and sees b.txt) re-runs.
    std::fs::write(lib.join("b.txt"), "b two\n").expect("write");
    std::fs::remove_dir_all(&out_dir).expect("rm out");
    let changed = build(&root, &ctx, &["--build-context", &flag, "-o", &dest]);
    assert_ok(&changed);
    assert_reported_cached(&changed, "[build 2/3] RUN");
    assert_ran(&changed, "[build 3/3] RUN --mount=from=lib");
    // (`[tools 1/1] COPY busybox` is below a cache hit now: not even looked up.)
    assert!(
        !ran_and_cached(&changed)
            .0
            .iter()
            .any(|n| n.contains("[tools 1/1] COPY busybox")),
        "the tools stage ran"
    );
    assert_reported_cached(&changed, "[other 1/1] RUN");
    assert_eq!(read(&out_dir.join("b.txt")), "b two\n");
    assert_eq!(read(&out_dir.join("mounted.txt")), "b two\n");

    // A directory that does not exist is refused before anything runs, naming the context.
    let refused = build(&root, &ctx, &["--build-context", "lib=/nonexistent/dir"]);
    assert!(!refused.status.success());
    let err = stderr_text(&refused);
    assert!(
        err.contains("unable to prepare context lib") && err.contains("/nonexistent/dir"),
        "{err}"
    );
}

#[test]
fn docker_image_replaces_the_image_a_from_names() {
    if !ready() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    // An image in the local store, built from scratch.
    let base_ctx = tmp.path().join("base");
    context(
        &base_ctx,
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY flavor /flavor\nENV FLAVOR=local\n",
    );
    std::fs::write(base_ctx.join("flavor"), "local base\n").expect("write");
    assert_ok(&build(&root, &base_ctx, &["-t", "localbase/tools:1"]));

    // A Dockerfile naming an image no registry here has; the named context replaces it.
    let ctx = tmp.path().join("ctx");
    context(
        &ctx,
        "FROM example.invalid/nowhere/base:7\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo $FLAVOR > /env.txt\"]\n\
         FROM scratch\n\
         COPY --from=0 /flavor /env.txt /\n\
         COPY --from=example.invalid/nowhere/base:7 /flavor /again.txt\n",
    );
    let out_dir = tmp.path().join("out");
    let dest = format!("type=local,dest={}", out_dir.display());
    let out = build(
        &root,
        &ctx,
        &[
            "--build-context",
            "example.invalid/nowhere/base:7=docker-image://localbase/tools:1",
            "-o",
            &dest,
        ],
    );
    assert_ok(&out);
    assert_eq!(read(&out_dir.join("flavor")), "local base\n");
    assert_eq!(read(&out_dir.join("again.txt")), "local base\n");
    // The replacement's config (ENV) is the stage's config.
    assert_eq!(read(&out_dir.join("env.txt")), "local\n");
}

const FILTER_DOCKERFILE: &str = r#"FROM scratch AS tools
COPY busybox /bin/busybox
FROM tools AS a
RUN ["/bin/busybox", "sh", "-c", "echo a > /a.txt"]
FROM tools AS b
RUN ["/bin/busybox", "sh", "-c", "echo b > /b.txt"]
FROM tools
COPY --from=a /a.txt /a.txt
COPY --from=b /b.txt /b.txt
"#;

#[test]
fn no_cache_filter_reruns_the_named_stage_only() {
    if !ready() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root, ctx) = (tmp.path().join("root"), tmp.path().join("ctx"));
    context(&ctx, FILTER_DOCKERFILE);
    assert_ok(&build(&root, &ctx, &[]));
    let cached = build(&root, &ctx, &[]);
    assert_ok(&cached);
    assert_reported_cached(&cached, "COPY --from=b");
    assert!(ran_and_cached(&cached).0.is_empty(), "a step ran");

    let filtered = build(&root, &ctx, &["--no-cache-filter", "a"]);
    assert_ok(&filtered);
    assert_ran(&filtered, "echo a");
    assert_reported_cached(&filtered, "echo b");
    assert_reported_cached(&filtered, "[tools 1/1] COPY busybox");
    // Dependents of the filtered stage run again too.
    assert_ran(&filtered, "COPY --from=a");

    // A list names several stages.
    let both = build(&root, &ctx, &["--no-cache-filter", "a,b"]);
    assert_ok(&both);
    assert_ran(&both, "echo a");
    assert_ran(&both, "echo b");
    assert_reported_cached(&both, "[tools 1/1] COPY busybox");
}
