//! cgroup v1: the per-controller mounts under `/sys/fs/cgroup/<controller>`, creating the
//! run's directory under each, and the `cpuset.cpus`/`cpuset.mems` inheritance new cpuset
//! cgroups need before a process can join them.

use super::plan::plan;
use super::v2::is_cgroup2;
use super::{mkdir, read_trimmed, sweep, write, Controller, RunCgroup, CGROUP_ROOT};
use crate::spec::Limits;
use crate::status::{step, Failure};
use std::path::{Path, PathBuf};

/// The v1 mount of a controller (`/sys/fs/cgroup/<name>`), if it is a v1 hierarchy.
pub(super) fn v1_mount(c: Controller) -> Option<PathBuf> {
    let p = Path::new(CGROUP_ROOT).join(c.name());
    (p.join("cgroup.procs").exists() && !is_cgroup2(&p)).then_some(p)
}

impl RunCgroup {
    /// Creates `<mount>/<rel>/<name>` under each of `mounts`.
    pub(super) fn create_v1(
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
