//! A Debian `docker-registry` with htpasswd Basic auth over TLS (a throwaway CA and a server
//! certificate for 127.0.0.1, as distribution wants for Basic auth): skopeo pushes with the CA in
//! its cert dir; [`RegistryClient`] pulls and pushes over HTTPS trusting that CA, refuses the
//! server without it, and reports wrong credentials; `RegistryClient::new()` does the same from
//! `RBUILD_REGISTRY_CA` + `RBUILD_TLS_REGISTRIES` (one test in this binary, so setting the
//! environment cannot race with other tests).

use rbuild_oci::{Digest, Store};
use rbuild_registry::{
    ClientOptions, Credentials, PushOptions, Reference, RegistryClient, RegistryError,
    REGISTRY_CA_ENV, TLS_REGISTRIES_ENV,
};
use rbuild_testsupport::{make_busybox_layout, RegistryOptions, TestRegistry};
use std::path::Path;
use std::time::Duration;

const USER: &str = "tester";
const PASS: &str = "s3cret";

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

/// `skopeo inspect` over verified TLS (the CA's directory as `--cert-dir`).
fn skopeo_digest(reference: &str, cert_dir: &Path) -> Digest {
    let creds = format!("{USER}:{PASS}");
    let r = format!("docker://{reference}");
    let out = skopeo(&[
        "inspect",
        "--no-tags",
        "--cert-dir",
        cert_dir.to_str().unwrap(),
        "--creds",
        &creds,
        &r,
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["Digest"].as_str().unwrap().parse().unwrap()
}

fn client(ca: Option<&Path>, creds: Credentials, registry: &str) -> RegistryClient {
    RegistryClient::with_options(ClientOptions {
        https_registries: vec![registry.to_string()],
        extra_ca_pem: ca.map(|p| std::fs::read(p).unwrap()),
        credentials: creds,
        max_retries: 1,
        retry_base_delay: Duration::from_millis(20),
        ..Default::default()
    })
    .unwrap()
}

fn basic(p: &str) -> Credentials {
    Credentials::Basic {
        username: USER.into(),
        password: p.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_basic_auth_registry() {
    let reg = TestRegistry::start_with(&RegistryOptions {
        htpasswd: Some((USER.into(), PASS.into())),
        tls: true,
        ..Default::default()
    })
    .unwrap();
    let addr = reg.addr();
    let ca = reg.ca_pem().expect("TLS registry has a CA");
    let cert_dir = ca.parent().unwrap();
    assert_eq!(ca.file_name().unwrap(), "ca.crt");

    // skopeo pushes with TLS verification on (the CA in its cert dir) and credentials.
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    make_busybox_layout(&layout).unwrap();
    let reference = format!("{addr}/private/busybox:latest");
    let creds = format!("{USER}:{PASS}");
    skopeo(&[
        "copy",
        "-q",
        "--all",
        "--preserve-digests",
        "--dest-cert-dir",
        cert_dir.to_str().unwrap(),
        "--dest-creds",
        &creds,
        &format!("oci:{}:latest", layout.display()),
        &format!("docker://{reference}"),
    ]);
    let pushed = skopeo_digest(&reference, cert_dir);
    let r = Reference::parse(&reference).unwrap();

    // Loopback is plain HTTP unless listed as an HTTPS registry.
    let good = client(Some(&ca), basic(PASS), &addr);
    assert_eq!(good.scheme(&addr), "https");
    assert_eq!(RegistryClient::new().unwrap().scheme(&addr), "http");

    // With the CA and the right password: pull, same digest as skopeo's.
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let rec = good
        .pull(&r, &store, None)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", reg.log()));
    assert_eq!(rec.manifest_digest, pushed);
    for d in std::iter::once(&rec.manifest.config.digest)
        .chain(rec.manifest.layers.iter().map(|l| &l.digest))
    {
        assert!(store.has_blob(d), "{d} missing");
    }

    // Without the CA: a certificate error naming the https address, not an auth error.
    let untrusting = client(None, basic(PASS), &addr);
    let err = untrusting.resolve(&r).await.unwrap_err();
    let msg = err.to_string();
    eprintln!("without the CA: {msg}");
    assert!(
        matches!(err, RegistryError::UntrustedCertificate { .. }),
        "{msg}"
    );
    assert!(!err.is_retryable());
    assert_eq!(
        msg,
        format!(
            "{reference}: TLS certificate of https://{addr} is not trusted: invalid peer \
             certificate: UnknownIssuer (trust its CA with RBUILD_REGISTRY_CA=/path/ca.pem)"
        )
    );

    // Wrong password: 401 naming the reference.
    let wrong = client(Some(&ca), basic("nope"), &addr);
    let err = wrong.resolve(&r).await.unwrap_err();
    let msg = err.to_string();
    eprintln!("wrong password: {msg}");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{msg}");
    assert!(
        msg.starts_with(&format!(
            "pull access denied for {addr}/private/busybox: 401 Unauthorized"
        )),
        "{msg}"
    );

    // Push the pulled image to another repository over TLS; skopeo sees the same digest.
    let target = format!("{addr}/copy/busybox:v1");
    let desc = store
        .resolve_tag(&reference)
        .unwrap()
        .expect("pull tags it");
    assert_eq!(desc.digest, pushed);
    let report = good
        .push(
            &store,
            &desc,
            &[Reference::parse(&target).unwrap()],
            &PushOptions::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", reg.log()));
    assert_eq!(report.pushed, vec![target.clone()]);
    assert_eq!(report.uploaded + report.existing + report.mounted, 2);
    assert_eq!(skopeo_digest(&target, cert_dir), pushed);

    // The CLI's way: RegistryClient::new() with the environment (credentials from a config.json).
    let cfg_dir = dir.path().join("docker");
    std::fs::create_dir(&cfg_dir).unwrap();
    std::fs::write(
        cfg_dir.join("config.json"),
        format!(r#"{{"auths":{{"{addr}":{{"username":"{USER}","password":"{PASS}"}}}}}}"#),
    )
    .unwrap();
    std::env::set_var("DOCKER_CONFIG", &cfg_dir);
    std::env::set_var(TLS_REGISTRIES_ENV, format!("example.invalid:5000, {addr}"));
    std::env::set_var(REGISTRY_CA_ENV, dir.path().join("missing.pem"));
    let msg = RegistryClient::new().unwrap_err().to_string();
    assert!(
        msg.contains("RBUILD_REGISTRY_CA=") && msg.contains("missing.pem"),
        "{msg}"
    );
    std::env::set_var(REGISTRY_CA_ENV, &ca);
    let from_env = RegistryClient::new().unwrap();
    assert_eq!(from_env.scheme(&addr), "https");
    let resolved = from_env
        .resolve(&Reference::parse(&target).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", reg.log()));
    assert_eq!(resolved.manifest_digest, pushed);
}
