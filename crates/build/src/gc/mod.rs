//! Garbage collection of a state root: what is reachable stays, the rest goes.
//!
//! Roots are the store's tags (`index.json` -> manifests -> configs and layers) and the cache
//! index's records (results and unpacked image layers -> snapshots, their ancestors and the blobs
//! their labels name). [`prune`] removes the records a [`PruneOptions`] selects (all, unused for
//! a while, or least recently used first until under a size), then every snapshot and blob
//! nothing reaches any more. [`disk_usage`] reports sizes; [`auto_gc`] runs after a build under a
//! storage budget ([`default_keep_storage`]).
//!
//! Builds hold a shared lock on `ROOT/gc.lock` for their whole run ([`BuildLease`]); a collection
//! takes it exclusively, so it never removes what a running build holds or is writing.
//! Crash safety: records are deleted first (a record whose snapshot is gone is a miss anyway),
//! then snapshots children first, each by one rename into a temp dir that a later open sweeps,
//! then blobs (one unlink each); cache mounts move into `tmp/gc-trash/`, emptied by every
//! collection. A collection killed at any point leaves only unreachable leftovers that the next
//! one removes.

mod model;
mod usage;

pub use usage::{disk_usage, AreaUsage, RecordUsage, Usage};

use model::{estimate_total, Model, RecordId};
use rbuild_oci::lock::{lock_exclusive, report_if_slow, try_lock_exclusive, WaitReporter};
use rbuild_oci::{Store, StoreError};
use rbuild_snapshotter::{Backend, SnapshotError, SnapshotId, Snapshotter};
use rbuild_solver::{CacheError, CacheIndex, DEFAULT_LOCK_TIMEOUT};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::state::StateDir;

/// The environment variable that sets the automatic collection's budget (`0`/`off` disables).
pub const KEEP_STORAGE_ENV: &str = "RBUILD_GC_KEEP_STORAGE";

/// The automatic budget when the filesystem's size is unknown (BuildKit's fallback: 2 GB).
pub const FALLBACK_KEEP_STORAGE: u64 = 2_000_000_000;
/// The cap of the automatic budget (Docker's default build-cache policies keep 20 GB).
pub const MAX_KEEP_STORAGE: u64 = 20_000_000_000;

/// Errors of garbage collection.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The image store could not be read or changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The snapshots could not be read or removed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The cache index could not be read or changed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A filesystem operation on the root failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `--filter` names a filter rbuild does not know.
    #[error("invalid filter '{0}'")]
    InvalidFilter(String),
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> GcError {
    let path = path.to_path_buf();
    move |source| GcError::Io {
        action,
        path,
        source,
    }
}

/// A build's shared hold on the root: no collection runs while it lives.
#[derive(Debug)]
pub struct BuildLease {
    _file: File,
}

fn open_lock(state: &StateDir) -> Result<File, GcError> {
    let root = state.root();
    std::fs::create_dir_all(root).map_err(io_err("create", root))?;
    let path = root.join("gc.lock");
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("open", &path))
}

