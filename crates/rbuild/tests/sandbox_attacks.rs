//! The sandbox attack suite: each test is a Dockerfile an attacker could send in a pull request,
//! built by the real rbuild binary, asserting that the attack fails and the host is untouched.
//! Where a test could pass for the wrong reason, a positive control (host network, or
//! `--security=insecure` with its entitlement) shows that the same probe does detect the leak.
//!
//! Nothing here writes where a failing sandbox could hurt the host: /proc and /sys are probed
//! with access(W_OK), which a read-only mount answers with EROFS.
//!
//! Every attack runs twice (`both_modes!`): as root and as the rootless test user
//! (`common::rootless`), with the same expectations; where rootless legitimately differs (a user
//! namespace cannot create device nodes at all) the test asserts the rootless behaviour and
//! says why.
//!
//! Safety: the only device read is one sector of a loop device the test makes over its own temp
//! file. The network attacks are in `sandbox_network.rs`; the helpers both share (the probe,
//! contexts, running rbuild) in `common/attack.rs`.

mod common;

use common::attack::{context, has, probe, text, Mode, PROBE_DOCKERFILE};
use common::env;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A loop device over a temp file whose first sector holds a marker; detached on drop.
struct Loop {
    dev: String,
    minor: u32,
    marker: String,
    _file: tempfile::NamedTempFile,
}

