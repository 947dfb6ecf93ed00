//! What a build tells its caller while it runs: solver vertex events go to the caller's
//! [`ProgressSink`], everything else (lock waits, registry retries, exported images, pushes,
//! cache import/export) arrives as a typed [`BuildEvent`] through the [`Progress`] trait. The
//! library never prints; a CLI renders these.

use crate::spec::CacheLocation;
use rbuild_oci::lock::{WaitReporter, Waiting};
use rbuild_oci::Digest;
use rbuild_registry::{PushReport, RegistryNotice};
use rbuild_solver::ProgressSink;
use std::sync::Arc;
use std::time::Duration;

/// Something that happened during a build, outside the solver's per-vertex events.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum BuildEvent {
    /// The Dockerfile's `# syntax=` names a frontend image; the built-in frontend builds it.
    SyntaxIgnored {
        /// The Dockerfile's name.
        file: String,
        /// The `# syntax=` value.
        syntax: String,
    },
    /// A lock on the state root has been held by another process for over a second.
    Waiting(Waiting),
    /// A registry retry or wait while base images are resolved.
    ResolveNotice(RegistryNotice),
    /// A `--cache-from` was read.
    CacheImported {
        /// Where from.
        from: CacheLocation,
        /// Its number of cache records.
        records: usize,
    },
    /// A `--cache-from` could not be read; the build goes on without it.
    CacheImportFailed {
        /// Where from.
        from: CacheLocation,
        /// Why.
        error: String,
    },
    /// A problem met while importing cached results.
    CacheImportWarning(String),
    /// The image (manifest) was written to the store.
    ImageWritten {
        /// Its manifest digest.
        digest: Digest,
    },
    /// A `--cache-to` was written.
    CacheExported {
        /// Where to.
        to: CacheLocation,
        /// Cache records written.
        records: usize,
        /// `mode=max`.
        max: bool,
        /// The cache manifest's digest.
        digest: Digest,
    },
    /// The image was tagged in the store.
    Named {
        /// The normalised name.
        name: String,
    },
    /// A registry retry or wait while pushing.
    PushNotice(RegistryNotice),
    /// An image was pushed.
    Pushed(PushSummary),
    /// A blob's upload went on (after each chunk, and when committed).
    PushBytes(rbuild_registry::BlobProgress),
    /// A long layer export or compression went on (every 64 MiB of a layer, and at its end).
    Layer(rbuild_exporter::LayerProgress),
    /// A base image's layer is downloading (its first bytes, about every 512 KiB, its end).
    Pull {
        /// The image as the Dockerfile's FROM resolved it.
        image: String,
        /// The blob and its bytes so far.
        progress: rbuild_registry::BlobProgress,
    },
    /// A base image's layer is being extracted into its snapshot (`finished`: it is).
    Extract {
        /// The image as the Dockerfile's FROM resolved it.
        image: String,
        /// The layer's blob.
        layer: Digest,
        /// False when it starts, true when it ended.
        finished: bool,
    },
}

/// The outcome of pushing one image to its names.
#[derive(Debug, Clone)]
pub struct PushSummary {
    /// The pushed manifest's digest (its layers compressed; the store's own manifest keeps
    /// them uncompressed, so its digest differs, as docker's image ID and repo digest do).
    pub digest: Digest,
    /// The registry's counters.
    pub report: PushReport,
    /// How long the push took.
    pub elapsed: Duration,
}

/// The caller's side of a build's progress.
pub trait Progress: Send + Sync {
    /// The sink that receives the solver's per-vertex events (started, cached, log, done),
    /// and those of the build's own vertices as BuildKit shows them (`[internal] load build
    /// definition from Dockerfile`, `[internal] load .dockerignore`, `[internal] load metadata
    /// for REF`, `exporting to image` with its `writing image`/`naming to` lines), which carry
    /// no cache key. Every step of a cached build is reported `Cached`, also those below the
    /// cache hit that the solve did not need. May be called more than once per build: the
    /// sinks should share one numbering of vertices.
    fn solver_sink(&self) -> ProgressSink;
    /// Called for each [`BuildEvent`].
    fn event(&self, event: BuildEvent);
}

/// A [`Progress`] that drops everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {
    fn solver_sink(&self) -> ProgressSink {
        ProgressSink::discard()
    }

    fn event(&self, _event: BuildEvent) {}
}

/// A lock-wait reporter that forwards waits to `progress` as [`BuildEvent::Waiting`].
pub(crate) fn wait_reporter(progress: &Arc<dyn Progress>) -> WaitReporter {
    let progress = progress.clone();
    WaitReporter::new(move |waiting| progress.event(BuildEvent::Waiting(waiting.clone())))
}
