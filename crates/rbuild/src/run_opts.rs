//! The `build` flags that shape every RUN step: `--network`, `--allow` (entitlements),
//! `--add-host` and the resource limits (`--memory`, `--cpus`, `--ulimit`, ...), parsed with
//! docker's syntax and validated with docker's messages; and the engine's sandbox settings
//! from the environment (`RBUILD_NO_PROCESS_SANDBOX`, `RBUILD_DEFAULT_NETWORK`).

use crate::errors::Report;
use crate::BuildArgs;
use rbuild_llb::{Entitlement, Entitlements, ExtraHost, NetworkMode};
use rbuild_sandbox::{Limits, SwapLimit, Ulimit};

/// `--network`: the network of RUN steps.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkArg {
    /// A private network namespace with outbound connectivity (BuildKit's sandbox network).
    #[default]
    Default,
    /// The host's network (implies `--allow network.host`).
    Host,
    /// Only loopback.
    None,
}

impl NetworkArg {
    /// The llb network mode of a RUN without `--network`.
    pub fn mode(self) -> NetworkMode {
        match self {
            NetworkArg::Default => NetworkMode::Default,
            NetworkArg::Host => NetworkMode::Host,
            NetworkArg::None => NetworkMode::None,
        }
    }
}

/// Docker's size syntax (go-units `RAMInBytes`, [`rbuild_llb::units::ram_in_bytes`]): `64m`,
/// `1.5g`, `512MiB`, `1024`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    rbuild_llb::units::ram_in_bytes(s).map_err(|e| e.to_string())
}

/// `--memory-swap`: a size, or `-1` for unlimited swap.
pub fn parse_memory_swap(s: &str) -> Result<SwapLimit, String> {
    if s == "-1" {
        return Ok(SwapLimit::Unlimited);
    }
    parse_size(s).map(SwapLimit::Bytes)
}

/// `--cpus 1.5` -> nano CPUs (docker's `NanoCPUs`): a decimal with at most 9 fraction digits.
pub fn parse_cpus(s: &str) -> Result<u64, String> {
    let not_rational = || format!("failed to parse {s} as a rational number");
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.chars().all(|c| c.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) {
        return Err(not_rational());
    }
    let frac_trimmed = frac.trim_end_matches('0');
    if frac_trimmed.len() > 9 {
        return Err("value is too precise".to_string());
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| not_rational())?
    };
    let frac_nanos: u64 = if frac_trimmed.is_empty() {
        0
    } else {
        format!("{frac_trimmed:0<9}")
            .parse()
            .map_err(|_| not_rational())?
    };
    whole
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(frac_nanos))
        .ok_or_else(not_rational)
}

/// The rlimit names docker knows (go-units' `ulimitNameMapping`).
const ULIMIT_NAMES: [&str; 15] = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// `--ulimit NAME=SOFT[:HARD]` (go-units `ParseUlimit`): HARD defaults to SOFT, `-1` is unlimited.
pub fn parse_ulimit(s: &str) -> Result<Ulimit, String> {
    let (name, values) = s
        .split_once('=')
        .ok_or_else(|| format!("invalid ulimit argument: {s}"))?;
    if !ULIMIT_NAMES.contains(&name) {
        return Err(format!("invalid ulimit type: {name}"));
    }
    let value = |v: &str| -> Result<Option<u64>, String> {
        match v.parse::<i64>() {
            Ok(-1) => Ok(None),
            Ok(n) if n >= 0 => Ok(Some(n as u64)),
            _ => Err(format!(
                "invalid ulimit value {v:?} in {s}: expected an integer >= 0 or -1 (unlimited)"
            )),
        }
    };
    let parts: Vec<&str> = values.split(':').collect();
    let (soft, hard) = match parts.as_slice() {
        [soft] => {
            let soft = value(soft)?;
            (soft, soft)
        }
        [soft, hard] => (value(soft)?, value(hard)?),
        _ => {
            return Err(format!(
                "too many limit value arguments - {values}, can only have up to two, `soft[:hard]`"
            ))
        }
    };
    let soft_above_hard = match (soft, hard) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(s), Some(h)) => s > h,
    };
    if soft_above_hard {
        let show = |v: Option<u64>| v.map_or("-1 (unlimited)".to_string(), |n| n.to_string());
        return Err(format!(
            "ulimit soft limit must be less than or equal to hard limit: {} > {}",
            show(soft),
            show(hard)
        ));
    }
    Ok(Ulimit {
        name: name.to_string(),
        soft,
        hard,
    })
}

