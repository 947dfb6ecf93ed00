//! End-to-end tests of COPY and ADD as BuildKit does them: symbolic `--chmod`, `--exclude`,
//! `--parents`, `--link` (layer and cache kept when the base changes), ADD of URLs (a tiny HTTP
//! server on loopback), ADD of compressed local archives, and the symlink rules. The real rbuild
//! binary builds `testdata/copy-*` against a real registry holding busybox base images.

use rbuild_testsupport::skopeo;
use serde_json::Value;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex, OnceLock};

mod common;

use common::*;

/// Names of vertices that ran (`started`) and that were `cached`.
fn ran_and_cached(out: &Output) -> (Vec<String>, Vec<String>) {
    let evs: Vec<Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("event").is_some())
        .collect();
    let pick = |kind: &str| {
        evs.iter()
            .filter(|e| e["event"] == kind)
            // The build's own vertices (`[internal] load ...`, `exporting to image`) have no
            // cache key; they are not steps.
            .filter(|e| kind != "started" || !e["cache_key"].is_null())
            .map(|e| e["name"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    (pick("started"), pick("cached"))
}

fn context_from(name: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    fs::copy(
        testdata(name).join("Dockerfile"),
        ctx.path().join("Dockerfile"),
    )
    .unwrap();
    ctx
}

fn write(path: &Path, body: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, body).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn local_output(dest: &Path) -> String {
    format!("type=local,dest={}", dest.display())
}

#[test]
fn chmod_exclude_parents_and_symlinks() {
    let Some(env) = env() else { return };
    let ctx = context_from("copy-flags");
    let c = ctx.path();
    write(&c.join("files/script.sh"), "#!/bin/sh\necho hi\n", 0o764);
    write(&c.join("files/data.md"), "# data\n", 0o644);
    write(&c.join("files/sub/skip.txt"), "skip\n", 0o644);
    write(&c.join("files/sub/keep.txt"), "keep\n", 0o644);
    fs::set_permissions(c.join("files"), fs::Permissions::from_mode(0o775)).unwrap();
    write(&c.join("home.txt"), "home\n", 0o644);
    write(&c.join("homer.md"), "homer\n", 0o644);
    write(&c.join("homedir/x.txt"), "x\n", 0o644);
    write(&c.join("homedir/y.dat"), "y\n", 0o644);
    write(&c.join("src/a/app.txt"), "a\n", 0o644);
    write(&c.join("src/b/app.txt"), "b\n", 0o644);
    write(&c.join("src/b/other.txt"), "other\n", 0o644);
    symlink("files/script.sh", c.join("link-to-script")).unwrap();
    write(&c.join("tree/real.txt"), "real\n", 0o644);
    symlink("../files/data.md", c.join("tree/inner-link")).unwrap();

    let root = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let out = build(
        root.path(),
        c,
        &env.base,
        &["--output", &local_output(dest.path())],
    );
    assert_ok(&out);
    let d = dest.path();

    // Symbolic and octal --chmod, on files and directories.
    let modes = fs::read_to_string(d.join("modes.txt")).unwrap();
    // (the destination directory of a directory's contents is created 0755, as before)
    let want = "744 sym/script.sh\n755 symdir\n555 symdir/script.sh\n444 symdir/data.md\n\
                555 symdir/sub\n444 symdir/sub/skip.txt\n640 octal.sh\n";
    assert_eq!(modes, want);

    // --exclude: relative to each source, repeatable; a file source is matched by its name.
    assert!(d.join("excl/script.sh").is_file() && d.join("excl/sub/keep.txt").is_file());
    assert!(!d.join("excl/data.md").exists(), "*.md excluded");
    assert!(
        !d.join("excl/sub/skip.txt").exists(),
        "sub/skip.txt excluded"
    );
    assert!(d.join("hom/homer.md").is_file() && d.join("hom/y.dat").is_file());
    assert!(!d.join("hom/home.txt").exists() && !d.join("hom/x.txt").exists());

    // --parents: the whole source path without a pivot, the path below `/./` with one.
    assert_eq!(
        fs::read_to_string(d.join("parents/src/a/app.txt")).unwrap(),
        "a\n"
    );
    assert_eq!(
        fs::read_to_string(d.join("parents/src/b/app.txt")).unwrap(),
        "b\n"
    );
    assert!(!d.join("parents/src/b/other.txt").exists());
    assert!(d.join("pivot/a/app.txt").is_file() && !d.join("pivot/src").exists());

    // Symlinks: a source link is followed, links inside a tree are kept, destinations resolve
    // through the image's links without leaving it.
    let followed = fs::symlink_metadata(d.join("followed")).unwrap();
    assert!(followed.is_file());
    assert_eq!(
        fs::read_link(d.join("tree/inner-link")).unwrap(),
        PathBuf::from("../files/data.md")
    );
    assert!(d.join("through-abs.sh").is_file() && d.join("escaped.sh").is_file());

    // Excluded files are not in the cache key: changing one keeps the --exclude COPY cached,
    // changing an included one reruns it.
    let df = testdata("copy-flags").join("Dockerfile.exclude");
    let df = df.to_str().unwrap();
    let exclude_root = tempfile::tempdir().unwrap();
    assert_ok(&build(exclude_root.path(), c, &env.base, &["-f", df]));
    fs::write(c.join("files/data.md"), "# changed\n").unwrap();
    fs::write(c.join("files/sub/skip.txt"), "changed\n").unwrap();
    let again = build(exclude_root.path(), c, &env.base, &["-f", df]);
    assert_ok(&again);
    let (ran, _) = ran_and_cached(&again);
    assert!(
        !ran.iter().any(|n| n.contains("COPY")),
        "changing excluded files keeps the COPY cached: {ran:?}"
    );
    assert_reported_cached(&again, "COPY --exclude");
    fs::write(c.join("files/sub/keep.txt"), "changed\n").unwrap();
    let changed = build(exclude_root.path(), c, &env.base, &["-f", df]);
    assert_ok(&changed);
    let (ran, _) = ran_and_cached(&changed);
    assert!(ran.iter().any(|n| n.contains("COPY --exclude")), "{ran:?}");
}

/// Builds `FROM busybox` plus one layer (a symlink /linkdir -> /real) and pushes it as
/// `ADDR/busybox-plus:latest`.
fn second_base(env: &Env) -> String {
    static BASE2: OnceLock<String> = OnceLock::new();
    BASE2
        .get_or_init(|| {
            let ctx = tempfile::tempdir().unwrap();
            fs::write(
                ctx.path().join("Dockerfile"),
                "ARG BASE\nFROM ${BASE}\nRUN mkdir /real && ln -s /real /linkdir && echo extra > /extra\n",
            )
            .unwrap();
            let root = tempfile::tempdir().unwrap();
            let out_dir = tempfile::tempdir().unwrap();
            let layout = out_dir.path().join("layout");
            let output = format!("type=oci,dest={},tar=false", layout.display());
            let out = build(
                root.path(),
                ctx.path(),
                &env.base,
                &["-t", "base2", "--output", &output],
            );
            assert_ok(&out);
            let reference = format!("{}/busybox-plus:latest", env.registry.addr());
            let st = skopeo("copy", None)
                .unwrap()
                .args([
                    "--preserve-digests",
                    "--dest-tls-verify=false",
                    "-q",
                ])
                .arg(format!("oci:{}", layout.display()))
                .arg(format!("docker://{reference}"))
                .output()
                .unwrap();
            assert!(
                st.status.success(),
                "skopeo push: {}",
                String::from_utf8_lossy(&st.stderr)
            );
            reference
        })
        .clone()
}

fn layers_of(root: &Path, tag: &str) -> Vec<String> {
    let store = rbuild_oci::Store::open(root).unwrap();
    let desc = store.resolve_tag(tag).unwrap().expect("tag in store");
    store
        .read_image(&desc.digest)
        .unwrap()
        .manifest
        .layers
        .iter()
        .map(|l| l.digest.to_string())
        .collect()
}

#[test]
fn copy_link_keeps_layer_and_cache_when_the_base_changes() {
    let Some(env) = env() else { return };
    let base2 = second_base(env);
    let ctx = context_from("copy-link");
    write(&ctx.path().join("app/a.txt"), "a\n", 0o644);
    write(&ctx.path().join("app/bin/tool"), "tool\n", 0o600);
    let root = tempfile::tempdir().unwrap();

    let first = build(root.path(), ctx.path(), &env.base, &["-t", "e2e/link:1"]);
    assert_ok(&first);
    let layers1 = layers_of(root.path(), "e2e/link:1");
    assert_eq!(layers1.len(), 3, "busybox + two --link layers: {layers1:?}");

    let dest = tempfile::tempdir().unwrap();
    let second = build(
        root.path(),
        ctx.path(),
        &base2,
        &["-t", "e2e/link:2", "--output", &local_output(dest.path())],
    );
    assert_ok(&second);
    let layers2 = layers_of(root.path(), "e2e/link:2");
    assert_eq!(
        layers2.len(),
        4,
        "busybox + extra + two --link layers: {layers2:?}"
    );
    assert_eq!(
        layers1[1..],
        layers2[2..],
        "the --link layers keep their digests on a new base"
    );
    let (ran, cached) = ran_and_cached(&second);
    for step in ["COPY --link --chmod=755 app/", "COPY --link app/a.txt"] {
        assert!(
            cached
                .iter()
                .any(|n| n.contains(step) && !n.ends_with("[merge]")),
            "the copy vertex of `{step}` is cached: cached {cached:?}, ran {ran:?}"
        );
        assert!(
            !ran.iter()
                .any(|n| n.contains(step) && !n.ends_with("[merge]")),
            "the copy of `{step}` did not run again: {ran:?}"
        );
    }

    // The result: copied with the mode, and the destination was not resolved through the
    // base's /linkdir -> /real symlink (the link layer's directory replaces it).
    let d = dest.path();
    let mode = |p: &str| fs::metadata(d.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("opt/app/bin/tool"), 0o755);
    assert_eq!(mode("opt/app/a.txt"), 0o755);
    assert!(fs::symlink_metadata(d.join("linkdir")).unwrap().is_dir());
    assert_eq!(fs::read_to_string(d.join("linkdir/a.txt")).unwrap(), "a\n");
    assert!(!d.join("real/a.txt").exists());
    assert_eq!(fs::read_to_string(d.join("extra")).unwrap(), "extra\n");
}

/// Path, body and `Last-Modified` of one URL the test server answers.
type Route = (String, Vec<u8>, Option<String>);

/// A minimal HTTP/1.1 server: GET of the paths in `routes` (body, Last-Modified).
struct Server {
    url: String,
    routes: Arc<Mutex<Vec<Route>>>,
    hits: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(routes: Vec<Route>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let routes = Arc::new(Mutex::new(routes));
        let hits = Arc::new(Mutex::new(Vec::new()));
        let (r, h) = (routes.clone(), hits.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (r, h) = (r.clone(), h.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() {
                        return;
                    }
                    loop {
                        let mut hdr = String::new();
                        match reader.read_line(&mut hdr) {
                            Ok(0) | Err(_) => break,
                            Ok(_) if hdr == "\r\n" || hdr == "\n" => break,
                            Ok(_) => {}
                        }
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    h.lock().unwrap().push(path.clone());
                    let found = r
                        .lock()
                        .unwrap()
                        .iter()
                        .find(|(p, _, _)| *p == path)
                        .cloned();
                    let resp = match found {
                        Some((_, body, modified)) => {
                            let mut head = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n",
                                body.len()
                            );
                            if let Some(m) = modified {
                                head.push_str(&format!("Last-Modified: {m}\r\n"));
                            }
                            head.push_str("\r\n");
                            let mut v = head.into_bytes();
                            v.extend_from_slice(&body);
                            v
                        }
                        None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec(),
                    };
                    let _ = stream.write_all(&resp);
                    let _ = stream.flush();
                    let mut rest = Vec::new();
                    let _ = stream.shutdown(std::net::Shutdown::Write);
                    let _ = reader.read_to_end(&mut rest);
                });
            }
        });
        Server { url, routes, hits }
    }

    fn set(&self, path: &str, body: &[u8]) {
        let mut routes = self.routes.lock().unwrap();
        for r in routes.iter_mut() {
            if r.0 == path {
                r.1 = body.to_vec();
            }
        }
    }
}

