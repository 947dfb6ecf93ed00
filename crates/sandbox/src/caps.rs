//! Capabilities: Docker's default set.

use crate::status::{step, Failure};

/// Docker's default capabilities: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
/// NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP.
pub(crate) const DEFAULT_CAPS: [u32; 14] = [0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31];

/// The default set as a bit mask (`0xa80425fb`).
pub(crate) fn default_mask() -> u64 {
    DEFAULT_CAPS.iter().fold(0u64, |m, c| m | (1u64 << c))
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Drops every capability outside the default set from the bounding set, clears the ambient
/// set, and sets effective = permitted = the default set with an empty inheritable set (as
/// Docker since 20.10.14), while still root.
pub(crate) fn restrict_to_default() -> Result<(), Failure> {
    restrict_to(default_mask())
}

/// Keeps every capability (`RUN --security=insecure`), with an empty inheritable set.
pub(crate) fn grant_all() -> Result<(), Failure> {
    restrict_to(u64::MAX)
}

fn restrict_to(mask: u64) -> Result<(), Failure> {
    for cap in 0..64u32 {
        if mask & (1u64 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r != 0 {
            let e = nix::errno::Errno::last();
            if e == nix::errno::Errno::EINVAL {
                break; // past CAP_LAST_CAP
            }
            return Err(step(format!("prctl(PR_CAPBSET_DROP, {cap})"))(e));
        }
    }
    // SAFETY: prctl with integer arguments only.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if r != 0 {
        return Err(step("prctl(PR_CAP_AMBIENT_CLEAR_ALL)")(
            nix::errno::Errno::last(),
        ));
    }
    // Only capabilities the kernel knows (and the bounding set still holds) can be kept.
    let mut mask = mask;
    for cap in 0..64u32 {
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) };
        if r != 1 {
            mask &= !(1u64 << cap);
        }
    }
    let lo = mask as u32;
    let hi = (mask >> 32) as u32;
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: 0,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: 0,
        },
    ];
    // SAFETY: header and data are valid for the duration of the call, with the v3 layout.
    let r = unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
    if r != 0 {
        return Err(step("capset")(nix::errno::Errno::last()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn mask_matches_docker() {
        assert_eq!(super::default_mask(), 0xa80425fb);
    }
}
