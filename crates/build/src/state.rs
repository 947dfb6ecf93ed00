//! The layout of a state root (`--root`): which versioned bucket lives where. Every path the
//! pipeline uses under the root comes from [`StateDir`]; a bucket's on-disk name (and so its
//! format version) is written once, in [`Bucket::dir_name`].

use std::path::{Path, PathBuf};

/// One area of the state root. Bumping a bucket's version (its name) makes old data invisible
/// rather than misread, as uv's cache buckets do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// The OCI image layout (`oci-layout`, `index.json`, `blobs/`): the root itself, so that
    /// skopeo and umoci read the store at the root's path.
    Store,
    /// Overlay snapshots of the snapshotter.
    Snapshots,
    /// The solver's cache index (redb): cache key -> result, plus its `.want`/`.locks` siblings.
    CacheIndex,
    /// `RUN --mount=type=cache` directories.
    CacheMounts,
    /// The library's temp dirs (e.g. a build context received on standard input), each a unique
    /// directory removed when its build ends. `tmp/build`, beside (never inside or around) the
    /// store's own `tmp/blobs` and `tmp/owners` ([`rbuild_oci::STORE_TMP_DIR`],
    /// [`rbuild_oci::STORE_OWNERS_DIR`]).
    Tmp,
    /// The kept states of failed RUN steps (`--debug-on-fail=keep`), one JSON file each, until
    /// `rbuild prune`.
    DebugStates,
}

impl Bucket {
    /// Every bucket, in the order of ARCHITECTURE.md's "On-disk state".
    pub const ALL: [Bucket; 6] = [
        Bucket::Store,
        Bucket::Snapshots,
        Bucket::CacheIndex,
        Bucket::CacheMounts,
        Bucket::Tmp,
        Bucket::DebugStates,
    ];

    /// The bucket's name under the root (empty for [`Bucket::Store`], which is the root).
    pub fn dir_name(self) -> &'static str {
        match self {
            Bucket::Store => "",
            Bucket::Snapshots => "snapshots-v1",
            // The index's file name (and version) is the solver's: one constant to bump.
            Bucket::CacheIndex => rbuild_solver::INDEX_FILE_NAME,
            Bucket::CacheMounts => "cache-mounts-v1",
            Bucket::Tmp => "tmp/build",
            Bucket::DebugStates => "debug-v1",
        }
    }
}

/// A state root and the paths of its buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The layout under `root` (nothing is created).
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of `bucket` under the root.
    pub fn bucket(&self, bucket: Bucket) -> PathBuf {
        match bucket.dir_name() {
            "" => self.root.clone(),
            name => self.root.join(name),
        }
    }

    /// The image store's directory (the root).
    pub fn store(&self) -> PathBuf {
        self.bucket(Bucket::Store)
    }

    /// The snapshotter's root.
    pub fn snapshots(&self) -> PathBuf {
        self.bucket(Bucket::Snapshots)
    }

    /// The cache index file.
    pub fn cache_index(&self) -> PathBuf {
        self.bucket(Bucket::CacheIndex)
    }

    /// The directory of `RUN --mount=type=cache` directories.
    pub fn cache_mounts(&self) -> PathBuf {
        self.bucket(Bucket::CacheMounts)
    }

    /// The directory of the library's temp dirs (`tmp/build`); make unique entries in it
    /// (e.g. with `tempfile::Builder::tempdir_in`), never fixed names.
    pub fn tmp(&self) -> PathBuf {
        self.bucket(Bucket::Tmp)
    }

    /// The directory of kept failed-RUN states (`--debug-on-fail=keep`, `rbuild debug ID`).
    pub fn debug_states(&self) -> PathBuf {
        self.bucket(Bucket::DebugStates)
    }

    /// True when the root holds an image store (its `index.json`).
    pub fn has_store(&self) -> bool {
        self.store().join("index.json").exists()
    }

    /// The root's optional settings file, `config.json` (e.g. `{"gc": {"keepStorage": "5GB"}}`).
    pub fn config_file(&self) -> PathBuf {
        self.root.join("config.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_distinct_and_under_the_root() {
        let state = StateDir::new("/r");
        assert_eq!(state.store(), Path::new("/r"));
        assert_eq!(state.snapshots(), Path::new("/r/snapshots-v1"));
        assert_eq!(state.cache_mounts(), Path::new("/r/cache-mounts-v1"));
        assert_eq!(
            state.cache_index(),
            Path::new("/r").join(rbuild_solver::INDEX_FILE_NAME)
        );
        assert_eq!(state.tmp(), Path::new("/r/tmp/build"));
        let mut names: Vec<_> = Bucket::ALL.iter().map(|b| b.dir_name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Bucket::ALL.len());
        // No bucket holds or lies inside another, nor the store's own temp dirs.
        let mut taken: Vec<&str> = names.into_iter().filter(|n| !n.is_empty()).collect();
        taken.extend([rbuild_oci::STORE_TMP_DIR, rbuild_oci::STORE_OWNERS_DIR]);
        for a in &taken {
            for b in &taken {
                if a != b {
                    assert!(!Path::new(a).starts_with(b), "{a} is inside {b}");
                }
            }
        }
    }
}
