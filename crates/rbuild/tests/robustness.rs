//! Interrupted builds with the real binary: SIGINT, SIGTERM and SIGKILL while a RUN runs, right
//! as its snapshot is committed, while the image is exported, and SIGINT while it is pushed.
//! A SIGINT or SIGTERM cancels the build in every phase, as in BuildKit: rbuild exits with
//! 128+signal and `error: build canceled`; during the export it leaves no half-written blob and
//! no tag, during a push no tag in the registry. After each kill: the RUN's processes (including
//! one it left in the background) are gone, no mount under the state root is left in any
//! process's mount namespace (the host's is allowed to keep rbuild's own overlay after a
//! SIGKILL, for the next run to sweep), the store holds only intact blobs, and a rebuild with the
//! same build args (so the same cache keys) succeeds, reusing what was committed.

use rbuild_testsupport::{files_below, skopeo_digest, Fault, FaultProxy, FaultRule};
use serde_json::Value;
use std::fs;
use std::io::BufRead;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::*;

/// Where in the build the signal lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// While the RUN's command runs.
    Run,
    /// Right after the RUN's command printed its last line: the process exits and the snapshot
    /// (256 MiB of fresh data to sync) is committed.
    Commit,
    /// After the RUN is done, while a layer blob is being written.
    Export,
}

/// The build args of one phase: the same for the interrupted build and the rebuild, so both
/// compute the same cache keys.
fn phase_args(phase: Phase, orphan: u32) -> Vec<String> {
    let (sleep, big, src) = match phase {
        Phase::Run => (4, 1, "/dev/zero"),
        Phase::Commit => (0, 256, "/dev/zero"),
        // Random data: gzip cannot shrink it, so the layer takes a while to write.
        Phase::Export => (0, 96, "/dev/urandom"),
    };
    vec![
        format!("SLEEP={sleep}"),
        format!("BIG={big}"),
        format!("SRC={src}"),
        format!("ORPHAN={orphan}"),
    ]
}

const DOCKERFILE: &str = "ARG BASE\nFROM $BASE\nARG SLEEP=0\nARG BIG=0\nARG SRC=/dev/zero\nARG ORPHAN=1\n\
RUN sleep $ORPHAN & sleep $SLEEP && dd if=$SRC of=/big bs=1M count=$BIG 2>/dev/null && echo run-finished && echo finished > /done.txt\n";

/// A number no other test (or process on the machine) is likely to pass to `sleep`: the marker
/// of the RUN's background process.
fn orphan_marker() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    700_000 + (std::process::id() % 1000) * 100 + N.fetch_add(1, Ordering::SeqCst)
}

/// Pids of processes whose argv is exactly `sleep MARKER`.
fn marked_processes(marker: u32) -> Vec<i32> {
    let want = format!("sleep\0{marker}\0");
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            if cmdline == want.as_bytes() {
                out.push(pid);
            }
        }
    }
    out
}

/// Mountinfo lines naming a path under `root` (as mount point, source or overlay option), for
/// every mount namespace on the machine: `own` are those of this test's namespace (the host's),
/// `other` those of any other namespace (with the pid that holds it).
fn mounts_under(root: &Path) -> (Vec<String>, Vec<String>) {
    let needle = root.to_string_lossy().to_string();
    let own_ns = fs::read_link("/proc/self/ns/mnt").unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let (mut own, mut other) = (Vec::new(), Vec::new());
    let mut scan = |ns: std::path::PathBuf, info: String, who: String| {
        if !seen.insert(ns.clone()) {
            return;
        }
        for line in info.lines().filter(|l| l.contains(&needle)) {
            if ns == own_ns {
                own.push(line.to_string());
            } else {
                other.push(format!("{who}: {line}"));
            }
        }
    };
    scan(
        own_ns.clone(),
        fs::read_to_string("/proc/self/mountinfo").unwrap(),
        "self".into(),
    );
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.parse::<u32>().is_err() {
            continue;
        }
        let (Ok(ns), Ok(info)) = (
            fs::read_link(entry.path().join("ns/mnt")),
            fs::read_to_string(entry.path().join("mountinfo")),
        ) else {
            continue;
        };
        scan(ns, info, format!("pid {name}"));
    }
    (own, other)
}

