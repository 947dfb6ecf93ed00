//! Typed progress notices of the registry client: a request that will be retried, or a registry
//! that has sent nothing for a while. The client never prints; whoever builds it with
//! [`RegistryClient::with_notices`](crate::RegistryClient::with_notices) decides where they go
//! (the worker turns them into log lines of the vertex that pulls).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Something a user waiting on a pull or push should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryNotice {
    /// A request or transfer failed and is tried again after `delay`.
    Retrying {
        /// The reference or blob, e.g. `blob sha256:... of docker.io/library/busybox`.
        what: String,
        /// The registry, e.g. `docker.io`.
        registry: String,
        /// Why the attempt failed, e.g. `no response for 30s` or `503 Service Unavailable`.
        cause: String,
        /// The attempt about to start (1-based, so at least 2).
        attempt: u32,
        /// How many attempts are allowed for this kind of failure.
        attempts: u32,
        /// The wait before it.
        delay: Duration,
    },
    /// The registry has sent nothing for `waited` (the request fails at `timeout`).
    Waiting {
        /// The reference or blob.
        what: String,
        /// The registry.
        registry: String,
        /// How long nothing has arrived.
        waited: Duration,
        /// The stall timeout.
        timeout: Duration,
    },
}

impl fmt::Display for RegistryNotice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryNotice::Retrying {
                what,
                registry,
                cause,
                attempt,
                attempts,
                delay,
            } => write!(
                f,
                "{what}: {cause} (registry {registry}); retrying in {:.1}s (attempt {attempt} of {attempts})",
                delay.as_secs_f64()
            ),
            RegistryNotice::Waiting {
                what,
                registry,
                waited,
                timeout,
            } => write!(
                f,
                "{what}: waiting for registry {registry}: no response for {}s (gives up after {}s)",
                waited.as_secs(),
                timeout.as_secs_f64()
            ),
        }
    }
}

/// Where notices go: a callback, cheap to clone, called from the client's tasks (return quickly).
pub(crate) type NoticeSink = Arc<dyn Fn(&RegistryNotice) + Send + Sync>;

/// How far one blob's transfer has got. A download reports when its first bytes arrive, then
/// about every [`BlobProgress::EVERY`] bytes, and when the last byte arrived; an upload after
/// each PATCH chunk and when the blob is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobProgress {
    /// The blob.
    pub digest: rbuild_oci::Digest,
    /// Bytes received (a resumed download counts what it already had).
    pub done: u64,
    /// The blob's size.
    pub total: u64,
}

impl BlobProgress {
    /// Bytes between two reports of one blob.
    pub const EVERY: u64 = 512 * 1024;
}

/// Where transfer progress goes (see [`RegistryClient::with_transfer_progress`](crate::RegistryClient::with_transfer_progress)).
pub(crate) type TransferSink = Arc<dyn Fn(&BlobProgress) + Send + Sync>;
