//! `rbuild build --builder docker`: rbuild's frontend, dockerd's embedded BuildKit as the solver.
//! The context goes through the session's file sync (with `.dockerignore`), RUN output comes back
//! through the status stream into rbuild's progress, BuildKit's exporter writes the image into
//! dockerd (checked with `docker image inspect`), failures keep BuildKit's message with the
//! Dockerfile excerpt, and features BuildKit 0.8 lacks are refused before anything is solved.
//! Nothing is stored under rbuild's root.
//!
//! dockerd is started as /work/shared/bench/setup.sh starts it when it is not running; without
//! docker.io the tests skip loudly (they fail under `RBUILD_REQUIRE_ROOT=1` or `CI`).

mod common;

use common::remote::{assert_root_untouched, context, docker, dockerd, remote_build};
use common::{env, rbuild_at, stderr_text};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn builds_on_dockerd_with_the_context_through_the_session() {
    let (Some(env), Some(docker_bin)) = (env(), dockerd()) else {
        return;
    };
    let dockerfile = format!(
        "FROM {}\nENV GREETING=hi\nCOPY . /ctx/\n\
         RUN cat /ctx/hello.txt && test ! -e /ctx/secret.txt && echo built > /built\n\
         CMD [\"cat\", \"/built\"]\n",
        env.base
    );
    let ctx = context(&[
        ("Dockerfile", &dockerfile),
        ("hello.txt", "hello through the session\n"),
        ("secret.txt", "must not be sent\n"),
        (".dockerignore", "secret.txt\n"),
    ]);
    let root = tempfile::tempdir().unwrap();
    let tag = format!("rbuild-remote-test:{}", std::process::id());
    let files = tempfile::tempdir().unwrap();
    let (iid, metadata) = (files.path().join("iid"), files.path().join("metadata.json"));
    let out = remote_build(
        root.path(),
        ctx.path(),
        &[
            "--progress=plain",
            "--no-cache",
            "-t",
            &tag,
            "--iidfile",
            iid.to_str().unwrap(),
            "--metadata-file",
            metadata.to_str().unwrap(),
        ],
    );
    let err = stderr_text(&out);
    let inspect = docker(&docker_bin, &["image", "inspect", &tag]);
    let _ = docker(&docker_bin, &["rmi", &tag]);
    assert!(out.status.success(), "{err}");
    // BuildKit's vertices rendered by rbuild's plain progress, the RUN's output among them.
    assert!(err.contains("[internal] load build context"), "{err}");
    assert!(err.contains("[2/3] COPY . /ctx/"), "{err}");
    assert!(err.contains("hello through the session"), "{err}");
    assert!(err.contains("exporting to image"), "{err}");
    assert!(inspect.status.success(), "{}", stderr_text(&inspect));
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let config = &info[0]["Config"];
    assert!(
        config["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "GREETING=hi"),
        "{config}"
    );
    assert_eq!(config["Cmd"], serde_json::json!(["cat", "/built"]));
    // The image ID dockerd gives it is the --iidfile and the metadata's digest.
    let id = std::fs::read_to_string(&iid).unwrap();
    assert_eq!(info[0]["Id"].as_str().unwrap(), id);
    let metadata: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&metadata).unwrap()).unwrap();
    assert_eq!(metadata["containerimage.digest"].as_str().unwrap(), id);
    // busybox's layer plus COPY and RUN.
    assert_eq!(info[0]["RootFS"]["Layers"].as_array().unwrap().len(), 3);
    assert_root_untouched(root.path());
}

