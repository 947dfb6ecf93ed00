//! The pull side of the distribution protocol on reqwest (rustls + ring): manifest resolution
//! (index -> platform manifest), blob download straight into the content store, and auth
//! (anonymous, Basic, Bearer token challenge) with credentials from docker's config.json.

use crate::error::chain;
use crate::notice::NoticeSink;
use crate::{Reference, RegistryError, RegistryNotice};
use rbuild_oci::{
    Descriptor, Digest, ImageConfig, ImageRecord, Index, Manifest, MediaType, Platform, Store,
    StoreError,
};
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Env var: comma-separated registries (`host:port` or `host`) reached over plain HTTP.
pub const INSECURE_REGISTRIES_ENV: &str = "RBUILD_INSECURE_REGISTRIES";
/// Env var: comma-separated registries (`host:port` or `host`) reached over HTTPS even though they
/// are on loopback (which is plain HTTP otherwise).
pub const TLS_REGISTRIES_ENV: &str = "RBUILD_TLS_REGISTRIES";
/// Env var: a PEM file of extra trusted CA certificates, read by [`RegistryClient::new`].
pub const REGISTRY_CA_ENV: &str = "RBUILD_REGISTRY_CA";
/// Env var: seconds a TCP/TLS connection to a registry may take (default
/// [`DEFAULT_CONNECT_TIMEOUT`]), read by [`RegistryClient::new`].
pub const CONNECT_TIMEOUT_ENV: &str = "RBUILD_REGISTRY_CONNECT_TIMEOUT";
/// Env var: seconds a registry may send nothing before the request counts as stalled (default
/// [`DEFAULT_STALL_TIMEOUT`]), read by [`RegistryClient::new`].
pub const STALL_TIMEOUT_ENV: &str = "RBUILD_REGISTRY_STALL_TIMEOUT";
/// Default of [`ClientOptions::connect_timeout`] (containerd's dial timeout).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`ClientOptions::stall_timeout`].
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// While a registry sends nothing, a [`RegistryNotice::Waiting`] goes out this often.
const WAIT_NOTICE_INTERVAL: Duration = Duration::from_secs(10);
/// Largest manifest or index accepted (the OCI distribution spec suggests 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Largest image config accepted.
pub const MAX_CONFIG_BYTES: usize = 32 << 20;
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
const USER_AGENT: &str = concat!("rbuild/", env!("CARGO_PKG_VERSION"));

/// Where credentials come from.
#[derive(Debug, Clone, Default)]
pub enum Credentials {
    /// docker's config.json: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` (helpers included).
    #[default]
    DockerConfig,
    /// A specific config.json file.
    ConfigFile(PathBuf),
    /// The same username/password for every registry.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// Never authenticate.
    Anonymous,
}

/// Options of [`RegistryClient::with_options`]; `Default` is what [`RegistryClient::new`] uses.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Registries reached over plain HTTP, in addition to loopback ones and [`INSECURE_REGISTRIES_ENV`].
    pub insecure_registries: Vec<String>,
    /// Registries reached over HTTPS even on loopback, in addition to [`TLS_REGISTRIES_ENV`]
    /// (e.g. a local registry with a test certificate; trust its CA with `extra_ca_pem`).
    pub https_registries: Vec<String>,
    /// Extra trusted CA certificates (PEM, one or more) on top of the system roots.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Credential source.
    pub credentials: Credentials,
    /// How many layers [`RegistryClient::pull`] downloads at once.
    pub max_concurrent_downloads: usize,
    /// The platform [`RegistryClient::resolve`] picks from an index.
    pub platform: Platform,
    /// How many times a failed request (connection error, 5xx, 429) or blob transfer is retried.
    pub max_retries: u32,
    /// The first retry delay; it doubles on every further attempt (capped at 10 s, with jitter).
    pub retry_base_delay: Duration,
    /// How long connecting (TCP and TLS) may take; a timed-out connect counts as a stall.
    pub connect_timeout: Duration,
    /// How long a registry may send nothing: a response must begin within this time of sending
    /// its request (connecting included), and afterwards no single read may wait longer. There is
    /// no limit on a whole transfer, so a large blob over a slow but moving link never times out.
    /// Blob uploads wait for the registry without this limit (their body takes as long as it takes).
    pub stall_timeout: Duration,
    /// How many stalls (and connect timeouts) one request or transfer survives before it fails
    /// with [`RegistryError::Stalled`]; fewer than `max_retries`, since a registry that stalls
    /// again and again seldom recovers. Stalled blob downloads resume with a `Range` request.
    pub max_stall_retries: u32,
}

impl ClientOptions {
    /// Applies the environment: extra CAs from the PEM file named by [`REGISTRY_CA_ENV`], and
    /// [`CONNECT_TIMEOUT_ENV`] / [`STALL_TIMEOUT_ENV`] (seconds, fractions allowed, e.g. `1.5`).
    pub fn apply_env(&mut self) -> Result<(), RegistryError> {
        if let Some(path) = std::env::var_os(REGISTRY_CA_ENV).filter(|p| !p.is_empty()) {
            let pem = std::fs::read(&path).map_err(|e| {
                RegistryError::Setup(format!(
                    "{REGISTRY_CA_ENV}={}: {e}",
                    PathBuf::from(&path).display()
                ))
            })?;
            self.extra_ca_pem = Some(pem);
        }
        if let Some(t) = timeout_from_env(CONNECT_TIMEOUT_ENV)? {
            self.connect_timeout = t;
        }
        if let Some(t) = timeout_from_env(STALL_TIMEOUT_ENV)? {
            self.stall_timeout = t;
        }
        Ok(())
    }
}

/// A timeout in seconds from `var` (unset or empty: `None`); `30`, `1.5` and `30s` are accepted.
pub(crate) fn timeout_from_env(var: &str) -> Result<Option<Duration>, RegistryError> {
    match std::env::var(var) {
        Ok(raw) => parse_timeout(var, &raw),
        Err(_) => Ok(None),
    }
}

/// Parses the value `raw` of the timeout variable `var` (see [`timeout_from_env`]).
fn parse_timeout(var: &str, raw: &str) -> Result<Option<Duration>, RegistryError> {
    let v = raw.trim();
    if v.is_empty() {
        return Ok(None);
    }
    v.strip_suffix('s')
        .unwrap_or(v)
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
        .map(|s| Some(Duration::from_secs_f64(s)))
        .ok_or_else(|| {
            RegistryError::Setup(format!(
                "{var}={raw}: expected a number of seconds greater than 0"
            ))
        })
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure_registries: Vec::new(),
            https_registries: Vec::new(),
            extra_ca_pem: None,
            credentials: Credentials::DockerConfig,
            max_concurrent_downloads: 4,
            platform: Platform {
                architecture: "amd64".into(),
                os: "linux".into(),
                variant: None,
                os_version: None,
            },
            max_retries: 4,
            retry_base_delay: Duration::from_millis(250),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            max_stall_retries: 2,
        }
    }
}

