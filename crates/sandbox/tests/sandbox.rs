//! Integration tests against real namespaces and overlayfs. A `harness = false` binary: its main
//! doubles as the sandbox helper, so `current_exe()` can be handed to `Sandbox::new`.
//! Needs root; without it the tests are skipped loudly, unless RBUILD_REQUIRE_ROOT=1.

// Sets up and inspects namespaces with raw syscalls, as the crate under test does.
#![allow(unsafe_code)]

use rbuild_sandbox::{
    BindMount, ExitStatus, Mount, Network, OutputStream, Rootfs, RunSpec, Sandbox, SandboxError,
};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

struct Ctx {
    sandbox: Sandbox,
    tmp: tempfile::TempDir,
    /// busybox layer (bottom).
    base: PathBuf,
    /// passwd/group layer (on top of base).
    etc: PathBuf,
    counter: std::sync::atomic::AtomicU32,
}

struct Out {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Ctx {
    /// A fresh upper/work pair.
    fn fresh_upper(&self) -> (PathBuf, PathBuf) {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = self.tmp.path().join(format!("run{n}"));
        let (upper, work) = (dir.join("upper"), dir.join("work"));
        fs::create_dir_all(&upper).unwrap();
        fs::create_dir_all(&work).unwrap();
        (upper, work)
    }

    fn spec(&self, args: &[&str]) -> (RunSpec, PathBuf) {
        let (upperdir, workdir) = self.fresh_upper();
        let spec = RunSpec {
            rootfs: Rootfs::Overlay {
                lowerdirs: vec![self.etc.clone(), self.base.clone()],
                upperdir: upperdir.clone(),
                workdir,
            },
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![PATH_ENV.to_string()],
            cwd: "/".to_string(),
            user: String::new(),
            hostname: "buildkitsandbox".to_string(),
            network: Network::Host,
            security: Default::default(),
            limits: Default::default(),
            extra_hosts: Vec::new(),
            extra_mounts: Vec::new(),
            hosts_file: None,
            resolv_conf: None,
        };
        (spec, upperdir)
    }

