//! Solving rbuild's graph on a remote BuildKit daemon (`rbuild build --builder ADDR`).
//!
//! rbuild keeps its own frontend: the Dockerfile is parsed, linted and converted locally, the
//! graph goes to the daemon as BuildKit LLB (`pb.Definition`) in a `moby.buildkit.v1.Control/Solve`
//! call, and a session serves what the solve needs from this machine: the build context through
//! fsutil's DiffCopy (`filesync`), registry credentials (`Auth`), secrets and health. The
//! daemon's status stream is mapped onto rbuild's progress events, so the renderers show a
//! remote build as they show a local one. Nothing runs locally and rbuild's store is not used.
//!
//! Modules: [`transport`] (dockerd's h2c upgrade, the gRPC channel), [`session`] (the session
//! server), `filesync` (DiffCopy sending), [`proto`] (generated from rbuild's own `.proto`
//! descriptions of BuildKit's API).

mod filesync;
pub mod session;
pub mod transport;

pub use session::{CredentialLookup, LocalDir, SessionConfig};
pub use transport::Channel;

use proto::control::control_client::ControlClient;
use proto::control::{SolveRequest, SolveResponse, StatusRequest, StatusResponse};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    //! Types and services generated from rbuild's `.proto` descriptions of BuildKit's API
    //! (modules named by protobuf package), with short aliases.
    include!(concat!(env!("OUT_DIR"), "/protos.rs"));
    /// fsutil.types: DiffCopy packets.
    pub use self::fsutil::types as fsutil_types;
    /// grpc.health.v1: the health service the daemon polls.
    pub use grpc::health::v1 as health;
    /// moby.buildkit.secrets.v1: the secrets session service.
    pub use moby::buildkit::secrets::v1 as secrets;
    /// moby.buildkit.v1: the control API.
    pub use moby::buildkit::v1 as control;
    /// moby.filesync.v1: file sync, file send and auth session services.
    pub use moby::filesync::v1 as filesync;
}

/// What went wrong talking to a BuildKit daemon.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The daemon's address could not be reached.
    #[error("failed to connect to the builder at {address}: {message}")]
    Connect {
        /// The address.
        address: String,
        /// Why.
        message: String,
    },
    /// dockerd did not upgrade the connection.
    #[error("dockerd refused {what} with HTTP status {status} (is its BuildKit enabled?)")]
    Refused {
        /// The request.
        what: String,
        /// Its status code.
        status: u16,
    },
    /// An HTTP or HTTP/2 protocol failure.
    #[error("{what}: {message}")]
    Protocol {
        /// What was being done.
        what: String,
        /// The failure.
        message: String,
    },
    /// The daemon answered a call with an error; `message` is BuildKit's.
    #[error("{message}")]
    Daemon {
        /// The gRPC status code.
        code: i32,
        /// BuildKit's message.
        message: String,
    },
    /// The builder address is not one rbuild understands.
    #[error("invalid builder address {0:?}: expected docker, unix:///PATH or tcp://HOST:PORT")]
    Address(String),
}

impl RemoteError {
    pub(crate) fn protocol(what: &str, e: impl std::fmt::Display) -> RemoteError {
        RemoteError::Protocol {
            what: what.to_string(),
            message: e.to_string(),
        }
    }

    fn status(status: tonic::Status) -> RemoteError {
        RemoteError::Daemon {
            code: status.code() as i32,
            message: status.message().to_string(),
        }
    }
}

/// A fresh identifier for a solve or session (25 base-36-like characters, as BuildKit's).
pub fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut hasher = blake3::Hasher::new();
    hasher.update(&now.to_le_bytes());
    hasher.update(&std::process::id().to_le_bytes());
    hasher.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let digest = hasher.finalize();
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    digest.as_bytes()[..25]
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// A connection to a BuildKit daemon's control API.
#[derive(Clone)]
pub struct Daemon {
    control: ControlClient<Channel>,
    socket: PathBuf,
}

impl Daemon {
    /// Connects to dockerd's embedded BuildKit through its API socket (`POST /grpc`, h2c).
    pub async fn docker(socket: PathBuf) -> Result<Daemon, RemoteError> {
        let upgraded = transport::docker_upgrade(&socket, "grpc", &[]).await?;
        let channel = Channel::over(upgraded).await?;
        Ok(Daemon {
            control: ControlClient::with_origin(channel, transport::origin())
                .max_decoding_message_size(64 << 20),
            socket,
        })
    }

    /// Opens a session serving `config` (dockerd's `POST /session`); returns its id. The session
    /// lives until the daemon closes it or the task is dropped with the runtime.
    pub async fn open_session(
        &self,
        name: &str,
        shared_key: &str,
        config: SessionConfig,
    ) -> Result<(String, tokio::task::JoinHandle<()>), RemoteError> {
        let id = new_id();
        let mut headers = vec![
            ("X-Docker-Expose-Session-Uuid".to_string(), id.clone()),
            ("X-Docker-Expose-Session-Name".to_string(), name.to_string()),
            (
                "X-Docker-Expose-Session-Sharedkey".to_string(),
                shared_key.to_string(),
            ),
        ];
        for method in session::methods(&config) {
            headers.push(("X-Docker-Expose-Session-Grpc-Method".to_string(), method));
        }
        let upgraded = transport::docker_upgrade(&self.socket, "session", &headers).await?;
        let task = tokio::spawn(session::serve(upgraded, config));
        Ok((id, task))
    }

    /// Solves `request` (its `Ref` is set to a fresh id when empty), calling `on_status` with
    /// every status message until the solve ends.
    pub async fn solve(
        &self,
        mut request: SolveRequest,
        mut on_status: impl FnMut(StatusResponse) + Send,
    ) -> Result<SolveResponse, RemoteError> {
        if request.r#ref.is_empty() {
            request.r#ref = new_id();
        }
        let reference = request.r#ref.clone();
        let mut control = self.control.clone();
        let mut status_client = self.control.clone();
        let solve = async move {
            control
                .solve(request)
                .await
                .map(|r| r.into_inner())
                .map_err(RemoteError::status)
        };
        let status = async move {
            let mut stream = match status_client
                .status(StatusRequest { r#ref: reference })
                .await
            {
                Ok(s) => s.into_inner(),
                Err(e) => {
                    tracing::debug!(error = %e, "status stream failed");
                    return;
                }
            };
            loop {
                match stream.message().await {
                    Ok(Some(message)) => on_status(message),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "status stream ended");
                        break;
                    }
                }
            }
        };
        let (solved, ()) = tokio::join!(solve, status);
        solved
    }
}
