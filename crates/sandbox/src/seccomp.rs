//! The default seccomp filter of a run: Docker's default profile (moby's
//! `profiles/seccomp/default.json`) for the sandbox's default capability set.
//!
//! The profile is an allowlist: every syscall not listed fails with `EPERM`. Argument-checked
//! entries: `clone` only without namespace flags, `socket` for every family but `AF_VSOCK`,
//! `personality` only with the values Docker allows. Capability-conditional entries follow
//! [`crate::caps::DEFAULT_CAPS`]: `chroot` (CAP_SYS_CHROOT) is allowed, everything gated on
//! CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_SYS_BOOT, CAP_SYS_TIME, CAP_BPF, ... is denied (mount,
//! unshare, setns, bpf, perf_event_open, kexec, module loading, keyctl/add_key/request_key,
//! reboot, swapon, pivot_root, open_by_handle_at, userfaultfd, io_uring, ...). `ptrace` is
//! allowed, as Docker does on kernels >= 4.8.
//!
//! Two filters are installed, both without `no_new_privs` (the process still has
//! CAP_SYS_ADMIN, and setuid programs must keep working, as under Docker):
//! 1. the allowlist, compiled by libseccomp into a binary tree of syscall numbers (match: allow,
//!    `clone3`: `ENOSYS`, so libc falls back to `clone`, whose flags the allowlist can check;
//!    default: `EPERM`);
//! 2. a small hand-written filter for what libseccomp cannot express (a range of syscall
//!    numbers): syscalls newer than any in the table fail with `ENOSYS`, as runc does, so libc
//!    falls back to their older equivalents instead of failing with `EPERM`.
//!
//! The kernel runs every filter and keeps the strictest result; among equal actions (two
//! `ERRNO`s) the most recently installed filter wins, so the second filter's `ENOSYS` beats
//! the allowlist's `EPERM`. A syscall of another ABI (i386 through `int 0x80`) kills the
//! process (second filter); x32 syscall numbers (bit 30 set) fail with `EPERM` (the allowlist's
//! bad-architecture action).
//!
//! libseccomp takes ~1.5 ms to generate the allowlist, so the caller of the sandbox compiles it
//! once per process ([`exported_allowlist`]) and sends it to each helper ([`prepare_from`]);
//! the helper's child only copies the programs into the kernel ([`install_default_filter`]).

use crate::status::Failure;
use libc::sock_filter;
use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use std::io::{Read, Seek};
use std::sync::OnceLock;

/// `libc::SYS_*` constants by name.
macro_rules! syscalls {
    ($($name:ident)*) => { &[$(libc::$name),*] };
}

