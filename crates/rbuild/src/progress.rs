//! Progress rendering: solver events as BuildKit-style plain lines (`#N ...`), JSON lines, or
//! on a terminal the live view of [`crate::tty`]; the library's other [`BuildEvent`]s (lock waits, registry
//! notices, cache import/export, image written, names, pushes) as their stderr lines, or in JSON
//! mode as JSON objects: in JSON mode every line on stderr is one JSON object (the schema is
//! `docs/progress-events.schema.json`), ending with a `result` or an `error` event.
//!
//! Plain output follows BuildKit's: a blank line and the vertex header (`#N NAME`) whenever the
//! output moves to another vertex, log lines with the seconds since the step started
//! (`#5 0.123 line`), the status lines of the build's own vertices (`exporting layers`,
//! `writing image`, `naming to`, which carry no cache key) without a time, and `#N DONE 1.2s`,
//! `#N CACHED`, `#N ERROR: ...`.

use crate::tty::TtyProgress;
use indicatif::DecimalBytes;
use rbuild_build::{BuildEvent, BuildResult, Progress, PushSummary};
use rbuild_solver::{Event, EventKind, LogStream, ProgressSink};
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

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

impl ProgressMode {
    /// `Auto` resolved: tty on a terminal, plain otherwise.
    pub fn resolve(self) -> ProgressMode {
        use std::io::IsTerminal;
        match self {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Tty,
            ProgressMode::Auto => ProgressMode::Plain,
            m => m,
        }
    }
}

/// Set when a build's progress is JSON: `main` then prints a failure as an `error` event.
static JSON_ERRORS: AtomicBool = AtomicBool::new(false);

/// True when errors are to be printed as JSON `error` events (a `--progress=json` build).
pub fn json_errors() -> bool {
    JSON_ERRORS.load(Ordering::Relaxed)
}

struct State {
    numbers: HashMap<usize, usize>,
    /// When each vertex started (its log lines count from there, as BuildKit's).
    starts: HashMap<usize, SystemTime>,
    /// The vertex whose lines were printed last (plain), so a switch repeats the header.
    last: Option<usize>,
}

/// The CLI's side of a build's progress: renders solver events in `mode` and prints the other
/// build events on stderr (tty mode: [`TtyProgress`] draws them). Every
/// [`Progress::solver_sink`] shares one numbering of vertices.
pub struct CliProgress {
    mode: ProgressMode,
    state: Arc<Mutex<State>>,
    /// The live view, in tty mode.
    tty: Option<TtyProgress>,
}

impl CliProgress {
    /// Progress shown in `mode` (`Auto` resolved now: tty on a terminal, plain otherwise);
    /// `tty` without a terminal on stderr is an error, as buildx's.
    pub fn new(mode: ProgressMode) -> Result<CliProgress, crate::errors::Report> {
        use std::io::IsTerminal;
        if mode == ProgressMode::Tty && !std::io::stderr().is_terminal() {
            return Err(crate::errors::Report::new(format!(
                "ERROR: {}",
                crate::tty::NOT_A_CONSOLE
            )));
        }
        let mode = mode.resolve();
        if mode == ProgressMode::Json {
            JSON_ERRORS.store(true, Ordering::Relaxed);
        }
        Ok(CliProgress {
            mode,
            state: Arc::new(Mutex::new(State {
                numbers: HashMap::new(),
                starts: HashMap::new(),
                last: None,
            })),
            tty: (mode == ProgressMode::Tty).then(TtyProgress::start),
        })
    }

    /// Ends the live view (tty: prints the final tree once); `ok` says the build succeeded.
    pub fn finish(&self, ok: bool) {
        if let Some(tty) = &self.tty {
            tty.finish(ok);
        }
    }
}

/// Seconds since the Unix epoch of `at`.
fn unix_time(at: SystemTime) -> f64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Prints `obj` with `"event": kind` and the current time as one line on stderr.
fn json_line(kind: &str, mut obj: serde_json::Value) {
    obj["event"] = serde_json::json!(kind);
    obj["time"] = serde_json::json!(unix_time(SystemTime::now()));
    let _ = writeln!(std::io::stderr().lock(), "{obj}");
}

/// A message line: `text` in plain/tty mode, or a JSON event `kind` with `"message"`.
fn message(mode: ProgressMode, kind: &str, text: String) {
    if mode == ProgressMode::Json {
        json_line(kind, serde_json::json!({ "message": text }));
    } else {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    }
}

