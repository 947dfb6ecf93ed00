//! Everything the child (pid 1, in its own mount namespace) mounts before it pivots into the
//! rootfs. Targets inside the rootfs are resolved with `openat2(RESOLVE_IN_ROOT)` so symlinks in
//! an image can never make us create files or mount over paths outside the rootfs, and mounts
//! go through `/proc/self/fd/N` of those descriptors, as runc does.

use crate::spec::{Mount, Rootfs, RunSpec};
use crate::status::{step, Failure};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use rustix::fs::{Mode, OFlags, ResolveFlags, CWD};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

mod proc;

/// The host directory the sandbox's scratch tmpfs is mounted on. Mounts on it exist only in each
/// sandbox's private mount namespace, so concurrent sandboxes share it without colliding and
/// nothing is ever mounted on it in the host namespace.
/// Rootless mode uses `SCRATCH_DIR-UID` (the user's host uid): root's directory is not ours there.
pub(crate) const SCRATCH_DIR: &str = "/tmp/.rbuild-sandbox-v1";

/// The scratch directory of this process: [`SCRATCH_DIR`], or its per-user variant rootless.
fn scratch_dir() -> String {
    match crate::rootless::current() {
        Some(info) => format!("{SCRATCH_DIR}-{}", info.uid),
        None => SCRATCH_DIR.to_string(),
    }
}

/// The classic mount(2) option string is cut at one page; stay well below it.
const MAX_MOUNT_DATA: usize = 3500;

/// Files masked (bound to /dev/null) or directories masked (read-only empty tmpfs), like runc.
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths re-mounted read-only, like runc.
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Host device nodes bind-mounted into the sandbox's /dev.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// What a missing mount target should be created as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
}

fn fd_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn mnt(
    source: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
    what: impl std::fmt::Display,
) -> Result<(), Failure> {
    mount(source, target, fstype, flags, data).map_err(step(what))
}

/// Lexically cleans an absolute in-rootfs path into a relative one ("" is the root itself).
fn clean_rel(path: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Opens (O_PATH) `rel` inside `root`, creating it (and missing parents as 0755 dirs) if needed.
fn ensure(root: &OwnedFd, rel: &Path, kind: Kind) -> Result<OwnedFd, Failure> {
    let open = |p: &Path| {
        let p = if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        };
        rustix::fs::openat2(
            root,
            p,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    };
    match open(rel) {
        Ok(fd) => return Ok(fd),
        Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(step(format!("open /{} in rootfs", rel.display()))(e)),
    }
    let (parent, name) = match (rel.parent(), rel.file_name()) {
        (Some(p), Some(n)) => (p, n),
        _ => {
            return Err(Failure::setup(format!(
                "cannot create /{} in rootfs",
                rel.display()
            )))
        }
    };
    let pfd = ensure(root, parent, Kind::Dir)?;
    let created = match kind {
        Kind::Dir => rustix::fs::mkdirat(&pfd, name, Mode::from_raw_mode(0o755)),
        Kind::File => rustix::fs::openat(
            &pfd,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o644),
        )
        .map(drop),
    };
    match created {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(step(format!("create /{} in rootfs", rel.display()))(e)),
    }
    open(rel).map_err(step(format!("open /{} in rootfs", rel.display())))
}

/// Makes the scratch directory exist as a real directory (not a symlink) owned by us.
fn ensure_scratch_dir(dir: &str) -> Result<(), Failure> {
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(step(format!("mkdir {dir}"))(e)),
    }
    let st = rustix::fs::lstat(dir).map_err(step(format!("lstat {dir}")))?;
    let is_dir = rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory;
    if !is_dir || st.st_uid != rustix::process::geteuid().as_raw() {
        return Err(Failure::setup(format!(
            "{dir} is not a directory owned by us"
        )));
    }
    Ok(())
}

/// Reads the kernel's messages for a filesystem context (after an fsconfig failure).
fn fs_context_log(fs: &OwnedFd) -> String {
    let mut msgs = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = rustix::io::read(fs, &mut buf) {
        if n == 0 {
            break;
        }
        msgs.push(String::from_utf8_lossy(&buf[..n]).trim().to_string());
    }
    if msgs.is_empty() {
        String::new()
    } else {
        format!(" [{}]", msgs.join("; "))
    }
}

