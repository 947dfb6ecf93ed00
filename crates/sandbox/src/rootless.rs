//! Rootless mode: running rbuild as an ordinary user inside a user namespace of its own.
//!
//! When the effective uid is not 0, [`enter_if_needed`] re-executes the current binary (same
//! arguments) in a new user and mount namespace whose maps are the user's own id as 0 plus the
//! user's `/etc/subuid` and `/etc/subgid` ranges as 1..=N, written by the setuid helpers
//! `newuidmap`/`newgidmap` (Debian's `uidmap`), as `podman unshare` and rootlesskit do. The
//! outer process only waits for the inner one (forwarding SIGTERM and SIGHUP) and exits with its
//! status. Handshake: the child unshares, writes one byte on the "ready" pipe, and blocks on the
//! "go" pipe until the parent has written both maps. The environment marker [`CHILD_ENV`]
//! tells the child who it is (and prevents re-exec loops); [`INFO_ENV`] carries the ranges for
//! [`current`] (`rbuild info`).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Environment marker of the inner process: `READY_FD,GO_FD`.
pub const CHILD_ENV: &str = "_RBUILD_ROOTLESS_CHILD";
/// Environment variable describing the rootless mapping to the inner process (and its children).
pub const INFO_ENV: &str = "_RBUILD_ROOTLESS";

/// Why rootless mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum RootlessError {
    /// The user has no subordinate id range in `/etc/subuid` or `/etc/subgid`.
    #[error("rootless mode: no range for user {user} (uid {uid}) in {file}; add one as root, e.g. `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}`")]
    NoRange {
        /// User name.
        user: String,
        /// Host uid.
        uid: u32,
        /// `/etc/subuid` or `/etc/subgid`.
        file: String,
    },
    /// `newuidmap` or `newgidmap` is not installed.
    #[error("rootless mode: {name} not found; install it as root: `apt-get install uidmap` (Debian/Ubuntu) or `dnf install shadow-utils`")]
    NoHelper {
        /// The helper's name.
        name: &'static str,
    },
    /// A map helper ran but failed.
    #[error("rootless mode: {name} failed ({status}): {stderr}")]
    MapFailed {
        /// The helper's name.
        name: &'static str,
        /// Its exit status.
        status: String,
        /// What it printed.
        stderr: String,
    },
    /// A system call of the re-exec failed.
    #[error("rootless mode: {step}: {source}")]
    Sys {
        /// What was attempted.
        step: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

fn sys(step: &'static str) -> impl FnOnce(std::io::Error) -> RootlessError {
    move |source| RootlessError::Sys { step, source }
}

fn nix_sys(step: &'static str) -> impl FnOnce(nix::Error) -> RootlessError {
    move |e| RootlessError::Sys {
        step,
        source: std::io::Error::from_raw_os_error(e as i32),
    }
}

/// A subordinate id range (`/etc/subuid` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// First host id.
    pub start: u32,
    /// Number of ids.
    pub count: u32,
}

/// The mapping of a rootless rbuild: the user's ids and subordinate ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootlessInfo {
    /// The user's host uid (0 inside).
    pub uid: u32,
    /// The user's host gid (0 inside).
    pub gid: u32,
    /// Host uids of in-namespace uids 1..
    pub subuid: IdRange,
    /// Host gids of in-namespace gids 1..
    pub subgid: IdRange,
}

impl RootlessInfo {
    fn encode(&self) -> String {
        format!(
            "{}:{}:{}:{}:{}:{}",
            self.uid,
            self.gid,
            self.subuid.start,
            self.subuid.count,
            self.subgid.start,
            self.subgid.count
        )
    }

    fn decode(s: &str) -> Option<Self> {
        let v: Vec<u32> = s
            .split(':')
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        let [uid, gid, us, uc, gs, gc] = v[..] else {
            return None;
        };
        Some(RootlessInfo {
            uid,
            gid,
            subuid: IdRange {
                start: us,
                count: uc,
            },
            subgid: IdRange {
                start: gs,
                count: gc,
            },
        })
    }
}

/// The rootless mapping this process runs under, if it is the inner process of rootless mode
/// (or a child of it).
pub fn current() -> Option<RootlessInfo> {
    std::env::var(INFO_ENV)
        .ok()
        .and_then(|s| RootlessInfo::decode(&s))
}

/// Whether this process runs in rootless mode (inside the user namespace).
pub fn is_rootless() -> bool {
    current().is_some()
}

/// Whether this process runs in a user namespace other than the initial one (rootless mode, or
/// a container with a user namespace): overlayfs must then be mounted with `userxattr`.
pub fn in_user_namespace() -> bool {
    static IN_USERNS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *IN_USERNS.get_or_init(|| {
        std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| {
            let fields: Vec<&str> = m.split_whitespace().collect();
            fields != ["0", "0", "4294967295"]
        })
    })
}

/// The slirp4netns binary the default network would use, if installed.
pub fn slirp4netns_path() -> Option<PathBuf> {
    crate::net::find_slirp4netns()
}

