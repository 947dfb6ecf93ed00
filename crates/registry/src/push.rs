//! The push side of the distribution protocol: blobs (skipped when present, cross-repo mounted when
//! another repository of the registry has them, else uploaded monolithically or in PATCH chunks),
//! bounded concurrency, retries, and the manifest last, byte for byte from the store.

use crate::call::Call;
use crate::status::status_error;
use crate::{Reference, RegistryClient, RegistryError};
use rbuild_oci::{Descriptor, Digest, Index, Manifest, MediaType, Store};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Options of [`RegistryClient::push`].
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Blobs uploaded at once.
    pub max_concurrent_uploads: usize,
    /// Blobs up to this size go in one PUT; larger ones in PATCH chunks.
    pub monolithic_limit: u64,
    /// The size of one PATCH chunk.
    pub chunk_size: u64,
    /// Repositories of the target registry that may hold a blob (`digest -> repositories`),
    /// tried as cross-repository mount sources. See [`mount_sources_from_store`].
    pub mount_sources: BTreeMap<Digest, Vec<String>>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            max_concurrent_uploads: 3,
            monolithic_limit: 16 << 20,
            chunk_size: 32 << 20,
            mount_sources: BTreeMap::new(),
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PushReport {
    /// The pushed manifest (or index) descriptor, digest as in the store.
    pub descriptor: Option<Descriptor>,
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Blobs already in the target repository (HEAD 200).
    pub existing: usize,
    /// Blobs mounted from another repository (POST ?mount= answered 201).
    pub mounted: usize,
    /// Bytes uploaded.
    pub uploaded_bytes: u64,
    /// `registry/repository:tag` (or `@digest`) of every manifest PUT.
    pub pushed: Vec<String>,
}

#[derive(Default)]
struct Counters {
    uploaded: AtomicUsize,
    existing: AtomicUsize,
    mounted: AtomicUsize,
    bytes: AtomicU64,
}

/// What every blob upload to one repository shares: the store holding the blobs, the target
/// repository, the push options and the run's counters.
#[derive(Clone)]
struct BlobJob {
    store: Store,
    repo: Reference,
    opts: PushOptions,
    counters: Arc<Counters>,
}

/// Mount sources from the store's tags: for every tagged image of `registry`, its blobs map to
/// its repository (base images pulled from the registry, earlier pushes).
pub fn mount_sources_from_store(store: &Store, registry: &str) -> BTreeMap<Digest, Vec<String>> {
    let mut out: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
    let Ok(tags) = store.tags() else {
        return out;
    };
    for tag in tags {
        let Ok(r) = Reference::parse(&tag.name) else {
            continue;
        };
        if r.registry != registry {
            continue;
        }
        let Ok(blobs) = image_parts(store, &tag.descriptor) else {
            continue;
        };
        for d in blobs.blobs.keys() {
            let v = out.entry(d.clone()).or_default();
            if !v.contains(&r.repository) {
                v.push(r.repository.clone());
            }
        }
    }
    out
}

/// Blobs (digest -> size) and manifests (children before the top one) of an image in the store.
struct ImageParts {
    blobs: BTreeMap<Digest, u64>,
    /// `(descriptor, bytes)`; the last one is the top.
    manifests: Vec<(Descriptor, Vec<u8>)>,
}

fn image_parts(store: &Store, top: &Descriptor) -> Result<ImageParts, RegistryError> {
    let what = format!("image {}", top.digest);
    let read = |d: &Digest| {
        store.read_blob(d).map_err(|source| RegistryError::Store {
            what: what.clone(),
            source,
        })
    };
    let json_err = |w: &str, source| RegistryError::InvalidJson {
        what: format!("{w} {}", top.digest),
        source,
    };
    let mut parts = ImageParts {
        blobs: BTreeMap::new(),
        manifests: Vec::new(),
    };
    let bytes = read(&top.digest)?;
    let add_manifest = |desc: &Descriptor, bytes: Vec<u8>, parts: &mut ImageParts| {
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| json_err("manifest", e))?;
        parts.blobs.insert(m.config.digest.clone(), m.config.size);
        for l in &m.layers {
            parts.blobs.insert(l.digest.clone(), l.size);
        }
        parts.manifests.push((desc.clone(), bytes));
        Ok::<(), RegistryError>(())
    };
    if top.media_type.is_index() {
        let index: Index = serde_json::from_slice(&bytes).map_err(|e| json_err("index", e))?;
        for child in &index.manifests {
            if !child.media_type.is_manifest() {
                return Err(RegistryError::UnsupportedMediaType {
                    reference: what.clone(),
                    media_type: child.media_type.0.clone(),
                });
            }
            let cb = read(&child.digest)?;
            add_manifest(child, cb, &mut parts)?;
        }
        parts.manifests.push((top.clone(), bytes));
    } else {
        add_manifest(top, bytes, &mut parts)?;
    }
    Ok(parts)
}

