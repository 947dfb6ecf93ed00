//! The OCI distribution protocol client: authentication, manifest and blob pull.
//!
//! A thin client on reqwest (rustls with ring, no native TLS): [`Reference`] parses and normalises
//! image names like Docker; [`RegistryClient`] resolves a reference to the linux/amd64 manifest
//! (following an OCI index or Docker manifest list), downloads blobs into the content store with
//! digest verification, and pulls whole images. Auth: anonymous, Basic, and Bearer token
//! challenges, with credentials from docker's `config.json` (and its credential helpers).

mod client;
mod error;
mod reference;

pub use client::{
    ClientOptions, Credentials, RegistryClient, ResolvedImage, INSECURE_REGISTRIES_ENV,
    MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES,
};
pub use error::RegistryError;
pub use reference::{Reference, DOCKER_HUB};