/// A manifest resolved for one platform, with its config.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// Digest of `manifest_bytes`.
    pub manifest_digest: Digest,
    /// The manifest exactly as the registry served it.
    pub manifest_bytes: Vec<u8>,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The config blob exactly as served.
    pub config_bytes: Vec<u8>,
    /// The parsed config.
    pub config: ImageConfig,
    /// The manifest's media type (OCI or Docker v2 schema 2).
    pub media_type: MediaType,
    /// The index (or manifest list) the manifest was picked from, if any.
    pub index_digest: Option<Digest>,
}

impl ResolvedImage {
    /// The descriptor of the manifest (with the config's platform).
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.manifest_digest.clone(),
            size: self.manifest_bytes.len() as u64,
            platform: Some(Platform {
                architecture: self.config.architecture.clone(),
                os: self.config.os.clone(),
                variant: self.config.variant.clone(),
                os_version: None,
            }),
            annotations: None,
        }
    }
}

#[derive(Debug, Clone)]
enum Cred {
    Basic(String, String),
    IdentityToken(String),
}

#[derive(Debug, Clone)]
enum Auth {
    Basic(String, String),
    Bearer { token: String, expires: Instant },
}

struct Inner {
    /// Requests whose body is small or empty: connect and stall timeouts.
    http: reqwest::Client,
    /// Blob uploads (PUT/PATCH with a large body): connect timeout only, since reqwest's read
    /// timeout would also run while the body is still being sent.
    upload_http: reqwest::Client,
    insecure: Vec<String>,
    https: Vec<String>,
    opts: ClientOptions,
    creds: Mutex<HashMap<String, Option<Cred>>>,
    /// Keyed by `registry/repository`.
    auth: Mutex<HashMap<String, Auth>>,
}

/// A registry client (cheap to clone; clones share connections and tokens).
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
    notices: Option<NoticeSink>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("insecure", &self.inner.insecure)
            .field("https", &self.inner.https)
            .finish_non_exhaustive()
    }
}

/// One HTTP request's description, for building errors.
struct Req<'a> {
    r: &'a Reference,
    path: String,
    accept: Option<&'a str>,
    what: String,
}

/// What [`RegistryClient::execute`] needs to know about one request.
pub(crate) struct Call<'a> {
    /// The repository (and registry) the request is for.
    pub r: &'a Reference,
    /// Token scopes, e.g. `repository:app:pull,push`.
    pub scopes: Vec<String>,
    /// For messages.
    pub what: String,
    /// The request may be sent again (no body, or a body that is re-created per attempt).
    pub replayable: bool,
    /// 401/403 mean "push access denied" rather than "pull access denied".
    pub push: bool,
    /// A blob upload with a large body: sent without the stall timeout (see [`Inner`]).
    pub upload: bool,
}

/// Counts the failed attempts of one request or transfer, stalls apart from other failures.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    /// Failed attempts of any kind.
    failed: u32,
    /// Failed attempts that were stalls or connect timeouts.
    stalled: u32,
}

impl RegistryClient {
    /// A client with default options: HTTP for loopback and [`INSECURE_REGISTRIES_ENV`] registries,
    /// HTTPS otherwise (and for [`TLS_REGISTRIES_ENV`] ones); extra CAs from the PEM file named by
    /// [`REGISTRY_CA_ENV`]; credentials from docker's config.json, anonymous when none.
    /// [`CONNECT_TIMEOUT_ENV`] and [`STALL_TIMEOUT_ENV`] override the timeouts (see
    /// [`ClientOptions::apply_env`]).
    pub fn new() -> Result<RegistryClient, RegistryError> {
        let mut opts = ClientOptions::default();
        opts.apply_env()?;
        Self::with_options(opts)
    }

    /// A clone (sharing connections, tokens and options) that reports retries and waits to `f`.
    pub fn with_notices(
        &self,
        f: impl Fn(&RegistryNotice) + Send + Sync + 'static,
    ) -> RegistryClient {
        RegistryClient {
            inner: self.inner.clone(),
            notices: Some(Arc::new(f)),
        }
    }

