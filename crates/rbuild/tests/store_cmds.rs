//! The image store subcommands against the real binary: `images` (IMAGE ID, CREATED, unpacked
//! SIZE, `-q`, `--digests`, `--format json`), `tag`, `rmi` (names, ID prefixes, digests, the
//! multiple-repositories conflict), `inspect`, `history`, `version`, `completion`, and unknown
//! subcommands. The images are built FROM scratch with COPY: no registry is needed.

mod common;

use common::{assert_ok, rbuild_at};
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::{Output, Stdio};

/// 100000 compressible bytes: its layer is a few hundred bytes of gzip but a 101888-byte tar
/// (512 header + 100352 data + 1024 end), so SIZE shows the unpacked size.
const BIG: usize = 100_000;

fn run(root: &Path, args: &[&str]) -> Output {
    rbuild_at(root).args(args).output().expect("run rbuild")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Builds `tag` (SOURCE_DATE_EPOCH 1700000000 = 2023-11-14T22:13:20Z) from a two-layer context.
fn build_app(root: &Path, tag: &str, marker: &str) {
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("big"), vec![b'a'; BIG]).unwrap();
    fs::write(ctx.path().join("small"), marker).unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY big /big\nENV A=1\nCOPY small /small\nCMD [\"/big\", \"with a long argument list that docker cuts\"]\n",
    )
    .unwrap();
    let out = rbuild_at(root)
        .args(["build", "--progress=plain", "-t", tag])
        .args(["--build-arg", "SOURCE_DATE_EPOCH=1700000000"])
        .arg(ctx.path())
        .output()
        .expect("run rbuild");
    assert_ok(&out);
}

/// `rbuild inspect NAME` as JSON (one object).
fn inspect(root: &Path, name: &str) -> Value {
    let out = run(root, &["inspect", name]);
    assert_ok(&out);
    let v: Value = serde_json::from_slice(&out.stdout).expect("inspect prints JSON");
    let arr = v.as_array().expect("an array");
    assert_eq!(arr.len(), 1, "{v}");
    arr[0].clone()
}

fn need_root() -> bool {
    rbuild_testsupport::require_root().expect("root check")
}

#[test]
fn images_shows_ids_created_and_unpacked_sizes() {
    if !need_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let empty = run(root.path(), &["images"]);
    assert_ok(&empty);
    assert_eq!(
        stdout(&empty),
        "REPOSITORY   TAG       IMAGE ID   CREATED   SIZE\n"
    );
    build_app(root.path(), "app:1", "one");
    let info = inspect(root.path(), "app:1");
    let id = info["Id"].as_str().unwrap().to_string();
    let short = &id["sha256:".len().."sha256:".len() + 12];
    // The unpacked size: two layers of 101888 and 2048 bytes, not the compressed blobs.
    assert_eq!(info["Size"], 101_888 + 2048);

    let out = run(root.path(), &["images"]);
    assert_ok(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("REPOSITORY   TAG       IMAGE ID       CREATED"),
        "{text}"
    );
    assert!(lines[0].ends_with("   SIZE"), "{text}");
    let cells: Vec<&str> = lines[1]
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(cells.len(), 5, "{text}");
    assert_eq!(&cells[..3], &["app", "1", short], "{text}");
    assert!(cells[3].ends_with(" years ago"), "{text}");
    assert_eq!(cells[4], "104kB", "{text}");

    let quiet = run(root.path(), &["images", "-q"]);
    assert_ok(&quiet);
    assert_eq!(stdout(&quiet), format!("{short}\n"));

    let manifest = info["RepoDigests"][0]
        .as_str()
        .unwrap()
        .split_once('@')
        .unwrap()
        .1
        .to_string();
    let digests = run(root.path(), &["images", "--digests"]);
    assert_ok(&digests);
    let text = stdout(&digests);
    assert!(text.starts_with("REPOSITORY   TAG       DIGEST"), "{text}");
    assert!(text.lines().nth(1).unwrap().contains(&manifest), "{text}");

    let json = run(root.path(), &["images", "--format", "json"]);
    assert_ok(&json);
    let rows: Vec<Value> = stdout(&json)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["Repository"], "app");
    assert_eq!(rows[0]["Tag"], "1");
    assert_eq!(rows[0]["ID"], short);
    assert_eq!(rows[0]["Digest"], manifest.as_str());
    assert_eq!(rows[0]["Size"], "104kB");
    assert_eq!(rows[0]["CreatedAt"], "2023-11-14 22:13:20 +0000 UTC");
    assert!(rows[0]["CreatedSince"].as_str().unwrap().ends_with(" ago"));

    // A zstd layer is decompressed to count its unpacked size.
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("big"), vec![b'a'; BIG]).unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY big /big\n",
    )
    .unwrap();
    let out = rbuild_at(root.path())
        .args(["build", "--progress=plain"])
        .args(["-o", "type=image,name=z:1,compression=zstd"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_ok(&out);
    let store = rbuild_oci::Store::open(root.path()).unwrap();
    let desc = store.resolve_tag("z:1").unwrap().unwrap();
    let record = store.read_image(&desc.digest).unwrap();
    // The store keeps the built layer uncompressed whatever the output's compression (which
    // a push or an archive of it applies).
    assert_eq!(
        record.manifest.layers[0].media_type.as_str(),
        "application/vnd.oci.image.layer.v1.tar"
    );
    assert_eq!(inspect(root.path(), "z:1")["Size"], 101_888);

    let bad = run(root.path(), &["images", "--format", "{{.ID}}"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));

    // A reader that goes away early ends rbuild quietly: exit 0 if everything was written
    // before it left, else SIGPIPE's conventional 141; never a panic or a message.
    let mut child = rbuild_at(root.path())
        .arg("images")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 141)) && out.stderr.is_empty(),
        "{:?}: {}",
        out.status,
        stderr(&out)
    );
}

