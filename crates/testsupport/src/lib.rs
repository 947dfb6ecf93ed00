//! Shared test fixtures for rbuild's crates (synchronous, usable from any test):
//! a throwaway Debian `docker-registry` on a free loopback port ([`TestRegistry`]), a deterministic
//! busybox base image as an OCI layout or rootfs tarball, pushing layouts with skopeo, and the
//! "skip loudly unless CI requires it" helpers ([`require_root`], [`shared_dir`], [`need_tool`]),
//! and a fault-injecting, request-counting HTTP proxy ([`FaultProxy`]).

mod proxy;
pub use proxy::{BlackHole, Fault, FaultProxy, FaultRule, LoggedRequest};

use flate2::write::GzEncoder;
use rbuild_oci::{
    canonical_json, Descriptor, DiffId, Digest, History, ImageConfig, Index, Manifest, MediaType,
    Platform, RootFs, RunConfig, ANNOTATION_REF_NAME,
};
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Env var: when `1`, [`require_root`] fails instead of skipping.
pub const REQUIRE_ROOT_ENV: &str = "RBUILD_REQUIRE_ROOT";
/// Env var: when `1`, [`shared_dir`] fails instead of skipping.
pub const REQUIRE_SHARED_ENV: &str = "RBUILD_REQUIRE_SHARED";
/// Env var: where `shared/` is (default `<workspace>/../shared`).
pub const SHARED_ENV: &str = "RBUILD_SHARED";
/// The PATH of the busybox base image config.
pub const BUSYBOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Errors of the fixtures; messages say what to install or where to look.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// A required tool is missing.
    #[error("tool `{tool}` not found on PATH: run .ci/run (it installs the test tools) or `apt-get install -y {package}`")]
    MissingTool {
        /// The command.
        tool: String,
        /// The Debian package that has it.
        package: String,
    },
    /// A command failed.
    #[error("`{command}` failed ({status}):\n{output}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status.
        status: String,
        /// Its stderr and stdout.
        output: String,
    },
    /// The registry did not come up.
    #[error(
        "docker-registry on {addr} did not start: {reason}\n--- registry log {log} ---\n{log_text}"
    )]
    RegistryStart {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
        /// The log file.
        log: String,
        /// Its contents.
        log_text: String,
    },
    /// IO failed.
    #[error("{action} `{path}`: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A precondition failed and the environment requires it (root, shared/).
    #[error("{0}")]
    Required(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> TestError {
    let path = path.into();
    move |source| TestError::Io {
        action,
        path,
        source,
    }
}

/// Checks a tool is on PATH and returns its full path.
pub fn need_tool(name: &str) -> Result<PathBuf, TestError> {
    let package = match name {
        "busybox" => "busybox-static",
        "openssl" => "openssl",
        "python3" => "python3",
        other => other,
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in
        std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
    {
        let p = dir.join(name);
        if let Ok(md) = fs::metadata(&p) {
            use std::os::unix::fs::PermissionsExt;
            if md.is_file() && md.permissions().mode() & 0o111 != 0 {
                return Ok(p);
            }
        }
    }
    Err(TestError::MissingTool {
        tool: name.to_string(),
        package: package.to_string(),
    })
}

fn run(cmd: &mut Command) -> Result<String, TestError> {
    let line = format!("{cmd:?}").replace('"', "");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| TestError::Command {
            command: line.clone(),
            status: "spawn failed".into(),
            output: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(TestError::Command {
            command: line,
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Returns `Ok(true)` as root; otherwise prints `SKIPPED: needs root` and returns `Ok(false)`,
/// or fails when `RBUILD_REQUIRE_ROOT=1`.
pub fn require_root() -> Result<bool, TestError> {
    // SAFETY: geteuid has no preconditions and touches no memory.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(true);
    }
    if std::env::var(REQUIRE_ROOT_ENV).as_deref() == Ok("1") {
        return Err(TestError::Required(format!(
            "this test needs root and {REQUIRE_ROOT_ENV}=1 forbids skipping it"
        )));
    }
    println!("SKIPPED: needs root");
    eprintln!("SKIPPED: needs root");
    Ok(false)
}

/// Finds `shared/` (`$RBUILD_SHARED` or `<workspace>/../shared`); prints a skip and returns `None`
/// when absent, or fails when `RBUILD_REQUIRE_SHARED=1`.
pub fn shared_dir() -> Result<Option<PathBuf>, TestError> {
    let candidate = match std::env::var_os(SHARED_ENV) {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    if candidate.is_dir() {
        return Ok(Some(candidate.canonicalize().unwrap_or(candidate)));
    }
    if std::env::var(REQUIRE_SHARED_ENV).as_deref() == Ok("1") {
        return Err(TestError::Required(format!(
            "../shared not found at {} and {REQUIRE_SHARED_ENV}=1 forbids skipping",
            candidate.display()
        )));
    }
    println!("SKIPPED: ../shared not found");
    eprintln!("SKIPPED: ../shared not found ({})", candidate.display());
    Ok(None)
}

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
        let mut last_err = None;
        for attempt in 0..5 {
            let port = free_port()?;
            let addr = format!("127.0.0.1:{port}");
            let config = format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{tls}{auth}",
                dir.path().join("data").display()
            );
            let cfg_path = dir.path().join("config.yml");
            fs::write(&cfg_path, config).map_err(io_err("write", &cfg_path))?;
            let log_path = dir.path().join(format!("registry-{attempt}.log"));
            let log = fs::File::create(&log_path).map_err(io_err("create", &log_path))?;
            let log2 = log.try_clone().map_err(io_err("dup", &log_path))?;
            let child = Command::new(&bin)
                .arg("serve")
                .arg(&cfg_path)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .map_err(io_err("spawn", &bin))?;
            let mut child = child;
            stop_with_this_process(child.id(), Some(dir.path()));
            match wait_ready(&mut child, &addr, ca.as_deref(), Duration::from_secs(10)) {
                Ok(()) => {
                    return Ok(TestRegistry {
                        child,
                        token_server,
                        addr,
                        dir,
                        tls: opts.tls,
                    })
                }
                Err(reason) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log_text = fs::read_to_string(&log_path).unwrap_or_default();
                    let collision = log_text.contains("address already in use");
                    last_err = Some(TestError::RegistryStart {
                        addr,
                        reason,
                        log: log_path.display().to_string(),
                        log_text,
                    });
                    if !collision {
                        break;
                    }
                }
            }
        }
        if let Some(mut t) = token_server {
            let _ = t.kill();
            let _ = t.wait();
        }
        Err(last_err.unwrap_or_else(|| TestError::Other("docker-registry did not start".into())))
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

const TOKEN_SERVER_PY: &str = r#"
import base64, json, time, uuid, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlparse, parse_qs
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
d, USER, PASS = sys.argv[1], sys.argv[2], sys.argv[3]
KEY = open(d + "/token.key", "rb").read()
X5C = base64.b64encode(x509.load_pem_x509_certificate(open(d + "/token.crt", "rb").read())
                       .public_bytes(serialization.Encoding.DER)).decode()
class H(BaseHTTPRequestHandler):
    def handle_req(self, params):
        auth, user = self.headers.get("Authorization", ""), None
        if auth.startswith("Basic "):
            u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
            if (u, p) != (USER, PASS):
                print(f"{self.command} user={u} DENIED", file=sys.stderr, flush=True)
                self.send_response(401); self.send_header("Content-Length", "0"); self.end_headers(); return
            user = u
        access = []
        for s in params.get("scope", []):
            for one in s.split(" "):
                typ, name, actions = one.split(":", 2)
                acts = actions.split(",") if user else [a for a in actions.split(",") if a == "pull"]
                access.append({"type": typ, "name": name, "actions": acts})
        now = int(time.time())
        tok = jwt.encode({"iss": "rbuild-test-issuer", "sub": user or "", "aud": params.get("service", [""])[0],
                          "exp": now + 300, "nbf": now - 10, "iat": now, "jti": str(uuid.uuid4()), "access": access},
                         KEY, algorithm="RS256", headers={"x5c": [X5C]})
        print(f"{self.command} user={user} scopes={params.get('scope')} grant_type={params.get('grant_type')}", file=sys.stderr, flush=True)
        body = json.dumps({"token": tok, "access_token": tok, "expires_in": 300}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_GET(self): self.handle_req(parse_qs(urlparse(self.path).query))
    def do_POST(self): self.handle_req(parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()))
    def log_message(self, *a): pass
srv = HTTPServer(("127.0.0.1", 0), H)
open(d + "/tokensrv.port.tmp", "w").write(str(srv.server_address[1]))
import os; os.rename(d + "/tokensrv.port.tmp", d + "/tokensrv.port")
srv.serve_forever()
"#;

/// Starts the JWT token server in `dir` (key and cert made with openssl); returns it and its realm URL.
fn start_token_server(dir: &Path, user: &str, pass: &str) -> Result<(Child, String), TestError> {
    let openssl = need_tool("openssl")?;
    run(Command::new(openssl)
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=rbuild-test-token",
        ])
        .arg("-keyout")
        .arg(dir.join("token.key"))
        .arg("-out")
        .arg(dir.join("token.crt")))?;
    let script = dir.join("tokensrv.py");
    fs::write(&script, TOKEN_SERVER_PY).map_err(io_err("write", &script))?;
    let py = if Path::new("/usr/bin/python3").exists() {
        PathBuf::from("/usr/bin/python3")
    } else {
        need_tool("python3")?
    };
    if run(Command::new(&py).args(["-c", "import jwt, cryptography"])).is_err() {
        return Err(TestError::MissingTool {
            tool: "python3 modules jwt + cryptography (token server)".into(),
            package: "python3-jwt python3-cryptography".into(),
        });
    }
    let log_path = dir.join("tokensrv.log");
    let log = fs::File::create(&log_path).map_err(io_err("create", &log_path))?;
    let mut child = Command::new(py)
        .arg(&script)
        .arg(dir)
        .arg(user)
        .arg(pass)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(io_err("spawn", &script))?;
    stop_with_this_process(child.id(), None);
    let port_file = dir.join("tokensrv.port");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(port) = fs::read_to_string(&port_file) {
            return Ok((child, format!("http://127.0.0.1:{}/token", port.trim())));
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log_text = fs::read_to_string(&log_path).unwrap_or_default();
            return Err(TestError::Other(format!("token server exited with {status} (needs Debian's python3-jwt and python3-cryptography):\n{log_text}")));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(TestError::Other(
                "token server did not start within 10 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_ready(
    child: &mut Child,
    addr: &str,
    ca: Option<&Path>,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
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
            Err(e) => return Err(format!("GET /v2/ did not answer within {timeout:?}: {e}")),
        }
    }
}

fn free_port() -> Result<u16, TestError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("bind", "127.0.0.1:0"))?;
    let port = l
        .local_addr()
        .map_err(io_err("local_addr", "127.0.0.1:0"))?
        .port();
    Ok(port)
}

/// Makes `certs/ca.crt` (a throwaway CA, alone in `certs/` for skopeo's cert dirs) and
/// `tls/server.crt` + `tls/server.key` (for 127.0.0.1 and localhost, signed by the CA) under `dir`
/// with openssl (P-256 keys, valid two days). Returns the server certificate and key paths.
fn make_tls_certs(dir: &Path) -> Result<(PathBuf, PathBuf), TestError> {
    let openssl = need_tool("openssl")?;
    let (certs, tls) = (dir.join("certs"), dir.join("tls"));
    for d in [&certs, &tls] {
        fs::create_dir_all(d).map_err(io_err("create", d))?;
    }
    let ca_crt = certs.join("ca.crt");
    let (ca_key, ca_csr, ca_ext) = (tls.join("ca.key"), tls.join("ca.csr"), tls.join("ca.ext"));
    let (key, csr, ext, crt) = (
        tls.join("server.key"),
        tls.join("server.csr"),
        tls.join("server.ext"),
        tls.join("server.crt"),
    );
    fs::write(
        &ca_ext,
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n",
    )
    .map_err(io_err("write", &ca_ext))?;
    fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n\
         subjectAltName=IP:127.0.0.1,DNS:localhost\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
    )
    .map_err(io_err("write", &ext))?;
    let csr_cmd = |key: &Path, csr: &Path, cn: &str| {
        let mut c = Command::new(&openssl);
        c.args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-subj", cn, "-keyout"])
        .arg(key)
        .arg("-out")
        .arg(csr);
        c
    };
    run(&mut csr_cmd(&ca_key, &ca_csr, "/CN=rbuild-test-ca"))?;
    run(Command::new(&openssl)
        .args(["x509", "-req", "-days", "2", "-in"])
        .arg(&ca_csr)
        .arg("-signkey")
        .arg(&ca_key)
        .arg("-extfile")
        .arg(&ca_ext)
        .arg("-out")
        .arg(&ca_crt))?;
    run(&mut csr_cmd(&key, &csr, "/CN=127.0.0.1"))?;
    run(Command::new(&openssl)
        .args(["x509", "-req", "-days", "2", "-set_serial", "2", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(&ca_crt)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&crt))?;
    Ok((crt, key))
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

// ---------------------------------------------------------------------------------------------
// The busybox base image.

struct TarEntry {
    path: String,
    kind: Kind,
    mode: u32,
}

enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

fn busybox_entries() -> Result<Vec<TarEntry>, TestError> {
    let bb = need_tool("busybox")?;
    let bb = fs::canonicalize(&bb).unwrap_or(bb);
    let binary = fs::read(&bb).map_err(io_err("read", &bb))?;
    let list = run(Command::new(&bb).arg("--list"))?;
    let mut entries = vec![
        TarEntry { path: "bin".into(), kind: Kind::Dir, mode: 0o755 },
        TarEntry { path: "bin/busybox".into(), kind: Kind::File(binary), mode: 0o755 },
        TarEntry { path: "etc".into(), kind: Kind::Dir, mode: 0o755 },
        TarEntry { path: "etc/group".into(), kind: Kind::File(b"root:x:0:\nnogroup:x:65534:\n".to_vec()), mode: 0o644 },
        TarEntry {
            path: "etc/passwd".into(),
            kind: Kind::File(b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n".to_vec()),
            mode: 0o644,
        },
        TarEntry { path: "root".into(), kind: Kind::Dir, mode: 0o700 },
        TarEntry { path: "tmp".into(), kind: Kind::Dir, mode: 0o1777 },
        TarEntry { path: "usr".into(), kind: Kind::Dir, mode: 0o755 },
        TarEntry { path: "usr/bin".into(), kind: Kind::Dir, mode: 0o755 },
        TarEntry { path: "usr/bin/env".into(), kind: Kind::Symlink("/bin/busybox".into()), mode: 0o777 },
    ];
    let mut applets: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .collect();
    applets.sort_unstable();
    applets.dedup();
    for a in applets {
        entries.push(TarEntry {
            path: format!("bin/{a}"),
            kind: Kind::Symlink("busybox".into()),
            mode: 0o777,
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

/// The uncompressed busybox root filesystem tar (sorted, mtime 0, numeric owners 0:0).
pub fn busybox_rootfs_tar_bytes() -> Result<Vec<u8>, TestError> {
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    let werr = |e: std::io::Error| TestError::Other(format!("write busybox tar: {e}"));
    for e in busybox_entries()? {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mode(e.mode);
        match e.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, format!("{}/", e.path), std::io::empty())
                    .map_err(werr)?;
            }
            Kind::File(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, &e.path, data.as_slice())
                    .map_err(werr)?;
            }
            Kind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, &e.path, &target).map_err(werr)?;
            }
        }
    }
    b.into_inner().map_err(werr)
}

/// Writes the busybox root filesystem as an uncompressed tar (for `FROM scratch` + `ADD rootfs.tar /`).
pub fn make_busybox_rootfs_tar(path: &Path) -> Result<(), TestError> {
    let bytes = busybox_rootfs_tar_bytes()?;
    fs::write(path, bytes).map_err(io_err("write", path))
}

/// The busybox base image's config for `architecture` (linux).
pub fn busybox_config(architecture: &str, diff_id: DiffId) -> ImageConfig {
    ImageConfig {
        architecture: architecture.to_string(),
        os: "linux".into(),
        created: Some("1970-01-01T00:00:00Z".into()),
        config: RunConfig {
            env: Some(vec![format!("PATH={BUSYBOX_PATH}")]),
            cmd: Some(vec!["sh".into()]),
            ..Default::default()
        },
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![diff_id],
        },
        history: vec![History {
            created: Some("1970-01-01T00:00:00Z".into()),
            created_by: Some("rbuild-testsupport: busybox-static base".into()),
            ..Default::default()
        }],
        ..Default::default()
    }
}