/// Whether `/dev/net/tun` opens for this process (rootless slirp4netns needs it).
pub fn tun_accessible() -> bool {
    crate::net::check_tun_rootless().is_ok()
}

/// Rootless: where run cgroups go in the user's delegated cgroup v2 subtree (relative to the
/// v2 root), or `None` when nothing is delegated (limits are then not enforced).
pub fn delegated_cgroup() -> Option<String> {
    crate::cgroup::delegated_parent()
}

/// The first range of `user` (name or numeric uid) in an `/etc/subuid`-format text.
pub fn find_range(text: &str, user: &str, id: u32) -> Option<IdRange> {
    text.lines().find_map(|line| {
        let mut parts = line.trim().split(':');
        let (who, start, count) = (parts.next()?, parts.next()?, parts.next()?);
        if who != user && who.parse::<u32>().ok() != Some(id) {
            return None;
        }
        let range = IdRange {
            start: start.parse().ok()?,
            count: count.parse().ok()?,
        };
        (range.count > 0).then_some(range)
    })
}

fn range_of(file: &str, user: &str, id: u32) -> Result<IdRange, RootlessError> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    find_range(&text, user, id).ok_or_else(|| RootlessError::NoRange {
        user: user.to_string(),
        uid: id,
        file: file.to_string(),
    })
}

/// `newuidmap`/`newgidmap` on `PATH`, else in /usr/bin or /usr/sbin.
fn find_helper(name: &'static str) -> Result<PathBuf, RootlessError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(RootlessError::NoHelper { name })
}

/// The mapping rootless mode would use for the current user (reads `/etc/subuid`,
/// `/etc/subgid`; checks that `newuidmap`/`newgidmap` exist).
pub fn plan() -> Result<RootlessInfo, RootlessError> {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let subuid = range_of("/etc/subuid", &name, uid.as_raw())?;
    let subgid = range_of("/etc/subgid", &name, uid.as_raw())?;
    find_helper("newuidmap")?;
    find_helper("newgidmap")?;
    Ok(RootlessInfo {
        uid: uid.as_raw(),
        gid: gid.as_raw(),
        subuid,
        subgid,
    })
}

/// What [`enter_if_needed`] decided.
#[derive(Debug)]
pub enum Entered {
    /// Go on in this process: running as root, or already the inner process.
    Continue,
    /// This was the outer process; the inner one exited with this code.
    Exited(i32),
}

/// Enters rootless mode when the effective uid is not 0: call first thing in `main`, while the
/// process is single-threaded. The inner process returns [`Entered::Continue`] as "root" of its
/// user namespace; the outer one returns [`Entered::Exited`] with the inner one's exit code.
pub fn enter_if_needed() -> Result<Entered, RootlessError> {
    if let Ok(fds) = std::env::var(CHILD_ENV) {
        std::env::remove_var(CHILD_ENV);
        return child_side(&fds).map(|()| Entered::Continue);
    }
    if nix::unistd::geteuid().is_root() {
        return Ok(Entered::Continue);
    }
    parent_side().map(Entered::Exited)
}

