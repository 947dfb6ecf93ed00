//! Unit tests of the cache index: tables, reopening, waiting for and sharing a held file, and
//! recovery from corrupt or truncated files.

use super::*;
use rbuild_oci::lock::{WaitReporter, Waiting, REPORT_AFTER};
use redb::Database;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const STAT: Table = Table::new("stat");
const TAGS: Table = Table::new("tags");

#[test]
fn get_put_and_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join(INDEX_FILE_NAME);
    let idx = CacheIndex::open(&path).unwrap();
    let k = CacheKey::from_parts(&[b"x"]);
    assert_eq!(idx.get(&k).unwrap(), None);
    idx.put(&k, b"v1").unwrap();
    idx.put(&k, b"v2").unwrap();
    assert_eq!(idx.get(&k).unwrap().as_deref(), Some(&b"v2"[..]));
    assert_eq!(idx.get_in(STAT, b"a").unwrap(), None);
    idx.put_in(STAT, b"a", b"1").unwrap();
    idx.put_many_in(
        TAGS,
        &[
            (b"t1".to_vec(), b"d1".to_vec()),
            (b"t2".to_vec(), b"d2".to_vec()),
        ],
    )
    .unwrap();
    assert_eq!(idx.get_in(STAT, b"a").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(
        idx.get_in(TAGS, b"t2").unwrap().as_deref(),
        Some(&b"d2"[..])
    );
    assert_eq!(idx.get_in(TAGS, b"a").unwrap(), None);
    // Named tables don't collide with the results table.
    assert_eq!(idx.get_in(Table::new("results-v1"), &k.0).unwrap(), None);
    assert_eq!(
        idx.get_many_in(TAGS, &[b"t2".to_vec(), b"zz".to_vec()])
            .unwrap(),
        vec![Some(b"d2".to_vec()), None]
    );
    assert_eq!(
        idx.get_many_in(Table::new("none"), &[b"a".to_vec()])
            .unwrap(),
        vec![None]
    );
    assert!(idx.remove_in(TAGS, b"t1").unwrap());
    assert!(!idx.remove_in(TAGS, b"t1").unwrap());
    assert_eq!(STAT.name(), "stat");
    assert!(std::panic::catch_unwind(|| Table::new("")).is_err());
    assert!(idx.moved_aside().is_none());
}

#[test]
fn survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(INDEX_FILE_NAME);
    let k = CacheKey::from_parts(&[b"x"]);
    {
        let idx = CacheIndex::open(&path).unwrap();
        idx.put(&k, b"value").unwrap();
        idx.put_in(STAT, b"a", b"1").unwrap();
    }
    let idx = CacheIndex::open(&path).unwrap();
    assert_eq!(idx.get(&k).unwrap().as_deref(), Some(&b"value"[..]));
    assert_eq!(idx.get_in(STAT, b"a").unwrap().as_deref(), Some(&b"1"[..]));
}

