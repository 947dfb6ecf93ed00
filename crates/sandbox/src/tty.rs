//! Interactive runs: the sandboxed command gets a pseudo-terminal of its own (as `docker run
//! -it` gives a container one), and the caller relays its own terminal to it in raw mode.

use crate::error::SandboxError;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::{OpenptyResult, Winsize};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, OwnedFd};

/// The terminal's end-of-file character (Ctrl-D): what the command reads when our input ends.
const EOF_CHAR: u8 = 4;

/// Opens a pseudo-terminal the size of the caller's terminal (standard input), if it has one.
pub(crate) fn open_pty() -> Result<OpenptyResult, SandboxError> {
    let size = window_size();
    nix::pty::openpty(size.as_ref(), None).map_err(|e| SandboxError::Io {
        what: "opening a pseudo-terminal",
        source: e.into(),
    })
}

/// The caller's terminal size, read from standard input.
fn window_size() -> Option<Winsize> {
    let mut ws = Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we pass.
    let r = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0).then_some(ws)
}

/// Makes the calling (sandboxed) process a session leader with `fd` (a pty's slave) as its
/// controlling terminal, so a shell there has job control and Ctrl-C reaches it.
pub(crate) fn take_controlling_terminal(fd: i32) -> Result<(), nix::errno::Errno> {
    nix::unistd::setsid()?;
    // SAFETY: TIOCSCTTY with argument 0 (do not steal) on a descriptor we own.
    if unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } < 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok(())
}

/// Standard input in raw mode while alive (when it is a terminal); restored on drop.
struct RawMode(Option<Termios>);

impl RawMode {
    fn enter() -> RawMode {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return RawMode(None);
        }
        let Ok(saved) = tcgetattr(stdin.as_fd()) else {
            return RawMode(None);
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        match tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw) {
            Ok(()) => RawMode(Some(saved)),
            Err(_) => RawMode(None),
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, saved);
        }
    }
}

/// Copies standard input to the pty's master and the master's output to standard output until
/// every holder of the slave side is gone (the command and the helper exited).
pub(crate) fn relay(master: &OwnedFd) -> Result<(), SandboxError> {
    let io = |source: nix::errno::Errno| SandboxError::Io {
        what: "relaying the terminal",
        source: source.into(),
    };
    let _raw = RawMode::enter();
    let stdin = std::io::stdin();
    let mut stdin_open = true;
    let mut buf = [0u8; 8192];
    loop {
        let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io(e)),
        }
        let ready = |fd: &PollFd| {
            fd.revents().is_some_and(|r| {
                r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            })
        };
        let (master_ready, stdin_ready) = (ready(&fds[0]), fds.get(1).is_some_and(ready));
        drop(fds);
        if master_ready {
            match nix::unistd::read(master, &mut buf) {
                // EIO: the last slave descriptor was closed.
                Ok(0) | Err(nix::errno::Errno::EIO) => return Ok(()),
                Ok(n) => {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&buf[..n]).and_then(|()| out.flush());
                }
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                Err(e) => return Err(io(e)),
            }
        }
        if stdin_ready {
            match nix::unistd::read(&stdin, &mut buf) {
                // End of input (a pipe): the command's terminal reads end-of-file too.
                Ok(0) => {
                    stdin_open = false;
                    write_all(master, &[EOF_CHAR]).map_err(io)?;
                }
                Ok(n) => write_all(master, &buf[..n]).map_err(io)?,
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                Err(_) => stdin_open = false,
            }
        }
    }
}

/// Writes all of `data` to `fd`.
fn write_all(fd: &OwnedFd, mut data: &[u8]) -> Result<(), nix::errno::Errno> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
            // The command is gone: what was typed has nowhere to go.
            Err(nix::errno::Errno::EIO) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
