//! How rootless mode starts and stops. The process the user started is the build itself (no
//! outer process): a SIGINT or SIGTERM sent to it while a `RUN sleep` runs cancels the build as
//! in root mode (exit 128+signal, `error: build canceled`), the RUN's processes (one left in the
//! background too) die with it, no mount of the build survives in any mount namespace, the store
//! holds only intact blobs, and the same build run again by the same user succeeds. A map helper
//! that fails is reported with its status and what it printed.
//!
//! Runs the real binary as the test user `rbuild-rootless` (created with a subordinate id range
//! if missing, as `tests/rootless.rs` does) through `setpriv`. Needs root and `newuidmap`/
//! `newgidmap`: skips loudly without them, unless `RBUILD_REQUIRE_ROOT=1` or `CI`, which fail.

mod common;

use common::rootless::{setup, Setup, USER};

use serde_json::Value;
use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The interrupted step: a background `sleep MARKER` and a foreground sleep the signal cuts short.
const DOCKERFILE: &str = "ARG BASE\nFROM $BASE\nARG ORPHAN=1\n\
RUN sleep $ORPHAN & sleep 3 && echo finished > /done.txt\n";

/// The test user's uid (`-u`) or gid (`-g`).
fn id_of(flag: &str) -> u32 {
    common::rootless::id_of(USER, flag)
}

/// A scratch home owned by the user, holding the context (and, below, the state root).
fn user_home() -> tempfile::TempDir {
    let home = tempfile::Builder::new()
        .prefix("rbuild-rootless-sig")
        .tempdir()
        .expect("tempdir");
    let ctx = home.path().join("ctx");
    std::fs::create_dir(&ctx).expect("mkdir ctx");
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).expect("write Dockerfile");
    for p in [home.path(), ctx.as_path(), ctx.join("Dockerfile").as_path()] {
        std::os::unix::fs::chown(p, Some(id_of("-u")), Some(id_of("-g"))).expect("chown");
    }
    home
}

/// `rbuild --root HOME/root build --progress=json --network=none --build-arg BASE=..
/// --build-arg ORPHAN=.. ctx` as the user (setpriv execs rbuild: the child's pid is rbuild's), in a clean environment.
fn build_as_user(setup: &Setup, home: &Path, orphan: u32) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", &id_of("-u").to_string()])
        .args(["--regid", &id_of("-g").to_string(), "--init-groups", "--"])
        .arg(&setup.rbuild)
        .arg("--root")
        .arg(home.join("root"))
        .args(["build", "--progress=json", "--network=none", "-t", "sig:1"])
        .arg("--build-arg")
        .arg(format!("BASE={}", setup.base))
        .arg("--build-arg")
        .arg(format!("ORPHAN={orphan}"))
        .arg("ctx")
        .current_dir(home)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .env("HOME", home)
        .env(
            "DOCKER_CONFIG",
            rbuild_testsupport::isolated_docker_config(home),
        );
    cmd
}

/// A number no other process is likely to pass to `sleep`: the marker of the RUN's
/// background process.
fn orphan_marker() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    800_000 + (std::process::id() % 1000) * 100 + N.fetch_add(1, Ordering::SeqCst)
}

/// Pids of processes whose argv is exactly `sleep MARKER`.
fn marked_processes(marker: u32) -> Vec<i32> {
    let want = format!("sleep\0{marker}\0");
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<i32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            (cmdline == want.as_bytes()).then_some(pid)
        })
        .collect()
}

/// Mountinfo lines of any process's mount namespace that name a path under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        if e.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        if let Ok(info) = std::fs::read_to_string(e.path().join("mountinfo")) {
            found.extend(
                info.lines()
                    .filter(|l| l.contains(&needle))
                    .map(|l| format!("pid {}: {l}", e.file_name().to_string_lossy())),
            );
        }
    }
    found
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

/// Every blob in the store hashes to its name, and every tagged image's blobs are there.
fn assert_store_consistent(root: &Path) {
    if let Ok(dir) = std::fs::read_dir(root.join("blobs/sha256")) {
        for entry in dir.flatten() {
            let data = std::fs::read(entry.path()).expect("read blob");
            let name = entry.file_name().to_string_lossy().to_string();
            assert_eq!(
                rbuild_oci::Digest::sha256_of(&data).hex(),
                name,
                "blob {name} does not hold what its name says"
            );
        }
    }
    if !root.join("index.json").exists() {
        return;
    }
    let store = rbuild_oci::Store::open(root).expect("open store");
    for tag in store.tags().expect("tags") {
        let record = store.read_image(&tag.descriptor.digest).expect("image");
        for digest in std::iter::once(&record.manifest.config.digest)
            .chain(record.manifest.layers.iter().map(|l| &l.digest))
        {
            assert!(store.has_blob(digest), "{}: {digest} missing", tag.name);
        }
    }
}

