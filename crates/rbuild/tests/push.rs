//! `rbuild build --push`, `--output type=image,push=true`, `rbuild push` and `rbuild login` with the
//! real binary against real `docker-registry` instances (open and token auth), a counting and
//! fault-injecting proxy, and skopeo to read the results back.

use rbuild_testsupport::{
    registry_with_busybox, require_root, skopeo, skopeo_digest, Fault, FaultProxy, FaultRule,
    RegistryOptions, TestRegistry,
};
use serde_json::Value;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;

use common::write_cred_helper;

const RBUILD: &str = env!("CARGO_BIN_EXE_rbuild");

fn rbuild(root: &Path, docker_config: &Path, args: &[&str]) -> Output {
    Command::new(RBUILD)
        .arg("--root")
        .arg(root)
        .args(args)
        .env("DOCKER_CONFIG", docker_config)
        .output()
        .expect("run rbuild")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "rbuild failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A context `FROM base` + `COPY hello.txt /`.
fn context(dir: &Path, base: &str, text: &str) -> std::path::PathBuf {
    let ctx = dir.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nCOPY hello.txt /hello.txt\n"),
    )
    .unwrap();
    fs::write(ctx.join("hello.txt"), text).unwrap();
    ctx
}

fn store_digest(root: &Path, name: &str) -> String {
    let index: Value = serde_json::from_slice(&fs::read(root.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        .unwrap_or_else(|| panic!("{name} not in the store: {index}"))["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Checks that the manifest at `reference` (read with `creds`) is the store's image `name` as
/// distributed: the same config, every layer gzip-compressed (the store keeps built layers
/// uncompressed, so the store's manifest digest differs); returns the registry's digest.
fn pushed_from_store(root: &Path, name: &str, reference: &str, creds: Option<&str>) -> String {
    let local = store_digest(root, name);
    let read = |digest: &str| -> Value {
        let path = root.join("blobs/sha256").join(&digest["sha256:".len()..]);
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    };
    let stored = read(&local);
    let sk = skopeo("inspect", creds)
        .unwrap()
        .args(["--tls-verify=false", "--raw"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(
        sk.status.success(),
        "{}",
        String::from_utf8_lossy(&sk.stderr)
    );
    let pushed: Value = serde_json::from_slice(&sk.stdout).unwrap();
    assert_eq!(pushed["config"], stored["config"]);
    let layers = pushed["layers"].as_array().unwrap();
    assert_eq!(layers.len(), stored["layers"].as_array().unwrap().len());
    for l in layers {
        assert!(
            l["mediaType"].as_str().unwrap().ends_with("gzip"),
            "{pushed}"
        );
    }
    assert!(stored["layers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar"));
    let digest = format!("sha256:{}", rbuild_oci::sha256_hex(&sk.stdout));
    assert_ne!(digest, local);
    digest
}

#[test]
fn build_push_skips_existing_mounts_base_and_writes_metadata() {
    if !require_root().unwrap() {
        return;
    }
    let (reg, base) = registry_with_busybox().unwrap();
    let proxy = FaultProxy::start(&reg.addr()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (root, cfg) = (dir.path().join("root"), dir.path().join("docker"));
    // The base comes through the proxy too, so the store knows it under the push registry's name.
    let base = base.replace(&reg.addr(), &proxy.addr());
    let ctx = context(dir.path(), &base, "hello push\n");
    let meta = dir.path().join("meta.json");
    let (t1, t2) = (
        format!("{}/team/app:1", proxy.addr()),
        format!("{}/team/app:2", proxy.addr()),
    );
    let out = rbuild(
        &root,
        &cfg,
        &[
            "build",
            "--progress=plain",
            "--push",
            "-t",
            &t1,
            "-t",
            &t2,
            "--metadata-file",
            meta.to_str().unwrap(),
            ctx.to_str().unwrap(),
        ],
    );
    let stdout = ok(&out);
    let digest = pushed_from_store(&root, &t1, &format!("{}/team/app:1", reg.addr()), None);
    assert_eq!(stdout.trim(), digest, "{}", stderr(&out));
    // The busybox layer is mounted from the base image's repository; the rest is uploaded.
    assert!(
        stderr(&out).contains("pushed 2 blob(s)"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("1 mounted"), "{}", stderr(&out));
    assert!(
        proxy.log().iter().any(|r| r.path.contains("mount=")
            && r.path.contains("from=busybox")
            && r.status == 201),
        "{}",
        proxy.log_text()
    );
    for t in ["1", "2"] {
        let r = format!("{}/team/app:{t}", reg.addr());
        assert_eq!(skopeo_digest(&r).unwrap().to_string(), digest);
    }
    let m: Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    assert_eq!(m["containerimage.digest"], digest.as_str());
    assert_eq!(m["containerimage.descriptor"]["digest"], digest.as_str());
    assert_eq!(
        m["containerimage.descriptor"]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(m["image.name"], format!("{t1},{t2}").as_str());

    // skopeo copies it back; the file is there.
    let layout = dir.path().join("copied");
    let sk = skopeo("copy", None)
        .unwrap()
        .args(["-q", "--src-tls-verify=false"])
        .arg(format!("docker://{}/team/app:1", reg.addr()))
        .arg(format!("oci:{}:x", layout.display()))
        .output()
        .unwrap();
    assert!(
        sk.status.success(),
        "{}",
        String::from_utf8_lossy(&sk.stderr)
    );

    // `rbuild push` of the same image: every blob is found by HEAD, nothing uploaded.
    proxy.clear_log();
    let out = rbuild(&root, &cfg, &["push", &t1]);
    assert_eq!(ok(&out).trim(), digest);
    assert_eq!(proxy.count("HEAD", "/blobs/"), 3, "{}", proxy.log_text());
    assert_eq!(proxy.count("POST", ""), 0, "{}", proxy.log_text());
    assert_eq!(proxy.count("PATCH", ""), 0);
    assert_eq!(proxy.count("PUT", "/blobs/"), 0);
    assert_eq!(proxy.count("PUT", "/manifests/"), 1);

    // --output type=image,name=...,push=true
    let t3 = format!("{}/other/app:3", proxy.addr());
    let spec = format!("type=image,name={t3},push=true");
    let out = rbuild(
        &root,
        &cfg,
        &[
            "build",
            "--progress=plain",
            "-o",
            &spec,
            ctx.to_str().unwrap(),
        ],
    );
    // (A new build: another `created` time, so another digest than the first.)
    let d3 = pushed_from_store(&root, &t3, &format!("{}/other/app:3", reg.addr()), None);
    assert_eq!(ok(&out).trim(), d3);
    assert_eq!(
        skopeo_digest(&format!("{}/other/app:3", reg.addr()))
            .unwrap()
            .to_string(),
        d3
    );

    // Missing local image: a clear error.
    let out = rbuild(&root, &cfg, &["push", &format!("{}/nope:1", reg.addr())]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no image named"), "{}", stderr(&out));
}

#[test]
fn login_then_push_to_token_registry() {
    if !require_root().unwrap() {
        return;
    }
    let (_open, base) = registry_with_busybox().unwrap();
    let reg = TestRegistry::start_with(&RegistryOptions {
        token_auth: Some(("bob".into(), "hunter2".into())),
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (root, cfg) = (dir.path().join("root"), dir.path().join("docker"));
    fs::create_dir_all(&cfg).unwrap();
    fs::write(
        cfg.join("config.json"),
        r#"{"auths":{"keep.example":{"auth":"eDp5"}},"detachKeys":"ctrl-x"}"#,
    )
    .unwrap();
    let ctx = context(dir.path(), &base, "token\n");
    let target = format!("{}/bob/app:1", reg.addr());
    ok(&rbuild(
        &root,
        &cfg,
        &[
            "build",
            "--progress=plain",
            "-t",
            &target,
            ctx.to_str().unwrap(),
        ],
    ));
    let out = rbuild(&root, &cfg, &["push", &target]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("push access denied"),
        "{}",
        stderr(&out)
    );

    let login = |pw: &str| {
        let mut child = Command::new(RBUILD)
            .args(["login", &reg.addr(), "-u", "bob", "--password-stdin"])
            .env("DOCKER_CONFIG", &cfg)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{pw}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let bad = login("wrong");
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("401"), "{}", stderr(&bad));
    let good = login("hunter2");
    assert!(good.status.success(), "{}", stderr(&good));
    assert!(stderr(&good).contains("Login Succeeded"));
    let written: Value =
        serde_json::from_slice(&fs::read(cfg.join("config.json")).unwrap()).unwrap();
    assert_eq!(written["auths"][reg.addr()]["auth"], "Ym9iOmh1bnRlcjI=");
    assert_eq!(written["auths"]["keep.example"]["auth"], "eDp5");
    assert_eq!(written["detachKeys"], "ctrl-x");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(cfg.join("config.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    let out = rbuild(&root, &cfg, &["push", &target]);
    let digest = ok(&out);
    let sk = skopeo("inspect", Some("bob:hunter2"))
        .unwrap()
        .arg("--tls-verify=false")
        .arg(format!("docker://{target}"))
        .output()
        .unwrap();
    assert!(
        sk.status.success(),
        "{}",
        String::from_utf8_lossy(&sk.stderr)
    );
    let v: Value = serde_json::from_slice(&sk.stdout).unwrap();
    assert_eq!(v["Digest"], digest.trim());
}

#[test]
fn push_through_faults_completes_or_fails_clearly() {
    if !require_root().unwrap() {
        return;
    }
    let (reg, base) = registry_with_busybox().unwrap();
    let proxy = FaultProxy::start(&reg.addr()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (root, cfg) = (dir.path().join("root"), dir.path().join("docker"));
    let ctx = context(dir.path(), &base, "faults\n");
    let target = format!("{}/faulty/app:1", proxy.addr());
    ok(&rbuild(
        &root,
        &cfg,
        &[
            "build",
            "--progress=plain",
            "-t",
            &target,
            ctx.to_str().unwrap(),
        ],
    ));
    proxy.add(FaultRule::new("HEAD", "/blobs/", Fault::RateLimit(1), 2));
    proxy.add(FaultRule::new(
        "POST",
        "/blobs/uploads/",
        Fault::Status(503),
        1,
    ));
    proxy.add(FaultRule::new(
        "PUT",
        "/blobs/uploads/",
        Fault::DropRequestBody,
        1,
    ));
    proxy.add(FaultRule::new("PUT", "/manifests/", Fault::Status(500), 1));
    proxy.clear_log();
    let out = rbuild(&root, &cfg, &["push", &target]);
    let digest = ok(&out);
    assert_eq!(
        skopeo_digest(&format!("{}/faulty/app:1", reg.addr()))
            .unwrap()
            .to_string(),
        digest.trim()
    );
    // Every fault was injected (the push did not get around them by luck).
    let log = proxy.log_text();
    assert_eq!(proxy.hits(&Fault::RateLimit(1)), 2, "{log}");
    assert_eq!(proxy.hits(&Fault::Status(503)), 1, "{log}");
    assert_eq!(proxy.hits(&Fault::DropRequestBody), 1, "{log}");
    assert_eq!(proxy.hits(&Fault::Status(500)), 1, "{log}");
    // Retry-After: 1 was honoured: the next request for a rate-limited path came at least a
    // second after the 429 was answered (a lower bound, measured by the proxy's clock).
    let requests = proxy.log();
    for (i, limited) in requests.iter().enumerate() {
        if limited.fault != Some(Fault::RateLimit(1)) {
            continue;
        }
        let retry = requests[i + 1..]
            .iter()
            .filter(|r| r.method == limited.method && r.path == limited.path)
            .min_by_key(|r| r.at)
            .unwrap_or_else(|| panic!("{} {} never retried:\n{log}", limited.method, limited.path));
        let waited = retry.at.duration_since(limited.at);
        assert!(
            waited >= std::time::Duration::from_secs(1),
            "retried {} after {waited:?}, before Retry-After: 1\n{log}",
            limited.path
        );
    }
    // The failed manifest PUT was retried and then succeeded.
    assert!(
        requests
            .iter()
            .any(|r| r.method == "PUT" && r.path.contains("/manifests/") && r.status == 201),
        "{log}"
    );

    // A registry that always fails: exit code 1 and the status in the message.
    let t2 = format!("{}/faulty/two:1", proxy.addr());
    ok(&rbuild(
        &root,
        &cfg,
        &[
            "build",
            "--progress=plain",
            "-t",
            &t2,
            ctx.to_str().unwrap(),
        ],
    ));
    proxy.add(FaultRule::new(
        "PUT",
        "/manifests/",
        Fault::Status(500),
        100,
    ));
    let out = rbuild(&root, &cfg, &["push", &t2]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("failed to push") && err.contains("500"),
        "{err}"
    );
}

/// `credsStore`: `rbuild login` stores through `docker-credential-NAME store`, and pushes read
/// the credentials back with `get` (a shell-script helper on PATH).
#[test]
fn creds_store_helper_is_used_for_login_and_push() {
    if !require_root().unwrap() {
        return;
    }
    let (_open, base) = registry_with_busybox().unwrap();
    let reg = TestRegistry::start_with(&RegistryOptions {
        htpasswd: Some(("carol".into(), "pw-carol".into())),
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (root, cfg, bin) = (
        dir.path().join("root"),
        dir.path().join("docker"),
        dir.path().join("bin"),
    );
    fs::create_dir_all(&cfg).unwrap();
    fs::create_dir_all(&bin).unwrap();
    fs::write(cfg.join("config.json"), r#"{"credsStore":"rbtest"}"#).unwrap();
    let stored = dir.path().join("helper-store.json");
    write_cred_helper(&bin, "rbtest", &stored, None);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut child = Command::new(RBUILD)
            .arg("--root")
            .arg(&root)
            .args(args)
            .env("DOCKER_CONFIG", &cfg)
            .env("PATH", &path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    };
    let ctx = context(dir.path(), &base, "helper\n");
    let target = format!("{}/carol/app:1", reg.addr());
    ok(&run(
        &[
            "build",
            "--progress=plain",
            "-t",
            &target,
            ctx.to_str().unwrap(),
        ],
        None,
    ));
    let out = run(
        &["login", &reg.addr(), "-u", "carol", "--password-stdin"],
        Some("pw-carol\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("docker-credential-rbtest"),
        "{}",
        stderr(&out)
    );
    let saved: Value = serde_json::from_slice(&fs::read(&stored).unwrap()).unwrap();
    assert_eq!(saved["ServerURL"], reg.addr().as_str());
    assert_eq!(saved["Username"], "carol");
    assert_eq!(saved["Secret"], "pw-carol");
    // config.json itself holds no secret.
    assert!(!fs::read_to_string(cfg.join("config.json"))
        .unwrap()
        .contains("auths"));
    let digest = ok(&run(&["push", &target], None));
    assert_eq!(
        digest.trim(),
        pushed_from_store(&root, &target, &target, Some("carol:pw-carol"))
    );
}

/// `credHelpers`: the helper named for the registry's host is used for login and push, ahead of
/// `credsStore` (whose helper here does not exist, so using it would fail), and other registries'
/// entries are not consulted.
#[test]
fn cred_helpers_entry_wins_for_its_registry() {
    if !require_root().unwrap() {
        return;
    }
    let (_open, base) = registry_with_busybox().unwrap();
    let reg = TestRegistry::start_with(&RegistryOptions {
        htpasswd: Some(("carol".into(), "pw-carol".into())),
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (root, cfg, bin) = (
        dir.path().join("root"),
        dir.path().join("docker"),
        dir.path().join("bin"),
    );
    fs::create_dir_all(&cfg).unwrap();
    fs::create_dir_all(&bin).unwrap();
    fs::write(
        cfg.join("config.json"),
        format!(
            r#"{{"credsStore":"rbtest-missing","credHelpers":{{"{}":"xyz","other.example":"rbtest-other"}}}}"#,
            reg.addr()
        ),
    )
    .unwrap();
    let (stored, calls) = (dir.path().join("xyz-store.json"), dir.path().join("calls"));
    write_cred_helper(&bin, "xyz", &stored, Some(&calls));
    let other_calls = dir.path().join("other-calls");
    write_cred_helper(
        &bin,
        "rbtest-other",
        &dir.path().join("other-store.json"),
        Some(&other_calls),
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |args: &[&str], stdin: &str| {
        let mut child = Command::new(RBUILD)
            .arg("--root")
            .arg(&root)
            .args(args)
            .env("DOCKER_CONFIG", &cfg)
            .env("PATH", &path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    };
    let ctx = context(dir.path(), &base, "cred helpers\n");
    let target = format!("{}/carol/helpers:1", reg.addr());
    ok(&run(
        &[
            "build",
            "--progress=plain",
            "-t",
            &target,
            ctx.to_str().unwrap(),
        ],
        "",
    ));
    // Nothing stored yet: the helper says "not found", the registry says 401.
    let out = run(&["push", &target], "");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let get = format!("get {}", reg.addr());
    let before = fs::read_to_string(&calls).unwrap();
    assert!(
        !before.is_empty() && before.lines().all(|l| l == get),
        "{before}"
    );
    let out = run(
        &["login", &reg.addr(), "-u", "carol", "--password-stdin"],
        "pw-carol\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("docker-credential-xyz"),
        "{}",
        stderr(&out)
    );
    let saved: Value = serde_json::from_slice(&fs::read(&stored).unwrap()).unwrap();
    assert_eq!(saved["ServerURL"], reg.addr().as_str());
    assert_eq!(saved["Secret"], "pw-carol");
    let digest = ok(&run(&["push", &target], ""));
    assert_eq!(
        digest.trim(),
        pushed_from_store(&root, &target, &target, Some("carol:pw-carol"))
    );
    assert_eq!(
        skopeo_digest_with_creds(&target, "carol:pw-carol"),
        digest.trim()
    );
    // The successful push asked the helper again (after the login's store).
    let log = fs::read_to_string(&calls).unwrap();
    let after_login = log.lines().skip_while(|l| !l.starts_with("store ")).skip(1);
    assert!(after_login.clone().count() >= 1, "{log}");
    assert!(after_login.into_iter().all(|l| l == get), "{log}");
    assert!(!other_calls.exists(), "another registry's helper was run");
    assert!(!fs::read_to_string(cfg.join("config.json"))
        .unwrap()
        .contains("auths"));
}

fn skopeo_digest_with_creds(reference: &str, creds: &str) -> String {
    let sk = skopeo("inspect", Some(creds))
        .unwrap()
        .arg("--tls-verify=false")
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(
        sk.status.success(),
        "{}",
        String::from_utf8_lossy(&sk.stderr)
    );
    let v: Value = serde_json::from_slice(&sk.stdout).unwrap();
    v["Digest"].as_str().unwrap().to_string()
}
