//! Early cutoff: `COPY --from=<stage>` and `RUN --mount=type=bind,from=<stage>` are keyed by the
//! content they read from the stage's result (computed after the stage is built), so a stage
//! rebuilt to the same bytes leaves everything after it cached, while a change of content,
//! mode or owner of the copied files re-runs what follows. Asserted from the json progress
//! events (which steps started, which were reported cached), never from timing.

use std::fs;
use std::path::Path;
use std::process::Output;

mod common;

use common::*;

const DOCKERFILE: &str = "ARG BASE
FROM $BASE AS builder
COPY src/ /src/
RUN mkdir -p /out && cat /src/main.sh > /out/app.sh \\
 && chmod $(cat /src/mode) /out/app.sh && chown $(cat /src/owner) /out/app.sh
FROM $BASE AS bound
RUN --mount=type=bind,from=builder,source=/out,target=/mnt cat /mnt/app.sh > /bound.txt
FROM $BASE
COPY --from=builder /out/ /app/
COPY --from=bound /bound.txt /app/bound.txt
RUN cat /app/app.sh > /app/copy.txt && stat -c '%a %u' /app/app.sh > /app/meta.txt
";

fn context() -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("Dockerfile"), DOCKERFILE).unwrap();
    fs::create_dir(ctx.path().join("src")).unwrap();
    for (name, text) in [
        ("main.sh", "echo hello\n"),
        ("notes.md", "notes\n"),
        ("mode", "755\n"),
        ("owner", "0:0\n"),
    ] {
        fs::write(ctx.path().join("src").join(name), text).unwrap();
    }
    ctx
}

fn rebuild(root: &Path, ctx: &Path, base: &str, extra: &[&str]) -> (Vec<String>, Vec<String>) {
    let out: Output = build(root, ctx, base, extra);
    assert_ok(&out);
    ran_and_cached(&out)
}

fn ran(list: &[String], step: &str) -> bool {
    list.iter().any(|n| n.contains(step))
}

const BUILDER_RUN: &str = "[builder 3/3] RUN";
const BOUND_RUN: &str = "[bound 2/2] RUN";
const COPY_FROM: &str = "COPY --from=builder";
const FINAL_RUN: &str = "[stage-2 4/4] RUN";

#[test]
fn an_identical_stage_output_leaves_what_follows_cached_and_a_changed_one_reruns_it() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let ctx = context();
    let src = ctx.path().join("src");

    let (ran_cold, _) = rebuild(root.path(), ctx.path(), &env.base, &[]);
    for step in [BUILDER_RUN, BOUND_RUN, COPY_FROM, FINAL_RUN] {
        assert!(
            ran(&ran_cold, step),
            "{step} did not run cold: {ran_cold:?}"
        );
    }

    // No-op: nothing runs, the final step is reported cached.
    let (ran_noop, cached) = rebuild(root.path(), ctx.path(), &env.base, &[]);
    assert!(ran_noop.is_empty(), "a no-op rebuild ran {ran_noop:?}");
    assert!(ran(&cached, FINAL_RUN), "cached: {cached:?}");

    // A file the builder copies but whose output does not depend on it: the builder re-runs,
    // its /out is byte-identical, so the bind-mount RUN, the COPY --from and the final RUN
    // stay cached.
    fs::write(src.join("notes.md"), "other notes\n").unwrap();
    let (ran_cut, cached) = rebuild(root.path(), ctx.path(), &env.base, &[]);
    assert!(
        ran(&ran_cut, BUILDER_RUN),
        "the builder did not re-run: {ran_cut:?}"
    );
    for step in [BOUND_RUN, COPY_FROM, FINAL_RUN] {
        assert!(
            !ran(&ran_cut, step),
            "{step} re-ran on identical content: {ran_cut:?}"
        );
    }
    assert!(ran(&cached, FINAL_RUN), "cached: {cached:?}");

    // The content changes: everything after the builder re-runs.
    fs::write(src.join("main.sh"), "echo changed\n").unwrap();
    let (ran_changed, _) = rebuild(root.path(), ctx.path(), &env.base, &[]);
    for step in [BUILDER_RUN, BOUND_RUN, COPY_FROM, FINAL_RUN] {
        assert!(
            ran(&ran_changed, step),
            "{step} did not re-run: {ran_changed:?}"
        );
    }

    // Same bytes, another mode: the copy keeps modes, so what follows re-runs.
    fs::write(src.join("mode"), "700\n").unwrap();
    let (ran_mode, _) = rebuild(root.path(), ctx.path(), &env.base, &[]);
    for step in [BUILDER_RUN, COPY_FROM, FINAL_RUN] {
        assert!(
            ran(&ran_mode, step),
            "{step} did not re-run on a mode change: {ran_mode:?}"
        );
    }

    // Same bytes and mode, another owner: the copy keeps owners, so what follows re-runs.
    fs::write(src.join("owner"), "1000:1000\n").unwrap();
    let (ran_owner, _) = rebuild(root.path(), ctx.path(), &env.base, &[]);
    for step in [BUILDER_RUN, COPY_FROM, FINAL_RUN] {
        assert!(
            ran(&ran_owner, step),
            "{step} did not re-run on an owner change: {ran_owner:?}"
        );
    }

    // --no-cache runs everything, and the build after it is a no-op again.
    let (ran_all, _) = rebuild(root.path(), ctx.path(), &env.base, &["--no-cache"]);
    for step in [BUILDER_RUN, BOUND_RUN, COPY_FROM, FINAL_RUN] {
        assert!(
            ran(&ran_all, step),
            "{step} did not run under --no-cache: {ran_all:?}"
        );
    }
    let (ran_after, _) = rebuild(root.path(), ctx.path(), &env.base, &[]);
    assert!(ran_after.is_empty(), "ran after --no-cache: {ran_after:?}");

    // --no-cache-filter of the builder skips the cache for its steps and everything that
    // depends on them (as before content keys): all of it runs, and a plain build after it is a
    // no-op again.
    let (ran_filter, _) = rebuild(
        root.path(),
        ctx.path(),
        &env.base,
        &["--no-cache-filter", "builder"],
    );
    for step in [BUILDER_RUN, BOUND_RUN, COPY_FROM, FINAL_RUN] {
        assert!(ran(&ran_filter, step), "{step} did not run: {ran_filter:?}");
    }
    let (ran_after, _) = rebuild(root.path(), ctx.path(), &env.base, &[]);
    assert!(
        ran_after.is_empty(),
        "ran after --no-cache-filter: {ran_after:?}"
    );
}

