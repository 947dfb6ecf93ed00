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
//!
//! Submodules: `plan` turns the limits into file writes, `v2` and `v1` create the run's
//! cgroup in either hierarchy, `ulimit` sets `--ulimit` rlimits. This module owns the
//! [`RunCgroup`] API, the choice of hierarchy, and the sweep of stale run cgroups.

mod plan;
mod ulimit;
mod v1;
mod v2;

#[cfg(test)]
mod tests;

pub(crate) use ulimit::apply_ulimits;

use crate::spec::Limits;
use crate::status::{step, Failure};
use plan::{needed, Setting};
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};
use v1::v1_mount;
use v2::{v2_controllers, v2_root};

/// Where cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The parent of run cgroups without `--cgroup-parent`.
const DEFAULT_PARENT: &str = "rbuild";
/// Run cgroups are named `rbuild-run-<helper pid>`; the sweep recognises them by it.
const NAME_PREFIX: &str = "rbuild-run-";
/// How long [`RunCgroup::remove`] retries `EBUSY` (exiting processes still in the cgroup).
const REMOVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Rootless: the parent for run cgroups inside the user's delegated cgroup v2 subtree
/// (`<highest ancestor of our own cgroup whose cgroup.subtree_control and cgroup.procs we may
/// write>/rbuild`, relative to the v2 root), or `None` when nothing is delegated to us.
pub(crate) fn delegated_parent() -> Option<String> {
    use nix::unistd::{access, AccessFlags};
    let root = v2_root()?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = own.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    let mut rel = PathBuf::new();
    for c in Path::new(own).components() {
        if let Component::Normal(n) = c {
            rel.push(n);
            let dir = root.join(&rel);
            let writable = |f: &str| access(&dir.join(f), AccessFlags::W_OK).is_ok();
            if writable("cgroup.subtree_control") && writable("cgroup.procs") {
                return Some(format!("{}/{DEFAULT_PARENT}", rel.display()));
            }
        }
    }
    None
}

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
