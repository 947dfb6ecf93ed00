//! `ADD <url>`: the HTTP source. Without a pinned checksum the cache key needs the content, so
//! the URL is fetched while computing the key (BuildKit re-fetches too and compares content);
//! the download is kept for the execution. With `--checksum` the key is the checksum and the
//! download happens only when the step runs, then is verified. The result is a snapshot on an
//! empty tree holding only `/<filename>`, mode 0600, mtime from `Last-Modified` when given.

use crate::{Value, WorkerError};
use rbuild_oci::Digest;
use rbuild_registry::{fetch_url, FetchedUrl, RegistryError};
use rbuild_snapshotter::Snapshotter;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Downloads made for cache keys, waiting for their vertex to run.
pub(crate) struct Downloads {
    fetched: Mutex<HashMap<Digest, (PathBuf, FetchedUrl)>>,
    counter: AtomicU64,
}

impl Downloads {
    pub(crate) fn new() -> Self {
        Downloads {
            fetched: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
        }
    }

    fn temp_path(&self, snapshotter: &Snapshotter) -> PathBuf {
        snapshotter.temp_dir().join(format!(
            "http-{}-{}",
            std::process::id(),
            self.counter.fetch_add(1, Ordering::Relaxed)
        ))
    }

    async fn fetch(
        &self,
        snapshotter: &Snapshotter,
        url: &str,
    ) -> Result<(PathBuf, FetchedUrl), WorkerError> {
        let path = self.temp_path(snapshotter);
        match fetch_url(url, &path).await {
            Ok(f) => Ok((path, f)),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e.into())
            }
        }
    }

    /// The cache key part of an HTTP source vertex `digest`: the pinned checksum, or the sha256
    /// of the content fetched now.
    pub(crate) async fn key_part(
        &self,
        snapshotter: &Snapshotter,
        digest: &Digest,
        url: &str,
        checksum: Option<&str>,
    ) -> Result<Vec<u8>, WorkerError> {
        if let Some(sum) = checksum {
            return Ok(sum.as_bytes().to_vec());
        }
        let (path, fetched) = self.fetch(snapshotter, url).await?;
        let part = fetched.digest.to_string().into_bytes();
        let old = self
            .fetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest.clone(), (path, fetched));
        if let Some((old_path, _)) = old {
            let _ = std::fs::remove_file(old_path);
        }
        Ok(part)
    }

    /// Runs an HTTP source vertex: the downloaded file as a one-file snapshot.
    pub(crate) async fn materialize(
        &self,
        snapshotter: &Snapshotter,
        digest: &Digest,
        url: &str,
        checksum: Option<&str>,
        filename: &str,
    ) -> Result<Value, WorkerError> {
        let taken = self
            .fetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(digest);
        let (path, fetched) = match taken {
            Some(t) => t,
            None => self.fetch(snapshotter, url).await?,
        };
        if let Some(sum) = checksum {
            let expected: Digest = match sum.parse() {
                Ok(d) => d,
                Err(_) => {
                    let _ = std::fs::remove_file(&path);
                    return Err(WorkerError::Graph(format!("invalid checksum {sum}")));
                }
            };
            if expected != fetched.digest {
                let _ = std::fs::remove_file(&path);
                return Err(RegistryError::DigestMismatch {
                    what: url.to_string(),
                    expected,
                    actual: fetched.digest,
                }
                .into());
            }
        }
        let snapshotter = snapshotter.clone();
        let filename = filename.to_string();
        tokio::task::spawn_blocking(move || {
            let result = place(&snapshotter, &path, &fetched, &filename);
            let _ = std::fs::remove_file(&path);
            result
        })
        .await
        .map_err(|e| WorkerError::Join(e.to_string()))?
    }
}

fn place(
    snapshotter: &Snapshotter,
    path: &Path,
    fetched: &FetchedUrl,
    filename: &str,
) -> Result<Value, WorkerError> {
    let active = snapshotter.prepare(None)?;
    let target = active.upperdir().join(filename);
    let io = |source: std::io::Error| WorkerError::File { op: "ADD", source };
    let placed = (|| {
        if std::fs::rename(path, &target).is_err() {
            std::fs::copy(path, &target)?;
        }
        std::os::unix::fs::lchown(&target, Some(0), Some(0))?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))?;
        if let Some(t) = fetched.last_modified {
            std::fs::File::options()
                .write(true)
                .open(&target)?
                .set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))?;
        }
        Ok(())
    })();
    match placed {
        Ok(()) => Ok(Value::Fs(Some(snapshotter.commit(active)?))),
        Err(e) => {
            let _ = snapshotter.abort(active);
            Err(io(e))
        }
    }
}

impl Drop for Downloads {
    fn drop(&mut self) {
        let map = self.fetched.get_mut().unwrap_or_else(|p| p.into_inner());
        for (path, _) in map.values() {
            let _ = std::fs::remove_file(path);
        }
    }
}