/// The RUN's event kinds, in order.
fn run_kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["name"].as_str().is_some_and(|n| n.contains("RUN sleep")))
        .filter(|e| e["event"] != "log")
        .filter_map(|e| e["event"].as_str().map(str::to_string))
        .collect()
}

fn interrupted_then_rebuilt(signal: i32) {
    let Some(setup) = setup() else { return };
    let home = user_home();
    let h = home.path();
    let orphan = orphan_marker();
    let mut child = build_as_user(setup, h, orphan)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the rootless build");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(report) = common::json_error_report(&line) {
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
    loop {
        let v = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("rbuild ended or hung before the RUN ({e}): {events:?}"));
        events.push(v.clone());
        if v["name"].as_str().is_some_and(|n| n.contains("RUN sleep")) && v["event"] == "started" {
            break;
        }
    }
    assert!(
        eventually(Duration::from_secs(30), || !marked_processes(orphan)
            .is_empty()),
        "the RUN's background `sleep {orphan}` never appeared"
    );
    std::thread::sleep(Duration::from_millis(200));
    // The process setpriv became: the one a user's terminal or a CI runner signals.
    let pid = rustix::process::Pid::from_child(&child);
    let sig = rustix::process::Signal::from_named_raw(signal).expect("a named signal");
    rustix::process::kill_process(pid, sig).expect("signal rbuild");
    let status = child.wait().expect("wait for rbuild");
    let text = reader.join().expect("reader");
    events.extend(rx.try_iter());
    assert_eq!(
        status.code(),
        Some(128 + signal),
        "{status:?}, stderr: {text:?}"
    );
    assert_eq!(text, ["error: build canceled"], "{status:?}");
    assert_eq!(
        run_kinds(&events),
        ["started", "canceled"],
        "the RUN is canceled, not finished"
    );

    assert!(
        eventually(Duration::from_secs(10), || marked_processes(orphan)
            .is_empty()),
        "the RUN's background `sleep {orphan}` outlived rbuild: pids {:?}",
        marked_processes(orphan)
    );
    let root = h.join("root");
    let mut left = Vec::new();
    assert!(
        eventually(Duration::from_secs(5), || {
            left = mounts_under(&root);
            left.is_empty()
        }),
        "mounts of the canceled build left: {left:?}"
    );
    assert_store_consistent(&root);

    let again = build_as_user(setup, h, orphan)
        .output()
        .expect("rebuild as the user");
    common::assert_ok(&again);
    assert_eq!(
        run_kinds(&common::events(&again)),
        ["started", "done"],
        "the canceled RUN committed nothing, so it runs again"
    );
    assert!(marked_processes(orphan).is_empty());
    assert!(mounts_under(&root).is_empty());
    assert_store_consistent(&root);
    let store = rbuild_oci::Store::open(&root).expect("open store");
    assert!(
        store.resolve_tag("sig:1").expect("resolve").is_some(),
        "the rebuild named its image"
    );
}

#[test]
fn rootless_sigint_mid_run_cancels_then_rebuild_succeeds() {
    interrupted_then_rebuilt(libc::SIGINT);
}

#[test]
fn rootless_sigterm_mid_run_cancels_then_rebuild_succeeds() {
    interrupted_then_rebuilt(libc::SIGTERM);
}

#[test]
fn a_failing_map_helper_is_reported_with_its_output() {
    let Some(setup) = setup() else { return };
    let home = user_home();
    let h = home.path();
    // A `newuidmap` earlier on PATH than the real one (rbuild looks there first).
    let fake = h.join("fakebin");
    std::fs::create_dir(&fake).expect("mkdir fakebin");
    std::fs::write(
        fake.join("newuidmap"),
        "#!/bin/sh\necho \"newuidmap: uid range [1-65537) -> [300000-365537) not allowed\" >&2\nexit 1\n",
    )
    .expect("write the fake helper");
    for (p, mode) in [
        (fake.as_path(), 0o755),
        (fake.join("newuidmap").as_path(), 0o755),
    ] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let out = Command::new("setpriv")
        .args(["--reuid", &id_of("-u").to_string()])
        .args(["--regid", &id_of("-g").to_string(), "--init-groups", "--"])
        .arg(&setup.rbuild)
        .arg("--root")
        .arg(h.join("root"))
        .arg("images")
        .current_dir(h)
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", fake.display()))
        .env("HOME", h)
        .env(
            "DOCKER_CONFIG",
            rbuild_testsupport::isolated_docker_config(h),
        )
        .output()
        .expect("run rbuild as the user");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "error: rootless mode: newuidmap failed (exit status: 1): newuidmap: uid range \
         [1-65537) -> [300000-365537) not allowed"
    );
    assert!(
        !h.join("root").exists(),
        "nothing may touch the store when the namespace could not be mapped"
    );
}
