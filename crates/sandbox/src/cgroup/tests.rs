//! Unit tests of the cgroup module: planned values, flag validation, and (as root) real
//! cgroups with memory, pids and CPU limits, `--cgroup-parent` and the sweep.

use super::plan::{plan, shares_to_weight};
use super::*;
use crate::spec::{SwapLimit, Ulimit};
use crate::testutil::root_or_skip;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::ForkResult;

const MIB: u64 = 1024 * 1024;

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
