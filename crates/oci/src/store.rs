//! The local content store: an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/`)
//! written only through temp files and rename, so a crash never leaves a half-written blob
//! under its final name. Configs, manifests, indexes and every JSON file are fsynced before the
//! rename; layer data ([`Store::layer_blob_writer`]) is not: it leaves a boot-id marker in
//! `rbuild-unsynced-v1/<hex>` instead (module [`crate::durable`]), and a blob whose marker names
//! another boot counts as missing, so the exporter makes it again from its snapshot. Several processes may use one store at once: each writes its temp files
//! in its own `tmp/blobs/<owner>/` (guarded by an [`OwnerLock`], so an open sweeps only dead
//! owners' leftovers), and `index.json` is read, modified and replaced under an exclusive `flock`
//! on `index.lock`, so concurrent tags are never lost.

use crate::direct::{BlobFile, DirectFile};
use crate::durable;
use crate::lock::{lock_exclusive, sweep_dead, OwnerLock, WaitReporter};
use crate::{
    Descriptor, Digest, ImageConfig, Index, Manifest, MediaType, Sha256Writer,
    ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Errors of the content store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{action} `{path}`")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A blob's content does not match its digest.
    #[error("blob digest mismatch: expected `{expected}`, got `{actual}`")]
    DigestMismatch {
        /// The digest that was asked for.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// A blob is missing.
    #[error("blob `{0}` is not in the store")]
    MissingBlob(Digest),
    /// A tag is missing.
    #[error("image `{0}` is not in the store")]
    UnknownTag(String),
    /// JSON (de)serialisation failed.
    #[error("invalid JSON in `{what}`")]
    Json {
        /// Which document.
        what: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Serialises `value` to compact JSON with every object's keys sorted (byte-stable digests).
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    fn sort(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let sorted: BTreeMap<String, serde_json::Value> =
                    map.into_iter().map(|(k, v)| (k, sort(v))).collect();
                let mut out = serde_json::Map::new();
                for (k, v) in sorted {
                    out.insert(k, v);
                }
                serde_json::Value::Object(out)
            }
            serde_json::Value::Array(a) => {
                serde_json::Value::Array(a.into_iter().map(sort).collect())
            }
            other => other,
        }
    }
    serde_json::to_vec(&sort(serde_json::to_value(value)?))
}

/// One tag of the store.
#[derive(Debug, Clone)]
pub struct TagEntry {
    /// The image name, e.g. `myapp:latest`.
    pub name: String,
    /// The manifest descriptor.
    pub descriptor: Descriptor,
}

/// A manifest with its parsed config.
#[derive(Debug, Clone)]
pub struct ImageRecord {
    /// Digest of the manifest blob.
    pub manifest_digest: Digest,
    /// The manifest.
    pub manifest: Manifest,
    /// The config.
    pub config: ImageConfig,
}

/// The content store rooted at one directory. Cheap to clone (clones share one temp dir).
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    inner: Arc<StoreInner>,
}

#[derive(Debug)]
struct StoreInner {
    /// `tmp/blobs/<owner>`: this store's temp files.
    tmp: PathBuf,
    owner: OwnerLock,
    reporter: Option<WaitReporter>,
}

