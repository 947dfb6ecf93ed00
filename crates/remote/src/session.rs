//! The session rbuild opens for a remote solve: an HTTP/2 server on the upgraded session
//! connection, where the daemon is the gRPC client and rbuild serves file sync (the build
//! context and named contexts), registry credentials, secrets and gRPC health.

use crate::filesync::{send_dir, WalkFilter};
use crate::proto::filesync::auth_server::{Auth, AuthServer};
use crate::proto::filesync::file_send_packets_server::{FileSendPackets, FileSendPacketsServer};
use crate::proto::filesync::file_send_server::{FileSend, FileSendServer};
use crate::proto::filesync::file_sync_server::{FileSync, FileSyncServer};
use crate::proto::filesync::BytesMessage;
use crate::proto::filesync::{CredentialsRequest, CredentialsResponse};
use crate::proto::filesync::{FetchTokenRequest, FetchTokenResponse};
use crate::proto::fsutil_types::Packet;
use crate::proto::health::health_server::{Health, HealthServer};
use crate::proto::health::HealthCheckResponse;
use crate::proto::health::{health_check_response::ServingStatus, HealthCheckRequest};
use crate::proto::secrets::secrets_server::{Secrets, SecretsServer};
use crate::proto::secrets::{GetSecretRequest, GetSecretResponse};
use crate::proto::sshforward::ssh_server::{Ssh, SshServer};
use crate::proto::sshforward::{BytesMessage as SshBytes, CheckAgentRequest, CheckAgentResponse};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::Service as _;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status, Streaming};

/// A directory the session serves under a name (`context`, a named context's name).
#[derive(Debug, Clone)]
pub struct LocalDir {
    /// Where it is.
    pub path: PathBuf,
    /// `.dockerignore` patterns applied on top of what the daemon asks to exclude.
    pub excludes: Vec<String>,
}

/// Looks up registry credentials for a host (user name and secret), for the auth provider.
pub type CredentialLookup =
    Arc<dyn Fn(&str) -> Result<Option<(String, String)>, String> + Send + Sync>;

/// Where the daemon's exporter sends the result back through the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputTarget {
    /// A local directory (`type=local`): the files, received with fsutil's DiffCopy.
    Dir(PathBuf),
    /// A local file (`type=tar`, OCI and docker archives): the bytes.
    File(PathBuf),
}

/// What a session serves.
#[derive(Clone, Default)]
pub struct SessionConfig {
    /// Where an output comes back, if the exporter sends one.
    pub output: Option<OutputTarget>,
    /// Local directories by name.
    pub dirs: BTreeMap<String, LocalDir>,
    /// SSH agent sockets by id (`--ssh`).
    pub ssh: BTreeMap<String, PathBuf>,
    /// Secrets by id: their bytes.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// Registry credentials, when the auth provider is served.
    pub credentials: Option<CredentialLookup>,
}

/// The gRPC methods a session serves, as the session headers announce them.
pub(crate) fn methods(config: &SessionConfig) -> Vec<String> {
    let mut out = vec![
        "/grpc.health.v1.Health/Check".to_string(),
        "/moby.filesync.v1.FileSync/DiffCopy".to_string(),
        "/moby.buildkit.secrets.v1.Secrets/GetSecret".to_string(),
    ];
    if !config.ssh.is_empty() {
        out.push("/moby.sshforward.v1.SSH/CheckAgent".to_string());
        out.push("/moby.sshforward.v1.SSH/ForwardAgent".to_string());
    }
    if config.output.is_some() {
        out.push("/moby.filesync.v1.FileSend/DiffCopy".to_string());
    }
    if config.credentials.is_some() {
        out.push("/moby.filesync.v1.Auth/Credentials".to_string());
    }
    out
}

#[derive(Clone)]
struct FileSyncService {
    config: Arc<SessionConfig>,
}

fn metadata_values(request: &GrpcRequest<Streaming<Packet>>, key: &str) -> Vec<String> {
    request
        .metadata()
        .get_all(key)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect()
}

#[tonic::async_trait]
impl FileSync for FileSyncService {
    type DiffCopyStream = ReceiverStream<Result<Packet, Status>>;
    type TarStreamStream = ReceiverStream<Result<Packet, Status>>;