/// `--add-host NAME:IP` (or `NAME=IP`; an IPv6 address may be in brackets), as docker's
/// `ValidateExtraHost`.
pub fn parse_add_host(s: &str) -> Result<ExtraHost, String> {
    let (name, ip) = s
        .split_once('=')
        .or_else(|| s.split_once(':'))
        .filter(|(name, _)| !name.is_empty() && !name.contains(':'))
        .ok_or_else(|| format!("bad format for add-host: {s:?}"))?;
    if ip == "host-gateway" {
        return Err(format!(
            "host-gateway in add-host {s:?} is not supported: rbuild has no daemon gateway; give an IP address"
        ));
    }
    let ip = match ip.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
        Some(inner) if !inner.is_empty() => inner,
        _ => ip,
    };
    if ip.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("invalid IP address in add-host: {ip:?}"));
    }
    Ok(ExtraHost {
        host: name.to_string(),
        ip: ip.to_string(),
    })
}

/// `--allow`: each value may hold several comma-separated entitlement names (as buildx).
pub fn parse_allow(s: &str) -> Result<String, String> {
    Entitlements::parse(&[s])
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// The entitlements of a build: `--allow`, plus `network.host` when `--network=host` (as buildx).
pub fn entitlements(args: &BuildArgs) -> Result<Entitlements, Report> {
    let mut set = Entitlements::parse(&args.allow)
        .map_err(|e| Report::new(format!("error: {e}")).with_code(2))?;
    if args.network == NetworkArg::Host {
        set.grant(Entitlement::NetworkHost);
    }
    Ok(set)
}

/// The resource limits of every RUN: the flags as a [`Limits`], checked and normalised by
/// [`Limits::validate`] (docker daemon's checks and messages). Warnings go to stderr.
pub fn limits(args: &BuildArgs) -> Result<Limits, Report> {
    let usage = |msg: String| Report::new(format!("error: {msg}")).with_code(2);
    // A negative --cpu-shares cannot be a `Limits`: docker refuses it after the memory and CPU
    // count checks and before the cpuset's.
    let negative_shares = args.cpu_shares.filter(|&s| s < 0);
    let requested = Limits {
        memory: args.memory,
        memory_swap: args.memory_swap,
        nano_cpus: args.cpus,
        cpu_shares: args.cpu_shares.and_then(|s| u64::try_from(s).ok()),
        cpuset_cpus: args.cpuset_cpus.clone(),
        pids: args.pids_limit,
        cgroup_parent: args.cgroup_parent.clone(),
        ulimits: args.ulimits.clone(),
        shm_size: args.shm_size,
    };
    let checked = requested.validate(|w| eprintln!("WARNING: {w}"));
    match (checked, negative_shares) {
        (Err(e), _) if e.precedes_cpu_shares() => Err(usage(e.to_string())),
        (_, Some(s)) => Err(usage(format!(
            "invalid value {s} for --cpu-shares: must be a positive integer"
        ))),
        (checked, None) => checked.map_err(|e| usage(e.to_string())),
    }
}

/// The engine's sandbox settings from the environment (`RBUILD_NO_PROCESS_SANDBOX`,
/// `RBUILD_DEFAULT_NETWORK`); without the process sandbox, BuildKit's warning on stderr.
pub fn engine_settings(quiet: bool) -> Result<rbuild_sandbox::settings::EngineSettings, Report> {
    use rbuild_sandbox::settings::{EngineSettings, NO_PROCESS_SANDBOX_WARNING};
    let settings =
        EngineSettings::from_env().map_err(|e| Report::new(format!("error: {e}")).with_code(2))?;
    if !settings.process_sandbox && !quiet {
        eprintln!("WARNING: {NO_PROCESS_SANDBOX_WARNING}");
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        build: BuildArgs,
    }

    fn args(extra: &[&str]) -> Result<BuildArgs, clap::Error> {
        let mut argv = vec!["rbuild"];
        argv.extend_from_slice(extra);
        Wrap::try_parse_from(argv).map(|w| w.build)
    }

    #[test]
    fn sizes_take_dockers_units() {
        let ok = |s: &str| parse_size(s).unwrap();
        assert_eq!(ok("1024"), 1024);
        assert_eq!(ok("100b"), 100);
        assert_eq!(ok("64m"), 64 << 20);
        assert_eq!(ok("64M"), 64 << 20);
        assert_eq!(ok("64MB"), 64 << 20);
        assert_eq!(ok("64MiB"), 64 << 20);
        assert_eq!(ok("64 m"), 64 << 20);
        assert_eq!(ok("1g"), 1 << 30);
        assert_eq!(ok("1.5g"), 3 << 29);
        assert_eq!(ok("2k"), 2048);
        assert_eq!(ok("1t"), 1 << 40);
        assert_eq!(ok("0.5k"), 512);
        assert_eq!(ok("64 "), 64);
        for bad in [
            "",
            "m",
            "64q",
            "-1",
            "1.",
            ".5",
            "64mm",
            "1.5.3",
            "1,5g",
            "64bib",
            "99999999p",
        ] {
            assert_eq!(
                parse_size(bad),
                Err(format!("invalid size: '{bad}'")),
                "{bad}"
            );
        }
        assert_eq!(parse_memory_swap("-1"), Ok(SwapLimit::Unlimited));
        assert_eq!(parse_memory_swap("1g"), Ok(SwapLimit::Bytes(1 << 30)));
        assert!(parse_memory_swap("-2").is_err());
    }

    #[test]
    fn cpus_become_nano_cpus() {
        assert_eq!(parse_cpus("1.5"), Ok(1_500_000_000));
        assert_eq!(parse_cpus("2"), Ok(2_000_000_000));
        assert_eq!(parse_cpus("0.01"), Ok(10_000_000));
        assert_eq!(parse_cpus(".5"), Ok(500_000_000));
        assert_eq!(parse_cpus("0.000000001"), Ok(1));
        assert_eq!(parse_cpus("1.5000000000"), Ok(1_500_000_000));
        assert_eq!(
            parse_cpus("0.0000000001"),
            Err("value is too precise".to_string())
        );
        for bad in ["", ".", "x", "1.5x", "-1", "1e3"] {
            assert_eq!(
                parse_cpus(bad),
                Err(format!("failed to parse {bad} as a rational number")),
                "{bad}"
            );
        }
    }

    #[test]
    fn ulimits_parse_like_go_units() {
        let u = parse_ulimit("nofile=1024:2048").unwrap();
        assert_eq!(
            (u.name.as_str(), u.soft, u.hard),
            ("nofile", Some(1024), Some(2048))
        );
        let u = parse_ulimit("nproc=64").unwrap();
        assert_eq!((u.soft, u.hard), (Some(64), Some(64)));
        let u = parse_ulimit("core=-1").unwrap();
        assert_eq!((u.soft, u.hard), (None, None));
        let u = parse_ulimit("stack=8192:-1").unwrap();
        assert_eq!((u.soft, u.hard), (Some(8192), None));
        assert_eq!(
            parse_ulimit("nofile").unwrap_err(),
            "invalid ulimit argument: nofile"
        );
        assert_eq!(
            parse_ulimit("files=1").unwrap_err(),
            "invalid ulimit type: files"
        );
        assert_eq!(
            parse_ulimit("nofile=1:2:3").unwrap_err(),
            "too many limit value arguments - 1:2:3, can only have up to two, `soft[:hard]`"
        );
        assert_eq!(
            parse_ulimit("nofile=2048:1024").unwrap_err(),
            "ulimit soft limit must be less than or equal to hard limit: 2048 > 1024"
        );
        assert!(parse_ulimit("nofile=-1:1024").is_err());
        assert!(parse_ulimit("nofile=x").unwrap_err().contains("\"x\""));
        assert!(parse_ulimit("nofile=-2").is_err());
    }

    #[test]
    fn add_host_validates_like_docker() {
        let h = parse_add_host("db:10.0.0.5").unwrap();
        assert_eq!((h.host.as_str(), h.ip.as_str()), ("db", "10.0.0.5"));
        let h = parse_add_host("db=10.0.0.5").unwrap();
        assert_eq!(h.ip, "10.0.0.5");
        let h = parse_add_host("v6:::1").unwrap();
        assert_eq!((h.host.as_str(), h.ip.as_str()), ("v6", "::1"));
        let h = parse_add_host("v6=[fe80::1]").unwrap();
        assert_eq!(h.ip, "fe80::1");
        assert_eq!(
            parse_add_host("db:x").unwrap_err(),
            "invalid IP address in add-host: \"x\""
        );
        assert_eq!(
            parse_add_host("db:300.1.1.1").unwrap_err(),
            "invalid IP address in add-host: \"300.1.1.1\""
        );
        assert_eq!(
            parse_add_host("nocolon").unwrap_err(),
            "bad format for add-host: \"nocolon\""
        );
        assert!(parse_add_host(":1.2.3.4").is_err());
        assert!(parse_add_host("h:host-gateway").is_err());
    }

    #[test]
    fn flags_become_limits() {
        let a = args(&[
            "-m",
            "64m",
            "--memory-swap",
            "-1",
            "--cpus",
            "0.5",
            "--cpu-shares",
            "512",
            "--cpuset-cpus",
            "0",
            "--pids-limit",
            "100",
            "--ulimit",
            "nofile=10:20",
            "--ulimit",
            "nofile=30",
            "--ulimit",
            "nproc=5",
            "--shm-size",
            "1g",
            "--cgroup-parent",
            "ci/builds",
            ".",
        ])
        .unwrap();
        let l = limits(&a).unwrap();
        assert_eq!(l.memory, Some(64 << 20));
        assert_eq!(l.memory_swap, Some(SwapLimit::Unlimited));
        assert_eq!(l.nano_cpus, Some(500_000_000));
        assert_eq!(l.cpu_shares, Some(512));
        assert_eq!(l.cpuset_cpus.as_deref(), Some("0"));
        assert_eq!(l.pids, Some(100));
        assert_eq!(l.shm_size, Some(1 << 30));
        assert_eq!(l.cgroup_parent.as_deref(), Some("ci/builds"));
        let ul: Vec<_> = l
            .ulimits
            .iter()
            .map(|u| (u.name.as_str(), u.soft))
            .collect();
        assert_eq!(ul, vec![("nofile", Some(30)), ("nproc", Some(5))]);
        // Nothing given: nothing limited, no cgroup needed.
        let none = limits(&args(&["."]).unwrap()).unwrap();
        assert_eq!(none, Limits::default());
        assert!(!none.needs_cgroup());
        // Zero means "unset" as in docker; -1 pids is unlimited.
        let zero =
            limits(&args(&["-m", "0", "--pids-limit", "-1", "--cpu-shares", "0", "."]).unwrap())
                .unwrap();
        assert_eq!(zero, Limits::default());
    }

    #[test]
    fn limits_are_checked_like_dockers_daemon() {
        let err = |extra: &[&str]| {
            let mut v = extra.to_vec();
            v.push(".");
            limits(&args(&v).unwrap()).unwrap_err().to_string()
        };
        assert_eq!(
            err(&["-m", "4m"]),
            "error: Minimum memory limit allowed is 6MB"
        );
        assert!(err(&["--memory-swap", "1g"]).contains("always set the Memory limit"));
        assert!(err(&["-m", "1g", "--memory-swap", "512m"])
            .contains("Minimum memoryswap limit should be larger than memory limit"));
        assert!(err(&["--cpus", "0.001"]).contains("Range of CPUs is from 0.01 to"));
        assert!(err(&["--cpus", "100000"]).contains("Range of CPUs is from 0.01 to"));
        assert!(err(&["--cpuset-cpus", "60000"]).contains("Requested CPUs are not available"));
        assert!(err(&["--cpuset-cpus", "0-"]).contains("invalid value 0- for cpuset cpus"));
        assert!(err(&["--cpu-shares", "-5"]).contains("--cpu-shares"));
        assert!(err(&["--cgroup-parent", "../escape"]).contains("`..` is not allowed"));
        let clamped = limits(&args(&["--cpu-shares", "1", "."]).unwrap()).unwrap();
        assert_eq!(clamped.cpu_shares, Some(2));
    }

    #[test]
    fn bad_values_name_the_flag_and_the_value() {
        let msg = |extra: &[&str]| {
            let mut v = extra.to_vec();
            v.push(".");
            match args(&v) {
                Ok(_) => panic!("{extra:?} parsed"),
                Err(e) => e.to_string(),
            }
        };
        let m = msg(&["--memory", "64q"]);
        assert!(
            m.contains("'64q'") && m.contains("--memory") && m.contains("invalid size"),
            "{m}"
        );
        let m = msg(&["--add-host", "db:x"]);
        assert!(
            m.contains("--add-host") && m.contains("invalid IP address in add-host: \"x\""),
            "{m}"
        );
        let m = msg(&["--network", "bridge"]);
        assert!(m.contains("'bridge'") && m.contains("--network"), "{m}");
        let m = msg(&["--allow", "network.host,device"]);
        assert!(
            m.contains("--allow") && m.contains("unknown entitlement device"),
            "{m}"
        );
        let m = msg(&["--ulimit", "nofile"]);
        assert!(
            m.contains("--ulimit") && m.contains("invalid ulimit argument"),
            "{m}"
        );
        let m = msg(&["--cpus", "abc"]);
        assert!(m.contains("--cpus") && m.contains("rational number"), "{m}");
        let m = msg(&["--pids-limit", "many"]);
        assert!(m.contains("--pids-limit") && m.contains("'many'"), "{m}");
    }

    #[test]
    fn entitlements_from_allow_and_network() {
        let e = entitlements(&args(&["--allow", "security.insecure", "."]).unwrap()).unwrap();
        assert!(e.allows(Entitlement::SecurityInsecure));
        assert!(!e.allows(Entitlement::NetworkHost));
        // --network=host on the command line implies network.host (as buildx).
        let e = entitlements(&args(&["--network=host", "."]).unwrap()).unwrap();
        assert!(e.allows(Entitlement::NetworkHost));
        let e = entitlements(&args(&["--allow", "network.host,security.insecure", "."]).unwrap())
            .unwrap();
        assert!(e.allows(Entitlement::NetworkHost) && e.allows(Entitlement::SecurityInsecure));
        let a = args(&["."]).unwrap();
        assert_eq!(a.network, NetworkArg::Default);
        assert_eq!(a.network.mode(), NetworkMode::Default);
    }
}
