//! [`TestRegistry`]: a Debian `docker-registry` on a free 127.0.0.1 port with its own temp
//! storage, optionally with htpasswd (Basic) auth, Bearer token auth or TLS, and the probes that
//! wait for it to answer.

use crate::tls::make_tls_certs;
use crate::token::start_token_server;
use crate::watchdog::stop_with_this_process;
use crate::{io_err, need_tool, run, TestError};
use rbuild_oci::Digest;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Options of [`TestRegistry::start_with`].
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Turn on htpasswd (Basic) auth with this user and password (bcrypt cost 4).
    pub htpasswd: Option<(String, String)>,
    /// Turn on Bearer token auth with a local JWT token server (Debian's python3-jwt): this
    /// user/password gets every action asked for, anonymous callers get `pull` only. Its log of
    /// requested scopes is [`TestRegistry::token_log`].
    pub token_auth: Option<(String, String)>,
    /// Serve HTTPS with a server certificate for `127.0.0.1` (IP SAN; also `localhost`) signed by a
    /// throwaway CA made with openssl; the CA is [`TestRegistry::ca_pem`].
    pub tls: bool,
}

/// A running Debian `docker-registry` on a free 127.0.0.1 port with its own temp storage;
/// killed (by PID) on drop.
pub struct TestRegistry {
    child: Child,
    token_server: Option<Child>,
    addr: String,
    dir: tempfile::TempDir,
    tls: bool,
}

impl std::fmt::Debug for TestRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRegistry")
            .field("addr", &self.addr)
            .field("pid", &self.child.id())
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl TestRegistry {
    /// Starts an open registry (no auth, deletes enabled).
    pub fn start() -> Result<TestRegistry, TestError> {
        Self::start_with(&RegistryOptions::default())
    }

    /// Starts a registry with options (e.g. Basic auth).
    pub fn start_with(opts: &RegistryOptions) -> Result<TestRegistry, TestError> {
        let bin = need_tool("docker-registry")?;
        let dir = tempfile::Builder::new()
            .prefix("rbuild-registry-")
            .tempdir()
            .map_err(io_err("create temp dir", std::env::temp_dir()))?;
        let auth = match &opts.htpasswd {
            Some((user, pass)) => {
                let path = dir.path().join("htpasswd");
                fs::write(&path, format!("{user}:{}\n", bcrypt_hash(pass)?))
                    .map_err(io_err("write", &path))?;
                format!(
                    "auth:\n  htpasswd:\n    realm: rbuild-test\n    path: {}\n",
                    path.display()
                )
            }
            None => String::new(),
        };
        let mut token_server = None;
        let auth = match &opts.token_auth {
            Some((user, pass)) => {
                let (child, realm) = start_token_server(dir.path(), user, pass)?;
                token_server = Some(child);
                format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: rbuild-test-registry\n    issuer: rbuild-test-issuer\n    rootcertbundle: {}\n",
                    dir.path().join("token.crt").display()
                )
            }
            None => auth,
        };
        let tls = if opts.tls {
            let (cert, key) = make_tls_certs(dir.path())?;
            format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            )
        } else {
            String::new()
        };
        let ca = opts.tls.then(|| dir.path().join("certs/ca.crt"));
        // The registry binds port 0 itself and we read the port it got from the kernel (its
        // listening socket in /proc), so no other process can take the port between our choice
        // and its bind (the race of "bind a free port, release it, hand the number over").
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n{tls}{auth}",
            dir.path().join("data").display()
        );
        let cfg_path = dir.path().join("config.yml");
        fs::write(&cfg_path, config).map_err(io_err("write", &cfg_path))?;
        let log_path = dir.path().join("registry.log");
        let log = fs::File::create(&log_path).map_err(io_err("create", &log_path))?;
        let log2 = log.try_clone().map_err(io_err("dup", &log_path))?;
        let mut child = Command::new(&bin)
            .arg("serve")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(io_err("spawn", &bin))?;
        stop_with_this_process(child.id(), Some(dir.path()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let ready = wait_listening(&mut child, deadline).and_then(|addr| {
            wait_ready(&mut child, &addr, ca.as_deref(), deadline)?;
            Ok(addr)
        });
        match ready {
            Ok(addr) => Ok(TestRegistry {
                child,
                token_server,
                addr,
                dir,
                tls: opts.tls,
            }),
            Err(reason) => {
                let _ = child.kill();
                let _ = child.wait();
                if let Some(mut t) = token_server {
                    let _ = t.kill();
                    let _ = t.wait();
                }
                Err(TestError::RegistryStart {
                    addr: "127.0.0.1:0".into(),
                    reason,
                    log: log_path.display().to_string(),
                    log_text: fs::read_to_string(&log_path).unwrap_or_default(),
                })
            }
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// With [`RegistryOptions::tls`]: the CA certificate (PEM) that signed the server certificate.
    /// It is `ca.crt`, alone in its directory, so `ca_pem().parent()` works as skopeo's
    /// `--cert-dir` / `--dest-cert-dir`.
    pub fn ca_pem(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.path().join("certs/ca.crt"))
    }

    /// The registry process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The storage root (`docker/registry/v2/...` lives below it), for tampering tests.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Where a blob's bytes live on disk.
    pub fn blob_data_path(&self, digest: &Digest) -> PathBuf {
        self.storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&digest.hex()[..2])
            .join(digest.hex())
            .join("data")
    }

    /// The registry's log so far (for assertion messages).
    pub fn log(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = fs::read_dir(self.dir.path()) {
            let mut logs: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect();
            logs.sort();
            for l in logs {
                out.push_str(&fs::read_to_string(&l).unwrap_or_default());
            }
        }
        out
    }
}

