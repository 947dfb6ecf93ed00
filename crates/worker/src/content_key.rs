//! Content keys of `COPY --from=<stage>` and `RUN --mount=type=bind,from=<stage>`: the digest
//! of exactly what the op reads from a filesystem input, computed after that input is resolved
//! (BuildKit's content-based cache keys), so a stage rebuilt to the same bytes leaves everything
//! after it cached. Digests are memoised per (immutable snapshot, selection) in the cache index
//! (table `content-selection-v1`), so a result is read once, however many builds use it.
//!
//! # Format (part of cache key version 3)
//!
//! - A selection digest: blake3 of the domain `rbuild-content-selection`, the selection's
//!   encoding (below), then per selected path in expansion order: its path relative to the
//!   input's root, with `--parents` the mode, uid and gid (u32 LE each) of every directory above
//!   it, and its entry hash; a path that does not exist (or cannot be resolved) contributes a
//!   marker byte and the path, so the op itself reports the error.
//! - An entry hash: blake3 of a type byte (`d`, `l`, `f`, `o`), the mode's low 12 bits, uid and
//!   gid (u32 LE each), the extended attributes (count, then each name and value length-framed,
//!   in byte order of names), then for a file its size (u64 LE), the blake3 of its content and
//!   whether it is a further name of a file already met in this selection (`H` and that
//!   file's ordinal, else `F`); for a symlink its target; for a directory, per kept child in
//!   byte order of names, the name (length-framed) and its entry hash; for anything else `rdev`.
//!   Never mtimes, ctimes or inode numbers (BuildKit's contenthash leaves times out too).
//! - The digest of an input: blake3 of `rbuild-content-input`, the number of selections and
//!   each selection digest, in op order (the COPY actions reading the input, or its bind
//!   mounts).
//! - The selector of an input ([`selector`], part of the solver's link key): each selection's
//!   encoding ([`Selection::encode`]) length-framed, in the same order.

use crate::dockerignore::{keeps_anything, Matcher, Verdict};
use crate::fsops::{expand_sources, resolve_in_root};
use rbuild_llb::{CopyAction, FileAction, MountType, Op};
use rbuild_solver::{CacheIndex, Table};
use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Memoised selection digests: blake3(snapshot id, selection encoding) -> digest (32 bytes).
/// A committed snapshot never changes, so an entry never goes stale.
pub(crate) const CONTENT_SELECTIONS: Table = Table::new("content-selection-v1");

/// What an op reads from one input.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// The sources of a COPY action (its pattern, wildcard and symlink rules, `--exclude`,
    /// `--parents`).
    Copy(CopyAction),
    /// The tree a bind mount shows (the selector inside the input; symlinks followed).
    Bind(String),
}

impl Selection {
    /// A stable encoding of the selection (part of the memo key and of the digest).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut put = |b: &[u8]| {
            out.extend_from_slice(&(b.len() as u64).to_le_bytes());
            out.extend_from_slice(b);
        };
        match self {
            Selection::Copy(c) => {
                put(b"copy");
                put(c.src.as_bytes());
                put(&[
                    c.allow_wildcard as u8,
                    c.allow_empty_wildcard as u8,
                    c.follow_symlinks as u8,
                    c.parents as u8,
                ]);
                put(&(c.exclude_patterns.len() as u64).to_le_bytes());
                for p in &c.exclude_patterns {
                    put(p.as_bytes());
                }
            }
            Selection::Bind(selector) => {
                put(b"bind");
                put(selector.as_bytes());
            }
        }
        out
    }
}

