//! Eager layer export: a layer of the image is exported while the steps after it run (read from
//! the `--debug` log: its "layer exported" line comes before the next step has finished, and the
//! final export reuses it), and a builder stage's results are never exported.

use std::fs;
use std::process::Output;

mod common;

use common::*;

/// The `--debug` log lines of `out` (stderr lines that are not json progress events).
fn log_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
        .filter(|l| l.contains(" DEBUG ") || l.contains(" INFO "))
        .map(str::to_string)
        .collect()
}

/// The `size=N` field of a log line (0 when absent).
fn size_field(line: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("size="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Index of the first line containing every one of `words`.
fn first(lines: &[String], words: &[&str]) -> Option<usize> {
    lines
        .iter()
        .position(|l| words.iter().all(|w| l.contains(w)))
}

#[test]
fn layers_export_while_later_steps_run_and_builder_stages_never_do() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    // 8 MiB: exported in milliseconds, well within the 2 s step after it.
    fs::write(ctx.path().join("big.bin"), vec![7u8; 8 << 20]).unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {base} AS builder\n\
             RUN echo made > /made\n\
             FROM {base}\n\
             COPY big.bin /big.bin\n\
             COPY --from=builder /made /made\n\
             RUN sleep 2 && echo ran > /ran\n",
            base = env.base
        ),
    )
    .unwrap();
    let out = rbuild_at(root.path())
        .args(["--debug", "build", "--progress=json", "-t", "eager:1"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_ok(&out);
    let lines = log_lines(&out);
    let all = lines.join("\n");
    let exported: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("layer exported"))
        .collect();
    // The image's three new layers (two COPYs and the RUN), each made once; never the
    // builder's RUN result, which is no layer of the image.
    assert_eq!(exported.len(), 3, "{all}");
    let copy_layer = lines
        .iter()
        .position(|l| l.contains("layer exported") && size_field(l) >= 8 << 20)
        .expect(&all);
    let sleep_done = first(&lines, &["executed", "RUN sleep 2"]).expect(&all);
    assert!(
        copy_layer < sleep_done,
        "the COPY's layer is exported before the step after it ends:\n{all}"
    );
    let solved = first(&lines, &["phase finished", "phase=\"solve\""]).expect(&all);
    let reused = lines[solved..]
        .iter()
        .filter(|l| l.contains("layer reused"))
        .count();
    assert!(
        reused >= 2,
        "the final export reuses the eagerly made layers:\n{all}"
    );
    // The image reads back whole.
    let inspect = rbuild_at(root.path())
        .args(["inspect", "eager:1"])
        .output()
        .unwrap();
    assert_ok(&inspect);
    let config: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let layers = config[0]["RootFS"]["Layers"].as_array().map_or(0, Vec::len);
    assert!(layers >= 4, "base + 3 layers: {config}");
}
