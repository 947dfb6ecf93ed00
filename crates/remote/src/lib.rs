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

mod address;
mod build;
mod filesync;
mod receive;
pub mod session;
mod status;
pub mod transport;

pub use address::{Builder, TlsOptions};
pub use build::{build, RemoteBuildError, RemoteResult};
pub use session::{CredentialLookup, LocalDir, OutputTarget, SessionConfig};
pub use transport::Channel;

use proto::control::control_client::ControlClient;
use proto::control::{SolveRequest, SolveResponse, StatusRequest, StatusResponse};
use proto::gateway::llb_bridge_client::LlbBridgeClient;
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
    /// moby.buildkit.v1.frontend: the gateway API of a client-side frontend.
    pub use moby::buildkit::v1::frontend as gateway;
    /// moby.filesync.v1: file sync, file send and auth session services.
    pub use moby::filesync::v1 as filesync;
    /// moby.sshforward.v1: SSH agent forwarding.
    pub use moby::sshforward::v1 as sshforward;
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
    /// The TLS flags could not be made into a client configuration.
    #[error("TLS configuration: {0}")]
    Tls(String),
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

/// A gateway request tied to the build `id`.
fn with_build_id<T>(id: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = id.parse() {
        request.metadata_mut().insert(BUILD_ID_KEY, value);
    }
    request
}

/// Why a client-side frontend solve failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildFailure {
    /// The capability check refused the graph (nothing was solved).
    #[error("{0}")]
    Refused(String),
    /// The daemon failed the solve, or could not be talked to.
    #[error(transparent)]
    Remote(#[from] RemoteError),
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
    gateway: LlbBridgeClient<Channel>,
    /// dockerd's API socket, where sessions are opened; None: buildkitd (`Control.Session`).
    docker_socket: Option<PathBuf>,
}

/// The gRPC metadata key that ties gateway calls to their build (BuildKit's build id).
const BUILD_ID_KEY: &str = "buildkit-controlapi-buildid";

/// A graph to solve as a client-side frontend: the definition, the result's metadata (the
/// image config) and a check of the daemon's LLB capabilities before anything is solved.
pub struct FrontendBuild<'a> {
    /// The marshalled `pb.Definition`.
    pub definition: Vec<u8>,
    /// The result's metadata (`containerimage.config`: the image config JSON).
    pub metadata: std::collections::HashMap<String, Vec<u8>>,
    /// The caches the gateway solve imports (`--cache-from`).
    pub cache_imports: Vec<proto::gateway::CacheOptionsEntry>,
    /// Called with the daemon's enabled LLB capabilities; an error refuses the build before
    /// the graph is sent.
    pub check_caps: &'a (dyn Fn(&std::collections::BTreeSet<String>) -> Result<(), String> + Sync),
}