/// The inputs of `op` that count by content: the sources of its COPY actions and its bind
/// mounts, when they are filesystems (not the build context, `context[i]`) other than input 0
/// and no other mount kind reads them (a cache mount's `from=` seeds a persistent cache).
pub fn content_inputs(op: &Op, context: &[bool]) -> Vec<usize> {
    let candidate = |i: usize| i != 0 && !context.get(i).copied().unwrap_or(true);
    let mut out: Vec<usize> = match op {
        Op::File(file) => file
            .actions
            .iter()
            .filter_map(|a| match a {
                FileAction::Copy(c) if candidate(c.src_input) => Some(c.src_input),
                _ => None,
            })
            .collect(),
        Op::Exec(exec) => {
            let bind_only = |i: usize| {
                exec.mounts
                    .iter()
                    .all(|m| m.input != Some(i) || m.kind == MountType::Bind)
            };
            exec.mounts
                .iter()
                .filter(|m| m.kind == MountType::Bind)
                .filter_map(|m| m.input)
                .filter(|&i| candidate(i) && bind_only(i))
                .collect()
        }
        _ => Vec::new(),
    };
    out.sort_unstable();
    out.dedup();
    out
}

/// What `op` reads from input `input`, in op order.
pub fn selections(op: &Op, input: usize) -> Vec<Selection> {
    match op {
        Op::File(file) => file
            .actions
            .iter()
            .filter_map(|a| match a {
                FileAction::Copy(c) if c.src_input == input => Some(Selection::Copy(c.clone())),
                _ => None,
            })
            .collect(),
        Op::Exec(exec) => exec
            .mounts
            .iter()
            .filter(|m| m.kind == MountType::Bind && m.input == Some(input))
            .map(|m| Selection::Bind(m.selector.clone()))
            .collect(),
        _ => Vec::new(),
    }
}

/// What `op` selects from input `input` as stable bytes (the link key's selector): the
/// encodings of [`selections`], each length-framed.
pub fn selector(op: &Op, input: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for s in selections(op, input) {
        let bytes = s.encode();
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

/// The memo key of a selection of snapshot `snapshot`.
pub(crate) fn memo_key(snapshot: &str, selection: &Selection) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"rbuild-content-selection-memo");
    h.update(&(snapshot.len() as u64).to_le_bytes());
    h.update(snapshot.as_bytes());
    h.update(&selection.encode());
    h.finalize().into()
}

/// Reads memoised digests of `selections` of `snapshot`; `None` where there is none.
pub(crate) fn memoised(
    index: Option<&CacheIndex>,
    snapshot: &str,
    selections: &[Selection],
) -> Vec<Option<[u8; 32]>> {
    let Some(index) = index else {
        return vec![None; selections.len()];
    };
    let keys: Vec<Vec<u8>> = selections
        .iter()
        .map(|s| memo_key(snapshot, s).to_vec())
        .collect();
    match index.get_many_in(CONTENT_SELECTIONS, &keys) {
        Ok(found) => found
            .into_iter()
            .map(|v| v.and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok()))
            .collect(),
        Err(_) => vec![None; selections.len()],
    }
}

/// The digest of one input from its selection digests (in op order).
pub fn input_digest(selections: &[[u8; 32]]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"rbuild-content-input");
    h.update(&(selections.len() as u64).to_le_bytes());
    for s in selections {
        h.update(s);
    }
    h.finalize().into()
}