impl BuildLease {
    /// Takes the shared lock (waiting while a collection runs, reported after a second). Blocks.
    pub fn acquire(state: &StateDir, reporter: Option<&WaitReporter>) -> Result<Self, GcError> {
        let file = open_lock(state)?;
        let path = state.root().join("gc.lock");
        match file.try_lock_shared() {
            Ok(()) => return Ok(BuildLease { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
        }
        wait_reported(state.root(), &path, reporter, || file.lock_shared())?;
        Ok(BuildLease { _file: file })
    }
}

fn wait_reported(
    root: &Path,
    path: &Path,
    reporter: Option<&WaitReporter>,
    lock: impl Fn() -> std::io::Result<()>,
) -> Result<(), GcError> {
    let _done = report_if_slow(reporter, root, path);
    loop {
        match lock() {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r.map_err(io_err("lock", path)),
        }
    }
}

/// The exclusive lock of a collection.
pub(crate) struct GcLock {
    _file: File,
}

impl GcLock {
    /// Waits for running builds to end (reported), then holds the root.
    pub(crate) fn wait(
        state: &StateDir,
        reporter: Option<&WaitReporter>,
    ) -> Result<GcLock, GcError> {
        let file = open_lock(state)?;
        let path = state.root().join("gc.lock");
        lock_exclusive(&file, &path, state.root(), reporter).map_err(io_err("lock", &path))?;
        Ok(GcLock { _file: file })
    }

    /// Holds the root only when no build runs.
    fn try_now(state: &StateDir) -> Result<Option<GcLock>, GcError> {
        let file = open_lock(state)?;
        let path = state.root().join("gc.lock");
        Ok(try_lock_exclusive(&file)
            .map_err(io_err("lock", &path))?
            .then_some(GcLock { _file: file }))
    }
}

/// What [`prune`] removes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneOptions {
    /// Every cache record, unpacked base layers and cache mounts too (`--all`); without it,
    /// the build results and what nothing reaches (dangling images, orphan snapshots and blobs).
    pub all: bool,
    /// Only records not used for this long (`--filter until=24h`).
    pub until: Option<Duration>,
    /// Remove least recently used records first, only until the root holds at most this
    /// many bytes (`--keep-storage`).
    pub keep_storage: Option<u64>,
}

impl PruneOptions {
    /// Applies one `--filter KEY=VALUE` (`until=DURATION`, `unused-for=DURATION`).
    pub fn add_filter(&mut self, filter: &str) -> Result<(), GcError> {
        let bad = || GcError::InvalidFilter(filter.to_string());
        let (key, value) = filter.split_once('=').ok_or_else(bad)?;
        match key.trim() {
            "until" | "unused-for" | "unused_for" => {
                self.until = Some(parse_duration(value.trim()).ok_or_else(bad)?);
                Ok(())
            }
            _ => Err(bad()),
        }
    }
}

/// Go-style durations as docker's filters take them: `24h`, `90m`, `1h30m`, `45s`.
fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * unit;
        rest = &rest[u..];
    }
    Some(Duration::from_secs_f64(total))
}

/// One removed cache record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunedRecord {
    /// Its id (hex).
    pub id: String,
    /// Bytes of its own snapshot.
    pub size: u64,
}

/// What a collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// The records removed.
    pub records: Vec<PrunedRecord>,
    /// Snapshots removed.
    pub snapshots: usize,
    /// Blobs removed.
    pub blobs: usize,
    /// Bytes freed (snapshots, blobs, cache mounts).
    pub reclaimed: u64,
    /// Bytes the root's images, cache and blobs take afterwards.
    pub remaining: u64,
    /// Kept failed-RUN states removed (`--debug-on-fail=keep`).
    pub debug_states: usize,
}

struct Opened {
    store: Store,
    snapshotter: Snapshotter,
    index: CacheIndex,
}

fn open(state: &StateDir, reporter: Option<&WaitReporter>) -> Result<Opened, GcError> {
    let root = state.store();
    let store = Store::open_with_reporter(&root, reporter.cloned())?;
    // Listing and removing do not depend on the backend: no overlay probe.
    let snapshotter = Snapshotter::open_with_backend(&state.snapshots(), Backend::Copy)?;
    let index = CacheIndex::open_with(
        &state.cache_index(),
        DEFAULT_LOCK_TIMEOUT,
        reporter.cloned(),
    )?;
    Ok(Opened {
        store,
        snapshotter,
        index,
    })
}

fn trash_dir(state: &StateDir) -> PathBuf {
    state.root().join("tmp/gc-trash")
}