enum NewApi {
    Mounted,
    /// The new mount API or `lowerdir+` is unavailable: fall back to mount(2).
    Unsupported,
}

/// Mounts overlayfs with the new mount API, one `lowerdir+` per layer (no page-size limit).
fn overlay_new_api(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &str,
    nodev: bool,
) -> Result<NewApi, Failure> {
    use rustix::mount::*;
    let fs = match fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) {
        Ok(fs) => fs,
        Err(rustix::io::Errno::NOSYS) => return Ok(NewApi::Unsupported),
        Err(e) => return Err(step("fsopen(overlay)")(e)),
    };
    for (i, lower) in lowers.iter().enumerate() {
        if let Err(e) = fsconfig_set_string(&fs, "lowerdir+", lower) {
            if i == 0 && e == rustix::io::Errno::INVAL {
                return Ok(NewApi::Unsupported);
            }
            let log = fs_context_log(&fs);
            return Err(step(format!("overlay lowerdir+ {}{log}", lower.display()))(
                e,
            ));
        }
    }
    let set = |key: &str, val: &Path| {
        fsconfig_set_string(&fs, key, val).map_err(|e| {
            step(format!(
                "overlay {key} {}{}",
                val.display(),
                fs_context_log(&fs)
            ))(e)
        })
    };
    // A volatile mount leaves `work/incompat/volatile` in the work dir, and overlayfs refuses
    // to mount that work dir again until it is gone. The caller hands over an unmounted
    // upper/work pair, so an earlier mount of it is over: its scratch dir can go.
    let scratch = work.join("work");
    if scratch.join("incompat").join("volatile").exists() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    set("upperdir", upper)?;
    set("workdir", work)?;
    // In a user namespace (rootless) overlayfs keeps its xattrs under `user.overlay.`, as the
    // snapshotter's mounts do; without it removing a lower directory fails with EIO.
    if crate::rootless::in_user_namespace() {
        fsconfig_set_flag(&fs, "userxattr")
            .map_err(|e| step(format!("overlay userxattr{}", fs_context_log(&fs)))(e))?;
    }
    // No syncs (copy-ups fsync each file and tearing the mount down syncs the whole upper
    // filesystem otherwise); the snapshotter makes committed snapshots durable. Best effort.
    let _ = fsconfig_set_flag(&fs, "volatile");
    fsconfig_create(&fs).map_err(|e| step(format!("create overlay{}", fs_context_log(&fs)))(e))?;
    let attrs = if nodev {
        MountAttrFlags::MOUNT_ATTR_NODEV
    } else {
        MountAttrFlags::empty()
    };
    let m = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(step("fsmount(overlay)"))?;
    move_mount(&m, "", CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(step(format!("move_mount overlay to {target}")))?;
    Ok(NewApi::Mounted)
}

