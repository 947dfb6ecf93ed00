//! The caller side: spawn the helper, feed it the spec, pump its output, read its status.

use crate::error::SandboxError;
use crate::helper::{HELPER_MARKER, NO_PROCESS_SANDBOX_MARKER, TTY_MARKER};
use crate::spec::{ExitStatus, OutputStream, RunSpec};
use crate::status::{FailKind, StatusMsg, STATUS_FD};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

/// On kernels without a binfmt_misc per user namespace, an emulated run's emulator is
/// registered on the host instead (with the `F` flag) and the run goes without one of its own;
/// returns the spec to run and the warning that says so.
fn host_emulation_fallback(
    spec: &RunSpec,
) -> Result<(std::borrow::Cow<'_, RunSpec>, Option<String>), SandboxError> {
    match &spec.emulator {
        Some(emu) if !crate::emulation::per_user_namespace_binfmt() => {
            let warning = crate::emulation::register_on_host(emu)?;
            let mut spec = spec.clone();
            spec.emulator = None;
            Ok((std::borrow::Cow::Owned(spec), Some(warning)))
        }
        _ => Ok((std::borrow::Cow::Borrowed(spec), None)),
    }
}

/// Output chunks are cut at newlines, or at this size for very long lines.
const MAX_CHUNK: usize = 64 * 1024;

/// Runs [`RunSpec`]s through a helper executable.
#[derive(Debug, Clone)]
pub struct Sandbox {
    helper_exe: PathBuf,
    process_sandbox: bool,
}

impl Sandbox {
    /// `helper_exe` is a binary whose main() calls `rbuild_sandbox::helper_main_if_requested()` first (the rbuild CLI does).
    pub fn new(helper_exe: PathBuf) -> Self {
        Sandbox {
            helper_exe,
            process_sandbox: true,
        }
    }

    /// With `false`, runs share the caller's pid namespace and get a bind mount of its `/proc`
    /// instead of a new one (see [`crate::settings::NO_PROCESS_SANDBOX_ENV`]).
    pub fn with_process_sandbox(mut self, on: bool) -> Self {
        self.process_sandbox = on;
        self
    }

    /// The helper executable this sandbox spawns.
    pub fn helper_exe(&self) -> &Path {
        &self.helper_exe
    }

    /// Runs the spec; stdout and stderr lines are delivered to `on_output(stream, line_bytes)` as they come (from the calling thread; this fn is blocking, callers use spawn_blocking). Returns the exit status.
    ///
    /// Each chunk is one line including its trailing `\n` (a final unterminated line, or a
    /// piece of a line longer than 64 KiB, comes without one). The helper dies with the calling
    /// *thread* (PR_SET_PDEATHSIG), so keep the thread alive for the duration of the call, as a
    /// blocking call naturally does.
    pub fn run(
        &self,
        spec: &RunSpec,
        on_output: &mut dyn FnMut(OutputStream, &[u8]),
    ) -> Result<ExitStatus, SandboxError> {
        let (spec, warning) = host_emulation_fallback(spec)?;
        if let Some(w) = warning {
            on_output(OutputStream::Stderr, w.as_bytes());
        }
        let (mut child, status_r) = self.spawn(&spec, None)?;
        let (tx, rx) = mpsc::channel::<(OutputStream, Vec<u8>)>();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        std::thread::scope(|s| {
            if let Some(out) = stdout {
                let tx = tx.clone();
                s.spawn(move || pump(out, OutputStream::Stdout, tx));
            }
            if let Some(err) = stderr {
                let tx = tx.clone();
                s.spawn(move || pump(err, OutputStream::Stderr, tx));
            }
            drop(tx);
            for (stream, chunk) in rx {
                on_output(stream, &chunk);
            }
        });
        finish(child, status_r)
    }

