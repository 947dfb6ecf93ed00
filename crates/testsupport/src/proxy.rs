//! A fault-injecting HTTP/1.1 proxy on 127.0.0.1 in front of a test registry: it counts requests
//! and, per rule, answers 5xx or 429 (with `Retry-After`), drops the connection mid request or
//! response body, truncates a body (shorter `Content-Length`) or corrupts a byte, and simulates
//! stalled registries: never answering, stopping mid body with the connection held open,
//! trickling a body slowly, or answering only after a delay. One request per connection (`Connection: close` both ways), so
//! framing stays trivial.

use crate::TestError;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to do to a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status (e.g. 500, 503) without forwarding.
    Status(u16),
    /// Answer `429 Too Many Requests` with `Retry-After: SECONDS`.
    RateLimit(u64),
    /// Read half of the request body, then close the connection (no response).
    DropRequestBody,
    /// Forward, then send the status line, headers and half of the body, and close.
    DropResponseBody,
    /// Forward, then send half of the body with a matching (shorter) `Content-Length`.
    ShortBody,
    /// Forward, then flip one byte in the middle of the body.
    CorruptBody,
    /// Read the request, then send nothing and keep the connection open (until the proxy stops).
    Stall,
    /// Forward, then send the status line, headers and half of the body, and keep the
    /// connection open without sending more (until the proxy stops).
    StallMidBody,
    /// Forward, then send the body in `pieces` parts with `pause_ms` milliseconds between them:
    /// slow but steady.
    Trickle {
        /// How many parts.
        pieces: usize,
        /// The pause after each part but the last.
        pause_ms: u64,
    },
    /// Wait this many milliseconds after reading the request, then forward it and answer
    /// normally: a slow but healthy registry, whose requests overlap when a client sends them
    /// concurrently (see [`LoggedRequest::at`] and [`LoggedRequest::answered`]).
    Delay(u64),
}

/// A rule: the first `times` requests whose method matches (any when `None`) and whose path
/// contains `path_contains` get `fault`.
#[derive(Debug, Clone)]
pub struct FaultRule {
    /// `GET`, `HEAD`, `PATCH`, ... or any.
    pub method: Option<String>,
    /// A substring of the request target.
    pub path_contains: String,
    /// The fault.
    pub fault: Fault,
    /// How many requests it applies to.
    pub times: usize,
}

impl FaultRule {
    /// A rule for `times` requests with `method` on paths containing `path_contains`.
    pub fn new(method: &str, path_contains: &str, fault: Fault, times: usize) -> FaultRule {
        FaultRule {
            method: (!method.is_empty()).then(|| method.to_string()),
            path_contains: path_contains.to_string(),
            fault,
            times,
        }
    }
}

/// One request as the proxy saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// The method.
    pub method: String,
    /// The request target (path and query).
    pub path: String,
    /// The status sent back (0 when the connection was dropped before a response).
    pub status: u16,
    /// The fault applied, if any.
    pub fault: Option<Fault>,
    /// The request's `Range` header, if any (e.g. `bytes=1000-` for a resumed download).
    pub range: Option<String>,
    /// When the proxy had read the request's head (before its body and any answer).
    pub at: std::time::Instant,
    /// When the proxy logged the request: right before the first byte of its response went
    /// to the client (or before the connection was dropped or stalled).
    pub answered: std::time::Instant,
}

#[derive(Default)]
struct Shared {
    rules: Mutex<Vec<FaultRule>>,
    log: Mutex<Vec<LoggedRequest>>,
    stop: AtomicBool,
}

/// The proxy; stopped on drop.
pub struct FaultProxy {
    addr: String,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .finish()
    }
}