#[test]
fn json_progress_reports_the_remote_steps() {
    let (Some(env), Some(_docker)) = (env(), dockerd()) else {
        return;
    };
    let dockerfile = format!("FROM {}\nRUN echo remote-json-line\n", env.base);
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    let root = tempfile::tempdir().unwrap();
    let out = remote_build(root.path(), ctx.path(), &["--progress=json", "--no-cache"]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    let events = common::events(&out);
    assert!(
        events
            .iter()
            .any(|e| e["name"].as_str() == Some("[2/2] RUN echo remote-json-line")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.to_string().contains("remote-json-line")),
        "{events:?}"
    );
    assert_root_untouched(root.path());
}

#[test]
fn a_failed_step_keeps_buildkits_message_and_gains_the_excerpt() {
    let (Some(env), Some(_docker)) = (env(), dockerd()) else {
        return;
    };
    let dockerfile = format!("FROM {}\nRUN true\nRUN exit 3\nRUN true\n", env.base);
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    let root = tempfile::tempdir().unwrap();
    let out = remote_build(root.path(), ctx.path(), &["--progress=plain"]);
    let err = stderr_text(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("Dockerfile:3\n--------------------"), "{err}");
    assert!(err.contains("   3 | >>> RUN exit 3"), "{err}");
    // BuildKit 0.8's own words for a failed RUN.
    assert!(
        err.contains(
            "ERROR: failed to solve: executor failed running [/bin/sh -c exit 3]: exit code: 3"
        ),
        "{err}"
    );
    assert_root_untouched(root.path());
}

#[test]
fn features_the_daemon_lacks_are_refused_before_solving() {
    let (Some(env), Some(_docker)) = (env(), dockerd()) else {
        return;
    };
    let dockerfile = format!("FROM {}\nCOPY --link a.txt /a.txt\n", env.base);
    let ctx = context(&[("Dockerfile", &dockerfile), ("a.txt", "a\n")]);
    let root = tempfile::tempdir().unwrap();
    let out = remote_build(root.path(), ctx.path(), &["--progress=plain"]);
    let err = stderr_text(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("ERROR: failed to solve: the daemon's BuildKit is too old for COPY --link"),
        "{err}"
    );
    assert!(err.contains(">>> COPY --link a.txt /a.txt"), "{err}");
    // Refused before the graph was sent: no step ran.
    assert!(!err.contains("COPY --link a.txt /a.txt\n#"), "{err}");
    assert_root_untouched(root.path());
}

#[test]
fn pushes_with_buildkits_exporter() {
    let (Some(env), Some(docker_bin)) = (env(), dockerd()) else {
        return;
    };
    let dockerfile = format!("FROM {}\nRUN echo pushed > /pushed\n", env.base);
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    let root = tempfile::tempdir().unwrap();
    let name = format!("{}/remote-push:{}", env.registry.addr(), std::process::id());
    let output = format!("type=image,name={name},push=true");
    let out = remote_build(
        root.path(),
        ctx.path(),
        &["--progress=plain", "--output", &output],
    );
    let err = stderr_text(&out);
    let _ = docker(&docker_bin, &["rmi", &name]);
    assert!(out.status.success(), "{err}");
    let digest = rbuild_testsupport::skopeo_digest(&name).expect("pushed image");
    assert!(digest.to_string().starts_with("sha256:"));
    assert_root_untouched(root.path());
}

#[test]
fn secrets_reach_run_through_the_session_and_no_layer() {
    let (Some(env), Some(docker_bin)) = (env(), dockerd()) else {
        return;
    };
    let dockerfile = format!(
        "FROM {}\nRUN --mount=type=secret,id=token sha256sum < /run/secrets/token > /sum\n",
        env.base
    );
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    let secret = ctx.path().join("token.txt");
    std::fs::write(&secret, "s3cr3t-value").unwrap();
    let root = tempfile::tempdir().unwrap();
    let tag = format!("rbuild-remote-secret:{}", std::process::id());
    let spec = format!("id=token,src={}", secret.display());
    let out = remote_build(
        root.path(),
        ctx.path(),
        &[
            "--progress=plain",
            "--secret",
            &spec,
            "-t",
            &tag,
            "--no-cache",
        ],
    );
    let err = stderr_text(&out);
    let saved = Command::new(&docker_bin)
        .args(["save", &tag])
        .output()
        .unwrap();
    let _ = docker(&docker_bin, &["rmi", &tag]);
    assert!(out.status.success(), "{err}");
    assert!(saved.status.success());
    // The image's archive (every layer uncompressed) holds the marker, not the secret.
    let needle = b"s3cr3t-value";
    assert!(!saved.stdout.windows(needle.len()).any(|w| w == needle));
    // The RUN read the secret: its checksum is in the layer.
    let sum = Command::new("sha256sum").arg(&secret).output().unwrap();
    let sum = String::from_utf8_lossy(&sum.stdout);
    let sum = sum.split_whitespace().next().unwrap().as_bytes();
    assert!(saved.stdout.windows(sum.len()).any(|w| w == sum));
    assert_root_untouched(root.path());
}

#[test]
fn registry_credentials_go_through_the_session_and_the_push() {
    let (Some(env), Some(docker_bin)) = (env(), dockerd()) else {
        return;
    };
    use rbuild_testsupport::{RegistryOptions, TestRegistry};
    let reg = TestRegistry::start_with(&RegistryOptions {
        htpasswd: Some(("carol".into(), "pw-carol".into())),
        ..Default::default()
    })
    .unwrap();
    let config = tempfile::tempdir().unwrap();
    let auth = format!(
        "{{\"auths\":{{\"{}\":{{\"auth\":\"Y2Fyb2w6cHctY2Fyb2w=\"}}}}}}",
        reg.addr()
    );
    std::fs::write(config.path().join("config.json"), auth).unwrap();
    // A base only the private registry has (built and pushed locally), so the daemon must pull
    // it with credentials.
    let base = format!("{}/private-base:{}", reg.addr(), std::process::id());
    let base_ctx = context(&[(
        "Dockerfile",
        &format!(
            "FROM {}\nRUN echo {} > /unique\n",
            env.base,
            rbuild_remote::new_id()
        ),
    )]);
    let base_root = tempfile::tempdir().unwrap();
    let pushed = rbuild_at(base_root.path())
        .env("DOCKER_CONFIG", config.path())
        .args(["build", "--progress=plain", "--push", "-t", &base])
        .arg(base_ctx.path())
        .output()
        .unwrap();
    assert!(pushed.status.success(), "{}", stderr_text(&pushed));
    let dockerfile = format!("FROM {base}\nRUN echo private > /private\n");
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    let root = tempfile::tempdir().unwrap();
    let name = format!("{}/remote-private:{}", reg.addr(), std::process::id());
    let build = |config: &Path| {
        rbuild_at(root.path())
            .env("DOCKER_CONFIG", config)
            .env("RUST_LOG", "rbuild_remote=debug")
            .args(["build", "--builder", "docker", "--network=host"])
            .args(["--progress=plain", "--no-cache", "--push", "-t", &name])
            .arg(ctx.path())
            .output()
            .unwrap()
    };
    // Without credentials the private base does not resolve.
    let empty = tempfile::tempdir().unwrap();
    let out = build(empty.path());
    assert!(!out.status.success(), "{}", stderr_text(&out));
    // With docker's config holding them, the daemon gets them from the session's auth
    // provider for the pull, and dockerd's push gets them too.
    let out = build(config.path());
    let err = stderr_text(&out);
    let _ = docker(&docker_bin, &["rmi", &name, &base]);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("session call from the daemon path=/moby.filesync.v1.Auth/Credentials"),
        "{err}"
    );
    let inspect = rbuild_testsupport::skopeo("inspect", Some("carol:pw-carol"))
        .unwrap()
        .args(["--tls-verify=false", "--no-tags"])
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", stderr_text(&inspect));
    assert_root_untouched(root.path());
}

