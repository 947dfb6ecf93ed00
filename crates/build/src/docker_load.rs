//! `--load`: loading a `docker load` archive into a docker daemon over its unix socket
//! (`POST /images/load`, HTTP/1.1), as buildx's docker driver does. The socket comes from
//! `DOCKER_HOST=unix://PATH`, else `/var/run/docker.sock`. The client is a small HTTP/1.1
//! request (`Connection: close`) and a response reader that understands `Content-Length`,
//! chunked and read-to-end bodies; the body is docker's JSON message stream, whose `stream`
//! lines (`Loaded image: NAME`) are returned and whose `error` fails the load.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// The default docker daemon socket.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// Why loading into the docker daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No daemon answers at the socket (or `DOCKER_HOST` is not a unix socket).
    #[error("cannot connect to the Docker daemon at {0}. Is the docker daemon running?")]
    Unreachable(String),
    /// `DOCKER_HOST` names a transport other than a unix socket.
    #[error("DOCKER_HOST={0} is not supported: --load talks to a unix:// socket")]
    UnsupportedHost(String),
    /// Talking to the daemon failed midway.
    #[error("talking to the Docker daemon at {addr}: {source}")]
    Io {
        /// The daemon's address (`unix://PATH`).
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The daemon answered with an error (HTTP status or an `error` message).
    #[error("the Docker daemon refused the image: {0}")]
    Daemon(String),
}

/// The docker daemon's socket: `DOCKER_HOST=unix://PATH` (`host` is that variable's value),
/// else [`DEFAULT_DOCKER_SOCKET`].
pub fn docker_socket(host: Option<&str>) -> Result<PathBuf, LoadError> {
    match host.map(str::trim).filter(|h| !h.is_empty()) {
        None => Ok(PathBuf::from(DEFAULT_DOCKER_SOCKET)),
        Some(h) => match h.strip_prefix("unix://") {
            Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
            _ => Err(LoadError::UnsupportedHost(h.to_string())),
        },
    }
}

fn addr(socket: &std::path::Path) -> String {
    format!("unix://{}", socket.display())
}

/// Checks that a docker daemon answers at `socket` (`GET /_ping`).
pub fn ping(socket: &std::path::Path) -> Result<(), LoadError> {
    let unreachable = || LoadError::Unreachable(addr(socket));
    let mut stream = UnixStream::connect(socket).map_err(|_| unreachable())?;
    // A daemon that accepts but never answers is as unreachable.
    let limit = Some(std::time::Duration::from_secs(30));
    stream
        .set_read_timeout(limit)
        .and_then(|()| stream.set_write_timeout(limit))
        .map_err(|_| unreachable())?;
    stream
        .write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
        .map_err(|_| unreachable())?;
    let (status, _) = read_response(BufReader::new(stream)).map_err(|_| unreachable())?;
    if status != 200 {
        return Err(unreachable());
    }
    Ok(())
}

/// Sends the `docker load` archive `archive` (of `len` bytes) to the daemon at `socket` and
/// returns the lines it reported (`Loaded image: NAME`, `Loaded image ID: sha256:...`).
pub fn load_archive(
    socket: &std::path::Path,
    mut archive: impl Read,
    len: u64,
) -> Result<Vec<String>, LoadError> {
    let io = |source| LoadError::Io {
        addr: addr(socket),
        source,
    };
    let mut stream =
        UnixStream::connect(socket).map_err(|_| LoadError::Unreachable(addr(socket)))?;
    let head = format!(
        "POST /images/load?quiet=1 HTTP/1.1\r\nHost: docker\r\nContent-Type: application/x-tar\r\n\
         Content-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).map_err(io)?;
    let sent = std::io::copy(&mut archive, &mut stream).map_err(io)?;
    if sent != len {
        return Err(io(std::io::Error::other(format!(
            "the archive has {sent} bytes, {len} announced"
        ))));
    }
    stream.flush().map_err(io)?;
    let (status, body) = read_response(BufReader::new(stream)).map_err(io)?;
    let lines = messages(&body)?;
    if !(200..300).contains(&status) {
        let text = String::from_utf8_lossy(&body);
        let msg = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
            .unwrap_or_else(|| text.trim().to_string());
        return Err(LoadError::Daemon(format!("HTTP {status}: {msg}")));
    }
    Ok(lines)
}

/// The `stream` lines of docker's JSON message stream; its first `error` is an error.
fn messages(body: &[u8]) -> Result<Vec<String>, LoadError> {
    let mut out = Vec::new();
    for value in serde_json::Deserializer::from_slice(body).into_iter::<serde_json::Value>() {
        let Ok(value) = value else { break };
        if let Some(err) = value.get("error").and_then(|e| e.as_str()) {
            return Err(LoadError::Daemon(err.to_string()));
        }
        if let Some(text) = value.get("stream").and_then(|s| s.as_str()) {
            out.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from),
            );
        }
    }
    Ok(out)
}

/// Reads an HTTP/1.1 response: its status and its (de-chunked) body.
fn read_response(mut r: impl BufRead) -> std::io::Result<(u16, Vec<u8>)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| line.starts_with("HTTP/1."))
        .ok_or_else(|| bad("not an HTTP response"))?;
    let mut chunked = false;
    let mut length: Option<usize> = None;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("the response ends in its headers"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().ok();
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size, 16).map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_comes_from_docker_host() {
        assert_eq!(
            docker_socket(None).unwrap(),
            PathBuf::from(DEFAULT_DOCKER_SOCKET)
        );
        assert_eq!(
            docker_socket(Some("unix:///run/d.sock")).unwrap(),
            PathBuf::from("/run/d.sock")
        );
        assert!(matches!(
            docker_socket(Some("tcp://1.2.3.4:2375")),
            Err(LoadError::UnsupportedHost(_))
        ));
    }

    #[test]
    fn chunked_and_sized_bodies_are_read() {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
        let (status, body) = read_response(&chunked[..]).unwrap();
        assert_eq!((status, body.as_slice()), (200, &b"hello world"[..]));
        let sized = b"HTTP/1.0 500 Oops\r\ncontent-length: 3\r\n\r\nabcdef";
        let (status, body) = read_response(&sized[..]).unwrap();
        assert_eq!((status, body.as_slice()), (500, &b"abc"[..]));
        let open = b"HTTP/1.1 200 OK\r\n\r\nrest";
        assert_eq!(read_response(&open[..]).unwrap().1, b"rest");
        assert!(read_response(&b"SSH-2.0\r\n"[..]).is_err());
        assert!(read_response(&b"HTTP/1.1 200 OK\r\nX: y\r\n"[..]).is_err());
    }

    #[test]
    fn loaded_lines_and_errors_come_from_the_message_stream() {
        let body = br#"{"stream":"Loaded image: a:1\n"}
{"stream":"Loaded image: b:2\n"}"#;
        assert_eq!(
            messages(body).unwrap(),
            vec!["Loaded image: a:1", "Loaded image: b:2"]
        );
        let err = messages(br#"{"errorDetail":{"message":"bad"},"error":"bad"}"#).unwrap_err();
        assert_eq!(err.to_string(), "the Docker daemon refused the image: bad");
    }
}
