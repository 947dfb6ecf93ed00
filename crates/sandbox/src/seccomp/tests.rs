//! Tests of the seccomp filter: each forks a child that installs it and reports.
use super::*;
use crate::testutil::root_or_skip;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::ForkResult;

/// Runs `f` in a forked child, after installing the filter when `filtered`; the child's
/// exit code is what `f` returns (200: the filter could not be installed).
fn in_child(filtered: bool, f: impl FnOnce() -> i32) -> WaitStatus {
    prepare().expect("compile filter");
    // SAFETY: the child only makes syscalls and small allocations (glibc's fork keeps
    // malloc usable) before `_exit`.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        ForkResult::Child => {
            let code = if !filtered || install_default_filter().is_ok() {
                f()
            } else {
                200
            };
            // SAFETY: leave without running the test harness's exit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => loop {
            match waitpid(child, None) {
                Err(nix::errno::Errno::EINTR) => continue,
                r => break r.expect("waitpid"),
            }
        },
    }
}

/// The errno of a raw syscall result (0 on success).
fn errno(r: libc::c_long) -> i32 {
    if r < 0 {
        nix::errno::Errno::last_raw()
    } else {
        0
    }
}

fn exit_code(w: WaitStatus) -> i32 {
    match w {
        WaitStatus::Exited(_, c) => c,
        other => panic!("child did not exit normally: {other:?}"),
    }
}

/// Asserts the syscall made by `f` fails with `want` under the filter.
fn denied(name: &str, want: i32, f: fn() -> libc::c_long) {
    let got = exit_code(in_child(true, || errno(f())));
    assert_eq!(
        got,
        want,
        "{name}: got {}, want {}",
        nix::errno::Errno::from_raw(got),
        nix::errno::Errno::from_raw(want)
    );
}

#[test]
fn program_fits_and_compiles_once() {
    let p = programs().expect("compile");
    assert!(
        p.allowlist.len() < 4096,
        "{} instructions",
        p.allowlist.len()
    );
    assert!(std::ptr::eq(p, programs().expect("compile")));
}

#[test]
fn keyrings_are_denied() {
    if !root_or_skip("keyrings_are_denied") {
        return;
    }
    // Without the filter the same call succeeds: the denial below is the filter's.
    let get_id = || {
        // SAFETY: keyctl with integer arguments only.
        unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                0 as libc::c_long,  // KEYCTL_GET_KEYRING_ID
                -3 as libc::c_long, // KEY_SPEC_SESSION_KEYRING
                0 as libc::c_long,
            )
        }
    };
    assert_eq!(exit_code(in_child(false, || errno(get_id()))), 0);
    denied("keyctl(KEYCTL_GET_KEYRING_ID)", libc::EPERM, get_id);
    denied("add_key", libc::EPERM, || {
        // SAFETY: the strings are NUL-terminated literals.
        unsafe {
            libc::syscall(
                libc::SYS_add_key,
                c"user".as_ptr(),
                c"rbuild-seccomp-test".as_ptr(),
                c"x".as_ptr(),
                1 as libc::size_t,
                -2 as libc::c_long, // KEY_SPEC_PROCESS_KEYRING
            )
        }
    });
    denied("request_key", libc::EPERM, || {
        // SAFETY: the strings are NUL-terminated literals.
        unsafe {
            libc::syscall(
                libc::SYS_request_key,
                c"user".as_ptr(),
                c"rbuild-seccomp-test".as_ptr(),
                std::ptr::null::<libc::c_char>(),
                0 as libc::c_long,
            )
        }
    });
}

#[test]
fn namespaces_are_denied() {
    if !root_or_skip("namespaces_are_denied") {
        return;
    }
    denied("unshare(CLONE_NEWUSER)", libc::EPERM, || {
        // SAFETY: unshare with an integer argument.
        unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER as libc::c_long) }
    });
    denied("unshare(CLONE_NEWNET)", libc::EPERM, || {
        // SAFETY: unshare with an integer argument.
        unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNET as libc::c_long) }
    });
    denied("clone(CLONE_NEWUSER)", libc::EPERM, || {
        // SAFETY: a fork-like clone (no new stack); denied before it runs, and if it were
        // not, the new child would just _exit.
        let r = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_long,
                0 as libc::c_long,
                0 as libc::c_long,
                0 as libc::c_long,
                0 as libc::c_long,
            )
        };
        if r == 0 {
            // SAFETY: the unexpected child leaves at once.
            unsafe { libc::_exit(0) }
        }
        r
    });
    denied("setns", libc::EPERM, || {
        // SAFETY: setns on an invalid fd.
        unsafe { libc::syscall(libc::SYS_setns, -1 as libc::c_long, 0 as libc::c_long) }
    });
    denied("clone3", libc::ENOSYS, || {
        // SAFETY: the filter answers before the kernel reads the (null) arguments.
        unsafe {
            libc::syscall(
                libc::SYS_clone3,
                std::ptr::null::<libc::c_void>(),
                0 as libc::size_t,
            )
        }
    });
}

