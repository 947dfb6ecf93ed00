//! The network of a run: loopback in a fresh namespace (without `ip`), and the private
//! network's userspace NAT (slirp4netns) with its `/etc/resolv.conf`.

use crate::status::{step, Failure};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Sets IFF_UP on `lo` in the current network namespace (SIOCGIFFLAGS/SIOCSIFFLAGS).
pub(crate) fn loopback_up() -> Result<(), Failure> {
    // SAFETY: plain socket(2).
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(step("socket(AF_INET) for lo")(nix::errno::Errno::last()));
    }
    // SAFETY: raw is a fresh fd we own.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: ifr is a valid ifreq for these ioctls.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        return Err(step("ioctl(SIOCGIFFLAGS, lo)")(nix::errno::Errno::last()));
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe {
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: as above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(step("ioctl(SIOCSIFFLAGS, lo up)")(nix::errno::Errno::last()));
    }
    Ok(())
}

/// The address of the DNS forwarder slirp4netns offers inside the namespace.
pub(crate) const SLIRP_DNS: &str = "10.0.2.3";

/// How long slirp4netns may take to configure the namespace.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The MTU of the tap device (slirp4netns's recommended maximum, much faster than 1500).
const SLIRP_MTU: &str = "65520";

/// Finds the `slirp4netns` binary: `RBUILD_SLIRP4NETNS` if set, else `PATH`, else `/usr/bin`.
pub(crate) fn find_slirp4netns() -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let usable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(p) = std::env::var_os("RBUILD_SLIRP4NETNS").filter(|p| !p.is_empty()) {
        let p = std::path::PathBuf::from(p);
        return usable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/usr/bin")])
        .map(|d| d.join("slirp4netns"))
        .find(|p| usable(p))
}

/// Rootless, slirp4netns opens `/dev/net/tun` as the user: fails early, with the fix, when the
/// node is not accessible (Debian's udev makes it 0666; some containers and VMs leave it 0600).
pub(crate) fn check_tun_rootless() -> Result<(), Failure> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        Ok(_) => Ok(()),
        Err(e) => Err(Failure::setup(format!(
            "rootless default network: cannot open /dev/net/tun ({e}); \
             make it accessible as udev does (as root: `chmod 0666 /dev/net/tun`), \
             or build with --network=none or --network=host"
        ))),
    }
}

/// How slirp4netns gets into the host's network namespace.
pub(crate) enum Launch<'a> {
    /// Forked after the unshare; joins the host's namespace (this descriptor) before exec.
    SetNs(&'a OwnedFd),
    /// Forked before the unshare (rootless); execs after reading a byte from `open`, which the
    /// helper writes on `opened` once it has unshared.
    Gate {
        /// The read end, the forked child's.
        open: OwnedFd,
        /// The write end, the helper's.
        opened: &'a OwnedFd,
    },
}

/// A running slirp4netns serving the helper's (new) network namespace from the host's.
pub(crate) struct Slirp {
    pid: nix::unistd::Pid,
    ready: OwnedFd,
    log: OwnedFd,
}