struct LayoutWriter {
    dir: PathBuf,
}

impl LayoutWriter {
    fn new(dir: &Path) -> Result<Self, TestError> {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(io_err("create", &blobs))?;
        let layout = dir.join("oci-layout");
        fs::write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(io_err("write", &layout))?;
        Ok(LayoutWriter {
            dir: dir.to_path_buf(),
        })
    }

    fn blob(&self, media_type: &str, bytes: &[u8]) -> Result<Descriptor, TestError> {
        let digest = Digest::sha256_of(bytes);
        let path = self.dir.join("blobs/sha256").join(digest.hex());
        fs::write(&path, bytes).map_err(io_err("write", &path))?;
        Ok(Descriptor {
            media_type: MediaType::new(media_type),
            digest,
            size: bytes.len() as u64,
            platform: None,
            annotations: None,
        })
    }

    fn json_blob<T: serde::Serialize>(
        &self,
        media_type: &str,
        value: &T,
    ) -> Result<Descriptor, TestError> {
        let bytes = canonical_json(value)
            .map_err(|e| TestError::Other(format!("serialise {media_type}: {e}")))?;
        self.blob(media_type, &bytes)
    }

    fn finish(&self, mut top: Descriptor, tag: &str) -> Result<(), TestError> {
        top.annotations = Some(BTreeMap::from([(
            ANNOTATION_REF_NAME.to_string(),
            tag.to_string(),
        )]));
        let index = Index {
            schema_version: 2,
            media_type: Some(MediaType::new(MediaType::OCI_INDEX)),
            manifests: vec![top],
            annotations: None,
        };
        let bytes = canonical_json(&index)
            .map_err(|e| TestError::Other(format!("serialise index.json: {e}")))?;
        let path = self.dir.join("index.json");
        fs::write(&path, bytes).map_err(io_err("write", &path))
    }
}