/// The digest of `selection` in the tree at `root` (the input's filesystem, mounted).
pub fn selection_digest(root: &Path, selection: &Selection) -> io::Result<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    h.update(b"rbuild-content-selection");
    h.update(&selection.encode());
    let mut walk = Walk::default();
    match selection {
        Selection::Bind(selector) => match resolve_in_root(root, selector, true)
            .and_then(|host| fs::symlink_metadata(&host).map(|m| (host, m)))
        {
            Ok((host, meta)) => {
                h.update(&walk.entry(&host, Path::new(""), &meta, None)?);
            }
            Err(_) => {
                h.update(b"m");
            }
        },
        Selection::Copy(c) => {
            let exclude = Matcher::new(&c.exclude_patterns);
            let exclude = (!exclude.is_empty()).then_some(&exclude);
            let sources = match expand_sources(root, &c.src, c.allow_wildcard) {
                Ok(s) => s,
                Err(e) => {
                    h.update(b"e");
                    h.update(e.to_string().as_bytes());
                    return Ok(h.finalize().into());
                }
            };
            for rel in sources {
                let name = rel.as_os_str().as_bytes();
                h.update(&(name.len() as u64).to_le_bytes());
                h.update(name);
                if let (Some(m), Some(file)) = (exclude, rel.file_name()) {
                    if m.excluded(&file.to_string_lossy()) {
                        h.update(b"x");
                        continue;
                    }
                }
                let found = resolve_in_root(root, &rel.to_string_lossy(), c.follow_symlinks)
                    .and_then(|host| fs::symlink_metadata(&host).map(|m| (host, m)));
                let Ok((host, meta)) = found else {
                    h.update(b"m");
                    continue;
                };
                if c.parents {
                    for dir in rel.ancestors().skip(1) {
                        let meta = resolve_in_root(root, &dir.to_string_lossy(), true)
                            .and_then(fs::metadata);
                        match meta {
                            Ok(m) => {
                                for v in [m.mode() & 0o7777, m.uid(), m.gid()] {
                                    h.update(&v.to_le_bytes());
                                }
                            }
                            Err(_) => {
                                h.update(b"m");
                            }
                        }
                    }
                }
                h.update(&walk.entry(&host, Path::new(""), &meta, exclude)?);
            }
        }
    }
    Ok(h.finalize().into())
}

/// One selection's walk: the hardlink groups met so far.
#[derive(Default)]
struct Walk {
    links: HashMap<(u64, u64), u64>,
}

impl Walk {
    fn entry(
        &mut self,
        path: &Path,
        srel: &Path,
        meta: &fs::Metadata,
        exclude: Option<&Matcher>,
    ) -> io::Result<[u8; 32]> {
        let mut h = blake3::Hasher::new();
        let ft = meta.file_type();
        h.update(&[crate::checksum::kind_byte(ft)]);
        for v in [meta.mode() & 0o7777, meta.uid(), meta.gid()] {
            h.update(&v.to_le_bytes());
        }
        hash_xattrs(&mut h, path)?;
        if ft.is_file() {
            h.update(&meta.size().to_le_bytes());
            h.update(&file_hash(path)?);
            let next = self.links.len() as u64;
            if meta.nlink() > 1 {
                match self.links.entry((meta.dev(), meta.ino())) {
                    std::collections::hash_map::Entry::Occupied(e) => {
                        h.update(b"H");
                        h.update(&e.get().to_le_bytes());
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(next);
                        h.update(b"F");
                    }
                }
            } else {
                h.update(b"F");
            }
        } else if ft.is_symlink() {
            h.update(fs::read_link(path)?.as_os_str().as_bytes());
        } else if ft.is_dir() {
            let mut names: Vec<_> = fs::read_dir(path)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()?;
            names.sort();
            for name in names {
                let child = path.join(&name);
                let child_srel: PathBuf = srel.join(&name);
                let child_meta = fs::symlink_metadata(&child)?;
                if !keeps(&child, &child_srel, child_meta.is_dir(), exclude)? {
                    continue;
                }
                let sub = self.entry(&child, &child_srel, &child_meta, exclude)?;
                h.update(&(name.len() as u64).to_le_bytes());
                h.update(name.as_bytes());
                h.update(&sub);
            }
        } else {
            h.update(&meta.rdev().to_le_bytes());
        }
        Ok(h.finalize().into())
    }
}

