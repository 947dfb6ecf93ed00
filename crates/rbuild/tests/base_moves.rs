//! A base tag that moves in the registry. rbuild resolves `FROM` as `docker build` does with a
//! local image store: without `--pull` the store's copy of the tag wins (no registry request,
//! the build stays cached); with `--pull` the registry's current image is resolved, used and
//! remembered under the tag for later builds. And the bases of a Dockerfile resolve
//! concurrently: the registry sees the second base's manifest request while the first one's is
//! still unanswered.

use rbuild_testsupport::{
    make_busybox_layout, push_layout, registry_with_busybox, require_root, skopeo_digest, Fault,
    FaultProxy, FaultRule, LoggedRequest,
};
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

mod common;

use common::{assert_ok, ran_and_cached, RBUILD};

/// `rbuild --root ROOT build --progress=json ARGS... CONTEXT` with a DOCKER_CONFIG of its own.
fn rbuild_build(root: &Path, config: &Path, args: &[&str], ctx: &Path) -> Output {
    Command::new(RBUILD)
        .arg("--root")
        .arg(root)
        .env("DOCKER_CONFIG", config)
        .args(["build", "--progress=json"])
        .args(args)
        .arg(ctx)
        .output()
        .expect("run rbuild")
}

/// Builds `FROM busybox` + `/which` holding `which`, and pushes it as `tag`; returns its digest.
fn push_variant(busybox: &str, tag: &str, which: &str, config: &Path) -> String {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {busybox}\nRUN echo {which} > /which\n"),
    )
    .unwrap();
    let out = rbuild_build(root.path(), config, &["--push", "-t", tag], ctx.path());
    assert_ok(&out);
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(skopeo_digest(tag).unwrap().to_string(), digest);
    digest
}

#[test]
fn moved_base_tag_is_used_only_with_pull() {
    if !require_root().unwrap() {
        return;
    }
    let (registry, busybox) = registry_with_busybox().unwrap();
    // The builds under test go through a counting proxy, so registry traffic is visible.
    let proxy = FaultProxy::start(&registry.addr()).unwrap();
    let config = tempfile::tempdir().unwrap();
    let base_at_registry = format!("{}/team/base:1", registry.addr());
    let base = format!("{}/team/base:1", proxy.addr());
    let digest_a = push_variant(&busybox, &base_at_registry, "A", config.path());

    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {base}\nRUN cat /which > /seen\n"),
    )
    .unwrap();
    let build = |extra: &[&str]| {
        let dest = tempfile::tempdir().unwrap();
        let output = format!("type=local,dest={}", dest.path().display());
        let mut args = vec!["--output", output.as_str()];
        args.extend_from_slice(extra);
        let out = rbuild_build(root.path(), config.path(), &args, ctx.path());
        assert_ok(&out);
        let seen = fs::read_to_string(dest.path().join("seen")).unwrap();
        (out, seen)
    };
    let store_digest = || {
        let store = rbuild_oci::Store::open(root.path()).unwrap();
        store
            .resolve_tag(&base)
            .unwrap()
            .expect("base tagged in the store")
            .digest
            .to_string()
    };

    let (_, seen) = build(&[]);
    assert_eq!(seen, "A\n");
    assert_eq!(store_digest(), digest_a);

    // The tag moves to B.
    let digest_b = push_variant(&busybox, &base_at_registry, "B", config.path());
    assert_ne!(digest_a, digest_b);

    // Without --pull: the store's A, no request to the registry, the RUN cached.
    proxy.clear_log();
    let (out, seen) = build(&[]);
    assert_eq!(
        seen, "A\n",
        "without --pull the local copy of the tag is used"
    );
    assert!(proxy.log().is_empty(), "{}", proxy.log_text());
    let (ran, cached) = ran_and_cached(&out);
    assert!(!ran.iter().any(|n| n.contains("RUN")), "ran {ran:?}");
    assert!(
        cached.iter().any(|n| n.contains("RUN cat /which")),
        "cached {cached:?}"
    );

    // With --pull: the registry's B, its manifest fetched by tag, the RUN runs again.
    proxy.clear_log();
    let (out, seen) = build(&["--pull"]);
    assert_eq!(seen, "B\n", "--pull resolves the tag again");
    assert!(
        proxy.count("GET", "/team/base/manifests/1")
            + proxy.count("HEAD", "/team/base/manifests/1")
            >= 1,
        "{}",
        proxy.log_text()
    );
    let (ran, _) = ran_and_cached(&out);
    assert!(
        ran.iter().any(|n| n.contains("RUN cat /which")),
        "ran {ran:?}"
    );
    assert_eq!(store_digest(), digest_b, "the pulled image takes the tag");

    // A later build without --pull keeps B (now the store's copy) and is cached.
    let (out, seen) = build(&[]);
    assert_eq!(seen, "B\n");
    let (ran, cached) = ran_and_cached(&out);
    assert!(!ran.iter().any(|n| n.contains("RUN")), "ran {ran:?}");
    assert!(
        cached.iter().any(|n| n.contains("RUN cat /which")),
        "cached {cached:?}"
    );
}

#[test]
fn bases_of_two_stages_resolve_concurrently() {
    if !require_root().unwrap() {
        return;
    }
    let (registry, _) = registry_with_busybox().unwrap();
    let layout_dir = tempfile::tempdir().unwrap();
    let layout = layout_dir.path().join("layout");
    make_busybox_layout(&layout).unwrap();
    for repo in ["one", "two"] {
        push_layout(&layout, &format!("{}/{repo}/base:1", registry.addr())).unwrap();
    }
    // Every manifest request is answered 1.5 s late: resolved one after another, the second
    // base's first manifest request would come after the first base's answers.
    let proxy = FaultProxy::start(&registry.addr()).unwrap();
    let delay = Fault::Delay(1500);
    proxy.add(FaultRule::new("", "/manifests/", delay.clone(), 100));
    let root = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let p = proxy.addr();
    fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {p}/one/base:1 AS one\nFROM {p}/two/base:1\nCOPY --from=one /bin/busybox /from-one\n"),
    )
    .unwrap();
    let output = format!("type=local,dest={}", dest.path().display());
    let out = rbuild_build(
        root.path(),
        config.path(),
        &["--output", &output],
        ctx.path(),
    );
    assert_ok(&out);
    assert!(dest.path().join("from-one").is_file());
    assert!(proxy.hits(&delay) >= 2, "{}", proxy.log_text());

    // From the proxy's own clock: the first manifest request of each base.
    let log = proxy.log();
    let first_of = |repo: &str| -> LoggedRequest {
        log.iter()
            .filter(|r| r.path.starts_with(&format!("/v2/{repo}/base/manifests/")))
            .min_by_key(|r| r.at)
            .cloned()
            .unwrap_or_else(|| panic!("no manifest request for {repo}: {}", proxy.log_text()))
    };
    let (one, two) = (first_of("one"), first_of("two"));
    let (first, second) = if one.at <= two.at {
        (one, two)
    } else {
        (two, one)
    };
    assert!(
        second.at < first.answered,
        "the bases resolved one after another: {} {} was requested {:?} after {} {} was \
         answered\n{}",
        second.method,
        second.path,
        second.at.saturating_duration_since(first.answered),
        first.method,
        first.path,
        proxy.log_text()
    );
}
