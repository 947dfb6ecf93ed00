//! Isolation: the process, its identity, network, devices, descriptors, limits, signals and
//! error reports.

use super::support::*;
use rbuild_sandbox::{ExitStatus, Network, Rootfs, SandboxError};
use std::fs;
use std::time::{Duration, Instant};

pub fn echo_and_exit_code(c: &Ctx) -> TestResult {
    let o = c.sh("echo hello; echo oops >&2; echo world; exit 7")?;
    check!(o.status == ExitStatus::Code(7), "status {:?}", o.status);
    check!(o.stdout == "hello\nworld\n", "stdout {:?}", o.stdout);
    check!(o.stderr == "oops\n", "stderr {:?}", o.stderr);
    Ok(())
}

pub fn pid1_and_hostname(c: &Ctx) -> TestResult {
    let o = c.sh("echo $$; hostname; cat /etc/hosts")?;
    ok_out(&o)?;
    let lines: Vec<&str> = o.stdout.lines().collect();
    check!(lines.first() == Some(&"1"), "pid: {:?}", o.stdout);
    check!(
        lines.get(1) == Some(&"buildkitsandbox"),
        "hostname: {:?}",
        o.stdout
    );
    check!(
        o.stdout.contains("127.0.0.1\tlocalhost buildkitsandbox"),
        "hosts: {:?}",
        o.stdout
    );
    Ok(())
}

pub fn host_invisible_and_writes_go_up(c: &Ctx) -> TestResult {
    let marker =
        std::env::temp_dir().join(format!("rbuild-sandbox-host-marker-{}", std::process::id()));
    fs::write(&marker, "x").map_err(|e| e.to_string())?;
    let (spec, upper) = c.spec(&[
        "sh",
        "-c",
        &format!(
            "test ! -e {m} && echo new > /newfile && echo changed > /bin/added && rm /etc/passwd",
            m = marker.display()
        ),
    ]);
    let o = c.run(&spec).map_err(|e| e.to_string());
    let _ = fs::remove_file(&marker);
    ok_out(&o?)?;
    check!(
        fs::read_to_string(upper.join("newfile")).ok().as_deref() == Some("new\n"),
        "newfile not in upperdir"
    );
    check!(
        upper.join("bin/added").exists(),
        "bin/added not in upperdir"
    );
    check!(
        !c.base.join("newfile").exists() && !c.base.join("bin/added").exists(),
        "write reached the lowerdir"
    );
    check!(c.etc.join("etc/passwd").exists(), "rm reached the lowerdir");
    let wh =
        fs::symlink_metadata(upper.join("etc/passwd")).map_err(|e| format!("no whiteout: {e}"))?;
    use std::os::unix::fs::FileTypeExt;
    check!(
        wh.file_type().is_char_device(),
        "etc/passwd in upper is not a whiteout"
    );
    Ok(())
}

pub fn proc_caps_and_masks(c: &Ctx) -> TestResult {
    let o = c.sh("cat /proc/self/status; test ! -s /proc/kcore && echo kcore-masked; touch /sys/x 2>/dev/null || echo sys-ro; echo 1 > /proc/sys/kernel/domainname 2>/dev/null || echo procsys-ro; ls /dev")?;
    ok_out(&o)?;
    for want in [
        "CapBnd:\t00000000a80425fb",
        "CapEff:\t00000000a80425fb",
        "CapInh:\t0000000000000000",
        "NoNewPrivs:\t0",
        "Seccomp:\t2",
        "kcore-masked",
        "sys-ro",
        "procsys-ro",
        "urandom",
        "pts",
        "shm",
    ] {
        check!(
            o.stdout.contains(want),
            "missing {want:?} in {:?}",
            o.stdout
        );
    }
    Ok(())
}