fn sha256_hex(data: &[u8]) -> String {
    rbuild_oci::Digest::sha256_of(data).hex().to_string()
}

#[test]
fn add_urls_checksums_names_modes_and_content_cache() {
    let Some(env) = env() else { return };
    let hello = b"hello from http\n".to_vec();
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(2);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    tar.append_data(&mut h, "inside.txt", &b"in"[..]).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar.into_inner().unwrap()).unwrap();
    let archive = gz.finish().unwrap();
    let server = Server::start(vec![
        (
            "/files/hello.txt".into(),
            hello.clone(),
            Some("Wed, 21 Oct 2015 07:28:00 GMT".into()),
        ),
        ("/archive.tar.gz".into(), archive.clone(), None),
        ("/changing.txt".into(), b"version 1\n".to_vec(), None),
    ]);
    let ctx = context_from("copy-url");
    let root = tempfile::tempdir().unwrap();
    let url_arg = format!("URL={}", server.url);
    let sum_arg = format!("SUM=sha256:{}", sha256_hex(&hello));
    let dest = tempfile::tempdir().unwrap();
    let out = build(
        root.path(),
        ctx.path(),
        &env.base,
        &[
            "--build-arg",
            &url_arg,
            "--build-arg",
            &sum_arg,
            "--output",
            &local_output(dest.path()),
        ],
    );
    assert_ok(&out);
    let d = dest.path();
    assert_eq!(fs::read(d.join("hello.txt")).unwrap(), hello);
    assert_eq!(fs::read(d.join("renamed.txt")).unwrap(), hello);
    assert_eq!(fs::read(d.join("owned/hello.txt")).unwrap(), hello);
    assert_eq!(fs::read(d.join("checked.txt")).unwrap(), hello);
    assert_eq!(
        fs::read(d.join("archive.tar.gz")).unwrap(),
        archive,
        "archives from URLs are not extracted"
    );
    assert!(!d.join("inside.txt").exists());
    let stat = fs::read_to_string(d.join("stat.txt")).unwrap();
    let lines: Vec<&str> = stat.lines().collect();
    assert_eq!(lines[0], "600 0:0 1445412480 hello.txt", "{stat}");
    assert_eq!(lines[1], "600 0:0 1445412480 renamed.txt", "{stat}");
    assert_eq!(
        lines[2], "644 65534:65534 1445412480 owned/hello.txt",
        "{stat}"
    );
    assert!(
        lines[3].starts_with("600 0:0 ") && lines[3].ends_with(" archive.tar.gz"),
        "{stat}"
    );
    assert_eq!(lines[4], "600 0:0 1445412480 checked.txt", "{stat}");
    assert_eq!(
        fs::read_to_string(d.join("changing.txt")).unwrap(),
        "version 1\n"
    );

    // Unchanged content: fetched again (for the cache key) but cached.
    let hits_before = server.hits.lock().unwrap().len();
    let args = ["--build-arg", &url_arg, "--build-arg", &sum_arg];
    let again = build(root.path(), ctx.path(), &env.base, &args);
    assert_ok(&again);
    let (ran, cached) = ran_and_cached(&again);
    assert!(
        !ran.iter().any(|n| n.contains("ADD") || n.contains("RUN")),
        "nothing reruns for unchanged content: {ran:?}"
    );
    assert!(!cached.is_empty(), "{cached:?}");
    let hits: Vec<String> = server.hits.lock().unwrap()[hits_before..].to_vec();
    assert!(
        hits.contains(&"/changing.txt".to_string()),
        "re-fetched: {hits:?}"
    );

    // Changed content: that ADD and what follows run again.
    server.set("/changing.txt", b"version 2\n");
    let dest2 = tempfile::tempdir().unwrap();
    let out2 = local_output(dest2.path());
    let mut args2 = args.to_vec();
    args2.extend(["--output", &out2]);
    let changed = build(root.path(), ctx.path(), &env.base, &args2);
    assert_ok(&changed);
    let (ran, _) = ran_and_cached(&changed);
    assert!(
        ran.iter()
            .any(|n| n.contains("ADD") && n.contains("changing.txt")),
        "{ran:?}"
    );
    assert!(
        !ran.iter()
            .any(|n| n.contains("ADD") && n.contains("renamed.txt")),
        "{ran:?}"
    );
    assert_eq!(
        fs::read_to_string(dest2.path().join("changing.txt")).unwrap(),
        "version 2\n"
    );

    // A checksum mismatch is a clear error.
    let bad_sum = format!("SUM=sha256:{}", "0".repeat(64));
    let bad = build(
        root.path(),
        ctx.path(),
        &env.base,
        &["--build-arg", &url_arg, "--build-arg", &bad_sum],
    );
    assert_eq!(bad.status.code(), Some(1));
    let err = stderr_text(&bad);
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(err.contains(&sha256_hex(&hello)), "{err}");

    // COPY cannot fetch URLs.
    let copy_ctx = tempfile::tempdir().unwrap();
    fs::write(
        copy_ctx.path().join("Dockerfile"),
        format!("FROM scratch\nCOPY {}/files/hello.txt /\n", server.url),
    )
    .unwrap();
    let out = build(root.path(), copy_ctx.path(), &env.base, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("can't be a URL for COPY"));
}