/// Allowed without conditions, on every architecture (Docker's unconditional allowlist, minus
/// io_uring, which current Docker denies, plus ptrace/process_vm_* (allowed on kernels >= 4.8)
/// and chroot (CAP_SYS_CHROOT is in the default set)).
const ALLOW_COMMON: &[libc::c_long] = syscalls!(
    SYS_accept SYS_accept4 SYS_adjtimex SYS_bind SYS_brk SYS_capget SYS_capset SYS_chdir
    SYS_clock_adjtime SYS_clock_getres SYS_clock_gettime SYS_clock_nanosleep SYS_close
    SYS_close_range SYS_connect SYS_copy_file_range SYS_dup SYS_dup3 SYS_epoll_create1
    SYS_epoll_ctl SYS_epoll_pwait SYS_epoll_pwait2 SYS_eventfd2 SYS_execve SYS_execveat SYS_exit
    SYS_exit_group SYS_faccessat SYS_faccessat2 SYS_fadvise64 SYS_fallocate SYS_fanotify_mark
    SYS_fchdir SYS_fchmod SYS_fchmodat SYS_fchown SYS_fchownat SYS_fcntl SYS_fdatasync
    SYS_fgetxattr SYS_flistxattr SYS_flock SYS_fremovexattr SYS_fsetxattr SYS_fstat SYS_fstatfs
    SYS_fsync SYS_ftruncate SYS_futex SYS_futex_waitv SYS_getcpu SYS_getcwd SYS_getdents64
    SYS_getegid SYS_geteuid SYS_getgid SYS_getgroups SYS_getitimer SYS_getpeername SYS_getpgid
    SYS_getpid SYS_getppid SYS_getpriority SYS_getrandom SYS_getresgid SYS_getresuid
    SYS_getrlimit SYS_get_robust_list SYS_getrusage SYS_getsid SYS_getsockname SYS_getsockopt
    SYS_gettid SYS_gettimeofday SYS_getuid SYS_getxattr SYS_inotify_add_watch SYS_inotify_init1
    SYS_inotify_rm_watch SYS_io_cancel SYS_ioctl SYS_io_destroy SYS_io_getevents SYS_ioprio_get
    SYS_ioprio_set SYS_io_setup SYS_io_submit SYS_kill SYS_landlock_add_rule
    SYS_landlock_create_ruleset SYS_landlock_restrict_self SYS_lgetxattr SYS_linkat SYS_listen
    SYS_listxattr SYS_llistxattr SYS_lremovexattr SYS_lseek SYS_lsetxattr SYS_madvise
    SYS_membarrier SYS_memfd_create SYS_memfd_secret SYS_mincore SYS_mkdirat SYS_mknodat
    SYS_mlock SYS_mlock2 SYS_mlockall SYS_mmap SYS_mprotect SYS_mq_getsetattr SYS_mq_notify
    SYS_mq_open SYS_mq_timedreceive SYS_mq_timedsend SYS_mq_unlink SYS_mremap SYS_msgctl
    SYS_msgget SYS_msgrcv SYS_msgsnd SYS_msync SYS_munlock SYS_munlockall SYS_munmap
    SYS_name_to_handle_at SYS_nanosleep SYS_newfstatat SYS_openat SYS_openat2 SYS_pidfd_open
    SYS_pidfd_send_signal SYS_pipe2 SYS_pkey_alloc SYS_pkey_free SYS_pkey_mprotect SYS_ppoll
    SYS_prctl SYS_pread64 SYS_preadv SYS_preadv2 SYS_prlimit64 SYS_process_mrelease SYS_pselect6
    SYS_pwrite64 SYS_pwritev SYS_pwritev2 SYS_read SYS_readahead SYS_readlinkat SYS_readv
    SYS_recvfrom SYS_recvmmsg SYS_recvmsg SYS_remap_file_pages SYS_removexattr SYS_renameat
    SYS_renameat2 SYS_restart_syscall SYS_rseq SYS_rt_sigaction SYS_rt_sigpending
    SYS_rt_sigprocmask SYS_rt_sigqueueinfo SYS_rt_sigreturn SYS_rt_sigsuspend
    SYS_rt_sigtimedwait SYS_rt_tgsigqueueinfo SYS_sched_getaffinity SYS_sched_getattr
    SYS_sched_getparam SYS_sched_get_priority_max SYS_sched_get_priority_min
    SYS_sched_getscheduler SYS_sched_rr_get_interval SYS_sched_setaffinity SYS_sched_setattr
    SYS_sched_setparam SYS_sched_setscheduler SYS_sched_yield SYS_seccomp SYS_semctl SYS_semget
    SYS_semop SYS_semtimedop SYS_sendfile SYS_sendmmsg SYS_sendmsg SYS_sendto SYS_setfsgid
    SYS_setfsuid SYS_setgid SYS_setgroups SYS_setitimer SYS_setpgid SYS_setpriority SYS_setregid
    SYS_setresgid SYS_setresuid SYS_setreuid SYS_setrlimit SYS_set_robust_list SYS_setsid
    SYS_setsockopt SYS_set_tid_address SYS_setuid SYS_setxattr SYS_shmat SYS_shmctl SYS_shmdt
    SYS_shmget SYS_shutdown SYS_sigaltstack SYS_signalfd4 SYS_socketpair SYS_splice SYS_statfs
    SYS_statx SYS_symlinkat SYS_sync SYS_sync_file_range SYS_syncfs SYS_sysinfo SYS_tee
    SYS_tgkill SYS_timer_create SYS_timer_delete SYS_timer_getoverrun SYS_timer_gettime
    SYS_timer_settime SYS_timerfd_create SYS_timerfd_gettime SYS_timerfd_settime SYS_times
    SYS_tkill SYS_truncate SYS_umask SYS_uname SYS_unlinkat SYS_utimensat SYS_vmsplice SYS_wait4
    SYS_waitid SYS_write SYS_writev SYS_ptrace SYS_process_vm_readv SYS_process_vm_writev
    SYS_chroot
);

