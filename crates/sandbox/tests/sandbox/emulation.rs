//! Emulation: an arm64 busybox rootfs run under qemu-user-static through a binfmt_misc
//! instance of the run's own user namespace, with the host's registrations untouched, the
//! sandbox's confinement intact, and the error when the emulator is missing.

use super::support::*;
use rbuild_sandbox::{Emulator, Rootfs, RunSpec, SandboxError};
use std::fs;
use std::path::{Path, PathBuf};

/// The host's binfmt_misc registrations: every entry and its contents (empty when not mounted).
fn host_binfmt() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = fs::read_dir("/proc/sys/fs/binfmt_misc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    (name != "register")
                        .then(|| (name, fs::read_to_string(e.path()).unwrap_or_default()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The arm64 busybox rootfs, unpacked once under the test's temp dir; `None` when the
/// package or qemu is missing (the fixture prints the skip; CI fails instead).
fn arm64_rootfs(c: &Ctx) -> Result<Option<PathBuf>, String> {
    let dir = c.tmp.path().join("arm64-rootfs");
    if dir.join("bin/busybox").exists() {
        return Ok(Some(dir));
    }
    let Some(tar) =
        rbuild_testsupport::arm64_busybox_rootfs_tar_bytes().map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    if rbuild_testsupport::qemu_aarch64().is_none() {
        let msg = "qemu-user-static is not installed (apt-get install qemu-user-static)";
        if std::env::var("RBUILD_REQUIRE_ROOT").as_deref() == Ok("1") {
            return Err(msg.into());
        }
        eprintln!("SKIPPED: {msg}");
        return Ok(None);
    }
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut ar = tar::Archive::new(tar.as_slice());
    ar.set_preserve_permissions(true);
    ar.unpack(&dir).map_err(|e| e.to_string())?;
    Ok(Some(dir))
}

fn emulator() -> Result<Emulator, String> {
    Emulator::find(
        "linux/arm64",
        "arm64",
        &rbuild_sandbox::default_emulator_dirs(),
    )
    .map_err(|e| e.to_string())
}

/// A spec over the arm64 rootfs (an overlay with a fresh upper dir), emulated.
fn arm64_spec(c: &Ctx, rootfs: &Path, args: &[&str]) -> Result<(RunSpec, PathBuf), String> {
    let (mut spec, upper) = c.spec(args);
    if let Rootfs::Overlay { lowerdirs, .. } = &mut spec.rootfs {
        // The arm64 busybox over the amd64 base layer (its device node, /home/app).
        *lowerdirs = vec![c.etc.clone(), rootfs.to_path_buf(), c.base.clone()];
    }
    spec.emulator = Some(emulator()?);
    Ok((spec, upper))
}

pub fn emulated_arm64_runs(c: &Ctx) -> TestResult {
    let Some(rootfs) = arm64_rootfs(c)? else {
        return Ok(());
    };
    let before = host_binfmt();
    // uname -m, child processes (execve of foreign binaries from a foreign shell), a pipe,
    // argv[0] preserved (busybox dispatches on it), writes land in the upper dir.
    let script =
        "uname -m; sh -c 'echo child $(uname -m)' | cat; (ls /bin/ls >/dev/null && echo ls-ok); \
                  uname -m > /arch; cat /proc/sys/fs/binfmt_misc/qemu-aarch64 | head -3; echo $$";
    let (spec, upper) = arm64_spec(c, &rootfs, &["sh", "-c", script])?;
    let o = c.run(&spec).map_err(|e| e.to_string())?;
    ok_out(&o)?;
    let lines: Vec<&str> = o.stdout.lines().collect();
    check!(
        lines.first() == Some(&"aarch64"),
        "uname -m: {:?}",
        o.stdout
    );
    check!(
        lines.get(1) == Some(&"child aarch64"),
        "child: {:?}",
        o.stdout
    );
    check!(lines.get(2) == Some(&"ls-ok"), "ls: {:?}", o.stdout);
    check!(
        lines.get(3) == Some(&"enabled") && lines.get(5) == Some(&"flags: POCF"),
        "the run's own registration: {:?}",
        o.stdout
    );
    check!(lines.last() == Some(&"1"), "pid 1: {:?}", o.stdout);
    check!(
        fs::read_to_string(upper.join("arch")).ok().as_deref() == Some("aarch64\n"),
        "/arch not in the upper dir"
    );
    // The other network modes: only loopback, and the private namespace with slirp4netns.
    for network in [
        rbuild_sandbox::Network::None,
        rbuild_sandbox::Network::Private,
    ] {
        let (mut spec, _) = arm64_spec(c, &rootfs, &["sh", "-c", "uname -m; hostname"])?;
        spec.network = network;
        let o = c.run(&spec).map_err(|e| e.to_string())?;
        ok_out(&o)?;
        check!(
            o.stdout == "aarch64\nbuildkitsandbox\n",
            "{network:?}: {:?}",
            o.stdout
        );
    }
    check!(
        host_binfmt() == before,
        "the host's binfmt_misc changed: {before:?} -> {:?}",
        host_binfmt()
    );
    Ok(())
}

/// The confinement holds inside the emulated run's user namespace: Docker's capabilities (no
/// CAP_SYS_ADMIN), the seccomp filter (no mount, no new user namespace), the binfmt_misc
/// mount read-only (no registering an interpreter of one's own), masked /proc, no devices,
/// files keep their owners (identity id mapping), USER still switches.
pub fn emulated_run_stays_confined(c: &Ctx) -> TestResult {
    let Some(rootfs) = arm64_rootfs(c)? else {
        return Ok(());
    };
    let before = host_binfmt();
    let script = "grep -E '^(CapEff|CapBnd|Seccomp):' /proc/self/status; \
                  cat /proc/self/uid_map; \
                  mount -t tmpfs none /mnt 2>/dev/null || echo mount-denied; \
                  unshare -U true 2>/dev/null || echo unshare-denied; \
                  echo ':x:E::x::/bin/sh:' > /proc/sys/fs/binfmt_misc/register 2>/dev/null || echo register-denied; \
                  echo -1 > /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null || echo unregister-denied; \
                  umount /proc/sys/fs/binfmt_misc 2>/dev/null || echo umount-denied; \
                  test ! -s /proc/kcore && echo kcore-masked; \
                  head -c1 /lowerdev 2>/dev/null || echo nodev; \
                  stat -c %u:%g /etc/passwd; \
                  mknod /tmp/node c 1 3 2>/dev/null || echo mknod-denied; \
                  chown 1000:1000 /tmp && stat -c chown-%u /tmp";
    let (spec, _) = arm64_spec(c, &rootfs, &["sh", "-c", script])?;
    let o = c.run(&spec).map_err(|e| e.to_string())?;
    ok_out(&o)?;
    for want in [
        "CapEff:\t00000000a80425fb",
        "CapBnd:\t00000000a80425fb",
        "Seccomp:\t2",
        "         0          0 4294967295",
        "mount-denied",
        "unshare-denied",
        "register-denied",
        "unregister-denied",
        "umount-denied",
        "kcore-masked",
        "nodev",
        "0:0",
        // The trade-off of the user namespace: no device nodes; chown works (identity map).
        "mknod-denied",
        "chown-1000",
    ] {
        check!(
            o.stdout.contains(want),
            "missing {want:?} in {:?}",
            o.stdout
        );
    }
    // As another user, through USER.
    let (mut spec, _) = arm64_spec(c, &rootfs, &["sh", "-c", "id -u; id -g; uname -m"])?;
    spec.user = "app".into();
    let o = c.run(&spec).map_err(|e| e.to_string())?;
    ok_out(&o)?;
    check!(
        o.stdout == "1000\n1000\naarch64\n",
        "as app: {:?}",
        o.stdout
    );
    check!(host_binfmt() == before, "the host's binfmt_misc changed");
    Ok(())
}

/// Without an emulator the arm64 binary does not run (the host has no registration the
/// sandbox could use), and a missing emulator is a clear error naming the package.
pub fn missing_emulator(c: &Ctx) -> TestResult {
    let Some(rootfs) = arm64_rootfs(c)? else {
        return Ok(());
    };
    // (A host whose global binfmt_misc runs aarch64 binaries would run it anyway.)
    let host_runs_aarch64 = host_binfmt()
        .iter()
        .any(|(_, text)| text.starts_with("enabled") && text.contains("0200b700"));
    let (mut spec, _) = arm64_spec(c, &rootfs, &["/bin/busybox", "true"])?;
    spec.emulator = None;
    match c.run(&spec) {
        Err(SandboxError::Exec(m)) => check!(m.contains("exec format error"), "{m}"),
        Ok(o) if host_runs_aarch64 => ok_out(&o)?,
        other => {
            return Err(format!(
                "native run of an arm64 binary: {:?}",
                other.map(|o| o.status)
            ))
        }
    }
    let empty = c.tmp.path().join("no-qemu-here");
    fs::create_dir_all(&empty).map_err(|e| e.to_string())?;
    let err = Emulator::find("linux/arm64", "arm64", &[empty]).unwrap_err();
    check!(
        err.to_string()
            == "no emulator for linux/arm64: install qemu-user-static (qemu-aarch64-static not found)",
        "{err}"
    );
    Ok(())
}

/// Emulated runs side by side, each with its own registration.
pub fn parallel_emulated_runs(c: &Ctx) -> TestResult {
    let Some(rootfs) = arm64_rootfs(c)? else {
        return Ok(());
    };
    let results: Vec<Result<String, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let rootfs = rootfs.clone();
                s.spawn(move || {
                    let (spec, _) =
                        arm64_spec(c, &rootfs, &["sh", "-c", &format!("echo {i} $(uname -m)")])?;
                    let o = c.run(&spec).map_err(|e| e.to_string())?;
                    ok_out(&o)?;
                    Ok(o.stdout)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err("panicked".into())))
            .collect()
    });
    for (i, r) in results.into_iter().enumerate() {
        let out = r?;
        check!(out == format!("{i} aarch64\n"), "run {i}: {out:?}");
    }
    Ok(())
}
