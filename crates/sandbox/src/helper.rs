//! The helper process (`helper_exe __rbuild-sandbox-helper <caller-pid>`) and its child, which
//! becomes pid 1 of the sandbox.

use crate::cgroup::{self, RunCgroup};
use crate::mounts::{self, Generated};
use crate::spec::{Network, RunSpec, Security};
use crate::status::{step, FailKind, Failure, StatusMsg, STATUS_FD};
use crate::{caps, emulation, net, seccomp, user};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Gid, Uid};
use std::convert::Infallible;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

/// The `argv[1]` that makes [`helper_main_if_requested`] run the helper.
pub const HELPER_MARKER: &str = "__rbuild-sandbox-helper";

/// An optional argument after the caller's pid: runs share the helper's pid namespace and
/// `/proc` ([`crate::Sandbox::with_process_sandbox`]).
pub(crate) const NO_PROCESS_SANDBOX_MARKER: &str = "no-process-sandbox";

/// An optional argument after the caller's pid: the helper's standard output is a
/// pseudo-terminal that the command gets as standard input and controlling terminal too
/// ([`crate::Sandbox::run_interactive`]).
pub(crate) const TTY_MARKER: &str = "tty";

/// The default `PATH` used to find `args[0]` when the spec's env has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// If `argv[1]` is the private helper marker, runs the helper and exits the process; otherwise returns.
pub fn helper_main_if_requested() {
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() != Some(OsStr::new(HELPER_MARKER)) {
        return;
    }
    let caller: Option<i32> = args
        .next()
        .and_then(|a| a.to_str().and_then(|s| s.parse().ok()));
    let rest: Vec<_> = args.collect();
    let tty = rest.iter().any(|a| a == TTY_MARKER);
    let process_sandbox = !rest.iter().any(|a| a == NO_PROCESS_SANDBOX_MARKER);
    std::process::exit(helper_main(caller, tty, process_sandbox));
}

fn write_status(out: &mut File, msg: &StatusMsg) {
    if let Ok(mut line) = serde_json::to_vec(msg) {
        line.push(b'\n');
        let _ = out.write_all(&line);
    }
}

fn helper_main(caller: Option<i32>, tty: bool, process_sandbox: bool) -> i32 {
    // SAFETY: F_GETFD only inspects the descriptor table.
    if unsafe { libc::fcntl(STATUS_FD, libc::F_GETFD) } < 0 {
        eprintln!("{HELPER_MARKER}: no status pipe on fd {STATUS_FD}; this mode is internal to rbuild-sandbox");
        return 125;
    }
    // SAFETY: fd 3 is open (checked above) and handed to us by the caller; we own it from here.
    // Mark it close-on-exec so the sandboxed command never inherits it.
    let mut status = unsafe {
        libc::fcntl(STATUS_FD, libc::F_SETFD, libc::FD_CLOEXEC);
        File::from_raw_fd(STATUS_FD)
    };
    match run_helper(caller, tty, process_sandbox, &mut status) {
        Ok(msg) => {
            write_status(&mut status, &msg);
            match msg {
                StatusMsg::Exited(c) => c,
                StatusMsg::Signaled(s) => 128 + s,
                StatusMsg::Failed { .. } | StatusMsg::OomKilled { .. } => 1,
            }
        }
        Err(f) => {
            write_status(
                &mut status,
                &StatusMsg::Failed {
                    kind: f.kind,
                    message: f.message,
                },
            );
            1
        }
    }
}

fn generated_files(spec: &RunSpec) -> Generated {
    let mut hosts = String::from("127.0.0.1\tlocalhost");
    if !spec.hostname.is_empty() {
        hosts.push(' ');
        hosts.push_str(&spec.hostname);
    }
    hosts.push_str("\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for h in &spec.extra_hosts {
        hosts.push_str(&format!("{}\t{}\n", h.ip, h.name));
    }
    let resolv = match spec.resolv_conf {
        Some(_) => Vec::new(),
        None => {
            let host = std::fs::read("/etc/resolv.conf").unwrap_or_default();
            if spec.network == Network::Private {
                net::private_resolv_conf(&host)
            } else {
                host
            }
        }
    };
    Generated {
        hosts: hosts.into_bytes(),
        resolv,
    }
}

/// What [`fds_from`] does to each descriptor.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FdAction {
    /// Close it now.
    Close,
    /// Mark it close-on-exec.
    CloseOnExec,
}