impl Progress for CliProgress {
    fn solver_sink(&self) -> ProgressSink {
        match &self.tty {
            Some(tty) => tty.sink(),
            None => sink_with(self.mode, self.state.clone()),
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
        let json = self.mode == ProgressMode::Json;
        match event {
            BuildEvent::SyntaxIgnored { file, syntax } => message(
                self.mode,
                "warning",
                format!("warning: {file}: `# syntax={syntax}` asks for a frontend image; rbuild does not run frontend images and builds with its built-in Dockerfile frontend"),
            ),
            // Another rbuild process has held a lock on the state root for over a second.
            BuildEvent::Waiting(waiting) => message(self.mode, "notice", waiting.to_string()),
            BuildEvent::ResolveNotice(notice) => registry_notice(self.mode, &notice),
            BuildEvent::CacheImported { from, records } if json => json_line(
                "cache_imported",
                serde_json::json!({ "from": from.to_string(), "records": records }),
            ),
            BuildEvent::CacheImported { from, records } => {
                eprintln!("importing cache manifest from {from}: {records} record(s)")
            }
            BuildEvent::CacheImportFailed { from, error } => message(
                self.mode,
                "warning",
                format!("warning: failed to import cache from {from}: {error}"),
            ),
            BuildEvent::CacheImportWarning(w) => {
                message(self.mode, "warning", format!("warning: cache import: {w}"))
            }
            // Plain and tty show these as lines of the `exporting to image` vertex.
            BuildEvent::ImageWritten { digest } if json => json_line(
                "image_written",
                serde_json::json!({ "digest": digest.to_string() }),
            ),
            BuildEvent::CacheExported {
                to,
                records,
                max,
                digest,
            } => {
                let mode = if max { "max" } else { "min" };
                if json {
                    json_line(
                        "cache_exported",
                        serde_json::json!({
                            "to": to.to_string(),
                            "records": records,
                            "mode": mode,
                            "digest": digest.to_string(),
                        }),
                    )
                } else {
                    eprintln!(
                        "exporting cache to {to} ({records} record(s), mode={mode}) {digest} done"
                    )
                }
            }
            BuildEvent::Named { name } if json => {
                json_line("named", serde_json::json!({ "name": name }))
            }
            BuildEvent::PushNotice(notice) => {
                message(self.mode, "notice", format!("push: {notice}"))
            }
            BuildEvent::Pushed(summary) if json => json_line("pushed", pushed_json(&summary)),
            BuildEvent::Pushed(summary) => print_pushed(&summary),
            BuildEvent::Layer(p) => layer_progress(self.mode, &p),
            BuildEvent::Pull { image, progress } if json => json_line(
                "pull",
                serde_json::json!({
                    "image": image,
                    "layer": progress.digest.to_string(),
                    "current": progress.done,
                    "total": progress.total,
                }),
            ),
            BuildEvent::Extract {
                image,
                layer,
                finished,
            } if json => json_line(
                "extract",
                serde_json::json!({
                    "image": image,
                    "layer": layer.to_string(),
                    "finished": finished,
                }),
            ),
            BuildEvent::PushBytes(p) if json => json_line(
                "push_progress",
                serde_json::json!({
                    "layer": p.digest.to_string(),
                    "current": p.done,
                    "total": p.total,
                }),
            ),
            _ => {}
        }
    }
}

/// A lint finding of the build's Dockerfile as a JSON `lint` event (rule, message, line and
/// BuildKit's lint JSON of it).
pub fn lint_warning(finding: &rbuild_lint::Finding) {
    json_line(
        "lint",
        serde_json::json!({
            "rule": finding.rule.id,
            "message": rbuild_lint::render::short(finding),
            "line": finding.span.start_line,
            "detail": rbuild_lint::render::finding_json(finding),
        }),
    );
}

/// A push's summary as a JSON object (digest, names, counters).
fn pushed_json(summary: &PushSummary) -> serde_json::Value {
    let report = &summary.report;
    serde_json::json!({
        "digest": summary.digest.to_string(),
        "names": report.pushed.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "uploaded": report.uploaded,
        "uploaded_bytes": report.uploaded_bytes,
        "existing": report.existing,
        "mounted": report.mounted,
        "duration_ms": summary.elapsed.as_secs_f64() * 1000.0,
    })
}

/// Prints the final `result` event of a `--progress=json` build: the image's manifest and config
/// digests, its names, each output and the push.
pub fn print_result(result: &BuildResult) {
    use rbuild_build::Output;
    let outputs: Vec<serde_json::Value> = result
        .outputs
        .iter()
        .map(|o| {
            let (kind, dest) = match &o.output {
                Output::Oci { dest, .. } => ("oci", Some(dest)),
                Output::Docker { dest, .. } => ("docker", Some(dest)),
                Output::Local { dest } => ("local", Some(dest)),
                Output::Tar { dest } => ("tar", Some(dest)),
                Output::Image { .. } => ("image", None),
            };
            serde_json::json!({
                "type": kind,
                "dest": dest.map(|d| d.display().to_string()),
                "names": o.names,
                "manifest": o.manifest.as_ref().map(|m| m.digest.to_string()),
            })
        })
        .collect();
    json_line(
        "result",
        serde_json::json!({
            "image": result.image.digest.to_string(),
            "config_digest": result.config_digest.to_string(),
            "tags": result.names,
            "outputs": outputs,
            "pushed": result.pushed.as_ref().map(pushed_json),
            "executed": result.executed,
        }),
    );
}

/// Prints a warning on stderr: `text` as it is, or a JSON `warning` event in a
/// `--progress=json` build.
pub fn warn(text: &str) {
    if json_errors() {
        json_line("warning", serde_json::json!({ "message": text }));
    } else {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    }
}

/// Prints a notice on stderr: `text` as it is, or a JSON `notice` event in a
/// `--progress=json` build.
pub fn notice(text: &str) {
    if json_errors() {
        json_line("notice", serde_json::json!({ "message": text }));
    } else {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    }
}

/// Prints a failure as the final `error` event of a `--progress=json` build: the whole report
/// (as the text mode prints it) and the exit code.
pub fn print_error(report: &crate::errors::Report) {
    json_line(
        "error",
        serde_json::json!({
            "message": report.to_string(),
            "exit_code": report.exit_code(),
        }),
    );
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
        drop(err);
        json_line(
            "layer",
            serde_json::json!({
                "action": action,
                "layer": p.layer,
                "current": p.done,
                "total": p.total,
                "finished": p.finished,
            }),
        );
        Ok(())
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

/// A sink rendering in `mode` (resolved: json, else plain; the tty view is [`TtyProgress`]'s)
/// with the shared `state`.
fn sink_with(mode: ProgressMode, state: Arc<Mutex<State>>) -> ProgressSink {
    ProgressSink::new(move |event: Event| {
        let Ok(mut st) = state.lock() else { return };
        match mode {
            ProgressMode::Json => render_json(&mut st, &event),
            _ => render_plain(&mut st, &event),
        }
    })
}

fn number(st: &mut State, vertex: usize) -> usize {
    let next = st.numbers.len() + 1;
    *st.numbers.entry(vertex).or_insert(next)
}

/// Seconds from the vertex's start to `at` (0 when it has not started).
fn since_start(st: &State, vertex: usize, at: SystemTime) -> f64 {
    st.starts
        .get(&vertex)
        .and_then(|s| at.duration_since(*s).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

fn render_plain(st: &mut State, event: &Event) {
    let n = number(st, event.vertex.0);
    let mut out = String::new();
    if st.last != Some(event.vertex.0) {
        // A blank line between vertices, and the header again when the output comes back.
        if st.last.is_some() {
            out.push('\n');
        }
        out.push_str(&format!("#{n} {}\n", event.name));
        st.last = Some(event.vertex.0);
    }
    match &event.kind {
        EventKind::Started => {
            st.starts.insert(event.vertex.0, event.at);
        }
        EventKind::Cached => out.push_str(&format!("#{n} CACHED\n")),
        // The build's own vertices (no cache key) print status lines, without a time.
        EventKind::Log { line, .. } if event.cache_key.is_none() => out.push_str(&format!(
            "#{n} {}\n",
            String::from_utf8_lossy(line).trim_end()
        )),
        EventKind::Log { line, .. } => {
            let t = since_start(st, event.vertex.0, event.at);
            out.push_str(&format!(
                "#{n} {t:.3} {}\n",
                String::from_utf8_lossy(line).trim_end()
            ))
        }
        EventKind::Done { duration } => {
            out.push_str(&format!("#{n} DONE {:.1}s\n", duration.as_secs_f64()))
        }
        EventKind::Error { message, .. } => out.push_str(&format!("#{n} ERROR: {message}\n")),
        EventKind::Canceled => out.push_str(&format!("#{n} CANCELED\n")),
    }
    let _ = std::io::stderr().lock().write_all(out.as_bytes());
}

fn render_json(st: &mut State, event: &Event) {
    let n = number(st, event.vertex.0);
    let mut obj = serde_json::json!({
        "vertex": n,
        "name": event.name,
        "cache_key": event.cache_key,
        "time": unix_time(event.at),
    });
    let kind = match &event.kind {
        EventKind::Started => {
            st.starts.insert(event.vertex.0, event.at);
            "started"
        }
        EventKind::Cached => "cached",
        EventKind::Log { stream, line } => {
            obj["stream"] = serde_json::json!(match stream {
                LogStream::Stdout => "stdout",
                LogStream::Stderr => "stderr",
            });
            obj["line"] = serde_json::json!(String::from_utf8_lossy(line));
            obj["elapsed"] = serde_json::json!(since_start(st, event.vertex.0, event.at));
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
    if mode == ProgressMode::Json {
        json_line(
            "notice",
            serde_json::json!({ "message": notice.to_string() }),
        );
    } else {
        let _ = writeln!(std::io::stderr().lock(), "resolve {notice}");
    }
}