    /// Runs the spec interactively: the command gets a pseudo-terminal of its own as its
    /// standard input, output and error (and controlling terminal), and this process's
    /// standard input (put in raw mode while the command runs, when it is a terminal) and
    /// standard output are relayed to it. Everything else is as in [`Sandbox::run`]: the same
    /// namespaces, mounts, user, capabilities, seccomp filter and limits. Blocking; returns
    /// the command's exit status once it and the helper are gone.
    pub fn run_interactive(&self, spec: &RunSpec) -> Result<ExitStatus, SandboxError> {
        let (spec, _warning) = host_emulation_fallback(spec)?;
        let pty = crate::tty::open_pty()?;
        let (child, status_r) = self.spawn(&spec, Some(pty.slave))?;
        let relayed = crate::tty::relay(&pty.master);
        let status = finish(child, status_r);
        relayed?;
        status
    }

    /// Starts the helper and sends it the spec. With `tty` (a pty's slave) the helper's
    /// standard output and error are that terminal, and it gives it to the command as its
    /// standard input too; otherwise both are pipes the caller reads.
    fn spawn(
        &self,
        spec: &RunSpec,
        tty: Option<OwnedFd>,
    ) -> Result<(Child, OwnedFd), SandboxError> {
        spec.validate().map_err(SandboxError::InvalidSpec)?;
        if spec.network == crate::spec::Network::Private && crate::net::find_slirp4netns().is_none()
        {
            return Err(SandboxError::NetworkHelperMissing);
        }
        // The helper's input: the seccomp allowlist (compiled once per process; empty when
        // not sandboxed) framed by its length, then the spec.
        let seccomp = if spec.security == crate::spec::Security::Sandbox {
            crate::seccomp::exported_allowlist().map_err(|f| SandboxError::Setup(f.message))?
        } else {
            Vec::new()
        };
        let mut input = u32::try_from(seccomp.len())
            .map_err(|_| SandboxError::Setup("seccomp program too long".into()))?
            .to_le_bytes()
            .to_vec();
        input.extend_from_slice(&seccomp);
        serde_json::to_writer(&mut input, spec)
            .map_err(|e| SandboxError::InvalidSpec(e.to_string()))?;
        let (status_r, status_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| io("creating the status pipe")(e.into()))?;

        let mut cmd = Command::new(&self.helper_exe);
        cmd.arg(HELPER_MARKER)
            .arg(std::process::id().to_string())
            .stdin(Stdio::piped());
        if !self.process_sandbox {
            cmd.arg(NO_PROCESS_SANDBOX_MARKER);
        }
        match tty {
            Some(slave) => {
                let err = slave
                    .try_clone()
                    .map_err(io("duplicating the pseudo-terminal"))?;
                cmd.arg(TTY_MARKER)
                    .stdout(Stdio::from(slave))
                    .stderr(Stdio::from(err));
            }
            None => {
                cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            }
        }
        let raw_w = status_w.as_raw_fd();
        // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let r = if raw_w == STATUS_FD {
                    libc::fcntl(raw_w, libc::F_SETFD, 0)
                } else {
                    libc::dup2(raw_w, STATUS_FD)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = cmd.spawn();
        // The command holds our copies of the pty's slave: the master sees the end of the run
        // only once they are closed too.
        drop(cmd);
        let mut child = spawned.map_err(|source| SandboxError::Spawn {
            path: self.helper_exe.clone(),
            source,
        })?;
        drop(status_w);

        if let Some(mut stdin) = child.stdin.take() {
            // A helper that died early shows up as a broken pipe; its status says why.
            if let Err(e) = stdin.write_all(&input) {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(io("sending the run spec")(e));
                }
            }
        }
        Ok((child, status_r))
    }
}

/// Maps an I/O error to [`SandboxError::Io`] saying what was being done.
fn io(what: &'static str) -> impl Fn(std::io::Error) -> SandboxError {
    move |source| SandboxError::Io { what, source }
}

