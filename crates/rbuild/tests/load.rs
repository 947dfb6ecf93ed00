//! `rbuild build --load` (the image streamed as a `docker load` archive into a docker daemon's
//! unix socket) and the buildx environment CI sets (`BUILDKIT_PROGRESS`,
//! `BUILDX_NO_DEFAULT_ATTESTATIONS`, `BUILDX_BUILDER`).
//!
//! The daemon is a real dockerd when one answers (skipped loudly otherwise; the test never
//! starts one), and in addition a small HTTP server on a unix socket that speaks the docker
//! API's `GET /_ping` and `POST /images/load` and checks the archive it receives with `tar`.

mod common;

use common::{rbuild_at, stderr_text};
use rbuild_testsupport::require_root;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A context with `FROM scratch` + `COPY hello.txt`.
fn context() -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("hello.txt"), "hello from rbuild\n").unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY hello.txt /hello.txt\n",
    )
    .unwrap();
    ctx
}

fn build(root: &Path, ctx: &Path, docker_host: Option<&str>, extra: &[&str]) -> Output {
    let mut cmd = rbuild_at(root);
    match docker_host {
        Some(h) => cmd.env("DOCKER_HOST", h),
        None => cmd.env_remove("DOCKER_HOST"),
    };
    cmd.env_remove("BUILDKIT_PROGRESS")
        .arg("build")
        .args(extra)
        .arg(ctx)
        .output()
        .expect("run rbuild")
}

#[test]
fn load_without_a_daemon_fails_before_building() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context();
    let sock = root.path().join("no-daemon.sock");
    let host = format!("unix://{}", sock.display());
    let out = build(
        root.path(),
        ctx.path(),
        Some(&host),
        &["--load", "-t", "x:1"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr_text(&out));
    assert_eq!(
        stderr_text(&out).trim(),
        format!(
            "error: --load: cannot connect to the Docker daemon at {host}. Is the docker daemon running?"
        )
    );
    // Refused before building: no image in the store.
    let images = rbuild_at(root.path())
        .args(["images", "-q"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&images.stdout).trim().is_empty(),
        "built anyway: {}",
        String::from_utf8_lossy(&images.stdout)
    );
    // A socket file nobody listens on is as unreachable.
    let dead = UnixListener::bind(&sock).unwrap();
    drop(dead);
    let out = build(root.path(), ctx.path(), Some(&host), &["--load"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_text(&out).contains("Is the docker daemon running?"));
    // DOCKER_HOST over tcp is not what --load speaks.
    let out = build(
        root.path(),
        ctx.path(),
        Some("tcp://127.0.0.1:1"),
        &["--load"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_text(&out).contains("DOCKER_HOST=tcp://127.0.0.1:1 is not supported"),
        "{}",
        stderr_text(&out)
    );
    // Without DOCKER_HOST: the default socket, named as docker names it.
    if UnixStream::connect("/var/run/docker.sock").is_err() {
        let out = build(root.path(), ctx.path(), None, &["--load"]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            stderr_text(&out).trim(),
            "error: --load: cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"
        );
    }
}

/// What the fake daemon received in `POST /images/load`: the archive's `manifest.json` and the
/// names of its entries.
struct Received {
    manifest: Value,
    entries: Vec<String>,
    content_type: String,
}

/// Reads one request: its request line, headers (lower-cased names) and Content-Length body.
fn read_request(stream: &mut BufReader<UnixStream>) -> (String, Vec<(String, String)>, Vec<u8>) {
    let mut line = String::new();
    stream.read_line(&mut line).unwrap();
    let request_line = line.trim_end().to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        stream.read_line(&mut line).unwrap();
        let h = line.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).unwrap();
    (request_line, headers, body)
}

/// Serves `/_ping` and then one `POST /images/load` on `sock`, answering the load with a
/// chunked JSON message stream naming the archive's `RepoTags`; returns what it received.
fn fake_daemon(sock: PathBuf) -> std::thread::JoinHandle<Received> {
    let listener = UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || loop {
        let (conn, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(conn);
        let (request_line, headers, body) = read_request(&mut reader);
        let mut conn = reader.into_inner();
        if request_line.starts_with("GET /_ping ") {
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
                .unwrap();
            continue;
        }
        assert!(
            request_line.starts_with("POST /images/load"),
            "unexpected request {request_line}"
        );
        let mut archive = tar::Archive::new(&body[..]);
        let mut entries = Vec::new();
        let mut manifest = Value::Null;
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            if path == "manifest.json" {
                let mut text = String::new();
                entry.read_to_string(&mut text).unwrap();
                manifest = serde_json::from_str(&text).unwrap();
            }
            entries.push(path);
        }
        let mut stream_body = String::new();
        for tag in manifest[0]["RepoTags"].as_array().unwrap() {
            let msg =
                serde_json::json!({"stream": format!("Loaded image: {}\n", tag.as_str().unwrap())});
            stream_body.push_str(&format!("{msg}\r\n"));
        }
        let chunk = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{stream_body}\r\n0\r\n\r\n",
            stream_body.len()
        );
        conn.write_all(chunk.as_bytes()).unwrap();
        let content_type = headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        return Received {
            manifest,
            entries,
            content_type,
        };
    })
}

