//! Data published without an fsync, made safe by boot-id markers.
//!
//! Waiting for the disk (an `fsync` per blob, a `syncfs` per snapshot) made big builds wait
//! seconds per gigabyte for writeback the kernel does on its own within ~30 s. Instead, a writer
//! leaves a small marker file holding the kernel's boot id next to (or inside) what it
//! publishes, written before the rename that publishes it. Dirty pages survive any process
//! crash; only an OS crash or power loss loses them, and that changes the boot id. So a marker
//! of this boot means "complete", one of another boot (or an unreadable or empty one: its data
//! was lost too) means "maybe incomplete", and the owner treats the data as missing.
//!
//! Markers of this boot are removed later, after one `syncfs` covered their data: by a
//! background [`sweep`] when a later process opens the store or the snapshotter (only markers
//! older than [`SWEEP_MIN_AGE`], whose data the kernel has normally written back already, so
//! that sync has little to write and never holds up the build that just started), or by
//! `rbuild prune` (any age). A marker left behind costs only a rebuild after a reboot.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// The age a marker of this boot must have before the sweep at open clears it (the kernel's
/// `dirty_expire_centisecs` is 30 s, so its data has normally been written back by then).
pub const SWEEP_MIN_AGE: Duration = Duration::from_secs(45);

/// This boot's id (`/proc/sys/kernel/random/boot_id`), or None where it cannot be read (then
/// writers sync as before and no marker is written).
pub fn boot_id() -> Option<&'static str> {
    static ID: OnceLock<Option<String>> = OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    })
    .as_deref()
}

/// Writes a marker of boot `boot` at `path`. No fsync: if the marker is lost with the rest of
/// the unsynced data, so is the later rename that published the data (the journal commits them
/// in order), and a marker whose content was lost reads as another boot.
pub fn write_marker(path: &Path, boot: &str) -> io::Result<()> {
    std::fs::write(path, boot.as_bytes())
}

/// True unless `path` is a marker of another boot (or one that cannot be read): the data it
/// guards is complete.
pub fn marker_ok(path: &Path) -> bool {
    match std::fs::read(path) {
        Ok(bytes) => boot_id().is_some_and(|b| bytes == b.as_bytes()),
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

/// True when `path` is a marker of this boot at least `min_age` old.
pub fn is_current_marker(path: &Path, min_age: Duration) -> bool {
    let Some(boot) = boot_id() else {
        return false;
    };
    let old_enough = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| {
            SystemTime::now()
                .duration_since(t)
                .is_ok_and(|age| age >= min_age)
        });
    old_enough && std::fs::read(path).is_ok_and(|b| b == boot.as_bytes())
}

/// One `syncfs` of the filesystem holding `dir`.
pub fn syncfs(dir: &Path) -> io::Result<()> {
    let f = std::fs::File::open(dir)?;
    rustix::fs::syncfs(&f).map_err(io::Error::from)
}

/// Above this much dirty or in-flight page-cache data (system-wide), an open does not sync.
pub const CLEAN_LIMIT: u64 = 32 << 20;

/// Dirty plus writeback bytes of the page cache (`/proc/meminfo`), None where unreadable.
pub fn dirty_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let mut total = 0;
    for line in text.lines() {
        if let Some(rest) = line
            .strip_prefix("Dirty:")
            .or_else(|| line.strip_prefix("Writeback:"))
        {
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            total += kb * 1024;
        }
    }
    Some(total)
}

/// [`syncfs`], but only when it is cheap: when at most [`CLEAN_LIMIT`] of the page cache is
/// dirty or being written back; otherwise an error and no sync (the markers wait for a later
/// open). The sweeps an open runs use it, synchronously, before the process writes anything:
/// a sync that overlapped a build's writes would stall them behind the journal (a 50,000-file
/// COPY took 4.6-8 s instead of 0.8 s with a background sweep running beside it).
pub fn syncfs_when_clean(dir: &Path) -> io::Result<()> {
    match dirty_bytes() {
        Some(dirty) if dirty <= CLEAN_LIMIT => syncfs(dir),
        _ => Err(io::Error::other("too much dirty data to sync now")),
    }
}