/// Closes (or marks close-on-exec) every descriptor from `first` up: close_range(2), or one by
/// one from /proc/self/fd on kernels without it.
fn fds_from(first: u32, action: FdAction) -> Result<(), Failure> {
    let flags = match action {
        FdAction::Close => 0,
        FdAction::CloseOnExec => libc::CLOSE_RANGE_CLOEXEC,
    };
    // SAFETY: close_range with plain integer arguments.
    if unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, flags) } == 0 {
        return Ok(());
    }
    let entries = std::fs::read_dir("/proc/self/fd").map_err(step("list /proc/self/fd"))?;
    let fds: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds.into_iter().filter(|fd| *fd >= first as i32) {
        // SAFETY: descriptors nobody in this fresh process uses; a number that is already
        // closed (the directory listing's own) just fails.
        unsafe {
            match action {
                FdAction::Close => libc::close(fd),
                FdAction::CloseOnExec => libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC),
            }
        };
    }
    Ok(())
}

/// Gives the process a new, empty session keyring, so the command cannot reach the keyring of
/// whoever started rbuild (keyctl is also denied by the seccomp filter).
fn new_session_keyring() -> Result<(), Failure> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl(JOIN_SESSION_KEYRING, NULL) creates and joins an anonymous keyring.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if r < 0 {
        let e = nix::errno::Errno::last();
        // Kernels without key support (CONFIG_KEYS=n) have no keyrings to leak.
        if e != nix::errno::Errno::ENOSYS {
            return Err(step("keyctl(JOIN_SESSION_KEYRING)")(e));
        }
    }
    Ok(())
}

