//! `RUN --mount`: turns the llb [`ExecMount`]s of an exec into sandbox mounts (bind views of
//! inputs, persistent cache directories, tmpfs, secrets), keeps what must live for the run
//! (throwaway snapshots, cache locks), and removes the mount points the run had to create from
//! the result, as BuildKit does.

use crate::{dockerignore, Value, WorkerError};
use rbuild_llb::{CacheMountOpt, CacheSharing, ExecMount, ExecOp, MountType};
use rbuild_sandbox::{BindMount, Mount, Rootfs};
use rbuild_snapshotter::{Active, RootfsSpec, Snapshotter};
use sha2::Digest as _;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where the value of a build secret comes from (`--secret id=ID,src=FILE|env=VAR`). The value
/// is read only when a RUN mounts the secret, and never enters the graph or the cache.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A host file.
    File(PathBuf),
    /// An environment variable of the rbuild process.
    Env(String),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::File(p) => write!(f, "File({})", p.display()),
            SecretSource::Env(v) => write!(f, "Env({v})"),
        }
    }
}

impl SecretSource {
    fn read(&self) -> io::Result<Option<Vec<u8>>> {
        match self {
            SecretSource::File(p) => match std::fs::read(p) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
            SecretSource::Env(v) => Ok(std::env::var_os(v).map(|s| {
                use std::os::unix::ffi::OsStringExt;
                s.into_vec()
            })),
        }
    }
}

/// Everything the worker needs to set up the mounts of one exec.
pub(crate) struct MountEnv<'a> {
    pub snapshotter: &'a Snapshotter,
    pub context: Option<&'a Path>,
    pub excludes: &'a [String],
    pub cache_root: &'a Path,
    pub secrets: &'a HashMap<String, SecretSource>,
    /// Forwarded SSH agent sockets (`--ssh`), by id.
    pub ssh: &'a HashMap<String, PathBuf>,
    /// Told when a `sharing=locked` cache waits over a second for another process.
    pub reporter: Option<&'a rbuild_oci::lock::WaitReporter>,
}

/// The prepared mounts of one exec; keep it alive until the process has exited.
pub(crate) struct Prepared {
    /// Sandbox mounts, parents before children.
    pub mounts: Vec<Mount>,
    /// `K=V` for secrets exposed as environment variables.
    pub env: Vec<(String, String)>,
    /// Throwaway snapshots backing bind mounts (discarded on drop: rw writes vanish).
    _actives: Vec<Active>,
    /// Locks on cache directories.
    _locks: Vec<File>,
}

fn mount_err(msg: impl Into<String>) -> WorkerError {
    WorkerError::Mount(msg.into())
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> WorkerError {
    move |e| WorkerError::Mount(format!("{what}: {e}"))
}

/// The sandbox's root filesystem for a snapshot's mount spec.
pub fn to_sandbox_rootfs(spec: RootfsSpec) -> Rootfs {
    match spec {
        RootfsSpec::Overlay {
            lowerdirs,
            upperdir,
            workdir,
        } => Rootfs::Overlay {
            lowerdirs,
            upperdir,
            workdir,
        },
        RootfsSpec::Dir(d) => Rootfs::Dir(d),
    }
}

fn rel_of(selector: &str) -> String {
    selector.trim_start_matches('/').to_string()
}

/// Copies `rel` (a file or directory under `src_root`) to `dest`, skipping `.dockerignore`d
/// paths (relative to `src_root`).
fn copy_filtered(
    src_root: &Path,
    rel: &str,
    dest: &Path,
    matcher: &dockerignore::Matcher,
) -> io::Result<()> {
    let src = if rel.is_empty() {
        src_root.to_path_buf()
    } else {
        src_root.join(rel)
    };
    let meta = std::fs::symlink_metadata(&src)?;
    let ft = meta.file_type();
    if ft.is_dir() {
        match std::fs::create_dir(dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let mut names: Vec<_> = std::fs::read_dir(&src)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for name in names {
            let child_rel = if rel.is_empty() {
                PathBuf::from(&name)
            } else {
                Path::new(rel).join(&name)
            };
            let child_str = child_rel.to_string_lossy();
            let child_meta = std::fs::symlink_metadata(src_root.join(&child_rel))?;
            let keep = match matcher.verdict(&child_str, child_meta.is_dir()) {
                dockerignore::Verdict::Keep => true,
                dockerignore::Verdict::Drop => false,
                // An excluded directory is kept only when it holds re-included (`!`) paths.
                dockerignore::Verdict::Probe => {
                    let top = src_root.join(&child_rel);
                    dockerignore::keeps_anything(&top, &mut |host, _, d| {
                        let tail = host.strip_prefix(&top).unwrap_or(host);
                        matcher.verdict(&child_rel.join(tail).to_string_lossy(), d)
                    })?
                }
            };
            if !keep {
                continue;
            }
            copy_filtered(src_root, &child_str, &dest.join(&name), matcher)?;
        }
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    } else if ft.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(&src)?, dest)?;
    } else if ft.is_file() {
        std::fs::copy(&src, dest)?;
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    Ok(())
}

/// The directory name of cache mount `id` under the cache root.
fn cache_dir_name(id: &str) -> String {
    hex::encode(&sha2::Sha256::digest(id.as_bytes())[..16])
}

fn open_lock(path: &Path) -> Result<File, WorkerError> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(format!("opening {}", path.display())))
}