impl Loop {
    fn new() -> Loop {
        let marker = format!("RBUILD-LOOP-MARKER-{}", std::process::id());
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let mut sector = marker.clone().into_bytes();
        sector.resize(1 << 20, b'.');
        file.write_all(&sector).unwrap();
        file.flush().unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file.path())
            .output()
            .expect("losetup");
        assert!(out.status.success(), "losetup: {}", text(&out));
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let minor = dev
            .trim_start_matches("/dev/loop")
            .parse()
            .unwrap_or_else(|_| panic!("loop device name {dev:?}"));
        Loop {
            dev,
            minor,
            marker,
            _file: file,
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

fn mknod_of_a_host_block_device_cannot_be_read(mode: Mode) {
    let lo = Loop::new();
    let script = format!(
        "mknod /tmp/d b 7 {} && echo n\"\"ode-made; head -c 512 /tmp/d; echo \" r\"\"c=$?\"",
        lo.minor
    );
    let ctx = context(&format!("ARG BASE\nFROM $BASE\nRUN {script}\n"));
    let t = mode.build_ok(ctx.path(), &[]);
    if mode == Mode::Rootless {
        // Rootless: the kernel refuses mknod of a device in a user namespace (no CAP_MKNOD in
        // the initial one), so the attack stops a step earlier; and `--security=insecure` is
        // only root in that namespace: no control can read the disk either.
        assert!(!has(&t, "node-made"), "mknod in a user namespace:\n{t}");
        assert!(has(&t, "rc=1"), "{t}");
        assert!(!has(&t, &lo.marker), "host disk data leaked:\n{t}");
        let ctx = context(&format!(
            "ARG BASE\nFROM $BASE\nRUN --security=insecure {script}\n"
        ));
        let t = mode.build_ok(ctx.path(), &["--allow", "security.insecure"]);
        assert!(!has(&t, "node-made"), "insecure rootless mknod:\n{t}");
        assert!(
            !has(&t, &lo.marker),
            "insecure rootless read the disk:\n{t}"
        );
        return;
    }
    assert!(
        has(&t, "node-made"),
        "mknod itself is allowed (as BuildKit):\n{t}"
    );
    assert!(has(&t, "rc=1"), "opening the node must fail:\n{t}");
    assert!(!has(&t, &lo.marker), "host disk data leaked:\n{t}");

    // Control: the insecure entitlement (privileged, as BuildKit's) can read it, so the probe
    // above really tried.
    let ctx = context(&format!(
        "ARG BASE\nFROM $BASE\nRUN --security=insecure {script}\n"
    ));
    let t = mode.build_ok(ctx.path(), &["--allow", "security.insecure"]);
    assert!(
        has(&t, &lo.marker),
        "control: insecure should read the node:\n{t}"
    );
}

fn block_device_shipped_in_a_base_image_cannot_be_read_as_nobody(mode: Mode) {
    let env = env().expect("env");
    let lo = Loop::new();
    let base = format!(
        "{}/attack/devbase:{}",
        env.registry.addr(),
        std::process::id()
    );
    let ctx = context(&format!(
        "ARG BASE\nFROM $BASE\nRUN mknod -m 666 /blk b 7 {}\n",
        lo.minor
    ));
    // The base is made by root in both modes (a rootless build cannot mknod a device).
    Mode::Root.build_ok(
        ctx.path(),
        &["--output", &format!("type=image,name={base},push=true")],
    );
    let ctx = context(&format!(
        "FROM {base}\nUSER 65534:65534\nRUN test -b /blk && echo i\"\"s-blockdev; ls -l /blk; head -c 512 /blk; echo \" r\"\"c=$?\"\n"
    ));
    let t = mode.build_ok(ctx.path(), &[]);
    if mode == Mode::Rootless {
        // Rootless, a user namespace cannot create the node, so unpacking the base leaves it
        // out (as containerd's layer apply does in a user namespace) and the build goes on.
        assert!(!has(&t, "is-blockdev"), "a device node rootless:\n{t}");
    } else {
        assert!(has(&t, "is-blockdev"), "the base must ship the node:\n{t}");
    }
    assert!(has(&t, "rc=1"), "opening the node must fail:\n{t}");
    assert!(!has(&t, &lo.marker), "host disk data leaked:\n{t}");
}

fn block_devices_reached_through_mounts_cannot_be_read(mode: Mode) {
    let lo = Loop::new();
    let n = lo.minor;
    // A node made in a cache mount (a host directory), and one in another stage's layer that a
    // bind mount brings in.
    let ctx = context(&format!(
        "ARG BASE\nFROM $BASE AS dev\nRUN mknod -m 666 /blk b 7 {n} || (echo d\"\"ev-mknod-denied; touch /blk)\n\
         FROM $BASE\n\
         RUN --mount=type=cache,target=/c mknod /c/blk b 7 {n} && test -b /c/blk && echo c\"\"ache-node; head -c 512 /c/blk; echo \" c\"\"ache-rc=$?\"\n\
         RUN --mount=type=bind,from=dev,source=/blk,target=/m test -b /m && echo b\"\"ind-node; head -c 512 /m; echo \" b\"\"ind-rc=$?\"\n"
    ));
    let t = mode.build_ok(ctx.path(), &[]);
    if mode == Mode::Rootless {
        // Rootless: neither node can be made in a user namespace (the kernel refuses mknod of
        // a device there), so the mounts bring in no device at all.
        for want in ["dev-mknod-denied", "cache-rc=1"] {
            assert!(has(&t, want), "missing {want}:\n{t}");
        }
        for not in ["cache-node", "bind-node"] {
            assert!(!has(&t, not), "{not} rootless:\n{t}");
        }
    } else {
        for want in ["cache-node", "cache-rc=1", "bind-node", "bind-rc=1"] {
            assert!(has(&t, want), "missing {want}:\n{t}");
        }
    }
    assert!(!has(&t, &lo.marker), "host disk data leaked:\n{t}");
}

fn inherited_descriptors_do_not_reach_run(mode: Mode) {
    let ctx = context(
        "ARG BASE\nFROM $BASE\nRUN ls /proc/self/fd/9/ && echo L\"\"EAKED-FD; echo f\"\"ds: $(ls /proc/self/fd)\n",
    );
    let root = tempfile::tempdir().unwrap();
    let dir = fs::File::open("/").unwrap();
    let mut cmd = mode.rbuild(root.path(), ctx.path(), &[]);
    {
        use std::os::fd::AsRawFd;
        let raw = dir.as_raw_fd();
        // SAFETY: dup2 in the child between fork and exec (async-signal-safe), as a shell's
        // `exec 9</` leaves fd 9 open without close-on-exec.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(raw, 9) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let out = cmd.output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(!has(&t, "LEAKED-FD"), "fd 9 reached the RUN step:\n{t}");
    let fds: Vec<&str> = t
        .lines()
        .find_map(|l| l.split("fds: ").nth(1))
        .unwrap_or_else(|| panic!("no fd list:\n{t}"))
        .split_whitespace()
        .collect();
    // stdio, plus the directory ls itself opened.
    assert!(
        fds.len() <= 4 && !fds.contains(&"9"),
        "descriptors in RUN: {fds:?}"
    );
}

fn host_keyrings_are_out_of_reach(mode: Mode) {
    let desc = format!("rbuild-attack-key-{}", std::process::id());
    // The key goes into the user keyring of whoever runs the build (root, or the test user).
    let mut add = match mode {
        Mode::Root => Command::new(probe()),
        Mode::Rootless => {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid",
                common::rootless::USER,
                "--regid",
                common::rootless::USER,
            ])
            .args(["--init-groups", "--"])
            .arg(probe());
            c
        }
    };
    let st = add.args(["addkey", &desc]).output().unwrap();
    assert!(has(&text(&st), "addkey=ok"), "{}", text(&st));
    let ctx = context(&format!("{PROBE_DOCKERFILE}RUN /probe readkey {desc}\n"));
    let t = mode.build_ok(ctx.path(), &[]);
    assert!(has(&t, "search_user=EPERM"), "{t}");
    assert!(!has(&t, "key-payload="), "a host key was read:\n{t}");
    // Control: without the filter (insecure) the same probe finds root's user key, so the
    // filter is what denies it; its payload still stays unreadable, because the step runs in a
    // session keyring of its own that does not possess the host's keys.
    let ctx = context(&format!(
        "{PROBE_DOCKERFILE}RUN --security=insecure /probe readkey {desc}\n"
    ));
    let t = mode.build_ok(ctx.path(), &["--allow", "security.insecure"]);
    if mode == Mode::Rootless {
        // Rootless, the step runs in a user namespace, which has user keyrings of its own
        // (Linux >= 5.3 keys them by namespace): even without the filter the host key is not
        // there.
        assert!(has(&t, "search_user=ENOKEY"), "rootless control:\n{t}");
        assert!(!has(&t, "key-payload="), "{t}");
        return;
    }
    assert!(has(&t, "search_user=ok"), "control:\n{t}");
    assert!(!has(&t, "key-payload="), "new session keyring:\n{t}");
}

fn seccomp_denies_namespaces_keys_mount_bpf_perf(mode: Mode) {
    let ctx = context(&format!(
        "{PROBE_DOCKERFILE}RUN /probe syscalls && (unshare -Urn true && echo u\"\"nshare-worked || echo u\"\"nshare-denied)\n"
    ));
    let t = mode.build_ok(ctx.path(), &[]);
    for want in [
        "keyctl=EPERM",
        "add_key=EPERM",
        "request_key=EPERM",
        "unshare_user=EPERM",
        "unshare_net=EPERM",
        "mount=EPERM",
        "bpf=EPERM",
        "perf_event_open=EPERM",
        "pivot_root=EPERM",
        "clone3=ENOSYS",
        "getpid=ok",
        "unshare-denied",
    ] {
        assert!(has(&t, want), "missing {want}:\n{t}");
    }
}

/// no_new_privs stays off, as Docker: a setuid program run under `USER` gains its owner's uid
/// (sudo works), while the step itself keeps only its user's rights.
fn setuid_programs_work_under_user(mode: Mode) {
    let ctx = context(&format!(
        "{PROBE_DOCKERFILE}RUN cp /probe /suid && chmod 4755 /suid\nUSER 65534:65534\nRUN /probe ids; /suid ids\n"
    ));
    let t = mode.build_ok(ctx.path(), &[]);
    assert!(has(&t, "uid=65534 euid=65534"), "{t}");
    assert!(
        has(&t, "uid=65534 euid=0"),
        "setuid did not work under USER:\n{t}"
    );
}

fn insecure_needs_the_entitlement(mode: Mode) {
    let ctx = context("ARG BASE\nFROM $BASE\nRUN --security=insecure true\n");
    let root = tempfile::tempdir().unwrap();
    let out = mode.rbuild(root.path(), ctx.path(), &[]).output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(has(&t, "security.insecure"), "{t}");
    let ctx = context("ARG BASE\nFROM $BASE\nRUN --network=host true\n");
    let out = mode.rbuild(root.path(), ctx.path(), &[]).output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(has(&t, "network.host"), "{t}");
}

fn proc_sys_and_mount_escapes_fail(mode: Mode) {
    let marker = std::env::temp_dir().join(format!("rbuild-host-marker-{}", std::process::id()));
    fs::write(&marker, "host-secret").unwrap();
    let ctx = context(&format!(
        "{PROBE_DOCKERFILE}RUN echo x > /proc/sys/kernel/domainname 2>/dev/null || echo p\"\"rocsys-ro; \
         test -w /proc/sysrq-trigger || echo s\"\"ysrq-denied; \
         test -w /sys/kernel || echo s\"\"ys-ro; \
         mount -t tmpfs none /mnt 2>/dev/null || echo m\"\"ount-denied; \
         /probe chroot-escape {m}; test -e {m} || echo m\"\"arker-invisible\n",
        m = marker.display()
    ));
    let t = mode.build_ok(ctx.path(), &[]);
    let _ = fs::remove_file(&marker);
    for want in [
        "procsys-ro",
        "sysrq-denied",
        "sys-ro",
        "mount-denied",
        "chroot=ok",
        "escape-sees-path=no",
        "marker-invisible",
    ] {
        assert!(has(&t, want), "missing {want}:\n{t}");
    }
}

fn copy_add_and_bind_mounts_stay_inside(mode: Mode) {
    let pid = std::process::id();
    let secret_dir = tempfile::tempdir().unwrap();
    fs::write(secret_dir.path().join("secret.txt"), "host-secret-data").unwrap();
    let escape_target = std::env::temp_dir().join(format!("rbuild-escape-{pid}"));
    let _ = fs::remove_file(&escape_target);

    let ctx = context("");
    // A symlink in the context that points at a host directory.
    std::os::unix::fs::symlink(secret_dir.path(), ctx.path().join("link")).unwrap();
    // A tar whose entries climb out with `..` and through an absolute symlink.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "tmplink", std::env::temp_dir())
        .unwrap();
    for name in [
        format!("tmplink/rbuild-escape-{pid}"),
        format!("../../../../../../tmp/rbuild-escape-{pid}"),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(3);
        h.set_mode(0o644);
        // Write the raw name so the tar crate does not refuse `..`.
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_cksum();
        b.append(&h, &b"bad"[..]).unwrap();
    }
    fs::write(ctx.path().join("evil.tar"), b.into_inner().unwrap()).unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM $BASE\n\
         COPY link/ /copied/\n\
         ADD evil.tar /unpacked/\n\
         RUN --mount=type=bind,source=../../../../..,target=/h ls /h/tmp/rbuild-escape-* 2>/dev/null; cat /h/etc/hostname 2>/dev/null; \
             find / -name secret.txt 2>/dev/null | xargs -r cat; echo done\n",
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = mode.rbuild(root.path(), ctx.path(), &[]).output().unwrap();
    let t = text(&out);
    assert!(
        !escape_target.exists(),
        "ADD of a hostile tar wrote {escape_target:?} on the host:\n{t}"
    );
    assert!(
        !has(&t, "host-secret-data"),
        "host data reached the build:\n{t}"
    );
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(needle) {
                found.push(format!("{}: {c}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// slirp4netns processes whose target (the sandbox helper's pid) is gone.
fn orphaned_slirps() -> Vec<String> {
    processes_with("slirp4netns")
        .into_iter()
        .filter(|p| {
            p.split_whitespace()
                .rev()
                .nth(1)
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .collect()
}

fn sigkill_mid_run_leaves_nothing_behind(mode: Mode) {
    let sleeper = format!("sleep {}", 3000 + std::process::id() % 1000);
    // The quotes keep the step header (which echoes the command) from matching "started".
    let ctx = context(&format!(
        "ARG BASE\nFROM $BASE\nRUN echo st\"\"arted; {sleeper}\n"
    ));
    let root = tempfile::tempdir().unwrap();
    let mut child = mode
        .rbuild(root.path(), ctx.path(), &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("started") {
        assert!(Instant::now() < deadline, "the RUN never started");
        let n = stderr.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "rbuild ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    // `echo` has printed; `sleep` follows a moment later (poll, the machine may be loaded).
    let until = Instant::now() + Duration::from_secs(20);
    while processes_with(&sleeper).is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !processes_with(&sleeper).is_empty(),
        "the step is not running"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with(&sleeper).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        processes_with(&sleeper).is_empty(),
        "the RUN survived rbuild's SIGKILL: {:?}",
        processes_with(&sleeper)
    );
    assert!(orphaned_slirps().is_empty(), "{:?}", orphaned_slirps());
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root_s = root.path().to_string_lossy().to_string();
    assert!(
        !mounts.contains(&root_s),
        "mounts left under the root:\n{mounts}"
    );
    // A later build on the same root works.
    let ctx = context("ARG BASE\nFROM $BASE\nRUN echo again\n");
    let out = mode.rbuild(root.path(), ctx.path(), &[]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

/// A tar entry with a raw name (the tar crate refuses `..` and absolute names on its own).
fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    name: &str,
    link: Option<&str>,
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    let bytes = name.as_bytes();
    h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
    if let Some(l) = link {
        let lb = l.as_bytes();
        h.as_old_mut().linkname[..lb.len()].copy_from_slice(lb);
    }
    h.set_cksum();
    b.append(&h, data).unwrap();
}

/// Writes a one-layer OCI layout (uncompressed layer) to `dir`.
fn write_layout(dir: &Path, layer: &[u8]) {
    use rbuild_oci::Digest;
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let d = Digest::sha256_of(data);
        fs::write(blobs.join(d.hex()), data).unwrap();
        (d, data.len())
    };
    let (layer_d, layer_n) = put(layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_d.to_string()]}
    });
    let (config_d, config_n) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d.to_string(), "size": config_n},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_d.to_string(), "size": layer_n}]
    });
    let (man_d, man_n) = put(manifest.to_string().as_bytes());
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": man_d.to_string(), "size": man_n,
                       "annotations": {"org.opencontainers.image.ref.name": "latest"}}]
    });
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
}