impl Drop for StoreInner {
    fn drop(&mut self) {
        // Runs before the owner lock is released, so no sweeper races with it.
        let _ = fs::remove_dir_all(&self.tmp);
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The store's temp files under its root: `tmp/blobs/<owner>/` per live store. Other users of a
/// root's `tmp/` (e.g. the build library's `tmp/build/`) keep out of these names.
pub const STORE_TMP_DIR: &str = "tmp/blobs";
/// The owner locks of the store's temp dirs under its root.
pub const STORE_OWNERS_DIR: &str = "tmp/owners";
/// The boot-id markers of layer blobs published without an fsync: `<dir>/<hex>` per blob.
pub const UNSYNCED_DIR: &str = "rbuild-unsynced-v1";

impl Store {
    /// Opens (creating if needed) the layout at `root`, sweeping temp files that dead processes
    /// left (never those of a live one).
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        Self::open_with_reporter(root, None)
    }

    /// [`Store::open`] with a callback told when a lock wait (another process updating
    /// `index.json`) lasts over a second.
    pub fn open_with_reporter(
        root: &Path,
        reporter: Option<WaitReporter>,
    ) -> Result<Store, StoreError> {
        let blobs = root.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(io_err("create", &blobs))?;
        let unsynced = root.join(UNSYNCED_DIR);
        fs::create_dir_all(&unsynced).map_err(io_err("create", &unsynced))?;
        let tmp_root = root.join(STORE_TMP_DIR);
        let owners = root.join(STORE_OWNERS_DIR);
        fs::create_dir_all(&tmp_root).map_err(io_err("create", &tmp_root))?;
        sweep_dead(&owners, std::slice::from_ref(&tmp_root))
            .and_then(|sweep| sweep.finish())
            .map_err(io_err("sweep", &tmp_root))?;
        let owner = OwnerLock::acquire(&owners).map_err(io_err("lock", &owners))?;
        let tmp = tmp_root.join(owner.name());
        fs::create_dir_all(&tmp).map_err(io_err("create", &tmp))?;
        let store = Store {
            root: root.to_path_buf(),
            inner: Arc::new(StoreInner {
                tmp,
                owner,
                reporter,
            }),
        };
        let layout = root.join("oci-layout");
        if !layout.exists() {
            store.create_file_if_absent(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = root.join("index.json");
        if !index.exists() {
            let bytes = canonical_json(&Index::empty()).map_err(|source| StoreError::Json {
                what: "index.json".into(),
                source,
            })?;
            store.create_file_if_absent(&index, &bytes)?;
        }
        // Markers earlier processes left, old enough that the kernel has written their data
        // back already: cleared now, before this process writes anything, by one `syncfs` when
        // little is dirty (`durable::syncfs_when_clean`); otherwise they wait for a later open.
        let _ = sweep_markers(root, durable::SWEEP_MIN_AGE, durable::syncfs_when_clean);
        Ok(store)
    }

    /// Where the boot-id marker of an unsynced layer blob lives.
    pub fn marker_path(&self, digest: &Digest) -> PathBuf {
        self.root.join(UNSYNCED_DIR).join(digest.hex())
    }

    /// False when the blob's marker names another boot (or is unreadable): an OS crash may
    /// have cut it short, so it counts as missing.
    fn blob_durable(&self, digest: &Digest) -> bool {
        durable::marker_ok(&self.marker_path(digest))
    }

    /// Clears the markers of this boot at least `min_age` old whose blobs a `syncfs` then
    /// covered (a blob replaced meanwhile keeps its marker); returns how many went. Runs in the
    /// background at every open with [`durable::SWEEP_MIN_AGE`]; `rbuild prune` may call it with
    /// zero.
    pub fn sweep_unsynced(&self, min_age: std::time::Duration) -> Result<usize, StoreError> {
        sweep_markers(&self.root, min_age, durable::syncfs)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// True when the blob exists (and no OS crash may have cut it short: see [`crate::durable`]).
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).exists() && self.blob_durable(digest)
    }

    /// Reads a whole blob.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        if !self.blob_durable(digest) {
            return Err(StoreError::MissingBlob(digest.clone()));
        }
        fs::read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::MissingBlob(digest.clone())
            } else {
                StoreError::Io {
                    action: "read",
                    path,
                    source: e,
                }
            }
        })
    }

    /// Opens a blob for streaming reads.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, StoreError> {
        let path = self.blob_path(digest);
        if !self.blob_durable(digest) {
            return Err(StoreError::MissingBlob(digest.clone()));
        }
        File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::MissingBlob(digest.clone())
            } else {
                StoreError::Io {
                    action: "open",
                    path,
                    source: e,
                }
            }
        })
    }

    /// Writes a blob atomically and returns its descriptor parts.
    pub fn write_blob(&self, data: &[u8]) -> Result<(Digest, u64), StoreError> {
        let mut w = self.blob_writer()?;
        w.write_all(data).map_err(io_err("write", &self.root))?;
        w.commit(None)
    }

    /// Serialises `value` canonically and stores it as a blob.
    pub fn write_json_blob<T: Serialize>(
        &self,
        value: &T,
    ) -> Result<(Digest, u64, Vec<u8>), StoreError> {
        let bytes = canonical_json(value).map_err(|source| StoreError::Json {
            what: "blob".into(),
            source,
        })?;
        let (d, n) = self.write_blob(&bytes)?;
        Ok((d, n, bytes))
    }

    /// A new, unique temp path inside the store (same filesystem; in this process's own temp
    /// dir, removed when the last clone of the store drops or, after a crash, by a later open).
    pub fn temp_path(&self, hint: &str) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.inner.tmp.join(format!("{hint}-{n}"))
    }

    /// The callback this store reports long lock waits to (also used by the worker for the
    /// locks of `RUN --mount=type=cache,sharing=locked`).
    pub fn wait_reporter(&self) -> Option<&WaitReporter> {
        self.inner.reporter.as_ref()
    }

    /// The owner name of this store's temp dir (`tmp/blobs/<owner>`).
    pub fn owner(&self) -> &str {
        self.inner.owner.name()
    }

    /// Starts a streaming blob write; call [`BlobWriter::commit`] to publish it (fsynced).
    pub fn blob_writer(&self) -> Result<BlobWriter, StoreError> {
        self.new_writer(false)
    }

    /// Starts a streaming write of layer data, published without an fsync: [`BlobWriter::commit`]
    /// leaves a boot-id marker instead, and after an OS crash the blob counts as missing, to be
    /// made again from its snapshot. Only for blobs that can be made again.
    pub fn layer_blob_writer(&self) -> Result<BlobWriter, StoreError> {
        self.new_writer(durable::boot_id().is_some())
    }

    fn new_writer(&self, unsynced: bool) -> Result<BlobWriter, StoreError> {
        let path = self.temp_path("blob");
        let file = if unsynced {
            BlobFile::Direct(DirectFile::create(&path).map_err(io_err("create", &path))?)
        } else {
            let file = File::create(&path).map_err(io_err("create", &path))?;
            BlobFile::Buffered(io::BufWriter::with_capacity(1 << 20, file))
        };
        Ok(BlobWriter {
            store: self.clone(),
            tmp: path,
            unsynced,
            inner: Some(Sha256Writer::new(file)),
        })
    }

    fn write_temp(&self, data: &[u8]) -> Result<PathBuf, StoreError> {
        let tmp = self.temp_path("file");
        let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(data).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
        Ok(tmp)
    }

    pub(crate) fn write_file_atomic(&self, path: &Path, data: &[u8]) -> Result<(), StoreError> {
        let tmp = self.write_temp(data)?;
        fs::rename(&tmp, path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err("rename", path)(e)
        })
    }

    /// Publishes `data` at `path` only if nothing is there yet (a hard link fails on an existing
    /// name), so two processes creating a fresh store cannot replace each other's `index.json`.
    fn create_file_if_absent(&self, path: &Path, data: &[u8]) -> Result<(), StoreError> {
        let tmp = self.write_temp(data)?;
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io_err("create", path)(e)),
        }
    }

    fn lock_index(&self) -> Result<File, StoreError> {
        let path = self.root.join("index.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        lock_exclusive(&f, &path, &self.root, self.inner.reporter.as_ref())
            .map_err(io_err("lock", &path))?;
        Ok(f)
    }

    /// Reads `index.json`.
    pub fn index(&self) -> Result<Index, StoreError> {
        let path = self.root.join("index.json");
        let bytes = fs::read(&path).map_err(io_err("read", &path))?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
            what: path.display().to_string(),
            source,
        })
    }

    /// Points tag `name` at `descriptor` (a manifest already in the store), replacing an older entry.
    pub fn set_tag(&self, name: &str, descriptor: &Descriptor) -> Result<(), StoreError> {
        let _lock = self.lock_index()?;
        let mut index = self.index()?;
        index.manifests.retain(|d| ref_name(d) != Some(name));
        let mut desc = descriptor.clone();
        desc.platform = None;
        let mut ann = BTreeMap::new();
        ann.insert(ANNOTATION_REF_NAME.to_string(), name.to_string());
        ann.insert(ANNOTATION_IMAGE_NAME.to_string(), name.to_string());
        desc.annotations = Some(ann);
        index.manifests.push(desc);
        let bytes = canonical_json(&index).map_err(|source| StoreError::Json {
            what: "index.json".into(),
            source,
        })?;
        self.write_file_atomic(&self.root.join("index.json"), &bytes)
    }

    /// Removes the tags in `names` (nothing else: the blobs stay for garbage collection) and
    /// returns the ones that were there.
    pub fn remove_tags(&self, names: &[String]) -> Result<Vec<String>, StoreError> {
        let _lock = self.lock_index()?;
        let mut index = self.index()?;
        let mut removed = Vec::new();
        index.manifests.retain(|d| match ref_name(d) {
            Some(n) if names.iter().any(|x| x == n) => {
                removed.push(n.to_string());
                false
            }
            _ => true,
        });
        if removed.is_empty() {
            return Ok(removed);
        }
        let bytes = canonical_json(&index).map_err(|source| StoreError::Json {
            what: "index.json".into(),
            source,
        })?;
        self.write_file_atomic(&self.root.join("index.json"), &bytes)?;
        Ok(removed)
    }

    /// Lists the tags.
    pub fn tags(&self) -> Result<Vec<TagEntry>, StoreError> {
        Ok(self
            .index()?
            .manifests
            .into_iter()
            .filter_map(|d| {
                ref_name(&d).map(|n| TagEntry {
                    name: n.to_string(),
                    descriptor: d.clone(),
                })
            })
            .collect())
    }

    /// Finds a tag.
    pub fn resolve_tag(&self, name: &str) -> Result<Option<Descriptor>, StoreError> {
        Ok(self
            .tags()?
            .into_iter()
            .find(|t| t.name == name)
            .map(|t| t.descriptor))
    }

    /// Reads a manifest and its config from the store.
    pub fn read_image(&self, manifest_digest: &Digest) -> Result<ImageRecord, StoreError> {
        let bytes = self.read_blob(manifest_digest)?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
                what: format!("manifest {manifest_digest}"),
                source,
            })?;
        let cbytes = self.read_blob(&manifest.config.digest)?;
        let config: ImageConfig =
            serde_json::from_slice(&cbytes).map_err(|source| StoreError::Json {
                what: format!("config {}", manifest.config.digest),
                source,
            })?;
        Ok(ImageRecord {
            manifest_digest: manifest_digest.clone(),
            manifest,
            config,
        })
    }

    /// Stores a config and a manifest over `layers` (already stored) and returns the manifest descriptor.
    pub fn write_image(
        &self,
        config: &ImageConfig,
        layers: Vec<Descriptor>,
    ) -> Result<(Descriptor, Manifest), StoreError> {
        self.write_image_annotated(config, layers, None)
    }

    /// [`Store::write_image`] with `annotations` on the manifest (`--annotation`).
    pub fn write_image_annotated(
        &self,
        config: &ImageConfig,
        layers: Vec<Descriptor>,
        annotations: Option<BTreeMap<String, String>>,
    ) -> Result<(Descriptor, Manifest), StoreError> {
        let (cdigest, csize, _) = self.write_json_blob(config)?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MediaType::new(MediaType::OCI_MANIFEST)),
            config: Descriptor {
                media_type: MediaType::new(MediaType::OCI_CONFIG),
                digest: cdigest,
                size: csize,
                platform: None,
                annotations: None,
            },
            layers,
            annotations,
        };
        let (mdigest, msize, _) = self.write_json_blob(&manifest)?;
        let desc = Descriptor {
            media_type: MediaType::new(MediaType::OCI_MANIFEST),
            digest: mdigest,
            size: msize,
            platform: Some(crate::Platform {
                architecture: config.architecture.clone(),
                os: config.os.clone(),
                variant: config.variant.clone(),
                os_version: None,
            }),
            annotations: None,
        };
        Ok((desc, manifest))
    }
}

