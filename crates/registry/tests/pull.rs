//! Pull tests against a real Debian `docker-registry` on a loopback port (no mocks).

use rbuild_oci::{Digest, Index, Platform, Store};
use rbuild_registry::{ClientOptions, Credentials, Reference, RegistryClient, RegistryError};
use rbuild_testsupport::{
    make_busybox_index_layout, make_busybox_layout, push_layout, push_layout_with_creds,
    registry_with_busybox, skopeo_digest, RegistryOptions, TestRegistry, BUSYBOX_PATH,
};
use std::fs;
use std::path::Path;

fn assert_store_verified(store: &Store, digests: &[&Digest]) {
    for d in digests {
        let bytes =
            fs::read(store.blob_path(d)).unwrap_or_else(|e| panic!("blob {d} missing: {e}"));
        assert_eq!(
            Digest::sha256_of(&bytes),
            **d,
            "blob {d} content does not match its digest"
        );
    }
}

/// What `RegistryClient::new()` makes (environment applied), but anonymous: the host's
/// `~/.docker/config.json` never reaches a test (the auth tests below give their own).
fn client() -> RegistryClient {
    let mut opts = ClientOptions::default();
    opts.apply_env().unwrap();
    opts.credentials = Credentials::Anonymous;
    RegistryClient::with_options(opts).unwrap()
}

