//! What the sandbox tests share: the context with its busybox layers, running a command and
//! collecting its output, the `check!` macro, and the host-side setup (busybox, layers,
//! mountinfo snapshots).

use rbuild_sandbox::{ExitStatus, Network, OutputStream, Rootfs, RunSpec, Sandbox, SandboxError};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct Ctx {
    pub sandbox: Sandbox,
    pub tmp: tempfile::TempDir,
    /// busybox layer (bottom).
    pub base: PathBuf,
    /// passwd/group layer (on top of base).
    pub etc: PathBuf,
    pub counter: std::sync::atomic::AtomicU32,
}

pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ctx {
    /// A fresh upper/work pair.
    pub fn fresh_upper(&self) -> (PathBuf, PathBuf) {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = self.tmp.path().join(format!("run{n}"));
        let (upper, work) = (dir.join("upper"), dir.join("work"));
        fs::create_dir_all(&upper).unwrap();
        fs::create_dir_all(&work).unwrap();
        (upper, work)
    }

    pub fn spec(&self, args: &[&str]) -> (RunSpec, PathBuf) {
        let (upperdir, workdir) = self.fresh_upper();
        let spec = RunSpec {
            rootfs: Rootfs::Overlay {
                lowerdirs: vec![self.etc.clone(), self.base.clone()],
                upperdir: upperdir.clone(),
                workdir,
            },
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![PATH_ENV.to_string()],
            cwd: "/".to_string(),
            user: String::new(),
            hostname: "buildkitsandbox".to_string(),
            network: Network::Host,
            security: Default::default(),
            limits: Default::default(),
            extra_hosts: Vec::new(),
            extra_mounts: Vec::new(),
            hosts_file: None,
            resolv_conf: None,
            emulator: None,
        };
        (spec, upperdir)
    }

    pub fn run(&self, spec: &RunSpec) -> Result<Out, SandboxError> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let status = self.sandbox.run(spec, &mut |stream, line| match stream {
            OutputStream::Stdout => stdout.extend_from_slice(line),
            OutputStream::Stderr => stderr.extend_from_slice(line),
        })?;
        Ok(Out {
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    pub fn sh(&self, script: &str) -> Result<Out, String> {
        let (spec, _) = self.spec(&["sh", "-c", script]);
        self.run(&spec).map_err(|e| format!("run failed: {e}"))
    }
}

pub type TestResult = Result<(), String>;
pub type TestFn = fn(&Ctx) -> TestResult;

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

pub fn ok_out(o: &Out) -> TestResult {
    check!(
        o.status.success(),
        "status {:?}, stdout {:?}, stderr {:?}",
        o.status,
        o.stdout,
        o.stderr
    );
    Ok(())
}

pub fn copy_tree(from: &Path, to: &Path) -> TestResult {
    fs::create_dir_all(to).map_err(|e| e.to_string())?;
    for e in fs::read_dir(from).map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ft = e.file_type().map_err(|e| e.to_string())?;
        if ft.is_symlink() {
            symlink(fs::read_link(&src).map_err(|e| e.to_string())?, &dst)
                .map_err(|e| e.to_string())?;
        } else if ft.is_dir() {
            copy_tree(&src, &dst)?;
        } else if ft.is_file() {
            fs::copy(&src, &dst).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

pub fn ensure_busybox() -> Result<(), String> {
    if Path::new("/bin/busybox").exists() {
        return Ok(());
    }
    for attempt in 0..30 {
        let st = std::process::Command::new("apt-get")
            .args(["install", "-y", "busybox-static"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("apt-get: {e}"))?;
        if st.success() && Path::new("/bin/busybox").exists() {
            return Ok(());
        }
        eprintln!(
            "apt-get install busybox-static failed (attempt {attempt}), retrying (apt lock?)"
        );
        std::thread::sleep(Duration::from_secs(5));
    }
    Err("could not install busybox-static".into())
}

pub fn build_layers(tmp: &Path) -> Result<(PathBuf, PathBuf), String> {
    let base = tmp.join("base");
    let bin = base.join("bin");
    fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    fs::copy("/bin/busybox", bin.join("busybox")).map_err(|e| e.to_string())?;
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .map_err(|e| e.to_string())?;
    for name in String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|n| !n.is_empty() && *n != "busybox")
    {
        symlink("busybox", bin.join(name)).map_err(|e| e.to_string())?;
    }
    for d in ["tmp", "root", "home/app"] {
        fs::create_dir_all(base.join(d)).map_err(|e| e.to_string())?;
    }
    // A world-readable character device in a lower layer, as a hostile base image could ship
    // (1:5 is /dev/zero: harmless should the sandbox ever let it open).
    nix::sys::stat::mknod(
        &base.join("lowerdev"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 5),
    )
    .map_err(|e| format!("mknod lowerdev: {e}"))?;
    let etc = tmp.join("etc-layer");
    fs::create_dir_all(etc.join("etc")).map_err(|e| e.to_string())?;
    fs::write(
        etc.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .map_err(|e| e.to_string())?;
    fs::write(
        etc.join("etc/group"),
        "root:x:0:\nwheel:x:10:root,app\napp:x:1000:\nextra:x:2000:app\n",
    )
    .map_err(|e| e.to_string())?;
    Ok((base, etc))
}

pub fn mountinfo() -> Vec<String> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    // Drop the mount ids so the comparison is about what is mounted where.
    let mut v: Vec<String> = text
        .lines()
        .map(|l| l.split(' ').skip(2).collect::<Vec<_>>().join(" "))
        .collect();
    v.sort();
    v
}
