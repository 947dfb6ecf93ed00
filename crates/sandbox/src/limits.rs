//! Docker daemon's checks of a container's resource limits, applied to [`Limits`]
//! ([`Limits::validate`]: minimum memory, swap at least memory, CPU range, available CPUs, a
//! cgroup parent inside the root), with its messages ([`LimitsError`]) and clamp warnings
//! ([`LimitsWarning`]), so every embedder gets the checks the CLI makes.

use crate::spec::{Limits, SwapLimit, Ulimit};

/// Why [`Limits::validate`] refuses limits (docker daemon's messages for a container's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitsError {
    /// `memory` below docker's minimum of 6 MiB.
    #[error("Minimum memory limit allowed is 6MB")]
    MemoryTooLow,
    /// `memory_swap` without `memory`.
    #[error("You should always set the Memory limit when using Memoryswap limit, see usage")]
    SwapWithoutMemory,
    /// `memory_swap` below `memory`.
    #[error("Minimum memoryswap limit should be larger than memory limit, see usage")]
    SwapBelowMemory,
    /// `nano_cpus` below 0.01 CPU or above the CPUs this process may use.
    #[error(
        "Range of CPUs is from 0.01 to {available}.00, as there are only {available} CPUs available"
    )]
    CpusOutOfRange {
        /// The CPUs this process may use.
        available: u64,
    },
    /// `cpuset_cpus` is not a list of CPU numbers and ranges.
    #[error("invalid value {0} for cpuset cpus: invalid format: {0}")]
    InvalidCpuset(String),
    /// `cpuset_cpus` names CPUs this process may not use.
    #[error("Requested CPUs are not available - requested {requested}, available: {available}")]
    CpusetUnavailable {
        /// The set as given.
        requested: String,
        /// The CPUs available, as ranges (`0-3,6`).
        available: String,
    },
    /// `cgroup_parent` climbs out of the cgroup root.
    #[error("invalid --cgroup-parent {0:?}: `..` is not allowed")]
    CgroupParentEscapes(String),
}

impl LimitsError {
    /// True for the errors docker's checks raise before they look at CPU shares (memory, swap,
    /// CPU count): a caller with its own shares check keeps docker's order with this.
    pub fn precedes_cpu_shares(&self) -> bool {
        matches!(
            self,
            LimitsError::MemoryTooLow
                | LimitsError::SwapWithoutMemory
                | LimitsError::SwapBelowMemory
                | LimitsError::CpusOutOfRange { .. }
        )
    }
}

/// A value [`Limits::validate`] changed to fit docker's range (docker prints these as warnings).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitsWarning {
    /// `cpu_shares` below the minimum was raised to it.
    CpuSharesRaised {
        /// The requested shares.
        requested: u64,
        /// The minimum.
        to: u64,
    },
    /// `cpu_shares` above the maximum was lowered to it.
    CpuSharesLowered {
        /// The requested shares.
        requested: u64,
        /// The maximum.
        to: u64,
    },
    /// Rootless without a delegated cgroup v2 subtree: these limits are not enforced.
    NotEnforcedRootless {
        /// The flags, comma-separated.
        flags: String,
    },
}

impl std::fmt::Display for LimitsWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitsWarning::CpuSharesRaised { requested, to } => write!(
                f,
                "Changing requested CPUShares of {requested} to minimum allowed of {to}"
            ),
            LimitsWarning::NotEnforcedRootless { flags } => write!(
                f,
                "{flags} not enforced: rootless mode without a delegated cgroup v2 subtree \
                 (delegate one to the user, e.g. systemd's `Delegate=yes` for user@.service)"
            ),
            LimitsWarning::CpuSharesLowered { requested, to } => write!(
                f,
                "Changing requested CPUShares of {requested} to maximum allowed of {to}"
            ),
        }
    }
}

/// Docker's range of `--cpu-shares` (0 means the default).
pub const CPU_SHARES_RANGE: std::ops::RangeInclusive<u64> = 2..=262_144;
/// Docker's minimum `--memory` (6 MiB).
pub const MIN_MEMORY: u64 = 6 * 1024 * 1024;