fn tmp_blobs_empty(store: &Store) -> bool {
    // The store keeps a temp directory per open owner (tmp/blobs/<owner>/): no file may be left
    // in any of them.
    rbuild_testsupport::files_below(&store.root().join("tmp/blobs")) == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_busybox_matches_skopeo() {
    let (reg, reference) = registry_with_busybox().unwrap();
    let r = Reference::parse(&reference).unwrap();
    assert_eq!(r.to_string(), reference);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let client = client();

    let rec = client
        .pull(&r, &store, None)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", reg.log()));
    assert_eq!(rec.manifest_digest, skopeo_digest(&reference).unwrap());
    let mut digests = vec![&rec.manifest_digest, &rec.manifest.config.digest];
    digests.extend(rec.manifest.layers.iter().map(|l| &l.digest));
    assert_store_verified(&store, &digests);
    assert!(tmp_blobs_empty(&store));
    assert_eq!(rec.config.env_var("PATH"), Some(BUSYBOX_PATH));
    assert_eq!(
        rec.config.config.cmd.as_deref(),
        Some(&["sh".to_string()][..])
    );
    assert_eq!(
        (rec.config.os.as_str(), rec.config.architecture.as_str()),
        ("linux", "amd64")
    );

    let tagged = store.resolve_tag(&reference).unwrap().expect("tag set");
    assert_eq!(tagged.digest, rec.manifest_digest);
    assert_eq!(
        store.read_image(&rec.manifest_digest).unwrap().config,
        rec.config
    );

    // resolve gives the exact served bytes; a second pull (everything present) is a no-op.
    let resolved = client.resolve(&r).await.unwrap();
    assert_eq!(
        Digest::sha256_of(&resolved.manifest_bytes),
        resolved.manifest_digest
    );
    assert_eq!(
        store.read_blob(&resolved.manifest_digest).unwrap(),
        resolved.manifest_bytes
    );
    assert_eq!(resolved.index_digest, None);
    let again = client.pull(&r, &store, Some("base:1")).await.unwrap();
    assert_eq!(again.manifest_digest, rec.manifest_digest);
    assert_eq!(
        store.resolve_tag("base:1").unwrap().unwrap().digest,
        rec.manifest_digest
    );

    // By digest.
    let by_digest =
        Reference::parse(&format!("{}/busybox@{}", reg.addr(), rec.manifest_digest)).unwrap();
    assert_eq!(
        client.resolve(&by_digest).await.unwrap().manifest_digest,
        rec.manifest_digest
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_arch_index_resolves_to_amd64() {
    let reg = TestRegistry::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let index_digest = make_busybox_index_layout(&layout, &["arm64", "amd64"]).unwrap();
    let reference = format!("{}/multi:latest", reg.addr());
    push_layout(&layout, &reference).unwrap();
    assert_eq!(
        skopeo_digest(&reference).unwrap(),
        index_digest,
        "skopeo kept the index digest"
    );
    let index: Index = serde_json::from_slice(
        &fs::read(layout.join("blobs/sha256").join(index_digest.hex())).unwrap(),
    )
    .unwrap();
    let amd64 = index
        .select_platform("linux", "amd64")
        .unwrap()
        .digest
        .clone();
    let arm64 = index
        .select_platform("linux", "arm64")
        .unwrap()
        .digest
        .clone();

    let client = client();
    let r = Reference::parse(&reference).unwrap();
    let res = client.resolve(&r).await.unwrap();
    assert_eq!(res.manifest_digest, amd64);
    assert_eq!(res.config.architecture, "amd64");
    assert_eq!(res.index_digest, Some(index_digest.clone()));

    let arm = client
        .resolve_platform(
            &r,
            &Platform {
                architecture: "arm64".into(),
                os: "linux".into(),
                variant: None,
                os_version: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(arm.manifest_digest, arm64);
    assert_eq!(arm.config.architecture, "arm64");

    let err = client
        .resolve_platform(
            &r,
            &Platform {
                architecture: "s390x".into(),
                os: "linux".into(),
                variant: None,
                os_version: None,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::NoMatchingPlatform { .. }),
        "{err}"
    );
    // BuildKit's words; the wanted platform and the index's are in the fields.
    assert_eq!(
        err.to_string(),
        format!("no match for platform in manifest {index_digest}: not found")
    );
    if let RegistryError::NoMatchingPlatform {
        platform,
        available,
        ..
    } = &err
    {
        assert_eq!(platform, "linux/s390x");
        assert!(available.contains("linux/amd64"), "{available}");
    }

    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let rec = client.pull(&r, &store, None).await.unwrap();
    assert_eq!(rec.manifest_digest, amd64);
    assert_eq!(
        store.resolve_tag(&reference).unwrap().unwrap().digest,
        amd64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_repository_and_tag_are_not_found() {
    let (reg, _) = registry_with_busybox().unwrap();
    let client = client();
    let r = Reference::parse(&format!("{}/nope", reg.addr())).unwrap();
    let err = client.resolve(&r).await.unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
    let msg = err.to_string();
    eprintln!("not found: {msg}");
    assert!(
        msg.starts_with(&format!("{}/nope:latest: not found", reg.addr())),
        "{msg}"
    );

    let r = Reference::parse(&format!("{}/busybox:v9", reg.addr())).unwrap();
    let msg = client.resolve(&r).await.unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("{}/busybox:v9: not found", reg.addr())),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_names_the_address() {
    // Held bound (not listening) until the end: nothing else can take the port meanwhile.
    let refused = rbuild_testsupport::RefusedPort::bind().unwrap();
    let port = refused.port();
    let client = client();
    let r = Reference::parse(&format!("127.0.0.1:{port}/x")).unwrap();
    let err = client.resolve(&r).await.unwrap_err();
    let msg = err.to_string();
    eprintln!("connect: {msg}");
    assert!(matches!(err, RegistryError::Connect { .. }), "{msg}");
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")) && msg.to_lowercase().contains("refused"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_blob_is_rejected_and_not_stored() {
    let (reg, reference) = registry_with_busybox().unwrap();
    let client = client();
    let r = Reference::parse(&reference).unwrap();
    let resolved = client.resolve(&r).await.unwrap();
    let layer = resolved.manifest.layers[0].clone();
    let data = reg.blob_data_path(&layer.digest);
    let mut bytes = fs::read(&data).unwrap();
    let original = bytes.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff; // same size, different content
    fs::write(&data, &bytes).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let err = client.pull(&r, &store, None).await.unwrap_err();
    eprintln!("corrupt: {err}");
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&layer.digest.to_string()), "{err}");
    assert!(!store.has_blob(&layer.digest));
    assert!(
        !store.has_blob(&resolved.manifest_digest),
        "manifest stored although a layer failed"
    );
    assert!(store.resolve_tag(&reference).unwrap().is_none());
    assert!(tmp_blobs_empty(&store));

    // Truncated: a size mismatch, also not stored.
    fs::write(&data, &original[..original.len() - 100]).unwrap();
    let err = client.fetch_blob(&r, &layer, &store).await.unwrap_err();
    eprintln!("truncated: {err}");
    assert!(
        matches!(
            err,
            RegistryError::SizeMismatch { .. } | RegistryError::Transport { .. }
        ),
        "{err}"
    );
    assert!(!store.has_blob(&layer.digest));
    assert!(tmp_blobs_empty(&store));

    // Restored: now it works.
    fs::write(&data, &original).unwrap();
    client.fetch_blob(&r, &layer, &store).await.unwrap();
    assert_store_verified(&store, &[&layer.digest]);
}

fn write_docker_config(dir: &Path, registry: &str, user: &str, pass: &str) -> std::path::PathBuf {
    let path = dir.join("config.json");
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    fs::write(
        &path,
        format!(r#"{{"auths":{{"{registry}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_registry() {
    let reg = TestRegistry::start_with(&RegistryOptions {
        htpasswd: Some(("tester".into(), "s3cret".into())),
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    make_busybox_layout(&layout).unwrap();
    let reference = format!("{}/private/busybox:latest", reg.addr());
    push_layout_with_creds(&layout, &reference, Some(("tester", "s3cret"))).unwrap();
    let r = Reference::parse(&reference).unwrap();

    let anon = RegistryClient::with_options(ClientOptions {
        credentials: Credentials::Anonymous,
        ..Default::default()
    })
    .unwrap();
    let err = anon.resolve(&r).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    let msg = err.to_string();
    eprintln!("anonymous: {msg}");
    assert!(
        msg.starts_with(&format!(
            "pull access denied for {}/private/busybox: 401 Unauthorized",
            reg.addr()
        )),
        "{msg}"
    );

    let wrong = RegistryClient::with_options(ClientOptions {
        credentials: Credentials::Basic {
            username: "tester".into(),
            password: "nope".into(),
        },
        ..Default::default()
    })
    .unwrap();
    let msg = wrong.resolve(&r).await.unwrap_err().to_string();
    assert!(msg.contains("401 Unauthorized"), "{msg}");

    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let good = RegistryClient::with_options(ClientOptions {
        credentials: Credentials::Basic {
            username: "tester".into(),
            password: "s3cret".into(),
        },
        ..Default::default()
    })
    .unwrap();
    let rec = good.pull(&r, &store, None).await.unwrap();
    assert_eq!(rec.manifest_digest, skopeo_digest_creds(&reference));

    // Credentials from a docker config.json (`auths.<registry>.auth`).
    let cfg = write_docker_config(dir.path(), &reg.addr(), "tester", "s3cret");
    let from_cfg = RegistryClient::with_options(ClientOptions {
        credentials: Credentials::ConfigFile(cfg),
        ..Default::default()
    })
    .unwrap();
    let store2_dir = tempfile::tempdir().unwrap();
    let store2 = Store::open(store2_dir.path()).unwrap();
    assert_eq!(
        from_cfg
            .pull(&r, &store2, None)
            .await
            .unwrap()
            .manifest_digest,
        rec.manifest_digest
    );
}

fn skopeo_digest_creds(reference: &str) -> Digest {
    let out = rbuild_testsupport::skopeo("inspect", Some("tester:s3cret"))
        .unwrap()
        .args(["--tls-verify=false", "--no-tags"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["Digest"].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_registry() {
    let reg = TestRegistry::start_with(&RegistryOptions {
        token_auth: Some(("tester".into(), "s3cret".into())),
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    make_busybox_layout(&layout).unwrap();
    let reference = format!("{}/tok/busybox:latest", reg.addr());
    push_layout_with_creds(&layout, &reference, Some(("tester", "s3cret"))).unwrap();
    let r = Reference::parse(&reference).unwrap();

    // Anonymous: the token server grants pull to anyone.
    let anon = RegistryClient::with_options(ClientOptions {
        credentials: Credentials::Anonymous,
        ..Default::default()
    })
    .unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let rec = anon
        .pull(&r, &store, None)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", reg.token_log(), reg.log()));
    assert_eq!(rec.manifest_digest, skopeo_digest_creds(&reference));
    let log = reg.token_log();
    assert!(
        log.contains("user=None scopes=['repository:tok/busybox:pull']"),
        "{log}"
    );
    // One token for the whole pull (cached), not one per request.
    assert_eq!(
        log.lines().filter(|l| l.contains("user=None")).count(),
        1,
        "{log}"
    );

    // With credentials: the token request carries Basic auth.
    let good = RegistryClient::with_options(ClientOptions {
        credentials: Credentials::Basic {
            username: "tester".into(),
            password: "s3cret".into(),
        },
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        good.resolve(&r).await.unwrap().manifest_digest,
        rec.manifest_digest
    );
    assert!(
        reg.token_log()
            .contains("user=tester scopes=['repository:tok/busybox:pull']"),
        "{}",
        reg.token_log()
    );

    // Wrong password: the token server refuses.
    let wrong = RegistryClient::with_options(ClientOptions {
        credentials: Credentials::Basic {
            username: "tester".into(),
            password: "x".into(),
        },
        ..Default::default()
    })
    .unwrap();
    let err = wrong.resolve(&r).await.unwrap_err();
    eprintln!("bearer wrong password: {err}");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "pull access denied for {}/tok/busybox: 401 Unauthorized",
            reg.addr()
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_downloads_report_their_bytes_up_to_the_size() {
    use rbuild_registry::BlobProgress;
    use std::sync::{Arc, Mutex};
    let (reg, reference) = registry_with_busybox().unwrap();
    let r = Reference::parse(&reference).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let seen: Arc<Mutex<Vec<BlobProgress>>> = Arc::default();
    let sink = seen.clone();
    let reporting = client().with_transfer_progress(move |p| sink.lock().unwrap().push(p.clone()));
    let rec = reporting
        .pull(&r, &store, None)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", reg.log()));
    let seen = seen.lock().unwrap().clone();
    for layer in &rec.manifest.layers {
        let reports: Vec<&BlobProgress> =
            seen.iter().filter(|p| p.digest == layer.digest).collect();
        assert!(
            !reports.is_empty(),
            "no report for {}: {seen:?}",
            layer.digest
        );
        assert!(
            reports.windows(2).all(|w| w[0].done < w[1].done),
            "reports grow: {reports:?}"
        );
        let last = reports[reports.len() - 1];
        assert_eq!((last.done, last.total), (layer.size, layer.size));
        // At most one report per BlobProgress::EVERY bytes, plus the first and the last.
        assert!(reports.len() as u64 <= layer.size / BlobProgress::EVERY + 2);
    }

    // A blob already in the store downloads nothing, so it reports nothing.
    let again: Arc<Mutex<Vec<BlobProgress>>> = Arc::default();
    let sink = again.clone();
    let reporting = client().with_transfer_progress(move |p| sink.lock().unwrap().push(p.clone()));
    reporting.pull(&r, &store, None).await.unwrap();
    assert!(again.lock().unwrap().is_empty());
}
