//! RUN for a foreign architecture under user-mode emulation, end to end: `rbuild build
//! --platform linux/amd64,linux/arm64` over a real multi-platform busybox (the host's amd64
//! busybox-static and Debian's arm64 one, served by a test registry) runs `uname -m` natively
//! for amd64 and under qemu-aarch64-static for arm64, each platform's image has its own
//! answer, the host's binfmt_misc registrations are untouched, and a missing emulator is a
//! clear error at the RUN naming the package.

use rbuild_oci::{Index, Manifest, Store};
use rbuild_testsupport::{qemu_aarch64, registry_with_multiarch_busybox, require_root};
use std::fs;
use std::path::Path;
use std::process::Output;

mod common;

use common::attack::{context, has, text};
use common::stored::{file_in_image, read_json};
use common::{assert_ok, events, rbuild_at, stderr_text};

fn build(root: &Path, ctx: &Path, args: &[&str]) -> Output {
    rbuild_at(root)
        .args(["build", "--progress=json"])
        .args(args)
        .arg(ctx)
        .output()
        .expect("run rbuild")
}

/// The host's binfmt_misc entries and their contents (empty when it is not mounted).
fn host_binfmt() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = fs::read_dir("/proc/sys/fs/binfmt_misc")
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let text = fs::read_to_string(e.path()).unwrap_or_default();
                    (e.file_name().to_string_lossy().into_owned(), text)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

const DOCKERFILE: &str = "FROM BASE
RUN uname -m > /arch && sh -c 'ls /bin/busybox && echo child $(uname -m)' > /child
";

#[test]
fn a_run_is_emulated_for_the_foreign_platform() {
    if !require_root().expect("root check") {
        return;
    }
    let Some((_registry, base, _)) = registry_with_multiarch_busybox().expect("registry") else {
        return;
    };
    assert!(
        qemu_aarch64().is_some(),
        "qemu-user-static is not installed: run .ci/run or apt-get install qemu-user-static"
    );
    let before = host_binfmt();
    let root = tempfile::tempdir().expect("root");
    let ctx = tempfile::tempdir().expect("ctx");
    fs::write(
        ctx.path().join("Dockerfile"),
        DOCKERFILE.replace("BASE", &base),
    )
    .expect("write");
    let args = ["--platform", "linux/amd64,linux/arm64", "-t", "emu:1"];
    let out = build(root.path(), ctx.path(), &args);
    assert_ok(&out);
    let store = Store::open(root.path()).expect("store");
    let desc = store
        .resolve_tag("emu:1")
        .expect("index.json")
        .expect("tagged");
    let index: Index = read_json(root.path(), &desc);
    let mut seen = Vec::new();
    for entry in &index.manifests {
        let manifest: Manifest = read_json(root.path(), entry);
        let config: rbuild_oci::ImageConfig = read_json(root.path(), &manifest.config);
        let arch = file_in_image(root.path(), &manifest, "arch").expect("/arch");
        let child = file_in_image(root.path(), &manifest, "child").expect("/child");
        seen.push((config.architecture, arch, child));
    }
    let want = |arch: &str, uname: &str| {
        (
            arch.to_string(),
            format!("{uname}\n"),
            format!("/bin/busybox\nchild {uname}\n"),
        )
    };
    assert_eq!(
        seen,
        vec![want("amd64", "x86_64"), want("arm64", "aarch64")]
    );
    assert_eq!(host_binfmt(), before, "the host's binfmt_misc changed");
    // Built again: both RUNs cached (the platform is in the key, the emulator is not).
    let again = build(root.path(), ctx.path(), &args);
    assert_ok(&again);
    let ran = events(&again)
        .iter()
        .filter(|e| e["event"] == "started" && !e["cache_key"].is_null())
        .filter(|e| e["name"].as_str().is_some_and(|n| n.contains("RUN ")))
        .count();
    assert_eq!(ran, 0, "{}", stderr_text(&again));
    // Pushed as one name: the registry holds an index of both platforms, and each platform's
    // image, read back with skopeo, has its own /arch and config architecture.
    let addr = base.split('/').next().expect("registry address");
    let target = format!("{addr}/emu/uname:1");
    let push = [
        "--platform",
        "linux/amd64,linux/arm64",
        "-t",
        &target,
        "--push",
    ];
    let pushed = build(root.path(), ctx.path(), &push);
    assert_ok(&pushed);
    let platforms = common::pushed::index_platforms(&format!("docker://{target}"));
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    for (arch, uname) in [("amd64", "x86_64"), ("arm64", "aarch64")] {
        let (file, config_arch) = common::pushed::file_of(&target, arch, "arch");
        assert_eq!(
            (file.as_str(), config_arch.as_str()),
            (&*format!("{uname}\n"), arch)
        );
    }
}

