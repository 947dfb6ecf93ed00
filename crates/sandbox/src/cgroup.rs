//! Resource limits of a run: one cgroup per run (memory, swap, CPU quota and weight, cpuset,
//! pids), OOM-kill detection, the sweep of cgroups a killed helper left behind, and `--ulimit`
//! rlimits.
//!
//! cgroup v2 is used when every controller the limits need is available in the v2 hierarchy
//! (`/sys/fs/cgroup` on pure v2 hosts, `/sys/fs/cgroup/unified` on hybrid ones); otherwise
//! the v1 controllers mounted at `/sys/fs/cgroup/<controller>`. The run's cgroup is
//! `<parent>/<name>` (the parent is `--cgroup-parent`, relative to the cgroup root, or
//! `rbuild`); on v2 the needed controllers are enabled in every ancestor's
//! `cgroup.subtree_control`, on v1 the same relative directory is made under each controller
//! (cpuset levels inherit `cpuset.cpus`/`cpuset.mems` from their parent).
//!
//! Call order (helper, host namespaces): [`RunCgroup::create`] before forking; the child
//! (pid 1 of the new pid namespace) calls [`RunCgroup::enter`] before anything else, and
//! [`apply_ulimits`] while it still has all capabilities; after the child is reaped the
//! helper asks [`RunCgroup::oom_killed`] and calls [`RunCgroup::remove`].

// The helper calls this module once the integrator wires it in; until then only tests do.

use crate::spec::{Limits, SwapLimit, Ulimit};
use crate::status::{step, Failure};
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

/// Where cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The parent of run cgroups without `--cgroup-parent`.
const DEFAULT_PARENT: &str = "rbuild";
/// Run cgroups are named `rbuild-run-<helper pid>`; the sweep recognises them by it.
const NAME_PREFIX: &str = "rbuild-run-";
/// The CFS period used for `--cpus`, as docker.
const CPU_PERIOD_US: u64 = 100_000;
/// How long [`RunCgroup::remove`] retries `EBUSY` (exiting processes still in the cgroup).
const REMOVE_TIMEOUT: Duration = Duration::from_secs(2);

/// The cgroup name of the run of helper `helper_pid` (what the sweep looks for).
pub(crate) fn run_name(helper_pid: u32) -> String {
    format!("{NAME_PREFIX}{helper_pid}")
}

/// A cgroup controller the limits can need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Controller {
    Memory,
    Cpu,
    Cpuset,
    Pids,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Cpuset => "cpuset",
            Controller::Pids => "pids",
        }
    }
}

/// One value to write into the run's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Setting {
    controller: Controller,
    file: &'static str,
    value: String,
    /// The command-line flag and value it comes from, for error messages.
    flag: String,
    /// Skipped when the file does not exist (swap accounting is optional).
    optional: bool,
}

/// The controllers `limits` need.
fn needed(limits: &Limits) -> Vec<Controller> {
    let mut c = Vec::new();
    if limits.memory.is_some() || limits.memory_swap.is_some() {
        c.push(Controller::Memory);
    }
    if limits.nano_cpus.is_some() || limits.cpu_shares.is_some() {
        c.push(Controller::Cpu);
    }
    if limits.cpuset_cpus.is_some() {
        c.push(Controller::Cpuset);
    }
    if limits.pids.is_some_and(|p| p > 0) {
        c.push(Controller::Pids);
    }
    c
}