#[test]
fn local_and_tar_outputs_come_back_through_the_session() {
    let (Some(env), Some(_docker)) = (env(), dockerd()) else {
        return;
    };
    let dockerfile = format!(
        "FROM {}\nCOPY run.sh /run.sh\nRUN mkdir -p /out/sub && echo remote-out > /out/sub/file && ln -s sub/file /out/link\n",
        env.base
    );
    let ctx = context(&[
        ("Dockerfile", &dockerfile),
        ("run.sh", "#!/bin/sh\necho hi\n"),
    ]);
    std::fs::set_permissions(
        ctx.path().join("run.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let dir = dest.path().join("rootfs");
    let out = remote_build(
        root.path(),
        ctx.path(),
        &[
            "--progress=plain",
            "--output",
            &format!("type=local,dest={}", dir.display()),
        ],
    );
    assert!(out.status.success(), "{}", stderr_text(&out));
    assert_eq!(
        std::fs::read_to_string(dir.join("out/sub/file")).unwrap(),
        "remote-out\n"
    );
    assert_eq!(
        std::fs::read_link(dir.join("out/link")).unwrap(),
        Path::new("sub/file")
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("run.sh")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o755);
    assert!(dir.join("bin/busybox").is_file());

    let tar = dest.path().join("fs.tar");
    let out = remote_build(
        root.path(),
        ctx.path(),
        &[
            "--progress=plain",
            "--output",
            &format!("type=tar,dest={}", tar.display()),
        ],
    );
    assert!(out.status.success(), "{}", stderr_text(&out));
    let mut archive = tar::Archive::new(std::fs::File::open(&tar).unwrap());
    let mut found = None;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap() == Path::new("out/sub/file") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            found = Some(text);
        }
    }
    assert_eq!(found.as_deref(), Some("remote-out\n"));
    assert_root_untouched(root.path());
}

#[test]
fn exporters_dockerd_lacks_fail_with_the_daemons_message() {
    let (Some(env), Some(_docker)) = (env(), dockerd()) else {
        return;
    };
    let dockerfile = format!("FROM {}\n", env.base);
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    let root = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let output = format!("type=oci,dest={}", dest.path().join("o.tar").display());
    let out = remote_build(root.path(), ctx.path(), &["--output", &output]);
    let err = stderr_text(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("ERROR: failed to solve: exporter \"oci\" could not be found"),
        "{err}"
    );
}