    async fn diff_copy(
        &self,
        request: GrpcRequest<Streaming<Packet>>,
    ) -> Result<GrpcResponse<Self::DiffCopyStream>, Status> {
        let name = metadata_values(&request, "dir-name")
            .into_iter()
            .next()
            .unwrap_or_default();
        let Some(dir) = self.config.dirs.get(&name) else {
            return Err(Status::not_found(format!(
                "no access allowed to dir {name:?}"
            )));
        };
        let mut excludes = dir.excludes.clone();
        excludes.extend(metadata_values(&request, "exclude-patterns"));
        let mut includes = metadata_values(&request, "include-patterns");
        includes.extend(metadata_values(&request, "followpaths"));
        tracing::debug!(%name, ?includes, "serving a local directory to the daemon");
        let filter = WalkFilter { excludes, includes };
        let rx = send_dir(dir.path.clone(), filter, request.into_inner());
        Ok(GrpcResponse::new(ReceiverStream::new(rx)))
    }

    async fn tar_stream(
        &self,
        _request: GrpcRequest<Streaming<Packet>>,
    ) -> Result<GrpcResponse<Self::TarStreamStream>, Status> {
        Err(Status::unimplemented("TarStream is not served"))
    }
}

#[derive(Clone)]
struct FileSendService {
    config: Arc<SessionConfig>,
}

#[tonic::async_trait]
impl FileSend for FileSendService {
    type DiffCopyStream = ReceiverStream<Result<BytesMessage, Status>>;

    async fn diff_copy(
        &self,
        request: GrpcRequest<Streaming<BytesMessage>>,
    ) -> Result<GrpcResponse<Self::DiffCopyStream>, Status> {
        let Some(OutputTarget::File(dest)) = self.config.output.clone() else {
            return Err(Status::unavailable("no file output in this session"));
        };
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let incoming = request.into_inner();
        tokio::spawn(async move {
            if let Err(e) = crate::receive::receive_file(dest, incoming).await {
                let _ = tx.send(Err(Status::internal(e))).await;
            }
        });
        Ok(GrpcResponse::new(ReceiverStream::new(rx)))
    }
}

#[derive(Clone)]
struct FileSendPacketsService {
    config: Arc<SessionConfig>,
}

#[tonic::async_trait]
impl FileSendPackets for FileSendPacketsService {
    type DiffCopyStream = ReceiverStream<Result<Packet, Status>>;

    async fn diff_copy(
        &self,
        request: GrpcRequest<Streaming<Packet>>,
    ) -> Result<GrpcResponse<Self::DiffCopyStream>, Status> {
        let Some(OutputTarget::Dir(dest)) = self.config.output.clone() else {
            return Err(Status::unavailable("no directory output in this session"));
        };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let incoming = request.into_inner();
        tokio::spawn(async move {
            if let Err(e) = crate::receive::receive_dir(dest, incoming, tx.clone()).await {
                let _ = tx.send(Err(Status::internal(e))).await;
            }
        });
        Ok(GrpcResponse::new(ReceiverStream::new(rx)))
    }
}

#[derive(Clone)]
struct AuthService {
    config: Arc<SessionConfig>,
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn credentials(
        &self,
        request: GrpcRequest<CredentialsRequest>,
    ) -> Result<GrpcResponse<CredentialsResponse>, Status> {
        let host = request.into_inner().host;
        let Some(lookup) = self.config.credentials.clone() else {
            return Ok(GrpcResponse::new(CredentialsResponse::default()));
        };
        let found = tokio::task::spawn_blocking(move || lookup(&host))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Status::internal)?;
        let (username, secret) = found.unwrap_or_default();
        Ok(GrpcResponse::new(CredentialsResponse { username, secret }))
    }

    async fn fetch_token(
        &self,
        _request: GrpcRequest<FetchTokenRequest>,
    ) -> Result<GrpcResponse<FetchTokenResponse>, Status> {
        Err(Status::unimplemented("FetchToken is not served"))
    }
}

#[derive(Clone)]
struct SecretsService {
    config: Arc<SessionConfig>,
}

#[tonic::async_trait]
impl Secrets for SecretsService {
    async fn get_secret(
        &self,
        request: GrpcRequest<GetSecretRequest>,
    ) -> Result<GrpcResponse<GetSecretResponse>, Status> {
        let id = request.into_inner().id;
        match self.config.secrets.get(&id) {
            Some(data) => Ok(GrpcResponse::new(GetSecretResponse { data: data.clone() })),
            None => Err(Status::not_found(format!("secret {id} not found"))),
        }
    }
}

#[derive(Clone)]
struct SshService {
    config: Arc<SessionConfig>,
}

impl SshService {
    fn socket(&self, id: &str) -> Result<PathBuf, Status> {
        let id = if id.is_empty() { "default" } else { id };
        self.config
            .ssh
            .get(id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("unset ssh forward key {id}")))
    }
}