    /// The options the client was made with (environment applied).
    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    /// A client with explicit options.
    pub fn with_options(opts: ClientOptions) -> Result<RegistryClient, RegistryError> {
        let certs = match &opts.extra_ca_pem {
            Some(pem) => {
                let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                    RegistryError::Setup(format!("extra CA certificate: {}", chain(&e)))
                })?;
                if certs.is_empty() {
                    return Err(RegistryError::Setup(
                        "extra CA certificate: no certificate in the PEM data".into(),
                    ));
                }
                certs
            }
            None => Vec::new(),
        };
        let build = |stall: Option<Duration>| {
            let mut builder = reqwest::Client::builder()
                .user_agent(USER_AGENT)
                .connect_timeout(opts.connect_timeout)
                .redirect(reqwest::redirect::Policy::limited(10));
            if let Some(t) = stall {
                // reqwest: the response must start within `t` of the request, then every body
                // read within `t` of the previous one.
                builder = builder.read_timeout(t);
            }
            for c in &certs {
                builder = builder.add_root_certificate(c.clone());
            }
            builder.build().map_err(|e| RegistryError::Setup(chain(&e)))
        };
        let http = build(Some(opts.stall_timeout))?;
        let upload_http = build(None)?;
        let from_env = |list: &mut Vec<String>, var: &str| {
            if let Ok(v) = std::env::var(var) {
                list.extend(
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from),
                );
            }
        };
        let mut insecure = opts.insecure_registries.clone();
        from_env(&mut insecure, INSECURE_REGISTRIES_ENV);
        let mut https = opts.https_registries.clone();
        from_env(&mut https, TLS_REGISTRIES_ENV);
        Ok(RegistryClient {
            inner: Arc::new(Inner {
                http,
                upload_http,
                insecure,
                https,
                opts,
                creds: Mutex::new(HashMap::new()),
                auth: Mutex::new(HashMap::new()),
            }),
            notices: None,
        })
    }

    /// `http` or `https` for a registry: HTTPS registries (options, [`TLS_REGISTRIES_ENV`]) first,
    /// then loopback and insecure ones are HTTP, everything else HTTPS.
    pub fn scheme(&self, registry: &str) -> &'static str {
        let host = host_of(registry);
        if self.inner.https.iter().any(|i| i == registry || i == host) {
            return "https";
        }
        let loopback = host == "localhost"
            || host == "::1"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback
            || self
                .inner
                .insecure
                .iter()
                .any(|i| i == registry || i == host)
        {
            "http"
        } else {
            "https"
        }
    }

    fn base_url(&self, registry: &str) -> String {
        let host = if registry == crate::reference::DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            registry
        };
        format!("{}://{}", self.scheme(registry), host)
    }

    /// Resolves `r` to the image manifest for the configured platform (linux/amd64 by default).
    pub async fn resolve(&self, r: &Reference) -> Result<ResolvedImage, RegistryError> {
        let p = self.inner.opts.platform.clone();
        self.resolve_platform(r, &p).await
    }

    /// Resolves `r` to the image manifest for `platform`, following an index or manifest list.
    pub async fn resolve_platform(
        &self,
        r: &Reference,
        platform: &Platform,
    ) -> Result<ResolvedImage, RegistryError> {
        let what = r.to_string();
        let (bytes, media_type, digest) = self
            .fetch_manifest(r, &r.manifest_ref(), r.digest.as_ref(), &what)
            .await?;
        let (bytes, media_type, digest, index_digest) = if media_type.is_index() {
            let index: Index =
                serde_json::from_slice(&bytes).map_err(|source| RegistryError::InvalidJson {
                    what: format!("index of {what}"),
                    source,
                })?;
            let desc = select_platform(&index, platform).ok_or_else(|| {
                RegistryError::NoMatchingPlatform {
                    reference: what.clone(),
                    platform: platform_string(platform),
                    available: index
                        .manifests
                        .iter()
                        .filter_map(|d| d.platform.as_ref())
                        .map(platform_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            })?;
            let child_what = format!("{}@{}", r.name(), desc.digest);
            let (b, m, d) = self
                .fetch_manifest(r, &desc.digest.to_string(), Some(&desc.digest), &child_what)
                .await?;
            (b, m, d, Some(digest))
        } else {
            (bytes, media_type, digest, None)
        };
        if !media_type.is_manifest() {
            return Err(RegistryError::UnsupportedMediaType {
                reference: what,
                media_type: media_type.0,
            });
        }
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|source| RegistryError::InvalidJson {
                what: format!("manifest of {what}"),
                source,
            })?;
        let cdesc = &manifest.config;
        let cwhat = format!("config {} of {}", cdesc.digest, r.name());
        let limit = MAX_CONFIG_BYTES.min(usize::try_from(cdesc.size).unwrap_or(usize::MAX));
        let req = Req {
            r,
            path: format!("blobs/{}", cdesc.digest),
            accept: None,
            what: cwhat.clone(),
        };
        let (_, config_bytes) = self.get_small(&req, limit).await?;
        verify(&cwhat, &config_bytes, cdesc)?;
        let config: ImageConfig =
            serde_json::from_slice(&config_bytes).map_err(|source| RegistryError::InvalidJson {
                what: cwhat,
                source,
            })?;
        Ok(ResolvedImage {
            manifest_digest: digest,
            manifest_bytes: bytes,
            manifest,
            config_bytes,
            config,
            media_type,
            index_digest,
        })
    }

    /// GETs a manifest or index by tag or digest; returns the raw bytes, the media type and the digest.
    async fn fetch_manifest(
        &self,
        r: &Reference,
        reference: &str,
        expected: Option<&Digest>,
        what: &str,
    ) -> Result<(Vec<u8>, MediaType, Digest), RegistryError> {
        let req = Req {
            r,
            path: format!("manifests/{reference}"),
            accept: Some(MANIFEST_ACCEPT),
            what: what.to_string(),
        };
        let (headers, bytes) = self.get_small(&req, MAX_MANIFEST_BYTES).await?;
        let actual = Digest::sha256_of(&bytes);
        if let Some(exp) = expected {
            if *exp != actual {
                return Err(RegistryError::DigestMismatch {
                    what: what.to_string(),
                    expected: exp.clone(),
                    actual,
                });
            }
        }
        if let Some(served) = headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<Digest>().ok())
        {
            if served != actual {
                return Err(RegistryError::DigestMismatch {
                    what: format!("{what} (Docker-Content-Digest)"),
                    expected: served,
                    actual,
                });
            }
        }
        let media_type =
            media_type_of(&headers, &bytes).ok_or_else(|| RegistryError::UnsupportedMediaType {
                reference: what.to_string(),
                media_type: "(none)".into(),
            })?;
        if !media_type.is_index() && !media_type.is_manifest() {
            return Err(RegistryError::UnsupportedMediaType {
                reference: what.to_string(),
                media_type: media_type.0,
            });
        }
        Ok((bytes, media_type, actual))
    }

    /// Downloads a blob into `store` (no-op when present). The bytes stream to a blocking writer
    /// thread; the blob becomes visible only after its size and digest are verified.
    pub async fn fetch_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
        store: &Store,
    ) -> Result<(), RegistryError> {
        if store.has_blob(&desc.digest) {
            return Ok(());
        }
        let what = format!("blob {} of {}", desc.digest, r.name());
        let req = Req {
            r,
            path: format!("blobs/{}", desc.digest),
            accept: None,
            what: what.clone(),
        };
        let first = self.send(&req).await?;

        enum Msg {
            Data(bytes::Bytes),
            Done,
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(16);
        let wstore = store.clone();
        let expected = desc.digest.clone();
        let writer =
            tokio::task::spawn_blocking(move || -> Result<Option<(Digest, u64)>, StoreError> {
                let mut w = wstore.blob_writer()?;
                loop {
                    match rx.blocking_recv() {
                        Some(Msg::Data(b)) => w.write_all(&b).map_err(|source| StoreError::Io {
                            action: "write",
                            path: wstore.root().to_path_buf(),
                            source,
                        })?,
                        Some(Msg::Done) => return w.commit(Some(&expected)).map(Some),
                        // Sender dropped without Done: aborted; dropping `w` removes the temp file.
                        None => return Ok(None),
                    }
                }
            });
        let mut received: u64 = 0;
        let streamed: Result<(), RegistryError> = async {
            // An interrupted, stalled or short body is resumed with `Range: bytes=RECEIVED-` (up
            // to max_retries times, max_stall_retries for stalls); the writer hashes everything,
            // so the digest check at commit covers the resumed parts too.
            let mut resp = first;
            let mut skip: u64 = 0;
            let mut attempts = Attempts::default();
            loop {
                let url = resp.url().to_string();
                let failure = loop {
                    match self.watched(r, &what, resp.chunk()).await {
                        Ok(Some(mut c)) => {
                            if skip > 0 {
                                // A 200 to a range request: drop what we already have.
                                let n = skip.min(c.len() as u64) as usize;
                                skip -= n as u64;
                                c = c.slice(n..);
                                if c.is_empty() {
                                    continue;
                                }
                            }
                            received += c.len() as u64;
                            if received > desc.size {
                                return Err(RegistryError::SizeMismatch {
                                    what: what.clone(),
                                    expected: desc.size,
                                    actual: received,
                                });
                            }
                            if tx.send(Msg::Data(c)).await.is_err() {
                                return Ok(()); // writer failed; its error is reported below
                            }
                        }
                        Ok(None) if received == desc.size => break None,
                        Ok(None) => {
                            let cause =
                                format!("body ended after {received} of {} bytes", desc.size);
                            let err = RegistryError::SizeMismatch {
                                what: what.clone(),
                                expected: desc.size,
                                actual: received,
                            };
                            break Some((false, cause, err));
                        }
                        Err(e) => {
                            let stalled = e.is_timeout();
                            break Some((stalled, self.cause_of(&e), transport(&what, e)));
                        }
                    }
                };
                let Some((stalled, cause, err)) = failure else {
                    break;
                };
                if !self.may_retry(&attempts, stalled) {
                    return Err(if stalled {
                        self.stall_error(r, &what, &url, &attempts)
                    } else {
                        err
                    });
                }
                self.pause_before_retry(&mut attempts, r, &what, stalled, cause, None)
                    .await;
                resp = match self.send_ranged(&req, Some(received)).await {
                    Ok(resp) => resp,
                    // 416: the registry has no more bytes than we got; the size error says more.
                    Err(RegistryError::Http { status, .. }) if status.starts_with("416") => {
                        return Err(err)
                    }
                    Err(e) => return Err(e),
                };
                skip = if resp.status() == StatusCode::PARTIAL_CONTENT {
                    let start = resp
                        .headers()
                        .get(reqwest::header::CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("bytes "))
                        .and_then(|v| v.split('-').next())
                        .and_then(|v| v.parse::<u64>().ok());
                    if start != Some(received) {
                        return Err(RegistryError::Transport {
                            what: what.clone(),
                            url: self.url(r, &req.path),
                            cause: format!(
                                "range request from byte {received} answered with Content-Range starting at {start:?}"
                            ),
                        });
                    }
                    0
                } else {
                    received
                };
            }
            let _ = tx.send(Msg::Done).await;
            Ok(())
        }
        .await;
        drop(tx);
        let written = writer.await.map_err(|e| RegistryError::Task {
            what: what.clone(),
            message: e.to_string(),
        })?;
        streamed?;
        match written {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(RegistryError::Task {
                what,
                message: "download aborted".into(),
            }),
            Err(StoreError::DigestMismatch { expected, actual }) => {
                Err(RegistryError::DigestMismatch {
                    what,
                    expected,
                    actual,
                })
            }
            Err(source) => Err(RegistryError::Store { what, source }),
        }
    }

    /// Resolves `r`, downloads all layers (bounded concurrency), stores config and manifest (bytes as
    /// served) and tags the manifest as `tag_as` (default: the full normalised reference).
    pub async fn pull(
        &self,
        r: &Reference,
        store: &Store,
        tag_as: Option<&str>,
    ) -> Result<ImageRecord, RegistryError> {
        let resolved = self.resolve(r).await?;
        let sem = Arc::new(tokio::sync::Semaphore::new(
            self.inner.opts.max_concurrent_downloads.max(1),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for layer in resolved.manifest.layers.iter().cloned() {
            if store.has_blob(&layer.digest) {
                continue;
            }
            let (client, r, store, sem) = (self.clone(), r.clone(), store.clone(), sem.clone());
            tasks.spawn(async move {
                let _permit = sem.acquire_owned().await.expect("semaphore never closed");
                client.fetch_blob(&r, &layer, &store).await
            });
        }
        while let Some(res) = tasks.join_next().await {
            let res = res.map_err(|e| RegistryError::Task {
                what: format!("pull {r}"),
                message: e.to_string(),
            });
            if let Err(e) | Ok(Err(e)) = res {
                // Cancel the other downloads and wait for them to stop (their writers then drop
                // their temp files); nothing of the image is tagged.
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                return Err(e);
            }
        }
        let name = tag_as.map(str::to_string).unwrap_or_else(|| r.to_string());
        let desc = resolved.descriptor();
        let (store2, rv) = (store.clone(), resolved.clone());
        let what = format!("pull {r}");
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            put_blob(&store2, &rv.config_bytes, &rv.manifest.config.digest)?;
            put_blob(&store2, &rv.manifest_bytes, &rv.manifest_digest)?;
            store2.set_tag(&name, &desc)
        })
        .await
        .map_err(|e| RegistryError::Task {
            what: what.clone(),
            message: e.to_string(),
        })?
        .map_err(|source| RegistryError::Store { what, source })?;
        Ok(ImageRecord {
            manifest_digest: resolved.manifest_digest,
            manifest: resolved.manifest,
            config: resolved.config,
        })
    }

    /// Sends a GET with the cached auth for the repository (answering one 401 challenge, retrying
    /// connection errors, 5xx and 429); any non-success status becomes an error.
    async fn send(&self, req: &Req<'_>) -> Result<reqwest::Response, RegistryError> {
        self.send_ranged(req, None).await
    }

    /// [`Self::send`] with an optional `Range: bytes=FROM-` header.
    async fn send_ranged(
        &self,
        req: &Req<'_>,
        range_from: Option<u64>,
    ) -> Result<reqwest::Response, RegistryError> {
        let url = self.url(req.r, &req.path);
        let call = Call {
            r: req.r,
            scopes: vec![format!("repository:{}:pull", req.r.repository)],
            what: req.what.clone(),
            replayable: true,
            push: false,
            upload: false,
        };
        let accept = req.accept;
        let resp = self
            .execute(&call, &|http: &reqwest::Client| {
                let mut rb = http.get(&url);
                if let Some(a) = accept {
                    rb = rb.header(ACCEPT, a);
                }
                if let Some(from) = range_from {
                    rb = rb.header(reqwest::header::RANGE, format!("bytes={from}-"));
                }
                rb
            })
            .await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(status_error(&call, &url, resp).await)
    }

    /// `BASE/v2/REPOSITORY/PATH`.
    pub(crate) fn url(&self, r: &Reference, path: &str) -> String {
        format!(
            "{}/v2/{}/{}",
            self.base_url(&r.registry),
            r.repository,
            path
        )
    }

    /// The shared HTTP client.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// The base URL of a registry, e.g. `https://registry-1.docker.io`.
    pub(crate) fn registry_base(&self, registry: &str) -> String {
        self.base_url(registry)
    }

    /// The delay before retry number `attempt` (0-based): base * 2^attempt, capped at 10 s, plus jitter.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let base = self.inner.opts.retry_base_delay;
        let exp = base.saturating_mul(1u32 << attempt.min(16));
        let capped = exp.min(Duration::from_secs(10));
        // Jitter: up to +25%, from the clock (no rand dependency).
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        capped + capped.mul_f64(f64::from(nanos % 1000) / 4000.0)
    }

    pub(crate) fn max_retries(&self) -> u32 {
        self.inner.opts.max_retries
    }

    /// Sends the request `make` builds, with the cached auth for `call.scopes`: answers one 401
    /// challenge (token for exactly those scopes), and for replayable requests retries connection
    /// errors, 5xx and 429 with exponential backoff (honouring `Retry-After`). Returns the response
    /// whatever its final status (callers map statuses), except for transport errors.
    pub(crate) async fn execute(
        &self,
        call: &Call<'_>,
        make: &(dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Sync),
    ) -> Result<reqwest::Response, RegistryError> {
        let key = format!("{}|{}", call.r.registry, call.scopes.join(" "));
        let mut authed_after_challenge = false;
        let mut attempts = Attempts::default();
        let http = if call.upload {
            &self.inner.upload_http
        } else {
            &self.inner.http
        };
        loop {
            let cached = self
                .inner
                .auth
                .lock()
                .expect("auth cache poisoned")
                .get(&key)
                .cloned();
            let mut rb = make(http);
            rb = match &cached {
                Some(Auth::Basic(u, p)) => rb.basic_auth(u, Some(p)),
                Some(Auth::Bearer { token, expires }) if *expires > Instant::now() => {
                    rb.bearer_auth(token)
                }
                _ => rb,
            };
            let sent = if call.upload {
                rb.send().await
            } else {
                self.watched(call.r, &call.what, rb.send()).await
            };
            let resp = match sent {
                Ok(resp) => resp,
                Err(e) => {
                    // A timed-out connect counts as a stall; the response not starting within
                    // the stall timeout is one.
                    let stalled = e.is_timeout();
                    let read_stall = stalled && !e.is_connect();
                    let url = e.url().map(|u| u.to_string()).unwrap_or_default();
                    let replay = call.replayable && !e.is_builder() && !e.is_redirect();
                    if !replay || !self.may_retry(&attempts, stalled) {
                        return Err(if read_stall {
                            self.stall_error(call.r, &call.what, &url, &attempts)
                        } else {
                            self.request_error(call, e)
                        });
                    }
                    let cause = self.cause_of(&e);
                    self.pause_before_retry(
                        &mut attempts,
                        call.r,
                        &call.what,
                        stalled,
                        cause,
                        None,
                    )
                    .await;
                    continue;
                }
            };
            let status = resp.status();
            if call.replayable && is_retryable_status(status) && self.may_retry(&attempts, false) {
                let delay = retry_after(resp.headers()).map(|d| d.max(self.backoff(0)));
                drop(resp);
                self.pause_before_retry(
                    &mut attempts,
                    call.r,
                    &call.what,
                    false,
                    status.to_string(),
                    delay,
                )
                .await;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED && !authed_after_challenge {
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(parse_challenge);
                if let Some(ch) = challenge {
                    if let Some(auth) = self.authenticate(call.r, &ch, &call.scopes).await? {
                        self.inner
                            .auth
                            .lock()
                            .expect("auth cache poisoned")
                            .insert(key.clone(), auth);
                        authed_after_challenge = true;
                        continue;
                    }
                }
            }
            return Ok(resp);
        }
    }

    /// Sends `req` and reads its whole body (at most `limit` bytes). A body that breaks off or
    /// stalls is asked for again, within the same retry budget as the request itself.
    async fn get_small(
        &self,
        req: &Req<'_>,
        limit: usize,
    ) -> Result<(HeaderMap, Vec<u8>), RegistryError> {
        let mut attempts = Attempts::default();
        'attempt: loop {
            let mut resp = self.send(req).await?;
            let headers = resp.headers().clone();
            let url = resp.url().to_string();
            let mut out = Vec::new();
            loop {
                match self.watched(req.r, &req.what, resp.chunk()).await {
                    Ok(Some(c)) => {
                        if out.len() + c.len() > limit {
                            return Err(RegistryError::TooLarge {
                                what: req.what.clone(),
                                limit,
                            });
                        }
                        out.extend_from_slice(&c);
                    }
                    Ok(None) => return Ok((headers, out)),
                    Err(e) => {
                        let stalled = e.is_timeout();
                        if !self.may_retry(&attempts, stalled) {
                            return Err(if stalled {
                                self.stall_error(req.r, &req.what, &url, &attempts)
                            } else {
                                transport(&req.what, e)
                            });
                        }
                        let cause = self.cause_of(&e);
                        self.pause_before_retry(
                            &mut attempts,
                            req.r,
                            &req.what,
                            stalled,
                            cause,
                            None,
                        )
                        .await;
                        continue 'attempt;
                    }
                }
            }
        }
    }

    /// Whether another attempt may follow the failed one (`stalled`: a stall or connect timeout).
    pub(crate) fn may_retry(&self, a: &Attempts, stalled: bool) -> bool {
        a.failed < self.max_retries() && (!stalled || a.stalled < self.inner.opts.max_stall_retries)
    }

    /// Counts a failed attempt, tells the notice sink that another follows, and waits for the
    /// backoff delay (or `delay`, e.g. from `Retry-After`).
    pub(crate) async fn pause_before_retry(
        &self,
        a: &mut Attempts,
        r: &Reference,
        what: &str,
        stalled: bool,
        cause: String,
        delay: Option<Duration>,
    ) {
        let delay = delay.unwrap_or_else(|| self.backoff(a.failed));
        a.failed += 1;
        let (attempt, attempts) = if stalled {
            a.stalled += 1;
            (a.stalled + 1, self.inner.opts.max_stall_retries + 1)
        } else {
            (a.failed + 1, self.max_retries() + 1)
        };
        self.notify(RegistryNotice::Retrying {
            what: what.to_string(),
            registry: r.registry.clone(),
            cause,
            attempt,
            attempts,
            delay,
        });
        tokio::time::sleep(delay).await;
    }

    /// The error once a stalled request or transfer may not be retried any more.
    pub(crate) fn stall_error(
        &self,
        r: &Reference,
        what: &str,
        url: &str,
        a: &Attempts,
    ) -> RegistryError {
        let attempt = a.stalled + 1;
        RegistryError::Stalled {
            what: what.to_string(),
            registry: r.registry.clone(),
            url: url.to_string(),
            timeout: self.inner.opts.stall_timeout,
            attempt,
            attempts: (self.inner.opts.max_stall_retries + 1).max(attempt),
        }
    }

    /// A short cause for a retry notice: `no response for 30s`, or the innermost error.
    pub(crate) fn cause_of(&self, e: &reqwest::Error) -> String {
        if e.is_timeout() && e.is_connect() {
            format!(
                "connect timed out after {}s",
                self.inner.opts.connect_timeout.as_secs_f64()
            )
        } else if e.is_timeout() {
            format!(
                "no response for {}s",
                self.inner.opts.stall_timeout.as_secs_f64()
            )
        } else {
            root_cause(e)
        }
    }

    /// Sends `notice` to the sink, if there is one.
    pub(crate) fn notify(&self, notice: RegistryNotice) {
        if let Some(sink) = &self.notices {
            sink(&notice);
        }
    }

    /// Awaits `fut`, sending a [`RegistryNotice::Waiting`] every [`WAIT_NOTICE_INTERVAL`] it
    /// takes (only with a notice sink, and a stall timeout longer than the interval).
    pub(crate) async fn watched<F: std::future::Future>(
        &self,
        r: &Reference,
        what: &str,
        fut: F,
    ) -> F::Output {
        let timeout = self.inner.opts.stall_timeout;
        if self.notices.is_none() || timeout <= WAIT_NOTICE_INTERVAL {
            return fut.await;
        }
        tokio::pin!(fut);
        let start = Instant::now();
        loop {
            tokio::select! {
                out = &mut fut => return out,
                () = tokio::time::sleep(WAIT_NOTICE_INTERVAL) => {
                    self.notify(RegistryNotice::Waiting {
                        what: what.to_string(),
                        registry: r.registry.clone(),
                        waited: start.elapsed(),
                        timeout,
                    });
                }
            }
        }
    }

    fn request_error(&self, call: &Call<'_>, e: reqwest::Error) -> RegistryError {
        if e.is_connect() {
            let addr = format!("{}://{}", self.scheme(&call.r.registry), call.r.registry);
            let cause = if e.is_timeout() {
                format!(
                    "timed out after {}s (set {CONNECT_TIMEOUT_ENV}=SECONDS to wait longer)",
                    self.inner.opts.connect_timeout.as_secs_f64()
                )
            } else {
                root_cause(&e)
            };
            // rustls's `Error::InvalidCertificate` (rustls is not a direct dependency to downcast to).
            if cause.starts_with("invalid peer certificate") {
                return RegistryError::UntrustedCertificate {
                    what: call.what.clone(),
                    addr,
                    cause,
                };
            }
            RegistryError::Connect {
                what: call.what.clone(),
                addr,
                cause,
            }
        } else {
            transport(&call.what, e)
        }
    }

    /// Answers a challenge: `Ok(None)` when there is nothing to try (no credentials for Basic).
    async fn authenticate(
        &self,
        r: &Reference,
        ch: &Challenge,
        scopes: &[String],
    ) -> Result<Option<Auth>, RegistryError> {
        let cred = self.credential(&r.registry).await?;
        match ch.scheme.as_str() {
            "basic" => Ok(match cred {
                Some(Cred::Basic(u, p)) => Some(Auth::Basic(u, p)),
                _ => None,
            }),
            "bearer" => {
                let name = r.name();
                let realm =
                    ch.params
                        .get("realm")
                        .cloned()
                        .ok_or_else(|| RegistryError::Token {
                            name: name.clone(),
                            realm: "(none)".into(),
                            message: "Bearer challenge without realm".into(),
                        })?;
                let service = ch.params.get("service").cloned();
                let mut query: Vec<(&str, String)> = Vec::new();
                if let Some(s) = &service {
                    query.push(("service", s.clone()));
                }
                // One `scope` parameter per scope, as docker and skopeo send them (a cross-repo
                // mount needs `repository:SRC:pull` besides `repository:DST:pull,push`).
                for scope in scopes {
                    query.push(("scope", scope.clone()));
                }
                let token_err = |message: String| RegistryError::Token {
                    name: name.clone(),
                    realm: realm.clone(),
                    message,
                };
                let rb = match &cred {
                    Some(Cred::IdentityToken(t)) => {
                        // OAuth2 refresh-token grant (docker login with an identity token).
                        let mut form = vec![
                            ("grant_type", "refresh_token".to_string()),
                            ("refresh_token", t.clone()),
                            ("client_id", "rbuild".to_string()),
                        ];
                        form.extend(query.iter().cloned());
                        self.inner.http.post(&realm).form(&form)
                    }
                    Some(Cred::Basic(u, p)) => self
                        .inner
                        .http
                        .get(&realm)
                        .query(&query)
                        .basic_auth(u, Some(p)),
                    None => self.inner.http.get(&realm).query(&query),
                };
                let resp = rb.send().await.map_err(|e| token_err(chain(&e)))?;
                let status = resp.status();
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    let detail = registry_message(resp).await;
                    return Err(RegistryError::Unauthorized {
                        name,
                        status: status.to_string(),
                        detail: opt_prefix(
                            ": ",
                            detail.or_else(|| Some("token request refused".into())),
                        ),
                    });
                }
                if !status.is_success() {
                    return Err(token_err(status.to_string()));
                }
                let body = resp.bytes().await.map_err(|e| token_err(chain(&e)))?;
                #[derive(serde::Deserialize)]
                struct TokenResponse {
                    token: Option<String>,
                    access_token: Option<String>,
                    expires_in: Option<u64>,
                }
                let t: TokenResponse = serde_json::from_slice(&body)
                    .map_err(|e| token_err(format!("invalid token response: {e}")))?;
                let token = t
                    .token
                    .or(t.access_token)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| token_err("no token in the response".into()))?;
                let ttl = t.expires_in.unwrap_or(60).max(10);
                Ok(Some(Auth::Bearer {
                    token,
                    expires: Instant::now() + Duration::from_secs(ttl - ttl / 10),
                }))
            }
            _ => Ok(None),
        }
    }

    /// The configured credential for a registry (looked up once, on a blocking thread).
    async fn credential(&self, registry: &str) -> Result<Option<Cred>, RegistryError> {
        if let Some(c) = self
            .inner
            .creds
            .lock()
            .expect("credential cache poisoned")
            .get(registry)
        {
            return Ok(c.clone());
        }
        let source = self.inner.opts.credentials.clone();
        let reg = registry.to_string();
        let found = tokio::task::spawn_blocking(move || lookup_credential(&source, &reg))
            .await
            .map_err(|e| RegistryError::Task {
                what: format!("credentials for {registry}"),
                message: e.to_string(),
            })??;
        self.inner
            .creds
            .lock()
            .expect("credential cache poisoned")
            .insert(registry.to_string(), found.clone());
        Ok(found)
    }
}

