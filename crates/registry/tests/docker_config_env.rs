//! `RegistryClient::new()` reads credentials from `$DOCKER_CONFIG/config.json`. Its own test binary
//! (one test) so setting the environment variable cannot race with other tests.

use rbuild_oci::Store;
use rbuild_registry::{Reference, RegistryClient};
use rbuild_testsupport::{
    make_busybox_layout, push_layout_with_creds, RegistryOptions, TestRegistry,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_client_uses_docker_config_env() {
    let reg = TestRegistry::start_with(&RegistryOptions {
        htpasswd: Some(("cfguser".into(), "cfgpass".into())),
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    make_busybox_layout(&layout).unwrap();
    let reference = format!("{}/busybox:latest", reg.addr());
    push_layout_with_creds(&layout, &reference, Some(("cfguser", "cfgpass"))).unwrap();

    let cfg_dir = dir.path().join("docker");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    std::fs::write(
        cfg_dir.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"username":"cfguser","password":"cfgpass"}}}}}}"#,
            reg.addr()
        ),
    )
    .unwrap();
    // SAFETY (edition 2021: safe fn): the only test in this binary, set before any client exists.
    std::env::set_var("DOCKER_CONFIG", &cfg_dir);

    let client = RegistryClient::new().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let rec = client
        .pull(&Reference::parse(&reference).unwrap(), &store, Some("b:1"))
        .await
        .unwrap();
    assert!(store.has_blob(&rec.manifest_digest));
}
