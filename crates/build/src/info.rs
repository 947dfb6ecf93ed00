//! What `rbuild info` reports about the engine on this machine: rootless mode and its id
//! ranges, the snapshot backend the state root gets (overlay, or the copy fallback), the RUN
//! network and where limits can be enforced.

use crate::{BuildError, StateDir};
use rbuild_sandbox::rootless::{self, RootlessInfo};
use rbuild_snapshotter::{Backend, Snapshotter};
use std::path::PathBuf;

/// The engine's setup, as `rbuild info` prints it.
#[derive(Debug, Clone)]
pub struct EngineInfo {
    /// The state root.
    pub root: PathBuf,
    /// The rootless mapping, when running as an ordinary user.
    pub rootless: Option<RootlessInfo>,
    /// The snapshot backend the probe chose at this root.
    pub snapshotter: Backend,
    /// The slirp4netns binary of the default network, if installed.
    pub slirp4netns: Option<PathBuf>,
    /// Rootless: whether `/dev/net/tun` opens (the default network needs it).
    pub tun_accessible: bool,
    /// Rootless: the delegated cgroup v2 parent of run cgroups (`None`: limits not enforced).
    pub delegated_cgroup: Option<String>,
}

/// Probes the engine's setup at `state` (opens the snapshot store, as a build would).
pub fn engine_info(state: &StateDir) -> Result<EngineInfo, BuildError> {
    let snapshotter = Snapshotter::open(&state.snapshots())
        .map_err(|e| BuildError::step("opening snapshots", e))?;
    let rootless = rootless::current();
    Ok(EngineInfo {
        root: state.root().to_path_buf(),
        snapshotter: snapshotter.backend(),
        slirp4netns: rootless::slirp4netns_path(),
        tun_accessible: rootless::tun_accessible(),
        delegated_cgroup: rootless.as_ref().and_then(|_| rootless::delegated_cgroup()),
        rootless,
    })
}