fn lookup_credential(source: &Credentials, registry: &str) -> Result<Option<Cred>, RegistryError> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential as D};
    let server = if registry == crate::reference::DOCKER_HUB {
        "https://index.docker.io/v1/"
    } else {
        registry
    };
    let res = match source {
        Credentials::Anonymous => return Ok(None),
        Credentials::Basic { username, password } => {
            return Ok(Some(Cred::Basic(username.clone(), password.clone())))
        }
        Credentials::DockerConfig => docker_credential::get_credential(server),
        Credentials::ConfigFile(path) => match std::fs::File::open(path) {
            Ok(f) => {
                docker_credential::get_credential_from_reader(std::io::BufReader::new(f), server)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(RegistryError::Credentials {
                    registry: registry.into(),
                    message: format!("read {}: {e}", path.display()),
                })
            }
        },
    };
    match res {
        Ok(D::UsernamePassword(u, p)) => Ok(Some(Cred::Basic(u, p))),
        Ok(D::IdentityToken(t)) => Ok(Some(Cred::IdentityToken(t))),
        Err(E::NoCredentialConfigured | E::ConfigNotFound | E::ConfigReadError) => Ok(None),
        Err(e) => Err(RegistryError::Credentials {
            registry: registry.into(),
            message: e.to_string(),
        }),
    }
}

