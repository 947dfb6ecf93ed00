//! What a run's limits become in cgroup files: the controllers they need and the ordered
//! file writes for cgroup v2 or v1, with the validation of the flag values (`--memory`,
//! `--memory-swap`, `--cpus`, `--cpu-shares`, `--cpuset-cpus`, `--pids-limit`).

use super::Controller;
use crate::spec::{Limits, SwapLimit};
use crate::status::Failure;

/// The CFS period used for `--cpus`, as docker.
const CPU_PERIOD_US: u64 = 100_000;

/// One value to write into the run's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Setting {
    pub(super) controller: Controller,
    pub(super) file: &'static str,
    pub(super) value: String,
    /// The command-line flag and value it comes from, for error messages.
    pub(super) flag: String,
    /// Skipped when the file does not exist (swap accounting is optional).
    pub(super) optional: bool,
}

/// The controllers `limits` need.
pub(super) fn needed(limits: &Limits) -> Vec<Controller> {
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
pub(super) fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// What to write, in order, for cgroup v2 (`v2`) or v1.
pub(super) fn plan(limits: &Limits, v2: bool) -> Result<Vec<Setting>, Failure> {
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