impl FaultProxy {
    /// Starts a proxy on a free 127.0.0.1 port forwarding to `upstream` (`127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> Result<FaultProxy, TestError> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| TestError::Io {
            action: "bind",
            path: "127.0.0.1:0".into(),
            source: e,
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| TestError::Other(format!("proxy local_addr: {e}")))?
            .to_string();
        let shared = Arc::new(Shared::default());
        let (sh, up) = (shared.clone(), upstream.to_string());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (sh, up) = (sh.clone(), up.clone());
                std::thread::spawn(move || {
                    let _ = handle(conn, &up, &sh);
                });
            }
        });
        Ok(FaultProxy {
            addr,
            shared,
            thread: Some(thread),
        })
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// Adds a rule (rules are tried in order).
    pub fn add(&self, rule: FaultRule) {
        self.shared.rules.lock().expect("rules").push(rule);
    }

    /// Removes all rules.
    pub fn clear_rules(&self) {
        self.shared.rules.lock().expect("rules").clear();
    }

    /// The requests so far.
    pub fn log(&self) -> Vec<LoggedRequest> {
        self.shared.log.lock().expect("log").clone()
    }

    /// Forgets the requests so far.
    pub fn clear_log(&self) {
        self.shared.log.lock().expect("log").clear();
    }

    /// How many logged requests had `method` and a path containing `path_contains`.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        self.log()
            .iter()
            .filter(|r| r.method == method && r.path.contains(path_contains))
            .count()
    }

    /// How many logged requests got `fault` (a test's proof that its faults were injected).
    pub fn hits(&self, fault: &Fault) -> usize {
        self.log()
            .iter()
            .filter(|r| r.fault.as_ref() == Some(fault))
            .count()
    }

    /// The log as text, one request a line (for assertion messages).
    pub fn log_text(&self) -> String {
        self.log()
            .iter()
            .map(|r| {
                let range = r.range.as_deref().unwrap_or("");
                format!(
                    "{} {} {range} -> {} {:?}\n",
                    r.method, r.path, r.status, r.fault
                )
            })
            .collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Keeps the calling connection thread (and so its open socket) alive until the proxy stops.
fn hold(sh: &Shared) {
    let start = std::time::Instant::now();
    while !sh.stop.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(600) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn handle(client: TcpStream, upstream: &str, sh: &Shared) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let end = line == b"\r\n" || line == b"\n";
        head.extend_from_slice(&line);
        if end {
            break;
        }
    }
    let at = std::time::Instant::now();
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("").to_string();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers: Vec<(String, String)> = Vec::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let fault = {
        let mut rules = sh.rules.lock().expect("rules");
        let mut found = None;
        for r in rules.iter_mut() {
            if r.times > 0
                && r.method.as_deref().is_none_or(|m| m == method)
                && path.contains(&r.path_contains)
            {
                r.times -= 1;
                found = Some(r.fault.clone());
                break;
            }
        }
        found
    };
    let log = |status: u16| {
        sh.log.lock().expect("log").push(LoggedRequest {
            method: method.clone(),
            path: path.clone(),
            status,
            fault: fault.clone(),
            range: header("range"),
            at,
            answered: std::time::Instant::now(),
        })
    };
    // The request body: Content-Length or chunked (decoded, re-sent with a Content-Length).
    let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if fault == Some(Fault::DropRequestBody) {
        let mut half = vec![0u8; len / 2];
        let _ = reader.read_exact(&mut half);
        log(0);
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line)?;
            let n = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0u8; n + 2];
            reader.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    }
    let mut client = client;
    match fault {
        Some(Fault::Stall) => {
            log(0);
            hold(sh);
            return Ok(());
        }
        Some(Fault::Status(code)) => {
            log(code);
            let msg = br#"{"errors":[{"code":"UNKNOWN","message":"injected fault"}]}"#;
            write!(
                client,
                "HTTP/1.1 {code} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                msg.len()
            )?;
            client.write_all(msg)?;
            return Ok(());
        }
        Some(Fault::RateLimit(secs)) => {
            log(429);
            let msg = br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"injected rate limit"}]}"#;
            write!(
                client,
                "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {secs}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                msg.len()
            )?;
            client.write_all(msg)?;
            return Ok(());
        }
        _ => {}
    }
    if let Some(Fault::Delay(ms)) = fault {
        std::thread::sleep(Duration::from_millis(ms));
    }
    // Forward.
    let mut up = TcpStream::connect(upstream)?;
    up.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut out = format!("{request_line}\r\n");
    for (k, v) in &headers {
        let lk = k.to_ascii_lowercase();
        if lk == "connection" || lk == "transfer-encoding" || lk == "content-length" {
            continue;
        }
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if chunked || len > 0 || header("content-length").is_some() {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("Connection: close\r\n\r\n");
    up.write_all(out.as_bytes())?;
    up.write_all(&body)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(resp.len());
    let (rhead, rbody) = resp.split_at(split);
    let rhead = String::from_utf8_lossy(rhead).into_owned();
    let status: u16 = rhead
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut rbody = rbody.to_vec();
    // Rebuild the head with Connection: close (and a new Content-Length for ShortBody).
    let mut new_head = String::new();
    for (i, l) in rhead.trim_end_matches("\r\n").split("\r\n").enumerate() {
        let lower = l.to_ascii_lowercase();
        if i > 0 && lower.starts_with("connection:") {
            continue;
        }
        if fault == Some(Fault::ShortBody)
            && lower.starts_with("content-length:")
            && !rbody.is_empty()
        {
            new_head.push_str(&format!("Content-Length: {}\r\n", rbody.len() / 2));
            continue;
        }
        new_head.push_str(l);
        new_head.push_str("\r\n");
    }
    new_head.push_str("Connection: close\r\n\r\n");
    // Logged before the client sees the response, so tests can count right after a call returns.
    log(status);
    client.write_all(new_head.as_bytes())?;
    match fault {
        Some(Fault::DropResponseBody) | Some(Fault::ShortBody) => {
            client.write_all(&rbody[..rbody.len() / 2])?;
            client.flush()?;
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        Some(Fault::StallMidBody) => {
            client.write_all(&rbody[..rbody.len() / 2])?;
            client.flush()?;
            hold(sh);
            return Ok(());
        }
        Some(Fault::Trickle { pieces, pause_ms }) => {
            let size = rbody.len().div_ceil(pieces.max(1)).max(1);
            for (i, part) in rbody.chunks(size).enumerate() {
                if i > 0 {
                    std::thread::sleep(Duration::from_millis(pause_ms));
                }
                client.write_all(part)?;
                client.flush()?;
            }
            let _ = client.shutdown(Shutdown::Write);
            return Ok(());
        }
        Some(Fault::CorruptBody) if !rbody.is_empty() => {
            let mid = rbody.len() / 2;
            rbody[mid] ^= 0xff;
        }
        _ => {}
    }
    client.write_all(&rbody)?;
    client.flush()?;
    let _ = client.shutdown(Shutdown::Write);
    Ok(())
}

/// A TCP listener on 127.0.0.1 that never accepts and whose accept queue is full, so a new
/// connection to it hangs in the handshake (its SYNs are dropped) like a registry behind a black
/// hole: what a connect timeout is for. Closed on drop.
pub struct BlackHole {
    addr: String,
    _listener: TcpListener,
    _queued: Vec<TcpStream>,
}

impl std::fmt::Debug for BlackHole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlackHole")
            .field("addr", &self.addr)
            .finish()
    }
}

impl BlackHole {
    /// Binds a free 127.0.0.1 port with a backlog of 0 and fills its accept queue.
    pub fn start() -> Result<BlackHole, TestError> {
        use socket2::{Domain, Socket, Type};
        let os = |what: &str, e: std::io::Error| TestError::Other(format!("{what}: {e}"));
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| os("socket", e))?;
        let local = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
        socket
            .bind(&local.into())
            .map_err(|e| os("bind 127.0.0.1:0", e))?;
        socket.listen(0).map_err(|e| os("listen", e))?;
        let listener = TcpListener::from(socket);
        let addr = listener
            .local_addr()
            .map_err(|e| TestError::Other(format!("black hole local_addr: {e}")))?;
        // Connect until one attempt hangs: from then on the queue is full.
        let mut queued = Vec::new();
        loop {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(s) if queued.len() < 64 => queued.push(s),
                Ok(_) => {
                    return Err(TestError::Other(
                        "black hole: the accept queue never filled".into(),
                    ))
                }
                Err(_) => break,
            }
        }
        Ok(BlackHole {
            addr: addr.to_string(),
            _listener: listener,
            _queued: queued,
        })
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }
}