pub fn user_resolution(c: &Ctx) -> TestResult {
    let (mut spec, _) = c.spec(&["id"]);
    spec.user = "app".into();
    let o = c.run(&spec).map_err(|e| e.to_string())?;
    ok_out(&o)?;
    for want in ["uid=1000(app)", "gid=1000(app)", "10(wheel)", "2000(extra)"] {
        check!(
            o.stdout.contains(want),
            "id for app: missing {want:?} in {:?}",
            o.stdout
        );
    }
    spec.user = "app:extra".into();
    let o = c.run(&spec).map_err(|e| e.to_string())?;
    check!(
        o.stdout.contains("uid=1000(app) gid=2000(extra)"),
        "id for app:extra: {:?}",
        o.stdout
    );
    spec.user = "4242:4343".into();
    let o = c.run(&spec).map_err(|e| e.to_string())?;
    check!(
        o.stdout.contains("uid=4242") && o.stdout.contains("gid=4343"),
        "id for 4242:4343: {:?}",
        o.stdout
    );
    let (mut home, _) = c.spec(&["sh", "-c", "echo $HOME; grep CapEff /proc/self/status"]);
    home.user = "app".into();
    let o = c.run(&home).map_err(|e| e.to_string())?;
    check!(
        o.stdout.starts_with("/home/app\n") && o.stdout.contains("CapEff:\t0000000000000000"),
        "app HOME/caps: {:?}",
        o.stdout
    );
    spec.user = "nobody".into();
    match c.run(&spec) {
        Err(SandboxError::User(m)) => check!(m.contains("nobody"), "message {m:?}"),
        other => {
            return Err(format!(
                "unknown user: expected a User error, got {:?}",
                other.map(|o| o.status)
            ))
        }
    }
    Ok(())
}

fn interfaces(net_dev: &str) -> Vec<String> {
    let mut v: Vec<String> = net_dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|s| s.trim().to_string())
        .collect();
    v.sort();
    v
}

pub fn network_modes(c: &Ctx) -> TestResult {
    let (mut spec, _) = c.spec(&[
        "sh",
        "-c",
        "cat /proc/net/dev; echo flags=$(cat /sys/class/net/lo/flags)",
    ]);
    spec.network = Network::None;
    let o = c.run(&spec).map_err(|e| e.to_string())?;
    ok_out(&o)?;
    check!(
        interfaces(o.stdout.split("flags=").next().unwrap_or("")) == vec!["lo".to_string()],
        "none: {:?}",
        o.stdout
    );
    let flags = o
        .stdout
        .split("flags=0x")
        .nth(1)
        .map(str::trim)
        .unwrap_or("");
    let flags = u32::from_str_radix(flags, 16).map_err(|e| format!("flags {flags:?}: {e}"))?;
    check!(flags & 1 == 1, "lo is not up: flags {flags:#x}");
    spec.network = Network::Host;
    spec.args = vec!["cat".into(), "/proc/net/dev".into()];
    let o = c.run(&spec).map_err(|e| e.to_string())?;
    let host = interfaces(&fs::read_to_string("/proc/net/dev").map_err(|e| e.to_string())?);
    check!(
        interfaces(&o.stdout) == host,
        "host: {:?} vs {:?}",
        interfaces(&o.stdout),
        host
    );
    check!(
        host.len() > 1,
        "the host has only lo, so host networking is not really tested"
    );
    // The private network: its own namespace with lo and slirp4netns's tap0, a generated
    // resolv.conf and extra hosts.
    spec.network = Network::Private;
    spec.extra_hosts = vec![rbuild_sandbox::HostEntry {
        name: "db.internal".into(),
        ip: "192.0.2.7".into(),
    }];
    spec.args = vec![
        "sh".into(),
        "-c".into(),
        "cat /proc/net/dev; echo ns=$(readlink /proc/self/ns/net); grep db.internal /etc/hosts; ip route 2>/dev/null || route -n".into(),
    ];
    let o = c.run(&spec).map_err(|e| e.to_string())?;
    ok_out(&o)?;
    let ifaces = interfaces(o.stdout.split("ns=").next().unwrap_or(""));
    check!(
        ifaces == vec!["lo".to_string(), "tap0".to_string()],
        "private: {ifaces:?} in {:?}",
        o.stdout
    );
    let host_ns = fs::read_link("/proc/self/ns/net").map_err(|e| e.to_string())?;
    check!(
        !o.stdout.contains(&format!("ns={}", host_ns.display())),
        "private network shares the host's namespace {host_ns:?}: {:?}",
        o.stdout
    );
    check!(
        o.stdout.contains("192.0.2.7\tdb.internal"),
        "extra host missing: {:?}",
        o.stdout
    );
    check!(
        o.stdout.contains("10.0.2.2"),
        "no default route via slirp4netns's gateway: {:?}",
        o.stdout
    );
    // Without slirp4netns the error says what to install.
    std::env::set_var("RBUILD_SLIRP4NETNS", "/nonexistent/slirp4netns");
    let r = c.run(&spec);
    std::env::remove_var("RBUILD_SLIRP4NETNS");
    match r {
        Err(e @ SandboxError::NetworkHelperMissing) => check!(
            e.to_string().contains("apt-get install slirp4netns"),
            "message: {e}"
        ),
        other => {
            return Err(format!(
                "missing slirp4netns: expected NetworkHelperMissing, got {:?}",
                other.map(|o| o.status)
            ))
        }
    }
    Ok(())
}

