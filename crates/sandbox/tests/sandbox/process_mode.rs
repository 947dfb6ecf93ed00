//! The process sandbox turned off (`Sandbox::with_process_sandbox(false)`, what
//! `RBUILD_NO_PROCESS_SANDBOX=1` selects in a container that masks `/proc`): the run shares
//! the caller's pid namespace and sees its `/proc`, with the masks still applied; everything
//! else (hostname, mounts) stays sandboxed.

use super::support::*;
use rbuild_sandbox::OutputStream;

pub fn no_process_sandbox_shares_pids(c: &Ctx) -> TestResult {
    let sandbox = c.sandbox.clone().with_process_sandbox(false);
    let caller = std::process::id();
    // A file the sandbox masks (bound to /dev/null) that this kernel has.
    let masked = [
        "/proc/timer_list",
        "/proc/keys",
        "/proc/kcore",
        "/proc/sched_debug",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .unwrap_or("/dev/null");
    let script = format!(
        "echo $$; hostname; test -d /proc/{caller} && echo caller-visible; \
         wc -c < {masked}; touch /proc/sysrq-trigger 2>/dev/null || echo ro-sys"
    );
    let (spec, _) = c.spec(&["sh", "-c", &script]);
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let status = sandbox
        .run(&spec, &mut |stream, line| match stream {
            OutputStream::Stdout => stdout.extend_from_slice(line),
            OutputStream::Stderr => stderr.extend_from_slice(line),
        })
        .map_err(|e| format!("run failed: {e}"))?;
    let o = Out {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    };
    ok_out(&o)?;
    let lines: Vec<&str> = o.stdout.lines().collect();
    check!(
        lines.first().is_some_and(|p| *p != "1"),
        "not pid 1: {:?}",
        o.stdout
    );
    check!(
        lines.get(1) == Some(&"buildkitsandbox"),
        "hostname: {:?}",
        o.stdout
    );
    check!(
        lines.get(2) == Some(&"caller-visible"),
        "the caller's pid is visible: {:?}",
        o.stdout
    );
    check!(
        lines.get(3).map(|l| l.trim()) == Some("0"),
        "{masked} stays masked: {:?} {:?}",
        o.stdout,
        o.stderr
    );
    check!(
        lines.get(4) == Some(&"ro-sys"),
        "/proc/sysrq-trigger stays read-only: {:?}",
        o.stdout
    );
    // The default sandbox is unchanged: pid 1 of its own namespace.
    let o = c.sh("echo $$")?;
    check!(o.stdout == "1\n", "default: {:?}", o.stdout);
    Ok(())
}