#[test]
fn a_missing_emulator_is_an_error_at_the_run() {
    if !require_root().expect("root check") {
        return;
    }
    let Some((_registry, base, _)) = registry_with_multiarch_busybox().expect("registry") else {
        return;
    };
    let root = tempfile::tempdir().expect("root");
    let ctx = tempfile::tempdir().expect("ctx");
    fs::write(
        ctx.path().join("Dockerfile"),
        DOCKERFILE.replace("BASE", &base),
    )
    .expect("write");
    let nowhere = root.path().join("no-emulators-here");
    let out = rbuild_at(root.path())
        .env("RBUILD_QEMU_DIR", &nowhere)
        .args(["build", "--progress=plain", "--platform", "linux/arm64"])
        .arg(ctx.path())
        .output()
        .expect("run rbuild");
    assert!(!out.status.success());
    let text = stderr_text(&out);
    assert!(
        text.contains(
            "no emulator for linux/arm64: install qemu-user-static (qemu-aarch64-static not found)"
        ),
        "{text}"
    );
    assert!(text.contains(">>> RUN uname -m"), "{text}");
    // The host's platform needs none: the same lookup does not stand in its way.
    let host = rbuild_oci::Platform::host().to_string();
    let out = rbuild_at(root.path())
        .env("RBUILD_QEMU_DIR", &nowhere)
        .args(["build", "--progress=plain", "--platform", &host])
        .arg(ctx.path())
        .output()
        .expect("run rbuild");
    assert_ok(&out);
}

/// The attack suite's probes (seccomp, /proc/sys, mount, chroot escape, setuid under USER) hold
/// inside an emulated RUN's user namespace too: the amd64 probe runs natively there, started
/// by the emulated arm64 shell.
#[test]
fn the_sandbox_holds_in_an_emulated_run() {
    if !require_root().expect("root check") {
        return;
    }
    let Some((_registry, base, _)) = registry_with_multiarch_busybox().expect("registry") else {
        return;
    };
    let marker = std::env::temp_dir().join(format!("rbuild-emu-marker-{}", std::process::id()));
    fs::write(&marker, "host-secret").expect("marker");
    let ctx = context(&format!(
        "FROM {base}\nCOPY probe /probe\n\
         RUN echo a\"\"rch-$(uname -m); /probe syscalls; \
         (unshare -Urn true && echo u\"\"nshare-worked || echo u\"\"nshare-denied); \
         echo x > /proc/sys/kernel/domainname 2>/dev/null || echo p\"\"rocsys-ro; \
         mount -t tmpfs none /mnt 2>/dev/null || echo m\"\"ount-denied; \
         /probe chroot-escape {m}; test -e {m} || echo m\"\"arker-invisible\n\
         RUN cp /probe /suid && chmod 4755 /suid\n\
         USER 65534:65534\n\
         RUN /probe ids; /suid ids\n",
        m = marker.display()
    ));
    let root = tempfile::tempdir().expect("root");
    let out = rbuild_at(root.path())
        .args(["build", "--progress=plain", "--platform", "linux/arm64"])
        .arg(ctx.path())
        .output()
        .expect("run rbuild");
    let _ = fs::remove_file(&marker);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    for want in [
        "arch-aarch64",
        "keyctl=EPERM",
        "unshare_user=EPERM",
        "unshare_net=EPERM",
        "mount=EPERM",
        "bpf=EPERM",
        "pivot_root=EPERM",
        "getpid=ok",
        "unshare-denied",
        "procsys-ro",
        "mount-denied",
        "chroot=ok",
        "escape-sees-path=no",
        "marker-invisible",
        "uid=65534 euid=65534",
        "uid=65534 euid=0",
    ] {
        assert!(has(&t, want), "missing {want}:\n{t}");
    }
}
