//! The registry's Bearer token server: a small python3 HTTP server that signs JWTs (python3-jwt)
//! with a throwaway openssl key, granting everything to one user and `pull` to anonymous callers,
//! and logging each request's scopes.

use crate::watchdog::stop_with_this_process;
use crate::{io_err, need_tool, run, TestError};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The token server's python3 source; run as `tokensrv.py DIR USER PASSWORD`.
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
pub(crate) fn start_token_server(
    dir: &Path,
    user: &str,
    pass: &str,
) -> Result<(Child, String), TestError> {
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