fn put_blob(store: &Store, bytes: &[u8], digest: &Digest) -> Result<(), StoreError> {
    if store.has_blob(digest) {
        return Ok(());
    }
    let mut w = store.blob_writer()?;
    w.write_all(bytes).map_err(|source| StoreError::Io {
        action: "write",
        path: store.root().to_path_buf(),
        source,
    })?;
    w.commit(Some(digest)).map(|_| ())
}

fn verify(what: &str, bytes: &[u8], desc: &Descriptor) -> Result<(), RegistryError> {
    if bytes.len() as u64 != desc.size {
        return Err(RegistryError::SizeMismatch {
            what: what.into(),
            expected: desc.size,
            actual: bytes.len() as u64,
        });
    }
    let actual = Digest::sha256_of(bytes);
    if actual != desc.digest {
        return Err(RegistryError::DigestMismatch {
            what: what.into(),
            expected: desc.digest.clone(),
            actual,
        });
    }
    Ok(())
}

fn transport(what: &str, e: reqwest::Error) -> RegistryError {
    let url = e.url().map(|u| u.to_string()).unwrap_or_default();
    RegistryError::Transport {
        what: what.to_string(),
        url,
        cause: chain(&e),
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}

/// 5xx and 429 are worth another attempt.
pub(crate) fn is_retryable_status(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// `Retry-After` in seconds (HTTP dates are not used by registries), capped at 60 s.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: u64 = v.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(60)))
}

/// The error for a final non-success response of `call`.
pub(crate) async fn status_error(
    call: &Call<'_>,
    url: &str,
    resp: reqwest::Response,
) -> RegistryError {
    let status = resp.status();
    let (code, message) = registry_error_body(resp).await;
    let detail = message.clone().or_else(|| code.clone());
    let name = call.r.name();
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if call.push => {
            RegistryError::PushDenied {
                name,
                status: status.to_string(),
                detail: opt_prefix(": ", detail),
            }
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Unauthorized {
            name,
            status: status.to_string(),
            detail: opt_prefix(": ", detail),
        },
        StatusCode::NOT_FOUND
            if call.push
                && (code.as_deref() == Some("NAME_UNKNOWN")
                    || detail
                        .as_deref()
                        .is_some_and(|d| d.contains("RepositoryNotFoundException"))) =>
        {
            RegistryError::RepositoryNotFound {
                registry: call.r.registry.clone(),
                repository: call.r.repository.clone(),
                detail: opt_prefix(": ", detail),
            }
        }
        StatusCode::NOT_FOUND => RegistryError::NotFound {
            what: call.what.clone(),
            detail: detail.map(|d| format!(" ({d})")).unwrap_or_default(),
        },
        _ => RegistryError::Http {
            what: call.what.clone(),
            status: status.to_string(),
            url: url.to_string(),
            detail: opt_prefix(": ", detail),
        },
    }
}

/// `errors[0].code` and `errors[0].message` of a distribution error body (ECR's
/// `RepositoryNotFoundException` JSON too).
async fn registry_error_body(resp: reqwest::Response) -> (Option<String>, Option<String>) {
    let Ok(body) = resp.bytes().await else {
        return (None, None);
    };
    parse_error_body(&body)
}

pub(crate) fn parse_error_body(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        let text = String::from_utf8_lossy(body).trim().to_string();
        return (None, (!text.is_empty() && text.len() < 500).then_some(text));
    };
    let s = |v: Option<&serde_json::Value>| {
        v.and_then(|m| m.as_str())
            .filter(|m| !m.is_empty())
            .map(str::to_string)
    };
    if let Some(e) = v.get("errors").and_then(|e| e.get(0)) {
        return (s(e.get("code")), s(e.get("message")));
    }
    // ECR's API error shape: {"__type":"RepositoryNotFoundException","message":"..."}
    let typ = s(v.get("__type"));
    let msg = s(v.get("message")).map(|m| match &typ {
        Some(t) => format!("{t}: {m}"),
        None => m,
    });
    (typ, msg)
}

