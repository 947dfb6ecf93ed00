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
mod tests;