#[tonic::async_trait]
impl Ssh for SshService {
    type ForwardAgentStream = ReceiverStream<Result<SshBytes, Status>>;

    async fn check_agent(
        &self,
        request: GrpcRequest<CheckAgentRequest>,
    ) -> Result<GrpcResponse<CheckAgentResponse>, Status> {
        self.socket(&request.into_inner().id)?;
        Ok(GrpcResponse::new(CheckAgentResponse {}))
    }

    async fn forward_agent(
        &self,
        request: GrpcRequest<Streaming<SshBytes>>,
    ) -> Result<GrpcResponse<Self::ForwardAgentStream>, Status> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let id = request
            .metadata()
            .get("buildkit.ssh.id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let socket = self.socket(&id)?;
        let stream = tokio::net::UnixStream::connect(&socket)
            .await
            .map_err(|e| Status::unavailable(format!("{}: {e}", socket.display())))?;
        let (mut read, mut write) = stream.into_split();
        let mut incoming = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        // The daemon's bytes to the agent, the agent's back.
        tokio::spawn(async move {
            while let Ok(Some(message)) = incoming.message().await {
                if write.write_all(&message.data).await.is_err() {
                    break;
                }
            }
            let _ = write.shutdown().await;
        });
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = read.read(&mut buf).await {
                if n == 0
                    || tx
                        .send(Ok(SshBytes {
                            data: buf[..n].to_vec(),
                        }))
                        .await
                        .is_err()
                {
                    break;
                }
            }
        });
        Ok(GrpcResponse::new(ReceiverStream::new(rx)))
    }
}

#[derive(Clone)]
struct HealthService;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        _request: GrpcRequest<HealthCheckRequest>,
    ) -> Result<GrpcResponse<HealthCheckResponse>, Status> {
        Ok(GrpcResponse::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }
}

/// The session's services behind one dispatch by gRPC path.
#[derive(Clone)]
struct Router {
    filesync: FileSyncServer<FileSyncService>,
    filesend: FileSendServer<FileSendService>,
    filesend_packets: FileSendPacketsServer<FileSendPacketsService>,
    output_is_dir: bool,
    auth: AuthServer<AuthService>,
    secrets: SecretsServer<SecretsService>,
    health: HealthServer<HealthService>,
    ssh: SshServer<SshService>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Router {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let path = request.uri().path().to_string();
        tracing::debug!(%path, "session call from the daemon");
        let mut this = self.clone();
        if path == "/moby.filesync.v1.FileSend/DiffCopy" && self.output_is_dir {
            // A directory comes as fsutil packets on the same method.
            *request.uri_mut() =
                http::Uri::from_static("/moby.filesync.v1.FileSendPackets/DiffCopy");
            Box::pin(async move { this.filesend_packets.call(request).await })
        } else if path.starts_with("/moby.filesync.v1.FileSend/") {
            Box::pin(async move { this.filesend.call(request).await })
        } else if path.starts_with("/moby.filesync.v1.FileSync/") {
            Box::pin(async move { this.filesync.call(request).await })
        } else if path.starts_with("/moby.filesync.v1.Auth/") {
            Box::pin(async move { this.auth.call(request).await })
        } else if path.starts_with("/moby.buildkit.secrets.v1.Secrets/") {
            Box::pin(async move { this.secrets.call(request).await })
        } else if path.starts_with("/moby.sshforward.v1.SSH/") {
            Box::pin(async move { this.ssh.call(request).await })
        } else if path.starts_with("/grpc.health.v1.Health/") {
            Box::pin(async move { this.health.call(request).await })
        } else {
            Box::pin(async move {
                Ok(Status::unimplemented(format!("{path} is not served")).into_http())
            })
        }
    }
}

/// Serves `config` on the upgraded session connection `io` until the daemon closes it.
pub(crate) async fn serve<IO>(io: IO, config: SessionConfig)
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let config = Arc::new(config);
    let router = Router {
        output_is_dir: matches!(config.output, Some(OutputTarget::Dir(_))),
        filesync: FileSyncServer::new(FileSyncService {
            config: config.clone(),
        }),
        filesend: FileSendServer::new(FileSendService {
            config: config.clone(),
        }),
        filesend_packets: FileSendPacketsServer::new(FileSendPacketsService {
            config: config.clone(),
        }),
        auth: AuthServer::new(AuthService {
            config: config.clone(),
        }),
        ssh: SshServer::new(SshService {
            config: config.clone(),
        }),
        secrets: SecretsServer::new(SecretsService { config }),
        health: HealthServer::new(HealthService),
    };
    let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(io, router)
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "session connection ended");
    }
}
