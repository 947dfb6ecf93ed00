//! Concurrent builds on one `--root`: several rbuild processes at once (fresh root, a build
//! started during another's layer export, a lock held by another process) all succeed, report
//! their waits, and leave a store whose every blob matches its digest and whose index.json lists
//! every tag.

mod common;

use common::{assert_ok, ran_and_cached, rbuild_at};
use rbuild_testsupport::{make_busybox_rootfs_tar, require_root};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A context dir with the busybox rootfs, a Dockerfile of a few RUN and COPY steps unique to
/// `name`, and `extra_bytes` of incompressible data copied into the image (0: none).
fn context(dir: &Path, name: &str, extra_bytes: usize) -> PathBuf {
    let ctx = dir.join(format!("ctx-{name}"));
    std::fs::create_dir_all(ctx.join("files")).unwrap();
    make_busybox_rootfs_tar(&ctx.join("rootfs.tar")).unwrap();
    std::fs::write(ctx.join("files/a.txt"), format!("a of {name}\n")).unwrap();
    std::fs::write(ctx.join("files/b.txt"), format!("b of {name}\n")).unwrap();
    let mut big = String::new();
    if extra_bytes > 0 {
        let mut f = std::fs::File::create(ctx.join("big.bin")).unwrap();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ name.len() as u64;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..extra_bytes / buf.len() {
            for chunk in buf.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&buf).unwrap();
        }
        big = "COPY big.bin /big.bin\n".to_string();
    }
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM scratch\n\
             ADD rootfs.tar /\n\
             RUN echo {name} > /name && sleep 0.2\n\
             COPY files/ /files/\n\
             RUN cat /files/a.txt /files/b.txt > /both && echo {name} >> /both\n\
             {big}\
             RUN mkdir -p /out && cp /both /out/{name} && ls /out > /listing\n\
             COPY files/b.txt /last.txt\n"
        ),
    )
    .unwrap();
    ctx
}

fn rbuild(root: &Path, ctx: &Path, tag: &str) -> Command {
    let mut cmd = rbuild_at(root);
    cmd.args(["build", "--progress=plain", "-t", tag]).arg(ctx);
    cmd
}

fn spawn(root: &Path, ctx: &Path, tag: &str) -> Child {
    rbuild(root, ctx, tag)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rbuild")
}

/// Every blob's sha256 equals its name; index.json parses and names exactly `tags` (in any order).
fn verify_store(root: &Path, tags: &[String]) {
    let blobs = root.join("blobs/sha256");
    let mut n = 0;
    for entry in std::fs::read_dir(&blobs).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let bytes = std::fs::read(entry.path()).unwrap();
        assert_eq!(
            rbuild_oci::sha256_hex(&bytes),
            name,
            "blob {name} is corrupt"
        );
        n += 1;
    }
    assert!(n > 0, "the store has blobs");
    let store = rbuild_oci::Store::open(root).unwrap();
    let mut found: Vec<String> = store.tags().unwrap().into_iter().map(|t| t.name).collect();
    found.sort();
    let mut want = tags.to_vec();
    want.sort();
    assert_eq!(found, want, "index.json lists every tag");
    for t in store.tags().unwrap() {
        let rec = store.read_image(&t.descriptor.digest).unwrap();
        for layer in &rec.manifest.layers {
            assert!(store.has_blob(&layer.digest), "{} lacks a layer", t.name);
        }
    }
}

#[test]
fn three_builds_on_a_fresh_root_five_times() {
    if !require_root().expect("root check") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let names = ["alpha", "bravo", "charlie"];
    let ctxs: Vec<PathBuf> = names.iter().map(|n| context(dir.path(), n, 0)).collect();
    for round in 0..5 {
        let root = dir.path().join(format!("root-{round}"));
        let tags: Vec<String> = names.iter().map(|n| format!("conc/{n}:r{round}")).collect();
        let children: Vec<Child> = ctxs
            .iter()
            .zip(&tags)
            .map(|(ctx, tag)| spawn(&root, ctx, tag))
            .collect();
        for child in children {
            assert_ok(&child.wait_with_output().unwrap());
        }
        verify_store(&root, &tags);
        if round == 4 {
            // A later build on the same root still works, and a rebuild is fully cached.
            let ctx = context(dir.path(), "delta", 0);
            assert_ok(&rbuild(&root, &ctx, "conc/delta:later").output().unwrap());
            let again = rbuild_at(&root)
                .args(["build", "--progress=json", "-t", "conc/alpha:again"])
                .arg(&ctxs[0])
                .output()
                .unwrap();
            assert_ok(&again);
            let (ran, cached) = ran_and_cached(&again);
            assert!(
                ran.iter()
                    .all(|r| !r.contains("RUN") && !r.contains("COPY")),
                "{ran:?}"
            );
            assert!(!cached.is_empty(), "the rebuild hit the cache");
            let mut all = tags.clone();
            all.extend([
                "conc/delta:later".to_string(),
                "conc/alpha:again".to_string(),
            ]);
            verify_store(&root, &all);
        }
    }
}

