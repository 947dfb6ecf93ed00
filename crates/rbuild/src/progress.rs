//! Progress rendering: solver events as BuildKit-style plain lines (`#N ...`), JSON lines, or
//! on a terminal the live view of [`crate::tty`]; the library's other [`BuildEvent`]s (lock waits, registry
//! notices, cache import/export, image written, names, pushes) as their stderr lines.

use crate::tty::TtyProgress;
use indicatif::DecimalBytes;
use rbuild_build::{BuildEvent, Progress, PushSummary};
use rbuild_solver::{Event, EventKind, LogStream, ProgressSink};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// tty on a terminal, plain otherwise.
    Auto,
    /// BuildKit's live view on a terminal (an error without one).
    Tty,
    /// `#N` lines like BuildKit's plain output.
    Plain,
    /// One JSON object per event.
    Json,
}

struct State {
    numbers: HashMap<usize, usize>,
    started: Instant,
}

/// The CLI's side of a build's progress: renders solver events in `mode` and prints the other
/// build events on stderr (tty mode: [`TtyProgress`] draws them).
pub struct CliProgress {
    mode: ProgressMode,
    tty: Option<TtyProgress>,
}

impl CliProgress {
    /// Progress shown in `mode` (`auto`: tty on a terminal, plain otherwise); `tty` without a
    /// terminal on stderr is an error, as buildx's.
    pub fn new(mode: ProgressMode) -> Result<CliProgress, crate::errors::Report> {
        use std::io::IsTerminal;
        let terminal = std::io::stderr().is_terminal();
        if mode == ProgressMode::Tty && !terminal {
            return Err(crate::errors::Report::new(format!(
                "ERROR: {}",
                crate::tty::NOT_A_CONSOLE
            )));
        }
        let tty = (matches!(mode, ProgressMode::Tty | ProgressMode::Auto) && terminal)
            .then(TtyProgress::start);
        Ok(CliProgress { mode, tty })
    }

    /// Ends the live view (tty: prints the final tree once); `ok` says the build succeeded.
    pub fn finish(&self, ok: bool) {
        if let Some(tty) = &self.tty {
            tty.finish(ok);
        }
    }
}

impl Progress for CliProgress {
    fn solver_sink(&self) -> ProgressSink {
        match &self.tty {
            Some(tty) => tty.sink(),
            None => sink(self.mode),
        }
    }

    fn event(&self, event: BuildEvent) {
        match &self.tty {
            Some(tty) => {
                if let Some(event) = tty.event(event) {
                    tty.suspend(|| self.print(event));
                }
            }
            None => self.print(event),
        }
    }
}

impl CliProgress {
    /// Prints a build event as its stderr line (a JSON object in json mode).
    fn print(&self, event: BuildEvent) {
        match event {
            BuildEvent::SyntaxIgnored { file, syntax } => eprintln!(
                "warning: {file}: `# syntax={syntax}` asks for a frontend image; rbuild does not run frontend images and builds with its built-in Dockerfile frontend"
            ),
            // Another rbuild process has held a lock on the state root for over a second.
            BuildEvent::Waiting(waiting) => {
                let _ = writeln!(std::io::stderr().lock(), "{waiting}");
            }
            BuildEvent::ResolveNotice(notice) => registry_notice(self.mode, &notice),
            BuildEvent::CacheImported { from, records } => {
                eprintln!("importing cache manifest from {from}: {records} record(s)")
            }
            BuildEvent::CacheImportFailed { from, error } => {
                eprintln!("warning: failed to import cache from {from}: {error}")
            }
            BuildEvent::CacheImportWarning(w) => eprintln!("warning: cache import: {w}"),
            BuildEvent::ImageWritten { digest } => eprintln!("writing image {digest} done"),
            BuildEvent::CacheExported {
                to,
                records,
                max,
                digest,
            } => eprintln!(
                "exporting cache to {to} ({records} record(s), mode={}) {digest} done",
                if max { "max" } else { "min" }
            ),
            BuildEvent::Named { name } => eprintln!("naming to {name} done"),
            BuildEvent::PushNotice(notice) => eprintln!("push: {notice}"),
            BuildEvent::Pushed(summary) => print_pushed(&summary),
            BuildEvent::Layer(p) => layer_progress(self.mode, &p),
            _ => {}
        }
    }
}

/// Bytes in binary units with one decimal, as BuildKit's layer progress (`512.0MiB`).
fn binary_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