/// Device nodes: the standard ones work; a node made by mknod (in the rootfs or in /dev), or
/// one already in a lower layer, cannot be opened, even by root with CAP_MKNOD.
pub fn devices_closed(c: &Ctx) -> TestResult {
    let o = c.sh(
        "head -c 4 /dev/zero | wc -c; echo x > /dev/null && echo null-ok; \
         mknod /tmp/zero c 1 5 && echo mknod-ok; head -c 1 /tmp/zero >/dev/null 2>&1 || echo rootfs-denied; \
         mknod /dev/zero2 c 1 5 && head -c 1 /dev/zero2 >/dev/null 2>&1 || echo dev-denied; \
         head -c 1 /lowerdev >/dev/null 2>&1 || echo lower-denied",
    )?;
    ok_out(&o)?;
    for want in [
        "4\n",
        "null-ok",
        "mknod-ok",
        "rootfs-denied",
        "dev-denied",
        "lower-denied",
    ] {
        check!(
            o.stdout.contains(want),
            "missing {want:?} in {:?}",
            o.stdout
        );
    }
    Ok(())
}

/// Limits: a cgroup per run (OOM reported as such, pids capped) and rlimits.
pub fn limits_apply(c: &Ctx) -> TestResult {
    let (mut spec, _) = c.spec(&["dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"]);
    spec.limits.memory = Some(64 << 20);
    let o = c.run(&spec).map_err(|e| e.to_string())?;
    check!(
        o.status
            == ExitStatus::OomKilled {
                limit: Some(64 << 20)
            },
        "200 MiB under a 64 MiB limit: {:?} {:?}",
        o.status,
        o.stderr
    );
    check!(
        o.status.to_string() == "killed: out of memory (limit 64 MiB)",
        "{}",
        o.status
    );
    // The same step fits without the limit, so the limit is what killed it.
    spec.limits.memory = None;
    ok_out(&c.run(&spec).map_err(|e| e.to_string())?)?;

    let (mut spec, _) = c.spec(&[
        "sh",
        "-c",
        "n=0; for i in $(seq 30); do sleep 2 & n=$((n+1)); done 2>/dev/null; echo forked; wait",
    ]);
    spec.limits.pids = Some(10);
    let o = c.run(&spec).map_err(|e| e.to_string())?;
    check!(
        o.stderr.contains("fork") || !o.status.success(),
        "30 children under --pids-limit 10: {:?} {:?} {:?}",
        o.status,
        o.stdout,
        o.stderr
    );

    let (mut spec, _) = c.spec(&["sh", "-c", "ulimit -n; ulimit -Hn"]);
    spec.limits.ulimits =
        vec![rbuild_sandbox::Ulimit::parse("nofile=1024:2048").map_err(|e| e.to_string())?];
    let o = c.run(&spec).map_err(|e| e.to_string())?;
    ok_out(&o)?;
    check!(o.stdout == "1024\n2048\n", "ulimit: {:?}", o.stdout);
    Ok(())
}