impl Limits {
    /// Checks the limits as docker's daemon checks a container's (minimum memory, swap at least
    /// memory, CPU range, available CPUs, a cgroup parent inside the root) and normalises them:
    /// zero or empty values mean "unset" (as in docker), pids <= 0 is unlimited, CPU shares
    /// outside docker's range are clamped (each clamp is told to `warn`), and of several ulimits
    /// of one name the last wins.
    pub fn validate(self, mut warn: impl FnMut(LimitsWarning)) -> Result<Limits, LimitsError> {
        let memory = self.memory.filter(|&m| m > 0);
        if memory.is_some_and(|m| m < MIN_MEMORY) {
            return Err(LimitsError::MemoryTooLow);
        }
        let memory_swap = match self.memory_swap {
            None | Some(SwapLimit::Bytes(0)) => None,
            Some(swap) => {
                let Some(m) = memory else {
                    return Err(LimitsError::SwapWithoutMemory);
                };
                if matches!(swap, SwapLimit::Bytes(s) if s < m) {
                    return Err(LimitsError::SwapBelowMemory);
                }
                Some(swap)
            }
        };
        let available = available_cpus();
        let nano_cpus = self.nano_cpus.filter(|&n| n > 0);
        if let Some(n) = nano_cpus {
            let count = available.len().max(1) as u64;
            if n < 10_000_000 || n > count * 1_000_000_000 {
                return Err(LimitsError::CpusOutOfRange { available: count });
            }
        }
        let (min_shares, max_shares) = (*CPU_SHARES_RANGE.start(), *CPU_SHARES_RANGE.end());
        let cpu_shares = match self.cpu_shares {
            None | Some(0) => None,
            Some(s) if s < min_shares => {
                warn(LimitsWarning::CpuSharesRaised {
                    requested: s,
                    to: min_shares,
                });
                Some(min_shares)
            }
            Some(s) if s > max_shares => {
                warn(LimitsWarning::CpuSharesLowered {
                    requested: s,
                    to: max_shares,
                });
                Some(max_shares)
            }
            Some(s) => Some(s),
        };
        let cpuset_cpus = match self.cpuset_cpus {
            None => None,
            Some(raw) if raw.is_empty() => None,
            Some(raw) => {
                let wanted = parse_cpuset(&raw)?;
                if !available.is_empty() && wanted.iter().any(|c| !available.contains(c)) {
                    return Err(LimitsError::CpusetUnavailable {
                        requested: raw,
                        available: cpu_ranges(&available),
                    });
                }
                Some(raw)
            }
        };
        let cgroup_parent = match self.cgroup_parent {
            None => None,
            Some(p) if p.is_empty() => None,
            Some(p) if p.split('/').any(|c| c == "..") => {
                return Err(LimitsError::CgroupParentEscapes(p))
            }
            Some(p) => Some(p),
        };
        // A later ulimit of the same name replaces an earlier one (docker keeps a map by name).
        let mut ulimits: Vec<Ulimit> = Vec::new();
        for u in self.ulimits {
            ulimits.retain(|x| x.name != u.name);
            ulimits.push(u);
        }
        let limits = Limits {
            memory,
            memory_swap,
            nano_cpus,
            cpu_shares,
            cpuset_cpus,
            pids: self.pids.filter(|&p| p > 0),
            cgroup_parent,
            ulimits,
            shm_size: self.shm_size.filter(|&s| s > 0),
        };
        if crate::rootless::is_rootless() {
            return Ok(limits.rootless(crate::cgroup::delegated_parent(), warn));
        }
        Ok(limits)
    }

    /// Rootless: the cgroup limits go below the user's delegated cgroup v2 subtree
    /// (`delegated`); without one they are dropped with a warning (rlimits and `--shm-size`
    /// need no cgroup and stay).
    fn rootless(mut self, delegated: Option<String>, mut warn: impl FnMut(LimitsWarning)) -> Self {
        let mut flags = Vec::new();
        let mut note = |on: bool, flag: &'static str| {
            if on {
                flags.push(flag);
            }
        };
        note(self.memory.is_some(), "--memory");
        note(self.memory_swap.is_some(), "--memory-swap");
        note(self.nano_cpus.is_some(), "--cpus");
        note(self.cpu_shares.is_some(), "--cpu-shares");
        note(self.cpuset_cpus.is_some(), "--cpuset-cpus");
        note(self.pids.is_some(), "--pids-limit");
        note(self.cgroup_parent.is_some(), "--cgroup-parent");
        if flags.is_empty() {
            return self;
        }
        match delegated {
            Some(parent) => {
                if self.cgroup_parent.is_none() {
                    self.cgroup_parent = Some(parent);
                }
            }
            None => {
                warn(LimitsWarning::NotEnforcedRootless {
                    flags: flags.join(", "),
                });
                self.memory = None;
                self.memory_swap = None;
                self.nano_cpus = None;
                self.cpu_shares = None;
                self.cpuset_cpus = None;
                self.pids = None;
                self.cgroup_parent = None;
            }
        }
        self
    }
}