#[test]
fn tag_and_rmi_drop_names_as_docker_does() {
    if !need_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    build_app(root.path(), "app:1", "one");
    let id = inspect(root.path(), "app:1")["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let hex = id.strip_prefix("sha256:").unwrap();

    assert_ok(&run(root.path(), &["tag", "app:1", "app:2"]));
    assert_ok(&run(root.path(), &["tag", &hex[..8], "other/app"]));
    let info = inspect(root.path(), "other/app:latest");
    assert_eq!(info["Id"], id.as_str());
    assert_eq!(
        info["RepoTags"],
        serde_json::json!(["app:1", "app:2", "other/app:latest"])
    );

    for bad in ["bad tag", "UPPER/case:1", "foo:bar:baz", ""] {
        let out = run(root.path(), &["tag", "app:1", bad]);
        assert_eq!(out.status.code(), Some(1), "tag {bad:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("invalid reference format"),
            "tag {bad:?}: {}",
            stderr(&out)
        );
    }
    let out = run(root.path(), &["tag", "nope:1", "x:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "Error response from daemon: No such image: nope:1\n"
    );

    // By ID, while two repositories name it: refused without -f.
    let out = run(root.path(), &["rmi", &hex[..12]]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "Error response from daemon: conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories\n",
            &hex[..12]
        )
    );
    // By name: that name only.
    let out = run(root.path(), &["rmi", "app:1"]);
    assert_ok(&out);
    assert_eq!(stdout(&out), "Untagged: app:1\n");
    let out = run(root.path(), &["rmi", "nope:1", "app:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("Error response from daemon: No such image: nope:1\n"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("Error response from daemon: No such image: app:1"),
        "{}",
        stderr(&out)
    );
    let listing = stdout(&run(root.path(), &["images"]));
    assert_eq!(listing.lines().count(), 3, "{listing}");

    // -f by ID: every name, then the image.
    let out = run(root.path(), &["rmi", "-f", &id]);
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        format!("Untagged: app:2\nUntagged: other/app:latest\nDeleted: {id}\n")
    );
    assert_eq!(stdout(&run(root.path(), &["images", "-q"])), "");
    // Only names went: the blobs are left for garbage collection.
    assert!(root.path().join("blobs/sha256").join(hex).exists());

    // By manifest digest, with one repository: no force needed.
    build_app(root.path(), "b:1", "two");
    let info = inspect(root.path(), "b:1");
    let manifest = info["RepoDigests"][0]
        .as_str()
        .unwrap()
        .split_once('@')
        .unwrap()
        .1
        .to_string();
    assert_ok(&run(root.path(), &["tag", "b:1", "b:2"]));
    let out = run(root.path(), &["rmi", &manifest]);
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        format!(
            "Untagged: b:1\nUntagged: b:2\nDeleted: {}\n",
            info["Id"].as_str().unwrap()
        )
    );
}

