//! The OCI distribution protocol client: authentication, manifest and blob pull.
//!
//! A thin client on reqwest (rustls with ring, no native TLS): [`Reference`] parses and normalises
//! image names like Docker; [`RegistryClient`] resolves a reference to the linux/amd64 manifest
//! (following an OCI index or Docker manifest list), downloads blobs into the content store with
//! digest verification, and pulls whole images. Auth: anonymous, Basic, and Bearer token
//! challenges, with credentials from docker's `config.json` (and its credential helpers).
//! Push: [`RegistryClient::push`] (HEAD-skip, cross-repo mount, monolithic or chunked uploads,
//! bounded concurrency, retries, manifest bytes as stored). Login: [`save_login`] writes docker's
//! config.json; [`RegistryClient::check_login`] verifies credentials first.

mod client;
mod error;
mod fetch;
mod login;
mod push;
mod reference;

pub use client::{
    ClientOptions, Credentials, RegistryClient, ResolvedImage, INSECURE_REGISTRIES_ENV,
    MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES, REGISTRY_CA_ENV, TLS_REGISTRIES_ENV,
};
pub use error::RegistryError;
pub use fetch::{fetch_url, parse_http_date, FetchedUrl};
pub use login::{auth_key, docker_config_path, save_login, SavedTo, DOCKER_HUB_AUTH_KEY};
pub use push::{mount_sources_from_store, source_repositories, PushOptions, PushReport};
pub use reference::{Reference, DOCKER_HUB};
