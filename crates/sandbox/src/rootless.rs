//! Rootless mode: running rbuild as an ordinary user inside a user namespace of its own.
//!
//! When the effective uid is not 0, [`enter_if_needed`] moves the process itself into a new
//! user and mount namespace whose maps are the user's own id as 0 plus the user's `/etc/subuid`
//! and `/etc/subgid` ranges as 1..=N, written by the setuid helpers `newuidmap`/`newgidmap`
//! (Debian's `uidmap`), as `podman unshare` and rootlesskit do. The helpers must run from the
//! host's user namespace, so two children forked first (while the process is single-threaded)
//! wait at a pipe until the process has unshared, then exec one helper each on it, side by
//! side; no re-exec, no outer process, so signals reach the build directly. The
//! environment variable [`INFO_ENV`] carries the ranges for [`current`] (`rbuild info`) to the
//! process and its children.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

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

/// Enters rootless mode when the effective uid is not 0: call first thing in `main`, while the
/// process is single-threaded (the kernel refuses a user namespace to a threaded process).
/// Afterwards this very process is "root" of a user and mount namespace of its own, and
/// [`current`] describes the mapping (to its children too); as root it does nothing.
///
/// No re-exec: two children forked beforehand (still in the host's user namespace, as the
/// setuid helpers need) wait at a pipe while this process unshares, then exec `newuidmap` and
/// `newgidmap` on it side by side. Signals reach the build directly.
pub fn enter_if_needed() -> Result<(), RootlessError> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let plan = plan_with_helpers()?;
    enter(&plan)?;
    // Still single-threaded: nothing reads the environment concurrently.
    std::env::set_var(INFO_ENV, plan.info.encode());
    Ok(())
}

/// The mapping plus where the two helpers are.
struct Plan {
    info: RootlessInfo,
    newuidmap: PathBuf,
    newgidmap: PathBuf,
}

fn plan_with_helpers() -> Result<Plan, RootlessError> {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let subuid = range_of("/etc/subuid", &name, uid.as_raw())?;
    let subgid = range_of("/etc/subgid", &name, uid.as_raw())?;
    Ok(Plan {
        newuidmap: find_helper("newuidmap")?,
        newgidmap: find_helper("newgidmap")?,
        info: RootlessInfo {
            uid: uid.as_raw(),
            gid: gid.as_raw(),
            subuid,
            subgid,
        },
    })
}

/// The mapping rootless mode would use for the current user (reads `/etc/subuid`,
/// `/etc/subgid`; checks that `newuidmap`/`newgidmap` exist).
pub fn plan() -> Result<RootlessInfo, RootlessError> {
    plan_with_helpers().map(|p| p.info)
}

/// One map helper forked before the unshare: it waits at the "go" pipe, then execs
/// `HELPER PID 0 OWN 1 1 START COUNT` with its standard error on a pipe of ours.
struct MapHelper {
    name: &'static str,
    pid: nix::unistd::Pid,
    stderr: File,
}

/// The argument vector of a helper run: `HELPER PID 0 OWN 1 1 START COUNT`.
fn map_args(helper: &Path, pid: i32, own: u32, range: IdRange) -> Option<Vec<CString>> {
    let mut args = vec![CString::new(helper.as_os_str().as_bytes()).ok()?];
    for a in [
        pid.to_string(),
        "0".into(),
        own.to_string(),
        "1".into(),
        "1".into(),
        range.start.to_string(),
        range.count.to_string(),
    ] {
        args.push(CString::new(a).ok()?);
    }
    Some(args)
}