fn run_helper(
    caller: Option<i32>,
    tty: bool,
    process_sandbox: bool,
    status: &mut File,
) -> Result<StatusMsg, Failure> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(step("prctl(PR_SET_PDEATHSIG)"))?;
    // Descriptors whoever started rbuild left open (not close-on-exec) must not reach the
    // command: keep stdio and the status pipe only.
    fds_from(STATUS_FD as u32 + 1, FdAction::Close)?;
    if let Some(pid) = caller {
        if nix::unistd::getppid().as_raw() != pid {
            return Err(Failure::setup(
                "the caller exited before the sandbox started",
            ));
        }
    }
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(step("read run spec from stdin"))?;
    // The caller's framing (see `Sandbox::run`): the seccomp allowlist's length (u32 LE), the
    // allowlist, the spec.
    let (seccomp_program, spec_json) = input
        .split_first_chunk::<4>()
        .and_then(|(len, rest)| {
            let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
            (len <= rest.len()).then(|| rest.split_at(len))
        })
        .ok_or_else(|| Failure::setup("truncated helper input"))?;
    let spec: RunSpec = serde_json::from_slice(spec_json)
        .map_err(|e| Failure::setup(format!("decode run spec: {e}")))?;
    spec.validate()
        .map_err(|e| Failure::setup(format!("invalid run spec: {e}")))?;
    let generated = generated_files(&spec);

    if tty {
        // The terminal on stdout is the command's stdin as well.
        nix::unistd::dup2_stdin(std::io::stdout()).map_err(step("dup2 the terminal to stdin"))?;
    } else {
        let devnull = File::open("/dev/null").map_err(step("open /dev/null"))?;
        nix::unistd::dup2_stdin(&devnull).map_err(step("dup2 /dev/null to stdin"))?;
        drop(devnull);
    }

    // The network namespace comes first, alone: slirp4netns must start in the host's pid
    // namespace, before the sandbox's exists.
    let mut slirp = None;
    if spec.network != Network::Host {
        let host_ns = match spec.network {
            Network::Private => Some(
                File::open("/proc/self/ns/net")
                    .map(std::os::fd::OwnedFd::from)
                    .map_err(step("open /proc/self/ns/net"))?,
            ),
            _ => None,
        };
        let binary = match host_ns {
            Some(_) => Some(net::find_slirp4netns().ok_or_else(|| {
                Failure::setup("slirp4netns not found (install Debian's slirp4netns package)")
            })?),
            None => None,
        };
        // Rootless, the host's namespace cannot be joined again: slirp4netns is forked before
        // the unshare and waits at a gate.
        let mut gate = None;
        if let (Some(binary), true) = (&binary, crate::rootless::is_rootless()) {
            net::check_tun_rootless()?;
            let (open, opened) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(step("pipe for the slirp4netns gate"))?;
            slirp = Some(net::Slirp::start(
                binary,
                net::Launch::Gate {
                    open,
                    opened: &opened,
                },
            )?);
            gate = Some(opened);
        }
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(step("unshare(NEWNET)"))?;
        net::loopback_up()?;
        if let Some(opened) = gate {
            File::from(opened)
                .write_all(b"1")
                .map_err(step("open the slirp4netns gate"))?;
        } else if let (Some(host_ns), Some(binary)) = (host_ns, &binary) {
            slirp = Some(net::Slirp::start(binary, net::Launch::SetNs(&host_ns))?);
        }
    }
    // Without the process sandbox (rootless in a container that masks /proc), the run stays
    // in this pid namespace and gets a bind mount of its /proc.
    let (flags, what) = match process_sandbox {
        true => (
            CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC,
            "unshare(NEWPID|NEWUTS|NEWIPC)",
        ),
        false => (
            CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC,
            "unshare(NEWUTS|NEWIPC)",
        ),
    };
    nix::sched::unshare(flags).map_err(step(what))?;
    if !spec.hostname.is_empty() {
        nix::unistd::sethostname(&spec.hostname)
            .map_err(step(format!("sethostname {:?}", spec.hostname)))?;
    }
    // Limits: a cgroup of the run's own (the child moves itself in first thing).
    let cgroup = if spec.limits.needs_cgroup() {
        Some(RunCgroup::create(
            &spec.limits,
            &cgroup::run_name(std::process::id()),
        )?)
    } else {
        None
    };
    if spec.security == Security::Sandbox {
        // Compiled by the caller (or here, if it sent none), installed by the child.
        if seccomp_program.is_empty() {
            seccomp::prepare()?;
        } else {
            seccomp::prepare_from(seccomp_program)?;
        }
    }
    // A foreign architecture's run: the emulator is opened here, on the host, and registered
    // by the child in a user namespace whose id maps this helper writes.
    let (emu_child, emu_helper) = match &spec.emulator {
        Some(e) => {
            let (c, h) = emulation::prepare(e)?;
            (Some(c), Some(h))
        }
        None => (None, None),
    };
    // The child execs only after the helper says "go" (once the network is up).
    let (go_r, go_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(step("pipe for go"))?;

    // SAFETY: the helper is a fresh single-threaded process (main() called us first), so the
    // child may allocate and run ordinary Rust code until it execs.
    let child = match unsafe { nix::unistd::fork() }.map_err(step("fork"))? {
        ForkResult::Child => {
            drop(go_w);
            drop(emu_helper);
            // slirp4netns belongs to the helper: the child must not kill it on the way out.
            if let Some(s) = slirp.take() {
                std::mem::forget(s);
            }
            let f = match child_main(
                &spec,
                &generated,
                go_r,
                cgroup.as_ref(),
                (tty, process_sandbox),
                emu_child,
            ) {
                Err(f) => f,
                Ok(never) => match never {},
            };
            let code = if f.kind == FailKind::Exec { 127 } else { 1 };
            write_status(
                status,
                &StatusMsg::Failed {
                    kind: f.kind,
                    message: f.message,
                },
            );
            // SAFETY: leave without running the helper's exit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child,
    };
    drop(go_r);
    drop(emu_child);
    if let Some(side) = emu_helper {
        if let Err(f) = emulation::map_child(side, child) {
            let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            return Err(f);
        }
    }
    if let Some(s) = &slirp {
        if let Err(f) = s.wait_ready() {
            let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            return Err(f);
        }
    }
    let _ = nix::unistd::write(&go_w, b"g");
    drop(go_w);
    let result = loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => break Ok(StatusMsg::Exited(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => break Ok(StatusMsg::Signaled(sig as i32)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => break Err(step("waitpid")(e)),
        }
    };
    drop(slirp);
    if let Some(cg) = cgroup {
        if cg.oom_killed() {
            write_status(
                status,
                &StatusMsg::OomKilled {
                    limit: cg.memory_limit(),
                },
            );
        }
        // The run's processes are gone with pid 1; a cgroup that will not go away is swept
        // by a later run.
        let _ = cg.remove();
    }
    result
}

/// Runs in pid 1 of the sandbox: mounts, pivots, switches user and execs. Returns only on failure.
fn child_main(
    spec: &RunSpec,
    generated: &Generated,
    go: std::os::fd::OwnedFd,
    cgroup: Option<&RunCgroup>,
    (tty, process_sandbox): (bool, bool),
    emulation: Option<emulation::ChildSide>,
) -> Result<Infallible, Failure> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(step("prctl(PR_SET_PDEATHSIG) in pid 1"))?;
    if tty {
        crate::tty::take_controlling_terminal(libc::STDIN_FILENO)
            .map_err(step("make the terminal the controlling terminal"))?;
    }
    if let Some(cg) = cgroup {
        cg.enter()?;
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    mounts::setup_and_pivot(spec, generated, process_sandbox)?;

    let passwd = std::fs::read_to_string("/etc/passwd").ok();
    let group = std::fs::read_to_string("/etc/group").ok();
    let user =
        user::resolve(&spec.user, passwd.as_deref(), group.as_deref()).map_err(|message| {
            Failure {
                kind: FailKind::User,
                message,
            }
        })?;

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&spec.cwd)
        .map_err(step(format!("mkdir working directory {}", spec.cwd)))?;
    nix::unistd::chdir(spec.cwd.as_str()).map_err(step(format!("chdir {}", spec.cwd)))?;

    // Order matters: keyctl and setrlimit beyond the hard limit before the filter and the
    // capability drop; the filter while CAP_SYS_ADMIN remains (no_new_privs stays off).
    new_session_keyring()?;
    cgroup::apply_ulimits(&spec.limits.ulimits)?;
    // Emulation: a user namespace of its own with a private binfmt_misc, entered after the
    // mounts (they stay owned by the host's namespace and are locked in the new one) and
    // before the filter and the capability drop, which then apply inside it.
    if let (Some(emu), Some(side)) = (&spec.emulator, emulation) {
        emulation::enter(emu, side)?;
    }
    if spec.security == Security::Insecure {
        caps::grant_all()?;
    } else {
        seccomp::install_default_filter()?;
        caps::restrict_to_default()?;
    }
    let sgids: Vec<Gid> = user.sgids.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&sgids).map_err(step("setgroups"))?;
    let (uid, gid) = (Uid::from_raw(user.uid), Gid::from_raw(user.gid));
    nix::unistd::setresgid(gid, gid, gid).map_err(step(format!("setgid {}", user.gid)))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(step(format!("setuid {}", user.uid)))?;

    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    let arg0 = &spec.args[0];
    let exec_err = |e: nix::errno::Errno| {
        let desc = e.desc();
        let mut chars = desc.chars();
        let desc = match chars.next() {
            Some(c) => c.to_lowercase().chain(chars).collect::<String>(),
            None => String::new(),
        };
        Failure {
            kind: FailKind::Exec,
            message: format!("exec \"{arg0}\": {desc}"),
        }
    };
    let program = lookup(arg0, &env).map_err(exec_err)?;
    let to_c = |s: &String| {
        CString::new(s.as_bytes()).map_err(|_| Failure::setup("NUL byte in argv or env"))
    };
    let argv = spec.args.iter().map(to_c).collect::<Result<Vec<_>, _>>()?;
    let envp = env.iter().map(to_c).collect::<Result<Vec<_>, _>>()?;
    let program = CString::new(program).map_err(|_| Failure::setup("NUL byte in program path"))?;
    // Wait for the helper's go (the network is up); EOF means the helper gave up.
    let mut b = [0u8; 1];
    loop {
        match nix::unistd::read(&go, &mut b) {
            Ok(1) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            _ => {
                return Err(Failure::setup(
                    "the sandbox helper stopped before the command ran",
                ))
            }
        }
    }
    drop(go);
    fds_from(3, FdAction::CloseOnExec)?;
    match nix::unistd::execve(&program, &argv, &envp) {
        Err(e) => Err(exec_err(e)),
        Ok(never) => match never {},
    }
}

/// Finds `arg0` through `PATH` (from `env`, else a default), like Go's `exec.LookPath`.
fn lookup(arg0: &str, env: &[String]) -> Result<String, nix::errno::Errno> {
    if arg0.contains('/') {
        return Ok(arg0.to_string());
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let mut err = nix::errno::Errno::ENOENT;
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = format!("{dir}/{arg0}");
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if meta.is_dir() {
            continue;
        }
        if meta.permissions().mode() & 0o111 == 0 {
            err = nix::errno::Errno::EACCES;
            continue;
        }
        match nix::unistd::access(candidate.as_str(), nix::unistd::AccessFlags::X_OK) {
            Ok(()) => return Ok(candidate),
            Err(e) => err = e,
        }
    }
    Err(err)
}
