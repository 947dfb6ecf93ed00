//! Push, login and fault-tolerance tests against real Debian `docker-registry` instances (open,
//! htpasswd, token auth) on loopback ports, read back with skopeo; faults come from the
//! testsupport [`FaultProxy`] (no mocks).

use rbuild_oci::{Descriptor, DiffId, Digest, ImageConfig, MediaType, RootFs, Store};
use rbuild_registry::{
    mount_sources_from_store, save_login, ClientOptions, Credentials, PushOptions, Reference,
    RegistryClient, RegistryError,
};
use rbuild_testsupport::{
    make_busybox_layout, skopeo_digest, Fault, FaultProxy, FaultRule, RegistryOptions, TestRegistry,
};
use std::fs;
use std::path::Path;
use std::time::Duration;

/// Deterministic pseudo-random bytes (xorshift64*).
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A store with one image `name`: layers of the given sizes (uncompressed-tar media type, random
/// content), tagged `name`. Returns the manifest descriptor.
fn image_in_store(store: &Store, name: &str, seed: u64, sizes: &[usize]) -> Descriptor {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let bytes = pseudo_random(seed * 100 + i as u64, *size);
        let (digest, size) = store.write_blob(&bytes).unwrap();
        diff_ids.push(DiffId(digest.clone()));
        layers.push(Descriptor {
            media_type: MediaType::new(MediaType::OCI_LAYER_TAR),
            digest,
            size,
            platform: None,
            annotations: None,
        });
    }
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids,
        },
        ..Default::default()
    };
    let (desc, _) = store.write_image(&config, layers).unwrap();
    store.set_tag(name, &desc).unwrap();
    desc
}

fn client(creds: Credentials) -> RegistryClient {
    RegistryClient::with_options(ClientOptions {
        credentials: creds,
        retry_base_delay: Duration::from_millis(50),
        ..Default::default()
    })
    .unwrap()
}

fn basic(u: &str, p: &str) -> Credentials {
    Credentials::Basic {
        username: u.into(),
        password: p.into(),
    }
}