/// Whether the copy keeps the entry at `srel` (relative to the copied source) under
/// `--exclude`: an excluded directory counts only when something under it is re-included.
fn keeps(path: &Path, srel: &Path, is_dir: bool, exclude: Option<&Matcher>) -> io::Result<bool> {
    let Some(m) = exclude else {
        return Ok(true);
    };
    match m.verdict(&srel.to_string_lossy(), is_dir) {
        Verdict::Keep => Ok(true),
        Verdict::Drop => Ok(false),
        Verdict::Probe => keeps_anything(path, &mut |host, _, d| {
            let tail = host.strip_prefix(path).unwrap_or(host);
            m.verdict(&srel.join(tail).to_string_lossy(), d)
        }),
    }
}

fn file_hash(path: &Path) -> io::Result<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    let mut file = fs::File::open(path)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// Extended attributes of `path` (not following a symlink), sorted by name.
fn hash_xattrs(h: &mut blake3::Hasher, path: &Path) -> io::Result<()> {
    let mut names = vec![0u8; 1024];
    let len = loop {
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            // A filesystem without xattrs has none to copy.
            Err(rustix::io::Errno::NOTSUP) => break 0,
            Err(e) => return Err(e.into()),
        }
    };
    let mut list: Vec<&[u8]> = names[..len]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .collect();
    list.sort_unstable();
    h.update(&(list.len() as u64).to_le_bytes());
    for name in list {
        let mut value = vec![0u8; 256];
        let n = loop {
            let cname = std::ffi::CString::new(name).map_err(io::Error::other)?;
            match rustix::fs::lgetxattr(path, cname.as_c_str(), &mut value[..]) {
                Ok(n) => break n,
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 4, 0),
                Err(rustix::io::Errno::NODATA) => break 0,
                Err(e) => return Err(e.into()),
            }
        };
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name);
        h.update(&(n as u64).to_le_bytes());
        h.update(&value[..n]);
    }
    Ok(())
}

impl crate::Worker {
    /// The content digest of what `vertex` reads from its filesystem input `input` (resolved
    /// to `value`): memoised selection digests where the index has them, else computed on a
    /// read-only view of the snapshot and remembered.
    pub(crate) async fn input_content(
        &self,
        vertex: &crate::WorkVertex,
        input: usize,
        value: &crate::Value,
    ) -> Result<rbuild_solver::ContentDigest, crate::WorkerError> {
        let top = match value {
            crate::Value::Fs(top) => top.clone(),
            crate::Value::Context => {
                return Err(crate::WorkerError::Graph(format!(
                    "input {input} is the build context, not a filesystem"
                )))
            }
        };
        let selections = selections(&vertex.op, input);
        let what = format!(
            "input #{input}: {}",
            selections
                .iter()
                .map(|s| match s {
                    Selection::Copy(c) => c.src.clone(),
                    Selection::Bind(p) => format!("bind {p}"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
        let (snapshotter, index) = (self.snapshotter.clone(), self.index.clone());
        Self::blocking(move || {
            let id = top.as_ref().map(|s| s.0.clone());
            let mut digests = match &id {
                Some(id) => memoised(index.as_ref(), id, &selections),
                None => vec![None; selections.len()],
            };
            if digests.iter().any(Option::is_none) {
                let view = snapshotter.view(top.as_ref())?;
                let mut memo = Vec::new();
                for (s, d) in selections.iter().zip(digests.iter_mut()) {
                    if d.is_some() {
                        continue;
                    }
                    let digest =
                        selection_digest(view.path(), s).map_err(crate::WorkerError::Checksum)?;
                    *d = Some(digest);
                    if let Some(id) = &id {
                        memo.push((memo_key(id, s).to_vec(), digest.to_vec()));
                    }
                }
                drop(view);
                if let (Some(index), false) = (&index, memo.is_empty()) {
                    // Only an accelerator: a failed write costs a re-read next time.
                    let _ = index.put_many_in(CONTENT_SELECTIONS, &memo);
                }
            }
            let digests: Vec<[u8; 32]> = digests.into_iter().flatten().collect();
            Ok(rbuild_solver::ContentDigest {
                what,
                digest: input_digest(&digests),
            })
        })
        .await
    }
}
