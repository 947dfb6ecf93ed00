//! The pull side of the distribution protocol: manifest resolution (index or manifest list ->
//! platform manifest, digest checks, config fetch), blob download streamed into the content store
//! with resume on interruption, and whole-image pulls with bounded concurrency.

use crate::transport::{transport, Attempts, Failure, Req};
use crate::{Reference, RegistryClient, RegistryError};
use rbuild_oci::{
    Descriptor, Digest, ImageConfig, ImageRecord, Index, Manifest, MediaType, Platform, Store,
    StoreError,
};
use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::StatusCode;
use std::io::Write;
use std::sync::Arc;

/// Largest manifest or index accepted (the OCI distribution spec suggests 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = rbuild_oci::MAX_MANIFEST_BYTES as usize;
/// Largest image config accepted.
pub const MAX_CONFIG_BYTES: usize = 32 << 20;
/// The `Accept` header of manifest requests: OCI and Docker v2 manifests and indexes.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

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

/// What the blob writer thread receives.
enum WriterMsg {
    /// The next bytes of the blob.
    Data(bytes::Bytes),
    /// Every byte was sent: verify and commit.
    Done,
}

/// One blob download: what every request and message of it names.
struct BlobDownload<'a> {
    r: &'a Reference,
    desc: &'a Descriptor,
    what: &'a str,
    req: &'a Req<'a>,
}

/// Bytes of a blob received so far, and how many of the current body's first bytes repeat
/// them (a 200 answer to a range request).
#[derive(Default)]
struct Progress {
    received: u64,
    skip: u64,
    /// `received` at the last [`BlobProgress`](crate::BlobProgress) report, if one was made.
    reported: Option<u64>,
}

/// How one response body ended.
enum BodyEnd {
    /// All the blob's bytes arrived.
    Complete,
    /// The writer thread stopped; its error is reported when it is joined.
    WriterGone,
    /// The body failed; a ranged request may resume it.
    Failed {
        stalled: bool,
        cause: String,
        err: RegistryError,
    },
}

/// What the blob writer thread ends with: the committed blob, `None` when aborted.
type Written = Result<Option<(Digest, u64)>, StoreError>;

/// The blocking writer thread of a blob download: writes what it receives to a temp blob and
/// commits it on `Done` after checking `expected`; `None` when the sender went away first (the
/// temp file is removed).
fn spawn_blob_writer(
    store: &Store,
    expected: &Digest,
) -> (
    tokio::sync::mpsc::Sender<WriterMsg>,
    tokio::task::JoinHandle<Written>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<WriterMsg>(16);
    let (store, expected) = (store.clone(), expected.clone());
    let writer = tokio::task::spawn_blocking(move || {
        let mut w = store.blob_writer()?;
        loop {
            match rx.blocking_recv() {
                Some(WriterMsg::Data(b)) => w.write_all(&b).map_err(|source| StoreError::Io {
                    action: "write",
                    path: store.root().to_path_buf(),
                    source,
                })?,
                Some(WriterMsg::Done) => return w.commit(Some(&expected)).map(Some),
                // Sender dropped without Done: aborted; dropping `w` removes the temp file.
                None => return Ok(None),
            }
        }
    });
    (tx, writer)
}