#[test]
fn load_streams_a_docker_archive_into_the_daemon_socket() {
    if !require_root().unwrap() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let ctx = context();
    let sock = root.path().join("docker.sock");
    let daemon = fake_daemon(sock.clone());
    let host = format!("unix://{}", sock.display());
    let out = build(
        root.path(),
        ctx.path(),
        Some(&host),
        &["--load", "-t", "loaded/app:1", "--progress=plain"],
    );
    assert!(out.status.success(), "{}", stderr_text(&out));
    let got = daemon.join().unwrap();
    assert_eq!(got.content_type, "application/x-tar");
    assert_eq!(
        got.manifest[0]["RepoTags"],
        serde_json::json!(["loaded/app:1"])
    );
    let config = got.manifest[0]["Config"].as_str().unwrap();
    assert!(got.entries.iter().any(|e| e == config), "{:?}", got.entries);
    let layers = got.manifest[0]["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert!(got.entries.iter().any(|e| e == layers[0].as_str().unwrap()));
    assert!(got.entries.iter().any(|e| e == "index.json"));
    assert!(
        stderr_text(&out).contains("Loaded image: loaded/app:1"),
        "{}",
        stderr_text(&out)
    );
    // The temporary archive is gone.
    let tmp = root.path().join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !left
            .iter()
            .any(|n| n.to_string_lossy().starts_with("load-")),
        "{left:?}"
    );
}

#[test]
fn load_into_a_real_docker_daemon() {
    if !require_root().unwrap() {
        return;
    }
    let Ok(docker) = rbuild_testsupport::need_tool("docker") else {
        println!("SKIPPED: docker is not installed");
        eprintln!("SKIPPED: docker is not installed");
        return;
    };
    let host = std::env::var("DOCKER_HOST").ok();
    let socket = match rbuild_build::docker_load::docker_socket(host.as_deref()) {
        Ok(s) if rbuild_build::docker_load::ping(&s).is_ok() => s,
        _ => {
            println!("SKIPPED: no docker daemon answers (DOCKER_HOST or /var/run/docker.sock)");
            eprintln!("SKIPPED: no docker daemon answers (DOCKER_HOST or /var/run/docker.sock)");
            return;
        }
    };
    let root = tempfile::tempdir().unwrap();
    let ctx = context();
    let tag = format!("rbuild-load-test:{}", std::process::id());
    let host = format!("unix://{}", socket.display());
    let out = build(
        root.path(),
        ctx.path(),
        Some(&host),
        &["--load", "-t", &tag],
    );
    assert!(out.status.success(), "{}", stderr_text(&out));
    assert!(stderr_text(&out).contains(&format!("Loaded image: {tag}")));
    let docker_cmd = |args: &[&str]| {
        Command::new(&docker)
            .env(
                "DOCKER_CONFIG",
                rbuild_testsupport::isolated_docker_config(root.path()),
            )
            .env("DOCKER_HOST", &host)
            .args(args)
            .output()
            .unwrap()
    };
    let inspect = docker_cmd(&["image", "inspect", &tag]);
    let _ = docker_cmd(&["rmi", &tag]);
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let info: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(info[0]["RootFS"]["Layers"].as_array().unwrap().len(), 1);
}

#[test]
fn buildkit_progress_sets_the_default_and_the_flag_wins() {
    if !require_root().unwrap() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let ctx = context();
    let run = |env: &[(&str, &str)], extra: &[&str]| {
        let mut cmd = rbuild_at(root.path());
        cmd.env_remove("BUILDKIT_PROGRESS");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd
            .arg("build")
            .args(extra)
            .arg(ctx.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_text(&out));
        stderr_text(&out)
    };
    let json = run(&[("BUILDKIT_PROGRESS", "json")], &["--no-cache"]);
    assert!(
        json.lines()
            .any(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v.get("event").is_some())),
        "{json}"
    );
    let plain = run(&[("BUILDKIT_PROGRESS", "json")], &["--progress=plain"]);
    assert!(plain.lines().any(|l| l.starts_with("#1 ")), "{plain}");
    assert!(!plain.lines().any(|l| l.starts_with('{')), "{plain}");
    let plain = run(&[("BUILDKIT_PROGRESS", "plain")], &[]);
    assert!(plain.lines().any(|l| l.starts_with("#1 ")), "{plain}");
    // BUILDX_NO_DEFAULT_ATTESTATIONS is accepted silently; BUILDX_BUILDER is ignored with a
    // debug log.
    let quiet = run(
        &[
            ("BUILDKIT_PROGRESS", "plain"),
            ("BUILDX_NO_DEFAULT_ATTESTATIONS", "1"),
            ("BUILDX_BUILDER", "mybuilder"),
        ],
        &[],
    );
    assert!(!quiet.contains("BUILDX"), "{quiet}");
    let logged = run(
        &[
            ("BUILDKIT_PROGRESS", "plain"),
            ("BUILDX_BUILDER", "mybuilder"),
        ],
        &["-v"],
    );
    assert!(
        logged.contains("BUILDX_BUILDER ignored") && logged.contains("mybuilder"),
        "{logged}"
    );
    // A value --progress does not take is refused.
    let out = rbuild_at(root.path())
        .env("BUILDKIT_PROGRESS", "fancy")
        .arg("build")
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_text(&out));
    assert!(stderr_text(&out).contains("fancy"), "{}", stderr_text(&out));
}
