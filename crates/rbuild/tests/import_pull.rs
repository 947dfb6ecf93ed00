//! `rbuild import`, `rbuild pull` and `rbuild logout` against the real binary: an imported
//! busybox root filesystem (plain tar file and gzip on stdin) with `--change` is a base a build
//! RUNs in; a pulled image is a base a later build uses with the registry stopped; logout removes
//! an `auths` entry and erases through a credential helper.

mod common;

use common::{assert_ok, rbuild_at};
use serde_json::Value;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn need_root() -> bool {
    rbuild_testsupport::require_root().expect("root check")
}

/// `rbuild inspect NAME` as one JSON object.
fn inspect(root: &Path, name: &str) -> Value {
    let out = rbuild_at(root).args(["inspect", name]).output().unwrap();
    assert_ok(&out);
    let v: Value = serde_json::from_slice(&out.stdout).expect("inspect prints JSON");
    v.as_array().expect("an array")[0].clone()
}

/// Builds `dockerfile` with `--network none` into a local directory and returns it.
fn build_local(root: &Path, dockerfile: &str) -> (tempfile::TempDir, Output) {
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = rbuild_at(root)
        .args(["build", "--progress=plain", "--network", "none", "-o"])
        .arg(format!("type=local,dest={}", out_dir.path().display()))
        .arg(ctx.path())
        .output()
        .unwrap();
    (out_dir, out)
}

