//! The run's `/proc`: a new procfs of its pid namespace, or a bind of the caller's without the
//! process sandbox, and the error that explains a procfs the kernel refuses in a container.

use super::{ensure, fd_path, mnt, Kind};
use crate::status::{step, Failure};
use nix::mount::{mount, MsFlags};
use std::os::fd::OwnedFd;
use std::path::Path;

/// `/proc`: a new procfs of the run's pid namespace, or, without the process sandbox, a
/// recursive bind of the caller's (its masks included).
pub(super) fn mount_proc(root: &OwnedFd, process_sandbox: bool) -> Result<(), Failure> {
    let proc_fd = ensure(root, Path::new("proc"), Kind::Dir)?;
    if !process_sandbox {
        return mnt(
            Some("/proc"),
            &fd_path(&proc_fd),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
            "rbind /proc (no process sandbox)",
        );
    }
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    match mount(
        Some("proc"),
        fd_path(&proc_fd).as_str(),
        Some("proc"),
        flags,
        None::<&str>,
    ) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) if crate::rootless::in_user_namespace() => {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            Err(proc_mount_refused(&mountinfo))
        }
        Err(e) => Err(step("mount proc at /proc")(e)),
    }
}

/// The error of a refused procfs mount in a user namespace. When the caller's `/proc` has
/// mounts over parts of it (a container's masked paths), the kernel refuses a new procfs that
/// would reveal them (`mount_too_revealing`): the message names the two ways out.
fn proc_mount_refused(mountinfo: &str) -> Failure {
    let masked: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with("/proc/"))
        .collect();
    if masked.is_empty() {
        return Failure::setup("mount proc at /proc: EPERM: Operation not permitted");
    }
    Failure::setup(format!(
        "mount proc at /proc: EPERM: Operation not permitted: the container rbuild runs in masks \
         parts of its /proc ({}), so the kernel refuses a new /proc for a RUN step's pid \
         namespace; run the container with `--security-opt systempaths=unconfined` (Kubernetes: \
         `securityContext.procMount: Unmasked`), or set {}=1 to run RUN steps in rbuild's pid \
         namespace with its /proc (weaker isolation, see docs/container.md)",
        masked.join(" "),
        crate::settings::NO_PROCESS_SANDBOX_ENV
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_proc_mount_names_both_fixes() {
        let docker = "78 77 0:42 / /proc rw,nosuid - proc proc rw\n\
                      57 78 0:48 / /proc/acpi ro,relatime - tmpfs tmpfs ro\n\
                      58 78 0:5 /null /proc/kcore rw,nosuid - devtmpfs udev rw\n";
        let msg = proc_mount_refused(docker).message;
        assert!(msg.contains("(/proc/acpi /proc/kcore)"), "{msg}");
        assert!(
            msg.contains("--security-opt systempaths=unconfined"),
            "{msg}"
        );
        assert!(msg.contains("procMount: Unmasked"), "{msg}");
        assert!(msg.contains("RBUILD_NO_PROCESS_SANDBOX=1"), "{msg}");
        let plain = proc_mount_refused("78 77 0:42 / /proc rw - proc proc rw\n").message;
        assert_eq!(plain, "mount proc at /proc: EPERM: Operation not permitted");
    }
}