/// Writes the gzip layer and per-architecture manifests; returns the manifest descriptors.
fn write_busybox_images(
    w: &LayoutWriter,
    architectures: &[&str],
) -> Result<Vec<Descriptor>, TestError> {
    let tar = busybox_rootfs_tar_bytes()?;
    let diff_id = DiffId(Digest::sha256_of(&tar));
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar)
        .and_then(|_| gz.flush())
        .map_err(|e| TestError::Other(format!("gzip: {e}")))?;
    let gz = gz
        .finish()
        .map_err(|e| TestError::Other(format!("gzip: {e}")))?;
    let layer = w.blob(MediaType::OCI_LAYER_GZIP, &gz)?;
    let mut out = Vec::new();
    for arch in architectures {
        let config = w.json_blob(
            MediaType::OCI_CONFIG,
            &busybox_config(arch, diff_id.clone()),
        )?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MediaType::new(MediaType::OCI_MANIFEST)),
            config,
            layers: vec![layer.clone()],
            annotations: None,
        };
        let mut desc = w.json_blob(MediaType::OCI_MANIFEST, &manifest)?;
        desc.platform = Some(Platform {
            architecture: arch.to_string(),
            os: "linux".into(),
            variant: (*arch == "arm64").then(|| "v8".to_string()),
            os_version: None,
        });
        out.push(desc);
    }
    Ok(out)
}

