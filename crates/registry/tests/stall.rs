//! Stalled registries, against a real `docker-registry` behind the fault-injecting proxy: a
//! registry that accepts connections and never answers fails the pull within a bounded time with
//! `RegistryError::Stalled`, after retry notices; a body that stops mid-way is resumed with a
//! `Range` request; a slow but steady body is never cut off. Timeouts are 1 s here.

use rbuild_oci::{Digest, Store};
use rbuild_registry::{
    ClientOptions, Credentials, Reference, RegistryClient, RegistryError, RegistryNotice,
};
use rbuild_testsupport::{registry_with_busybox, BlackHole, Fault, FaultProxy, FaultRule};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Far above what 1 s timeouts and 3 attempts need; only proves the failure is bounded.
const BOUND: Duration = Duration::from_secs(60);

type Notices = Arc<Mutex<Vec<RegistryNotice>>>;

fn client() -> (RegistryClient, Notices) {
    let c = RegistryClient::with_options(ClientOptions {
        credentials: Credentials::Anonymous,
        connect_timeout: Duration::from_secs(1),
        stall_timeout: Duration::from_secs(1),
        retry_base_delay: Duration::from_millis(50),
        ..Default::default()
    })
    .unwrap();
    let notices: Notices = Arc::default();
    let sink = notices.clone();
    let c = c.with_notices(move |n| sink.lock().unwrap().push(n.clone()));
    (c, notices)
}

fn retries(notices: &Notices) -> Vec<RegistryNotice> {
    notices
        .lock()
        .unwrap()
        .iter()
        .filter(|n| matches!(n, RegistryNotice::Retrying { .. }))
        .cloned()
        .collect()
}