/// The image ID (config digest) tagged `tag` under `root`. Manifests may differ: A's store keeps
/// its layers uncompressed while B's holds the gzip blobs it imported from the cache.
fn image_digest(root: &Path, tag: &str) -> String {
    let store = rbuild_oci::Store::open(root).unwrap();
    let desc = store.resolve_tag(tag).unwrap().expect("tagged image");
    let image = store.read_image(&desc.digest).unwrap();
    image.manifest.config.digest.to_string()
}

#[test]
fn an_exported_cache_carries_the_content_keys() {
    let Some(env) = env() else { return };
    let ctx = context();
    let dir = tempfile::tempdir().unwrap();
    let (root_a, cache) = (dir.path().join("a"), dir.path().join("cache"));
    let epoch = "SOURCE_DATE_EPOCH=1700000000";
    for (mode, root_b) in [("max", dir.path().join("b")), ("min", dir.path().join("c"))] {
        let to = format!("type=local,dest={}-{mode},mode={mode}", cache.display());
        let out = build(
            &root_a,
            ctx.path(),
            &env.base,
            &["--build-arg", epoch, "-t", "cut:a", "--cache-to", &to],
        );
        assert_ok(&out);
        // Machine B: a fresh root imports the cache; the final step is found under the
        // content-derived key A's solve used.
        let from = format!("type=local,src={}-{mode}", cache.display());
        let out = build(
            &root_b,
            ctx.path(),
            &env.base,
            &["--build-arg", epoch, "-t", "cut:b", "--cache-from", &from],
        );
        assert_ok(&out);
        // The cache carries A's content links too, so in either mode B derives the final
        // step's key without building the builder stage: nothing runs.
        let (ran_b, cached_b) = ran_and_cached(&out);
        assert!(
            ran_b
                .iter()
                .all(|n| !n.contains("RUN") && !n.contains("COPY")),
            "mode={mode}: ran on B: {ran_b:?}"
        );
        assert!(
            ran(&cached_b, FINAL_RUN),
            "mode={mode}: cached on B: {cached_b:?}"
        );
        assert_eq!(
            image_digest(&root_a, "cut:a"),
            image_digest(&root_b, "cut:b"),
            "mode={mode}: B built another image"
        );
    }
}