/// Makes an OCI image layout at `dir` (tag `latest`) holding the linux/amd64 busybox base image:
/// one gzip layer with /bin/busybox and all applet links, /etc/passwd, /etc/group, /tmp, /root;
/// Env PATH=... and Cmd ["sh"]. Deterministic: the same busybox binary gives the same digests.
pub fn make_busybox_layout(dir: &Path) -> Result<(), TestError> {
    let w = LayoutWriter::new(dir)?;
    let mut descs = write_busybox_images(&w, &["amd64"])?;
    let mut top = descs.remove(0);
    top.platform = None;
    w.finish(top, "latest")
}

/// Like [`make_busybox_layout`], but tag `latest` is an OCI index with one manifest per architecture
/// (same layer, per-architecture config; `arm64` gets variant `v8`). Push it with [`push_layout`].
pub fn make_busybox_index_layout(dir: &Path, architectures: &[&str]) -> Result<Digest, TestError> {
    let w = LayoutWriter::new(dir)?;
    let manifests = write_busybox_images(&w, architectures)?;
    let index = Index {
        schema_version: 2,
        media_type: Some(MediaType::new(MediaType::OCI_INDEX)),
        manifests,
        annotations: None,
    };
    let top = w.json_blob(MediaType::OCI_INDEX, &index)?;
    let digest = top.digest.clone();
    w.finish(top, "latest")?;
    Ok(digest)
}

