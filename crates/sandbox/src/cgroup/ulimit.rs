//! `--ulimit`: setting the rlimits of the sandbox child.

use crate::spec::Ulimit;
use crate::status::{step, Failure};

/// Sets the `--ulimit` rlimits of the calling process (before it drops CAP_SYS_RESOURCE, so
/// hard limits may be raised).
pub(crate) fn apply_ulimits(ulimits: &[Ulimit]) -> Result<(), Failure> {
    for u in ulimits {
        let show = |v: Option<u64>| v.map_or("-1".to_string(), |n| n.to_string());
        let flag = format!("--ulimit {}={}:{}", u.name, show(u.soft), show(u.hard));
        u.validate()
            .map_err(|e| Failure::setup(format!("{flag}: {e}")))?;
        let resource = u
            .resource()
            .map_err(|e| Failure::setup(format!("{flag}: {e}")))?;
        let limit = libc::rlimit {
            rlim_cur: u.soft.unwrap_or(libc::RLIM_INFINITY),
            rlim_max: u.hard.unwrap_or(libc::RLIM_INFINITY),
        };
        // SAFETY: `limit` is a valid rlimit for the duration of the call.
        let r = unsafe { libc::setrlimit(resource as _, &limit) };
        if r != 0 {
            return Err(step(format!("{flag}: setrlimit"))(nix::errno::Errno::last()));
        }
    }
    Ok(())
}
