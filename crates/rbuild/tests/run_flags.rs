//! The `build` flags that shape RUN steps, through the real binary: entitlements (`--allow`)
//! for `RUN --network=host` and `RUN --security=insecure`, docker's validation of limit flags,
//! and the limits themselves (`--memory`, `--pids-limit`, `--ulimit`) and `--add-host` as a RUN
//! sees them. Limits are exercised only inside the build's own cgroup with a small limit.

use std::fs;
use std::path::Path;
use std::process::Output;

mod common;

use common::*;

/// A build context whose Dockerfile is `ARG BASE`, `FROM $BASE`, then `body`.
fn context(body: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("Dockerfile"),
        format!("ARG BASE\nFROM $BASE\n{body}"),
    )
    .unwrap();
    dir
}

fn stderr(out: &Output) -> String {
    stderr_text(out)
}

/// Names of the vertices that started running.
fn started(out: &Output) -> Vec<String> {
    ran_and_cached(out).0
}

#[test]
fn privileged_run_flags_without_allow_fail_at_the_flag() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();

    let ctx = context("RUN echo before\nRUN --network=host echo hi\n");
    let out = build(root.path(), ctx.path(), &env.base, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(">>> RUN --network=host echo hi\n")
            && err.contains("ERROR: failed to solve: network.host is not allowed\n"),
        "{err}"
    );
    assert!(err.contains("--allow network.host"), "{err}");
    // Refused before anything runs: not even the RUN before it.
    assert!(
        started(&out).iter().all(|n| !n.contains("RUN")),
        "{:?}",
        started(&out)
    );

    let ctx = context("RUN --security=insecure echo hi\n");
    let out = build(root.path(), ctx.path(), &env.base, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("Dockerfile:3\n")
            && err.contains(">>> RUN --security=insecure echo hi\n")
            && err.contains("ERROR: failed to solve: security.insecure is not allowed\n"),
        "{err}"
    );
    assert!(err.contains("--allow security.insecure"), "{err}");

    // One entitlement does not grant the other.
    let out = build(
        root.path(),
        ctx.path(),
        &env.base,
        &["--allow", "network.host"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("security.insecure is not allowed"),
        "{}",
        stderr(&out)
    );
}

/// The network namespace a RUN saw, from the file it wrote.
fn ns_of(dest: &Path, file: &str) -> String {
    fs::read_to_string(dest.join(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .trim()
        .to_string()
}

fn own_netns() -> String {
    fs::read_link("/proc/self/ns/net")
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn allow_network_host_runs_in_the_hosts_network_namespace() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let output = format!("type=local,dest={}", dest.path().display());
    let ctx = context("RUN --network=host readlink /proc/self/ns/net > /host-ns\n");
    let out = build(
        root.path(),
        ctx.path(),
        &env.base,
        &["--allow", "network.host", "--output", &output],
    );
    assert_ok(&out);
    assert_eq!(ns_of(dest.path(), "host-ns"), own_netns());

    // `--network=host` on the command line implies the entitlement (as buildx).
    let dest2 = tempfile::tempdir().unwrap();
    let output = format!("type=local,dest={}", dest2.path().display());
    let out = build(
        root.path(),
        ctx.path(),
        &env.base,
        &["--network=host", "--no-cache", "--output", &output],
    );
    assert_ok(&out);
    assert_eq!(ns_of(dest2.path(), "host-ns"), own_netns());
}

/// Needs the sandbox's private network (issue 7): the default network is not the host's, and
/// `RUN --network=host` and `RUN --network=none` are each their own.
#[test]
fn default_network_is_a_namespace_of_its_own() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let output = format!("type=local,dest={}", dest.path().display());
    let ctx = context(
        "RUN readlink /proc/self/ns/net > /default-ns\n\
         RUN --network=host readlink /proc/self/ns/net > /host-ns\n\
         RUN --network=none readlink /proc/self/ns/net > /none-ns\n",
    );
    let out = build(
        root.path(),
        ctx.path(),
        &env.base,
        &["--allow", "network.host", "--output", &output],
    );
    assert_ok(&out);
    let host = own_netns();
    assert_eq!(ns_of(dest.path(), "host-ns"), host);
    assert_ne!(
        ns_of(dest.path(), "default-ns"),
        host,
        "the default network must be a namespace of its own"
    );
    assert_ne!(ns_of(dest.path(), "none-ns"), host);
}

/// `rbuild build` with these flags on a context that would build, expecting a usage error.
fn usage_error(flags: &[&str]) -> String {
    let root = tempfile::tempdir().unwrap();
    let ctx = context("RUN true\n");
    let out = rbuild_at(root.path())
        .arg("build")
        .args(flags)
        .arg(ctx.path())
        .output()
        .expect("run rbuild");
    assert_eq!(out.status.code(), Some(2), "{flags:?}: {}", stderr(&out));
    stderr(&out)
}

#[test]
fn bad_flag_values_are_usage_errors_naming_flag_and_value() {
    // No root needed: every one of these fails before a build starts.
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--memory", "64q"],
            &["--memory", "'64q'", "invalid size: '64q'"],
        ),
        (&["-m", "1.5.3g"], &["--memory", "invalid size: '1.5.3g'"]),
        (
            &["--shm-size", "big"],
            &["--shm-size", "invalid size: 'big'"],
        ),
        (
            &["--memory-swap", "-2"],
            &["--memory-swap", "invalid size: '-2'"],
        ),
        (
            &["--add-host", "db:x"],
            &["--add-host", "invalid IP address in add-host: \"x\""],
        ),
        (
            &["--add-host", "db"],
            &["--add-host", "bad format for add-host: \"db\""],
        ),
        (
            &["--cpus", "two"],
            &["--cpus", "failed to parse two as a rational number"],
        ),
        (
            &["--cpus", "0.0000000001"],
            &["--cpus", "value is too precise"],
        ),
        (
            &["--ulimit", "nofile"],
            &["--ulimit", "invalid ulimit argument: nofile"],
        ),
        (
            &["--ulimit", "files=1"],
            &["--ulimit", "invalid ulimit type: files"],
        ),
        (
            &["--ulimit", "nofile=20:10"],
            &[
                "--ulimit",
                "soft limit must be less than or equal to hard limit: 20 > 10",
            ],
        ),
        (&["--pids-limit", "many"], &["--pids-limit", "'many'"]),
        (
            &["--network", "bridge"],
            &["--network", "'bridge'", "default, host, none"],
        ),
        (
            &["--allow", "device"],
            &["--allow", "unknown entitlement device"],
        ),
        (
            &["--allow", "network.host,root"],
            &["--allow", "unknown entitlement root"],
        ),
        // Checked like docker's daemon checks a container's resources.
        (&["-m", "4m"], &["Minimum memory limit allowed is 6MB"]),
        (
            &["--memory-swap", "1g"],
            &["You should always set the Memory limit when using Memoryswap limit"],
        ),
        (
            &["-m", "1g", "--memory-swap", "512m"],
            &["Minimum memoryswap limit should be larger than memory limit"],
        ),
        (&["--cpus", "0.001"], &["Range of CPUs is from 0.01 to"]),
        (
            &["--cpuset-cpus", "9999"],
            &["Requested CPUs are not available - requested 9999"],
        ),
        (
            &["--cpuset-cpus", "1-0"],
            &["invalid value 1-0 for cpuset cpus"],
        ),
    ];
    for (flags, wanted) in cases {
        let err = usage_error(flags);
        for w in *wanted {
            assert!(err.contains(w), "{flags:?}: want {w:?} in:\n{err}");
        }
    }
}

