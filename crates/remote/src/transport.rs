//! Connections to a BuildKit daemon: dockerd's HTTP upgrade of its API socket to h2c (`POST
//! /grpc` for the control API, `POST /session` for the session stream, as buildx's docker
//! driver does), the gRPC client channel over an upgraded connection and the h2 server that
//! serves the session's services on one.

use crate::RemoteError;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::net::UnixStream;

/// The API version rbuild asks dockerd for (20.10's; dockerd serves older versions too).
const DOCKER_API: &str = "v1.41";

/// Opens dockerd's socket at `socket` and upgrades `POST /{path}` to h2c with `headers`; returns
/// the raw connection after `101 Switching Protocols`.
pub(crate) async fn docker_upgrade(
    socket: &Path,
    path: &str,
    headers: &[(String, String)],
) -> Result<Upgraded, RemoteError> {
    let connect_err = |e: std::io::Error| RemoteError::Connect {
        address: format!("unix://{}", socket.display()),
        message: e.to_string(),
    };
    let stream = UnixStream::connect(socket).await.map_err(connect_err)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| RemoteError::protocol("HTTP handshake with dockerd", e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "dockerd upgrade connection ended");
        }
    });
    let mut request = Request::post(format!("/{DOCKER_API}/{path}"))
        .header(http::header::HOST, "docker")
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "h2c");
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| RemoteError::protocol("building the upgrade request", e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| RemoteError::protocol("upgrade request to dockerd", e))?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(RemoteError::Refused {
            what: format!("POST /{path}"),
            status: response.status().as_u16(),
        });
    }
    hyper::upgrade::on(response)
        .await
        .map_err(|e| RemoteError::protocol("upgrading to h2c", e))
}

/// A gRPC channel over one HTTP/2 connection: the tonic clients' transport.
#[derive(Clone)]
pub struct Channel {
    sender: hyper::client::conn::http2::SendRequest<tonic::body::Body>,
    /// Why the connection ended, once it has (a TLS alert, a reset), so that calls that
    /// failed with it say so instead of hyper's bare "operation was canceled".
    ended: Arc<Mutex<Option<String>>>,
}

/// A call that failed because the connection to the daemon ended.
#[derive(Debug, thiserror::Error)]
#[error("the connection to the daemon failed: {0}")]
pub struct ConnectionFailed(String);

/// An error with its sources, joined as `outer: inner: ...`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

impl Channel {
    /// Starts an HTTP/2 client on an established (upgraded or plain) connection.
    pub(crate) async fn over<IO>(io: IO) -> Result<Channel, RemoteError>
    where
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(io)
            .await
            .map_err(|e| RemoteError::protocol("HTTP/2 handshake with the daemon", e))?;
        let ended = Arc::new(Mutex::new(None));
        let record = ended.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "control connection ended");
                if let Ok(mut slot) = record.lock() {
                    *slot = Some(chain(&e));
                }
            }
        });
        Ok(Channel { sender, ended })
    }

    /// `e` as the call's error: the connection's end when it ended, else hyper's error with
    /// its sources (tonic keeps only the outer message).
    async fn failure(ended: &Mutex<Option<String>>, e: hyper::Error) -> BoxError {
        // The connection task records the reason just after the pending calls are cancelled.
        for _ in 0..20 {
            if let Some(why) = ended.lock().ok().and_then(|slot| slot.clone()) {
                return Box::new(ConnectionFailed(why));
            }
            if !e.is_canceled() && !e.is_closed() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        Box::new(ConnectionFailed(chain(&e)))
    }
}

/// The channel's error type (tonic takes any boxed error).
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Request<tonic::body::Body>> for Channel {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.sender.poll_ready(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(
                match self.ended.lock().ok().and_then(|slot| slot.clone()) {
                    Some(why) => Box::new(ConnectionFailed(why)),
                    None => Box::new(e),
                },
            )),
            other => other.map_err(|e| Box::new(e) as BoxError),
        }
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        let sent = self.sender.send_request(request);
        let ended = self.ended.clone();
        Box::pin(async move {
            match sent.await {
                Ok(response) => Ok(response),
                Err(e) => Err(Channel::failure(&ended, e).await),
            }
        })
    }
}

/// Where dockerd's API socket is: `DOCKER_HOST` when it names a unix socket, else the default.
pub fn docker_socket() -> PathBuf {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if host.starts_with("unix://") => PathBuf::from(&host["unix://".len()..]),
        _ => PathBuf::from("/var/run/docker.sock"),
    }
}

/// The origin URI the tonic clients put on requests (HTTP/2 needs a scheme and authority).
pub(crate) fn origin() -> http::Uri {
    http::Uri::from_static("http://buildkit")
}

/// Pushes the image `name` from dockerd to its registry through the docker API (`POST
/// /images/NAME/push`, as buildx's docker driver pushes what dockerd's exporter named), with
/// `auth` (docker's `X-Registry-Auth` JSON) as credentials. Reads the progress stream to its end;
/// an `error` in it fails the push.
pub(crate) async fn docker_push(socket: &Path, name: &str, auth: &str) -> Result<(), RemoteError> {
    use base64::Engine as _;
    use http_body_util::BodyExt;
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| RemoteError::Connect {
            address: format!("unix://{}", socket.display()),
            message: e.to_string(),
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| RemoteError::protocol("HTTP handshake with dockerd", e))?;
    tokio::spawn(conn);
    let (repo, tag) = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (name, "latest"),
    };
    let uri = format!(
        "/{DOCKER_API}/images/{}/push?tag={}",
        repo.replace('/', "%2F"),
        tag
    );
    let request = Request::post(uri)
        .header(http::header::HOST, "docker")
        .header(
            "X-Registry-Auth",
            base64::engine::general_purpose::URL_SAFE.encode(auth),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| RemoteError::protocol("building the push request", e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| RemoteError::protocol("push request to dockerd", e))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| RemoteError::protocol("reading dockerd's push progress", e))?
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    if !status.is_success() {
        return Err(RemoteError::Protocol {
            what: format!("pushing {name}"),
            message: text.trim().to_string(),
        });
    }
    for line in text.lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            if let Some(error) = v.get("error").and_then(|e| e.as_str()) {
                return Err(RemoteError::Protocol {
                    what: format!("pushing {name}"),
                    message: error.to_string(),
                });
            }
        }
    }
    Ok(())
}
