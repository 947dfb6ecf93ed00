//! Client options and their environment: [`ClientOptions`] (schemes, extra CAs, credential
//! source, platform, retry budget, connect and stall timeouts), [`Credentials`], the `RBUILD_*`
//! environment variables that override them, and parsing of timeout values.

use crate::RegistryError;
#[cfg(doc)]
use crate::{RegistryClient, RegistryNotice};
use rbuild_oci::Platform;
use std::path::PathBuf;
use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
