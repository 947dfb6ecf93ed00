//! Registry errors: every message names the reference (or blob) and, for HTTP failures, the status.

use rbuild_oci::{Digest, StoreError};

/// Errors of the registry client.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference string is malformed (the text is Docker's, e.g. `invalid reference format`).
    #[error("{reason}")]
    InvalidReference {
        /// The input.
        reference: String,
        /// Why it was rejected, in Docker's words.
        reason: String,
    },
    /// The registry refused access (401/403) even after authenticating (or with no credentials).
    #[error("pull access denied for {name}: {status}{detail}")]
    Unauthorized {
        /// `registry/repository`.
        name: String,
        /// e.g. `401 Unauthorized`.
        status: String,
        /// The registry's own message, prefixed with `: `, or empty.
        detail: String,
    },
    /// The registry refused a push (401/403) even after authenticating (or with no credentials).
    #[error("push access denied for {name}: {status}{detail} (log in with `rbuild login`, or check the repository exists and you may push to it)")]
    PushDenied {
        /// `registry/repository`.
        name: String,
        /// e.g. `401 Unauthorized`.
        status: String,
        /// The registry's own message, prefixed with `: `, or empty.
        detail: String,
    },
    /// The target repository does not exist and the registry does not create repositories on push
    /// (ECR: `NAME_UNKNOWN` / `RepositoryNotFoundException`).
    #[error("repository `{repository}` does not exist in {registry}{detail}; create it first (on ECR: `aws ecr create-repository --repository-name {repository}`)")]
    RepositoryNotFound {
        /// The registry.
        registry: String,
        /// The repository.
        repository: String,
        /// The registry's own message, prefixed with `: `, or empty.
        detail: String,
    },
    /// The registry answered a manifest push with another digest than the one pushed.
    #[error("{what}: registry stored digest {actual}, expected {expected}")]
    PushedDigestMismatch {
        /// The reference.
        what: String,
        /// Our digest.
        expected: Digest,
        /// `Docker-Content-Digest` of the response.
        actual: String,
    },
    /// The manifest, repository or blob does not exist (404).
    #[error("{what}: not found{detail}")]
    NotFound {
        /// The reference or blob that was asked for.
        what: String,
        /// The registry's own message, in parentheses, or empty.
        detail: String,
    },
    /// No TCP/TLS connection could be made.
    #[error("{what}: cannot connect to {addr}: {cause}")]
    Connect {
        /// The reference being pulled.
        what: String,
        /// What was connected to: `registry 127.0.0.1:5000`, or a URL (`ADD`).
        addr: String,
        /// The cause in plain words, e.g. `connection refused`.
        cause: String,
    },
    /// The TLS handshake failed because the server's certificate is not trusted (unknown CA,
    /// wrong name, expired); not retried.
    #[error("{what}: TLS certificate of {addr} is not trusted: {cause} (trust its CA with {}=/path/ca.pem)", crate::REGISTRY_CA_ENV)]
    UntrustedCertificate {
        /// The reference or blob.
        what: String,
        /// The registry address with scheme, e.g. `https://127.0.0.1:5000`.
        addr: String,
        /// rustls's reason, e.g. `invalid peer certificate: UnknownIssuer`.
        cause: String,
    },
    /// The registry sent nothing for the stall timeout (no response headers, or no body bytes),
    /// on every attempt allowed; retries are over, so not retryable.
    #[error("{what}: no response from registry {registry} for {}s while fetching {url} (attempt {attempt} of {attempts}; wait longer with {}=SECONDS)", timeout.as_secs_f64(), crate::STALL_TIMEOUT_ENV)]
    Stalled {
        /// The reference or blob, e.g. `blob sha256:... of docker.io/library/busybox`.
        what: String,
        /// The registry, e.g. `127.0.0.1:5000`.
        registry: String,
        /// The URL that stalled.
        url: String,
        /// The stall timeout.
        timeout: std::time::Duration,
        /// Which stalled attempt this was (1-based).
        attempt: u32,
        /// How many stalled attempts are allowed.
        attempts: u32,
    },
    /// Any other transport failure (reset, timeout, TLS, body read).
    #[error("{what}: request to {url} failed: {cause}")]
    Transport {
        /// The reference or blob.
        what: String,
        /// The URL.
        url: String,
        /// The underlying error chain.
        cause: String,
    },
    /// An unexpected HTTP status.
    #[error("{what}: unexpected HTTP status {status} from {url}{detail}")]
    Http {
        /// The reference or blob.
        what: String,
        /// e.g. `500 Internal Server Error`.
        status: String,
        /// The URL.
        url: String,
        /// The registry's own message, prefixed with `: `, or empty.
        detail: String,
    },
    /// Getting a bearer token from the auth realm failed.
    #[error("{name}: token request to {realm} failed: {message}")]
    Token {
        /// `registry/repository`.
        name: String,
        /// The realm URL.
        realm: String,
        /// What went wrong (status or parse error).
        message: String,
    },
    /// Downloaded content does not match its digest (nothing was stored).
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The reference or blob.
        what: String,
        /// The digest that was asked for.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// Downloaded content has the wrong size (nothing was stored).
    #[error("{what}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The reference or blob.
        what: String,
        /// The size from the descriptor.
        expected: u64,
        /// Bytes received (possibly cut off at the first excess byte).
        actual: u64,
    },
    /// An index has no entry for the wanted platform (BuildKit's words).
    #[error("no match for platform in manifest {index}: not found")]
    NoMatchingPlatform {
        /// The index's digest.
        index: rbuild_oci::Digest,
        /// The reference.
        reference: String,
        /// e.g. `linux/amd64`.
        platform: String,
        /// The platforms the index lists.
        available: String,
    },
    /// The registry served something rbuild does not read (schema 1, artifacts, nested indexes).
    #[error("{reference}: unsupported manifest media type `{media_type}`")]
    UnsupportedMediaType {
        /// The reference.
        reference: String,
        /// The media type.
        media_type: String,
    },
    /// A manifest, index or config is not valid JSON for its type.
    #[error("{what}: invalid JSON")]
    InvalidJson {
        /// Which document.
        what: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A document is larger than the client accepts.
    #[error("{what}: response larger than {limit} bytes")]
    TooLarge {
        /// Which document.
        what: String,
        /// The limit.
        limit: usize,
    },
    /// Writing to the content store failed.
    #[error("{what}: content store")]
    Store {
        /// What was being stored.
        what: String,
        /// The cause.
        #[source]
        source: StoreError,
    },
    /// Reading credentials (docker config.json or a credential helper) failed.
    #[error("credentials for {registry}: {message}")]
    Credentials {
        /// The registry.
        registry: String,
        /// What went wrong.
        message: String,
    },
    /// The HTTP client could not be set up (e.g. a bad extra CA certificate).
    #[error("registry client setup: {0}")]
    Setup(String),
    /// A background task failed (panicked or was cancelled).
    #[error("{what}: background task failed: {message}")]
    Task {
        /// What the task did.
        what: String,
        /// The join error.
        message: String,
    },
}

impl RegistryError {
    /// Worth another attempt: connection and transport failures, 5xx and 429, short bodies.
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Connect { .. }
            | RegistryError::Transport { .. }
            | RegistryError::SizeMismatch { .. } => true,
            RegistryError::Http { status, .. } => {
                status.starts_with('5') || status.starts_with("429")
            }
            _ => false,
        }
    }
}

/// Joins an error and its sources with `: `, skipping repeats (reqwest/hyper nest several layers).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}
