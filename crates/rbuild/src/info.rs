//! `rbuild info`: how this machine runs builds (root or rootless and its id ranges, the
//! snapshot backend, the RUN network, where limits are enforced, the process sandbox).

use crate::errors::Report;
use crate::StoreArgs;
use rbuild_build::{engine_info, StateDir};

/// Prints the engine's setup.
pub fn run(store: &StoreArgs) -> Result<(), Report> {
    let engine = crate::run_opts::engine_settings(true)?;
    let state = StateDir::new(store.root_dir());
    let info = engine_info(&state).map_err(|e| Report::from_error("info", &e))?;
    println!("Root: {}", info.root.display());
    let backend = match info.snapshotter {
        rbuild_build::SnapshotBackend::Overlay => "overlay",
        rbuild_build::SnapshotBackend::Copy => "copy (overlay cannot mount here)",
    };
    match &info.rootless {
        None => println!("Rootless: false"),
        Some(r) => {
            let range = |start: u32, count: u32| {
                format!(
                    "{start}-{} ({count} ids)",
                    u64::from(start) + u64::from(count) - 1
                )
            };
            println!("Rootless: true");
            println!(
                " uid map: 0 -> {}, 1-{} -> {}",
                r.uid,
                r.subuid.count,
                range(r.subuid.start, r.subuid.count)
            );
            println!(
                " gid map: 0 -> {}, 1-{} -> {}",
                r.gid,
                r.subgid.count,
                range(r.subgid.start, r.subgid.count)
            );
        }
    }
    println!("Snapshotter: {backend}");
    let network = match (&info.slirp4netns, &info.rootless) {
        _ if engine.default_network == rbuild_sandbox::Network::Host => format!(
            "host ({}=host: RUN steps without --network share rbuild's network)",
            rbuild_sandbox::settings::DEFAULT_NETWORK_ENV
        ),
        (None, _) => {
            "none available (slirp4netns not installed: use --network=none or host)".to_string()
        }
        (Some(p), Some(_)) if !info.tun_accessible => format!(
            "slirp4netns ({}), but /dev/net/tun is not accessible: chmod 0666 /dev/net/tun, \
             or use --network=none or host",
            p.display()
        ),
        (Some(p), _) => format!("slirp4netns ({})", p.display()),
    };
    println!("Network: {network}");
    let limits = match (&info.rootless, &info.delegated_cgroup) {
        (None, _) => "enforced (cgroups)".to_string(),
        (Some(_), Some(parent)) => format!("enforced (delegated cgroup v2 subtree {parent})"),
        (Some(_), None) => "not enforced (no delegated cgroup v2 subtree)".to_string(),
    };
    println!("Limits: {limits}");
    match engine.process_sandbox {
        true => {
            println!("Process sandbox: true (each RUN has a pid namespace and /proc of its own)")
        }
        false => println!(
            "Process sandbox: false ({}=1)\n WARNING: {}",
            rbuild_sandbox::settings::NO_PROCESS_SANDBOX_ENV,
            rbuild_sandbox::settings::NO_PROCESS_SANDBOX_WARNING
        ),
    }
    Ok(())
}