/// A cpuset (`0-2,4`: CPU numbers and ranges, docker's `ParseUintList`) as a sorted list.
pub fn parse_cpuset(s: &str) -> Result<Vec<usize>, LimitsError> {
    let bad = || LimitsError::InvalidCpuset(s.to_string());
    let mut cpus = Vec::new();
    for item in s.split(',') {
        let (lo, hi) = item.split_once('-').unwrap_or((item, item));
        let num = |v: &str| -> Result<usize, LimitsError> {
            if v.is_empty() || !v.chars().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            v.parse().map_err(|_| bad())
        };
        let (lo, hi) = (num(lo)?, num(hi)?);
        if lo > hi || hi >= 1 << 16 {
            return Err(bad());
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// The CPUs this process may run on (its affinity mask), as docker's `sysinfo` counts them.
pub fn available_cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&i| set.is_set(i))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// `0,1,2,5` -> `0-2,5`.
fn cpu_ranges(cpus: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpusets_and_ranges() {
        assert_eq!(parse_cpuset("0-2,5"), Ok(vec![0, 1, 2, 5]));
        assert_eq!(parse_cpuset("1,1"), Ok(vec![1]));
        for bad in ["", "a", "2-1", "1-", ",1", "-1"] {
            assert_eq!(
                parse_cpuset(bad).unwrap_err().to_string(),
                format!("invalid value {bad} for cpuset cpus: invalid format: {bad}")
            );
        }
        assert_eq!(cpu_ranges(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert!(!available_cpus().is_empty());
    }

    #[test]
    fn limits_validate_like_dockers_daemon() {
        let check = |l: Limits| l.validate(|_| {});
        let err = |l: Limits| check(l).unwrap_err().to_string();
        let mb = 1 << 20;
        assert_eq!(
            err(Limits {
                memory: Some(4 * mb),
                ..Limits::default()
            }),
            "Minimum memory limit allowed is 6MB"
        );
        assert_eq!(
            check(Limits {
                memory_swap: Some(SwapLimit::Bytes(mb)),
                ..Limits::default()
            }),
            Err(LimitsError::SwapWithoutMemory)
        );
        assert_eq!(
            check(Limits {
                memory: Some(64 * mb),
                memory_swap: Some(SwapLimit::Bytes(32 * mb)),
                ..Limits::default()
            }),
            Err(LimitsError::SwapBelowMemory)
        );
        let count = available_cpus().len();
        assert_eq!(
            err(Limits {
                nano_cpus: Some(1_000_000),
                ..Limits::default()
            }),
            format!(
                "Range of CPUs is from 0.01 to {count}.00, as there are only {count} CPUs available"
            )
        );
        assert!(matches!(
            check(Limits {
                cpuset_cpus: Some("60000".into()),
                ..Limits::default()
            }),
            Err(LimitsError::CpusetUnavailable { .. })
        ));
        assert!(err(Limits {
            cgroup_parent: Some("a/../../b".into()),
            ..Limits::default()
        })
        .contains("`..` is not allowed"));
        // Zero and empty values are unset; shares are clamped with a warning.
        let mut warnings = Vec::new();
        let l = Limits {
            memory: Some(0),
            memory_swap: Some(SwapLimit::Bytes(0)),
            nano_cpus: Some(0),
            cpu_shares: Some(1),
            cpuset_cpus: Some(String::new()),
            pids: Some(-1),
            cgroup_parent: Some(String::new()),
            ulimits: Vec::new(),
            shm_size: Some(0),
        }
        .validate(|w| warnings.push(w.to_string()))
        .unwrap();
        assert_eq!(
            l,
            Limits {
                cpu_shares: Some(2),
                ..Limits::default()
            }
        );
        assert_eq!(
            warnings,
            ["Changing requested CPUShares of 1 to minimum allowed of 2"]
        );
        assert!(LimitsError::MemoryTooLow.precedes_cpu_shares());
        assert!(!LimitsError::InvalidCpuset("x".into()).precedes_cpu_shares());
    }
}
