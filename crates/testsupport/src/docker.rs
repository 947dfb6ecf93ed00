//! The local docker daemon for tests that run containers: [`ensure_dockerd`] starts dockerd
//! when it is not running, exactly as the bench setup (`shared/bench/setup.sh`) does (the same
//! flags: no bridge, no iptables, no masquerading, so it never touches the host's network;
//! containers use `--network=host`), and returns a [`Docker`] client whose commands run with a
//! `DOCKER_CONFIG` of their own (never the host's credentials).

use crate::{io_err, need_tool, require_root, run, TestError, REQUIRE_ROOT_ENV};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// dockerd's flags, as `shared/bench/setup.sh` starts it.
pub const DOCKERD_FLAGS: &[&str] = &[
    "--storage-driver=overlay2",
    "--bridge=none",
    "--iptables=false",
    "--ip-masq=false",
];

/// How long dockerd may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The docker CLI, talking to the local daemon.
#[derive(Debug)]
pub struct Docker {
    bin: PathBuf,
    config: tempfile::TempDir,
}

impl Docker {
    /// `docker SUBCOMMAND` with the client's own empty `DOCKER_CONFIG`.
    pub fn cmd(&self, subcommand: &str) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env("DOCKER_CONFIG", self.config.path()).arg(subcommand);
        cmd
    }

    /// Runs `docker ARGS...` and returns its standard output, or the error with its output.
    pub fn run(&self, args: &[&str]) -> Result<String, TestError> {
        let (first, rest) = args
            .split_first()
            .ok_or_else(|| TestError::Other("docker: no subcommand".into()))?;
        run(self.cmd(first).args(rest))
    }

    /// Removes an image (and nothing else), ignoring "no such image".
    pub fn remove_image(&self, name: &str) {
        let _ = self
            .cmd("rmi")
            .args(["--force", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether the daemon answers `docker info`.
fn daemon_up(bin: &Path, config: &Path) -> bool {
    Command::new(bin)
        .env("DOCKER_CONFIG", config)
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Skips loudly (`SKIPPED: ...` on stdout and stderr, `Ok(None)`), or fails when CI requires
/// the test (`RBUILD_REQUIRE_ROOT=1` or `CI` set).
fn skip(why: String) -> Result<Option<Docker>, TestError> {
    let required = std::env::var(REQUIRE_ROOT_ENV).as_deref() == Ok("1")
        || std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    if required {
        return Err(TestError::Required(format!(
            "{why}, and {REQUIRE_ROOT_ENV}=1/CI forbids skipping"
        )));
    }
    println!("SKIPPED: {why}");
    eprintln!("SKIPPED: {why}");
    Ok(None)
}

/// The docker daemon, started with [`DOCKERD_FLAGS`] if it is not running (its log goes to
/// `$TMPDIR/rbuild-test-dockerd.log`). `Ok(None)` after a printed skip where docker.io is
/// not installed or this is not root; under `RBUILD_REQUIRE_ROOT=1` or `CI` those fail.
pub fn ensure_dockerd() -> Result<Option<Docker>, TestError> {
    let config = tempfile::tempdir().map_err(io_err("create", std::env::temp_dir()))?;
    let (bin, dockerd) = match (need_tool("docker"), need_tool("dockerd")) {
        (Ok(bin), Ok(dockerd)) => (bin, dockerd),
        (Err(e), _) | (_, Err(e)) => {
            return skip(format!(
                "docker is not installed (apt-get install docker.io): {e}"
            ))
        }
    };
    if daemon_up(&bin, config.path()) {
        return Ok(Some(Docker { bin, config }));
    }
    if !require_root()? {
        return Ok(None);
    }
    // One starter at a time (tests of several binaries may get here together).
    let lock_path = std::env::temp_dir().join("rbuild-test-dockerd.lock");
    let lock = std::fs::File::create(&lock_path).map_err(io_err("create", &lock_path))?;
    lock.lock().map_err(io_err("lock", &lock_path))?;
    if !daemon_up(&bin, config.path()) {
        let log_path = std::env::temp_dir().join("rbuild-test-dockerd.log");
        let log = std::fs::File::create(&log_path).map_err(io_err("create", &log_path))?;
        let err = log.try_clone().map_err(io_err("open", &log_path))?;
        use std::os::unix::process::CommandExt;
        // Its own session, as setup.sh's `setsid nohup`: it outlives the test and is shared
        // by later tests and the bench.
        Command::new(&dockerd)
            .args(DOCKERD_FLAGS)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(io_err("start", &dockerd))?;
        let started = Instant::now();
        while !daemon_up(&bin, config.path()) {
            if started.elapsed() > START_TIMEOUT {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(TestError::Other(format!(
                    "dockerd did not answer within {START_TIMEOUT:?}; log {}:\n{text}",
                    log_path.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    drop(lock);
    Ok(Some(Docker { bin, config }))
}