/// `skopeo copy --all --dest-tls-verify=false oci:LAYOUT:latest docker://REF` (digests preserved).
pub fn push_layout(layout: &Path, reference: &str) -> Result<(), TestError> {
    push_layout_with_creds(layout, reference, None)
}

/// [`push_layout`] to a registry that needs `user:password` (`--dest-creds`).
pub fn push_layout_with_creds(
    layout: &Path,
    reference: &str,
    creds: Option<(&str, &str)>,
) -> Result<(), TestError> {
    let skopeo = need_tool("skopeo")?;
    let mut cmd = Command::new(skopeo);
    cmd.args([
        "--insecure-policy",
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "-q",
    ]);
    if let Some((u, p)) = creds {
        cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
    }
    run(cmd
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{reference}")))?;
    Ok(())
}

/// The `Digest` field of `skopeo inspect` for `docker://REF`.
pub fn skopeo_digest(reference: &str) -> Result<Digest, TestError> {
    let skopeo = need_tool("skopeo")?;
    let out = run(Command::new(skopeo)
        .args([
            "--insecure-policy",
            "inspect",
            "--tls-verify=false",
            "--no-tags",
        ])
        .arg(format!("docker://{reference}")))?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| TestError::Other(format!("skopeo inspect output: {e}: {out}")))?;
    let d = v
        .get("Digest")
        .and_then(|d| d.as_str())
        .ok_or_else(|| TestError::Other(format!("skopeo inspect printed no Digest: {out}")))?;
    d.parse()
        .map_err(|e| TestError::Other(format!("skopeo inspect Digest: {e}")))
}