/// Polls `cond` every 50 ms for up to `limit` (a bound against hangs, not a speed check).
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks the content store: every blob hashes to its name, and every image the index names has
/// its manifest, config and layers.
fn assert_store_consistent(root: &Path) {
    let blobs = root.join("blobs/sha256");
    if let Ok(dir) = fs::read_dir(&blobs) {
        for entry in dir.flatten() {
            let data = fs::read(entry.path()).unwrap();
            let name = entry.file_name().to_string_lossy().to_string();
            assert_eq!(
                rbuild_oci::Digest::sha256_of(&data).hex(),
                name,
                "blob {name} does not hold what its name says ({} bytes)",
                data.len()
            );
        }
    }
    if !root.join("index.json").exists() {
        return;
    }
    let store = rbuild_oci::Store::open(root).unwrap();
    for tag in store.tags().unwrap() {
        let record = store.read_image(&tag.descriptor.digest).unwrap();
        assert!(
            store.has_blob(&record.manifest.config.digest),
            "{}",
            tag.name
        );
        for layer in &record.manifest.layers {
            assert!(
                store.has_blob(&layer.digest),
                "{}: {}",
                tag.name,
                layer.digest
            );
        }
    }
}

/// The RUN vertex's events: `(kind, cache_key)` in order.
fn run_events(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e["name"].as_str().is_some_and(|n| n.contains("RUN sleep")))
        .filter(|e| e["event"] != "log")
        .map(|e| {
            (
                e["event"].as_str().unwrap_or_default().to_string(),
                e["cache_key"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The state root, the context and the DOCKER_CONFIG of one test.
struct Dirs {
    root: tempfile::TempDir,
    ctx: tempfile::TempDir,
    config: tempfile::TempDir,
}

/// What the interrupted build printed before it died.
struct Interrupted {
    events: Vec<Value>,
    /// The standard-error lines that are not json events, and the final error event's report.
    text: Vec<String>,
    status: std::process::ExitStatus,
}

/// A build canceled by a catchable `signal`: it exited with 128+signal after printing exactly
/// the canceled-build message; a SIGKILL just killed it.
fn assert_canceled(first: &Interrupted, signal: i32) {
    if signal == libc::SIGKILL {
        assert_eq!(
            first.status.signal(),
            Some(libc::SIGKILL),
            "{:?}",
            first.status
        );
        return;
    }
    assert_eq!(
        first.status.code(),
        Some(128 + signal),
        "{:?}, stderr: {:?}",
        first.status,
        first.text
    );
    assert_eq!(first.text, ["error: build canceled"], "{:?}", first.status);
}

/// Starts a build, sends `signal` once `phase` is reached, and collects its json events.
fn interrupt(
    dirs: &Dirs,
    base: &str,
    args: &[String],
    phase: Phase,
    signal: i32,
    orphan: u32,
) -> Interrupted {
    let root = dirs.root.path();
    let mut cmd = Command::new(RBUILD);
    cmd.arg("--root")
        .arg(root)
        .env("DOCKER_CONFIG", dirs.config.path())
        .args(["build", "--progress=json", "-t", "robust:1", "--build-arg"])
        .arg(format!("BASE={base}"));
    for a in args {
        cmd.arg("--build-arg").arg(a);
    }
    let mut child = cmd
        .arg(dirs.ctx.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // Events arrive on a reader thread, so the test can poll the filesystem meanwhile.
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            // The final error event carries the report a plain build prints.
            if let Some(report) = json_error_report(&line) {
                text.push(report);
                continue;
            }
            match serde_json::from_str::<Value>(&line) {
                Ok(v) => {
                    let _ = tx.send(v);
                }
                Err(_) => text.push(line),
            }
        }
        text
    });
    let mut events = Vec::new();
    let wait_event = |events: &mut Vec<Value>, pred: &dyn Fn(&Value) -> bool| loop {
        let v = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("rbuild ended or hung before {phase:?} ({e}): {events:?}"));
        events.push(v.clone());
        if pred(&v) {
            break;
        }
    };
    let is_run = |v: &Value| v["name"].as_str().is_some_and(|n| n.contains("RUN sleep"));
    match phase {
        Phase::Run => {
            wait_event(&mut events, &|v| is_run(v) && v["event"] == "started");
            assert!(
                eventually(Duration::from_secs(30), || !marked_processes(orphan)
                    .is_empty()),
                "the RUN's background `sleep {orphan}` never appeared"
            );
            // The scan sees the running step's mounts (the sandbox's namespace), so finding
            // none later means something.
            let (_, other) = mounts_under(root);
            assert!(
                !other.is_empty(),
                "no sandbox mount found while the RUN runs"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Phase::Commit => {
            wait_event(&mut events, &|v| {
                is_run(v)
                    && v["line"]
                        .as_str()
                        .is_some_and(|l| l.contains("run-finished"))
            });
        }
        Phase::Export => {
            wait_event(&mut events, &|v| is_run(v) && v["event"] == "done");
            let tmp = root.join("tmp/blobs");
            assert!(
                eventually(Duration::from_secs(60), || files_below(&tmp) > 0),
                "no blob was being written after the RUN was done"
            );
        }
    }
    // SAFETY: kill on a child pid this test owns and has not reaped.
    send_signal(&child, signal);
    let status = child.wait().unwrap();
    let text = reader.join().unwrap();
    events.extend(rx.try_iter());
    Interrupted {
        events,
        text,
        status,
    }
}

fn interrupted_then_rebuilt(phase: Phase, signal: i32) {
    let Some(env) = env() else { return };
    let dirs = Dirs {
        root: tempfile::tempdir().unwrap(),
        ctx: tempfile::tempdir().unwrap(),
        config: tempfile::tempdir().unwrap(),
    };
    let root = &dirs.root;
    fs::write(dirs.ctx.path().join("Dockerfile"), DOCKERFILE).unwrap();
    let orphan = orphan_marker();
    let args = phase_args(phase, orphan);
    let first = interrupt(&dirs, &env.base, &args, phase, signal, orphan);
    let first_run = run_events(&first.events);
    let key = first_run
        .first()
        .map(|(_, k)| k.clone())
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| panic!("the RUN reported no cache key: {:?}", first.events));
    // Whatever the phase, the build is canceled.
    assert_canceled(&first, signal);
    if phase == Phase::Export && signal != libc::SIGKILL {
        // The layer being written stopped and took its temp file along; the image, canceled
        // before it was named, has no tag.
        assert_eq!(
            files_below(&root.path().join("tmp/blobs")),
            0,
            "a canceled export left temp blobs"
        );
        assert_store_consistent(root.path());
        let store = rbuild_oci::Store::open(root.path()).unwrap();
        assert!(
            store.resolve_tag("robust:1").unwrap().is_none(),
            "a build canceled during the export named its image"
        );
    }

    // The RUN's processes die with rbuild, the background one included.
    assert!(
        eventually(Duration::from_secs(10), || marked_processes(orphan)
            .is_empty()),
        "the RUN's background `sleep {orphan}` outlived rbuild: pids {:?}",
        marked_processes(orphan)
    );
    // No mount under the root survives in another namespace; after a catchable signal, not even
    // in the host's.
    let mut left = (Vec::new(), Vec::new());
    let clean = eventually(Duration::from_secs(5), || {
        left = mounts_under(root.path());
        left.1.is_empty() && (signal == libc::SIGKILL || left.0.is_empty())
    });
    assert!(clean, "{phase:?}/{signal}: mounts left: {left:?}");
    assert_store_consistent(root.path());

    // The same build again: same keys; what the first build committed is reused.
    let mut rebuild_args: Vec<String> = vec!["-t".into(), "robust:1".into()];
    for a in &args {
        rebuild_args.push("--build-arg".into());
        rebuild_args.push(a.clone());
    }
    let dest = tempfile::tempdir().unwrap();
    rebuild_args.push("--output".into());
    rebuild_args.push(format!("type=local,dest={}", dest.path().display()));
    let refs: Vec<&str> = rebuild_args.iter().map(String::as_str).collect();
    let out = build_with_config(&dirs, &env.base, &refs);
    assert_ok(&out);
    let second_run = run_events(&events(&out));
    assert!(
        second_run.iter().all(|(_, k)| k == &key),
        "the rebuild computed another key for the RUN: {key} vs {second_run:?}"
    );
    let first_done = first_run.iter().any(|(kind, _)| kind == "done");
    let second_kinds: Vec<&str> = second_run.iter().map(|(kind, _)| kind.as_str()).collect();
    if first_done {
        assert_eq!(
            second_kinds,
            ["cached"],
            "the RUN finished before the kill, so the rebuild reuses it"
        );
    } else if phase == Phase::Run {
        assert_eq!(second_kinds, ["started", "done"], "nothing was committed");
    } else {
        // Killed between the end of the command and the record: either is right.
        assert!(
            second_kinds == ["cached"] || second_kinds == ["started", "done"],
            "{second_kinds:?}"
        );
    }
    eprintln!(
        "{phase:?}/{signal}: first {first_run:?} ({:?}), rebuild {second_kinds:?}",
        first.status
    );
    assert_eq!(
        fs::read_to_string(dest.path().join("done.txt")).unwrap(),
        "finished\n"
    );
    assert!(marked_processes(orphan).is_empty());
    let left = mounts_under(root.path());
    assert!(
        left.0.is_empty() && left.1.is_empty(),
        "mounts left after the rebuild: {left:?}"
    );
    assert_eq!(
        files_below(&root.path().join("tmp/blobs")),
        0,
        "half-written blobs left"
    );
    assert_store_consistent(root.path());
    let store = rbuild_oci::Store::open(root.path()).unwrap();
    assert!(store.resolve_tag("robust:1").unwrap().is_some());
}

/// `build` from common, with a DOCKER_CONFIG of the test's own.
fn build_with_config(dirs: &Dirs, base: &str, extra: &[&str]) -> Output {
    Command::new(RBUILD)
        .arg("--root")
        .arg(dirs.root.path())
        .env("DOCKER_CONFIG", dirs.config.path())
        .args(["build", "--progress=json", "--build-arg"])
        .arg(format!("BASE={base}"))
        .args(extra)
        .arg(dirs.ctx.path())
        .output()
        .expect("run rbuild")
}

#[test]
fn sigkill_mid_run_then_rebuild_succeeds() {
    interrupted_then_rebuilt(Phase::Run, libc::SIGKILL);
}

#[test]
fn sigterm_mid_run_then_rebuild_succeeds() {
    interrupted_then_rebuilt(Phase::Run, libc::SIGTERM);
}

#[test]
fn sigint_mid_run_then_rebuild_succeeds() {
    interrupted_then_rebuilt(Phase::Run, libc::SIGINT);
}

#[test]
fn sigkill_at_commit_then_rebuild_succeeds() {
    interrupted_then_rebuilt(Phase::Commit, libc::SIGKILL);
}

#[test]
fn sigterm_at_commit_then_rebuild_succeeds() {
    interrupted_then_rebuilt(Phase::Commit, libc::SIGTERM);
}

#[test]
fn sigkill_during_export_then_rebuild_succeeds() {
    interrupted_then_rebuilt(Phase::Export, libc::SIGKILL);
}

#[test]
fn sigint_during_export_then_rebuild_succeeds() {
    interrupted_then_rebuilt(Phase::Export, libc::SIGINT);
}

#[test]
fn sigterm_during_export_then_rebuild_succeeds() {
    interrupted_then_rebuilt(Phase::Export, libc::SIGTERM);
}

/// Whether the registry at `addr` has the manifest `repo:tag` (a plain HTTP `HEAD`).
fn registry_has(addr: &str, repo: &str, tag: &str) -> bool {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "HEAD /v2/{repo}/manifests/{tag} HTTP/1.1\r\nHost: {addr}\r\nAccept: \
         application/vnd.oci.image.manifest.v1+json, \
         application/vnd.docker.distribution.manifest.v2+json, \
         application/vnd.oci.image.index.v1+json\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    let status = reply.split_whitespace().nth(1).unwrap_or_default();
    match status {
        "200" => true,
        "404" => false,
        _ => panic!("HEAD {repo}:{tag}: {reply}"),
    }
}

/// What is pushed while the signal lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pushing {
    /// The image (`--push`).
    Image,
    /// The build cache (`--cache-to type=registry`).
    Cache,
}

/// A SIGINT while `what` is pushed (its manifest upload stalls at a proxy, so the push is in
/// flight) cancels the build: exit 130 with the canceled message, and the registry has no tag.
/// The same build again reuses the cache and pushes the tag.
fn sigint_while_pushing(what: Pushing) {
    let Some(env) = env() else { return };
    let proxy = FaultProxy::start(&env.registry.addr()).unwrap();
    proxy.add(FaultRule::new("PUT", "/manifests/", Fault::Stall, 1));
    let dirs = Dirs {
        root: tempfile::tempdir().unwrap(),
        ctx: tempfile::tempdir().unwrap(),
        config: tempfile::tempdir().unwrap(),
    };
    let repo = match what {
        Pushing::Image => "cancel/image",
        Pushing::Cache => "cancel/cache",
    };
    fs::write(
        dirs.ctx.path().join("Dockerfile"),
        format!(
            "ARG BASE\nFROM $BASE\nRUN echo canceled > /{}.txt\n",
            repo.replace('/', "-")
        ),
    )
    .unwrap();
    let target = format!("{}/{repo}:1", proxy.addr());
    let cache_to = format!("type=registry,ref={target}");
    let args: Vec<&str> = match what {
        Pushing::Image => vec!["--push", "-t", &target],
        Pushing::Cache => vec!["-t", "local/cache:1", "--cache-to", &cache_to],
    };
    let build = |progress: &str| {
        let mut cmd = Command::new(RBUILD);
        cmd.arg("--root")
            .arg(dirs.root.path())
            .env("DOCKER_CONFIG", dirs.config.path())
            .args(["build", progress])
            .args(&args)
            .arg("--build-arg")
            .arg(format!("BASE={}", env.base))
            .arg(dirs.ctx.path());
        cmd
    };
    let mut child = build("--progress=plain")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    assert!(
        eventually(Duration::from_secs(120), || proxy
            .count("PUT", "/manifests/")
            > 0),
        "the push never reached its manifest: {}",
        proxy.log_text()
    );
    // SAFETY: kill on a child pid this test owns and has not reaped.
    send_signal(&child, libc::SIGINT);
    let status = child.wait().unwrap();
    let text = reader.join().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}: {text}");
    assert_eq!(text.lines().last(), Some("error: build canceled"), "{text}");
    let addr = env.registry.addr();
    assert!(
        !registry_has(&addr, repo, "1"),
        "a canceled push tagged {repo}:1"
    );
    assert_store_consistent(dirs.root.path());

    proxy.clear_rules();
    let out = build("--progress=json").output().unwrap();
    assert_ok(&out);
    let (ran, cached) = ran_and_cached(&out);
    assert!(
        !ran.iter().any(|n| n.contains("RUN")),
        "the rebuild ran {ran:?} again"
    );
    assert!(
        cached.iter().any(|n| n.contains("RUN echo canceled")),
        "{cached:?}"
    );
    assert!(registry_has(&addr, repo, "1"), "{repo}:1 was not pushed");
    if what == Pushing::Image {
        let digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let direct = format!("{addr}/{repo}:1");
        assert_eq!(skopeo_digest(&direct).unwrap().to_string(), digest);
    }
    assert_eq!(files_below(&dirs.root.path().join("tmp/blobs")), 0);
}

#[test]
fn sigint_during_push_leaves_no_tag_then_push_succeeds() {
    sigint_while_pushing(Pushing::Image);
}

#[test]
fn sigint_during_cache_push_leaves_no_tag_then_push_succeeds() {
    sigint_while_pushing(Pushing::Cache);
}

/// Sends `signal` (a raw number such as `libc::SIGINT`) to `child`.
fn send_signal(child: &std::process::Child, signal: i32) {
    let signal = rustix::process::Signal::from_named_raw(signal).expect("a named signal");
    rustix::process::kill_process(rustix::process::Pid::from_child(child), signal)
        .expect("kill rbuild");
}