/// [`Store::sweep_unsynced`] for the store at `root`.
/// Removes the file at `path`; one that is already gone is not an error.
pub(crate) fn remove_if_present(path: PathBuf) -> Result<(), StoreError> {
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Io {
            action: "remove",
            path,
            source,
        }),
    }
}

fn sweep_markers(
    root: &Path,
    min_age: std::time::Duration,
    sync: fn(&Path) -> io::Result<()>,
) -> Result<usize, StoreError> {
    use std::os::unix::fs::MetadataExt;
    let dir = root.join(UNSYNCED_DIR);
    let blob_path = |d: &Digest| root.join("blobs/sha256").join(d.hex());
    let inode = |p: &Path| fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let mut candidates = Vec::new();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err("read dir", &dir)(e)),
    };
    for entry in entries.flatten() {
        let Ok(digest) = Digest::from_hex(&entry.file_name().to_string_lossy()) else {
            continue;
        };
        let marker = entry.path();
        if !durable::is_current_marker(&marker, min_age) {
            continue;
        }
        // The blob as it is before the sync; a blob file is never changed in place.
        if let Some(ino) = inode(&blob_path(&digest)) {
            candidates.push((marker, (digest, ino)));
        }
    }
    durable::sweep(
        candidates,
        || sync(&dir),
        |_, (digest, ino)| inode(&blob_path(digest)) == Some(*ino),
    )
    .map_err(io_err("syncfs", &dir))
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations
        .as_ref()?
        .get(ANNOTATION_REF_NAME)
        .map(String::as_str)
}