impl MountEnv<'_> {
    /// Creates the cache directory `dir` if it does not exist yet: empty or seeded from the
    /// mount's `from` input, with the mount's owner and mode.
    fn init_cache_dir(
        &self,
        dir: &Path,
        m: &ExecMount,
        inputs: &[Value],
    ) -> Result<(), WorkerError> {
        if dir.is_dir() {
            return Ok(());
        }
        let opt = m
            .cache
            .as_ref()
            .ok_or_else(|| mount_err("cache mount without options"))?;
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let tmp = dir.with_extension(format!(
            "tmp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        let seeded = (|| -> Result<(), WorkerError> {
            match m.input.map(|i| inputs.get(i)) {
                None => std::fs::create_dir(&tmp).map_err(io_err("creating a cache dir"))?,
                Some(Some(Value::Fs(id))) => {
                    let view = self.snapshotter.view(id.as_ref())?;
                    copy_filtered(
                        view.path(),
                        &rel_of(&m.selector),
                        &tmp,
                        &dockerignore::Matcher::new::<&str>(&[]),
                    )
                    .map_err(io_err(format!("seeding cache {}", m.target)))?;
                }
                Some(Some(Value::Context)) => {
                    let ctx = self.context.ok_or_else(|| mount_err("no build context"))?;
                    copy_filtered(
                        ctx,
                        &rel_of(&m.selector),
                        &tmp,
                        &dockerignore::Matcher::new(self.excludes),
                    )
                    .map_err(io_err(format!("seeding cache {}", m.target)))?;
                }
                Some(None) => return Err(mount_err("cache mount source input missing")),
            }
            std::os::unix::fs::chown(&tmp, Some(opt.uid), Some(opt.gid))
                .map_err(io_err("chown cache dir"))?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(opt.mode & 0o7777))
                .map_err(io_err("chmod cache dir"))?;
            Ok(())
        })();
        if let Err(e) = seeded {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if std::fs::rename(&tmp, dir).is_err() {
            // Someone else created it first: use theirs.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Ok(())
    }

    /// Prepares the mounts of `exec` (inputs: the exec vertex's input values).
    pub(crate) fn prepare(&self, exec: &ExecOp, inputs: &[Value]) -> Result<Prepared, WorkerError> {
        let mut out = Prepared {
            mounts: Vec::new(),
            env: Vec::new(),
            _actives: Vec::new(),
            _locks: Vec::new(),
        };
        for m in &exec.mounts {
            match m.kind {
                MountType::Bind => self.bind(m, inputs, &mut out)?,
                MountType::Cache => self.cache(m, inputs, &mut out)?,
                MountType::Tmpfs => out.mounts.push(Mount::Tmpfs {
                    target: m.target.clone(),
                    size: m.tmpfs_size,
                }),
                MountType::Secret => self.secret(m, &mut out)?,
                MountType::Ssh => self.ssh(m, &mut out)?,
            }
        }
        // Parents before children, otherwise in the order given.
        out.mounts
            .sort_by_key(|m| Path::new(m.target()).components().count());
        Ok(out)
    }

    /// A bind mount of an input: the build context or a throwaway snapshot of a filesystem.
    fn bind(&self, m: &ExecMount, inputs: &[Value], out: &mut Prepared) -> Result<(), WorkerError> {
        let rel = rel_of(&m.selector);
        match m.input.and_then(|i| inputs.get(i)) {
            Some(Value::Context) => self.context_bind(m, rel, out),
            Some(Value::Fs(id)) => {
                let active = self.snapshotter.prepare(id.as_ref())?;
                out.mounts.push(Mount::Tree {
                    source: to_sandbox_rootfs(active.rootfs()),
                    selector: rel,
                    target: m.target.clone(),
                    readonly: m.readonly,
                });
                out._actives.push(active);
                Ok(())
            }
            None => Err(mount_err(format!("bind mount {} has no source", m.target))),
        }
    }

    /// A bind mount of the build context's `rel`: the context itself when read-only and
    /// unfiltered, else a private filtered copy (`.dockerignore` applies, writes vanish).
    fn context_bind(
        &self,
        m: &ExecMount,
        rel: String,
        out: &mut Prepared,
    ) -> Result<(), WorkerError> {
        let ctx = self.context.ok_or_else(|| mount_err("no build context"))?;
        if self.excludes.is_empty() && m.readonly {
            out.mounts.push(Mount::Tree {
                source: Rootfs::Dir(ctx.to_path_buf()),
                selector: rel,
                target: m.target.clone(),
                readonly: true,
            });
            return Ok(());
        }
        let active = self.snapshotter.prepare(None)?;
        let base = Path::new(&rel)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let (dest, selector) = match (std::fs::metadata(ctx.join(&rel)), base) {
            (Ok(md), Some(b)) if !md.is_dir() => (active.upperdir().join(&b), b),
            _ => (active.upperdir().to_path_buf(), String::new()),
        };
        copy_filtered(ctx, &rel, &dest, &dockerignore::Matcher::new(self.excludes))
            .map_err(io_err(format!("mount source \"/{rel}\" for {}", m.target)))?;
        out.mounts.push(Mount::Tree {
            source: Rootfs::Dir(active.upperdir().to_path_buf()),
            selector,
            target: m.target.clone(),
            readonly: m.readonly,
        });
        out._actives.push(active);
        Ok(())
    }

    /// A persistent cache directory, locked as its sharing mode says and seeded on first use.
    fn cache(
        &self,
        m: &ExecMount,
        inputs: &[Value],
        out: &mut Prepared,
    ) -> Result<(), WorkerError> {
        let opt = m
            .cache
            .as_ref()
            .ok_or_else(|| mount_err("cache mount without options"))?;
        std::fs::create_dir_all(self.cache_root)
            .map_err(io_err(format!("creating {}", self.cache_root.display())))?;
        let (dir, lock) = self.lock_cache_dir(opt)?;
        self.init_cache_dir(&dir, m, inputs)?;
        out.mounts.push(Mount::Bind(BindMount {
            source: dir,
            target: m.target.clone(),
            readonly: m.readonly,
        }));
        out._locks.push(lock);
        Ok(())
    }

    /// The cache directory for `opt` and its lock file, held as the sharing mode says: shared
    /// (registered, never waits), locked (waits for an exclusive lock) or private (the first
    /// of `ID`, `ID-1`, ... nobody else holds).
    fn lock_cache_dir(&self, opt: &CacheMountOpt) -> Result<(PathBuf, File), WorkerError> {
        let base = cache_dir_name(&opt.id);
        match opt.sharing {
            CacheSharing::Shared => {
                let lock = open_lock(&self.cache_root.join(format!("{base}.lock")))?;
                // Registers as a user (so private users go elsewhere), never waits.
                let _ = lock.try_lock_shared();
                Ok((self.cache_root.join(&base), lock))
            }
            CacheSharing::Locked => {
                let lock_path = self.cache_root.join(format!("{base}.lock"));
                let lock = open_lock(&lock_path)?;
                rbuild_oci::lock::lock_exclusive(&lock, &lock_path, self.cache_root, self.reporter)
                    .map_err(|e| mount_err(format!("locking cache {}: {e}", opt.id)))?;
                Ok((self.cache_root.join(&base), lock))
            }
            CacheSharing::Private => {
                let mut n = 0usize;
                loop {
                    let name = if n == 0 {
                        base.clone()
                    } else {
                        format!("{base}-{n}")
                    };
                    let lock = open_lock(&self.cache_root.join(format!("{name}.lock")))?;
                    if lock.try_lock().is_ok() {
                        return Ok((self.cache_root.join(name), lock));
                    }
                    n += 1;
                }
            }
        }
    }

    /// A secret as a file and/or an environment variable; a missing optional secret is skipped.
    fn secret(&self, m: &ExecMount, out: &mut Prepared) -> Result<(), WorkerError> {
        let opt = m
            .secret
            .as_ref()
            .ok_or_else(|| mount_err("secret mount without options"))?;
        let value = match self.secrets.get(&opt.id) {
            Some(src) => src
                .read()
                .map_err(|e| mount_err(format!("secret {}: {e}", opt.id)))?,
            None => None,
        };
        let Some(data) = value else {
            if opt.required {
                return Err(mount_err(format!("secret {}: not found", opt.id)));
            }
            return Ok(());
        };
        if let Some(var) = &opt.env {
            out.env
                .push((var.clone(), String::from_utf8_lossy(&data).into_owned()));
        }
        if !m.target.is_empty() {
            out.mounts.push(Mount::File {
                target: m.target.clone(),
                data,
                mode: opt.mode,
                uid: opt.uid,
                gid: opt.gid,
            });
        }
        Ok(())
    }
}