    fn run(&self, spec: &RunSpec) -> Result<Out, SandboxError> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let status = self.sandbox.run(spec, &mut |stream, line| match stream {
            OutputStream::Stdout => stdout.extend_from_slice(line),
            OutputStream::Stderr => stderr.extend_from_slice(line),
        })?;
        Ok(Out {
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    fn sh(&self, script: &str) -> Result<Out, String> {
        let (spec, _) = self.spec(&["sh", "-c", script]);
        self.run(&spec).map_err(|e| format!("run failed: {e}"))
    }
}

type TestResult = Result<(), String>;
type TestFn = fn(&Ctx) -> TestResult;

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

fn ok_out(o: &Out) -> TestResult {
    check!(
        o.status.success(),
        "status {:?}, stdout {:?}, stderr {:?}",
        o.status,
        o.stdout,
        o.stderr
    );
    Ok(())
}

fn echo_and_exit_code(c: &Ctx) -> TestResult {
    let o = c.sh("echo hello; echo oops >&2; echo world; exit 7")?;
    check!(o.status == ExitStatus::Code(7), "status {:?}", o.status);
    check!(o.stdout == "hello\nworld\n", "stdout {:?}", o.stdout);
    check!(o.stderr == "oops\n", "stderr {:?}", o.stderr);
    Ok(())
}

fn pid1_and_hostname(c: &Ctx) -> TestResult {
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

fn host_invisible_and_writes_go_up(c: &Ctx) -> TestResult {
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

fn proc_caps_and_masks(c: &Ctx) -> TestResult {
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

fn user_resolution(c: &Ctx) -> TestResult {
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

fn network_modes(c: &Ctx) -> TestResult {
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
fn devices_closed(c: &Ctx) -> TestResult {
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
fn limits_apply(c: &Ctx) -> TestResult {
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
fn fds_closed(c: &Ctx) -> TestResult {
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

fn env_and_cwd(c: &Ctx) -> TestResult {
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

fn killed_reports_signal(c: &Ctx) -> TestResult {
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

fn missing_executable(c: &Ctx) -> TestResult {
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

fn setup_error_names_step(c: &Ctx) -> TestResult {
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

fn many_lowerdirs(c: &Ctx) -> TestResult {
    let dir = c.tmp.path().join("many");
    let mut lowers = Vec::new();
    for i in 0..150 {
        let l = dir.join(format!("layer-{i:03}-{}", "x".repeat(100)));
        fs::create_dir_all(&l).map_err(|e| e.to_string())?;
        fs::write(l.join(format!("f{i}")), format!("{i}\n")).map_err(|e| e.to_string())?;
        fs::write(l.join("which"), format!("{i}\n")).map_err(|e| e.to_string())?;
        lowers.push(l);
    }
    lowers.push(c.base.clone());
    let (mut spec, _) = c.spec(&["sh", "-c", "cat /which /f0 /f149"]);
    if let Rootfs::Overlay { lowerdirs, .. } = &mut spec.rootfs {
        *lowerdirs = lowers;
    }
    let o = c.run(&spec).map_err(|e| e.to_string())?;
    ok_out(&o)?;
    check!(o.stdout == "0\n0\n149\n", "stdout {:?}", o.stdout);
    Ok(())
}

fn scratch_and_extra_mounts(c: &Ctx) -> TestResult {
    let (mut spec, upper) = c.spec(&[
        "/bin/busybox",
        "sh",
        "-c",
        "/bin/busybox cat /data/in; /bin/busybox echo out > /rw/out; /bin/busybox touch /data/nope 2>/dev/null || /bin/busybox echo ro-ok",
    ]);
    if let Rootfs::Overlay { lowerdirs, .. } = &mut spec.rootfs {
        lowerdirs.clear();
    }
    let (ro, rw) = (c.tmp.path().join("ro-src"), c.tmp.path().join("rw-src"));
    fs::create_dir_all(&ro).map_err(|e| e.to_string())?;
    fs::create_dir_all(&rw).map_err(|e| e.to_string())?;
    fs::write(ro.join("in"), "data\n").map_err(|e| e.to_string())?;
    spec.extra_mounts = vec![
        BindMount {
            source: "/bin/busybox".into(),
            target: "/bin/busybox".into(),
            readonly: true,
        }
        .into(),
        BindMount {
            source: ro.clone(),
            target: "/data".into(),
            readonly: true,
        }
        .into(),
        BindMount {
            source: rw.clone(),
            target: "/rw".into(),
            readonly: false,
        }
        .into(),
    ];
    let o = c.run(&spec).map_err(|e| e.to_string())?;
    ok_out(&o)?;
    check!(
        o.stdout == "data\nro-ok\n",
        "stdout {:?} stderr {:?}",
        o.stdout,
        o.stderr
    );
    check!(
        fs::read_to_string(rw.join("out")).ok().as_deref() == Some("out\n"),
        "rw mount write missing"
    );
    check!(!ro.join("nope").exists(), "ro mount was written");
    check!(
        upper.join("bin/busybox").is_file(),
        "mount target not created in upper"
    );
    Ok(())
}

fn tree_tmpfs_and_file_mounts(c: &Ctx) -> TestResult {
    let (mut spec, upper) = c.spec(&[
        "/bin/sh",
        "-c",
        "cat /t/in; (touch /t/x 2>/dev/null && echo rw) || echo ro; echo w > /o/new; \
         ls -A /tmpfs | wc -l; grep -c ' /tmpfs tmpfs ' /proc/mounts; cat /s/sec; stat -c '%a %u %g' /s/sec",
    ]);
    let tree = c.tmp.path().join("tree");
    fs::create_dir_all(tree.join("sub")).map_err(|e| e.to_string())?;
    fs::write(tree.join("sub/in"), "tree\n").map_err(|e| e.to_string())?;
    // An escape attempt: resolved inside the tree, it is tree/sub.
    symlink("../../../../../sub", tree.join("up")).map_err(|e| e.to_string())?;
    // A writable overlay tree whose writes go to a throwaway upper.
    let (o_upper, o_work) = (c.tmp.path().join("o-upper"), c.tmp.path().join("o-work"));
    fs::create_dir_all(&o_upper).map_err(|e| e.to_string())?;
    fs::create_dir_all(&o_work).map_err(|e| e.to_string())?;
    spec.extra_mounts = vec![
        Mount::Tree {
            source: Rootfs::Dir(tree.clone()),
            selector: "/up".into(),
            target: "/t".into(),
            readonly: true,
        },
        Mount::Tree {
            source: Rootfs::Overlay {
                lowerdirs: vec![tree.clone()],
                upperdir: o_upper.clone(),
                workdir: o_work.clone(),
            },
            selector: "sub".into(),
            target: "/o".into(),
            readonly: false,
        },
        Mount::Tmpfs {
            target: "/tmpfs".into(),
            size: Some(1 << 20),
        },
        Mount::File {
            target: "/s/sec".into(),
            data: b"hush\n".to_vec(),
            mode: 0o440,
            uid: 1,
            gid: 2,
        },
    ];
    let o = c.run(&spec).map_err(|e| e.to_string())?;
    ok_out(&o)?;
    check!(
        o.stdout == "tree\nro\n0\n1\nhush\n440 1 2\n",
        "stdout {:?} stderr {:?}",
        o.stdout,
        o.stderr
    );
    check!(
        !tree.join("sub/new").exists(),
        "overlay tree write reached the lower"
    );
    check!(
        o_upper.join("sub/new").exists(),
        "overlay tree write not in its upper"
    );
    check!(upper.join("s").is_dir(), "file mount target not created");
    check!(
        fs::read(upper.join("s/sec"))
            .map(|d| d.is_empty())
            .unwrap_or(false),
        "secret bytes reached the rootfs upper"
    );
    Ok(())
}

fn dir_rootfs_and_given_files(c: &Ctx) -> TestResult {
    let root = c.tmp.path().join("dir-rootfs");
    copy_tree(&c.base, &root)?;
    let hosts = c.tmp.path().join("my-hosts");
    let resolv = c.tmp.path().join("my-resolv");
    fs::write(&hosts, "10.0.0.1 special\n").map_err(|e| e.to_string())?;
    fs::write(&resolv, "nameserver 10.9.9.9\n").map_err(|e| e.to_string())?;
    let (mut spec, _) = c.spec(&[
        "sh",
        "-c",
        "cat /etc/hosts /etc/resolv.conf; echo x > /etc/hosts 2>/dev/null || echo hosts-ro; \
         mknod /z c 1 5 && head -c 1 /z >/dev/null 2>&1 || echo dir-nodev",
    ]);
    spec.rootfs = Rootfs::Dir(root);
    spec.hosts_file = Some(hosts);
    spec.resolv_conf = Some(resolv);
    let o = c.run(&spec).map_err(|e| e.to_string())?;
    ok_out(&o)?;
    check!(
        o.stdout == "10.0.0.1 special\nnameserver 10.9.9.9\nhosts-ro\ndir-nodev\n",
        "stdout {:?}",
        o.stdout
    );
    Ok(())
}

fn parallel_runs(c: &Ctx) -> TestResult {
    // Concurrent sandboxes share the scratch mountpoint; each mounts on it in its own namespace.
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| s.spawn(move || c.sh(&format!("sleep 0.2; echo {i} > /mine; cat /mine"))))
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            let o = h.join().map_err(|_| "thread panicked".to_string())??;
            ok_out(&o)?;
            check!(o.stdout == format!("{i}\n"), "run {i}: {:?}", o.stdout);
        }
        Ok(())
    })
}

fn copy_tree(from: &Path, to: &Path) -> TestResult {
    fs::create_dir_all(to).map_err(|e| e.to_string())?;
    for e in fs::read_dir(from).map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ft = e.file_type().map_err(|e| e.to_string())?;
        if ft.is_symlink() {
            symlink(fs::read_link(&src).map_err(|e| e.to_string())?, &dst)
                .map_err(|e| e.to_string())?;
        } else if ft.is_dir() {
            copy_tree(&src, &dst)?;
        } else if ft.is_file() {
            fs::copy(&src, &dst).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn ensure_busybox() -> Result<(), String> {
    if Path::new("/bin/busybox").exists() {
        return Ok(());
    }
    for attempt in 0..30 {
        let st = std::process::Command::new("apt-get")
            .args(["install", "-y", "busybox-static"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("apt-get: {e}"))?;
        if st.success() && Path::new("/bin/busybox").exists() {
            return Ok(());
        }
        eprintln!(
            "apt-get install busybox-static failed (attempt {attempt}), retrying (apt lock?)"
        );
        std::thread::sleep(Duration::from_secs(5));
    }
    Err("could not install busybox-static".into())
}

fn build_layers(tmp: &Path) -> Result<(PathBuf, PathBuf), String> {
    let base = tmp.join("base");
    let bin = base.join("bin");
    fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    fs::copy("/bin/busybox", bin.join("busybox")).map_err(|e| e.to_string())?;
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .map_err(|e| e.to_string())?;
    for name in String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|n| !n.is_empty() && *n != "busybox")
    {
        symlink("busybox", bin.join(name)).map_err(|e| e.to_string())?;
    }
    for d in ["tmp", "root", "home/app"] {
        fs::create_dir_all(base.join(d)).map_err(|e| e.to_string())?;
    }
    // A world-readable character device in a lower layer, as a hostile base image could ship
    // (1:5 is /dev/zero: harmless should the sandbox ever let it open).
    nix::sys::stat::mknod(
        &base.join("lowerdev"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 5),
    )
    .map_err(|e| format!("mknod lowerdev: {e}"))?;
    let etc = tmp.join("etc-layer");
    fs::create_dir_all(etc.join("etc")).map_err(|e| e.to_string())?;
    fs::write(
        etc.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .map_err(|e| e.to_string())?;
    fs::write(
        etc.join("etc/group"),
        "root:x:0:\nwheel:x:10:root,app\napp:x:1000:\nextra:x:2000:app\n",
    )
    .map_err(|e| e.to_string())?;
    Ok((base, etc))
}

fn mountinfo() -> Vec<String> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    // Drop the mount ids so the comparison is about what is mounted where.
    let mut v: Vec<String> = text
        .lines()
        .map(|l| l.split(' ').skip(2).collect::<Vec<_>>().join(" "))
        .collect();
    v.sort();
    v
}

fn main() {
    rbuild_sandbox::helper_main_if_requested();

    if !nix::unistd::geteuid().is_root() {
        if std::env::var("RBUILD_REQUIRE_ROOT").as_deref() == Ok("1") {
            eprintln!("sandbox tests need root and RBUILD_REQUIRE_ROOT=1 is set: FAILED");
            std::process::exit(1);
        }
        eprintln!(
            "SKIPPED: sandbox tests need root (set RBUILD_REQUIRE_ROOT=1 to make this a failure)"
        );
        return;
    }
    if let Err(e) = ensure_busybox() {
        eprintln!("FAILED: {e}");
        std::process::exit(1);
    }
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let tmp = tempfile::Builder::new()
        .prefix("rbuild-sandbox-test")
        .tempdir()
        .expect("tempdir");
    let (base, etc) = build_layers(tmp.path()).expect("build layers");
    let exe = std::env::current_exe().expect("current_exe");
    let ctx = Ctx {
        sandbox: Sandbox::new(exe),
        tmp,
        base,
        etc,
        counter: 0.into(),
    };

    let before = mountinfo();
    let tests: &[(&str, TestFn)] = &[
        ("echo_and_exit_code", echo_and_exit_code),
        ("pid1_and_hostname", pid1_and_hostname),
        (
            "host_invisible_and_writes_go_up",
            host_invisible_and_writes_go_up,
        ),
        ("proc_caps_and_masks", proc_caps_and_masks),
        ("user_resolution", user_resolution),
        ("network_modes", network_modes),
        ("devices_closed", devices_closed),
        ("fds_closed", fds_closed),
        ("limits_apply", limits_apply),
        ("env_and_cwd", env_and_cwd),
        ("killed_reports_signal", killed_reports_signal),
        ("missing_executable", missing_executable),
        ("setup_error_names_step", setup_error_names_step),
        ("many_lowerdirs", many_lowerdirs),
        ("scratch_and_extra_mounts", scratch_and_extra_mounts),
        ("tree_tmpfs_and_file_mounts", tree_tmpfs_and_file_mounts),
        ("dir_rootfs_and_given_files", dir_rootfs_and_given_files),
        ("parallel_runs", parallel_runs),
    ];
    let mut failed = 0;
    let mut ran = 0;
    for (name, f) in tests {
        if filter.as_deref().is_some_and(|flt| !name.contains(flt)) {
            continue;
        }
        ran += 1;
        let start = Instant::now();
        match f(&ctx) {
            Ok(()) => println!("test {name} ... ok ({} ms)", start.elapsed().as_millis()),
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED: {e}");
            }
        }
    }
    let after = mountinfo();
    ran += 1;
    if before == after {
        println!("test no_mounts_left_on_host ... ok");
    } else {
        failed += 1;
        let new: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
        println!("test no_mounts_left_on_host ... FAILED: new mounts {new:?}");
    }
    println!(
        "\ntest result: {}. {} passed; {failed} failed",
        if failed == 0 { "ok" } else { "FAILED" },
        ran - failed
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