fn layer_digest(store: &Store, reference: &str) -> Digest {
    let d = store
        .resolve_tag(reference)
        .unwrap()
        .expect("tagged")
        .digest;
    store.read_image(&d).unwrap().manifest.layers[0]
        .digest
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_registry_fails_within_bounded_time_with_a_clear_error() {
    let (reg, reference) = registry_with_busybox().unwrap();
    let proxy = FaultProxy::start(&reg.addr()).unwrap();
    let via = reference.replacen(&reg.addr(), &proxy.addr(), 1);
    let r = Reference::parse(&via).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (c, notices) = client();

    // The manifest request is accepted and never answered.
    proxy.add(FaultRule::new("GET", "/manifests/", Fault::Stall, 100));
    let started = Instant::now();
    let err = c.pull(&r, &store, None).await.unwrap_err();
    let took = started.elapsed();
    assert!(took < BOUND, "took {took:?}");
    let msg = err.to_string();
    match &err {
        RegistryError::Stalled {
            registry,
            url,
            timeout,
            attempt,
            attempts,
            ..
        } => {
            assert_eq!(registry, &proxy.addr());
            assert!(url.contains("/manifests/"), "{url}");
            assert_eq!(*timeout, Duration::from_secs(1));
            assert_eq!((*attempt, *attempts), (3, 3), "{msg}");
        }
        other => panic!("expected a stall error, got {other:?}"),
    }
    assert!(
        msg.contains(&format!(
            "no response from registry {} for 1s while fetching",
            proxy.addr()
        )) && msg.contains("(attempt 3 of 3"),
        "{msg}"
    );
    assert!(!err.is_retryable());
    assert_eq!(proxy.count("GET", "/manifests/"), 3, "{}", proxy.log_text());
    let seen = retries(&notices);
    assert_eq!(seen.len(), 2, "{seen:?}");
    let text = seen[0].to_string();
    assert!(
        text.contains("no response for 1s")
            && text.contains("retrying")
            && text.contains("attempt 2 of 3"),
        "{text}"
    );
    assert!(store.resolve_tag(&via).unwrap().is_none());

    // Pull the image through an honest proxy, then make only the layer stall: the error names
    // the blob.
    proxy.clear_rules();
    let ok_dir = tempfile::tempdir().unwrap();
    let ok_store = Store::open(ok_dir.path()).unwrap();
    c.pull(&r, &ok_store, None).await.unwrap();
    let layer = layer_digest(&ok_store, &via).to_string();
    proxy.add(FaultRule::new("GET", &layer, Fault::Stall, 100));
    let started = Instant::now();
    let err = c.pull(&r, &store, None).await.unwrap_err();
    assert!(started.elapsed() < BOUND);
    let msg = err.to_string();
    assert!(
        matches!(err, RegistryError::Stalled { .. })
            && msg.contains(&format!("blob {layer}"))
            && msg.contains("no response from registry"),
        "{msg}"
    );
    assert!(store.resolve_tag(&via).unwrap().is_none());
    assert!(!store.has_blob(&layer.parse().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_stalled_midway_is_resumed_with_a_range_request() {
    let (reg, reference) = registry_with_busybox().unwrap();
    let proxy = FaultProxy::start(&reg.addr()).unwrap();
    let via = reference.replacen(&reg.addr(), &proxy.addr(), 1);
    let r = Reference::parse(&via).unwrap();
    let (c, notices) = client();
    let probe_dir = tempfile::tempdir().unwrap();
    let probe = Store::open(probe_dir.path()).unwrap();
    c.pull(&r, &probe, None).await.unwrap();
    let layer = layer_digest(&probe, &via);
    assert!(retries(&notices).is_empty());

    // Headers and half the layer, then silence on an open connection; the manifest body stalls
    // once too.
    proxy.clear_log();
    proxy.add(FaultRule::new(
        "GET",
        &layer.to_string(),
        Fault::StallMidBody,
        1,
    ));
    proxy.add(FaultRule::new("GET", "/manifests/", Fault::StallMidBody, 1));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let rec = c
        .pull(&r, &store, None)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.log_text()));
    let blob = store.read_blob(&layer).unwrap();
    assert_eq!(Digest::sha256_of(&blob), layer);
    assert_eq!(rec.manifest.layers[0].digest, layer);
    let gets: Vec<_> = proxy
        .log()
        .into_iter()
        .filter(|l| l.method == "GET" && l.path.contains(&layer.to_string()))
        .collect();
    assert_eq!(gets.len(), 2, "{}", proxy.log_text());
    assert_eq!(gets[0].range, None);
    let from: u64 = gets[1]
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no resume range: {}", proxy.log_text()));
    assert!(
        from > 0 && from < blob.len() as u64,
        "resumed from {from} of {}",
        blob.len()
    );
    let seen = retries(&notices);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen
        .iter()
        .all(|n| n.to_string().contains("no response for 1s")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_but_steady_body_is_not_cut_off() {
    let (reg, reference) = registry_with_busybox().unwrap();
    let proxy = FaultProxy::start(&reg.addr()).unwrap();
    let via = reference.replacen(&reg.addr(), &proxy.addr(), 1);
    let r = Reference::parse(&via).unwrap();
    let (c, notices) = client();
    let probe_dir = tempfile::tempdir().unwrap();
    let probe = Store::open(probe_dir.path()).unwrap();
    c.pull(&r, &probe, None).await.unwrap();
    let layer = layer_digest(&probe, &via);

    // Eight parts 400 ms apart: the whole body takes ~2.8 s, far over the 1 s stall timeout, but
    // no read waits longer than 0.4 s.
    proxy.clear_log();
    proxy.add(FaultRule::new(
        "GET",
        &layer.to_string(),
        Fault::Trickle {
            pieces: 8,
            pause_ms: 400,
        },
        1,
    ));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    c.pull(&r, &store, None)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.log_text()));
    assert_eq!(Digest::sha256_of(&store.read_blob(&layer).unwrap()), layer);
    assert_eq!(
        proxy.count("GET", &layer.to_string()),
        1,
        "{}",
        proxy.log_text()
    );
    assert!(
        retries(&notices).is_empty(),
        "{:?}",
        notices.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_is_retried_then_names_the_address() {
    let hole = BlackHole::start().unwrap();
    let c = RegistryClient::with_options(ClientOptions {
        credentials: Credentials::Anonymous,
        connect_timeout: Duration::from_secs(1),
        stall_timeout: Duration::from_secs(10),
        retry_base_delay: Duration::from_millis(50),
        ..Default::default()
    })
    .unwrap();
    let notices: Notices = Arc::default();
    let sink = notices.clone();
    let c = c.with_notices(move |n| sink.lock().unwrap().push(n.clone()));
    let r = Reference::parse(&format!("{}/app:1", hole.addr())).unwrap();
    let started = Instant::now();
    let err = c.resolve(&r).await.unwrap_err();
    assert!(started.elapsed() < BOUND);
    let msg = err.to_string();
    assert!(
        matches!(err, RegistryError::Connect { .. })
            && msg.contains(&format!("cannot connect to registry {}", hole.addr()))
            && msg.contains("timed out after 1s"),
        "{msg}"
    );
    let seen = retries(&notices);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].to_string().contains("connect timed out after 1s"));
}