/// Forks the helper `name` (see [`MapHelper`]); `go_w`, the parent's end of the gate, is
/// closed in the child so that the parent dropping it reads as "do not map".
fn fork_helper(
    name: &'static str,
    args: &[CString],
    go_r: &OwnedFd,
    go_w: &OwnedFd,
) -> Result<MapHelper, RootlessError> {
    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let (err_r, err_w) = nix::unistd::pipe2(cloexec).map_err(nix_sys("pipe"))?;
    // SAFETY: the process is single-threaded (checked by `enter`), so the child may use any
    // function; it leaves through exec or `_exit`, never returning into the caller's code.
    match unsafe { nix::unistd::fork() }.map_err(nix_sys("fork a map helper"))? {
        nix::unistd::ForkResult::Child => {
            // SAFETY: closes this child's copy of the gate's write end (the parent's stays).
            unsafe { libc::close(go_w.as_raw_fd()) };
            let mut byte = [0u8; 1];
            let go = nix::unistd::read(go_r, &mut byte);
            if !matches!(go, Ok(1)) || byte[0] != b'1' {
                // The parent could not unshare (it reports why) or is gone.
                // SAFETY: ends the forked child without the parent's exit handlers.
                unsafe { libc::_exit(1) }
            }
            let code = match nix::unistd::dup2_stderr(&err_w) {
                Ok(()) => {
                    let e = nix::unistd::execv(&args[0], args).unwrap_err();
                    let _ = writeln!(
                        std::io::stderr(),
                        "cannot execute {}: {}",
                        args[0].to_string_lossy(),
                        std::io::Error::from(e)
                    );
                    127
                }
                Err(_) => 126,
            };
            // SAFETY: as above.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => Ok(MapHelper {
            name,
            pid: child,
            stderr: File::from(err_r),
        }),
    }
}

impl MapHelper {
    /// Waits for the helper; its error if it did not map.
    fn finish(mut self) -> Result<(), RootlessError> {
        let mut stderr = String::new();
        let _ = self.stderr.read_to_string(&mut stderr);
        let mut raw = 0;
        // SAFETY: waits for our own child, whose pid nothing else reaps.
        let waited = unsafe { libc::waitpid(self.pid.as_raw(), &mut raw, 0) };
        if waited < 0 {
            return Err(RootlessError::Sys {
                step: "wait for the map helper",
                source: std::io::Error::last_os_error(),
            });
        }
        let status = std::process::ExitStatus::from_raw(raw);
        if status.success() {
            return Ok(());
        }
        Err(RootlessError::MapFailed {
            name: self.name,
            status: status.to_string(),
            stderr: stderr.trim().to_string(),
        })
    }
}

/// Whether this process has exactly one thread (`/proc/self/task`).
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1)
}

/// Unshares the user and mount namespaces of this process, has the two helpers forked before
/// map them (side by side), then becomes uid/gid 0 inside with private mount propagation.
fn enter(plan: &Plan) -> Result<(), RootlessError> {
    if !single_threaded() {
        return Err(RootlessError::Sys {
            step: "enter a user namespace (must happen before any thread starts)",
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
        });
    }
    let me = nix::unistd::getpid().as_raw();
    let bad_arg = || RootlessError::Sys {
        step: "build the map helper's arguments",
        source: std::io::Error::from_raw_os_error(libc::EINVAL),
    };
    let uid_args =
        map_args(&plan.newuidmap, me, plan.info.uid, plan.info.subuid).ok_or_else(bad_arg)?;
    let gid_args =
        map_args(&plan.newgidmap, me, plan.info.gid, plan.info.subgid).ok_or_else(bad_arg)?;
    let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(nix_sys("pipe"))?;
    let uid = fork_helper("newuidmap", &uid_args, &go_r, &go_w)?;
    let gid = fork_helper("newgidmap", &gid_args, &go_r, &go_w);
    drop(go_r);
    let unshared = match &gid {
        Ok(_) => nix::sched::unshare(
            nix::sched::CloneFlags::CLONE_NEWUSER | nix::sched::CloneFlags::CLONE_NEWNS,
        )
        .map_err(nix_sys("unshare(CLONE_NEWUSER|CLONE_NEWNS)")),
        Err(_) => Ok(()),
    };
    let mut go = File::from(go_w);
    // One byte per helper; without them (a failed unshare) both see end of file and leave.
    let signaled = match (&unshared, &gid) {
        (Ok(()), Ok(_)) => go.write_all(b"11").map_err(sys("start the map helpers")),
        _ => Ok(()),
    };
    drop(go);
    let gid_forked = gid.is_ok();
    let uid = uid.finish();
    let gid = gid.and_then(MapHelper::finish);
    unshared?;
    signaled?;
    // A helper that could not be forked comes first (the other then only saw no go byte).
    if !gid_forked {
        return gid;
    }
    uid.and(gid)?;
    nix::unistd::setresgid(0.into(), 0.into(), 0.into()).map_err(nix_sys("setresgid(0)"))?;
    nix::unistd::setresuid(0.into(), 0.into(), 0.into()).map_err(nix_sys("setresuid(0)"))?;
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