fn opt_prefix(prefix: &str, s: Option<String>) -> String {
    s.map(|s| format!("{prefix}{s}")).unwrap_or_default()
}

/// The first `errors[].message` of a distribution error body.
async fn registry_message(resp: reqwest::Response) -> Option<String> {
    let body = resp.bytes().await.ok()?;
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let e = v.get("errors")?.get(0)?;
    let msg = e
        .get("message")
        .and_then(|m| m.as_str())
        .filter(|m| !m.is_empty());
    msg.or_else(|| e.get("code").and_then(|c| c.as_str()))
        .map(str::to_string)
}

fn media_type_of(headers: &HeaderMap, body: &[u8]) -> Option<MediaType> {
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or("").trim().to_string());
    if let Some(ct) = ct.filter(|c| c.starts_with("application/vnd.")) {
        return Some(MediaType(ct));
    }
    // Fall back to the document itself (some registries serve application/json).
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    if let Some(mt) = v.get("mediaType").and_then(|m| m.as_str()) {
        return Some(MediaType::new(mt));
    }
    if v.get("manifests").is_some() {
        Some(MediaType::new(MediaType::OCI_INDEX))
    } else if v.get("config").is_some() {
        Some(MediaType::new(MediaType::OCI_MANIFEST))
    } else {
        None
    }
}