impl RegistryClient {
    /// Pushes the image `manifest` (a manifest or an index, from `store`) to every target: blobs
    /// first (per repository: HEAD, else mount, else upload; bounded concurrency; retried), then the
    /// manifest bytes exactly as stored, so the registry's digest is the store's. Targets in the
    /// same repository share the blob work; a later repository mounts from an earlier one.
    pub async fn push(
        &self,
        store: &Store,
        manifest: &Descriptor,
        targets: &[Reference],
        opts: &PushOptions,
    ) -> Result<PushReport, RegistryError> {
        let started = std::time::Instant::now();
        let parts = {
            let (store, top) = (store.clone(), manifest.clone());
            tokio::task::spawn_blocking(move || image_parts(&store, &top))
                .await
                .map_err(|e| RegistryError::Task {
                    what: format!("push {}", manifest.digest),
                    message: e.to_string(),
                })??
        };
        let counters = Arc::new(Counters::default());
        let mut report = PushReport {
            descriptor: Some(manifest.clone()),
            ..Default::default()
        };
        let mut mount_sources = opts.mount_sources.clone();
        // Group the targets by repository, keeping their order.
        let mut repos: Vec<(Reference, Vec<Reference>)> = Vec::new();
        for t in targets {
            match repos
                .iter_mut()
                .find(|(r, _)| r.registry == t.registry && r.repository == t.repository)
            {
                Some((_, v)) => v.push(t.clone()),
                None => repos.push((t.clone(), vec![t.clone()])),
            }
        }
        let mut done_repos: Vec<(String, String)> = Vec::new();
        for (repo, tags) in &repos {
            // Repositories pushed earlier in this run are mount sources too.
            let mut sources = mount_sources.clone();
            for (reg, name) in &done_repos {
                if *reg == repo.registry {
                    for d in parts.blobs.keys() {
                        sources
                            .entry(d.clone())
                            .or_default()
                            .insert(0, name.clone());
                    }
                }
            }
            let job = BlobJob {
                store: store.clone(),
                repo: repo.clone(),
                opts: opts.clone(),
                counters: counters.clone(),
            };
            self.push_blobs(&job, &parts.blobs, &sources).await?;
            for (desc, bytes) in &parts.manifests[..parts.manifests.len() - 1] {
                self.put_manifest(repo, &desc.digest.to_string(), desc, bytes)
                    .await?;
            }
            let (top_desc, top_bytes) = parts.manifests.last().expect("a top manifest");
            for t in tags {
                let reference = t.tag.clone().unwrap_or_else(|| top_desc.digest.to_string());
                if let Some(d) = &t.digest {
                    if *d != top_desc.digest {
                        return Err(RegistryError::PushedDigestMismatch {
                            what: format!("push {t}"),
                            expected: d.clone(),
                            actual: top_desc.digest.to_string(),
                        });
                    }
                }
                self.put_manifest(t, &reference, top_desc, top_bytes)
                    .await?;
                report.pushed.push(match &t.tag {
                    Some(tag) => format!("{}:{tag}", t.name()),
                    None => format!("{}@{}", t.name(), top_desc.digest),
                });
            }
            done_repos.push((repo.registry.clone(), repo.repository.clone()));
            for d in parts.blobs.keys() {
                let v = mount_sources.entry(d.clone()).or_default();
                if !v.contains(&repo.repository) {
                    v.insert(0, repo.repository.clone());
                }
            }
        }
        report.uploaded = counters.uploaded.load(Ordering::Relaxed);
        report.existing = counters.existing.load(Ordering::Relaxed);
        report.mounted = counters.mounted.load(Ordering::Relaxed);
        report.uploaded_bytes = counters.bytes.load(Ordering::Relaxed);
        tracing::debug!(
            manifest = %manifest.digest,
            uploaded = report.uploaded,
            existing = report.existing,
            mounted = report.mounted,
            uploaded_bytes = report.uploaded_bytes,
            push_time = ?started.elapsed(),
            "pushed"
        );
        Ok(report)
    }