/// Empties `tmp/gc-trash/` (what a killed collection left). Runs under the exclusive lock.
fn sweep_trash(state: &StateDir) -> Result<(), GcError> {
    let trash = trash_dir(state);
    match std::fs::remove_dir_all(&trash) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", &trash)(e)),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Removes what `opts` selects, then everything nothing reaches. Waits for running builds on
/// the root to finish (reported through `reporter`). Blocks.
pub fn prune(
    state: &StateDir,
    opts: &PruneOptions,
    reporter: Option<&WaitReporter>,
) -> Result<PruneReport, GcError> {
    let _lock = GcLock::wait(state, reporter)?;
    // `rbuild prune` drops the kept failed-RUN states; their snapshots then go below.
    let debug_states = crate::kept::forget_all(state).map_err(io_err(
        "removing kept debug states in",
        &state.debug_states(),
    ))?;
    let mut report = collect(state, opts, reporter)?;
    report.debug_states = debug_states;
    Ok(report)
}

fn collect(
    state: &StateDir,
    opts: &PruneOptions,
    reporter: Option<&WaitReporter>,
) -> Result<PruneReport, GcError> {
    sweep_trash(state)?;
    let o = open(state, reporter)?;
    let mut model = Model::load(&o.store, &o.snapshotter, &o.index)?;
    model.pinned = crate::kept::pinned_snapshots(state);
    let before = model.total();
    let now = now_secs();
    let old_enough = |used: u64| match opts.until {
        Some(d) => now.saturating_sub(used) >= d.as_secs(),
        None => true,
    };
    // Candidates, least recently used first.
    let mut candidates: Vec<usize> = (0..model.records.len())
        .filter(|&i| {
            let r = &model.records[i];
            (opts.all || opts.keep_storage.is_some() || matches!(r.id, RecordId::Result(_)))
                && old_enough(r.last_used)
        })
        .collect();
    candidates.sort_by(|&a, &b| {
        let (ra, rb) = (&model.records[a], &model.records[b]);
        ra.last_used
            .cmp(&rb.last_used)
            .then_with(|| ra.id.cmp(&rb.id))
    });
    let mut doomed = vec![false; model.records.len()];
    match opts.keep_storage {
        None => candidates.iter().for_each(|&i| doomed[i] = true),
        Some(limit) => {
            // Dropping more of the least recently used never grows what is kept, so the
            // smallest prefix that fits is found by bisection (a reach walk per step).
            let fits = |k: usize| {
                let mut gone = vec![false; model.records.len()];
                candidates[..k].iter().for_each(|&i| gone[i] = true);
                let kept = model
                    .records
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| !gone[*j])
                    .map(|(_, r)| r);
                model.size_of(&model.reach(kept)) <= limit
            };
            let (mut lo, mut hi) = (0, candidates.len());
            if !fits(hi) {
                lo = hi;
            }
            while lo < hi {
                let mid = (lo + hi) / 2;
                if fits(mid) {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            candidates[..lo].iter().for_each(|&i| doomed[i] = true);
        }
    }
    let kept: Vec<_> = model
        .records
        .iter()
        .enumerate()
        .filter(|(j, _)| !doomed[*j])
        .map(|(_, r)| r)
        .collect();
    let reach = model.reach(kept.iter().copied());
    let mut report = PruneReport::default();
    let mut results = Vec::new();
    let mut unpacked = Vec::new();
    for id in &model.stale {
        match id {
            RecordId::Result(k) => results.push(*k),
            RecordId::Unpacked(c) => unpacked.push(c.clone()),
        }
    }
    for (i, r) in model.records.iter().enumerate() {
        if !doomed[i] {
            continue;
        }
        let size = r
            .snapshot
            .as_ref()
            .filter(|s| !reach.snaps.contains(*s))
            .and_then(|s| model.snaps.get(s))
            .map(|s| s.size)
            .unwrap_or(0);
        report.records.push(PrunedRecord {
            id: r.id.display(),
            size,
        });
        match &r.id {
            RecordId::Result(k) => results.push(*k),
            RecordId::Unpacked(c) => unpacked.push(c.clone()),
        }
    }
    // 1. Records (a crash after this leaves unreachable snapshots: removed next time).
    o.index.remove_results(&results)?;
    o.index.remove_many_in(rbuild_worker::UNPACKED, &unpacked)?;
    // 2. Snapshots nothing reaches, children first.
    let gone: Vec<SnapshotId> = model
        .snaps
        .keys()
        .filter(|s| !reach.snaps.contains(*s))
        .cloned()
        .collect();
    o.snapshotter.remove_all(&gone)?;
    rbuild_worker::fsops::forget_snapshots(&o.index, &gone)?;
    report.snapshots = gone.len();
    // 3. Variant mappings of layers nothing reaches, or whose blob goes, and layers-by-content
    // entries whose blob goes (before the blobs, so neither names a missing blob; readers also
    // check), then the blobs nothing
    // reaches (dangling images, stale layer labels, those variants).
    for (source, compression, blob) in &model.variants {
        if !reach.blobs.contains(source) || !reach.blobs.contains(blob) {
            o.store.remove_variant(source, *compression)?;
        }
    }
    let mut prefixes = std::collections::BTreeSet::new();
    for (key, prefix, compression, blob) in &model.contents {
        if reach.blobs.contains(blob) {
            prefixes.insert(prefix.as_str());
        } else {
            o.store.forget_layer_content(key, *compression)?;
        }
    }
    for prefix in o.store.content_prefixes()? {
        if !prefixes.contains(prefix.as_str()) {
            o.store.forget_content_prefix(&prefix)?;
        }
    }
    let mut blobs = 0;
    for digest in model.blobs.keys() {
        if !reach.blobs.contains(digest) {
            o.store.remove_blob(digest)?;
            blobs += 1;
        }
    }
    report.blobs = blobs;
    let after = model.size_of(&reach);
    report.reclaimed = before.saturating_sub(after);
    report.remaining = after;
    // 4. Cache mounts with --all.
    if opts.all {
        report.reclaimed += remove_cache_mounts(state)?;
    }
    Ok(report)
}

/// Moves every cache mount into the trash, then empties it; returns the bytes freed.
fn remove_cache_mounts(state: &StateDir) -> Result<u64, GcError> {
    let dir = state.cache_mounts();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err("read dir", &dir)(e)),
    };
    let size = rbuild_snapshotter::tree_disk_usage(&dir)?;
    let trash = trash_dir(state).join(format!("cache-mounts-{}", std::process::id()));
    std::fs::create_dir_all(&trash).map_err(io_err("create", &trash))?;
    for entry in entries {
        let entry = entry.map_err(io_err("read dir", &dir))?;
        let dest = trash.join(entry.file_name());
        std::fs::rename(entry.path(), &dest).map_err(io_err("move to trash", &entry.path()))?;
    }
    sweep_trash(state)?;
    Ok(size)
}