#[test]
fn privileged_syscalls_are_denied() {
    if !root_or_skip("privileged_syscalls_are_denied") {
        return;
    }
    denied("mount", libc::EPERM, || {
        // SAFETY: NUL-terminated literals; the target does not exist either way.
        unsafe {
            libc::syscall(
                libc::SYS_mount,
                c"none".as_ptr(),
                c"/nonexistent-rbuild-seccomp-test".as_ptr(),
                c"tmpfs".as_ptr(),
                0 as libc::c_ulong,
                std::ptr::null::<libc::c_void>(),
            )
        }
    });
    denied("umount2", libc::EPERM, || {
        // SAFETY: a NUL-terminated literal that is not a mount point.
        unsafe {
            libc::syscall(
                libc::SYS_umount2,
                c"/nonexistent-rbuild-seccomp-test".as_ptr(),
                0 as libc::c_long,
            )
        }
    });
    denied("bpf", libc::EPERM, || {
        // SAFETY: BPF_MAP_CREATE with a null attr: denied before the kernel reads it.
        unsafe {
            libc::syscall(
                libc::SYS_bpf,
                0 as libc::c_long,
                std::ptr::null::<libc::c_void>(),
                0 as libc::c_long,
            )
        }
    });
    denied("perf_event_open", libc::EPERM, || {
        // SAFETY: a null attr: denied before the kernel reads it.
        unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                std::ptr::null::<libc::c_void>(),
                0 as libc::c_long,
                -1 as libc::c_long,
                -1 as libc::c_long,
                0 as libc::c_long,
            )
        }
    });
    denied("io_uring_setup", libc::EPERM, || {
        // SAFETY: a null params pointer: denied before the kernel reads it.
        unsafe {
            libc::syscall(
                libc::SYS_io_uring_setup,
                1 as libc::c_long,
                std::ptr::null::<libc::c_void>(),
            )
        }
    });
    denied("pivot_root", libc::EPERM, || {
        // SAFETY: NUL-terminated literals.
        unsafe { libc::syscall(libc::SYS_pivot_root, c"/".as_ptr(), c"/".as_ptr()) }
    });
    denied("socket(AF_VSOCK)", libc::EPERM, || {
        // SAFETY: integer arguments.
        unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) as libc::c_long }
    });
    denied("personality(ADDR_NO_RANDOMIZE)", libc::EPERM, || {
        // SAFETY: integer argument.
        unsafe { libc::syscall(libc::SYS_personality, 0x0040000 as libc::c_long) }
    });
    denied("x32 getpid", libc::EPERM, || {
        // SAFETY: getpid has no arguments.
        unsafe { libc::syscall(0x4000_0000 | libc::SYS_getpid) }
    });
    // A syscall newer than the table (mseal, kernel 6.10) looks absent, as under runc.
    denied("mseal", libc::ENOSYS, || {
        // SAFETY: a zero-length range.
        unsafe { libc::syscall(462, 0 as libc::c_long, 0 as libc::c_long, 0 as libc::c_long) }
    });
}

/// The kernel reads `socket`'s family as an `int`: set high bits do not hide AF_VSOCK, and
/// `personality`'s check ignores them likewise (as the kernel does).
#[test]
fn argument_checks_use_the_low_word() {
    if !root_or_skip("argument_checks_use_the_low_word") {
        return;
    }
    denied("socket(1 << 32 | AF_VSOCK)", libc::EPERM, || {
        // SAFETY: integer arguments; a socket it made would be closed by the child's exit.
        unsafe {
            libc::syscall(
                libc::SYS_socket,
                (1i64 << 32) | i64::from(libc::AF_VSOCK),
                libc::SOCK_STREAM as libc::c_long,
                0 as libc::c_long,
            )
        }
    });
    // The query value with a high bit set is still the query (the kernel truncates it).
    let query = exit_code(in_child(true, || {
        // SAFETY: integer argument.
        errno(unsafe { libc::syscall(libc::SYS_personality, 0x1_ffff_ffff as libc::c_long) })
    }));
    assert_eq!(query, 0, "personality(1 << 32 | 0xffffffff): errno {query}");
}

#[test]
fn ordinary_syscalls_are_allowed() {
    if !root_or_skip("ordinary_syscalls_are_allowed") {
        return;
    }
    let code = exit_code(in_child(true, || {
        if nix::unistd::getpid().as_raw() <= 0 {
            return 1;
        }
        // SAFETY: integer arguments; the fd is closed at once.
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        if s < 0 {
            return 2;
        }
        // SAFETY: `s` is our socket.
        unsafe { libc::close(s) };
        // fork goes through clone without namespace flags.
        // SAFETY: the child exits at once.
        match unsafe { nix::unistd::fork() } {
            // SAFETY: _exit is async-signal-safe, so fine in a forked child.
            Ok(ForkResult::Child) => unsafe { libc::_exit(7) },
            Ok(ForkResult::Parent { child }) => match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, 7)) => {}
                _ => return 3,
            },
            Err(_) => return 4,
        }
        // Threads: glibc tries clone3, gets ENOSYS and falls back to clone.
        match std::thread::spawn(|| 5).join() {
            Ok(5) => {}
            _ => return 5,
        }
        // CAP_SYS_CHROOT is in the default set, so Docker's profile allows chroot.
        if nix::unistd::chroot("/").is_err() {
            return 6;
        }
        // SAFETY: integer argument (the query value).
        if unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffff as libc::c_long) } < 0 {
            return 8;
        }
        // no_new_privs stays off (setuid programs keep working).
        // SAFETY: integer arguments.
        if unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) } != 0 {
            return 9;
        }
        0
    }));
    assert_eq!(code, 0, "step {code} failed under the filter");
}