fn malicious_base_layer_stays_inside(mode: Mode) {
    let env = env().expect("env");
    let pid = std::process::id();
    let tmp = std::env::temp_dir();
    let escapes = [
        tmp.join(format!("rbuild-layer-dotdot-{pid}")),
        tmp.join(format!("rbuild-layer-symlink-{pid}")),
        tmp.join(format!("rbuild-layer-abs-{pid}")),
    ];
    for e in &escapes {
        let _ = fs::remove_file(e);
    }
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("secret.txt");
    fs::write(&secret, "host-secret-data").unwrap();

    // busybox, plus (one image each, so a refusal of one does not hide the next) entries that
    // climb out with `..`, through a symlink to a host directory, by absolute name, and a hard
    // link to a host file.
    let tmp_s = tmp.to_string_lossy().trim_start_matches('/').to_string();
    let secret_s = secret.to_string_lossy().to_string();
    type Entries<'a> = Vec<(tar::EntryType, String, Option<&'a str>)>;
    let tmp_full = tmp.to_string_lossy().to_string();
    let variants: Vec<(&str, Entries)> = vec![
        (
            "dotdot",
            vec![(
                tar::EntryType::Regular,
                format!("../../../../../../{tmp_s}/rbuild-layer-dotdot-{pid}"),
                None,
            )],
        ),
        (
            "symlink",
            vec![
                (
                    tar::EntryType::Symlink,
                    "hostdir".into(),
                    Some(tmp_full.as_str()),
                ),
                (
                    tar::EntryType::Regular,
                    format!("hostdir/rbuild-layer-symlink-{pid}"),
                    None,
                ),
            ],
        ),
        (
            "abs",
            vec![(
                tar::EntryType::Regular,
                format!("/{tmp_s}/rbuild-layer-abs-{pid}"),
                None,
            )],
        ),
        (
            "hardlink",
            vec![(
                tar::EntryType::Link,
                "stolen".into(),
                Some(secret_s.as_str()),
            )],
        ),
    ];
    let busybox = rbuild_testsupport::busybox_rootfs_tar_bytes().unwrap();
    for (name, entries) in variants {
        let mut b = tar::Builder::new(Vec::new());
        let mut a = tar::Archive::new(&busybox[..]);
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            b.append(&h, &data[..]).unwrap();
        }
        for (kind, path, link) in entries {
            let data: &[u8] = if kind == tar::EntryType::Regular {
                b"bad"
            } else {
                b""
            };
            raw_entry(&mut b, kind, &path, link, data);
        }
        let layer = b.into_inner().unwrap();
        let layout = tempfile::tempdir().unwrap();
        write_layout(layout.path(), &layer);
        let image = format!("{}/attack/evil-{name}:{pid}", env.registry.addr());
        rbuild_testsupport::push_layout(layout.path(), &image).unwrap();

        let ctx = context(&format!(
            "FROM {image}\nRUN cat /stolen 2>/dev/null; ls /hostdir/ 2>/dev/null | head -3; echo d\"\"one\n"
        ));
        let root = tempfile::tempdir().unwrap();
        let out = mode.rbuild(root.path(), ctx.path(), &[]).output().unwrap();
        let t = text(&out);
        for e in &escapes {
            assert!(
                !e.exists(),
                "{name}: the layer wrote {e:?} on the host:\n{t}"
            );
        }
        assert!(
            !has(&t, "host-secret-data"),
            "{name}: a host file reached the build:\n{t}"
        );
        // Either the layer is refused with a message, or the build ran without the escape.
        assert!(
            has(&t, "done") || has(&t, "ERROR"),
            "{name}: neither refused nor built:\n{t}"
        );
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{name}: want exit code 0 (built) or 1 (refused), got {:?}:\n{t}",
            out.status
        );
        eprintln!(
            "{name}: {}",
            if out.status.success() {
                "built inside the root"
            } else {
                "refused"
            }
        );
    }
}

both_modes!(
    mknod_of_a_host_block_device_cannot_be_read,
    block_device_shipped_in_a_base_image_cannot_be_read_as_nobody,
    block_devices_reached_through_mounts_cannot_be_read,
    inherited_descriptors_do_not_reach_run,
    host_keyrings_are_out_of_reach,
    seccomp_denies_namespaces_keys_mount_bpf_perf,
    setuid_programs_work_under_user,
    insecure_needs_the_entitlement,
    proc_sys_and_mount_escapes_fail,
    copy_add_and_bind_mounts_stay_inside,
    sigkill_mid_run_leaves_nothing_behind,
    malicious_base_layer_stays_inside,
);