/// Legacy syscalls that exist only on x86_64 (aarch64 has only the `*at` forms), and
/// `arch_prctl`/`modify_ldt`.
#[cfg(target_arch = "x86_64")]
const ALLOW_ARCH: &[libc::c_long] = syscalls!(
    SYS_access SYS_alarm SYS_chmod SYS_chown SYS_creat SYS_dup2 SYS_epoll_create
    SYS_epoll_ctl_old SYS_epoll_wait SYS_epoll_wait_old SYS_eventfd SYS_fork SYS_futimesat
    SYS_getdents SYS_getpgrp SYS_get_thread_area SYS_inotify_init SYS_lchown SYS_link SYS_lstat
    SYS_mkdir SYS_mknod SYS_open SYS_pause SYS_pipe SYS_poll SYS_readlink SYS_rename SYS_rmdir
    SYS_select SYS_set_thread_area SYS_signalfd SYS_stat SYS_symlink SYS_time SYS_unlink
    SYS_utime SYS_utimes SYS_vfork SYS_arch_prctl SYS_modify_ldt
    // io_pgetevents has no libc constant.
);
#[cfg(target_arch = "x86_64")]
const ALLOW_ARCH_RAW: &[libc::c_long] = &[333 /* io_pgetevents */];

#[cfg(target_arch = "aarch64")]
const ALLOW_ARCH: &[libc::c_long] = &[];
#[cfg(target_arch = "aarch64")]
const ALLOW_ARCH_RAW: &[libc::c_long] = &[292 /* io_pgetevents */];

/// Syscalls added in kernels 6.5 to 6.7 that Docker allows; numbers from 424 on are shared by
/// every architecture.
const ALLOW_NEW: &[libc::c_long] = &[
    451, // cachestat
    452, // fchmodat2
    453, // map_shadow_stack
    454, // futex_wake
    455, // futex_wait
    456, // futex_requeue
];

/// The highest syscall number the table knows; higher numbers fail with `ENOSYS`.
const LAST_KNOWN: u32 = 456;

/// `clone` flags that create namespaces: NEWNS NEWCGROUP NEWUTS NEWIPC NEWUSER NEWPID NEWNET.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7e02_0000;

/// `AF_VSOCK`, which Docker's profile denies (host/guest sockets).
const AF_VSOCK: u64 = 40;

/// `personality` values Docker allows: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32,
/// and the query 0xffffffff.
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// `AUDIT_ARCH_*` of the native ABI.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: Option<u32> = Some(0xc000_003e);
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: Option<u32> = Some(0xc000_00b7);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH: Option<u32> = None;

/// libseccomp's binary-tree code generation (`SCMP_FLTATR_CTL_OPTIMIZE` = 2, libseccomp >= 2.5):
/// a syscall costs about log2(entries) comparisons instead of a linear scan.
const OPTIMIZE_BINARY_TREE: u32 = 2;

/// The two compiled programs.
struct Programs {
    allowlist: Vec<sock_filter>,
    tail: Vec<sock_filter>,
}

static PROGRAMS: OnceLock<Result<Programs, String>> = OnceLock::new();

/// A libseccomp syscall from a `SYS_*` number (all fit in an `i32`).
fn sys(nr: libc::c_long) -> Result<ScmpSyscall, String> {
    i32::try_from(nr)
        .map(ScmpSyscall::from)
        .map_err(|_| format!("syscall number {nr} out of range"))
}

/// `(arg & mask) == value` on the whole 64-bit argument.
fn masked_eq(arg: u32, mask: u64, value: u64) -> ScmpArgCompare {
    ScmpArgCompare::new(arg, ScmpCompareOp::MaskedEqual(mask), value)
}