/// Needs the sandbox's cgroup limits (issue 7): a RUN that allocates 200 MiB under
/// `--memory 64m` is killed by the OOM killer inside its own cgroup, and the build says so.
#[test]
fn oom_killed_run_reports_out_of_memory() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    // dd allocates and fills one 200 MiB block: more than memory + swap (64m + 64m).
    let ctx = context("RUN echo allocating && dd if=/dev/zero of=/dev/null bs=200M count=1\n");
    let out = build(root.path(), ctx.path(), &env.base, &["--memory", "64m"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("was killed: out of memory (limit 64 MiB)"),
        "{err}"
    );
    assert!(
        err.contains("process \"/bin/sh -c echo allocating"),
        "{err}"
    );
    assert!(!err.contains("exit code: 137"), "{err}");
    // Inside BuildKit's box, with the failing line and the step's output.
    assert!(err.contains(">>> RUN echo allocating"), "{err}");
    assert!(err.contains("allocating"), "{err}");
}

/// Needs the sandbox's cgroup limits (issue 7): `--pids-limit` caps the processes of a RUN.
/// The same step passes without the limit, so the failure is the limit's.
#[test]
fn pids_limit_caps_the_processes_of_a_run() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let ctx = context(
        "RUN i=0; while [ $i -lt 48 ]; do sleep 2 & i=$((i+1)); done; wait; echo all started\n",
    );
    let free = build(root.path(), ctx.path(), &env.base, &[]);
    assert_ok(&free);
    let capped = build(
        root.path(),
        ctx.path(),
        &env.base,
        &["--no-cache", "--pids-limit", "16"],
    );
    let err = stderr(&capped);
    assert_eq!(capped.status.code(), Some(1), "{err}");
    assert!(err.contains("did not complete successfully"), "{err}");
    assert!(err.contains("fork"), "{err}");
}

/// Needs the sandbox's rlimits and /etc/hosts entries (issue 7).
#[test]
fn ulimit_and_add_host_reach_the_run() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let output = format!("type=local,dest={}", dest.path().display());
    let ctx =
        context("RUN ulimit -Sn > /soft && ulimit -Hn > /hard && cat /etc/hosts > /hosts.txt\n");
    let out = build(
        root.path(),
        ctx.path(),
        &env.base,
        &[
            "--ulimit",
            "nofile=100:200",
            "--add-host",
            "db.internal:10.9.8.7",
            "--add-host",
            "v6host=[fd00::1]",
            "--output",
            &output,
        ],
    );
    assert_ok(&out);
    let read = |f: &str| fs::read_to_string(dest.path().join(f)).unwrap();
    assert_eq!(read("soft").trim(), "100");
    assert_eq!(read("hard").trim(), "200");
    let hosts = read("hosts.txt");
    let has = |ip: &str, name: &str| {
        hosts.lines().any(|l| {
            let mut w = l.split_whitespace();
            w.next() == Some(ip) && w.any(|n| n == name)
        })
    };
    assert!(has("10.9.8.7", "db.internal"), "{hosts}");
    assert!(has("fd00::1", "v6host"), "{hosts}");
}
