//! RUN execution: turns an llb [`ExecOp`](rbuild_llb::ExecOp) into a sandbox [`RunSpec`] (its
//! `--mount`s, environment, network and security modes, resource limits and extra hosts), runs
//! it over a fresh snapshot, keeps the tail of its output and maps a failed exit (or an OOM
//! kill) to a [`WorkerError`]. A RUN for a foreign platform gets its emulator here
//! ([`emulation_for`]).

use crate::{mounts, Value, Worker, WorkerError};
use rbuild_llb::{NetworkMode, SecurityMode};
use rbuild_oci::Platform;
use rbuild_sandbox::{Emulator, ExitStatus, HostEntry, OutputStream, RunSpec};
use rbuild_snapshotter::RootfsSpec;
use rbuild_solver::{ExecContext, LogStream};
use std::collections::VecDeque;
use std::path::PathBuf;

/// Env var: the only directory emulators (`qemu-<arch>-static`) are looked up in; unset, they
/// are looked up on `PATH`, then in `/usr/bin`.
pub const QEMU_DIR_ENV: &str = "RBUILD_QEMU_DIR";

/// The emulator a RUN for `platform` needs on this host: `None` when the host runs its
/// binaries natively (same architecture, or 386 on amd64), else the `qemu-<arch>-static` of its
/// architecture, or the error naming the package when it is not installed.
pub fn emulation_for(platform: &Platform) -> Result<Option<Emulator>, WorkerError> {
    let dirs = match std::env::var_os(QEMU_DIR_ENV) {
        Some(dir) => vec![PathBuf::from(dir)],
        None => rbuild_sandbox::default_emulator_dirs(),
    };
    emulation_on(&Platform::host(), platform, &dirs)
}

/// [`emulation_for`] on `host`, looking in `dirs`.
fn emulation_on(
    host: &Platform,
    platform: &Platform,
    dirs: &[PathBuf],
) -> Result<Option<Emulator>, WorkerError> {
    let (host, target) = (host.normalized(), platform.normalized());
    if target.os != "linux" {
        return Err(rbuild_sandbox::SandboxError::UnsupportedPlatform {
            platform: platform.to_string(),
        }
        .into());
    }
    let native = target.architecture == host.architecture
        || (host.architecture == "amd64" && target.architecture == "386");
    if native {
        return Ok(None);
    }
    Ok(Some(Emulator::find(
        &platform.to_string(),
        &target.architecture,
        dirs,
    )?))
}

impl Worker {
    /// Runs one RUN over its first input's filesystem and commits the result as a snapshot.
    pub(crate) async fn run_exec(
        &self,
        exec: &rbuild_llb::ExecOp,
        inputs: Vec<Value>,
        ctx: ExecContext,
        excludes: &[String],
        platform: Option<&Platform>,
    ) -> Result<Value, WorkerError> {
        let parent = Self::fs_input(&inputs, 0)?;
        // A host RUN (no platform) looks nothing up.
        let emulator = match platform {
            Some(p) => emulation_for(p)?,
            None => None,
        };
        let snapshotter = self.snapshotter.clone();
        let sandbox = self.sandbox.clone();
        let exec = exec.clone();
        let context = self.context.clone();
        let excludes = excludes.to_vec();
        let secrets = self.secrets.clone();
        let ssh = self.ssh.clone();
        let cache_root = self.cache_mount_root.clone();
        let limits = self.limits.clone();
        let default_network = self.default_network;
        let reporter = self.store.wait_reporter().cloned();
        let debugger = self.debugger.clone();
        Self::blocking(move || {
            // RUN --mount: bind views, cache dirs, tmpfs, secrets; alive until the run is over.
            let prepared = mounts::MountEnv {
                snapshotter: &snapshotter,
                context: context.as_deref(),
                excludes: &excludes,
                cache_root: &cache_root,
                secrets: &secrets,
                ssh: &ssh,
                reporter: reporter.as_ref(),
            }
            .prepare(&exec, &inputs)?;
            let active = snapshotter.prepare(parent.as_ref())?;
            let rootfs_spec = active.rootfs();
            let stubs = mounts::stub_paths(
                &rootfs_spec,
                ["/etc/hosts", "/etc/resolv.conf"]
                    .into_iter()
                    .chain(prepared.mounts.iter().map(|m| m.target())),
            );
            let mut run_env = exec.env.clone();
            run_env.extend(exec.proxy_env.iter().cloned());
            mounts::merge_env(&mut run_env, &prepared.env);
            let rootfs = match rootfs_spec {
                RootfsSpec::Overlay {
                    lowerdirs,
                    upperdir,
                    workdir,
                } => rbuild_sandbox::Rootfs::Overlay {
                    lowerdirs,
                    upperdir,
                    workdir,
                },
                RootfsSpec::Dir(dir) => rbuild_sandbox::Rootfs::Dir(dir),
            };
            let spec = RunSpec {
                rootfs,
                args: exec.args.clone(),
                env: run_env,
                cwd: exec.cwd.clone(),
                user: exec.user.clone(),
                hostname: "buildkitsandbox".to_string(),
                network: sandbox_network(exec.network, default_network),
                security: match exec.security {
                    SecurityMode::Sandbox => rbuild_sandbox::Security::Sandbox,
                    SecurityMode::Insecure => rbuild_sandbox::Security::Insecure,
                },
                limits: (*limits).clone(),
                extra_hosts: exec
                    .extra_hosts
                    .iter()
                    .map(|h| HostEntry {
                        name: h.host.clone(),
                        ip: h.ip.clone(),
                    })
                    .collect(),
                extra_mounts: prepared.mounts.clone(),
                hosts_file: None,
                resolv_conf: None,
                emulator,
            };
            let mut tail: VecDeque<String> = VecDeque::new();
            let mut on_output = |stream: OutputStream, line: &[u8]| {
                let log_stream = match stream {
                    OutputStream::Stdout => LogStream::Stdout,
                    OutputStream::Stderr => LogStream::Stderr,
                };
                ctx.log(log_stream, line);
                if tail.len() == 10 {
                    tail.pop_front();
                }
                tail.push_back(String::from_utf8_lossy(line).trim_end().to_string());
            };
            let status = match sandbox.run(&spec, &mut on_output) {
                Ok(status) => status,
                Err(e) => {
                    let _ = snapshotter.abort(active);
                    return Err(e.into());
                }
            };
            if !status.success() {
                let command = exec.args.join(" ");
                let err = run_error(status, command.clone(), tail.into());
                // The mounts are still prepared: a debug shell sees them as the command did.
                debugger.on_failure(
                    &sandbox,
                    &snapshotter,
                    active,
                    &spec,
                    &command,
                    &err.to_string(),
                );
                return Err(err);
            }
            drop(spec);
            drop(prepared);
            // Mount points the sandbox had to create are not part of the step's result (as in BuildKit).
            mounts::remove_stubs(active.upperdir(), &stubs);
            Ok(Value::Fs(Some(snapshotter.commit(active)?)))
        })
        .await
    }
}