fn compile() -> Result<Programs, String> {
    let Some(audit_arch) = AUDIT_ARCH else {
        return Err(format!(
            "no seccomp profile for the {} architecture",
            std::env::consts::ARCH
        ));
    };
    let e = |e: libseccomp::error::SeccompError| e.to_string();
    let allow = ScmpAction::Allow;
    // The context holds the native architecture only.
    let mut ctx = ScmpFilterContext::new(ScmpAction::Errno(libc::EPERM)).map_err(e)?;
    // Reached by x32 numbers on x86_64, and by other ABIs, which the tail filter kills (the
    // kernel keeps the strictest result).
    ctx.set_act_badarch(ScmpAction::Errno(libc::EPERM))
        .map_err(e)?;
    // Only read by seccomp_load, which is not used (see `load`); set for clarity.
    ctx.set_ctl_nnp(false).map_err(e)?;
    ctx.set_ctl_optimize(OPTIMIZE_BINARY_TREE).map_err(e)?;
    for nr in ALLOW_COMMON
        .iter()
        .chain(ALLOW_ARCH)
        .chain(ALLOW_ARCH_RAW)
        .chain(ALLOW_NEW)
    {
        ctx.add_rule(allow, sys(*nr)?).map_err(e)?;
    }
    // clone: only without namespace flags (flags are the first argument on x86_64 and aarch64).
    ctx.add_rule_conditional(
        allow,
        sys(libc::SYS_clone)?,
        &[masked_eq(0, CLONE_NAMESPACE_FLAGS, 0)],
    )
    .map_err(e)?;
    // socket: every family but AF_VSOCK, compared on the low 32 bits (the kernel reads an
    // `int`). "low word != AF_VSOCK" is "some bit i of the low word differs from AF_VSOCK's":
    // one rule per bit, since libseccomp compares all 64 bits and has no masked "not equal".
    let socket = sys(libc::SYS_socket)?;
    for bit in 0..32 {
        let m = 1u64 << bit;
        ctx.add_rule_conditional(allow, socket, &[masked_eq(0, m, !AF_VSOCK & m)])
            .map_err(e)?;
    }
    // personality: the allowed values, on the low 32 bits (the kernel reads an unsigned int).
    let personality = sys(libc::SYS_personality)?;
    for p in PERSONALITIES {
        ctx.add_rule_conditional(allow, personality, &[masked_eq(0, 0xffff_ffff, p)])
            .map_err(e)?;
    }
    ctx.add_rule(ScmpAction::Errno(libc::ENOSYS), sys(libc::SYS_clone3)?)
        .map_err(e)?;
    Ok(Programs {
        allowlist: parse(&export(&ctx)?)?,
        tail: tail_program(audit_arch),
    })
}

/// The filter's BPF program as bytes (libseccomp 2.5 exports only to a file descriptor).
fn export(ctx: &ScmpFilterContext) -> Result<Vec<u8>, String> {
    let fd = rustix::fs::memfd_create("rbuild-seccomp", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| format!("memfd for the seccomp program: {e}"))?;
    ctx.export_bpf(&fd).map_err(|e| e.to_string())?;
    let mut file = std::fs::File::from(fd);
    let mut bytes = Vec::new();
    file.rewind()
        .and_then(|()| file.read_to_end(&mut bytes))
        .map_err(|e| format!("read the seccomp program back: {e}"))?;
    Ok(bytes)
}

/// Size of one classic-BPF instruction (the kernel's `struct sock_filter`).
const INS: usize = std::mem::size_of::<sock_filter>();