impl MountEnv<'_> {
    /// An SSH agent socket forwarded with `--ssh`: the host socket itself is bound at the
    /// target (read-write: clients must connect). BuildKit serves a proxy socket owned by the
    /// mount's uid/gid with its mode; a bind keeps the host socket's owner and mode instead.
    /// A missing id is skipped unless `required`, with BuildKit's message.
    fn ssh(&self, m: &ExecMount, out: &mut Prepared) -> Result<(), WorkerError> {
        let opt = m
            .ssh
            .as_ref()
            .ok_or_else(|| mount_err("ssh mount without options"))?;
        let Some(socket) = self.ssh.get(&opt.id) else {
            if opt.required {
                return Err(mount_err(format!(
                    "no SSH key {:?} forwarded from the client",
                    opt.id
                )));
            }
            return Ok(());
        };
        out.mounts.push(Mount::Bind(BindMount {
            source: socket.clone(),
            target: m.target.clone(),
            readonly: false,
        }));
        Ok(())
    }
}

/// Replaces or adds `K=V` entries of an environment list.
pub(crate) fn merge_env(env: &mut Vec<String>, extra: &[(String, String)]) {
    for (k, v) in extra {
        env.retain(|kv| kv.split_once('=').map(|(ek, _)| ek).unwrap_or(kv) != k);
        env.push(format!("{k}={v}"));
    }
}