/// Starts a registry and pushes the busybox base as `ADDR/busybox:latest`.
pub fn registry_with_busybox() -> Result<(TestRegistry, String), TestError> {
    let reg = TestRegistry::start()?;
    let tmp = tempfile::tempdir().map_err(io_err("create temp dir", std::env::temp_dir()))?;
    let layout = tmp.path().join("layout");
    make_busybox_layout(&layout)?;
    let reference = format!("{}/busybox:latest", reg.addr());
    push_layout(&layout, &reference)?;
    Ok((reg, reference))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_tar_is_deterministic_and_complete() {
        if need_tool("busybox").is_err() {
            println!("SKIPPED: busybox not installed");
            return;
        }
        let a = busybox_rootfs_tar_bytes().unwrap();
        let b = busybox_rootfs_tar_bytes().unwrap();
        assert_eq!(a, b);
        let mut ar = tar::Archive::new(a.as_slice());
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            assert_eq!(e.header().mtime().unwrap(), 0);
            assert_eq!(e.header().uid().unwrap(), 0);
            let name = e.path().unwrap().to_string_lossy().into_owned();
            if name == "tmp/" {
                assert_eq!(e.header().mode().unwrap(), 0o1777);
            }
            names.push(name);
        }
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for want in [
            "bin/busybox",
            "bin/sh",
            "bin/ls",
            "bin/sha256sum",
            "bin/[",
            "bin/whoami",
            "etc/passwd",
            "etc/group",
            "root/",
            "tmp/",
        ] {
            assert!(names.iter().any(|n| n == want), "missing {want}");
        }
    }

    #[test]
    fn layout_is_deterministic() {
        if need_tool("busybox").is_err() {
            println!("SKIPPED: busybox not installed");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        make_busybox_layout(&t.path().join("a")).unwrap();
        make_busybox_layout(&t.path().join("b")).unwrap();
        let a = fs::read(t.path().join("a/index.json")).unwrap();
        assert_eq!(a, fs::read(t.path().join("b/index.json")).unwrap());
        let index: Index = serde_json::from_slice(&a).unwrap();
        let m: Manifest = serde_json::from_slice(
            &fs::read(
                t.path()
                    .join("a/blobs/sha256")
                    .join(index.manifests[0].digest.hex()),
            )
            .unwrap(),
        )
        .unwrap();
        let c: ImageConfig = serde_json::from_slice(
            &fs::read(t.path().join("a/blobs/sha256").join(m.config.digest.hex())).unwrap(),
        )
        .unwrap();
        assert_eq!(c.env_var("PATH"), Some(BUSYBOX_PATH));
        assert_eq!(c.config.cmd, Some(vec!["sh".to_string()]));
    }

    #[test]
    fn need_tool_error_is_helpful() {
        let e = need_tool("definitely-not-a-tool-xyz")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(".ci/run") && e.contains("apt-get install"),
            "{e}"
        );
    }
}