/// A BPF program from its in-memory bytes (native byte order, as libseccomp exports it).
fn parse(bytes: &[u8]) -> Result<Vec<sock_filter>, String> {
    let n = bytes.len() / INS;
    if n == 0 || n > usize::from(u16::MAX) || !bytes.len().is_multiple_of(INS) {
        return Err(format!("seccomp program of {} bytes", bytes.len()));
    }
    Ok(bytes
        .chunks_exact(INS)
        .map(|c| sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// The allowlist program as bytes, compiled once per process: the caller of the sandbox sends
/// it to each helper ([`prepare_from`]), so the ~1.5 ms libseccomp takes to build it is paid
/// once per build, not once per RUN.
pub(crate) fn exported_allowlist() -> Result<Vec<u8>, Failure> {
    let p = programs()?;
    let mut bytes = Vec::with_capacity(p.allowlist.len() * INS);
    for i in &p.allowlist {
        bytes.extend_from_slice(&i.code.to_ne_bytes());
        bytes.push(i.jt);
        bytes.push(i.jf);
        bytes.extend_from_slice(&i.k.to_ne_bytes());
    }
    Ok(bytes)
}

/// The second filter: syscalls newer than [`LAST_KNOWN`] fail with `ENOSYS`, syscalls of
/// another ABI kill the process, every other syscall is left to the allowlist. Eight
/// classic-BPF instructions.
fn tail_program(audit_arch: u32) -> Vec<sock_filter> {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JGE_K: u16 = 0x35;
    const JGT_K: u16 = 0x25;
    const RET_K: u16 = 0x06;
    // Offsets of `nr` and `arch` in `struct seccomp_data`.
    const NR: u32 = 0;
    const ARCH_OFFSET: u32 = 4;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let ins = |code: u16, jt: u8, jf: u8, k: u32| sock_filter { code, jt, jf, k };
    vec![
        /* 0 */ ins(LD_W_ABS, 0, 0, ARCH_OFFSET),
        /* 1 */ ins(JEQ_K, 1, 0, audit_arch),
        /* 2 */ ins(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        /* 3 */ ins(LD_W_ABS, 0, 0, NR),
        /* 4 */ ins(JGE_K, 1, 0, X32_SYSCALL_BIT), // -> 6: the allowlist denies it
        /* 5 */ ins(JGT_K, 1, 0, LAST_KNOWN), // -> 7
        /* 6 */ ins(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
        /* 7 */ ins(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
    ]
}

fn programs() -> Result<&'static Programs, Failure> {
    PROGRAMS
        .get_or_init(compile)
        .as_ref()
        .map_err(|e| Failure::setup(format!("compile the seccomp filter: {e}")))
}

/// Compiles the filter programs once for this process (e.g. in the helper before it forks, so
/// the child only installs them). [`install_default_filter`] calls it too.
pub(crate) fn prepare() -> Result<(), Failure> {
    programs().map(|_| ())
}

/// Like [`prepare`], with the allowlist the caller compiled ([`exported_allowlist`] of the same
/// binary) instead of compiling it here.
pub(crate) fn prepare_from(allowlist: &[u8]) -> Result<(), Failure> {
    let Some(audit_arch) = AUDIT_ARCH else {
        return prepare();
    };
    let r = parse(allowlist).map(|allowlist| Programs {
        allowlist,
        tail: tail_program(audit_arch),
    });
    // Already set only if this process compiled its own (then both are the same program).
    let _ = PROGRAMS.set(r);
    prepare()
}

fn load(what: &str, prog: &[sock_filter]) -> Result<(), Failure> {
    let len = u16::try_from(prog.len())
        .map_err(|_| Failure::setup(format!("seccomp {what}: program too long")))?;
    let fprog = libc::sock_fprog {
        len,
        // The kernel only reads the program.
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points to `len` valid instructions for the duration of the call; the
    // kernel copies them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_uint,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        let e = nix::errno::Errno::last();
        return Err(Failure::setup(format!(
            "install the seccomp {what} (seccomp(SECCOMP_SET_MODE_FILTER)): {e}"
        )));
    }
    Ok(())
}

/// Installs Docker's default seccomp profile in the calling, single-threaded process. Needs
/// CAP_SYS_ADMIN (it does not set `no_new_privs`). Afterwards the process may still drop
/// capabilities (prctl, capset), switch user (setgroups, setresgid, setresuid), close fds
/// (close_range) and exec.
pub(crate) fn install_default_filter() -> Result<(), Failure> {
    let p = programs()?;
    load("filter", &p.allowlist)?;
    // Last: among equal actions the newest filter's errno wins (ENOSYS over EPERM).
    load("ENOSYS filter", &p.tail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::ForkResult;

    /// Root is needed (CAP_SYS_ADMIN installs a filter without no_new_privs).
    fn root_or_skip(name: &str) -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        if std::env::var("RBUILD_REQUIRE_ROOT").as_deref() == Ok("1") {
            panic!("{name} needs root and RBUILD_REQUIRE_ROOT=1 is set");
        }
        eprintln!("SKIPPED {name}: needs root (RBUILD_REQUIRE_ROOT=1 makes this a failure)");
        false
    }

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
}