/// Descriptors the caller leaves open (not close-on-exec) never reach the command.
pub fn fds_closed(c: &Ctx) -> TestResult {
    use std::os::fd::AsRawFd;
    let dir = fs::File::open("/").map_err(|e| e.to_string())?;
    // Clear close-on-exec, as a shell's `exec 9</` would leave it.
    // SAFETY: F_SETFD on a descriptor we own.
    unsafe { libc::fcntl(dir.as_raw_fd(), libc::F_SETFD, 0) };
    let fd = dir.as_raw_fd();
    let o = c.sh(&format!(
        "ls /proc/self/fd/{fd}/ 2>/dev/null && echo leaked; ls /proc/self/fd | tr '\\n' ' '"
    ))?;
    drop(dir);
    ok_out(&o)?;
    check!(
        !o.stdout.contains("leaked"),
        "fd {fd} leaked: {:?}",
        o.stdout
    );
    let fds: Vec<&str> = o.stdout.split_whitespace().collect();
    // 0 1 2 and the directory ls itself opened.
    check!(fds.len() <= 4, "open descriptors in the command: {fds:?}");
    Ok(())
}

pub fn env_and_cwd(c: &Ctx) -> TestResult {
    let (mut spec, upper) = c.spec(&["sh", "-c", "echo $FOO; pwd; echo $HOME"]);
    spec.env.push("FOO=bar baz".into());
    spec.cwd = "/work/sub".into();
    let o = c.run(&spec).map_err(|e| e.to_string())?;
    ok_out(&o)?;
    check!(
        o.stdout == "bar baz\n/work/sub\n/root\n",
        "stdout {:?}",
        o.stdout
    );
    check!(
        upper.join("work/sub").is_dir(),
        "cwd not created in the upperdir"
    );
    Ok(())
}

pub fn killed_reports_signal(c: &Ctx) -> TestResult {
    let (spec, _) = c.spec(&["sleep", "3141"]);
    let killer = std::thread::spawn(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
                if fs::read(e.path().join("cmdline")).ok().as_deref() == Some(b"sleep\x003141\x00")
                {
                    if let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() {
                        // SAFETY: plain kill(2).
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                        return true;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    });
    let o = c.run(&spec).map_err(|e| e.to_string())?;
    check!(
        killer.join().unwrap_or(false),
        "never found the sleep process"
    );
    check!(
        o.status == ExitStatus::Signal(libc::SIGKILL),
        "status {:?}",
        o.status
    );
    Ok(())
}

pub fn missing_executable(c: &Ctx) -> TestResult {
    let (spec, _) = c.spec(&["no-such-command", "x"]);
    match c.run(&spec) {
        Err(SandboxError::Exec(m)) => {
            check!(
                m == "exec \"no-such-command\": no such file or directory",
                "message {m:?}"
            )
        }
        other => {
            return Err(format!(
                "expected Exec error, got {:?}",
                other.map(|o| o.status)
            ))
        }
    }
    Ok(())
}

pub fn setup_error_names_step(c: &Ctx) -> TestResult {
    let (mut spec, _) = c.spec(&["true"]);
    if let Rootfs::Overlay { lowerdirs, .. } = &mut spec.rootfs {
        lowerdirs.insert(0, c.tmp.path().join("does-not-exist"));
    }
    match c.run(&spec) {
        Err(SandboxError::Setup(m)) => check!(
            m.contains("lowerdir") && m.contains("ENOENT"),
            "message {m:?}"
        ),
        other => {
            return Err(format!(
                "expected Setup error, got {:?}",
                other.map(|o| o.status)
            ))
        }
    }
    Ok(())
}