impl TestRegistry {
    /// The token server's log: one line per token request (`GET user=.. scopes=[..]`).
    pub fn token_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("tokensrv.log")).unwrap_or_default()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(t) = self.token_server.as_mut() {
            let _ = t.kill();
            let _ = t.wait();
        }
    }
}

/// Polls `GET /v2/` until the registry answers 200 or 401, it exits, or `timeout` passes.
fn wait_ready(
    child: &mut Child,
    addr: &str,
    ca: Option<&Path>,
    deadline: Instant,
) -> Result<(), String> {
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited early with {status}"));
        }
        let status = match ca {
            Some(ca) => https_status(addr, "/v2/", ca),
            None => http_status(addr, "/v2/"),
        };
        match status {
            Ok(200 | 401) => return Ok(()),
            Ok(other) => return Err(format!("GET /v2/ answered {other}")),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("GET /v2/ on {addr} did not answer in time: {e}")),
        }
    }
}

/// Polls until `child` listens on a TCP socket and returns its `127.0.0.1:PORT`, read from the
/// kernel: the socket inodes among `/proc/PID/fd` matched against the LISTEN entries of
/// `/proc/PID/net/tcp` (the child's network namespace).
fn wait_listening(child: &mut Child, deadline: Instant) -> Result<String, String> {
    let pid = child.id();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited early with {status}"));
        }
        if let Some(port) = listening_port(pid) {
            return Ok(format!("127.0.0.1:{port}"));
        }
        if Instant::now() > deadline {
            return Err(format!("pid {pid} opened no listening TCP socket in time"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The port of a TCP socket process `pid` listens on (127.0.0.1 only), if any yet.
fn listening_port(pid: u32) -> Option<u16> {
    let inodes: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let table = fs::read_to_string(format!("/proc/{pid}/net/tcp")).ok()?;
    // Columns: sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (local, state, inode) = (cols.get(1)?, cols.get(3)?, cols.get(9)?);
        let (ip, port) = local.split_once(':')?;
        (*state == "0A" && ip == "0100007F" && inodes.iter().any(|i| i == inode))
            .then(|| u16::from_str_radix(port, 16).ok())
            .flatten()
    })
}

/// An HTTPS/1.0 GET through `openssl s_client`, verifying the server against `ca` (and its IP),
/// returning the status code.
fn https_status(addr: &str, path: &str, ca: &Path) -> std::io::Result<u16> {
    // Cheap check first: is anything listening yet?
    let sa: SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    drop(TcpStream::connect_timeout(&sa, Duration::from_millis(500))?);
    let openssl = need_tool("openssl").map_err(std::io::Error::other)?;
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let mut child = Command::new(openssl)
        .args([
            "s_client",
            "-quiet",
            "-verify_return_error",
            "-connect",
            addr,
        ])
        .args(["-verify_ip", host, "-CAfile"])
        .arg(ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        write!(stdin, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    }
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .filter(|_| text.starts_with("HTTP/"))
        .ok_or_else(|| {
            std::io::Error::other(format!(
                "no HTTPS answer: {}{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                text.trim()
            ))
        })
}

/// A minimal HTTP/1.0 GET returning the status code.
fn http_status(addr: &str, path: &str) -> std::io::Result<u16> {
    let sa: SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let k = s.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP answer {head:?}")))
}

/// A bcrypt (`$2b$04$`) htpasswd hash, made with Debian's python3 `crypt` module.
fn bcrypt_hash(password: &str) -> Result<String, TestError> {
    let py = if Path::new("/usr/bin/python3").exists() {
        PathBuf::from("/usr/bin/python3")
    } else {
        need_tool("python3")?
    };
    let out = run(Command::new(py).args(["-W", "ignore", "-c", "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))", password]))?;
    let hash = out.trim().to_string();
    if !hash.starts_with("$2") {
        return Err(TestError::Other(format!(
            "python3 crypt gave no bcrypt hash: {hash:?}"
        )));
    }
    Ok(hash)
}
