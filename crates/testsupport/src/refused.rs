//! [`RefusedPort`]: a 127.0.0.1 port that refuses connections for as long as the test holds it.

use crate::TestError;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A TCP socket bound to a free 127.0.0.1 port but never listening: the kernel answers every
/// connection attempt with a reset ("connection refused"), and no other process can bind the port
/// while this value lives. Unlike "bind port 0, note the number, close", nothing can start
/// listening there between the choice and the test's connection attempt. Closed on drop.
#[derive(Debug)]
pub struct RefusedPort {
    _fd: OwnedFd,
    port: u16,
}

impl RefusedPort {
    /// Binds a free 127.0.0.1 port without listening on it; no other socket can bind it.
    pub fn bind() -> Result<RefusedPort, TestError> {
        Self::bind_with(false)
    }

    /// Like [`RefusedPort::bind`] but with `SO_REUSEADDR`, so a server that sets it too (busybox
    /// `nc -l`, most servers) can still bind and listen on the port, on 127.0.0.1 or the wildcard
    /// address, while a socket without it (or an automatic port choice) cannot take the port.
    /// For tests that reserve a port for a server the code under test starts.
    pub fn bind_shareable() -> Result<RefusedPort, TestError> {
        Self::bind_with(true)
    }

    fn bind_with(reuse_addr: bool) -> Result<RefusedPort, TestError> {
        let os =
            |what: &str| TestError::Other(format!("{what}: {}", std::io::Error::last_os_error()));
        // SAFETY: plain socket calls on a descriptor this function owns; `sin` is a valid, fully
        // initialised sockaddr_in and `len` its size.
        unsafe {
            let raw = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if raw < 0 {
                return Err(os("socket"));
            }
            let fd = OwnedFd::from_raw_fd(raw);
            let one: libc::c_int = 1;
            if reuse_addr
                && libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_REUSEADDR,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                ) != 0
            {
                return Err(os("setsockopt SO_REUSEADDR"));
            }
            let mut sin: libc::sockaddr_in = std::mem::zeroed();
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            if libc::bind(
                fd.as_raw_fd(),
                (&sin as *const libc::sockaddr_in).cast(),
                len,
            ) != 0
            {
                return Err(os("bind 127.0.0.1:0"));
            }
            if libc::getsockname(
                fd.as_raw_fd(),
                (&mut sin as *mut libc::sockaddr_in).cast(),
                &mut len,
            ) != 0
            {
                return Err(os("getsockname"));
            }
            Ok(RefusedPort {
                _fd: fd,
                port: u16::from_be(sin.sin_port),
            })
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port).to_string()
    }
}