#[test]
fn import_makes_a_base_image_with_changes() {
    if !need_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let tar = tmp.path().join("rootfs.tar");
    rbuild_testsupport::make_busybox_rootfs_tar(&tar).unwrap();
    let out = rbuild_at(root.path())
        .arg("import")
        .arg(&tar)
        .args(["imported:1", "--change", "CMD [\"sh\"]"])
        .args([
            "--change",
            "ENV GREETING=hello-import",
            "-c",
            "WORKDIR /data",
        ])
        .args(["-c", "LABEL origin=tarball", "-c", "EXPOSE 8080"])
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert_ok(&out);
    let id = stdout(&out).trim().to_string();
    assert!(
        id.starts_with("sha256:") && id.len() == 71,
        "import prints the image ID: {id:?}"
    );

    let image = inspect(root.path(), "imported:1");
    assert_eq!(image["Id"], id.as_str());
    assert_eq!(image["Created"], "2023-11-14T22:13:20Z");
    assert_eq!(image["Os"], "linux");
    let config = &image["Config"];
    assert_eq!(config["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(config["Env"], serde_json::json!(["GREETING=hello-import"]));
    assert_eq!(config["WorkingDir"], "/data");
    assert_eq!(config["Labels"]["origin"], "tarball");
    assert!(config["ExposedPorts"]["8080/tcp"].is_object(), "{config}");
    assert_eq!(image["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    // The diff ID is the digest of the tar as given.
    let diff = format!(
        "sha256:{}",
        rbuild_oci::sha256_hex(&fs::read(&tar).unwrap())
    );
    assert_eq!(image["RootFS"]["Layers"][0], diff.as_str());

    let history = rbuild_at(root.path())
        .args(["history", "imported:1"])
        .output()
        .unwrap();
    assert_ok(&history);
    assert!(
        stdout(&history).contains("Imported from"),
        "default comment: {}",
        stdout(&history)
    );

    // A build FROM the imported image runs its shell with the imported ENV and WORKDIR.
    let (dir, out) = build_local(
        root.path(),
        "FROM imported:1\nRUN echo \"$GREETING in $(pwd)\" > /out.txt\n",
    );
    assert_ok(&out);
    assert_eq!(
        fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        "hello-import in /data\n"
    );

    // The same tar gzip-compressed on stdin gives the same diff ID; --message is the comment.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&fs::read(&tar).unwrap()).unwrap();
    let gz = gz.finish().unwrap();
    let mut child = rbuild_at(root.path())
        .args(["import", "-", "zipped:2", "--message", "from a pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&gz).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_ok(&out);
    let zipped = inspect(root.path(), "zipped:2");
    assert_eq!(zipped["RootFS"]["Layers"][0], diff.as_str());
    assert!(zipped["Config"]["Cmd"].is_null(), "no changes: {zipped}");
    let history = rbuild_at(root.path())
        .args(["history", "zipped:2"])
        .output()
        .unwrap();
    assert!(
        stdout(&history).contains("from a pipe"),
        "{}",
        stdout(&history)
    );
}

#[test]
fn import_refuses_bad_input_with_docker_words() {
    let root = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let not_tar = tmp.path().join("notes.txt");
    fs::write(&not_tar, "just some text, not an archive\n".repeat(40)).unwrap();
    let cases: [(&[&str], &str, i32); 4] = [
        (&["Bad:Name"], "invalid reference format", 2),
        (&[], "needs a NAME[:TAG]", 2),
        (
            &["x:1", "--change", "RUN echo hi"],
            "RUN is not a valid change command",
            2,
        ),
        (&["x:1"], "is not a tar archive (plain or gzip)", 1),
    ];
    for (args, message, code) in cases {
        let out = rbuild_at(root.path())
            .arg("import")
            .arg(&not_tar)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("just some text"),
            "no file content in the message"
        );
    }
    let images = rbuild_at(root.path())
        .args(["images", "-q"])
        .output()
        .unwrap();
    assert_eq!(stdout(&images), "", "nothing was stored");
}

#[test]
fn pull_stores_the_image_for_offline_builds() {
    if !need_root() {
        return;
    }
    let (registry, base) = rbuild_testsupport::registry_with_busybox().unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = rbuild_at(root.path())
        .args(["pull", &base])
        .output()
        .unwrap();
    assert_ok(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "latest: Pulling from busybox", "{text}");
    assert!(text.contains(": Pull complete\n"), "{text}");
    assert!(text.contains("\nDigest: sha256:"), "{text}");
    assert!(
        text.contains(&format!("Status: Downloaded newer image for {base}\n")),
        "{text}"
    );
    assert_eq!(*lines.last().unwrap(), base.as_str());

    // Again: nothing new.
    let again = rbuild_at(root.path())
        .args(["pull", &base])
        .output()
        .unwrap();
    assert_ok(&again);
    assert!(
        stdout(&again).contains(&format!("Status: Image is up to date for {base}\n")),
        "{}",
        stdout(&again)
    );
    assert!(
        stdout(&again).contains(": Already exists\n"),
        "{}",
        stdout(&again)
    );

    // Like `docker pull`, the layers are extracted: the snapshots hold the base's files.
    let du = rbuild_at(root.path()).args(["du"]).output().unwrap();
    assert_ok(&du);
    let snapshots = stdout(&du)
        .lines()
        .find(|l| l.starts_with("Snapshots"))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
        .unwrap_or_default();
    assert_eq!(snapshots, "1", "{}", stdout(&du));

    let images = rbuild_at(root.path()).args(["images"]).output().unwrap();
    assert!(
        stdout(&images).contains(base.trim_end_matches(":latest")),
        "{}",
        stdout(&images)
    );

    // The registry is gone: the build needs nothing but the store.
    drop(registry);
    let (dir, out) = build_local(
        root.path(),
        &format!("FROM {base}\nRUN echo offline > /offline.txt\n"),
    );
    assert_ok(&out);
    assert_eq!(
        fs::read_to_string(dir.path().join("offline.txt")).unwrap(),
        "offline\n"
    );

    // A name outside the grammar fails before any request.
    let bad = rbuild_at(root.path())
        .args(["pull", "UPPER/x"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("invalid reference format"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn logout_removes_auths_entries() {
    let root = tempfile::tempdir().unwrap();
    let docker = tempfile::tempdir().unwrap();
    let config = docker.path().join("config.json");
    fs::write(
        &config,
        r#"{"auths":{"reg.example:5000":{"auth":"YTpi"},"other.example":{"auth":"Yzpk"}},"psFormat":"x"}"#,
    )
    .unwrap();
    let logout = |server: &str| {
        rbuild_at(root.path())
            .env("DOCKER_CONFIG", docker.path())
            .args(["logout", server])
            .output()
            .unwrap()
    };
    let out = logout("reg.example:5000");
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        "Removing login credentials for reg.example:5000\n"
    );
    let doc: Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    assert!(doc["auths"].get("reg.example:5000").is_none(), "{doc}");
    assert_eq!(doc["auths"]["other.example"]["auth"], "Yzpk", "{doc}");
    assert_eq!(doc["psFormat"], "x", "other settings are kept");

    let out = logout("reg.example:5000");
    assert_ok(&out);
    assert_eq!(stdout(&out), "Not logged in to reg.example:5000\n");
}

#[test]
fn logout_erases_through_credential_helpers() {
    let root = tempfile::tempdir().unwrap();
    let docker = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let calls = bin.path().join("calls");
    // `erase` forgets a server once; after that it says "not found", as docker's helpers do.
    for name in ["pass", "store"] {
        let helper = bin.path().join(format!("docker-credential-{name}"));
        fs::write(
            &helper,
            format!(
                "#!/bin/sh\ninput=$(cat)\necho \"{name} $1 $input\" >> {calls}\nmark={dir}/erased-{name}-$input\ncase \"$1\" in\n  erase) if [ -f \"$mark\" ]; then echo 'credentials not found in native keychain'; exit 1; fi; touch \"$mark\" ;;\n  *) exit 1 ;;\nesac\n",
                calls = calls.display(),
                dir = bin.path().display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::write(
        docker.path().join("config.json"),
        r#"{"credsStore":"store","credHelpers":{"helped.example":"pass"}}"#,
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let logout = |server: &str| {
        rbuild_at(root.path())
            .env("DOCKER_CONFIG", docker.path())
            .env("PATH", &path)
            .args(["logout", server])
            .output()
            .unwrap()
    };
    let out = logout("helped.example");
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        "Removing login credentials for helped.example\n"
    );
    let out = logout("https://stored.example/");
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        "Removing login credentials for stored.example\n"
    );
    let out = logout("stored.example");
    assert_ok(&out);
    assert_eq!(stdout(&out), "Not logged in to stored.example\n");
    assert_eq!(
        fs::read_to_string(&calls).unwrap(),
        "pass erase helped.example\nstore erase stored.example\nstore erase stored.example\n"
    );
}

/// Serves `body` at `/rootfs.tar` for one request on 127.0.0.1 and returns the URL.
fn serve_once(body: Vec<u8>) -> String {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/rootfs.tar", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
            line.clear();
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(&body);
    });
    url
}

#[test]
fn import_fetches_a_url() {
    let root = tempfile::tempdir().unwrap();
    let tar = rbuild_testsupport::busybox_rootfs_tar_bytes().unwrap();
    let diff = format!("sha256:{}", rbuild_oci::sha256_hex(&tar));
    let url = serve_once(tar);
    let out = rbuild_at(root.path())
        .args([
            "import",
            &url,
            "fetched:1",
            "-c",
            "ENTRYPOINT [\"/bin/sh\", \"-c\"]",
        ])
        .output()
        .unwrap();
    assert_ok(&out);
    let image = inspect(root.path(), "fetched:1");
    assert_eq!(image["RootFS"]["Layers"][0], diff.as_str());
    assert_eq!(
        image["Config"]["Entrypoint"],
        serde_json::json!(["/bin/sh", "-c"])
    );
    let history = rbuild_at(root.path())
        .args(["history", "--no-trunc", "fetched:1"])
        .output()
        .unwrap();
    assert!(
        stdout(&history).contains(&format!("Imported from {url}")),
        "{}",
        stdout(&history)
    );
}