impl Slirp {
    /// Starts slirp4netns for the network namespace of the calling process (which must already
    /// have unshared it), running in `host_ns` (the original namespace). Host loopback is
    /// unreachable from the namespace (`--disable-host-loopback`); slirp4netns confines itself
    /// (`--enable-sandbox --enable-seccomp`). Call before unsharing the pid namespace, so it
    /// is not a member of the sandbox's pid namespace.
    ///
    /// Rootless ([`Launch::Gate`]), joining the host's namespace is not allowed (it belongs to
    /// the initial user namespace): slirp4netns is forked *before* the unshare, stays in the
    /// host's namespace and execs once the helper opens the gate.
    pub(crate) fn start(binary: &std::path::Path, launch: Launch) -> Result<Slirp, Failure> {
        use nix::unistd::ForkResult;
        let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(step("pipe for slirp4netns"))?;
        let log = nix::sys::memfd::memfd_create(
            c"rbuild-slirp-log",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .map_err(step("memfd for the slirp4netns log"))?;
        let me = std::process::id().to_string();
        let fd_arg = format!("--ready-fd={}", ready_w.as_raw_fd());
        let c = |s: &str| std::ffi::CString::new(s).map_err(|_| Failure::setup("NUL in argument"));
        let prog = std::ffi::CString::new(binary.as_os_str().as_encoded_bytes())
            .map_err(|_| Failure::setup("NUL in the slirp4netns path"))?;
        let argv = [
            prog.clone(),
            c("--configure")?,
            c(&format!("--mtu={SLIRP_MTU}"))?,
            c("--disable-host-loopback")?,
            c("--enable-sandbox")?,
            c("--enable-seccomp")?,
            c(&fd_arg)?,
            c(&me)?,
            c("tap0")?,
        ];
        // SAFETY: the helper is single-threaded; the child only makes raw syscalls and execs.
        match unsafe { nix::unistd::fork() }.map_err(step("fork slirp4netns"))? {
            ForkResult::Child => {
                // SAFETY: plain syscalls on descriptors we own, then exec or _exit.
                unsafe {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                    match &launch {
                        Launch::SetNs(host_ns) => {
                            if libc::setns(host_ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                                libc::_exit(126);
                            }
                        }
                        Launch::Gate { open, opened } => {
                            libc::close(opened.as_raw_fd());
                            let mut b = 0u8;
                            let n = libc::read(open.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
                            if n != 1 {
                                libc::_exit(126);
                            }
                        }
                    }
                    let lfd = log.as_raw_fd();
                    let rfd = ready_w.as_raw_fd();
                    if libc::dup2(lfd, 1) < 0 || libc::dup2(lfd, 2) < 0 {
                        libc::_exit(126);
                    }
                    libc::fcntl(rfd, libc::F_SETFD, 0);
                    let devnull = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
                    if devnull >= 0 {
                        libc::dup2(devnull, 0);
                    }
                    let _ = nix::unistd::execv(&prog, &argv);
                    libc::_exit(127);
                }
            }
            ForkResult::Parent { child } => {
                drop(ready_w);
                Ok(Slirp {
                    pid: child,
                    ready: ready_r,
                    log,
                })
            }
        }
    }

    /// Waits until the namespace's network is configured; on failure, returns slirp4netns's
    /// output in the error.
    pub(crate) fn wait_ready(&self) -> Result<(), Failure> {
        let mut b = [0u8; 1];
        let mut pfd = libc::pollfd {
            fd: self.ready.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as libc::c_int) };
            if r == 0 {
                return Err(Failure::setup(format!(
                    "the sandbox network (slirp4netns) was not ready after {}s",
                    READY_TIMEOUT.as_secs()
                )));
            }
            if r < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR {
                continue;
            }
            break;
        }
        loop {
            match nix::unistd::read(&self.ready, &mut b) {
                Ok(1) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                _ => break,
            }
        }
        let mut out = String::new();
        let _ = nix::unistd::lseek(&self.log, 0, nix::unistd::Whence::SeekSet);
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = nix::unistd::read(&self.log, &mut buf) {
            out.push_str(&String::from_utf8_lossy(&buf[..n]));
            if out.len() > 16 * 1024 {
                break;
            }
        }
        let tail: Vec<&str> = out.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(Failure::setup(format!(
            "the sandbox network (slirp4netns) failed to start: {}",
            if tail.is_empty() {
                "no output".to_string()
            } else {
                tail.join(" | ")
            }
        )))
    }
}

impl Drop for Slirp {
    /// Kills slirp4netns without waiting for it: tearing down its own mount namespace
    /// (`--enable-sandbox`) takes the kernel a grace period (~15 ms) that the RUN should not
    /// pay. The helper exits right after, and init reaps it.
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
    }
}

/// `/etc/resolv.conf` for a private network: the host's, with loopback name servers (which the
/// namespace cannot reach) replaced by slirp4netns's DNS forwarder.
pub(crate) fn private_resolv_conf(host: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(host);
    let mut out = String::new();
    let mut servers = 0;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let addr = words.next().unwrap_or("");
            let loopback = addr
                .parse::<std::net::IpAddr>()
                .map(|a| a.is_loopback())
                .unwrap_or(true);
            if loopback {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str(&format!("nameserver {SLIRP_DNS}\n"));
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_drops_loopback_servers() {
        let got =
            private_resolv_conf(b"search example.org\nnameserver 127.0.0.53\noptions edns0\n");
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "search example.org\noptions edns0\nnameserver 10.0.2.3\n"
        );
        let got = private_resolv_conf(b"nameserver 192.0.2.1\nnameserver ::1\n");
        assert_eq!(String::from_utf8(got).unwrap(), "nameserver 192.0.2.1\n");
    }
}