#[test]
fn add_extracts_every_compressed_tar_and_copies_fakes() {
    let Some(env) = env() else { return };
    let ctx = context_from("copy-archives");
    let c = ctx.path();
    let mut b = tar::Builder::new(Vec::new());
    for (name, body) in [("top.txt", &b"top\n"[..]), ("dir/deep.txt", &b"deep\n"[..])] {
        let mut h = tar::Header::new_ustar();
        h.set_size(body.len() as u64);
        h.set_mode(0o640);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000_000);
        b.append_data(&mut h, name, body).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    fs::write(c.join("a.tar.gz"), gz.finish().unwrap()).unwrap();
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    bz.write_all(&tar).unwrap();
    fs::write(c.join("a.tar.bz2"), bz.finish().unwrap()).unwrap();
    let mut xz = Vec::new();
    lzma_rs::xz_compress(&mut std::io::Cursor::new(&tar), &mut xz).unwrap();
    fs::write(c.join("a.tar.xz"), xz).unwrap();
    fs::write(c.join("a.tar.zst"), zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"a gzip of plain text\n").unwrap();
    let fake = gz.finish().unwrap();
    fs::write(c.join("fake.tar.gz"), &fake).unwrap();
    fs::write(c.join("notgz.tar.gz"), "not compressed at all\n").unwrap();

    let root = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let out = build(
        root.path(),
        c,
        &env.base,
        &["--output", &local_output(dest.path())],
    );
    assert_ok(&out);
    let d = dest.path();
    for kind in ["gz", "bz2", "xz", "zst"] {
        assert_eq!(
            fs::read_to_string(d.join(kind).join("top.txt")).unwrap(),
            "top\n",
            "{kind}"
        );
        assert_eq!(
            fs::read_to_string(d.join(kind).join("dir/deep.txt")).unwrap(),
            "deep\n",
            "{kind}"
        );
        let meta = fs::metadata(d.join(kind).join("top.txt")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640, "{kind}");
    }
    assert_eq!(fs::read(d.join("fake/fake.tar.gz")).unwrap(), fake);
    assert_eq!(
        fs::read_to_string(d.join("fake/notgz.tar.gz")).unwrap(),
        "not compressed at all\n"
    );
}
