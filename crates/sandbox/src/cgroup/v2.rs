//! cgroup v2: finding the unified hierarchy and its controllers, enabling the needed
//! controllers in every ancestor's `cgroup.subtree_control`, and creating the run's single
//! cgroup directory.

use super::plan::plan;
use super::{mkdir, read_trimmed, sweep, write, RunCgroup, CGROUP_ROOT};
use crate::spec::Limits;
use crate::status::{step, Failure};
use std::path::{Path, PathBuf};

/// True when `path` is a cgroup2 mount.
pub(super) fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// The cgroup v2 mount, if any: `/sys/fs/cgroup` (pure v2) or `/sys/fs/cgroup/unified`.
pub(super) fn v2_root() -> Option<PathBuf> {
    [CGROUP_ROOT, "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| is_cgroup2(p))
}

/// The controllers available in a v2 hierarchy.
pub(super) fn v2_controllers(root: &Path) -> Vec<String> {
    std::fs::read_to_string(root.join("cgroup.controllers"))
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

impl RunCgroup {
    /// Creates `<root>/<rel>/<name>` with `enable` turned on from the root down.
    pub(super) fn create_v2(
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
}