/// The automatic collection's budget: `RBUILD_GC_KEEP_STORAGE`-style `value` when given
/// (`0`/`off`: disabled, `None` returned), else BuildKit's default: 10% of the filesystem
/// holding the root, capped at [`MAX_KEEP_STORAGE`] (20 GB), [`FALLBACK_KEEP_STORAGE`] when the
/// size is unknown.
pub fn keep_storage_budget(state: &StateDir, value: Option<&str>) -> Result<Option<u64>, String> {
    match value.map(str::trim) {
        Some("off") | Some("0") => Ok(None),
        Some(v) if !v.is_empty() => rbuild_llb::units::ram_in_bytes(v)
            .map(|b| (b > 0).then_some(b))
            .map_err(|e| e.to_string()),
        _ => Ok(Some(default_keep_storage(state.root()))),
    }
}

/// The automatic collection's budget from the root's settings file ([`StateDir::config_file`]:
/// `{"gc": {"keepStorage": "20GB"}}`, `"off"` or `"0"` disables), when the file sets one. A
/// missing file is no setting; an unreadable or malformed one is an error naming the file.
pub fn configured_keep_storage(state: &StateDir) -> Result<Option<String>, String> {
    let path = state.config_file();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    match &config["gc"]["keepStorage"] {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s.clone())),
        serde_json::Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(format!(
            "{}: gc.keepStorage must be a size such as \"20GB\", not {other}",
            path.display()
        )),
    }
}