#[test]
fn inspect_and_history_read_the_config() {
    if !need_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    build_app(root.path(), "app:1", "one");
    let info = inspect(root.path(), "app:1");
    let store = rbuild_oci::Store::open(root.path()).unwrap();
    let desc = store.resolve_tag("app:1").unwrap().unwrap();
    let record = store.read_image(&desc.digest).unwrap();
    assert_eq!(info["Id"], record.manifest.config.digest.to_string());
    assert_eq!(info["RepoTags"], serde_json::json!(["app:1"]));
    assert_eq!(
        info["RepoDigests"],
        serde_json::json!([format!("app@{}", desc.digest)])
    );
    assert_eq!(info["Created"], "2023-11-14T22:13:20Z");
    assert_eq!(info["Os"], "linux");
    assert_eq!(info["Architecture"], record.config.architecture.as_str());
    assert_eq!(info["Config"]["Cmd"][0], "/big");
    assert!(info["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "A=1"));
    assert_eq!(info["RootFS"]["Type"], "layers");
    let layers: Vec<String> = record
        .config
        .rootfs
        .diff_ids
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(info["RootFS"]["Layers"], serde_json::json!(layers));
    // The same image by ID prefix and by manifest digest; a missing one after the array.
    let config_hex = record.manifest.config.digest.hex().to_string();
    assert_eq!(inspect(root.path(), &config_hex[..6])["Id"], info["Id"]);
    assert_eq!(
        inspect(root.path(), &desc.digest.to_string())["Id"],
        info["Id"]
    );
    let out = run(root.path(), &["inspect", "app:1", "nope:1"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(
        stderr(&out),
        "Error response from daemon: No such image: nope:1\n"
    );

    let out = run(root.path(), &["history", "app:1"]);
    assert_ok(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("IMAGE          CREATED")
            && lines[0].contains("   CREATED BY ")
            && lines[0].ends_with("   SIZE      COMMENT"),
        "{text}"
    );
    assert_eq!(lines.len(), 1 + record.config.history.len(), "{text}");
    assert!(lines[1].starts_with(&config_hex[..12]), "{text}");
    assert!(lines[1].contains('…'), "long CMD is cut: {text}");
    assert!(
        lines[2].starts_with("<missing>") && lines[2].contains("COPY small /small"),
        "{text}"
    );
    assert!(lines[2].contains(" 2.05kB "), "{text}");
    let env_line = lines
        .iter()
        .find(|l| l.contains("ENV A=1"))
        .expect("ENV step");
    assert!(env_line.contains(" 0B "), "{text}");
    let big = lines
        .iter()
        .find(|l| l.contains("COPY big /big"))
        .expect("COPY step");
    assert!(big.contains(" 102kB "), "{text}");
    assert!(big.contains("buildkit.dockerfile.v0"), "{text}");
    let full = stdout(&run(root.path(), &["history", "--no-trunc", "app:1"]));
    assert!(
        full.lines()
            .nth(1)
            .unwrap()
            .starts_with(&format!("sha256:{config_hex}")),
        "{full}"
    );
    assert!(
        full.contains("with a long argument list that docker cuts"),
        "{full}"
    );
    let out = run(root.path(), &["history", "nope:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "Error response from daemon: No such image: nope:1\n"
    );
}

#[test]
fn version_completion_and_unknown_subcommands() {
    let root = tempfile::tempdir().unwrap();
    let out = run(root.path(), &["version"]);
    assert_ok(&out);
    let text = stdout(&out);
    assert!(text.starts_with("Client:\n Version:           "), "{text}");
    assert!(
        text.contains(&format!("\n OS/Arch:           {}/", std::env::consts::OS)),
        "{text}"
    );
    for (shell, marker) in [
        ("bash", "complete -F _rbuild"),
        ("zsh", "#compdef rbuild"),
        ("fish", "complete -c rbuild"),
    ] {
        let out = run(root.path(), &["completion", shell]);
        assert_ok(&out);
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(
            script.contains("rmi") && script.contains("history"),
            "{shell}"
        );
    }
    // A bare word that is neither a subcommand nor a directory is an error listing them.
    let out = run(root.path(), &["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("unrecognized subcommand 'frobnicate'"),
        "{err}"
    );
    for sub in [
        "build", "images", "rmi", "tag", "inspect", "history", "version",
    ] {
        assert!(err.contains(&format!("\n  {sub} ")), "{sub}: {err}");
    }
    assert!(!err.contains("not found"), "{err}");
    // `rmi` with no image is a usage error of rmi, not a context path.
    let out = run(root.path(), &["rmi"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("Usage: rbuild rmi"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_path_or_a_flag_still_means_build() {
    if !need_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let parent = tempfile::tempdir().unwrap();
    let ctx = parent.path().join("ctxdir");
    fs::create_dir(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY Dockerfile /\n").unwrap();
    // A bare directory name (relative to the working directory) builds.
    let out = rbuild_at(root.path())
        .current_dir(parent.path())
        .args(["--progress=plain", "-t", "bare:1", "ctxdir"])
        .output()
        .unwrap();
    assert_ok(&out);
    let out = rbuild_at(root.path())
        .current_dir(&ctx)
        .arg(".")
        .output()
        .unwrap();
    assert_ok(&out);
    let out = rbuild_at(root.path())
        .current_dir(parent.path())
        .args(["./ctxdir", "-t", "dot:1"])
        .output()
        .unwrap();
    assert_ok(&out);
    let listing = stdout(&run(root.path(), &["images"]));
    assert!(
        listing.contains("\nbare ") && listing.contains("\ndot "),
        "{listing}"
    );
}

#[test]
fn images_all_shows_dangling_images_until_prune() {
    if !need_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    build_app(root.path(), "app:1", "one");
    let old = inspect(root.path(), "app:1")["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let old_short = old["sha256:".len().."sha256:".len() + 12].to_string();
    // A rebuild moves the tag: the previous image stays as a dangling one.
    build_app(root.path(), "app:1", "two");
    let new = inspect(root.path(), "app:1")["Id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(old, new);
    let rows = |args: &[&str]| -> Vec<Vec<String>> {
        let out = run(root.path(), args);
        assert_ok(&out);
        stdout(&out)
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().map(String::from).collect())
            .collect()
    };
    // Hidden by default, as docker does.
    let named = rows(&["images"]);
    assert_eq!(named.len(), 1, "{named:?}");
    assert_eq!(named[0][..2], ["app".to_string(), "1".to_string()]);
    let all = rows(&["images", "-a"]);
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0][..2], ["app".to_string(), "1".to_string()]);
    assert_eq!(
        all[1][..3],
        [
            "<none>".to_string(),
            "<none>".to_string(),
            old_short.clone()
        ]
    );
    let ids = run(root.path(), &["images", "-a", "-q", "--no-trunc"]);
    assert_ok(&ids);
    assert_eq!(stdout(&ids), format!("{new}\n{old}\n"));
    let json = run(root.path(), &["images", "-a", "--format", "json"]);
    assert_ok(&json);
    let lines: Vec<Value> = stdout(&json)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["Repository"], "<none>");
    assert_eq!(lines[1]["Tag"], "<none>");
    assert_eq!(lines[1]["ID"], old_short.as_str());
    // Garbage collection removes it (nothing reaches it).
    let pruned = run(root.path(), &["prune", "-f"]);
    assert_ok(&pruned);
    let all = rows(&["images", "-a"]);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0][..2], ["app".to_string(), "1".to_string()]);
}

#[test]
fn rmi_deletes_a_dangling_image_by_id() {
    if !need_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    build_app(root.path(), "app:1", "one");
    let old = inspect(root.path(), "app:1")["Id"]
        .as_str()
        .unwrap()
        .to_string();
    build_app(root.path(), "app:1", "two");
    let ids = |args: &[&str]| {
        let out = run(root.path(), args);
        assert_ok(&out);
        stdout(&out)
    };
    assert!(ids(&["images", "-a", "-q", "--no-trunc"]).contains(&old));
    // The old build is dangling now; its ID prefix names it, as in docker.
    let hex = old.strip_prefix("sha256:").unwrap();
    let out = run(root.path(), &["rmi", &hex[..12]]);
    assert_ok(&out);
    assert_eq!(stdout(&out), format!("Deleted: {old}\n"));
    assert!(!ids(&["images", "-a", "-q", "--no-trunc"]).contains(&old));
    // The tagged image is untouched and still builds from the cache.
    assert_eq!(ids(&["images", "-q"]).lines().count(), 1);
    let again = run(root.path(), &["rmi", &hex[..12]]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("No such image"),
        "{}",
        stderr(&again)
    );
}
