//! `rbuild prune` and `rbuild du`: the CLI side of garbage collection (flags, the confirmation
//! prompt, docker-style output); the collection itself is `rbuild_build::gc`.

use crate::errors::Report;
use crate::StoreArgs;
use clap::Args;
use rbuild_build::gc::{self, PruneOptions};
use rbuild_build::StateDir;
use std::io::{BufRead, Write};

/// `rbuild prune` flags (as `docker builder prune`).
#[derive(Args, Debug, Clone)]
pub struct PruneArgs {
    /// Remove all build cache (unpacked base layers and cache mounts too), not just build results.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Filter values, e.g. `until=24h` (records not used for 24 hours).
    #[arg(long = "filter", value_name = "FILTER")]
    pub filters: Vec<String>,
    /// Remove least recently used cache until the root holds at most SIZE (e.g. 10GB).
    #[arg(long = "keep-storage", value_name = "SIZE", value_parser = crate::run_opts::parse_size)]
    pub keep_storage: Option<u64>,
    /// Do not prompt for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
}

/// `rbuild du` flags (as `docker buildx du`; the global `-v`/`--verbose` lists each cache
/// record: ID, reclaimable, size, last used).
#[derive(Args, Debug, Clone)]
pub struct DuArgs {}

use crate::table::human_size4 as human_size;

fn wait_reporter() -> rbuild_oci::lock::WaitReporter {
    rbuild_oci::lock::WaitReporter::new(|w| match w.holder {
        Some(pid) => eprintln!("waiting for {} (held by pid {pid})", w.root.display()),
        None => eprintln!("waiting for {}", w.root.display()),
    })
}

fn gc_error(e: gc::GcError) -> Report {
    Report::from_error("error", &e)
}

/// Runs `rbuild prune`.
pub fn run_prune(args: PruneArgs, verbose: bool, store: &StoreArgs) -> Result<(), Report> {
    let mut opts = PruneOptions {
        all: args.all,
        until: None,
        keep_storage: args.keep_storage,
    };
    for f in &args.filters {
        opts.add_filter(f).map_err(gc_error)?;
    }
    if !args.force {
        let what = if args.all {
            "WARNING! This will remove all build cache."
        } else {
            "WARNING! This will remove all dangling build cache."
        };
        print!("{what} Are you sure you want to continue? [y/N] ");
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "Yes" | "YES") {
            println!();
            return Ok(());
        }
    }
    let state = StateDir::new(store.root_dir());
    if !state.has_store() {
        println!("Total reclaimed space: 0B");
        return Ok(());
    }
    let reporter = wait_reporter();
    let report = gc::prune(&state, &opts, Some(&reporter)).map_err(gc_error)?;
    if verbose && !report.records.is_empty() {
        println!("ID\tRECLAIMABLE\tSIZE");
        for r in &report.records {
            println!("{}\ttrue\t{}", r.id, human_size(r.size));
        }
    } else if !report.records.is_empty() {
        println!("Deleted build cache objects:");
        for r in &report.records {
            println!("{}", r.id);
        }
        println!();
    }
    if report.debug_states > 0 {
        // `--debug-on-fail=keep` states (their snapshots are in the space reclaimed).
        println!("Deleted kept failed steps: {}", report.debug_states);
    }
    println!("Total reclaimed space: {}", human_size(report.reclaimed));
    Ok(())
}

/// Runs `rbuild du`.
pub fn run_du(_args: DuArgs, verbose: bool, store: &StoreArgs) -> Result<(), Report> {
    let state = StateDir::new(store.root_dir());
    // An empty root reads as zeros (and is not created by looking at it).
    let u = if state.has_store() {
        let reporter = wait_reporter();
        gc::disk_usage(&state, Some(&reporter)).map_err(gc_error)?
    } else {
        gc::Usage::default()
    };
    let mut out = String::new();
    if verbose {
        for r in &u.records {
            let used = r.last_used.map(ago).unwrap_or_else(|| "-".to_string());
            out.push_str(&format!(
                "ID:\t\t{}\nType:\t\t{}\nReclaimable:\t{}\nSize:\t\t{}\nLast used:\t{}\n\n",
                r.id,
                r.kind,
                r.reclaimable,
                human_size(r.size),
                used
            ));
        }
    }
    out.push_str(&format!(
        "{:<15} {:<8} {:<8} {:<10} {}\n",
        "TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"
    ));
    for (name, a) in [
        ("Images", &u.images),
        ("Build Cache", &u.build_cache),
        ("Snapshots", &u.snapshots),
        ("Cache Mounts", &u.cache_mounts),
    ] {
        out.push_str(&format!(
            "{:<15} {:<8} {:<8} {:<10} {}\n",
            name,
            a.count,
            a.active,
            human_size(a.size),
            human_size(a.reclaimable)
        ));
    }
    out.push_str(&format!("Total:\t{}\n", human_size(u.total)));
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    Ok(())
}

/// `N seconds/minutes/hours/days ago`, as docker prints times.
fn ago(unix: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(unix);
    let d = now.saturating_sub(unix);
    match d {
        0..=59 => format!("{d} seconds ago"),
        60..=3599 => format!("{} minutes ago", d / 60),
        3600..=86399 => format!("{} hours ago", d / 3600),
        _ => format!("{} days ago", d / 86400),
    }
}

/// After a successful build: the automatic collection under `--gc-keep-storage` /
/// `RBUILD_GC_KEEP_STORAGE` (default: BuildKit's budget). Failures are warnings.
pub fn auto_gc(state: &StateDir, flag: Option<&str>) {
    // The flag wins over the environment, which wins over the root's config.json.
    let env = std::env::var(gc::KEEP_STORAGE_ENV).ok();
    let configured = match (flag, &env) {
        (None, None) => match gc::configured_keep_storage(state) {
            Ok(v) => v,
            Err(e) => {
                crate::progress::warn(&format!(
                    "warning: ignoring the garbage collection settings of {e}"
                ));
                None
            }
        },
        _ => None,
    };
    let value = flag.or(env.as_deref()).or(configured.as_deref());
    let budget = match gc::keep_storage_budget(state, value) {
        Ok(Some(b)) => b,
        Ok(None) => return,
        Err(e) => {
            crate::progress::warn(&format!(
                "warning: ignoring garbage collection budget {value:?}: {e}"
            ));
            return;
        }
    };
    if let Err(e) = gc::auto_gc(state, budget) {
        crate::progress::warn(&format!(
            "warning: garbage collection failed: {}",
            rbuild_build::chain(&e)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes_read_as_docker_prints_them() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(12_345_678), "12.35MB");
        assert_eq!(human_size(5_000_000), "5MB");
        assert_eq!(human_size(1_234_000_000), "1.234GB");
        assert_eq!(human_size(123_400), "123.4kB");
    }
}