/// A blob being written: hashed as it streams into a temp file, published by [`BlobWriter::commit`].
pub struct BlobWriter {
    store: Store,
    tmp: PathBuf,
    /// Published without an fsync, behind a boot-id marker.
    unsynced: bool,
    inner: Option<Sha256Writer<BlobFile>>,
}

impl BlobWriter {
    /// Flushes, fsyncs (unless made by [`Store::layer_blob_writer`]: then writes the boot-id
    /// marker) and renames the blob into place; fails (and stores nothing) when `expected`
    /// differs.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<(Digest, u64), StoreError> {
        let Some(w) = self.inner.take() else {
            return Err(StoreError::Io {
                action: "commit",
                path: self.tmp.clone(),
                source: io::Error::other("already committed"),
            });
        };
        let (digest, len, buf) = w.finish();
        let file = buf.finish().map_err(|source| StoreError::Io {
            action: "flush",
            path: self.tmp.clone(),
            source,
        })?;
        if let Some(exp) = expected {
            if *exp != digest {
                let _ = fs::remove_file(&self.tmp);
                return Err(StoreError::DigestMismatch {
                    expected: exp.clone(),
                    actual: digest,
                });
            }
        }
        let dest = self.store.blob_path(&digest);
        let marker = self.store.marker_path(&digest);
        if let (true, Some(boot)) = (self.unsynced, durable::boot_id()) {
            drop(file);
            if self.store.has_blob(&digest) {
                // Already there (synced, or unsynced in this boot): keep that one, so a synced
                // blob never gains a marker and a sweep's blob never changes under it.
                let _ = fs::remove_file(&self.tmp);
                return Ok((digest, len));
            }
            // A copy an OS crash may have cut short goes before the new marker makes it count.
            match fs::remove_file(&dest) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &dest)(e)),
            }
            durable::write_marker(&marker, boot).map_err(io_err("write", &marker))?;
        } else {
            file.sync_all().map_err(io_err("fsync", &self.tmp))?;
        }
        fs::rename(&self.tmp, &dest).map_err(io_err("rename", &dest))?;
        if !self.unsynced {
            // Synced now: a marker an unsynced copy left no longer applies.
            match fs::remove_file(&marker) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &marker)(e)),
            }
        }
        Ok((digest, len))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.inner.as_mut() {
            Some(w) => w.write(buf),
            None => Err(io::Error::other("blob writer already committed")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.inner.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.inner.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Copies all of `reader` into a new blob, verifying it against `expected`.
pub fn copy_into_store(
    store: &Store,
    reader: &mut dyn Read,
    expected: Option<&Digest>,
) -> Result<(Digest, u64), StoreError> {
    let mut w = store.blob_writer()?;
    io::copy(reader, &mut w).map_err(io_err("copy", store.root()))?;
    w.commit(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_tags_and_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (d, n) = store.write_blob(b"hello").unwrap();
        assert_eq!(n, 5);
        assert_eq!(store.read_blob(&d).unwrap(), b"hello");
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"other").unwrap();
        assert!(matches!(
            w.commit(Some(&d)),
            Err(StoreError::DigestMismatch { .. })
        ));
        assert_eq!(
            fs::read_dir(dir.path().join("tmp/blobs").join(store.owner()))
                .unwrap()
                .count(),
            0
        );
        let cfg = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            ..Default::default()
        };
        let (desc, _) = store.write_image(&cfg, vec![]).unwrap();
        store.set_tag("a:1", &desc).unwrap();
        store.set_tag("a:1", &desc).unwrap();
        store.set_tag("b:2", &desc).unwrap();
        let tags = store.tags().unwrap();
        assert_eq!(tags.len(), 2);
        let rec = store
            .read_image(&store.resolve_tag("a:1").unwrap().unwrap().digest)
            .unwrap();
        assert_eq!(rec.config.os, "linux");
    }

    #[test]
    fn concurrent_opens_and_tags_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let threads: Vec<_> = (0..6)
            .map(|i| {
                let root = root.clone();
                std::thread::spawn(move || {
                    let store = Store::open(&root).unwrap();
                    let mut w = store.blob_writer().unwrap();
                    for _ in 0..200 {
                        w.write_all(format!("thread {i} ").as_bytes()).unwrap();
                        // Another store opened while this blob is being written sweeps nothing of it.
                        let _other = Store::open(&root).unwrap();
                    }
                    let (d, _) = w.commit(None).unwrap();
                    let cfg = ImageConfig {
                        architecture: "amd64".into(),
                        os: format!("os{i}"),
                        ..Default::default()
                    };
                    let (desc, _) = store.write_image(&cfg, vec![]).unwrap();
                    store.set_tag(&format!("t:{i}"), &desc).unwrap();
                    d
                })
            })
            .collect();
        for t in threads {
            let d = t.join().unwrap();
            assert!(Store::open(&root).unwrap().has_blob(&d));
        }
        let store = Store::open(&root).unwrap();
        let mut names: Vec<String> = store.tags().unwrap().into_iter().map(|t| t.name).collect();
        names.sort();
        assert_eq!(names, (0..6).map(|i| format!("t:{i}")).collect::<Vec<_>>());
    }

    #[test]
    fn dead_owner_temp_files_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let dead = dir.path().join("tmp/blobs/999999-dead-0");
        fs::create_dir_all(&dead).unwrap();
        fs::write(dead.join("blob-0"), b"partial").unwrap();
        fs::write(dir.path().join("tmp/owners/999999-dead-0"), b"").unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(!dead.exists());
        assert!(!dir.path().join("tmp/owners/999999-dead-0").exists());
        let own = dir.path().join("tmp/blobs").join(store.owner());
        assert!(own.is_dir());
        drop(store);
        assert!(!own.exists());
    }
}
