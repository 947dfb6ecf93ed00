//! [`RefusedPort`]: a 127.0.0.1 port that refuses connections for as long as the test holds it.

use crate::TestError;
use socket2::{Domain, Socket, Type};
use std::net::{Ipv4Addr, SocketAddrV4};

/// A TCP socket bound to a free 127.0.0.1 port but never listening: the kernel answers every
/// connection attempt with a reset ("connection refused"), and no other process can bind the port
/// while this value lives. Unlike "bind port 0, note the number, close", nothing can start
/// listening there between the choice and the test's connection attempt. Closed on drop.
#[derive(Debug)]
pub struct RefusedPort {
    _socket: Socket,
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
        let os = |what: &str, e: std::io::Error| TestError::Other(format!("{what}: {e}"));
        let socket =
            Socket::new(Domain::IPV4, Type::STREAM.cloexec(), None).map_err(|e| os("socket", e))?;
        if reuse_addr {
            socket
                .set_reuse_address(true)
                .map_err(|e| os("setsockopt SO_REUSEADDR", e))?;
        }
        let any_port = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        socket
            .bind(&any_port.into())
            .map_err(|e| os("bind 127.0.0.1:0", e))?;
        let port = socket
            .local_addr()
            .map_err(|e| os("getsockname", e))?
            .as_socket()
            .map(|a| a.port())
            .ok_or_else(|| TestError::Other("getsockname: not an inet address".into()))?;
        Ok(RefusedPort {
            _socket: socket,
            port,
        })
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