/// The sandbox network of an llb network mode: the worker's default network (BuildKit's
/// default is a private namespace) for the default mode.
fn sandbox_network(mode: NetworkMode, default: rbuild_sandbox::Network) -> rbuild_sandbox::Network {
    match mode {
        NetworkMode::Default => default,
        NetworkMode::Host => rbuild_sandbox::Network::Host,
        NetworkMode::None => rbuild_sandbox::Network::None,
    }
}

/// The error of a RUN that did not succeed: an OOM kill says so (with the limit) instead of
/// a bare `exit code: 137`.
fn run_error(status: ExitStatus, command: String, tail: Vec<String>) -> WorkerError {
    let code = match status {
        ExitStatus::OomKilled { limit } => {
            return WorkerError::OutOfMemory {
                command,
                limit,
                tail,
            }
        }
        ExitStatus::Code(c) => c,
        ExitStatus::Signal(s) => 128 + s,
    };
    WorkerError::RunFailed {
        command,
        code,
        tail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_is_reported_with_its_limit() {
        let err = run_error(
            ExitStatus::OomKilled {
                limit: Some(64 << 20),
            },
            "/bin/sh -c eat".into(),
            vec!["last".into()],
        );
        assert_eq!(
            err.to_string(),
            "process \"/bin/sh -c eat\" was killed: out of memory (limit 64 MiB)"
        );
        assert_eq!(err.run_output_tail(), Some(&["last".to_string()][..]));
        let err = run_error(ExitStatus::OomKilled { limit: None }, "x".into(), vec![]);
        assert_eq!(err.to_string(), "process \"x\" was killed: out of memory");
        let err = run_error(ExitStatus::Signal(9), "x".into(), vec![]);
        assert_eq!(
            err.to_string(),
            "process \"x\" did not complete successfully: exit code: 137"
        );
        let err = run_error(ExitStatus::Code(3), "x".into(), vec![]);
        assert!(err.to_string().ends_with("exit code: 3"));
    }

    #[test]
    fn foreign_platforms_need_an_emulator() {
        let amd64 = Platform::linux_amd64();
        let p = |s: &str| s.parse::<Platform>().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dirs = [dir.path().to_path_buf()];
        // Native: the host's architecture (any variant), 386 on amd64.
        for native in ["linux/amd64", "linux/amd64/v2", "linux/386"] {
            assert_eq!(
                emulation_on(&amd64, &p(native), &dirs).unwrap(),
                None,
                "{native}"
            );
        }
        assert_eq!(
            emulation_on(&p("linux/arm64"), &p("linux/arm64/v8"), &dirs).unwrap(),
            None
        );
        // Foreign, with the emulator missing: the error names the platform and the package.
        let err = emulation_on(&amd64, &p("linux/arm64"), &dirs).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no emulator for linux/arm64: install qemu-user-static (qemu-aarch64-static not found)"
        );
        let err = emulation_on(&amd64, &p("linux/arm/v7"), &dirs).unwrap_err();
        assert!(
            err.to_string().contains("(qemu-arm-static not found)"),
            "{err}"
        );
        let err = emulation_on(&amd64, &p("windows/amd64"), &dirs).unwrap_err();
        assert!(
            err.to_string().starts_with("no emulator for windows/amd64"),
            "{err}"
        );
        // Foreign, with the emulator there.
        let bin = dir.path().join("qemu-aarch64-static");
        std::fs::write(&bin, b"").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let emu = emulation_on(&amd64, &p("linux/arm64"), &dirs)
            .unwrap()
            .unwrap();
        assert_eq!(emu.interpreter, bin);
        assert_eq!(emu.name, "qemu-aarch64");
    }

    #[test]
    fn network_modes_map_to_the_sandbox() {
        use rbuild_sandbox::Network;
        assert_eq!(
            sandbox_network(NetworkMode::Default, Network::Private),
            Network::Private
        );
        assert_eq!(
            sandbox_network(NetworkMode::Default, Network::Host),
            Network::Host
        );
        for default in [Network::Private, Network::Host] {
            assert_eq!(sandbox_network(NetworkMode::Host, default), Network::Host);
            assert_eq!(sandbox_network(NetworkMode::None, default), Network::None);
        }
    }
}
