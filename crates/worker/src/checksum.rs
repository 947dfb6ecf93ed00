//! Content checksums of build-context paths for COPY/ADD cache keys: per file a header (mode,
//! size, type, link target; never owner or mtime) plus the content's blake3; directories as a Merkle
//! hash of names and child checksums. File hashes are memoised in a stat cache keyed by path and
//! validated by (dev, inode, size, mtime, ctime), so a no-op rebuild re-reads nothing and any write
//! (which moves ctime) forces a re-read even when size and mtime are unchanged.
//!
//! # Format (part of cache key version 3)
//!
//! These digests enter every key of a COPY/ADD from the context and of a `RUN --mount` of it,
//! so their exact bytes are part of `rbuild_solver::KEY_VERSION` (3): changing anything below
//! means bumping it (which renames the cache index) and re-pinning `tests/context_checksum.rs`
//! and `tests/cache_keys.rs`. There is no domain tag of its own; the key's formula carries the
//! version.
//!
//! - A source: blake3 of the pattern's bytes, then for each selected path in expansion order
//!   its path relative to the context and its entry hash.
//! - An entry hash: blake3 of a type byte (`d`, `l`, `f`, `o`), the mode's low 12 bits (u32
//!   LE: permissions and setuid/setgid/sticky), then for a file its
//!   size (u64 LE) and the blake3 of its content; for a symlink its target's bytes; for a
//!   directory, for each kept child in byte order of names, the name's length (u64 LE), the
//!   name and the child's entry hash; for anything else `rdev` (u64 LE).
//! - Paths the `.dockerignore` or `COPY --exclude` drop are left out exactly as the copy leaves
//!   them out. mtime, ctime, inode and the owner never count: COPY gives context files 0:0 (or
//!   `--chown`), and BuildKit's client resets context owners to 0:0 before hashing, so keys
//!   are the same for checkouts owned by different users.

use crate::dockerignore::{keeps_anything, Matcher, Verdict};
use crate::fsops::{expand_sources, resolve_in_root};
use rbuild_solver::CacheIndex;
use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::path::PathBuf;

/// A stat cache session: reads from the index, collects new entries, writes them in one transaction.
pub struct StatCache<'a> {
    index: Option<&'a CacheIndex>,
    updates: HashMap<Vec<u8>, Vec<u8>>,
    exclude: Option<Matcher>,
}

impl<'a> StatCache<'a> {
    /// A session over `index` (None = no memoisation).
    pub fn new(index: Option<&'a CacheIndex>) -> Self {
        StatCache {
            index,
            updates: HashMap::new(),
            exclude: None,
        }
    }

    /// Skips paths the `.dockerignore` excludes.
    pub fn with_excludes(mut self, exclude: Option<Matcher>) -> Self {
        self.exclude = exclude;
        self
    }

    fn stat_key(meta: &fs::Metadata) -> Vec<u8> {
        let mut key = Vec::with_capacity(48);
        for v in [
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime() as u64,
            meta.mtime_nsec() as u64,
            meta.ctime() as u64,
            meta.ctime_nsec() as u64,
        ] {
            key.extend_from_slice(&v.to_le_bytes());
        }
        key
    }

    fn content_hash(&mut self, path: &Path, meta: &fs::Metadata) -> io::Result<[u8; 32]> {
        let key = path.as_os_str().as_bytes().to_vec();
        let stat = Self::stat_key(meta);
        if let Some(index) = self.index {
            if let Ok(Some(value)) = index.get_in(crate::tables::CONTEXT_STAT, &key) {
                if value.len() == stat.len() + 32 && value[..stat.len()] == stat[..] {
                    let mut out = [0u8; 32];
                    out.copy_from_slice(&value[stat.len()..]);
                    return Ok(out);
                }
            }
        }
        let mut hasher = blake3::Hasher::new();
        let mut file = fs::File::open(path)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let hash: [u8; 32] = hasher.finalize().into();
        let mut value = stat;
        value.extend_from_slice(&hash);
        self.updates.insert(key, value);
        Ok(hash)
    }

    /// Writes the collected entries to the index.
    pub fn flush(self) {
        if let Some(index) = self.index {
            if !self.updates.is_empty() {
                let entries: Vec<(Vec<u8>, Vec<u8>)> = self.updates.into_iter().collect();
                // The stat cache is only an accelerator: a failed write costs a re-read next time.
                let _ = index.put_many_in(crate::tables::CONTEXT_STAT, &entries);
            }
        }
    }

    fn verdict(
        &self,
        rel: &Path,
        srel: &Path,
        is_dir: bool,
        source_exclude: Option<&Matcher>,
    ) -> Verdict {
        let of = |m: Option<&Matcher>, p: &Path| match m {
            Some(m) => m.verdict(&p.to_string_lossy(), is_dir),
            None => Verdict::Keep,
        };
        of(self.exclude.as_ref(), rel).and(of(source_exclude, srel))
    }

    /// True when the copy keeps `path` (the same rule as the copy: an excluded directory counts
    /// only when something under it is re-included).
    fn keeps(
        &self,
        path: &Path,
        rel: &Path,
        srel: &Path,
        is_dir: bool,
        source_exclude: Option<&Matcher>,
    ) -> io::Result<bool> {
        match self.verdict(rel, srel, is_dir, source_exclude) {
            Verdict::Keep => Ok(true),
            Verdict::Drop => Ok(false),
            Verdict::Probe => keeps_anything(path, &mut |host, _, d| {
                let tail = host.strip_prefix(path).unwrap_or(host);
                self.verdict(&rel.join(tail), &srel.join(tail), d, source_exclude)
            }),
        }
    }