fn select_platform<'a>(index: &'a Index, want: &Platform) -> Option<&'a Descriptor> {
    let matching = index
        .manifests
        .iter()
        .filter(|d| d.media_type.is_manifest() || d.media_type.0.is_empty())
        .filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == want.os && p.architecture == want.architecture)
        });
    let candidates: Vec<&Descriptor> = matching.collect();
    match &want.variant {
        Some(v) => candidates
            .iter()
            .copied()
            .find(|d| d.platform.as_ref().and_then(|p| p.variant.as_ref()) == Some(v))
            .or(candidates.first().copied()),
        None => candidates.first().copied(),
    }
}

fn platform_string(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{}", p.os, p.architecture, v),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(registry)
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq)]
struct Challenge {
    /// Lowercased scheme: `basic`, `bearer`.
    scheme: String,
    params: HashMap<String, String>,
}

/// A `WWW-Authenticate` header as `(lowercased scheme, parameters)`.
pub(crate) fn parse_challenge_pub(h: &str) -> (String, HashMap<String, String>) {
    let c = parse_challenge(h);
    (c.scheme, c.params)
}

fn parse_challenge(h: &str) -> Challenge {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = HashMap::new();
    let b = rest.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i] == b' ') {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let key = rest[ks..i].trim().to_ascii_lowercase();
        if i >= b.len() || b[i] == b',' {
            continue;
        }
        i += 1; // '='
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                let ch = rest[i..].chars().next().unwrap_or(' ');
                val.push(ch);
                i += ch.len_utf8();
            }
            i += 1;
        } else {
            let vs = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            val = rest[vs..i].trim().to_string();
        }
        if !key.is_empty() {
            params.insert(key, val);
        }
    }
    Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["service"], "registry.docker.io");
        assert_eq!(c.params["scope"], "repository:library/busybox:pull,push");
        let c = parse_challenge(r#"Basic realm="basic-realm""#);
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "basic-realm");
        assert_eq!(parse_challenge("Basic").params.len(), 0);
    }

    #[test]
    fn error_bodies_and_retry_after() {
        let (code, msg) = parse_error_body(
            br#"{"errors":[{"code":"NAME_UNKNOWN","message":"The repository with name 'app' does not exist in the registry with id '123456789012'"}]}"#,
        );
        assert_eq!(code.as_deref(), Some("NAME_UNKNOWN"));
        assert!(msg.unwrap().contains("'app' does not exist"));
        let (code, msg) = parse_error_body(
            br#"{"__type":"RepositoryNotFoundException","message":"repo missing"}"#,
        );
        assert_eq!(code.as_deref(), Some("RepositoryNotFoundException"));
        assert_eq!(
            msg.as_deref(),
            Some("RepositoryNotFoundException: repo missing")
        );
        assert_eq!(parse_error_body(b"").1, None);
        assert_eq!(parse_error_body(b"oops\n").1.as_deref(), Some("oops"));
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(reqwest::header::RETRY_AFTER, "9999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(60)));
        assert!(is_retryable_status(StatusCode::TOO_MANY_REQUESTS));
        assert!(is_retryable_status(StatusCode::BAD_GATEWAY));
        assert!(!is_retryable_status(StatusCode::NOT_FOUND));
    }

    #[test]
    fn timeouts_parse() {
        let t = |raw: &str| parse_timeout(STALL_TIMEOUT_ENV, raw);
        assert_eq!(t("30").unwrap(), Some(Duration::from_secs(30)));
        assert_eq!(t(" 1.5 ").unwrap(), Some(Duration::from_millis(1500)));
        assert_eq!(t("2s").unwrap(), Some(Duration::from_secs(2)));
        assert_eq!(t("").unwrap(), None);
        for bad in ["0", "-1", "soon", "nan", "inf"] {
            let msg = t(bad).unwrap_err().to_string();
            assert!(
                msg.contains(&format!("{STALL_TIMEOUT_ENV}={bad}")) && msg.contains("seconds"),
                "{msg}"
            );
        }
        let o = ClientOptions::default();
        assert_eq!(
            (o.connect_timeout, o.stall_timeout, o.max_stall_retries),
            (DEFAULT_CONNECT_TIMEOUT, DEFAULT_STALL_TIMEOUT, 2)
        );
    }

    #[test]
    fn schemes() {
        let c = RegistryClient::with_options(ClientOptions {
            insecure_registries: vec!["reg.local:5000".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.scheme("127.0.0.1:5000"), "http");
        assert_eq!(c.scheme("127.3.0.1"), "http");
        assert_eq!(c.scheme("localhost:5000"), "http");
        assert_eq!(c.scheme("[::1]:5000"), "http");
        assert_eq!(c.scheme("reg.local:5000"), "http");
        assert_eq!(c.scheme("reg.local:5001"), "https");
        assert_eq!(c.scheme("docker.io"), "https");
        assert_eq!(c.base_url("docker.io"), "https://registry-1.docker.io");
    }

    #[test]
    fn platform_selection() {
        let mk = |arch: &str, variant: Option<&str>, n: u8| Descriptor {
            media_type: MediaType::new(MediaType::OCI_MANIFEST),
            digest: Digest::sha256_of(&[n]),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(String::from),
                os_version: None,
            }),
            annotations: None,
        };
        let index = Index {
            schema_version: 2,
            media_type: None,
            manifests: vec![
                mk("arm64", Some("v8"), 1),
                mk("amd64", None, 2),
                mk("arm", Some("v7"), 3),
            ],
            annotations: None,
        };
        let want = |a: &str, v: Option<&str>| Platform {
            architecture: a.into(),
            os: "linux".into(),
            variant: v.map(String::from),
            os_version: None,
        };
        assert_eq!(
            select_platform(&index, &want("amd64", None))
                .unwrap()
                .digest,
            Digest::sha256_of(&[2])
        );
        assert_eq!(
            select_platform(&index, &want("arm", Some("v7")))
                .unwrap()
                .digest,
            Digest::sha256_of(&[3])
        );
        assert!(select_platform(&index, &want("s390x", None)).is_none());
    }
}