#[test]
fn cache_flags_are_buildkit_cache_options() {
    let (Some(env), Some(_docker)) = (env(), dockerd()) else {
        return;
    };
    let dockerfile = format!(
        "FROM {}\nRUN echo {} > /cached\n",
        env.base,
        rbuild_remote::new_id()
    );
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    let root = tempfile::tempdir().unwrap();
    // An import is passed to the daemon's solve (an image without cache metadata imports
    // nothing, and the build goes on).
    let out = remote_build(
        root.path(),
        ctx.path(),
        &[
            "--progress=plain",
            "--cache-from",
            &format!("type=registry,ref={}", env.base),
        ],
    );
    assert!(out.status.success(), "{}", stderr_text(&out));
    // dockerd 20.10's BuildKit has no registry cache exporter: its own message says so.
    let cache = format!(
        "{}/remote-cache:{}",
        env.registry.addr(),
        std::process::id()
    );
    let out = remote_build(
        root.path(),
        ctx.path(),
        &[
            "--progress=plain",
            "--cache-to",
            &format!("type=registry,ref={cache},mode=max"),
        ],
    );
    let err = stderr_text(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("ERROR: failed to solve: unknown cache exporter: \"registry\""),
        "{err}"
    );
    assert_root_untouched(root.path());
}

/// The shared conformance cases through `--builder docker` (rbuild's frontend, dockerd's
/// BuildKit 0.8 solver and image exporter): every case passes but `53-copy-link`, which BuildKit
/// 0.8 cannot build (no MergeOp) and which is refused with the clear message.
#[test]
fn conformance_cases_through_dockerd() {
    let Some(shared) = rbuild_testsupport::shared_dir().expect("shared dir check") else {
        return;
    };
    let Some(_docker) = dockerd() else {
        return;
    };
    let conformance = common::conformance::serve_base(&shared);
    // run.sh's rbuild adapter ("adapt here if its CLI differs"): build on dockerd, read the
    // image from dockerd as the BuildKit adapter does, remove it afterwards.
    let harness = common::conformance::adapted_harness(
        &conformance,
        &[
            (
                r#"  IMAGE_REF="oci:$dest:$tag"
  timeout "$BUILD_TIMEOUT" "$RBUILD" build -t "$tag" --network=host "${args[@]}" \
    --output "type=oci,dest=$dest" "$ctx""#,
                r#"  IMAGE_REF="docker-daemon:$tag"
  timeout "$BUILD_TIMEOUT" "$RBUILD" build --builder docker -t "$tag" --network=host "${args[@]}" "$ctx""#,
            ),
            (
                r#"  if [[ $BUILDER == buildkit ]]; then "$DOCKER" rmi -f "$1" >/dev/null 2>&1 || true; fi"#,
                r#"  "$DOCKER" rmi -f "$1" >/dev/null 2>&1 || true"#,
            ),
        ],
    );
    let out = common::conformance::run_harness(harness.path(), common::RBUILD);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    let failed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(
        failed,
        ["FAIL 53-copy-link build failed (rc 1): ERROR: failed to solve: the daemon's BuildKit is too old for COPY --link"],
        "{stdout}"
    );
    assert!(stdout.contains("conformance: 33/34 passed"), "{stdout}");
}

#[test]
fn named_contexts_are_served_by_the_session() {
    let (Some(env), Some(docker_bin)) = (env(), dockerd()) else {
        return;
    };
    let dockerfile = format!(
        "FROM {}\nCOPY --from=extra data.txt /data.txt\nRUN cat /data.txt\n",
        env.base
    );
    let ctx = context(&[("Dockerfile", &dockerfile)]);
    let extra = context(&[("data.txt", "from the named context\n")]);
    let root = tempfile::tempdir().unwrap();
    let tag = format!("rbuild-remote-named:{}", std::process::id());
    let named = format!("extra={}", extra.path().display());
    let out = remote_build(
        root.path(),
        ctx.path(),
        &[
            "--progress=plain",
            "--no-cache",
            "--build-context",
            &named,
            "-t",
            &tag,
            "--load",
        ],
    );
    let err = stderr_text(&out);
    let _ = docker(&docker_bin, &["rmi", &tag]);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("from the named context"), "{err}");
    assert_root_untouched(root.path());
}