fn child_side(fds: &str) -> Result<(), RootlessError> {
    let (ready, go) = fds
        .split_once(',')
        .and_then(|(a, b)| Some((a.parse::<i32>().ok()?, b.parse::<i32>().ok()?)))
        .ok_or(RootlessError::Sys {
            step: "read the handshake descriptors",
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?;
    // SAFETY: the parent passed these two pipe ends to us (and nothing else owns them here).
    let (mut ready, mut go) = unsafe { (File::from_raw_fd(ready), File::from_raw_fd(go)) };
    let parent = nix::unistd::getppid();
    // The outer process blocked these for its forwarder; the mask survived exec.
    let _ = nix::sys::signal::SigSet::all().thread_unblock();
    nix::sched::unshare(
        nix::sched::CloneFlags::CLONE_NEWUSER | nix::sched::CloneFlags::CLONE_NEWNS,
    )
    .map_err(nix_sys("unshare(CLONE_NEWUSER|CLONE_NEWNS)"))?;
    ready.write_all(b"1").map_err(sys("signal the parent"))?;
    drop(ready);
    let mut byte = [0u8; 1];
    match go.read(&mut byte) {
        Ok(1) if byte[0] == b'1' => {}
        _ => {
            // The parent printed why (a map helper failed); exit quietly with its code.
            std::process::exit(1)
        }
    }
    nix::unistd::setresgid(0.into(), 0.into(), 0.into()).map_err(nix_sys("setresgid(0)"))?;
    nix::unistd::setresuid(0.into(), 0.into(), 0.into()).map_err(nix_sys("setresuid(0)"))?;
    // The build dies with the outer process, even when that one is SIGKILLed and cannot forward
    // anything (as in root mode, where the sandbox's helpers die with rbuild). Set after the
    // id changes, which clear it; a parent already gone by then is caught by the ppid check.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(nix_sys("prctl(PR_SET_PDEATHSIG)"))?;
    if nix::unistd::getppid() != parent {
        std::process::exit(1)
    }
    // Our mounts (overlay snapshots) stay in this namespace.
    let _ = nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    );
    Ok(())
}

/// Starts `newuidmap`/`newgidmap PID 0 OWN 1 1 START COUNT`.
fn start_map(
    name: &'static str,
    pid: u32,
    own: u32,
    range: IdRange,
) -> Result<std::process::Child, RootlessError> {
    let helper = find_helper(name)?;
    Command::new(&helper)
        .args([
            pid.to_string(),
            "0".into(),
            own.to_string(),
            "1".into(),
            "1".into(),
            range.start.to_string(),
            range.count.to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(sys("run the map helper"))
}

/// Waits for a map helper started by [`start_map`].
fn finish_map(name: &'static str, child: std::process::Child) -> Result<(), RootlessError> {
    let out = child
        .wait_with_output()
        .map_err(sys("wait for the map helper"))?;
    if !out.status.success() {
        return Err(RootlessError::MapFailed {
            name,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Writes both maps of `pid`, the two helpers running side by side.
fn write_maps(pid: u32, info: &RootlessInfo) -> Result<(), RootlessError> {
    let uid = start_map("newuidmap", pid, info.uid, info.subuid)?;
    let gid = start_map("newgidmap", pid, info.gid, info.subgid);
    let uid = finish_map("newuidmap", uid);
    finish_map("newgidmap", gid?)?;
    uid
}

fn pipe_pair(step: &'static str) -> Result<(OwnedFd, OwnedFd), RootlessError> {
    nix::unistd::pipe().map_err(nix_sys(step))
}

fn set_cloexec(fd: &OwnedFd, on: bool) -> Result<(), RootlessError> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let flags = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(fd, FcntlArg::F_SETFD(flags)).map_err(nix_sys("fcntl(F_SETFD)"))?;
    Ok(())
}

fn parent_side() -> Result<i32, RootlessError> {
    let info = plan()?;
    let exe = Path::new("/proc/self/exe");
    let (ready_r, ready_w) = pipe_pair("pipe")?;
    let (go_r, go_w) = pipe_pair("pipe")?;
    // Only the child's ends cross exec; this process is still single-threaded, so no other
    // spawn can inherit them.
    set_cloexec(&ready_r, true)?;
    set_cloexec(&go_w, true)?;
    set_cloexec(&ready_w, false)?;
    set_cloexec(&go_r, false)?;
    // Forward SIGTERM/SIGHUP to the child; SIGINT from a terminal reaches it directly (same
    // process group), so the outer process ignores it.
    use nix::sys::signal::{SigSet, Signal};
    let mut forwarded = SigSet::empty();
    forwarded.add(Signal::SIGTERM);
    forwarded.add(Signal::SIGHUP);
    forwarded.add(Signal::SIGINT);
    forwarded.thread_block().map_err(nix_sys("block signals"))?;
    let mut child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .arg0(
            std::env::args_os()
                .next()
                .unwrap_or_else(|| "rbuild".into()),
        )
        .env(
            CHILD_ENV,
            format!("{},{}", ready_w.as_raw_fd(), go_r.as_raw_fd()),
        )
        .env(INFO_ENV, info.encode())
        .spawn()
        .map_err(sys("re-execute in a user namespace"))?;
    drop(ready_w);
    drop(go_r);
    let pid = child.id();
    let mut ready = File::from(ready_r);
    let mut go = File::from(go_w);
    let mut byte = [0u8; 1];
    // Not ready: the child failed before the unshare (it printed why); no "go" is written
    // then (the pipe may be closed, and SIGPIPE may be fatal here).
    let handshake = match ready.read(&mut byte) {
        Ok(1) => Some(write_maps(pid, &info)),
        _ => None,
    };
    if matches!(handshake, Some(Ok(()))) {
        let _ = go.write_all(b"1");
    }
    drop(go);
    let forwarder_pid = nix::unistd::Pid::from_raw(pid as i32);
    std::thread::spawn(move || loop {
        if let Ok(sig) = forwarded.wait() {
            if sig != Signal::SIGINT {
                let _ = nix::sys::signal::kill(forwarder_pid, sig);
            }
        }
    });
    let status = child.wait().map_err(sys("wait for the inner process"))?;
    handshake.transpose()?;
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        _ => 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_by_name_or_uid() {
        let text = "alice:100000:65536\n1001:200000:1000\nbob:300000:0\n";
        assert_eq!(
            find_range(text, "alice", 1000),
            Some(IdRange {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(
            find_range(text, "carol", 1001),
            Some(IdRange {
                start: 200000,
                count: 1000
            })
        );
        assert_eq!(find_range(text, "bob", 1002), None);
        assert_eq!(find_range(text, "dave", 1003), None);
    }

    #[test]
    fn info_round_trips() {
        let info = RootlessInfo {
            uid: 1000,
            gid: 1001,
            subuid: IdRange {
                start: 100000,
                count: 65536,
            },
            subgid: IdRange {
                start: 200000,
                count: 5,
            },
        };
        assert_eq!(RootlessInfo::decode(&info.encode()), Some(info));
    }
}