fn exists_in(spec: &RootfsSpec, rel: &Path) -> bool {
    match spec {
        RootfsSpec::Overlay {
            lowerdirs,
            upperdir,
            ..
        } => std::iter::once(upperdir)
            .chain(lowerdirs.iter())
            .any(|d| std::fs::symlink_metadata(d.join(rel)).is_ok()),
        RootfsSpec::Dir(dir) => std::fs::symlink_metadata(dir.join(rel)).is_ok(),
    }
}

/// The in-rootfs paths (relative) that mounting at `targets` will create: each missing target
/// and its missing parents, deepest first (BuildKit's MountStubsCleaner).
pub(crate) fn stub_paths<'a>(
    spec: &RootfsSpec,
    targets: impl IntoIterator<Item = &'a str>,
) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for t in targets {
        let mut rel = PathBuf::new();
        for c in Path::new(t).components() {
            match c {
                std::path::Component::Normal(n) => rel.push(n),
                std::path::Component::ParentDir => {
                    rel.pop();
                }
                _ => {}
            }
        }
        while !rel.as_os_str().is_empty() && !exists_in(spec, &rel) {
            if !out.contains(&rel) {
                out.push(rel.clone());
            }
            rel.pop();
        }
    }
    out
}

/// Removes the mount stubs from the run's upper dir when they are still empty (an empty dir or
/// an empty file), keeping the parent's timestamps.
pub(crate) fn remove_stubs(upper: &Path, stubs: &[PathBuf]) {
    for rel in stubs {
        let path = upper.join(rel);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let empty = if meta.is_dir() {
            std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none())
        } else {
            meta.is_file() && meta.len() == 0
        };
        if !empty {
            continue;
        }
        let parent = path.parent().map(Path::to_path_buf);
        let times = parent
            .as_ref()
            .and_then(|p| std::fs::symlink_metadata(p).ok())
            .map(|m| (m.atime(), m.atime_nsec(), m.mtime(), m.mtime_nsec()));
        let removed = if meta.is_dir() {
            std::fs::remove_dir(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if removed.is_ok() {
            if let (Some(p), Some((a, an, m, mn))) = (parent, times) {
                set_times(&p, a, an, m, mn);
            }
        }
    }
}

fn set_times(path: &Path, atime: i64, atime_ns: i64, mtime: i64, mtime_ns: i64) {
    use rustix::fs::{Timespec, Timestamps};
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: atime,
            tv_nsec: atime_ns,
        },
        last_modification: Timespec {
            tv_sec: mtime,
            tv_nsec: mtime_ns,
        },
    };
    let _ = rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    );
}