impl Daemon {
    /// Connects to `builder` (`tls`: a `tcp://` builder's TLS flags).
    pub async fn connect(builder: &Builder, tls: &TlsOptions) -> Result<Daemon, RemoteError> {
        match builder {
            Builder::Docker { socket } => Daemon::docker(socket.clone()).await,
            Builder::Unix { socket } => {
                let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| {
                    RemoteError::Connect {
                        address: format!("unix://{}", socket.display()),
                        message: e.to_string(),
                    }
                })?;
                let channel = Channel::over(hyper_util::rt::TokioIo::new(stream)).await?;
                Ok(Daemon::over(channel, None))
            }
            Builder::Tcp { host, port } => {
                let address = format!("tcp://{host}:{port}");
                let connect_err = |e: std::io::Error| RemoteError::Connect {
                    address: address.clone(),
                    message: e.to_string(),
                };
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(connect_err)?;
                let channel = if tls.enabled() {
                    let config = tls.client_config()?;
                    let name = tls.server_name.clone().unwrap_or_else(|| host.clone());
                    let name = rustls::pki_types::ServerName::try_from(name)
                        .map_err(|e| RemoteError::Tls(e.to_string()))?;
                    let stream = tokio_rustls::TlsConnector::from(config)
                        .connect(name, stream)
                        .await
                        .map_err(connect_err)?;
                    Channel::over(hyper_util::rt::TokioIo::new(stream)).await?
                } else {
                    Channel::over(hyper_util::rt::TokioIo::new(stream)).await?
                };
                Ok(Daemon::over(channel, None))
            }
        }
    }

    fn over(channel: Channel, docker_socket: Option<PathBuf>) -> Daemon {
        Daemon {
            control: ControlClient::with_origin(channel.clone(), transport::origin())
                .max_decoding_message_size(64 << 20),
            gateway: LlbBridgeClient::with_origin(channel, transport::origin())
                .max_decoding_message_size(64 << 20),
            docker_socket,
        }
    }

    /// Opens later sessions through the control API's `Session` stream, as with buildkitd, also
    /// on dockerd (which serves both); the session path buildkitd builders take.
    pub fn with_control_sessions(mut self) -> Daemon {
        self.docker_socket = None;
        self
    }

    /// Connects to dockerd's embedded BuildKit through its API socket (`POST /grpc`, h2c).
    pub async fn docker(socket: PathBuf) -> Result<Daemon, RemoteError> {
        let upgraded = transport::docker_upgrade(&socket, "grpc", &[]).await?;
        let channel = Channel::over(upgraded).await?;
        Ok(Daemon::over(channel, Some(socket)))
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
        let task = match &self.docker_socket {
            Some(socket) => {
                let upgraded = transport::docker_upgrade(socket, "session", &headers).await?;
                tokio::spawn(session::serve(upgraded, config))
            }
            None => self.control_session(&headers, config).await?,
        };
        Ok((id, task))
    }

    /// buildkitd's session: an HTTP/2 connection tunnelled through the `Control.Session` byte
    /// stream (the session headers as its gRPC metadata), served as dockerd's upgraded one.
    async fn control_session(
        &self,
        headers: &[(String, String)],
        config: SessionConfig,
    ) -> Result<tokio::task::JoinHandle<()>, RemoteError> {
        use proto::control::BytesMessage;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ours, theirs) = tokio::io::duplex(256 * 1024);
        let (mut read, mut write) = tokio::io::split(ours);
        let (tx, rx) = tokio::sync::mpsc::channel::<BytesMessage>(16);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = read.read(&mut buf).await {
                if n == 0
                    || tx
                        .send(BytesMessage {
                            data: buf[..n].to_vec(),
                        })
                        .await
                        .is_err()
                {
                    break;
                }
            }
        });
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        for (name, value) in headers {
            let key = tonic::metadata::MetadataKey::from_bytes(name.to_lowercase().as_bytes())
                .map_err(|e| RemoteError::protocol("session header", e))?;
            let value = value
                .parse()
                .map_err(|e| RemoteError::protocol("session header", e))?;
            request.metadata_mut().append(key, value);
        }
        let mut control = self.control.clone();
        let mut incoming = control
            .session(request)
            .await
            .map_err(RemoteError::status)?
            .into_inner();
        tokio::spawn(async move {
            while let Ok(Some(message)) = incoming.message().await {
                if write.write_all(&message.data).await.is_err() {
                    break;
                }
            }
        });
        Ok(tokio::spawn(session::serve(
            hyper_util::rt::TokioIo::new(theirs),
            config,
        )))
    }

    /// Solves `request` with rbuild as the client-side frontend (BuildKit's gateway forwarding:
    /// a control solve without a frontend, then `LLBBridge` calls under its build id: `Ping`
    /// for the capabilities, `Solve` of the definition, `Return` of the result with the image
    /// config), calling `on_status` with every status message. Returns the control solve's
    /// response; a refused capability check or a failed gateway solve is the error.
    pub async fn solve_frontend(
        &self,
        mut request: SolveRequest,
        build: FrontendBuild<'_>,
        on_status: impl FnMut(StatusResponse) + Send,
    ) -> Result<SolveResponse, BuildFailure> {
        use proto::gateway as gw;
        if request.r#ref.is_empty() {
            request.r#ref = new_id();
        }
        let build_id = request.r#ref.clone();
        let mut gateway = self.gateway.clone();
        let frontend = async move {
            // The build registers with the forwarder once the control solve arrives.
            // The forwarder waits 3 s for the job; a loaded daemon may take longer to register it.
            let mut attempts = 0;
            let pong = loop {
                match gateway
                    .ping(with_build_id(&build_id, gw::PingRequest {}))
                    .await
                {
                    Ok(pong) => break pong.into_inner(),
                    Err(e) if attempts < 20 && e.message().contains("no such job") => {
                        attempts += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                    }
                    Err(e) => return Err(BuildFailure::Remote(RemoteError::status(e))),
                }
            };
            let caps: std::collections::BTreeSet<String> = pong
                .llb_caps
                .iter()
                .filter(|c| c.enabled)
                .map(|c| c.id.clone())
                .collect();
            if let Err(refused) = (build.check_caps)(&caps) {
                let _ = gateway
                    .r#return(with_build_id(
                        &build_id,
                        gw::ReturnRequest {
                            result: None,
                            error: Some(gw::RpcStatus {
                                code: tonic::Code::FailedPrecondition as i32,
                                message: refused.clone(),
                            }),
                        },
                    ))
                    .await;
                return Err(BuildFailure::Refused(refused));
            }
            let solved = gateway
                .solve(with_build_id(
                    &build_id,
                    gw::SolveRequest {
                        definition: build.definition.into(),
                        allow_result_return: true,
                        // `--cache-from`: the gateway solve loads these, not the control one.
                        cache_imports: build.cache_imports,
                        ..Default::default()
                    },
                ))
                .await;
            let (result, error) = match solved {
                Ok(response) => {
                    let response = response.into_inner();
                    let reference = match response.result.and_then(|r| r.result) {
                        Some(gw::result::Result::Ref(r)) => r.id,
                        Some(gw::result::Result::RefDeprecated(id)) => id,
                        None => response.r#ref,
                    };
                    let result = gw::Result {
                        result: Some(gw::result::Result::Ref(gw::Ref { id: reference })),
                        metadata: build.metadata,
                    };
                    (Some(result), None)
                }
                Err(status) => (
                    None,
                    Some((
                        gw::RpcStatus {
                            code: status.code() as i32,
                            message: status.message().to_string(),
                        },
                        status,
                    )),
                ),
            };
            let returned = gateway
                .r#return(with_build_id(
                    &build_id,
                    gw::ReturnRequest {
                        result,
                        error: error.as_ref().map(|(s, _)| s.clone()),
                    },
                ))
                .await;
            if let Some((_, status)) = error {
                return Err(BuildFailure::Remote(RemoteError::status(status)));
            }
            returned.map_err(|e| BuildFailure::Remote(RemoteError::status(e)))?;
            Ok(())
        };
        let solve = self.solve(request, on_status);
        tokio::pin!(solve, frontend);
        let mut frontend_done = None;
        let solved = loop {
            tokio::select! {
                solved = &mut solve => break solved,
                done = &mut frontend, if frontend_done.is_none() => frontend_done = Some(done),
            }
        };
        let frontend_done = match (frontend_done, &solved) {
            (Some(done), _) => done,
            // The control solve failed first: the gateway would wait for a job that is gone;
            // it gets a moment to report its own refusal.
            (None, Err(_)) => {
                tokio::time::timeout(std::time::Duration::from_secs(1), &mut frontend)
                    .await
                    .unwrap_or(Ok(()))
            }
            (None, Ok(_)) => frontend.await,
        };
        match (solved, frontend_done) {
            (Ok(response), Ok(())) => Ok(response),
            (_, Err(refused @ BuildFailure::Refused(_))) => Err(refused),
            // The control solve's error is the daemon's reason (an unknown exporter, a failed
            // step); the gateway then only saw its job disappear.
            (Err(e), _) => Err(BuildFailure::Remote(e)),
            (Ok(_), Err(e)) => Err(e),
        }
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
        tokio::pin!(solve, status);
        let mut status_done = false;
        let solved = tokio::select! {
            solved = &mut solve => solved,
            () = &mut status => {
                status_done = true;
                solve.await
            }
        };
        if !status_done {
            if solved.is_ok() {
                // The stream ends with the job.
                status.await;
            } else {
                // A solve refused before its job existed (an entitlement the daemon does not
                // allow) leaves the stream waiting for a job that never comes: its last
                // messages get a moment, no more.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), status).await;
            }
        }
        solved
    }
}