/// cgroup v1 `cpu.shares` to v2 `cpu.weight` (the conversion runc and systemd use).
fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// What to write, in order, for cgroup v2 (`v2`) or v1.
fn plan(limits: &Limits, v2: bool) -> Result<Vec<Setting>, Failure> {
    let mut out = Vec::new();
    let mut set = |controller, file, value: String, flag: String, optional| {
        out.push(Setting {
            controller,
            file,
            value,
            flag,
            optional,
        })
    };
    match (limits.memory, limits.memory_swap) {
        (None, Some(_)) => {
            return Err(Failure::setup(
                "--memory-swap needs --memory: set the memory limit too",
            ))
        }
        (Some(0), _) => return Err(Failure::setup("--memory=0: the limit must be positive")),
        (Some(m), swap) => {
            let flag = format!("--memory={m}");
            // Memory + swap in total; None is unlimited.
            let total = match swap {
                None => Some(m.saturating_mul(2)),
                Some(SwapLimit::Unlimited) => None,
                Some(SwapLimit::Bytes(t)) if t < m => {
                    return Err(Failure::setup(format!(
                        "--memory-swap={t} must be at least --memory={m}"
                    )))
                }
                Some(SwapLimit::Bytes(t)) => Some(t),
            };
            let swap_flag = match swap {
                None => format!("--memory={m} (memory-swap defaults to twice the memory)"),
                Some(SwapLimit::Unlimited) => "--memory-swap=-1".to_string(),
                Some(SwapLimit::Bytes(t)) => format!("--memory-swap={t}"),
            };
            if v2 {
                set(Controller::Memory, "memory.max", m.to_string(), flag, false);
                let swap_max = total.map_or("max".to_string(), |t| (t - m).to_string());
                set(
                    Controller::Memory,
                    "memory.swap.max",
                    swap_max,
                    swap_flag,
                    true,
                );
            } else {
                set(
                    Controller::Memory,
                    "memory.limit_in_bytes",
                    m.to_string(),
                    flag,
                    false,
                );
                let memsw = total.map_or("-1".to_string(), |t| t.to_string());
                set(
                    Controller::Memory,
                    "memory.memsw.limit_in_bytes",
                    memsw,
                    swap_flag,
                    true,
                );
            }
        }
        (None, None) => {}
    }
    if let Some(n) = limits.nano_cpus {
        let quota = (u128::from(n) * u128::from(CPU_PERIOD_US) / 1_000_000_000) as u64;
        let flag = format!("--cpus={}", n as f64 / 1e9);
        if quota < 1000 {
            return Err(Failure::setup(format!("{flag}: the minimum is 0.01 CPUs")));
        }
        if v2 {
            set(
                Controller::Cpu,
                "cpu.max",
                format!("{quota} {CPU_PERIOD_US}"),
                flag,
                false,
            );
        } else {
            set(
                Controller::Cpu,
                "cpu.cfs_period_us",
                CPU_PERIOD_US.to_string(),
                flag.clone(),
                false,
            );
            set(
                Controller::Cpu,
                "cpu.cfs_quota_us",
                quota.to_string(),
                flag,
                false,
            );
        }
    }
    if let Some(s) = limits.cpu_shares {
        let flag = format!("--cpu-shares={s}");
        if v2 {
            let w = shares_to_weight(s).to_string();
            set(Controller::Cpu, "cpu.weight", w, flag, false);
        } else {
            set(Controller::Cpu, "cpu.shares", s.to_string(), flag, false);
        }
    }
    if let Some(c) = &limits.cpuset_cpus {
        let flag = format!("--cpuset-cpus={c}");
        set(Controller::Cpuset, "cpuset.cpus", c.clone(), flag, false);
    }
    if let Some(p) = limits.pids.filter(|p| *p > 0) {
        let flag = format!("--pids-limit={p}");
        set(Controller::Pids, "pids.max", p.to_string(), flag, false);
    }
    Ok(out)
}

/// `--cgroup-parent` as a relative path below the cgroup root (no `..`, no `.`).
fn parent_path(parent: Option<&str>) -> Result<PathBuf, Failure> {
    let Some(p) = parent else {
        return Ok(PathBuf::from(DEFAULT_PARENT));
    };
    let invalid = |why: &str| Failure::setup(format!("--cgroup-parent={p:?}: {why}"));
    if p.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::CurDir | Component::Prefix(_) => {
                return Err(invalid(
                    "must be a path below the cgroup root without `.` or `..`",
                ))
            }
        }
    }
    Ok(out)
}

fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// The cgroup v2 mount, if any: `/sys/fs/cgroup` (pure v2) or `/sys/fs/cgroup/unified`.
fn v2_root() -> Option<PathBuf> {
    [CGROUP_ROOT, "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| is_cgroup2(p))
}

/// The controllers available in a v2 hierarchy.
fn v2_controllers(root: &Path) -> Vec<String> {
    std::fs::read_to_string(root.join("cgroup.controllers"))
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The v1 mount of a controller (`/sys/fs/cgroup/<name>`), if it is a v1 hierarchy.
fn v1_mount(c: Controller) -> Option<PathBuf> {
    let p = Path::new(CGROUP_ROOT).join(c.name());
    (p.join("cgroup.procs").exists() && !is_cgroup2(&p)).then_some(p)
}

/// Makes `dir` if missing (another run may make it at the same time).
fn mkdir(dir: &Path) -> Result<bool, Failure> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(step(format!("create cgroup {}", dir.display()))(e)),
    }
}

fn write(dir: &Path, file: &str, value: &str) -> std::io::Result<()> {
    std::fs::write(dir.join(file), value)
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// True when a process with this (host) pid exists.
fn pid_alive(pid: i32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Removes run cgroups in `parent` whose helper is dead (left by a SIGKILLed helper). Only
/// empty cgroups can be removed; anything else is left alone.
fn sweep(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(NAME_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me || i32::try_from(pid).map_or(true, pid_alive) {
            continue;
        }
        let _ = std::fs::remove_dir(entry.path());
    }
}

/// The run's cgroup: one directory (v2) or one per controller (v1).
#[derive(Debug)]
pub(crate) struct RunCgroup {
    /// `(controller, dir)`; v2 has one entry with `None`.
    dirs: Vec<(Option<Controller>, PathBuf)>,
    /// The memory limit, for the OOM message.
    memory: Option<u64>,
}

impl RunCgroup {
    /// Creates the run's cgroup `<parent>/<name>` with the limits applied (in the host
    /// namespaces, before the sandbox child forks), after sweeping stale run cgroups.
    pub(crate) fn create(limits: &Limits, name: &str) -> Result<RunCgroup, Failure> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(Failure::setup(format!("invalid cgroup name {name:?}")));
        }
        let rel = parent_path(limits.cgroup_parent.as_deref())?;
        let need = needed(limits);
        if let Some(root) = v2_root() {
            let have = v2_controllers(&root);
            if need.iter().all(|c| have.iter().any(|h| h == c.name())) {
                let mut enable: Vec<&str> = need.iter().map(|c| c.name()).collect();
                if !enable.contains(&"memory") && have.iter().any(|h| h == "memory") {
                    enable.push("memory"); // memory.events tells OOM kills apart
                }
                return Self::create_v2(limits, &root, &rel, name, &enable);
            }
        }
        let mut controllers = need.clone();
        if !controllers.contains(&Controller::Memory) && v1_mount(Controller::Memory).is_some() {
            controllers.push(Controller::Memory);
        }
        let mut mounts = Vec::new();
        for c in controllers {
            match v1_mount(c) {
                Some(m) => mounts.push((c, m)),
                None => {
                    return Err(Failure::setup(format!(
                        "the limits need the {} cgroup controller, which is neither enabled \
                         in cgroup v2 nor mounted as cgroup v1 at {CGROUP_ROOT}/{}",
                        c.name(),
                        c.name()
                    )))
                }
            }
        }
        if mounts.is_empty() {
            return Err(Failure::setup(format!(
                "no usable cgroup hierarchy at {CGROUP_ROOT} (needed for --cgroup-parent)"
            )));
        }
        Self::create_v1(limits, &mounts, &rel, name)
    }

    fn create_v2(
        limits: &Limits,
        root: &Path,
        rel: &Path,
        name: &str,
        enable: &[&str],
    ) -> Result<RunCgroup, Failure> {
        let settings = plan(limits, true)?;
        let parent = root.join(rel);
        // Enable the controllers from the root down to the parent.
        let mut dir = root.to_path_buf();
        let mut levels = vec![dir.clone()];
        for c in rel.components() {
            dir.push(c);
            levels.push(dir.clone());
        }
        for (i, level) in levels.iter().enumerate() {
            if i > 0 {
                mkdir(level)?;
            }
            let current = read_trimmed(&level.join("cgroup.subtree_control")).unwrap_or_default();
            let missing: Vec<String> = enable
                .iter()
                .filter(|c| !current.split_whitespace().any(|x| x == **c))
                .map(|c| format!("+{c}"))
                .collect();
            if !missing.is_empty() {
                write(level, "cgroup.subtree_control", &missing.join(" ")).map_err(step(
                    format!(
                        "enable {} in {}/cgroup.subtree_control",
                        missing.join(" "),
                        level.display()
                    ),
                ))?;
            }
        }
        sweep(&parent);
        let leaf = parent.join(name);
        let _ = std::fs::remove_dir(&leaf); // a leftover of an earlier helper with our pid
        mkdir(&leaf)?;
        let cg = RunCgroup {
            dirs: vec![(None, leaf)],
            memory: limits.memory,
        };
        cg.apply(&settings)
    }

    fn create_v1(
        limits: &Limits,
        mounts: &[(Controller, PathBuf)],
        rel: &Path,
        name: &str,
    ) -> Result<RunCgroup, Failure> {
        let settings = plan(limits, false)?;
        let mut cg = RunCgroup {
            dirs: Vec::new(),
            memory: limits.memory,
        };
        for (c, mount) in mounts {
            let mut dir = mount.clone();
            let mut levels = Vec::new();
            for comp in rel.components() {
                dir.push(comp);
                levels.push(dir.clone());
            }
            sweep(&dir);
            dir.push(name);
            let _ = std::fs::remove_dir(&dir);
            levels.push(dir.clone());
            // Registered first, so a failure below removes this leaf too.
            cg.dirs.push((Some(*c), dir));
            for level in &levels {
                let created = mkdir(level);
                if *c == Controller::Cpuset {
                    created.and_then(|_| inherit_cpuset(level))
                } else {
                    created.map(|_| ())
                }
                .inspect_err(|_| cg.remove_quietly())?;
            }
        }
        cg.apply(&settings)
    }

    /// Writes the settings; on failure removes the cgroup and names the flag and value.
    fn apply(self, settings: &[Setting]) -> Result<RunCgroup, Failure> {
        for s in settings {
            let Some(dir) = self.dir(s.controller) else {
                continue;
            };
            let path = dir.join(s.file);
            if s.optional && !path.exists() {
                continue;
            }
            if let Err(e) = std::fs::write(&path, &s.value) {
                let e = crate::status::Errnoish::from(e).0;
                let msg = format!(
                    "{}: the kernel refused {} = {} ({}): {e}",
                    s.flag,
                    s.file,
                    s.value,
                    path.display()
                );
                self.remove_quietly();
                return Err(Failure::setup(msg));
            }
        }
        Ok(self)
    }

    /// The directory holding `controller`'s files.
    fn dir(&self, controller: Controller) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| c.is_none() || *c == Some(controller))
            .map(|(_, d)| d.as_path())
    }

    /// Moves the calling process (and so everything it forks) into the cgroup.
    pub(crate) fn enter(&self) -> Result<(), Failure> {
        for (_, dir) in &self.dirs {
            write(dir, "cgroup.procs", "0")
                .map_err(step(format!("join cgroup {}", dir.display())))?;
        }
        Ok(())
    }

    /// True when the kernel's OOM killer killed a process of the run.
    pub(crate) fn oom_killed(&self) -> bool {
        let Some(dir) = self.dir(Controller::Memory) else {
            return false;
        };
        let field = |text: &str, key: &str| {
            text.lines()
                .filter_map(|l| l.split_once(' '))
                .find(|(k, _)| *k == key)
                .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        };
        if let Ok(events) = std::fs::read_to_string(dir.join("memory.events")) {
            return field(&events, "oom_kill").is_some_and(|n| n > 0);
        }
        match std::fs::read_to_string(dir.join("memory.oom_control")) {
            Ok(c) => match field(&c, "oom_kill") {
                Some(n) => n > 0,
                None => field(&c, "under_oom").is_some_and(|n| n > 0),
            },
            Err(_) => false,
        }
    }

    /// The run's memory limit in bytes (`--memory`).
    pub(crate) fn memory_limit(&self) -> Option<u64> {
        self.memory
    }

    /// Removes the cgroup once the run's processes are gone, retrying `EBUSY` for a moment
    /// (processes of a dead pid namespace take a little while to leave).
    pub(crate) fn remove(self) -> Result<(), Failure> {
        let deadline = Instant::now() + REMOVE_TIMEOUT;
        for (_, dir) in &self.dirs {
            let mut pause = Duration::from_millis(1);
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_millis(50));
                    }
                    Err(e) => return Err(step(format!("remove cgroup {}", dir.display()))(e)),
                }
            }
        }
        Ok(())
    }

    fn remove_quietly(&self) {
        for (_, dir) in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// A new v1 cpuset cgroup starts with empty `cpuset.cpus`/`cpuset.mems`, and no process can
/// join it until they are set: copy them from the parent.
fn inherit_cpuset(dir: &Path) -> Result<(), Failure> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        if read_trimmed(&dir.join(file)).is_some_and(|v| !v.is_empty()) {
            continue;
        }
        let value = read_trimmed(&parent.join(file)).unwrap_or_default();
        write(dir, file, &value).map_err(step(format!(
            "copy {file} = {value:?} into {}",
            dir.display()
        )))?;
    }
    Ok(())
}