    async fn push_blobs(
        &self,
        job: &BlobJob,
        blobs: &BTreeMap<Digest, u64>,
        sources: &BTreeMap<Digest, Vec<String>>,
    ) -> Result<(), RegistryError> {
        let sem = Arc::new(tokio::sync::Semaphore::new(
            job.opts.max_concurrent_uploads.max(1),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        // Largest first, so the long uploads start early.
        let mut order: Vec<(&Digest, &u64)> = blobs.iter().collect();
        order.sort_by(|a, b| b.1.cmp(a.1));
        for (digest, size) in order {
            let (client, job, sem) = (self.clone(), job.clone(), sem.clone());
            let (digest, size) = (digest.clone(), *size);
            let srcs: Vec<String> = sources
                .get(&digest)
                .map(|v| {
                    v.iter()
                        .filter(|s| **s != job.repo.repository)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            tasks.spawn(async move {
                let _permit = sem.acquire_owned().await.expect("semaphore never closed");
                client.push_blob(&job, &digest, size, &srcs).await
            });
        }
        while let Some(res) = tasks.join_next().await {
            res.map_err(|e| RegistryError::Task {
                what: format!("push to {}", job.repo.name()),
                message: e.to_string(),
            })??;
        }
        Ok(())
    }

    async fn push_blob(
        &self,
        job: &BlobJob,
        digest: &Digest,
        size: u64,
        sources: &[String],
    ) -> Result<(), RegistryError> {
        let (repo, counters) = (&job.repo, &job.counters);
        let what = format!("blob {digest} to {}", repo.name());
        let push_scope = format!("repository:{}:pull,push", repo.repository);
        let call = Call {
            r: repo,
            scopes: vec![push_scope.clone()],
            what: what.clone(),
            replayable: true,
            push: true,
            upload: false,
        };
        // HEAD: already there?
        let url = self.url(repo, &format!("blobs/{digest}"));
        let resp = self.execute(&call, &|h| h.head(&url)).await?;
        match resp.status() {
            s if s.is_success() => {
                counters.existing.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            StatusCode::NOT_FOUND => {}
            _ => return Err(status_error(&call, &url, resp).await),
        }
        // Cross-repository mount: the token must cover the source's pull scope too.
        let mut session: Option<String> = None;
        for src in sources.iter().take(3) {
            let mcall = Call {
                r: repo,
                scopes: vec![push_scope.clone(), format!("repository:{src}:pull")],
                what: what.clone(),
                replayable: true,
                push: true,
                upload: false,
            };
            let url = self.url(repo, "blobs/uploads/");
            let query = [("mount", digest.to_string()), ("from", src.clone())];
            let resp = self
                .execute(&mcall, &|h| {
                    h.post(&url).query(&query).header(CONTENT_LENGTH, "0")
                })
                .await?;
            match resp.status() {
                StatusCode::CREATED => {
                    counters.mounted.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                StatusCode::ACCEPTED => {
                    // Not mountable from there; the registry opened an upload session instead.
                    session = location(&resp, &url);
                    break;
                }
                _ => {} // e.g. 401/404 for the source: try the next, then upload
            }
        }
        // Upload, restarting the whole blob on retryable failures.
        let mut attempt = 0u32;
        loop {
            let res = self
                .upload_blob(job, &call, digest, size, session.take())
                .await;
            match res {
                Ok(()) => {
                    counters.uploaded.fetch_add(1, Ordering::Relaxed);
                    counters.bytes.fetch_add(size, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) if e.is_retryable() && attempt < self.max_retries() => {
                    tokio::time::sleep(self.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn upload_blob(
        &self,
        job: &BlobJob,
        call: &Call<'_>,
        digest: &Digest,
        size: u64,
        session: Option<String>,
    ) -> Result<(), RegistryError> {
        let (store, opts) = (&job.store, &job.opts);
        let start_url = self.url(call.r, "blobs/uploads/");
        let mut loc = match session {
            Some(l) => l,
            None => {
                let resp = self
                    .execute(call, &|h| h.post(&start_url).header(CONTENT_LENGTH, "0"))
                    .await?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(status_error(call, &start_url, resp).await);
                }
                location(&resp, &start_url).ok_or_else(|| RegistryError::Http {
                    what: call.what.clone(),
                    status: "202 Accepted without Location".into(),
                    url: start_url.clone(),
                    detail: String::new(),
                })?
            }
        };
        let once = Call {
            r: call.r,
            scopes: call.scopes.clone(),
            what: call.what.clone(),
            replayable: false,
            push: true,
            upload: true,
        };
        let mut body = Vec::new();
        if size <= opts.monolithic_limit {
            body = read_range(store, digest, 0, size).await?;
        } else {
            let chunk = opts.chunk_size.max(1);
            // The next chunk is read from disk while the current one is sent.
            let prefetch = |offset: u64| {
                let (store, digest) = (store.clone(), digest.clone());
                let len = chunk.min(size - offset);
                tokio::spawn(async move { read_range(&store, &digest, offset, len).await })
            };
            let mut next = Some(prefetch(0));
            let mut offset = 0u64;
            while offset < size {
                let len = chunk.min(size - offset);
                let data = next
                    .take()
                    .expect("a chunk read is pending")
                    .await
                    .map_err(|e| RegistryError::Task {
                        what: call.what.clone(),
                        message: e.to_string(),
                    })??;
                if offset + len < size {
                    next = Some(prefetch(offset + len));
                }
                let range = format!("{}-{}", offset, offset + len - 1);
                let url = loc.clone();
                let data = bytes::Bytes::from(data);
                let resp = self
                    .execute(&once, &|h| {
                        h.patch(&url)
                            .header(CONTENT_TYPE, "application/octet-stream")
                            .header(CONTENT_RANGE, range.as_str())
                            .header(CONTENT_LENGTH, len.to_string())
                            .body(data.clone())
                    })
                    .await?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(status_error(&once, &url, resp).await);
                }
                loc = location(&resp, &url).unwrap_or(url);
                offset += len;
                if offset < size {
                    self.report_transfer(crate::BlobProgress {
                        digest: digest.clone(),
                        done: offset,
                        total: size,
                    });
                }
            }
        }
        let mut put_url = reqwest::Url::parse(&loc).map_err(|e| RegistryError::Http {
            what: call.what.clone(),
            status: format!("bad upload Location: {e}"),
            url: loc.clone(),
            detail: String::new(),
        })?;
        put_url
            .query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let body = bytes::Bytes::from(body);
        let blen = body.len();
        let resp = self
            .execute(&once, &|h| {
                h.put(put_url.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, blen.to_string())
                    .body(body.clone())
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(status_error(&once, put_url.as_str(), resp).await);
        }
        self.report_transfer(crate::BlobProgress {
            digest: digest.clone(),
            done: size,
            total: size,
        });
        Ok(())
    }

    /// PUTs a manifest by tag or digest, exactly these bytes; checks `Docker-Content-Digest`.
    async fn put_manifest(
        &self,
        target: &Reference,
        reference: &str,
        desc: &Descriptor,
        bytes: &[u8],
    ) -> Result<(), RegistryError> {
        let what = format!("manifest {}:{reference}", target.name());
        let call = Call {
            r: target,
            scopes: vec![format!("repository:{}:pull,push", target.repository)],
            what: what.clone(),
            replayable: true,
            push: true,
            upload: false,
        };
        let url = self.url(target, &format!("manifests/{reference}"));
        let media_type = if desc.media_type.0.is_empty() {
            MediaType::OCI_MANIFEST.to_string()
        } else {
            desc.media_type.0.clone()
        };
        let body = bytes::Bytes::copy_from_slice(bytes);
        let resp = self
            .execute(&call, &|h| {
                h.put(&url)
                    .header(CONTENT_TYPE, media_type.as_str())
                    .body(body.clone())
            })
            .await?;
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            return Err(status_error(&call, &url, resp).await);
        }
        if let Some(served) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            if served != desc.digest.to_string() {
                return Err(RegistryError::PushedDigestMismatch {
                    what,
                    expected: desc.digest.clone(),
                    actual: served.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// The `Location` of a response, resolved against the request URL.
fn location(resp: &reqwest::Response, base: &str) -> Option<String> {
    let l = resp.headers().get(LOCATION)?.to_str().ok()?;
    let base = reqwest::Url::parse(base).ok()?;
    base.join(l).ok().map(|u| u.to_string())
}

async fn read_range(
    store: &Store,
    digest: &Digest,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, RegistryError> {
    let (store, d) = (store.clone(), digest.clone());
    let what = format!("blob {digest}");
    tokio::task::spawn_blocking(move || -> Result<Vec<u8>, RegistryError> {
        let serr = |source| RegistryError::Store {
            what: format!("blob {d}"),
            source,
        };
        let mut f = store.open_blob(&d).map_err(serr)?;
        let ioerr = |e: std::io::Error| RegistryError::Store {
            what: format!("blob {d}"),
            source: rbuild_oci::StoreError::Io {
                action: "read",
                path: store.blob_path(&d),
                source: e,
            },
        };
        f.seek(SeekFrom::Start(offset)).map_err(ioerr)?;
        let mut buf = Vec::with_capacity(len as usize);
        f.take(len).read_to_end(&mut buf).map_err(ioerr)?;
        if buf.len() as u64 != len {
            return Err(RegistryError::SizeMismatch {
                what: format!("blob {d} in the store"),
                expected: offset + len,
                actual: offset + buf.len() as u64,
            });
        }
        Ok(buf)
    })
    .await
    .map_err(|e| RegistryError::Task {
        what,
        message: e.to_string(),
    })?
}

/// Every repository name in `sources` (for messages and tests).
pub fn source_repositories(sources: &BTreeMap<Digest, Vec<String>>) -> BTreeSet<String> {
    sources.values().flatten().cloned().collect()
}