    fn entry_hash(
        &mut self,
        path: &Path,
        rel: &Path,
        srel: &Path,
        meta: &fs::Metadata,
        source_exclude: Option<&Matcher>,
    ) -> io::Result<[u8; 32]> {
        let mut hasher = blake3::Hasher::new();
        let ft = meta.file_type();
        hasher.update(&[kind_byte(ft)]);
        hasher.update(&(meta.mode() & 0o7777).to_le_bytes());
        if ft.is_file() {
            hasher.update(&meta.size().to_le_bytes());
            hasher.update(&self.content_hash(path, meta)?);
        } else if ft.is_symlink() {
            hasher.update(fs::read_link(path)?.as_os_str().as_bytes());
        } else if ft.is_dir() {
            let mut names: Vec<_> = fs::read_dir(path)?
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect();
            names.sort();
            for name in names {
                let child = path.join(&name);
                let child_rel: PathBuf = rel.join(&name);
                let child_srel: PathBuf = srel.join(&name);
                let child_meta = fs::symlink_metadata(&child)?;
                if !self.keeps(
                    &child,
                    &child_rel,
                    &child_srel,
                    child_meta.is_dir(),
                    source_exclude,
                )? {
                    continue;
                }
                let h =
                    self.entry_hash(&child, &child_rel, &child_srel, &child_meta, source_exclude)?;
                hasher.update(&(name.len() as u64).to_le_bytes());
                hasher.update(name.as_bytes());
                hasher.update(&h);
            }
        } else {
            hasher.update(&meta.rdev().to_le_bytes());
        }
        Ok(hasher.finalize().into())
    }

    /// Checksum of what `pattern` selects under `root` (wildcards expanded; the top-level source
    /// followed when it is a symlink). A missing non-wildcard source is an error naming it.
    pub fn checksum(
        &mut self,
        root: &Path,
        pattern: &str,
        allow_wildcard: bool,
        follow: bool,
    ) -> io::Result<[u8; 32]> {
        self.checksum_filtered(root, pattern, allow_wildcard, follow, None)
    }

    /// [`StatCache::checksum`] leaving out what `source_exclude` (`COPY --exclude`, relative to
    /// each source; a file source by its name) excludes, exactly as the copy does.
    pub fn checksum_filtered(
        &mut self,
        root: &Path,
        pattern: &str,
        allow_wildcard: bool,
        follow: bool,
        source_exclude: Option<&Matcher>,
    ) -> io::Result<[u8; 32]> {
        let mut hasher = blake3::Hasher::new();
        hasher.update(pattern.as_bytes());
        let wildcard = allow_wildcard && crate::glob::has_wildcard(pattern);
        for rel in expand_sources(root, pattern, allow_wildcard)? {
            let host = resolve_in_root(root, &rel.to_string_lossy(), follow)?;
            // An excluded directory holding re-included paths stays a source, as in the copy.
            let excluded = !rel.as_os_str().is_empty()
                && self.exclude.is_some()
                && !self.keeps(
                    &host,
                    &rel,
                    Path::new(""),
                    fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir()),
                    None,
                )?;
            if excluded && wildcard {
                continue;
            }
            if let (Some(m), Some(name)) = (source_exclude, rel.file_name()) {
                if m.excluded(&name.to_string_lossy()) {
                    continue;
                }
            }
            let meta = match fs::symlink_metadata(&host) {
                Ok(_) if excluded => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!(
                            "\"/{}\": not found (excluded by .dockerignore)",
                            rel.display()
                        ),
                    ));
                }
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("\"/{}\": not found", rel.display()),
                    ));
                }
                Err(e) => return Err(e),
            };
            hasher.update(rel.as_os_str().as_bytes());
            hasher.update(&self.entry_hash(&host, &rel, Path::new(""), &meta, source_exclude)?);
        }
        Ok(hasher.finalize().into())
    }
}

/// The byte a checksum hashes for an entry's type: `d`irectory, sym`l`ink, `f`ile, `o`ther.
pub(crate) fn kind_byte(ft: fs::FileType) -> u8 {
    if ft.is_dir() {
        b'd'
    } else if ft.is_symlink() {
        b'l'
    } else if ft.is_file() {
        b'f'
    } else {
        b'o'
    }
}

#[cfg(test)]
mod tests {
    use super::StatCache;
    use std::fs;

    #[test]
    fn empty_wildcard_has_a_stable_key_and_a_missing_path_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("package.json"), "{}").expect("write");
        let mut cache = StatCache::new(None);
        let empty = cache
            .checksum(dir.path(), "yarn.lock*", true, true)
            .expect("an empty wildcard is no error");
        let again = StatCache::new(None)
            .checksum(dir.path(), "yarn.lock*", true, true)
            .expect("again");
        assert_eq!(empty, again);
        let other = cache
            .checksum(dir.path(), "pnpm-lock*", true, true)
            .expect("other pattern");
        assert_ne!(empty, other, "the pattern is part of the key");
        // A file that starts to match changes the key.
        fs::write(dir.path().join("yarn.lock"), "# lock").expect("write");
        let matched = StatCache::new(None)
            .checksum(dir.path(), "yarn.lock*", true, true)
            .expect("matches now");
        assert_ne!(empty, matched);
        // A plain path that does not exist stays an error naming it.
        let err = cache
            .checksum(dir.path(), "missing.txt", true, true)
            .expect_err("missing plain path");
        assert_eq!(err.to_string(), "\"/missing.txt\": not found");
    }
}
