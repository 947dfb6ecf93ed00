//! Rootless mode keeps what root mode offers (issue 14 point 2), run by the real binary as the
//! unprivileged test user (`common::rootless`): cache mounts persist between builds with the
//! owners asked for, secrets reach their step and no layer, and pushes and pulls to a registry
//! with Basic auth over TLS use the credentials `rbuild login` saved in the user's
//! `DOCKER_CONFIG`. (Outputs and layer owners: `rootless_outputs.rs`.)
//!
//! Needs root (to create the users) and `newuidmap`/`newgidmap`: skips loudly without them,
//! unless `RBUILD_REQUIRE_ROOT=1` (CI), which fails instead.

mod common;

use common::rootless::{
    chown_tree, home_of, rbuild_as, rbuild_as_cmd, setup, text, write_as, USER,
};
use rbuild_testsupport::{RegistryOptions, TestRegistry};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Output, Stdio};

/// The value a RUN prints after `marker=` in a plain-progress build's text.
fn value_after<'t>(t: &'t str, marker: &str) -> Option<&'t str> {
    t.lines()
        .filter_map(|l| l.split_once(marker).map(|(_, v)| v.trim()))
        .find(|v| !v.is_empty() && !v.contains('$') && !v.contains('"'))
}

#[test]
fn rootless_cache_mount_persists_between_builds_with_its_owners() {
    let Some(setup) = setup() else { return };
    let home = home_of(USER);
    let h = home.path();
    write_as(
        USER,
        h,
        "ctx/Dockerfile",
        &format!(
            "FROM {}\nARG N\n\
             RUN --mount=type=cache,id=c1,target=/cache,uid=1000,gid=1001,mode=0750 \
                 --mount=type=cache,id=c2,target=/plain \
                 echo $N >> /cache/log && echo $N >> /plain/log && \
                 echo \"cache-log=$(cat /cache/log | tr '\\n' ,)\" && \
                 echo \"cache-owner=$(stat -c %u:%g:%a /cache)\" && \
                 echo \"plain-owner=$(stat -c %u:%g /plain /plain/log | tr '\\n' ,)\" && \
                 echo \"plain-log=$(cat /plain/log | tr '\\n' ,)\"\n",
            setup.base
        ),
    );
    let build = |n: &str| {
        let arg = format!("N={n}");
        let out = rbuild_as(
            setup,
            USER,
            h,
            &[
                "build",
                "--progress=plain",
                "--network=none",
                "--build-arg",
                &arg,
                "ctx",
            ],
        );
        let t = text(&out);
        assert!(out.status.success(), "build N={n}: {t}");
        t
    };
    let first = build("one");
    assert_eq!(value_after(&first, "cache-log="), Some("one,"), "{first}");
    // The owner and mode asked for, in-image (never the host subuid behind them).
    assert_eq!(
        value_after(&first, "cache-owner="),
        Some("1000:1001:750"),
        "{first}"
    );
    assert_eq!(
        value_after(&first, "plain-owner="),
        Some("0:0,0:0,"),
        "{first}"
    );
    let second = build("two");
    assert_eq!(
        value_after(&second, "cache-log="),
        Some("one,two,"),
        "the cache mount did not persist: {second}"
    );
    assert_eq!(
        value_after(&second, "plain-log="),
        Some("one,two,"),
        "{second}"
    );
    assert_eq!(
        value_after(&second, "cache-owner="),
        Some("1000:1001:750"),
        "{second}"
    );
}