/// BuildKit's default budget for `root` (10% of its filesystem, at most 20 GB).
pub fn default_keep_storage(root: &Path) -> u64 {
    let probe = root
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    match rustix::fs::statvfs(probe) {
        Ok(st) => (st.f_blocks.saturating_mul(st.f_frsize) / 10).min(MAX_KEEP_STORAGE),
        Err(_) => FALLBACK_KEEP_STORAGE,
    }
}

/// After a successful build: when the root may exceed `keep_storage`, removes least recently
/// used cache records (results and unpacked layers) until it fits. Cheap under budget (a
/// directory listing, blob stats and the sizes of snapshots made since the last run). Skipped,
/// returning `None`, while another build runs on the root (the next one collects). Blocks.
pub fn auto_gc(state: &StateDir, keep_storage: u64) -> Result<Option<PruneReport>, GcError> {
    let Some(_lock) = GcLock::try_now(state)? else {
        return Ok(None);
    };
    let started = Instant::now();
    let store = Store::open(&state.store())?;
    let snapshotter = Snapshotter::open_with_backend(&state.snapshots(), Backend::Copy)?;
    let total = estimate_total(&store, &snapshotter)?;
    if total <= keep_storage {
        tracing::debug!(total, keep_storage, elapsed = ?started.elapsed(), "gc: under budget");
        return Ok(None);
    }
    let opts = PruneOptions {
        all: false,
        until: None,
        keep_storage: Some(keep_storage),
    };
    let report = collect(state, &opts, None)?;
    tracing::debug!(
        reclaimed = report.reclaimed,
        records = report.records.len(),
        elapsed = ?started.elapsed(),
        "gc: collected"
    );
    Ok(Some(report))
}

/// Snapshots and blobs that no record or tag reaches (0 and 0 right after a collection).
pub fn unreachable_count(state: &StateDir) -> Result<(usize, usize), GcError> {
    let _lock = GcLock::wait(state, None)?;
    let o = open(state, None)?;
    let mut model = Model::load(&o.store, &o.snapshotter, &o.index)?;
    model.pinned = crate::kept::pinned_snapshots(state);
    let reach = model.reach(model.records.iter());
    let snaps = model
        .snaps
        .keys()
        .filter(|s| !reach.snaps.contains(*s))
        .count();
    let blobs = model
        .blobs
        .keys()
        .filter(|b| !reach.blobs.contains(*b))
        .count();
    Ok((snaps, blobs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_take_go_durations() {
        let mut o = PruneOptions::default();
        o.add_filter("until=24h").unwrap();
        assert_eq!(o.until, Some(Duration::from_secs(86_400)));
        o.add_filter("unused-for=1h30m").unwrap();
        assert_eq!(o.until, Some(Duration::from_secs(5_400)));
        for bad in ["until=", "until=5", "until=3d", "label=x", "until"] {
            assert!(
                matches!(o.add_filter(bad), Err(GcError::InvalidFilter(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_budget_follows_buildkit_and_can_be_turned_off() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("root"));
        assert_eq!(keep_storage_budget(&state, Some("off")).unwrap(), None);
        assert_eq!(keep_storage_budget(&state, Some("0")).unwrap(), None);
        assert_eq!(
            keep_storage_budget(&state, Some("20MB")).unwrap(),
            Some(20 * 1024 * 1024)
        );
        assert!(keep_storage_budget(&state, Some("lots")).is_err());
        let default = keep_storage_budget(&state, None).unwrap().unwrap();
        assert!(default > 0 && default <= MAX_KEEP_STORAGE);
        let st = rustix::fs::statvfs(dir.path()).unwrap();
        let tenth = st.f_blocks * st.f_frsize / 10;
        assert_eq!(default, tenth.min(MAX_KEEP_STORAGE));
    }
}