/// Prints a long layer export's progress: `exporting layer ID 512.0MiB` (`compressing layer
/// sha256:... 512.0MiB / 1.0GiB` for a push or an archive; `done` at the end), or in JSON
/// mode an object with `"event":"layer"`.
pub fn layer_progress(mode: ProgressMode, p: &rbuild_build::LayerProgress) {
    let action = match p.action {
        rbuild_build::LayerAction::Export => "exporting",
        rbuild_build::LayerAction::Compress => "compressing",
        _ => "processing",
    };
    let mut err = std::io::stderr().lock();
    let _ = if mode == ProgressMode::Json {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let obj = serde_json::json!({
            "event": "layer",
            "action": action,
            "layer": p.layer,
            "current": p.done,
            "total": p.total,
            "finished": p.finished,
            "time": at,
        });
        writeln!(err, "{obj}")
    } else {
        let size = match p.total {
            Some(total) => format!("{} / {}", binary_size(p.done), binary_size(total)),
            None => binary_size(p.done),
        };
        let done = if p.finished { " done" } else { "" };
        writeln!(err, "{action} layer {} {size}{done}", p.layer)
    };
}

/// Prints a push's counters and its manifests on stderr.
pub fn print_pushed(summary: &PushSummary) {
    let report = &summary.report;
    eprintln!(
        "pushed {} blob(s) ({}), {} already present, {} mounted in {:.1}s",
        report.uploaded,
        DecimalBytes(report.uploaded_bytes),
        report.existing,
        report.mounted,
        summary.elapsed.as_secs_f64()
    );
    for p in &report.pushed {
        eprintln!("pushing manifest for {p}@{} done", summary.digest);
    }
}

/// Builds a sink that renders events to stderr in `mode` (json, else plain; the tty view is
/// [`TtyProgress`]'s).
pub fn sink(mode: ProgressMode) -> ProgressSink {
    let state = Arc::new(Mutex::new(State {
        numbers: HashMap::new(),
        started: Instant::now(),
    }));
    ProgressSink::new(move |event: Event| {
        let Ok(mut st) = state.lock() else { return };
        match mode {
            ProgressMode::Json => render_json(&event),
            _ => render_plain(&mut st, &event),
        }
    })
}

fn number(st: &mut State, vertex: usize) -> usize {
    let next = st.numbers.len() + 1;
    *st.numbers.entry(vertex).or_insert(next)
}

fn render_plain(st: &mut State, event: &Event) {
    let n = number(st, event.vertex.0);
    let mut err = std::io::stderr().lock();
    let _ = match &event.kind {
        EventKind::Started => writeln!(err, "#{n} {}", event.name),
        EventKind::Cached => writeln!(err, "#{n} {}\n#{n} CACHED", event.name),
        EventKind::Log { line, .. } => {
            let t = st.started.elapsed().as_secs_f64();
            writeln!(
                err,
                "#{n} {t:.3} {}",
                String::from_utf8_lossy(line).trim_end()
            )
        }
        EventKind::Done { duration } => writeln!(err, "#{n} DONE {:.1}s", duration.as_secs_f64()),
        EventKind::Error { message, duration } => writeln!(
            err,
            "#{n} ERROR: {message} ({:.1}s)",
            duration.as_secs_f64()
        ),
        EventKind::Canceled => writeln!(err, "#{n} CANCELED"),
    };
}

fn render_json(event: &Event) {
    let at = event
        .at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let mut obj = serde_json::json!({
        "vertex": event.vertex.0,
        "name": event.name,
        "cache_key": event.cache_key,
        "time": at,
    });
    let kind = match &event.kind {
        EventKind::Started => "started",
        EventKind::Cached => "cached",
        EventKind::Log { stream, line } => {
            obj["stream"] = serde_json::json!(match stream {
                LogStream::Stdout => "stdout",
                LogStream::Stderr => "stderr",
            });
            obj["line"] = serde_json::json!(String::from_utf8_lossy(line));
            "log"
        }
        EventKind::Done { duration } => {
            obj["duration_ms"] = serde_json::json!(duration.as_secs_f64() * 1000.0);
            "done"
        }
        EventKind::Error { message, duration } => {
            obj["error"] = serde_json::json!(message);
            obj["duration_ms"] = serde_json::json!(duration.as_secs_f64() * 1000.0);
            "error"
        }
        EventKind::Canceled => "canceled",
    };
    obj["event"] = serde_json::json!(kind);
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{obj}");
}

/// Prints a registry notice (retry, wait) that comes outside the solve, while base images are
/// resolved: a plain `resolve NAME: ...` line, or in JSON mode an object with `"event":"notice"`.
fn registry_notice(mode: ProgressMode, notice: &rbuild_registry::RegistryNotice) {
    let mut err = std::io::stderr().lock();
    let _ = if mode == ProgressMode::Json {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let obj = serde_json::json!({
            "event": "notice",
            "message": notice.to_string(),
            "time": at,
        });
        writeln!(err, "{obj}")
    } else {
        writeln!(err, "resolve {notice}")
    };
}
