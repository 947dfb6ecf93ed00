//! The helper process (`helper_exe __rbuild-sandbox-helper <caller-pid>`) and its child, which
//! becomes pid 1 of the sandbox.

use crate::mounts::{self, Generated};
use crate::spec::{Network, RunSpec};
use crate::status::{step, FailKind, Failure, StatusMsg, STATUS_FD};
use crate::{caps, net, user};
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

/// The argv[1] that makes [`helper_main_if_requested`] run the helper.
pub const HELPER_MARKER: &str = "__rbuild-sandbox-helper";

/// The default `PATH` used to find `args[0]` when the spec's env has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// If argv[1] is the private helper marker, runs the helper and exits the process; otherwise returns.
pub fn helper_main_if_requested() {
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() != Some(OsStr::new(HELPER_MARKER)) {
        return;
    }
    let caller: Option<i32> = args
        .next()
        .and_then(|a| a.to_str().and_then(|s| s.parse().ok()));
    std::process::exit(helper_main(caller));
}

fn write_status(out: &mut File, msg: &StatusMsg) {
    if let Ok(mut line) = serde_json::to_vec(msg) {
        line.push(b'\n');
        let _ = out.write_all(&line);
    }
}

fn helper_main(caller: Option<i32>) -> i32 {
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
    match run_helper(caller, &mut status) {
        Ok(msg) => {
            write_status(&mut status, &msg);
            match msg {
                StatusMsg::Exited(c) => c,
                StatusMsg::Signaled(s) => 128 + s,
                StatusMsg::Failed { .. } => 1,
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
    let resolv = match spec.resolv_conf {
        Some(_) => Vec::new(),
        None => std::fs::read("/etc/resolv.conf").unwrap_or_default(),
    };
    Generated {
        hosts: hosts.into_bytes(),
        resolv,
    }
}

fn run_helper(caller: Option<i32>, status: &mut File) -> Result<StatusMsg, Failure> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(step("prctl(PR_SET_PDEATHSIG)"))?;
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
    let spec: RunSpec = serde_json::from_slice(&input)
        .map_err(|e| Failure::setup(format!("decode run spec: {e}")))?;
    spec.validate()
        .map_err(|e| Failure::setup(format!("invalid run spec: {e}")))?;
    let generated = generated_files(&spec);

    let devnull = File::open("/dev/null").map_err(step("open /dev/null"))?;
    nix::unistd::dup2_stdin(&devnull).map_err(step("dup2 /dev/null to stdin"))?;
    drop(devnull);

    let mut flags = CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if spec.network == Network::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    nix::sched::unshare(flags).map_err(step("unshare(NEWPID|NEWUTS|NEWIPC[|NEWNET])"))?;
    if spec.network == Network::None {
        net::loopback_up()?;
    }
    if !spec.hostname.is_empty() {
        nix::unistd::sethostname(&spec.hostname)
            .map_err(step(format!("sethostname {:?}", spec.hostname)))?;
    }

    // SAFETY: the helper is a fresh single-threaded process (main() called us first), so the
    // child may allocate and run ordinary Rust code until it execs.
    let child = match unsafe { nix::unistd::fork() }.map_err(step("fork"))? {
        ForkResult::Child => {
            let f = match child_main(&spec, &generated) {
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
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(StatusMsg::Exited(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(StatusMsg::Signaled(sig as i32)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(step("waitpid")(e)),
        }
    }
}

/// Runs in pid 1 of the sandbox: mounts, pivots, switches user and execs. Returns only on failure.
fn child_main(spec: &RunSpec, generated: &Generated) -> Result<Infallible, Failure> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(step("prctl(PR_SET_PDEATHSIG) in pid 1"))?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    mounts::setup_and_pivot(spec, generated)?;

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

    caps::restrict_to_default()?;
    let sgids: Vec<Gid> = user.sgids.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&sgids).map_err(step("setgroups"))?;
    let (uid, gid) = (Uid::from_raw(user.uid), Gid::from_raw(user.gid));
    nix::unistd::setresgid(gid, gid, gid).map_err(step(format!("setgid {}", user.gid)))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(step(format!("setuid {}", user.uid)))?;
    nix::sys::prctl::set_no_new_privs().map_err(step("prctl(PR_SET_NO_NEW_PRIVS)"))?;

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