/// Reads the helper's status and reaps it.
fn finish(mut child: Child, status_r: OwnedFd) -> Result<ExitStatus, SandboxError> {
    let mut status_text = String::new();
    let read_result = std::fs::File::from(status_r).read_to_string(&mut status_text);
    let helper_status = child.wait().map_err(io("waiting for the helper"))?;
    read_result.map_err(io("reading the helper status"))?;
    interpret(&status_text, helper_status)
}

/// Turns the status lines (and the helper's own exit status, as a last resort) into a result.
fn interpret(text: &str, helper: std::process::ExitStatus) -> Result<ExitStatus, SandboxError> {
    let msgs: Vec<StatusMsg> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    if let Some((kind, message)) = msgs.iter().find_map(|m| match m {
        StatusMsg::Failed { kind, message } => Some((*kind, message.clone())),
        _ => None,
    }) {
        return Err(match kind {
            FailKind::Setup => SandboxError::Setup(message),
            FailKind::User => SandboxError::User(message),
            FailKind::Exec => SandboxError::Exec(message),
        });
    }
    if let Some(limit) = msgs.iter().find_map(|m| match m {
        StatusMsg::OomKilled { limit } => Some(*limit),
        _ => None,
    }) {
        if !matches!(msgs.last(), Some(StatusMsg::Exited(0))) {
            return Ok(ExitStatus::OomKilled { limit });
        }
    }
    match msgs.last() {
        Some(StatusMsg::Exited(c)) => Ok(ExitStatus::Code(*c)),
        Some(StatusMsg::Signaled(s)) => Ok(ExitStatus::Signal(*s)),
        _ => Err(SandboxError::HelperDied(
            match (helper.code(), helper.signal()) {
                (Some(c), _) => format!("helper exit code {c}"),
                (_, Some(s)) => format!("helper killed by signal {s}"),
                _ => "unknown helper status".to_string(),
            },
        )),
    }
}

/// Reads `r` and sends it on as lines (or 64 KiB pieces of very long lines).
fn pump(r: impl Read, stream: OutputStream, tx: mpsc::Sender<(OutputStream, Vec<u8>)>) {
    let mut r = BufReader::with_capacity(MAX_CHUNK, r);
    let mut line = Vec::new();
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if buf.is_empty() {
            break;
        }
        let room = MAX_CHUNK.saturating_sub(line.len()).max(1);
        let (take, done) = match buf.iter().take(room).position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len().min(room), false),
        };
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if (done || line.len() >= MAX_CHUNK)
            && tx.send((stream, std::mem::take(&mut line))).is_err()
        {
            return;
        }
    }
    if !line.is_empty() {
        let _ = tx.send((stream, line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pump_splits_lines_and_long_chunks() {
        let (tx, rx) = mpsc::channel();
        let mut input = b"a\nbc\n".to_vec();
        input.extend(vec![b'x'; MAX_CHUNK + 10]);
        pump(&input[..], OutputStream::Stderr, tx);
        let got: Vec<Vec<u8>> = rx.into_iter().map(|(_, l)| l).collect();
        assert_eq!(got[0], b"a\n");
        assert_eq!(got[1], b"bc\n");
        assert_eq!(got[2].len(), MAX_CHUNK);
        assert_eq!(got[3].len(), 10);
    }

    #[test]
    fn interpret_prefers_failures() {
        let ok = std::process::ExitStatus::from_raw(0);
        let t = "{\"Failed\":{\"kind\":\"Exec\",\"message\":\"exec \\\"x\\\": no such file or directory\"}}\n{\"Exited\":127}\n";
        assert!(
            matches!(interpret(t, ok), Err(SandboxError::Exec(m)) if m.contains("no such file"))
        );
        assert_eq!(
            interpret("{\"Signaled\":9}\n", ok).unwrap(),
            ExitStatus::Signal(9)
        );
        assert!(matches!(
            interpret("", ok),
            Err(SandboxError::HelperDied(_))
        ));
    }
}