/// Clears markers found before the sync: calls `sync` once (when `candidates` is not empty) and
/// then, only if it succeeded, removes each candidate for which `still` holds (e.g. the blob it
/// guards is still the file that existed before the sync). Returns how many went.
pub fn sweep<T>(
    candidates: Vec<(PathBuf, T)>,
    sync: impl FnOnce() -> io::Result<()>,
    still: impl Fn(&Path, &T) -> bool,
) -> io::Result<usize> {
    if candidates.is_empty() {
        return Ok(0);
    }
    sync()?;
    let mut n = 0;
    for (path, token) in candidates {
        if still(&path, &token) && std::fs::remove_file(&path).is_ok() {
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_of_this_boot_are_honoured_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let Some(boot) = boot_id() else {
            eprintln!("skipped: no boot id");
            return;
        };
        let here = dir.path().join("here");
        write_marker(&here, boot).unwrap();
        assert!(marker_ok(&here));
        assert!(marker_ok(&dir.path().join("absent")));
        std::fs::write(dir.path().join("other"), "another-boot").unwrap();
        assert!(!marker_ok(&dir.path().join("other")));
        std::fs::write(dir.path().join("empty"), "").unwrap();
        assert!(!marker_ok(&dir.path().join("empty")));
        assert!(is_current_marker(&here, Duration::ZERO));
        assert!(!is_current_marker(&here, Duration::from_secs(3600)));
        assert!(!is_current_marker(
            &dir.path().join("other"),
            Duration::ZERO
        ));
    }

    #[test]
    fn sweep_removes_markers_only_after_a_successful_sync() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, "x").unwrap();
        std::fs::write(&b, "x").unwrap();
        let both = || vec![(a.clone(), true), (b.clone(), false)];
        // A failed sync removes nothing.
        let failed = sweep(both(), || Err(io::Error::other("no sync")), |_, _| true);
        assert!(failed.is_err());
        assert!(a.exists() && b.exists());
        // The markers are all still there while the sync runs; afterwards the ones `still`
        // accepts go.
        let n = sweep(
            both(),
            || {
                assert!(a.exists() && b.exists(), "removed before the sync");
                Ok(())
            },
            |_, keep| *keep,
        )
        .unwrap();
        assert_eq!(n, 1);
        assert!(!a.exists() && b.exists());
        // Nothing to sweep: no sync at all.
        let n = sweep(
            Vec::<(PathBuf, ())>::new(),
            || panic!("synced"),
            |_, _| true,
        )
        .unwrap();
        assert_eq!(n, 0);
    }

    /// Layer blobs of the store: published behind a marker, honoured in this boot, missing
    /// after "another boot", made again, swept after a sync and removed with their blob.
    #[test]
    fn unsynced_layer_blobs_in_the_store() {
        use crate::Store;
        use std::io::Write;
        let Some(boot) = boot_id() else {
            eprintln!("skipped: no boot id");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let layer = |bytes: &[u8]| {
            let mut w = store.layer_blob_writer().unwrap();
            w.write_all(bytes).unwrap();
            w.commit(None).unwrap().0
        };
        let d = layer(b"layer tar");
        let marker = store.marker_path(&d);
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), boot);
        assert!(store.has_blob(&d));
        assert_eq!(store.read_blob(&d).unwrap(), b"layer tar");
        // Configs and other small blobs are fsynced and carry no marker.
        let (cfg, _) = store.write_blob(b"{}").unwrap();
        assert!(!store.marker_path(&cfg).exists());

        // As an OS crash leaves it: the marker names another boot. Missing, then made again.
        std::fs::write(&marker, "another-boot").unwrap();
        let reopened = Store::open(dir.path()).unwrap();
        assert!(!reopened.has_blob(&d));
        assert!(matches!(
            reopened.read_blob(&d),
            Err(crate::StoreError::MissingBlob(_))
        ));
        assert!(reopened.open_blob(&d).is_err());
        assert_eq!(layer(b"layer tar"), d);
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), boot);
        assert!(reopened.has_blob(&d));

        // A young marker stays; with no minimum age a sync clears this boot's markers only.
        let other = layer(b"other layer");
        std::fs::write(store.marker_path(&other), "").unwrap();
        assert_eq!(store.sweep_unsynced(Duration::from_secs(3600)).unwrap(), 0);
        assert!(marker.exists());
        assert_eq!(store.sweep_unsynced(Duration::ZERO).unwrap(), 1);
        assert!(!marker.exists() && store.has_blob(&d));
        assert!(store.marker_path(&other).exists() && !store.has_blob(&other));

        // A synced copy of an unsynced blob drops the marker; an unsynced copy of a synced
        // blob adds none.
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"other layer").unwrap();
        assert_eq!(w.commit(None).unwrap().0, other);
        assert!(!store.marker_path(&other).exists() && store.has_blob(&other));
        assert_eq!(layer(b"other layer"), other);
        assert!(!store.marker_path(&other).exists());

        // Garbage collection removes the marker with its blob.
        let gone = layer(b"collected");
        store.remove_blob(&gone).unwrap();
        assert!(!store.blob_path(&gone).exists() && !store.marker_path(&gone).exists());
    }
}
