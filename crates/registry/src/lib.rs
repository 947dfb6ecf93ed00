//! The OCI distribution protocol client: authentication, manifest and blob pull.
//!
//! A thin client on reqwest (rustls with ring, no native TLS): [`Reference`] parses and normalises
//! image names like Docker; [`RegistryClient`] resolves a reference to the linux/amd64 manifest
//! (following an OCI index or Docker manifest list), downloads blobs into the content store with
//! digest verification, and pulls whole images. Auth: anonymous, Basic, and Bearer token
//! challenges, with credentials from docker's `config.json` (and its credential helpers).
//! Push: [`RegistryClient::push`] (HEAD-skip, cross-repo mount, monolithic or chunked uploads,
//! bounded concurrency, retries, manifest bytes as stored). Login: [`save_login`] writes docker's
//! config.json; [`RegistryClient::check_login`] verifies credentials first. Chosen platforms:
//! [`RegistryClient::pull_platforms`] (one manifest, or an index of several).
//! Stalls: a connect timeout and a stall timeout (no bytes for N seconds, never a limit on a whole
//! transfer), retried like dropped connections, then [`RegistryError::Stalled`]; retries and waits
//! are reported as [`RegistryNotice`]s to a sink set with [`RegistryClient::with_notices`].

mod auth;
mod call;
mod client;
mod error;
mod fetch;
mod login;
mod notice;
mod options;
mod pull;
mod pull_platforms;
mod push;
mod reference;
mod status;
mod tls;
mod transport;

pub use auth::docker_config_credential;
pub use client::RegistryClient;
pub use error::RegistryError;
pub use fetch::{fetch_url, parse_http_date, FetchedUrl};
pub use login::{
    auth_key, docker_config_path, login_server, remove_login, save_login, SavedTo,
    DOCKER_HUB_AUTH_KEY,
};
pub use notice::{BlobProgress, RegistryNotice};
pub use options::{
    ClientOptions, Credentials, CONNECT_TIMEOUT_ENV, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_STALL_TIMEOUT, INSECURE_REGISTRIES_ENV, REGISTRY_CA_ENV, STALL_TIMEOUT_ENV,
    TLS_REGISTRIES_ENV,
};
pub use pull::{ResolvedImage, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES};
pub use pull_platforms::PulledPlatforms;
pub use push::{mount_sources_from_store, source_repositories, PushOptions, PushReport};
pub use reference::{Reference, DOCKER_HUB};
