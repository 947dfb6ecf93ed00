//! Reading the summary of `../shared/conformance/run.sh`, shared by the root and rootless runs.

use std::process::Output;

/// The number of cases that pass today; raise it when more pass, never lower it.
pub const MIN_PASSING: usize = 34;

/// Prints run.sh's output and returns its `conformance: P/N` summary line and P.
pub fn summary(out: &Output) -> (String, usize) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("conformance:"))
        .unwrap_or_else(|| {
            panic!(
                "no summary line:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let passed: usize = last
        .trim_start_matches("conformance: ")
        .split('/')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .expect("P/N in summary");
    (last.to_string(), passed)
}