#[cfg(test)]
mod root_tests {
    use super::*;

    /// The rootfs really works: unpack it and run a few applets in a chroot.
    #[test]
    fn rootfs_runs_in_chroot() {
        if !require_root().unwrap() || need_tool("busybox").is_err() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let tar = busybox_rootfs_tar_bytes().unwrap();
        let root = t.path().join("rootfs");
        fs::create_dir(&root).unwrap();
        let mut ar = tar::Archive::new(tar.as_slice());
        ar.set_preserve_permissions(true);
        ar.unpack(&root).unwrap();
        let out = Command::new("chroot")
            .arg(&root)
            .args(["/bin/sh", "-c", "echo hi > /tmp/x && cat /tmp/x && whoami && id -u nobody && ls -ld /tmp && test -d /root && echo ok"])
            .env_clear()
            .env("PATH", BUSYBOX_PATH)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines[0..3], ["hi", "root", "65534"], "{stdout}");
        assert!(lines[3].starts_with("drwxrwxrwt"), "{stdout}");
        assert_eq!(lines[4], "ok");
    }
}

/// Makes sure a server we started cannot outlive the test process: a registry held in a
/// `static` (shared by the tests of one binary) is never dropped, so a small watchdog stops it,
/// and removes its temp storage, once this process is gone.
fn stop_with_this_process(child: u32, dir: Option<&Path>) {
    let me = std::process::id();
    let cleanup = dir
        .map(|d| format!("rm -rf '{}'", d.display()))
        .unwrap_or_default();
    let script = format!(
        "while kill -0 {me} 2>/dev/null && kill -0 {child} 2>/dev/null; do sleep 1; done; kill {child} 2>/dev/null; {cleanup}"
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}