/// Escapes a path for a classic overlay option string.
fn escape_opt(p: &Path) -> String {
    let s = p.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ':' | ',' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Mounts a rootfs (or a `RUN --mount` tree) at `target`; with `nodev`, device nodes in it
/// (from an image, a layer, or made by `mknod`) cannot be opened.
fn mount_rootfs(
    rootfs: &Rootfs,
    target: &str,
    empty_lower: &Path,
    nodev: bool,
) -> Result<(), Failure> {
    match rootfs {
        Rootfs::Dir(dir) => {
            mnt(
                Some(&dir.to_string_lossy()),
                target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
                format!("bind rootfs {}", dir.display()),
            )?;
            if nodev {
                remount(target, "the rootfs", false, true)?;
            }
            Ok(())
        }
        Rootfs::Overlay {
            lowerdirs,
            upperdir,
            workdir,
        } => {
            let empty = [empty_lower.to_path_buf()];
            let lowers: &[PathBuf] = if lowerdirs.is_empty() {
                &empty
            } else {
                lowerdirs
            };
            if let NewApi::Mounted = overlay_new_api(lowers, upperdir, workdir, target, nodev)? {
                return Ok(());
            }
            let lower = lowers
                .iter()
                .map(|l| escape_opt(l))
                .collect::<Vec<_>>()
                .join(":");
            let mut data = format!(
                "lowerdir={lower},upperdir={},workdir={}",
                escape_opt(upperdir),
                escape_opt(workdir)
            );
            if crate::rootless::in_user_namespace() {
                data.push_str(",userxattr");
            }
            if data.len() > MAX_MOUNT_DATA {
                return Err(Failure::setup(format!(
                    "mount overlay: {} lowerdirs need {} bytes of options, more than mount(2) takes, and this kernel lacks fsconfig lowerdir+",
                    lowers.len(),
                    data.len()
                )));
            }
            let flags = if nodev {
                MsFlags::MS_NODEV
            } else {
                MsFlags::empty()
            };
            mnt(
                Some("overlay"),
                target,
                Some("overlay"),
                flags,
                Some(&data),
                "mount overlay",
            )
        }
    }
}

/// Bind-mounts host `source` at `target` inside the rootfs, read-only if asked.
fn bind_into(root: &OwnedFd, source: &Path, target: &str, readonly: bool) -> Result<(), Failure> {
    let meta = std::fs::metadata(source)
        .map_err(step(format!("bind mount source {}", source.display())))?;
    let kind = if meta.is_dir() { Kind::Dir } else { Kind::File };
    let rel = clean_rel(target);
    let fd = ensure(root, &rel, kind)?;
    mnt(
        Some(&source.to_string_lossy()),
        &fd_path(&fd),
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
        format!("bind {} at {target}", source.display()),
    )?;
    // Re-resolve: the old descriptor points below the new mount. Host directories never give
    // the command device access (a node made in a cache mount by an earlier step included).
    let fd = ensure(root, &rel, kind)?;
    remount(&fd_path(&fd), target, readonly, true)
}

/// Binds an already open (O_PATH) `source` at `target` inside the rootfs.
fn bind_fd_into(
    root: &OwnedFd,
    source: &OwnedFd,
    target: &str,
    readonly: bool,
) -> Result<(), Failure> {
    let st = rustix::fs::fstat(source).map_err(step(format!("stat the source of {target}")))?;
    let kind = if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
    {
        Kind::Dir
    } else {
        Kind::File
    };
    let rel = clean_rel(target);
    let fd = ensure(root, &rel, kind)?;
    mnt(
        Some(&fd_path(source)),
        &fd_path(&fd),
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
        format!("bind mount at {target}"),
    )?;
    let fd = ensure(root, &rel, kind)?;
    remount(&fd_path(&fd), target, readonly, true)
}

/// Opens `rel` inside the directory `dir` without letting symlinks leave it.
fn open_in(dir: &Path, rel: &Path, what: &str) -> Result<OwnedFd, Failure> {
    let dfd = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(step(format!("open {}", dir.display())))?;
    let p = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    rustix::fs::openat2(
        &dfd,
        p,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(step(format!("{what}: /{}", rel.display())))
}

/// Sets up one `RUN --mount` (see [`Mount`]); `n` names its private scratch entries.
fn extra_mount(
    root: &OwnedFd,
    scratch: &Path,
    empty_dir: &Path,
    n: usize,
    m: &Mount,
) -> Result<(), Failure> {
    match m {
        Mount::Bind(b) => bind_into(root, &b.source, &b.target, b.readonly),
        Mount::Tree {
            source,
            selector,
            target,
            readonly,
        } => {
            let dir = scratch.join(format!("tree-{n}"));
            std::fs::create_dir(&dir).map_err(step(format!("mkdir {}", dir.display())))?;
            mount_rootfs(source, &dir.to_string_lossy(), empty_dir, true)?;
            let src = open_in(&dir, &clean_rel(selector), "mount source not found")?;
            bind_fd_into(root, &src, target, *readonly)
        }
        Mount::Tmpfs { target, size } => {
            let fd = ensure(root, &clean_rel(target), Kind::Dir)?;
            let mut data = "mode=1777".to_string();
            if let Some(size) = size {
                data.push_str(&format!(",size={size}"));
            }
            mnt(
                Some("tmpfs"),
                &fd_path(&fd),
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(&data),
                format!("mount tmpfs at {target}"),
            )
        }
        Mount::File {
            target,
            data,
            mode,
            uid,
            gid,
        } => {
            let path = scratch.join(format!("file-{n}"));
            {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(step(format!("create the file for {target}")))?;
                f.write_all(data)
                    .map_err(step(format!("write the file for {target}")))?;
            }
            std::os::unix::fs::chown(&path, Some(*uid), Some(*gid))
                .map_err(step(format!("chown the file for {target}")))?;
            std::fs::set_permissions(
                &path,
                std::os::unix::fs::PermissionsExt::from_mode(*mode & 0o7777),
            )
            .map_err(step(format!("chmod the file for {target}")))?;
            bind_into(root, &path, target, true)
        }
    }
}

/// Remounts the bind mount at `path` read-only, keeping its nosuid/nodev/noexec flags.
fn remount_ro(path: &str, what: &str) -> Result<(), Failure> {
    remount(path, what, true, false)
}

/// Remounts the bind mount at `path` adding read-only and/or nodev, keeping the flags it has.
fn remount(path: &str, what: &str, readonly: bool, nodev: bool) -> Result<(), Failure> {
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    if readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    if nodev {
        flags |= MsFlags::MS_NODEV;
    }
    if let Ok(st) = nix::sys::statvfs::statvfs(path) {
        use nix::sys::statvfs::FsFlags;
        let f = st.flags();
        for (have, want) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        ] {
            if f.contains(have) {
                flags |= want;
            }
        }
    }
    mnt(None, path, None, flags, None, format!("remount {what}"))
}

/// `/dev`: a nodev tmpfs (a node made there by `mknod` cannot be opened) holding bind mounts
/// of the host's standard nodes (each bind is a mount of the host's /dev, where nodes work),
/// a private devpts, /dev/shm and /dev/mqueue.
fn mount_dev(root: &OwnedFd, nodev: bool, shm_size: Option<u64>) -> Result<(), Failure> {
    let dev = ensure(root, Path::new("dev"), Kind::Dir)?;
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME;
    if nodev {
        flags |= MsFlags::MS_NODEV;
    }
    mnt(
        Some("tmpfs"),
        &fd_path(&dev),
        Some("tmpfs"),
        flags,
        Some("mode=755,size=65536k"),
        "mount tmpfs at /dev",
    )?;
    for name in DEVICES {
        let host = format!("/dev/{name}");
        if !Path::new(&host).exists() {
            continue;
        }
        let fd = ensure(root, &Path::new("dev").join(name), Kind::File)?;
        mnt(
            Some(&host),
            &fd_path(&fd),
            None,
            MsFlags::MS_BIND,
            None,
            format!("bind {host}"),
        )?;
    }
    let pts = ensure(root, Path::new("dev/pts"), Kind::Dir)?;
    mnt(
        Some("devpts"),
        &fd_path(&pts),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        "mount devpts at /dev/pts",
    )?;
    let shm = ensure(root, Path::new("dev/shm"), Kind::Dir)?;
    mnt(
        Some("shm"),
        &fd_path(&shm),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(&format!(
            "mode=1777,size={}",
            shm_size.filter(|s| *s > 0).unwrap_or(64 << 20)
        )),
        "mount tmpfs at /dev/shm",
    )?;
    let mq = ensure(root, Path::new("dev/mqueue"), Kind::Dir)?;
    match mount(
        Some("mqueue"),
        fd_path(&mq).as_str(),
        Some("mqueue"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    ) {
        Ok(()) | Err(nix::errno::Errno::ENODEV) => {}
        Err(e) => return Err(step("mount mqueue at /dev/mqueue")(e)),
    }
    let dev = ensure(root, Path::new("dev"), Kind::Dir)?; // the tmpfs, not the dir below it
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
        ("ptmx", "pts/ptmx"),
    ] {
        rustix::fs::symlinkat(to, &dev, link).map_err(step(format!("symlink /dev/{link}")))?;
    }
    Ok(())
}

fn mount_sys(root: &OwnedFd) -> Result<(), Failure> {
    let sys = ensure(root, Path::new("sys"), Kind::Dir)?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    match mount(
        Some("sysfs"),
        fd_path(&sys).as_str(),
        Some("sysfs"),
        flags,
        None::<&str>,
    ) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) | Err(nix::errno::Errno::EBUSY) => {
            // Fall back to a read-only recursive bind of the host's /sys.
            mnt(
                Some("/sys"),
                &fd_path(&sys),
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
                "rbind /sys",
            )?;
            let sys = ensure(root, Path::new("sys"), Kind::Dir)?;
            remount_ro(&fd_path(&sys), "/sys")
        }
        Err(e) => Err(step("mount sysfs at /sys")(e)),
    }
}