fn skopeo(args: &[&str]) -> String {
    let (subcommand, rest) = args.split_first().expect("a skopeo subcommand");
    let out = rbuild_testsupport::skopeo(subcommand, None)
        .unwrap()
        .args(rest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn skopeo_inspect_digest(reference: &str, creds: Option<&str>) -> Digest {
    let mut args = vec!["inspect", "--tls-verify=false", "--no-tags"];
    if let Some(c) = creds {
        args.extend(["--creds", c]);
    }
    let r = format!("docker://{reference}");
    args.push(&r);
    let v: serde_json::Value = serde_json::from_str(&skopeo(&args)).unwrap();
    v["Digest"].as_str().unwrap().parse().unwrap()
}

/// `skopeo copy` back into a fresh OCI layout and check every blob there matches the store.
fn skopeo_copy_back(reference: &str, creds: Option<&str>, store: &Store, dir: &Path) {
    let dest = dir.join("copied");
    let mut args = vec!["copy", "-q", "--src-tls-verify=false", "--preserve-digests"];
    if let Some(c) = creds {
        args.extend(["--src-creds", c]);
    }
    let (src, dst) = (
        format!("docker://{reference}"),
        format!("oci:{}:x", dest.display()),
    );
    args.extend([src.as_str(), dst.as_str()]);
    skopeo(&args);
    for e in fs::read_dir(dest.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let bytes = fs::read(e.path()).unwrap();
        let d: Digest = format!("sha256:{}", e.file_name().to_string_lossy())
            .parse()
            .unwrap();
        assert_eq!(Digest::sha256_of(&bytes), d);
        assert_eq!(store.read_blob(&d).unwrap(), bytes, "blob {d} differs");
    }
}

fn busybox_store(dir: &Path) -> (Store, Descriptor) {
    let layout = dir.join("store");
    make_busybox_layout(&layout).unwrap();
    let store = Store::open(&layout).unwrap();
    let desc = store.resolve_tag("latest").unwrap().expect("latest");
    (store, desc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_open_registry_skopeo_reads_back_and_second_push_skips() {
    let reg = TestRegistry::start().unwrap();
    let proxy = FaultProxy::start(&reg.addr()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    // One layer above the monolithic limit (chunked PATCHes), three small ones.
    let desc = image_in_store(&store, "app", 1, &[3 << 20, 1000, 20_000, 70_000]);
    let opts = PushOptions {
        monolithic_limit: 1 << 20,
        chunk_size: 1 << 20,
        ..Default::default()
    };
    let c = client(Credentials::Anonymous);
    let targets = [
        Reference::parse(&format!("{}/team/app:v1", proxy.addr())).unwrap(),
        Reference::parse(&format!("{}/team/app:latest", proxy.addr())).unwrap(),
    ];
    let rep = c.push(&store, &desc, &targets, &opts).await.unwrap();
    assert_eq!(
        (rep.uploaded, rep.existing, rep.mounted),
        (5, 0, 0),
        "{rep:?}"
    );
    assert_eq!(rep.pushed.len(), 2);
    // 3 MiB in 1 MiB chunks: three PATCHes, then one PUT per blob, and two manifest PUTs.
    assert_eq!(
        proxy.count("PATCH", "/blobs/uploads/"),
        3,
        "{}",
        proxy.log_text()
    );
    assert_eq!(proxy.count("PUT", "/blobs/uploads/"), 5);
    assert_eq!(proxy.count("PUT", "/manifests/"), 2);
    for tag in ["v1", "latest"] {
        let r = format!("{}/team/app:{tag}", reg.addr());
        assert_eq!(skopeo_digest(&r).unwrap(), desc.digest);
    }
    skopeo_copy_back(
        &format!("{}/team/app:v1", reg.addr()),
        None,
        &store,
        dir.path(),
    );

    // Second push: every blob is found by HEAD; nothing is uploaded.
    proxy.clear_log();
    let rep = c.push(&store, &desc, &targets[..1], &opts).await.unwrap();
    assert_eq!(
        (rep.uploaded, rep.existing, rep.mounted),
        (0, 5, 0),
        "{rep:?}"
    );
    assert_eq!(proxy.count("HEAD", "/blobs/"), 5, "{}", proxy.log_text());
    assert_eq!(proxy.count("POST", ""), 0);
    assert_eq!(proxy.count("PATCH", ""), 0);
    assert_eq!(proxy.count("PUT", "/blobs/"), 0);
    assert_eq!(proxy.count("PUT", "/manifests/"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_htpasswd_registry() {
    let reg = TestRegistry::start_with(&RegistryOptions {
        htpasswd: Some(("pusher".into(), "pw1".into())),
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (store, desc) = busybox_store(dir.path());
    let target = Reference::parse(&format!("{}/private/busybox:1", reg.addr())).unwrap();

    let err = client(Credentials::Anonymous)
        .push(
            &store,
            &desc,
            std::slice::from_ref(&target),
            &PushOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::PushDenied { .. }), "{err:?}");
    assert!(err.to_string().contains("push access denied"), "{err}");

    let rep = client(basic("pusher", "pw1"))
        .push(
            &store,
            &desc,
            std::slice::from_ref(&target),
            &PushOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(rep.uploaded, 2);
    let r = target.to_string();
    assert_eq!(skopeo_inspect_digest(&r, Some("pusher:pw1")), desc.digest);
    skopeo_copy_back(&r, Some("pusher:pw1"), &store, dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_push_mounts_across_repositories() {
    let reg = TestRegistry::start_with(&RegistryOptions {
        token_auth: Some(("tok".into(), "tokpw".into())),
        ..Default::default()
    })
    .unwrap();
    let proxy = FaultProxy::start(&reg.addr()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let desc = image_in_store(&store, "app", 2, &[50_000, 60_000]);
    let c = client(basic("tok", "tokpw"));
    let first = Reference::parse(&format!("{}/base/app:1", proxy.addr())).unwrap();
    let rep = c
        .push(
            &store,
            &desc,
            std::slice::from_ref(&first),
            &PushOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(rep.uploaded, 3);
    // The store knows the image under the first repository: that is the mount source.
    store.set_tag(&first.to_string(), &desc).unwrap();
    let sources = mount_sources_from_store(&store, &proxy.addr());
    assert_eq!(sources.len(), 3, "{sources:?}");

    proxy.clear_log();
    let second = Reference::parse(&format!("{}/other/app:1", proxy.addr())).unwrap();
    let opts = PushOptions {
        mount_sources: sources,
        ..Default::default()
    };
    let rep = c
        .push(&store, &desc, std::slice::from_ref(&second), &opts)
        .await
        .unwrap();
    assert_eq!(
        (rep.uploaded, rep.mounted),
        (0, 3),
        "{rep:?}\n{}",
        proxy.log_text()
    );
    // Each mount POST is answered 201 (after the token challenge), never 202 (= not mounted).
    let mounts: Vec<_> = proxy
        .log()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.contains("mount="))
        .map(|r| r.status)
        .collect();
    assert_eq!(
        mounts.iter().filter(|s| **s == 201).count(),
        3,
        "{}",
        proxy.log_text()
    );
    assert!(
        mounts.iter().all(|s| *s == 201 || *s == 401),
        "{}",
        proxy.log_text()
    );
    assert_eq!(proxy.count("PATCH", ""), 0);
    assert_eq!(proxy.count("PUT", "/blobs/"), 0);
    let tlog = reg.token_log();
    assert!(
        tlog.lines()
            .any(|l| l.contains("repository:other/app:pull,push")
                && l.contains("repository:base/app:pull")),
        "token requests lack the source pull scope:\n{tlog}"
    );
    assert_eq!(
        skopeo_inspect_digest(&format!("{}/other/app:1", reg.addr()), Some("tok:tokpw")),
        desc.digest
    );

    // One push to two repositories: the second mounts from the first.
    let third = Reference::parse(&format!("{}/x/one:1", proxy.addr())).unwrap();
    let fourth = Reference::parse(&format!("{}/x/two:1", proxy.addr())).unwrap();
    let desc2 = image_in_store(&store, "app2", 3, &[10_000]);
    let rep = c
        .push(&store, &desc2, &[third, fourth], &PushOptions::default())
        .await
        .unwrap();
    assert_eq!((rep.uploaded, rep.mounted), (2, 2), "{rep:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_writes_config_then_push_uses_it() {
    let reg = TestRegistry::start_with(&RegistryOptions {
        token_auth: Some(("alice".into(), "pa55".into())),
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = client(Credentials::Anonymous);
    let err = c
        .check_login(&reg.addr(), "alice", "wrong")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    c.check_login(&reg.addr(), "alice", "pa55").await.unwrap();
    let cfg = dir.path().join("docker/config.json");
    save_login(&cfg, &reg.addr(), "alice", "pa55").unwrap();
    let (store, desc) = busybox_store(dir.path());
    let target = Reference::parse(&format!("{}/alice/busybox:1", reg.addr())).unwrap();
    let rep = client(Credentials::ConfigFile(cfg))
        .push(
            &store,
            &desc,
            std::slice::from_ref(&target),
            &PushOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(rep.uploaded, 2);
    assert_eq!(
        skopeo_inspect_digest(&target.to_string(), Some("alice:pa55")),
        desc.digest
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_survives_injected_faults() {
    let reg = TestRegistry::start().unwrap();
    let proxy = FaultProxy::start(&reg.addr()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let desc = image_in_store(&store, "app", 4, &[2 << 20, 30_000]);
    proxy.add(FaultRule::new("HEAD", "/blobs/", Fault::RateLimit(1), 1));
    proxy.add(FaultRule::new(
        "POST",
        "/blobs/uploads/",
        Fault::Status(503),
        1,
    ));
    proxy.add(FaultRule::new(
        "PATCH",
        "/blobs/uploads/",
        Fault::DropRequestBody,
        1,
    ));
    proxy.add(FaultRule::new(
        "PUT",
        "/blobs/uploads/",
        Fault::Status(500),
        1,
    ));
    proxy.add(FaultRule::new("PUT", "/manifests/", Fault::Status(502), 1));
    let opts = PushOptions {
        monolithic_limit: 1 << 20,
        chunk_size: 1 << 20,
        ..Default::default()
    };
    let target = Reference::parse(&format!("{}/faulty/app:1", proxy.addr())).unwrap();
    let started = std::time::Instant::now();
    let rep = client(Credentials::Anonymous)
        .push(&store, &desc, &[target], &opts)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.log_text()));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After ignored"
    );
    assert_eq!(rep.uploaded, 3);
    let log = proxy.log_text();
    for f in [
        "RateLimit",
        "Status(503)",
        "DropRequestBody",
        "Status(500)",
        "Status(502)",
    ] {
        assert!(log.contains(f), "fault {f} not hit:\n{log}");
    }
    assert_eq!(
        skopeo_digest(&format!("{}/faulty/app:1", reg.addr())).unwrap(),
        desc.digest
    );
    skopeo_copy_back(
        &format!("{}/faulty/app:1", reg.addr()),
        None,
        &store,
        dir.path(),
    );

    // A registry that keeps failing: a clear error after the retries, naming the status.
    let desc2 = image_in_store(&store, "app2", 5, &[5_000]);
    proxy.add(FaultRule::new(
        "POST",
        "/blobs/uploads/",
        Fault::Status(500),
        100,
    ));
    let target = Reference::parse(&format!("{}/faulty/two:1", proxy.addr())).unwrap();
    let err = client(Credentials::Anonymous)
        .push(&store, &desc2, &[target], &PushOptions::default())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("500") && msg.contains("faulty/two"), "{msg}");
    assert!(
        rbuild_testsupport::skopeo("inspect", None)
            .unwrap()
            .arg("--tls-verify=false")
            .arg(format!("docker://{}/faulty/two:1", reg.addr()))
            .output()
            .unwrap()
            .status
            .code()
            != Some(0),
        "a failed push must not leave a manifest"
    );
}

/// No temp blob left (aborted downloads' writer threads remove theirs as they stop: allow 5 s).
fn tmp_blobs_empty(store: &Store) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        // Per-owner temp directories (tmp/blobs/<owner>/) may exist; no file may be left.
        let empty = rbuild_testsupport::files_below(&store.root().join("tmp/blobs")) == 0;
        if empty || std::time::Instant::now() > deadline {
            return empty;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_resumes_interrupted_blobs_and_rejects_corrupt_ones() {
    let reg = TestRegistry::start().unwrap();
    let proxy = FaultProxy::start(&reg.addr()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = Store::open(&dir.path().join("src")).unwrap();
    let desc = image_in_store(&src, "app", 6, &[1 << 20, 300_000]);
    let c = client(Credentials::Anonymous);
    let target = Reference::parse(&format!("{}/pull/app:1", reg.addr())).unwrap();
    c.push(&src, &desc, &[target], &PushOptions::default())
        .await
        .unwrap();
    let via = Reference::parse(&format!("{}/pull/app:1", proxy.addr())).unwrap();
    let record = src.read_image(&desc.digest).unwrap();
    let big = record.manifest.layers[0].digest.to_string();
    let small = record.manifest.layers[1].digest.to_string();

    // Dropped mid-body, truncated (short Content-Length), 500 and 429: resumed or retried.
    proxy.add(FaultRule::new("GET", &big, Fault::DropResponseBody, 1));
    proxy.add(FaultRule::new("GET", &big, Fault::ShortBody, 1));
    proxy.add(FaultRule::new("GET", &small, Fault::Status(500), 1));
    proxy.add(FaultRule::new("GET", "/manifests/", Fault::RateLimit(0), 1));
    let store = Store::open(&dir.path().join("dst")).unwrap();
    let rec = c
        .pull(&via, &store, None)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.log_text()));
    assert_eq!(rec.manifest_digest, desc.digest);
    assert_eq!(proxy.count("GET", &big), 3, "{}", proxy.log_text());
    for l in &record.manifest.layers {
        assert_eq!(
            Digest::sha256_of(&store.read_blob(&l.digest).unwrap()),
            l.digest
        );
    }
    assert!(tmp_blobs_empty(&store));

    // A corrupted blob is an error, and nothing is stored.
    let store2 = Store::open(&dir.path().join("dst2")).unwrap();
    proxy.add(FaultRule::new("GET", &small, Fault::CorruptBody, 1));
    let err = c.pull(&via, &store2, None).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::DigestMismatch { .. }),
        "{err:?}"
    );
    assert!(!store2.has_blob(&record.manifest.layers[1].digest));
    assert!(store2.resolve_tag(&via.to_string()).unwrap().is_none());
    assert!(tmp_blobs_empty(&store2));

    // A blob that is always cut short: a clear size error after the retries; nothing stored.
    let store3 = Store::open(&dir.path().join("dst3")).unwrap();
    proxy.add(FaultRule::new("GET", &small, Fault::ShortBody, 100));
    let err = c.pull(&via, &store3, None).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&small), "{msg}");
    assert!(!store3.has_blob(&record.manifest.layers[1].digest));
    assert!(tmp_blobs_empty(&store3));
}

#[test]
fn ecr_missing_repository_names_it() {
    let e = RegistryError::RepositoryNotFound {
        registry: "123456789012.dkr.ecr.us-east-1.amazonaws.com".into(),
        repository: "team/app".into(),
        detail: ": The repository with name 'team/app' does not exist".into(),
    };
    let msg = e.to_string();
    assert!(
        msg.contains("repository `team/app` does not exist"),
        "{msg}"
    );
    assert!(msg.contains("aws ecr create-repository"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_token_uses_the_oauth2_refresh_token_flow() {
    let reg = TestRegistry::start_with(&RegistryOptions {
        token_auth: Some(("u".into(), "p".into())),
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (store, desc) = busybox_store(dir.path());
    let target = Reference::parse(&format!("{}/lib/busybox:1", reg.addr())).unwrap();
    client(basic("u", "p"))
        .push(
            &store,
            &desc,
            std::slice::from_ref(&target),
            &PushOptions::default(),
        )
        .await
        .unwrap();
    let cfg = dir.path().join("config.json");
    fs::write(
        &cfg,
        format!(
            r#"{{"auths":{{"{}":{{"identitytoken":"refresh-abc"}}}}}}"#,
            reg.addr()
        ),
    )
    .unwrap();
    let pulled = Store::open(&dir.path().join("pulled")).unwrap();
    let rec = client(Credentials::ConfigFile(cfg))
        .pull(&target, &pulled, None)
        .await
        .unwrap();
    assert_eq!(rec.manifest_digest, desc.digest);
    let log = reg.token_log();
    assert!(
        log.lines().any(|l| l.starts_with("POST")
            && l.contains("grant_type=['refresh_token']")
            && l.contains("repository:lib/busybox:pull")),
        "no OAuth2 refresh-token POST in the token log:\n{log}"
    );
}