#[test]
fn a_build_started_during_another_export_breaks_nothing() {
    if !require_root().expect("root check") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    // 96 MiB that gzip cannot shrink: the export of that layer takes a while.
    let big = context(dir.path(), "big", 96 << 20);
    let small = context(dir.path(), "small", 0);
    let first = spawn(&root, &big, "conc/big:1");
    // The export is under way once a temp blob of the store grows past a few MiB.
    let tmp = root.join("tmp/blobs");
    let mut exporting = false;
    for _ in 0..6000 {
        let big_temp = std::fs::read_dir(&tmp)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|owner| std::fs::read_dir(owner.path()).ok())
            .flatten()
            .flatten()
            .any(|f| f.metadata().map(|m| m.len() > 4 << 20).unwrap_or(false));
        if big_temp {
            exporting = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(exporting, "saw the first build's layer export");
    // Two builds opening the same store, snapshots and index meanwhile.
    let second = spawn(&root, &small, "conc/small:1");
    let third = rbuild(&root, &small, "conc/small:2").output().unwrap();
    assert_ok(&third);
    assert_ok(&second.wait_with_output().unwrap());
    assert_ok(&first.wait_with_output().unwrap());
    verify_store(
        &root,
        &[
            "conc/big:1".to_string(),
            "conc/small:1".to_string(),
            "conc/small:2".to_string(),
        ],
    );
}

/// Streams a child's stderr lines into a channel (and keeps them for the final report).
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().expect("piped stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn a_held_lock_is_reported_then_the_build_finishes() {
    if !require_root().expect("root check") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let ctx = context(dir.path(), "waiter", 0);
    // Create the store, then hold its index.json lock as another rbuild updating tags would.
    drop(rbuild_oci::Store::open(&root).unwrap());
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join("index.lock"))
        .unwrap();
    assert!(rbuild_oci::lock::try_lock_exclusive(&lock).unwrap());
    let mut child = spawn(&root, &ctx, "conc/waiter:1");
    let lines = stderr_lines(&mut child);
    let want = format!(
        "waiting for {} (held by pid {})",
        root.display(),
        std::process::id()
    );
    let mut seen = Vec::new();
    let found = loop {
        match lines.recv_timeout(Duration::from_secs(300)) {
            Ok(line) if line == want => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    assert!(
        found,
        "no `{want}` line; stderr so far:\n{}",
        seen.join("\n")
    );
    drop(lock);
    let status = child.wait().unwrap();
    let rest: Vec<String> = lines.iter().collect();
    assert!(status.success(), "{}\n{}", seen.join("\n"), rest.join("\n"));
    verify_store(&root, &["conc/waiter:1".to_string()]);
}

#[test]
fn the_same_step_in_two_builds_at_once_runs_once() {
    if !require_root().expect("root check") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let ctx = dir.path().join("ctx-same");
    std::fs::create_dir_all(&ctx).unwrap();
    make_busybox_rootfs_tar(&ctx.join("rootfs.tar")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nADD rootfs.tar /\nRUN sleep 1 && date > /stamp\n",
    )
    .unwrap();
    let json = |tag: &str| {
        rbuild_at(&root)
            .args(["build", "--progress=json", "-t", tag])
            .arg(&ctx)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (json("same:a"), json("same:b"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_ok(&a);
    assert_ok(&b);
    let runs = |out| {
        let (ran, _) = ran_and_cached(out);
        ran.iter().filter(|n| n.contains("sleep 1")).count()
    };
    assert_eq!(runs(&a) + runs(&b), 1, "the RUN step ran in one build only");
    verify_store(&root, &["same:a".to_string(), "same:b".to_string()]);
    let store = rbuild_oci::Store::open(&root).unwrap();
    let (ta, tb) = (
        store.resolve_tag("same:a").unwrap().unwrap(),
        store.resolve_tag("same:b").unwrap().unwrap(),
    );
    let (ia, ib) = (
        store.read_image(&ta.digest).unwrap(),
        store.read_image(&tb.digest).unwrap(),
    );
    assert_eq!(
        ia.manifest.layers, ib.manifest.layers,
        "both images share the layers"
    );
}
