//! The [`RegistryClient`] facade: construction from [`ClientOptions`] (environment applied), the
//! shared state behind clones (HTTP clients, scheme lists, credential and token caches, notice
//! sink), and where a registry lives (HTTP or HTTPS, base URL). Pull, push, auth and transport
//! add their methods in their own modules.

use crate::auth::{Auth, Cred};
use crate::notice::{BlobProgress, NoticeSink, TransferSink};
use crate::options::{ClientOptions, INSECURE_REGISTRIES_ENV, TLS_REGISTRIES_ENV};
#[cfg(doc)]
use crate::options::{CONNECT_TIMEOUT_ENV, REGISTRY_CA_ENV, STALL_TIMEOUT_ENV};
use crate::tls;
use crate::{Reference, RegistryError, RegistryNotice};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The state all clones of a [`RegistryClient`] share.
pub(crate) struct Inner {
    /// Requests whose body is small or empty: connect and stall timeouts. Built on first use
    /// (loading the system's trusted roots costs milliseconds a build that never talks to a
    /// registry should not pay).
    http: OnceLock<reqwest::Client>,
    /// Blob uploads (PUT/PATCH with a large body): connect timeout only, since reqwest's read
    /// timeout would also run while the body is still being sent. Built on first use.
    upload_http: OnceLock<reqwest::Client>,
    /// Extra trusted CAs (from the options), for building the clients.
    roots: Vec<reqwest::Certificate>,
    /// Registries reached over plain HTTP (options and [`INSECURE_REGISTRIES_ENV`]).
    pub(crate) insecure: Vec<String>,
    /// Registries reached over HTTPS even on loopback (options and [`TLS_REGISTRIES_ENV`]).
    pub(crate) https: Vec<String>,
    /// The options, environment applied.
    pub(crate) opts: ClientOptions,
    /// Credentials per registry, looked up once.
    pub(crate) creds: Mutex<HashMap<String, Option<Cred>>>,
    /// Keyed by `registry/repository`.
    pub(crate) auth: Mutex<HashMap<String, Auth>>,
}

/// A registry client (cheap to clone; clones share connections and tokens).
#[derive(Clone)]
pub struct RegistryClient {
    /// Shared by clones.
    pub(crate) inner: Arc<Inner>,
    /// Where retries and waits are reported, if anywhere.
    pub(crate) notices: Option<NoticeSink>,
    /// Where blob transfer progress is reported, if anywhere.
    pub(crate) transfers: Option<TransferSink>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("insecure", &self.inner.insecure)
            .field("https", &self.inner.https)
            .finish_non_exhaustive()
    }
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
            transfers: self.transfers.clone(),
        }
    }

    /// A clone (sharing connections, tokens, options and notices) that reports the bytes of
    /// blob downloads and uploads to `f`.
    pub fn with_transfer_progress(
        &self,
        f: impl Fn(&BlobProgress) + Send + Sync + 'static,
    ) -> RegistryClient {
        RegistryClient {
            inner: self.inner.clone(),
            notices: self.notices.clone(),
            transfers: Some(Arc::new(f)),
        }
    }

    /// The options the client was made with (environment applied).
    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    /// A client with explicit options.
    pub fn with_options(opts: ClientOptions) -> Result<RegistryClient, RegistryError> {
        let roots = tls::extra_roots(&opts)?;
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
                http: OnceLock::new(),
                upload_http: OnceLock::new(),
                roots,
                insecure,
                https,
                opts,
                creds: Mutex::new(HashMap::new()),
                auth: Mutex::new(HashMap::new()),
            }),
            notices: None,
            transfers: None,
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

    /// `SCHEME://HOST` of a registry (Docker Hub's API lives at `registry-1.docker.io`).
    fn base_url(&self, registry: &str) -> String {
        let host = if registry == crate::reference::DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            registry
        };
        format!("{}://{}", self.scheme(registry), host)
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

    /// The shared HTTP client for requests with small bodies (built on first use).
    pub(crate) fn http(&self) -> Result<&reqwest::Client, RegistryError> {
        let i = &self.inner;
        lazy_client(&i.http, || {
            tls::build_http(&i.opts, &i.roots, Some(i.opts.stall_timeout))
        })
    }

    /// The shared HTTP client for blob uploads (built on first use).
    pub(crate) fn upload_http(&self) -> Result<&reqwest::Client, RegistryError> {
        let i = &self.inner;
        lazy_client(&i.upload_http, || tls::build_http(&i.opts, &i.roots, None))
    }

    /// The base URL of a registry, e.g. `https://registry-1.docker.io`.
    pub(crate) fn registry_base(&self, registry: &str) -> String {
        self.base_url(registry)
    }

    /// Reports a blob transfer's progress, if anyone listens.
    pub(crate) fn report_transfer(&self, progress: BlobProgress) {
        if let Some(sink) = &self.transfers {
            sink(&progress);
        }
    }

    /// Sends `notice` to the sink, if there is one.
    pub(crate) fn notify(&self, notice: RegistryNotice) {
        if let Some(sink) = &self.notices {
            sink(&notice);
        }
    }
}

/// The host of `host:port`, `[v6]:port` or `host`.
fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(registry)
}

/// The client in `cell`, built by `build` the first time.
fn lazy_client(
    cell: &OnceLock<reqwest::Client>,
    build: impl FnOnce() -> Result<reqwest::Client, RegistryError>,
) -> Result<&reqwest::Client, RegistryError> {
    if let Some(c) = cell.get() {
        return Ok(c);
    }
    let c = build()?;
    Ok(cell.get_or_init(|| c))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
