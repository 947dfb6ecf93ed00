//! The `key=value,...` flags of a build as typed specs: [`OutputSpec`] (`--output`),
//! [`SecretSpec`] (`--secret`), [`SshSpec`] (`--ssh`), [`BuildContextSpec`] (`--build-context`),
//! [`CacheToSpec`] / [`CacheFromSpec`] (`--cache-to` /
//! `--cache-from`). Each implements [`std::str::FromStr`] over the one field reader of [`kv`], so
//! a CLI plugs them into its argument parser (clap's `value_parser`) and an embedder writes them
//! as it would on the command line.

mod cache;
mod context;
pub mod kv;
mod output;
mod secret;
mod ssh;

pub use cache::{CacheFromSpec, CacheLocation, CacheToSpec};
pub use context::{BuildContextSource, BuildContextSpec};
pub use output::{CompressionSpec, Output, OutputSpec};
pub use secret::SecretSpec;
pub use ssh::SshSpec;

/// Why a spec is invalid. The text is what BuildKit's CLI (buildx) users see, without the
/// leading `error: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// `--output` with a type that needs `dest=`.
    #[error("--output type={kind} needs dest=PATH")]
    OutputNeedsDest {
        /// The output type.
        kind: String,
    },
    /// `--output type=image|registry,push=true` without a name.
    #[error("--output type={kind} needs name=REF to push")]
    OutputNeedsName {
        /// The output type.
        kind: String,
    },
    /// An output type rbuild does not export.
    #[error("unsupported output type `{0}` (supported: oci, docker, local, image, registry)")]
    UnsupportedOutput(String),
    /// `--output` without `type=`.
    #[error("--output `{0}` has no type=...")]
    OutputWithoutType(String),
    /// `--output` whose fields cannot be read.
    #[error("--output `{spec}`: {why}")]
    OutputSyntax {
        /// The spec as given.
        spec: String,
        /// The reader's complaint.
        why: kv::KvError,
    },
    /// `compression=` other than gzip, zstd, uncompressed.
    #[error("unsupported compression `{0}` (gzip, zstd, uncompressed)")]
    UnsupportedCompression(String),
    /// `compression-level=` that is not an integer.
    #[error("invalid compression-level `{0}`")]
    CompressionLevel(String),
    /// An invalid `--build-context`.
    #[error("invalid build context `{spec}`: {why}")]
    BuildContext {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        why: String,
    },
    /// An invalid `--secret`.
    #[error("invalid secret `{spec}`: {why}")]
    Secret {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        why: String,
    },
    /// An invalid `--ssh`.
    #[error("invalid ssh `{spec}`: {why}")]
    Ssh {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        why: String,
    },
    /// An invalid `--cache-to` / `--cache-from`.
    #[error("{flag} `{spec}`: {why}")]
    Cache {
        /// `--cache-to` or `--cache-from`.
        flag: &'static str,
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        why: String,
    },
    /// An image reference (`-t`, an output's `name=`) outside the docker reference grammar; the
    /// text is docker's (`invalid argument "X" for "-t, --tag" flag: invalid reference format`).
    #[error("invalid argument \"{value}\" for \"{flag}\" flag: {why}")]
    InvalidReference {
        /// The flag, as docker names it (`-t, --tag`).
        flag: &'static str,
        /// The reference as given.
        value: String,
        /// Why the grammar rejects it, in docker's words.
        why: String,
    },
}

/// Checks `value` of `flag` against the docker reference grammar.
pub(crate) fn check_reference(flag: &'static str, value: &str) -> Result<(), SpecError> {
    rbuild_registry::Reference::parse(value)
        .map(|_| ())
        .map_err(|e| SpecError::InvalidReference {
            flag,
            value: value.to_string(),
            why: e.to_string(),
        })
}

/// A `-t` value checked against the docker reference grammar (a clap `value_parser`).
pub fn parse_tag(value: &str) -> Result<String, SpecError> {
    check_reference("-t, --tag", value)?;
    Ok(value.to_string())
}

impl SpecError {
    /// True for errors that buildx reports as a usage error (exit code 2): secrets and caches.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            SpecError::Secret { .. } | SpecError::Ssh { .. } | SpecError::Cache { .. }
        )
    }
}