/// Contents written to the scratch tmpfs for generated `/etc/hosts` and `/etc/resolv.conf`.
pub(crate) struct Generated {
    /// Generated /etc/hosts (used when the spec has no hosts_file).
    pub hosts: Vec<u8>,
    /// Copy of the host's /etc/resolv.conf (used when the spec has no resolv_conf).
    pub resolv: Vec<u8>,
}

/// Builds the mount namespace (rootfs and everything in it) and pivots into the rootfs.
pub(crate) fn setup_and_pivot(
    spec: &RunSpec,
    generated: &Generated,
    process_sandbox: bool,
) -> Result<(), Failure> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(step("unshare(CLONE_NEWNS)"))?;
    mnt(
        None,
        "/",
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
        "make / rprivate",
    )?;
    let scratch_dir = scratch_dir();
    ensure_scratch_dir(&scratch_dir)?;
    mnt(
        Some("rbuild-sandbox"),
        scratch_dir.as_str(),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=700,size=16m"),
        format!("mount scratch tmpfs at {scratch_dir}"),
    )?;
    let scratch = Path::new(&scratch_dir);
    let root_dir = scratch.join("root");
    let empty_dir = scratch.join("empty");
    for d in [&root_dir, &empty_dir] {
        std::fs::create_dir(d).map_err(step(format!("mkdir {}", d.display())))?;
    }
    let hosts_src = match &spec.hosts_file {
        Some(p) => p.clone(),
        None => {
            let p = scratch.join("hosts");
            std::fs::write(&p, &generated.hosts).map_err(step("write generated hosts"))?;
            p
        }
    };
    let resolv_src = match &spec.resolv_conf {
        Some(p) => p.clone(),
        None => {
            let p = scratch.join("resolv.conf");
            std::fs::write(&p, &generated.resolv).map_err(step("write resolv.conf copy"))?;
            p
        }
    };
    let root_str = root_dir.to_string_lossy().into_owned();
    // Device nodes anywhere but the standard set in /dev cannot be opened (nodev), unless
    // the run is insecure (as BuildKit's security.insecure, which is privileged).
    let nodev = spec.security != crate::spec::Security::Insecure;
    mount_rootfs(&spec.rootfs, &root_str, &empty_dir, nodev)?;
    let root = rustix::fs::open(
        &root_dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(step("open rootfs"))?;

    proc::mount_proc(&root, process_sandbox)?;
    mount_dev(&root, nodev, spec.limits.shm_size)?;
    mount_sys(&root)?;
    bind_into(&root, &hosts_src, "/etc/hosts", true)?;
    bind_into(&root, &resolv_src, "/etc/resolv.conf", true)?;
    for (n, m) in spec.extra_mounts.iter().enumerate() {
        extra_mount(&root, scratch, &empty_dir, n, m)?;
    }

    nix::unistd::fchdir(root.as_fd()).map_err(step("chdir to rootfs"))?;
    nix::unistd::pivot_root(".", ".").map_err(step("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(step("unmount old root"))?;
    nix::unistd::chdir("/").map_err(step("chdir /"))?;
    drop(root);
    mask_paths()
}

fn mask_paths() -> Result<(), Failure> {
    for p in MASKED_PATHS {
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            continue;
        };
        if meta.is_dir() {
            mnt(
                Some("tmpfs"),
                p,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                Some("size=0"),
                format!("mask {p}"),
            )?;
        } else {
            mnt(
                Some("/dev/null"),
                p,
                None,
                MsFlags::MS_BIND,
                None,
                format!("mask {p}"),
            )?;
        }
    }
    for p in READONLY_PATHS {
        if std::fs::symlink_metadata(p).is_err() {
            continue;
        }
        mnt(
            Some(p),
            p,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
            format!("bind {p}"),
        )?;
        remount_ro(p, p)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_rel_stays_inside() {
        assert_eq!(clean_rel("/a/../../b/./c"), PathBuf::from("b/c"));
        assert_eq!(clean_rel("/"), PathBuf::new());
    }

    #[test]
    fn escape_opt_escapes_separators() {
        assert_eq!(escape_opt(Path::new("/a:b,c")), "/a\\:b\\,c");
    }
}