/// Sets the `--ulimit` rlimits of the calling process (before it drops CAP_SYS_RESOURCE, so
/// hard limits may be raised).
pub(crate) fn apply_ulimits(ulimits: &[Ulimit]) -> Result<(), Failure> {
    for u in ulimits {
        let show = |v: Option<u64>| v.map_or("-1".to_string(), |n| n.to_string());
        let flag = format!("--ulimit {}={}:{}", u.name, show(u.soft), show(u.hard));
        u.validate()
            .map_err(|e| Failure::setup(format!("{flag}: {e}")))?;
        let resource = u
            .resource()
            .map_err(|e| Failure::setup(format!("{flag}: {e}")))?;
        let limit = libc::rlimit {
            rlim_cur: u.soft.unwrap_or(libc::RLIM_INFINITY),
            rlim_max: u.hard.unwrap_or(libc::RLIM_INFINITY),
        };
        // SAFETY: `limit` is a valid rlimit for the duration of the call.
        let r = unsafe { libc::setrlimit(resource as _, &limit) };
        if r != 0 {
            return Err(step(format!("{flag}: setrlimit"))(nix::errno::Errno::last()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::ForkResult;

    const MIB: u64 = 1024 * 1024;

    fn root_or_skip(name: &str) -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        if std::env::var("RBUILD_REQUIRE_ROOT").as_deref() == Ok("1") {
            panic!("{name} needs root and RBUILD_REQUIRE_ROOT=1 is set");
        }
        eprintln!("SKIPPED {name}: needs root (RBUILD_REQUIRE_ROOT=1 makes this a failure)");
        false
    }

    /// A unique run-cgroup name for a test (the test process's pid is alive, so the sweep of
    /// a concurrent test never takes it).
    fn test_name(tag: &str) -> String {
        format!("{}-test-{tag}", run_name(std::process::id()))
    }

    /// Runs `f` in a forked child; returns how the child ended.
    fn in_child(f: impl FnOnce() -> i32) -> WaitStatus {
        // SAFETY: the child only makes syscalls and allocations (glibc's fork keeps malloc
        // usable) before `_exit`.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            ForkResult::Child => {
                let code = f();
                // SAFETY: leave without running the test harness's exit handlers.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => loop {
                match waitpid(child, None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    r => break r.expect("waitpid"),
                }
            },
        }
    }

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn plans_v1_and_v2_values() {
        let l = Limits {
            memory: Some(64 * MIB),
            nano_cpus: Some(1_500_000_000),
            cpu_shares: Some(512),
            cpuset_cpus: Some("0".into()),
            pids: Some(10),
            ..limits()
        };
        let files = |v2| -> Vec<(String, String)> {
            plan(&l, v2)
                .expect("plan")
                .into_iter()
                .map(|s| (s.file.to_string(), s.value))
                .collect()
        };
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            files(false),
            vec![
                pair("memory.limit_in_bytes", "67108864"),
                pair("memory.memsw.limit_in_bytes", "134217728"),
                pair("cpu.cfs_period_us", "100000"),
                pair("cpu.cfs_quota_us", "150000"),
                pair("cpu.shares", "512"),
                pair("cpuset.cpus", "0"),
                pair("pids.max", "10"),
            ]
        );
        assert_eq!(
            files(true),
            vec![
                pair("memory.max", "67108864"),
                pair("memory.swap.max", "67108864"),
                pair("cpu.max", "150000 100000"),
                pair("cpu.weight", "20"),
                pair("cpuset.cpus", "0"),
                pair("pids.max", "10"),
            ]
        );
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn plans_swap_and_rejects_bad_limits() {
        let swap = |s| {
            plan(
                &Limits {
                    memory: Some(100),
                    memory_swap: Some(s),
                    ..limits()
                },
                true,
            )
            .map(|p| p[1].value.clone())
        };
        assert_eq!(swap(SwapLimit::Bytes(300)).expect("plan"), "200");
        assert_eq!(swap(SwapLimit::Unlimited).expect("plan"), "max");
        let e = swap(SwapLimit::Bytes(50)).expect_err("swap below memory");
        assert!(e.message.contains("--memory-swap=50"), "{}", e.message);
        let e = plan(
            &Limits {
                memory_swap: Some(SwapLimit::Bytes(10)),
                ..limits()
            },
            false,
        )
        .expect_err("swap without memory");
        assert!(e.message.contains("--memory"), "{}", e.message);
        let e = plan(
            &Limits {
                nano_cpus: Some(1_000_000),
                ..limits()
            },
            false,
        )
        .expect_err("0.001 CPUs");
        assert!(e.message.contains("--cpus=0.001"), "{}", e.message);
    }

    #[test]
    fn cgroup_parent_is_validated() {
        assert_eq!(parent_path(None).expect("default"), PathBuf::from("rbuild"));
        assert_eq!(
            parent_path(Some("/ci/jobs")).expect("absolute"),
            PathBuf::from("ci/jobs")
        );
        for bad in ["../escape", "a/../../b", "./a"] {
            let e = parent_path(Some(bad)).expect_err(bad);
            assert!(e.message.contains("--cgroup-parent"), "{}", e.message);
        }
    }

    #[test]
    fn ulimit_names_are_parsed_and_checked() {
        let u = Ulimit::parse("nofile=1024:2048").expect("parse");
        assert_eq!((u.soft, u.hard), (Some(1024), Some(2048)));
        let u = Ulimit::parse("core=-1").expect("parse");
        assert_eq!((u.soft, u.hard), (None, None));
        assert_eq!(
            Ulimit::parse("bogus=1"),
            Err(crate::spec::UlimitError::UnknownName("bogus".into()))
        );
        assert!(matches!(
            Ulimit::parse("nofile=10:5"),
            Err(crate::spec::UlimitError::SoftAboveHard { .. })
        ));
        assert!(Ulimit::parse("nofile").is_err());
        assert!(Ulimit::parse("nofile=ten").is_err());
        let e = apply_ulimits(&[Ulimit {
            name: "bogus".into(),
            soft: Some(1),
            hard: Some(1),
        }])
        .expect_err("unknown name");
        assert!(
            e.message.contains("invalid ulimit type: bogus"),
            "{}",
            e.message
        );
    }

    #[test]
    fn ulimits_are_set() {
        let status = in_child(|| {
            let u = [Ulimit::parse("nofile=1024:2048").expect("parse")];
            if apply_ulimits(&u).is_err() {
                return 1;
            }
            let mut r = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: `r` is a valid out-parameter.
            if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
                return 2;
            }
            if (r.rlim_cur, r.rlim_max) == (1024, 2048) {
                0
            } else {
                3
            }
        });
        assert_eq!(status, WaitStatus::Exited(status_pid(&status), 0));
    }

    fn status_pid(s: &WaitStatus) -> nix::unistd::Pid {
        s.pid().expect("a pid")
    }

    /// A child in a 64 MiB cgroup touches 200 MiB: the OOM killer kills it, the cgroup says
    /// so, and `remove` leaves nothing behind.
    #[test]
    fn oom_kill_is_detected_and_cgroup_removed() {
        if !root_or_skip("oom_kill_is_detected_and_cgroup_removed") {
            return;
        }
        let l = Limits {
            memory: Some(64 * MIB),
            ..limits()
        };
        let cg = RunCgroup::create(&l, &test_name("oom")).expect("create");
        assert_eq!(cg.memory_limit(), Some(64 * MIB));
        assert!(!cg.oom_killed());
        let status = in_child(|| {
            if cg.enter().is_err() {
                return 1;
            }
            let len = 200 * MIB as usize;
            let mut v: Vec<u8> = Vec::with_capacity(len);
            let p = v.as_mut_ptr();
            for i in (0..len).step_by(4096) {
                // SAFETY: within the allocation's capacity.
                unsafe { p.add(i).write_volatile(1) };
            }
            std::hint::black_box(&v);
            0
        });
        assert!(
            matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _)),
            "{status:?}"
        );
        assert!(cg.oom_killed());
        let dirs: Vec<PathBuf> = cg.dirs.iter().map(|(_, d)| d.clone()).collect();
        assert!(!dirs.is_empty());
        cg.remove().expect("remove");
        for d in dirs {
            assert!(!d.exists(), "{} is left", d.display());
        }
    }

    /// With `--pids-limit 10` the child and 9 forks fill the cgroup: the next fork fails with
    /// EAGAIN.
    #[test]
    fn pids_limit_stops_forks() {
        if !root_or_skip("pids_limit_stops_forks") {
            return;
        }
        let l = Limits {
            pids: Some(10),
            ..limits()
        };
        let cg = RunCgroup::create(&l, &test_name("pids")).expect("create");
        let status = in_child(|| {
            if cg.enter().is_err() {
                return 100;
            }
            // Children wait for the pipe to close, then exit.
            let Ok((r, w)) = nix::unistd::pipe() else {
                return 101;
            };
            let mut forked = 0;
            let mut code = 102;
            for _ in 0..20 {
                // SAFETY: the grandchild only reads and exits.
                match unsafe { nix::unistd::fork() } {
                    Ok(ForkResult::Child) => {
                        drop(w);
                        let mut b = [0u8; 1];
                        let _ = nix::unistd::read(&r, &mut b);
                        // SAFETY: leave at once.
                        unsafe { libc::_exit(0) }
                    }
                    Ok(ForkResult::Parent { .. }) => forked += 1,
                    Err(nix::errno::Errno::EAGAIN) => {
                        code = forked;
                        break;
                    }
                    Err(_) => {
                        code = 103;
                        break;
                    }
                }
            }
            drop(w);
            while waitpid(None, None).is_ok() {}
            code
        });
        assert_eq!(status, WaitStatus::Exited(status_pid(&status), 9));
        cg.remove().expect("remove");
    }

    #[test]
    fn cpu_values_land_in_the_files() {
        if !root_or_skip("cpu_values_land_in_the_files") {
            return;
        }
        let l = Limits {
            nano_cpus: Some(500_000_000),
            cpu_shares: Some(512),
            cpuset_cpus: Some("0".into()),
            memory: Some(64 * MIB),
            pids: Some(10),
            ..limits()
        };
        let cg = RunCgroup::create(&l, &test_name("values")).expect("create");
        let read = |c: Controller, f: &str| {
            read_trimmed(&cg.dir(c).expect("controller dir").join(f)).expect(f)
        };
        if cg.dirs[0].0.is_none() {
            assert_eq!(read(Controller::Cpu, "cpu.max"), "50000 100000");
            assert_eq!(read(Controller::Cpu, "cpu.weight"), "20");
            assert_eq!(read(Controller::Memory, "memory.max"), "67108864");
        } else {
            assert_eq!(read(Controller::Cpu, "cpu.cfs_quota_us"), "50000");
            assert_eq!(read(Controller::Cpu, "cpu.cfs_period_us"), "100000");
            assert_eq!(read(Controller::Cpu, "cpu.shares"), "512");
            assert_eq!(
                read(Controller::Memory, "memory.limit_in_bytes"),
                "67108864"
            );
            let memsw = cg
                .dir(Controller::Memory)
                .expect("memory")
                .join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                assert_eq!(read_trimmed(&memsw).as_deref(), Some("134217728"));
            }
        }
        assert_eq!(read(Controller::Cpuset, "cpuset.cpus"), "0");
        assert_eq!(read(Controller::Pids, "pids.max"), "10");
        // The calling process can join (cpuset.mems was inherited on v1).
        let status = in_child(|| if cg.enter().is_ok() { 0 } else { 1 });
        assert_eq!(status, WaitStatus::Exited(status_pid(&status), 0));
        cg.remove().expect("remove");
    }

    #[test]
    fn refused_limits_name_the_flag_and_value() {
        if !root_or_skip("refused_limits_name_the_flag_and_value") {
            return;
        }
        let name = test_name("refused");
        let l = Limits {
            cpuset_cpus: Some("0-4095".into()),
            ..limits()
        };
        let e = RunCgroup::create(&l, &name).expect_err("no machine has 4096 CPUs here");
        assert!(e.message.contains("--cpuset-cpus=0-4095"), "{}", e.message);
        assert!(e.message.contains("cpuset.cpus = 0-4095"), "{}", e.message);
        // Nothing is left behind.
        for m in ["cpuset", ""] {
            let d = Path::new(CGROUP_ROOT)
                .join(m)
                .join(DEFAULT_PARENT)
                .join(&name);
            assert!(!d.exists(), "{} is left", d.display());
        }
    }

    /// `--cgroup-parent` alone still gives the run a cgroup of its own under that parent
    /// (v2 when there is a v2 hierarchy: on this hybrid host, the controller-less one).
    #[test]
    fn cgroup_parent_alone_places_the_run() {
        if !root_or_skip("cgroup_parent_alone_places_the_run") {
            return;
        }
        let parent = format!("rbuild-test-parent-{}", std::process::id());
        let l = Limits {
            cgroup_parent: Some(format!("/{parent}")),
            ..limits()
        };
        let name = test_name("parent");
        let cg = RunCgroup::create(&l, &name).expect("create");
        let want = format!("/{parent}/{name}");
        let status = in_child(|| {
            if cg.enter().is_err() {
                return 1;
            }
            let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
            if own.lines().any(|l| l.ends_with(&want)) {
                0
            } else {
                2
            }
        });
        assert_eq!(status, WaitStatus::Exited(status_pid(&status), 0));
        let parents: Vec<PathBuf> = cg
            .dirs
            .iter()
            .filter_map(|(_, d)| d.parent().map(Path::to_path_buf))
            .collect();
        cg.remove().expect("remove");
        for p in parents {
            std::fs::remove_dir(&p).expect("remove the test parent");
        }
    }

    /// A run cgroup named after a dead helper is swept by the next `create`.
    #[test]
    fn stale_cgroups_of_dead_helpers_are_swept() {
        if !root_or_skip("stale_cgroups_of_dead_helpers_are_swept") {
            return;
        }
        // A pid that just died (reaped) stands for a SIGKILLed helper.
        let dead = in_child(|| 0);
        let dead_pid = status_pid(&dead).as_raw() as u32;
        let l = Limits {
            pids: Some(5),
            ..limits()
        };
        // Create the stale cgroup exactly where a run of that helper would be.
        let stale = RunCgroup::create(&l, &run_name(dead_pid)).expect("create stale");
        let stale_dirs: Vec<PathBuf> = stale.dirs.iter().map(|(_, d)| d.clone()).collect();
        assert!(stale_dirs.iter().all(|d| d.exists()));
        let live = RunCgroup::create(&l, &test_name("sweep")).expect("create");
        for d in &stale_dirs {
            assert!(!d.exists(), "{} was not swept", d.display());
        }
        live.remove().expect("remove");
    }
}