/// Where `needle` occurs in `data`, raw or after gunzip, or in a tar entry (recursively).
fn holds(data: &[u8], needle: &[u8]) -> bool {
    if data.windows(needle.len()).any(|w| w == needle) {
        return true;
    }
    if data.starts_with(&[0x1f, 0x8b]) {
        let mut plain = Vec::new();
        if flate2::read::GzDecoder::new(data)
            .read_to_end(&mut plain)
            .is_ok()
        {
            return holds(&plain, needle);
        }
    }
    if data.len() > 262 && &data[257..262] == b"ustar" {
        let mut a = tar::Archive::new(data);
        if let Ok(entries) = a.entries() {
            for e in entries.flatten() {
                let mut e = e;
                let mut inner = Vec::new();
                if e.read_to_end(&mut inner).is_ok() && holds(&inner, needle) {
                    return true;
                }
            }
        }
    }
    false
}

/// Every regular file below `dir` (symlinks are not followed: a snapshot's absolute links
/// point into the host).
fn files_below(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            files_below(&e.path(), out);
        } else if kind.is_file() {
            out.push(e.path());
        }
    }
}

#[test]
fn rootless_secret_reaches_its_step_and_no_layer() {
    let Some(setup) = setup() else { return };
    let home = home_of(USER);
    let h = home.path();
    let secret = format!("rbuild-rootless-secret-{}-5c1e", std::process::id());
    write_as(USER, h, "tok.txt", &secret);
    std::fs::set_permissions(
        h.join("tok.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod secret");
    write_as(
        USER,
        h,
        "ctx/Dockerfile",
        &format!(
            "FROM {}\n\
             RUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -c1-64 > /sum && \
                 echo \"sum=$(cat /sum)\"\n\
             RUN --mount=type=secret,id=tok,target=/s,uid=1000,gid=1000,mode=0400 \
                 echo \"secret-owner=$(stat -c %u:%g:%a /s)\"\n\
             RUN echo \"after=$(ls /run/secrets 2>/dev/null | wc -l)\"\n",
            setup.base
        ),
    );
    let secret_arg = format!("id=tok,src={}", h.join("tok.txt").display());
    let out_dir = h.join("out");
    let dest = format!("type=oci,dest={},tar=false", out_dir.display());
    let out = rbuild_as(
        setup,
        USER,
        h,
        &[
            "build",
            "--progress=plain",
            "--network=none",
            "--secret",
            &secret_arg,
            "-o",
            &dest,
            "ctx",
        ],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let want = sha256_hex(secret.as_bytes());
    assert_eq!(
        value_after(&t, "sum="),
        Some(want.as_str()),
        "the step did not read the secret: {t}"
    );
    assert_eq!(
        value_after(&t, "secret-owner="),
        Some("1000:1000:400"),
        "{t}"
    );
    assert_eq!(
        value_after(&t, "after="),
        Some("0"),
        "a secret file stayed: {t}"
    );
    assert!(!t.contains(&secret), "the secret was printed: {t}");
    let mut files = Vec::new();
    files_below(&out_dir, &mut files);
    assert!(files.len() > 3, "no image in {out_dir:?}");
    for f in &files {
        let data = std::fs::read(f).expect("read output file");
        assert!(!holds(&data, secret.as_bytes()), "the secret is in {f:?}");
    }
    // Nor anywhere in the state root (snapshots, cache index, store).
    let mut state = Vec::new();
    files_below(&h.join("xdg/rbuild"), &mut state);
    for f in &state {
        let data = std::fs::read(f).unwrap_or_default();
        assert!(
            !data.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret is in the state root: {f:?}"
        );
    }
}

/// Lowercase hex sha256 of `data` (through the oci crate's digest).
fn sha256_hex(data: &[u8]) -> String {
    rbuild_oci::Digest::sha256_of(data).hex().to_string()
}

/// `rbuild ARGS` as the test user with `DOCKER_CONFIG` and the registry's TLS settings, with
/// `stdin` written to its standard input.
fn rbuild_registry(
    home: &Path,
    env: &[(&str, String)],
    args: &[&str],
    stdin: Option<&str>,
) -> Output {
    let setup = setup().expect("setup");
    let mut cmd = rbuild_as_cmd(setup, USER, home, args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rbuild as the test user");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("wait rbuild")
}

#[test]
fn rootless_push_and_pull_with_basic_auth_over_tls() {
    let Some(setup) = setup() else { return };
    let reg = TestRegistry::start_with(&RegistryOptions {
        htpasswd: Some(("carol".into(), "pw-carol".into())),
        tls: true,
        ..Default::default()
    })
    .expect("start TLS registry with Basic auth");
    let home = home_of(USER);
    let h = home.path();
    // The user's own CA file and docker config directory.
    let ca = h.join("ca.pem");
    std::fs::copy(reg.ca_pem().expect("registry CA"), &ca).expect("copy CA");
    let cfg = h.join("docker");
    std::fs::create_dir_all(&cfg).expect("mkdir docker config");
    chown_tree(USER, h);
    let addr = reg.addr();
    // The loopback registry speaks HTTPS only: RBUILD_TLS_REGISTRIES says so, and
    // RBUILD_REGISTRY_CA trusts its throwaway CA.
    let with = |cfg: &Path, args: &[&str], stdin: Option<&str>| {
        let env = [
            ("DOCKER_CONFIG", cfg.display().to_string()),
            ("RBUILD_REGISTRY_CA", ca.display().to_string()),
            ("RBUILD_TLS_REGISTRIES", addr.clone()),
        ];
        rbuild_registry(h, &env, args, stdin)
    };

    let login = with(
        &cfg,
        &["login", &addr, "-u", "carol", "--password-stdin"],
        Some("pw-carol\n"),
    );
    assert!(login.status.success(), "login: {}", text(&login));
    let saved = std::fs::read_to_string(cfg.join("config.json")).expect("config.json saved");
    assert!(saved.contains(&addr) && saved.contains("auths"), "{saved}");

    let marker = format!("pushed-rootless-{}", std::process::id());
    write_as(
        USER,
        h,
        "ctx/Dockerfile",
        &format!(
            "FROM {}\nRUN echo {marker} > /m && chown 42:43 /m\n",
            setup.base
        ),
    );
    let target = format!("{addr}/carol/rootless:1");
    let push = with(
        &cfg,
        &[
            "build",
            "--progress=plain",
            "--network=none",
            "-t",
            &target,
            "--push",
            "ctx",
        ],
        None,
    );
    assert!(push.status.success(), "build --push: {}", text(&push));

    // A fresh root pulls it back with the saved credentials: FROM the pushed image.
    write_as(
        USER,
        h,
        "child/Dockerfile",
        &format!("FROM {target}\nRUN echo \"got=$(cat /m) owner=$(stat -c %u:%g /m)\"\n"),
    );
    let child_root = h.join("root2");
    let root2 = child_root.to_string_lossy();
    let child = with(
        &cfg,
        &[
            "--root",
            &root2,
            "build",
            "--progress=plain",
            "--network=none",
            "child",
        ],
        None,
    );
    let t = text(&child);
    assert!(child.status.success(), "FROM the pushed image: {t}");
    assert!(
        t.contains(&format!("got={marker} owner=42:43")),
        "pulled image content or owner: {t}"
    );

    // `rbuild pull` into another fresh root.
    let root3 = h.join("root3");
    let root3 = root3.to_string_lossy();
    let pull = with(&cfg, &["--root", &root3, "pull", &target], None);
    assert!(pull.status.success(), "rbuild pull: {}", text(&pull));

    // Without the credentials the same pull is refused (so the ones above were used).
    let empty = h.join("empty-docker");
    std::fs::create_dir_all(&empty).expect("mkdir");
    chown_tree(USER, &empty);
    let root4 = h.join("root4");
    let root4 = root4.to_string_lossy();
    let anon = with(&empty, &["--root", &root4, "pull", &target], None);
    let t = text(&anon);
    assert!(!anon.status.success(), "anonymous pull succeeded: {t}");
    assert!(
        t.contains("401") || t.to_lowercase().contains("unauthorized") || t.contains("log in"),
        "{t}"
    );
}
