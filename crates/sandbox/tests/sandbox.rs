//! Integration tests against real namespaces and overlayfs. A `harness = false` binary: its main
//! doubles as the sandbox helper, so `current_exe()` can be handed to `Sandbox::new`.
//! Needs root; without it the tests are skipped loudly, unless RBUILD_REQUIRE_ROOT=1.

// Sets up and inspects namespaces with raw syscalls, as the crate under test does.
#![allow(unsafe_code)]

#[macro_use]
#[path = "sandbox/support.rs"]
mod support;
#[path = "sandbox/emulation.rs"]
mod emulation;
#[path = "sandbox/filesystems.rs"]
mod filesystems;
#[path = "sandbox/isolation.rs"]
mod isolation;
#[path = "sandbox/process_mode.rs"]
mod process_mode;

use emulation::*;
use filesystems::*;
use isolation::*;
use process_mode::*;
use rbuild_sandbox::Sandbox;
use std::time::Instant;
use support::{build_layers, ensure_busybox, mountinfo, Ctx, TestFn};

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
        ("emulated_arm64_runs", emulated_arm64_runs),
        ("emulated_run_stays_confined", emulated_run_stays_confined),
        ("missing_emulator", missing_emulator),
        ("parallel_emulated_runs", parallel_emulated_runs),
        (
            "no_process_sandbox_shares_pids",
            no_process_sandbox_shares_pids,
        ),
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