/// The helper's steps after the filter: drop capabilities, switch user, close fds, exec.
#[test]
fn helper_steps_and_exec_work_after_install() {
    if !root_or_skip("helper_steps_and_exec_work_after_install") {
        return;
    }
    let code = exit_code(in_child(true, || {
        if crate::caps::restrict_to_default().is_err() {
            return 1;
        }
        let nobody = nix::unistd::Gid::from_raw(65534);
        if nix::unistd::setgroups(&[nobody]).is_err() {
            return 2;
        }
        if nix::unistd::setresgid(nobody, nobody, nobody).is_err() {
            return 3;
        }
        let uid = nix::unistd::Uid::from_raw(65534);
        if nix::unistd::setresuid(uid, uid, uid).is_err() {
            return 4;
        }
        // SAFETY: closes fds >= 3 of this child only.
        if unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) } != 0 {
            return 5;
        }
        if nix::unistd::access("/bin/true", nix::unistd::AccessFlags::X_OK).is_err() {
            return 6;
        }
        let _ = nix::unistd::execv(c"/bin/true", &[c"true"]);
        7
    }));
    assert_eq!(code, 0, "step {code} failed under the filter");
}

/// An i386 syscall (`int 0x80`) kills the process: other ABIs fail closed.
#[cfg(target_arch = "x86_64")]
#[test]
fn other_abi_fails_closed() {
    if !root_or_skip("other_abi_fails_closed") {
        return;
    }
    fn i386_getpid() -> i32 {
        let mut ret: i32 = 20; // __NR_getpid on i386
                               // SAFETY: int 0x80 with eax = getpid; it has no arguments and clobbers nothing
                               // else of ours.
        unsafe {
            std::arch::asm!("int 0x80", inlateout("eax") ret, options(nostack));
        }
        ret
    }
    // Without the filter: the pid (ia32 emulation on) or a crash (off), never 99.
    let unfiltered = in_child(false, || if i386_getpid() > 0 { 0 } else { 1 });
    let filtered = in_child(true, || {
        i386_getpid();
        99
    });
    match unfiltered {
        WaitStatus::Exited(_, 0) => assert!(
            matches!(filtered, WaitStatus::Signaled(_, Signal::SIGSYS, _)),
            "int 0x80 under the filter: {filtered:?}"
        ),
        other => eprintln!("int 0x80 is not available here ({other:?}); nothing to check"),
    }
    assert!(!matches!(filtered, WaitStatus::Exited(_, 99)));
}
/// Prints the programs' sizes, their compile time and the time to install them (the
/// seccomp(2) calls in a fresh child, median of 21). A measurement, not an assertion; run
/// with `cargo test --release -p rbuild-sandbox --lib seccomp_cost -- --ignored --nocapture`.
#[test]
#[ignore = "prints a measurement"]
fn seccomp_cost() {
    if !root_or_skip("seccomp_cost") {
        return;
    }
    use std::io::Write;
    let t = std::time::Instant::now();
    let fresh = compile().expect("compile");
    let compile_us = t.elapsed().as_micros();
    let p = programs().expect("compile");
    let mut install_us: Vec<u64> = (0..21)
        .map(|_| {
            let (r, w) = nix::unistd::pipe().expect("pipe");
            let code = exit_code(in_child(false, || {
                let t = std::time::Instant::now();
                if install_default_filter().is_err() {
                    return 1;
                }
                let ns = t.elapsed().as_nanos() as u64;
                match nix::unistd::write(&w, &ns.to_ne_bytes()) {
                    Ok(8) => 0,
                    _ => 2,
                }
            }));
            assert_eq!(code, 0);
            let mut buf = [0u8; 8];
            assert_eq!(nix::unistd::read(&r, &mut buf), Ok(8));
            u64::from_ne_bytes(buf) / 1000
        })
        .collect();
    install_us.sort_unstable();
    let line = format!(
        "seccomp cost: {} + {} instructions, compile {} us, install median {} us (min {}, max {})\n",
        p.allowlist.len(),
        p.tail.len(),
        compile_us,
        install_us[10],
        install_us[0],
        install_us[20],
    );
    drop(fresh);
    let _ = std::io::stderr().write_all(line.as_bytes());
}