/// The download's outcome from the writer's.
fn blob_written(what: String, written: Written) -> Result<(), RegistryError> {
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

impl RegistryClient {
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
                    index: digest.clone(),
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
    pub(crate) async fn fetch_manifest(
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
        let (tx, writer) = spawn_blob_writer(store, &desc.digest);
        let download = BlobDownload {
            r,
            desc,
            what: &what,
            req: &req,
        };
        let streamed = self.stream_blob(&download, first, &tx).await;
        drop(tx);
        let written = writer.await.map_err(|e| RegistryError::Task {
            what: what.clone(),
            message: e.to_string(),
        })?;
        streamed?;
        blob_written(what, written)
    }

    /// Streams the blob's body to the writer, resuming an interrupted, stalled or short body
    /// with `Range: bytes=RECEIVED-` (up to max_retries times, max_stall_retries for stalls);
    /// the writer hashes everything, so the digest check at commit covers the resumed parts
    /// too. Sends `Done` when every byte arrived.
    async fn stream_blob(
        &self,
        dl: &BlobDownload<'_>,
        first: reqwest::Response,
        tx: &tokio::sync::mpsc::Sender<WriterMsg>,
    ) -> Result<(), RegistryError> {
        let mut resp = first;
        let mut progress = Progress::default();
        let mut attempts = Attempts::default();
        loop {
            let url = resp.url().to_string();
            let (stalled, cause, err) =
                match self.read_body(dl, &mut resp, &mut progress, tx).await? {
                    BodyEnd::Complete => break,
                    BodyEnd::WriterGone => return Ok(()), // its error is reported by the caller
                    BodyEnd::Failed {
                        stalled,
                        cause,
                        err,
                    } => (stalled, cause, err),
                };
            if !self.may_retry(&attempts, stalled) {
                return Err(if stalled {
                    self.stall_error(dl.r, dl.what, &url, &attempts)
                } else {
                    err
                });
            }
            self.pause_before_retry(&mut attempts, dl.r, dl.what, Failure::new(stalled, cause))
                .await;
            resp = match self.send_ranged(dl.req, Some(progress.received)).await {
                Ok(resp) => resp,
                // 416: the registry has no more bytes than we got; the size error says more.
                Err(RegistryError::Http { status, .. }) if status.starts_with("416") => {
                    return Err(err)
                }
                Err(e) => return Err(e),
            };
            progress.skip = self.bytes_to_skip(dl, &resp, progress.received)?;
        }
        let _ = tx.send(WriterMsg::Done).await;
        Ok(())
    }

    /// Reads one response body into the writer until it ends, fails or says too much.
    async fn read_body(
        &self,
        dl: &BlobDownload<'_>,
        resp: &mut reqwest::Response,
        progress: &mut Progress,
        tx: &tokio::sync::mpsc::Sender<WriterMsg>,
    ) -> Result<BodyEnd, RegistryError> {
        let size = dl.desc.size;
        loop {
            match self.watched(dl.r, dl.what, resp.chunk()).await {
                Ok(Some(mut c)) => {
                    if progress.skip > 0 {
                        // A 200 to a range request: drop what we already have.
                        let n = progress.skip.min(c.len() as u64) as usize;
                        progress.skip -= n as u64;
                        c = c.slice(n..);
                        if c.is_empty() {
                            continue;
                        }
                    }
                    progress.received += c.len() as u64;
                    if progress.received > size {
                        return Err(RegistryError::SizeMismatch {
                            what: dl.what.to_string(),
                            expected: size,
                            actual: progress.received,
                        });
                    }
                    let due = progress.reported.is_none_or(|at| {
                        progress.received >= at + crate::BlobProgress::EVERY
                            || progress.received == size
                    });
                    if due {
                        progress.reported = Some(progress.received);
                        self.report_transfer(crate::BlobProgress {
                            digest: dl.desc.digest.clone(),
                            done: progress.received,
                            total: size,
                        });
                    }
                    if tx.send(WriterMsg::Data(c)).await.is_err() {
                        return Ok(BodyEnd::WriterGone);
                    }
                }
                Ok(None) if progress.received == size => return Ok(BodyEnd::Complete),
                Ok(None) => {
                    let received = progress.received;
                    return Ok(BodyEnd::Failed {
                        stalled: false,
                        cause: format!("body ended after {received} of {size} bytes"),
                        err: RegistryError::SizeMismatch {
                            what: dl.what.to_string(),
                            expected: size,
                            actual: received,
                        },
                    });
                }
                Err(e) => {
                    return Ok(BodyEnd::Failed {
                        stalled: e.is_timeout(),
                        cause: self.cause_of(&e),
                        err: transport(dl.what, e),
                    });
                }
            }
        }
    }

    /// How many bytes of a resumed response's body we already have: none for a 206 starting
    /// at `received` (any other start is an error), all `received` for a full 200 body.
    fn bytes_to_skip(
        &self,
        dl: &BlobDownload<'_>,
        resp: &reqwest::Response,
        received: u64,
    ) -> Result<u64, RegistryError> {
        if resp.status() != StatusCode::PARTIAL_CONTENT {
            return Ok(received);
        }
        let start = resp
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes "))
            .and_then(|v| v.split('-').next())
            .and_then(|v| v.parse::<u64>().ok());
        if start != Some(received) {
            return Err(RegistryError::Transport {
                what: dl.what.to_string(),
                url: self.url(dl.r, &dl.req.path),
                cause: format!(
                    "range request from byte {received} answered with Content-Range starting at {start:?}"
                ),
            });
        }
        Ok(0)
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
        self.store_resolved(r, store, &resolved).await?;
        let name = tag_as.map(str::to_string).unwrap_or_else(|| r.to_string());
        let desc = resolved.descriptor();
        let store2 = store.clone();
        let what = format!("pull {r}");
        tokio::task::spawn_blocking(move || store2.set_tag(&name, &desc))
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

    /// Downloads the layers of `resolved` (an image of `r`; bounded concurrency, present blobs
    /// skipped) and stores its config and manifest (bytes as served), without tagging anything.
    pub async fn store_resolved(
        &self,
        r: &Reference,
        store: &Store,
        resolved: &ResolvedImage,
    ) -> Result<(), RegistryError> {
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
        let (store2, rv) = (store.clone(), resolved.clone());
        let what = format!("pull {r}");
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            put_blob(&store2, &rv.config_bytes, &rv.manifest.config.digest)?;
            put_blob(&store2, &rv.manifest_bytes, &rv.manifest_digest)
        })
        .await
        .map_err(|e| RegistryError::Task {
            what: what.clone(),
            message: e.to_string(),
        })?
        .map_err(|source| RegistryError::Store { what, source })
    }
}

/// Stores `bytes` as the blob `digest` unless present (blocking).
pub(crate) fn put_blob(store: &Store, bytes: &[u8], digest: &Digest) -> Result<(), StoreError> {
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

/// Checks the size and digest of `bytes` against `desc`.
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

/// The media type from `Content-Type`, else from the document itself.
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

/// The manifest of `index` for `want` ([`Index::select`]: exact, else BuildKit's fallbacks).
fn select_platform<'a>(index: &'a Index, want: &Platform) -> Option<&'a Descriptor> {
    index.select(want)
}

/// `os/arch` or `os/arch/variant`.
pub(crate) fn platform_string(p: &Platform) -> String {
    p.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // arm64 takes the index's arm64/v8; arm/v6 does not take arm/v7.
        assert_eq!(
            select_platform(&index, &want("arm64", None))
                .unwrap()
                .digest,
            Digest::sha256_of(&[1])
        );
        assert!(select_platform(&index, &want("arm", Some("v6"))).is_none());
    }
}