/// Content checksums of the build-context paths the mounts of `exec` use (bind sources and
/// cache seeds), for the cache key.
pub(crate) fn context_mount_patterns(exec: &ExecOp, context_inputs: &[bool]) -> Vec<String> {
    exec.mounts
        .iter()
        .filter(|m| {
            m.input
                .is_some_and(|i| context_inputs.get(i).copied().unwrap_or(false))
        })
        .map(|m| {
            let rel = rel_of(&m.selector);
            if rel.is_empty() {
                ".".to_string()
            } else {
                rel
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbuild_llb::{CacheMountOpt, NetworkMode};

    fn exec_with_cache(sharing: CacheSharing) -> ExecOp {
        ExecOp {
            args: vec!["true".into()],
            env: vec![],
            cwd: "/".into(),
            user: String::new(),
            network: NetworkMode::Host,
            security: Default::default(),
            extra_hosts: vec![],
            proxy_env: vec![],
            mounts: vec![ExecMount {
                kind: MountType::Cache,
                target: "/c".into(),
                input: None,
                selector: "/".into(),
                readonly: false,
                cache: Some(CacheMountOpt {
                    id: "the-id".into(),
                    sharing,
                    uid: 0,
                    gid: 0,
                    mode: 0o755,
                }),
                tmpfs_size: None,
                secret: None,
                ssh: None,
            }],
        }
    }

    fn source(p: &Prepared) -> PathBuf {
        match &p.mounts[0] {
            Mount::Bind(b) => b.source.clone(),
            other => panic!("not a bind: {other:?}"),
        }
    }

    #[test]
    fn cache_sharing_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let snapshotter = match Snapshotter::open(&tmp.path().join("snapshots")) {
            Ok(s) => s,
            Err(e) => {
                println!("SKIPPED: no snapshotter: {e}");
                return;
            }
        };
        let secrets = HashMap::new();
        let ssh = HashMap::new();
        let cache_root = tmp.path().join("cache-mounts-v1");
        let env = MountEnv {
            snapshotter: &snapshotter,
            context: None,
            excludes: &[],
            cache_root: &cache_root,
            secrets: &secrets,
            ssh: &ssh,
            reporter: None,
        };
        let shared1 = env
            .prepare(&exec_with_cache(CacheSharing::Shared), &[])
            .unwrap();
        let shared2 = env
            .prepare(&exec_with_cache(CacheSharing::Shared), &[])
            .unwrap();
        assert_eq!(source(&shared1), source(&shared2));
        // private: the shared dir is busy, so another (pooled) one.
        let private = env
            .prepare(&exec_with_cache(CacheSharing::Private), &[])
            .unwrap();
        assert_ne!(source(&private), source(&shared1));
        drop((shared1, shared2));
        let private2 = env
            .prepare(&exec_with_cache(CacheSharing::Private), &[])
            .unwrap();
        assert_eq!(source(&private2), cache_root.join(cache_dir_name("the-id")));
        drop((private, private2));

        // locked: a second user waits until the first is done.
        let first = env
            .prepare(&exec_with_cache(CacheSharing::Locked), &[])
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let second = env
                    .prepare(&exec_with_cache(CacheSharing::Locked), &[])
                    .unwrap();
                tx.send(source(&second)).unwrap();
            });
            std::thread::sleep(std::time::Duration::from_millis(300));
            assert!(rx.try_recv().is_err(), "locked cache was not exclusive");
            drop(first);
            let got = rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("second user never got the lock");
            assert_eq!(got, cache_root.join(cache_dir_name("the-id")));
        });
    }

    #[test]
    fn stubs_are_missing_targets_and_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs_create(root, "etc");
        let spec = RootfsSpec::Dir(root.to_path_buf());
        let stubs = stub_paths(&spec, ["/etc/hosts", "/a/b/c", "/etc"]);
        assert_eq!(
            stubs,
            vec![
                PathBuf::from("etc/hosts"),
                PathBuf::from("a/b/c"),
                PathBuf::from("a/b"),
                PathBuf::from("a"),
            ]
        );
        fs_create(root, "a/b/c");
        std::fs::write(root.join("etc/hosts"), b"").unwrap();
        remove_stubs(root, &stubs);
        assert!(!root.join("a").exists());
        assert!(!root.join("etc/hosts").exists());
        assert!(root.join("etc").exists());
        // Non-empty stubs stay.
        fs_create(root, "a/b/c");
        std::fs::write(root.join("a/b/c/data"), b"x").unwrap();
        remove_stubs(root, &stubs);
        assert!(root.join("a/b/c/data").exists());
    }

    fn fs_create(root: &Path, rel: &str) {
        std::fs::create_dir_all(root.join(rel)).unwrap();
    }
}
