//! The watchdog that stops a server we started (and removes its temp storage) once the test
//! process is gone.

use std::path::Path;
use std::process::{Command, Stdio};

/// Makes sure a server we started cannot outlive the test process: a registry held in a
/// `static` (shared by the tests of one binary) is never dropped, so a small watchdog stops it,
/// and removes its temp storage, once this process is gone.
pub(crate) fn stop_with_this_process(child: u32, dir: Option<&Path>) {
    let me = std::process::id();
    let cleanup = dir
        .map(|d| format!("rm -rf '{}'", d.display()))
        .unwrap_or_default();
    let script = format!(
        "while kill -0 {me} 2>/dev/null && kill -0 {child} 2>/dev/null; do sleep 1; done; kill {child} 2>/dev/null; {cleanup}"
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}