/// `--ssh` through the session's SSH forwarding: the RUN lists the host agent's key (an image of
/// the host's busybox and ssh-add, as in `ssh_mount.rs`).
#[test]
fn ssh_agent_is_forwarded_through_the_session() {
    let Some(_docker) = dockerd() else {
        return;
    };
    if !rbuild_testsupport::require_root().unwrap() {
        return;
    }
    let (Ok(agent_bin), Ok(add), Ok(keygen), Ok(busybox)) = (
        rbuild_testsupport::need_tool("ssh-agent"),
        rbuild_testsupport::need_tool("ssh-add"),
        rbuild_testsupport::need_tool("ssh-keygen"),
        rbuild_testsupport::need_tool("busybox"),
    ) else {
        println!("SKIPPED: openssh-client or busybox is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let mut agent = Command::new(agent_bin)
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let key = dir.path().join("id_ed25519");
    let made = Command::new(keygen)
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "rbuild-remote-ssh",
            "-f",
        ])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    let added = Command::new(&add)
        .arg(&key)
        .env("SSH_AUTH_SOCK", &socket)
        .output()
        .unwrap();
    assert!(added.status.success());
    // The image: busybox and ssh-add with the libraries ldd names.
    let ctx = dir.path().join("ctx");
    let rootfs = ctx.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy(&busybox, rootfs.join("bin/busybox")).unwrap();
    let ldd = Command::new("ldd").arg(&add).output().unwrap();
    let mut files = vec![add.clone()];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            files.push(PathBuf::from(p));
        }
    }
    for f in files {
        let dest = rootfs.join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dest).unwrap();
    }
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\n\
         RUN --mount=type=ssh [\"/usr/bin/ssh-add\", \"-l\"]\n",
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let spec = format!("default={}", socket.display());
    let out = remote_build(
        root.path(),
        &ctx,
        &["--progress=plain", "--no-cache", "--ssh", &spec],
    );
    let _ = agent.kill();
    let _ = agent.wait();
    let err = stderr_text(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("rbuild-remote-ssh"), "{err}");
    assert_root_untouched(root.path());
}

#[test]
fn newer_dockerfile_features_are_refused_with_their_instruction() {
    let (Some(env), Some(_docker)) = (env(), dockerd()) else {
        return;
    };
    let cases = [
        ("COPY --exclude=*.log d /d", "COPY --exclude"),
        ("COPY --parents d/sub/a.txt /p/", "COPY --parents"),
        (
            "COPY --chmod=u+x d/sub/a.txt /a",
            "COPY --chmod with a symbolic mode",
        ),
        (
            "RUN --mount=type=tmpfs,target=/t,size=1m true",
            "RUN --mount=type=tmpfs,size=",
        ),
        (
            "RUN --mount=type=secret,id=x,env=X true",
            "RUN --mount=type=secret,env=",
        ),
    ];
    for (instruction, feature) in cases {
        let dockerfile = format!("FROM {}\n{instruction}\n", env.base);
        let ctx = context(&[("Dockerfile", &dockerfile)]);
        std::fs::create_dir_all(ctx.path().join("d/sub")).unwrap();
        std::fs::write(ctx.path().join("d/sub/a.txt"), "a\n").unwrap();
        let root = tempfile::tempdir().unwrap();
        let out = remote_build(root.path(), ctx.path(), &["--progress=plain"]);
        let err = stderr_text(&out);
        assert!(!out.status.success(), "{instruction}: {err}");
        assert!(
            err.contains(&format!("   2 | >>> {instruction}\n")),
            "{instruction}: {err}"
        );
        assert!(
            err.contains(&format!(
                "--------------------\n\
                 ERROR: failed to solve: the daemon's BuildKit is too old for {feature}\n"
            )),
            "{instruction}: {err}"
        );
        assert_root_untouched(root.path());
    }
}

#[test]
fn a_context_streamed_on_stdin_is_served_by_the_session() {
    let (Some(env), Some(_docker)) = (env(), dockerd()) else {
        return;
    };
    let marker = format!("streamed {}", rbuild_remote::new_id());
    let dockerfile = format!("FROM {}\nCOPY f /f\nRUN cat /f\n", env.base);
    let mut archive = tar::Builder::new(Vec::new());
    for (name, text) in [("Dockerfile", dockerfile.as_str()), ("f", marker.as_str())] {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        archive
            .append_data(&mut header, name, text.as_bytes())
            .unwrap();
    }
    let bytes = archive.into_inner().unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut child = rbuild_at(root.path())
        .args([
            "build",
            "--builder",
            "docker",
            "--network=host",
            "--progress=plain",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = stderr_text(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&marker), "{err}");
    assert_root_untouched(root.path());
}