#[test]
fn a_held_file_is_waited_for_reported_then_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(INDEX_FILE_NAME);
    drop(CacheIndex::open(&path).unwrap());
    // A holder that never lets go (e.g. an older rbuild holding it for a whole build).
    let held = Database::create(&path).unwrap();
    let seen = Arc::new(Mutex::new(Vec::<Waiting>::new()));
    let seen2 = seen.clone();
    let reporter = WaitReporter::new(move |w| seen2.lock().unwrap().push(w.clone()));
    let err = CacheIndex::open_with(
        &path,
        REPORT_AFTER + Duration::from_millis(500),
        Some(reporter),
    )
    .unwrap_err();
    assert!(matches!(err, CacheError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("in use"), "{err}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].root, dir.path());
    assert_eq!(seen[0].holder, Some(std::process::id()));
    assert_eq!(
        seen[0].to_string(),
        format!(
            "waiting for {} (held by pid {})",
            dir.path().display(),
            std::process::id()
        )
    );
    drop(held);
}

#[test]
fn handles_share_the_file_between_bursts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(INDEX_FILE_NAME);
    let first = CacheIndex::open(&path).unwrap();
    // A second handle (as another process would) opens once the first goes idle.
    let second = CacheIndex::open(&path).unwrap();
    let threads: Vec<_> = [first.clone(), second.clone()]
        .into_iter()
        .enumerate()
        .map(|(t, idx)| {
            std::thread::spawn(move || {
                for i in 0..20u32 {
                    let k = CacheKey::from_parts(&[&[t as u8], &i.to_le_bytes()]);
                    idx.put(&k, &i.to_le_bytes()).unwrap();
                    assert_eq!(idx.get(&k).unwrap().as_deref(), Some(&i.to_le_bytes()[..]));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for t in 0..2u8 {
        for i in 0..20u32 {
            let k = CacheKey::from_parts(&[&[t], &i.to_le_bytes()]);
            assert!(first.get(&k).unwrap().is_some());
        }
    }
    // Idle handles let go of the file.
    first.set_idle_close(Duration::from_millis(1));
    second.set_idle_close(Duration::from_millis(1));
    let mut closed = false;
    for _ in 0..200 {
        if !first.is_open() && !second.is_open() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(closed, "both handles closed the file when idle");
    drop(Database::create(&path).expect("nobody holds the file"));
}

#[test]
fn a_busy_holder_lets_go_when_another_waits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(INDEX_FILE_NAME);
    let busy = CacheIndex::open(&path).unwrap();
    // Without the waiter's signal it would keep the file for a minute.
    busy.set_idle_close(Duration::from_secs(60));
    let k = CacheKey::from_parts(&[b"k"]);
    busy.put(&k, b"1").unwrap();
    assert!(busy.is_open());
    let other = CacheIndex::open_with_timeout(&path, Duration::from_secs(5)).unwrap();
    assert_eq!(other.get(&k).unwrap().as_deref(), Some(&b"1"[..]));
    drop(other);
    assert_eq!(busy.get(&k).unwrap().as_deref(), Some(&b"1"[..]));
}

#[test]
fn corrupt_file_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(INDEX_FILE_NAME);
    std::fs::write(&path, vec![0x5a; 64 * 1024]).unwrap();
    let idx = CacheIndex::open(&path).unwrap();
    let aside = idx.moved_aside().expect("moved aside").to_path_buf();
    assert!(aside
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(&format!("{INDEX_FILE_NAME}.corrupt-")));
    assert_eq!(std::fs::read(&aside).unwrap(), vec![0x5a; 64 * 1024]);
    let k = CacheKey::from_parts(&[b"x"]);
    assert_eq!(idx.get(&k).unwrap(), None);
    idx.put(&k, b"v").unwrap();
    assert_eq!(idx.get(&k).unwrap().as_deref(), Some(&b"v"[..]));
}

#[test]
fn truncated_file_is_moved_aside_or_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(INDEX_FILE_NAME);
    let k = CacheKey::from_parts(&[b"x"]);
    {
        let idx = CacheIndex::open(&path).unwrap();
        for i in 0..100u32 {
            idx.put(&CacheKey::from_parts(&[&i.to_le_bytes()]), &[7u8; 1000])
                .unwrap();
        }
    }
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len / 3).unwrap();
    drop(f);
    let idx = CacheIndex::open(&path).unwrap();
    idx.put(&k, b"v").unwrap();
    assert_eq!(idx.get(&k).unwrap().as_deref(), Some(&b"v"[..]));
}

#[test]
fn results_are_listed_with_use_times_and_removed_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let idx = CacheIndex::open(&dir.path().join(INDEX_FILE_NAME)).unwrap();
    let (a, b, c) = (
        CacheKey::from_parts(&[b"a"]),
        CacheKey::from_parts(&[b"b"]),
        CacheKey::from_parts(&[b"c"]),
    );
    idx.put(&a, b"fs:1").unwrap();
    idx.put(&b, b"fs:2").unwrap();
    // A use time written long ago (as by an older build) is refreshed by a touch; a key
    // without a result gets none.
    idx.write("age a record", |txn| {
        txn.open_table(USED)?.insert(&b.0[..], 1000)?;
        Ok(())
    })
    .unwrap();
    let now = unix_now();
    idx.touch(&[b, c]).unwrap();
    let mut listed = idx.results().unwrap();
    listed.sort_by(|x, y| x.value.cmp(&y.value));
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].key, a);
    assert!(listed.iter().all(|r| r.last_used.is_some_and(|t| t >= now)));
    idx.put_many_in(STAT, &[(b"x".to_vec(), b"1".to_vec())])
        .unwrap();
    assert_eq!(
        idx.entries_in(STAT).unwrap(),
        vec![(b"x".to_vec(), b"1".to_vec())]
    );
    idx.remove_many_in(STAT, &[b"x".to_vec()]).unwrap();
    assert!(idx.entries_in(STAT).unwrap().is_empty());
    idx.remove_results(&[a]).unwrap();
    let listed = idx.results().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, b);
    assert_eq!(idx.get(&a).unwrap(), None);
}
