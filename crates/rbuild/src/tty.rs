//! The live tty progress view, drawn like BuildKit's: a `[+] Building 5.3s (7/12)` header, one
//! line per vertex with its timer (running ones tick to 0.1 s, finished ones collapse to one line
//! with their duration or `CACHED`), the last lines of each running step's output under it,
//! base-image layer downloads under their FROM, layer export and push sub-lines with bytes and a
//! rate, every line cut to the terminal's width, and
//! the whole tree printed once when the build ends. indicatif does the drawing (one multi-line
//! bar redrawn at most [`REFRESH_HZ`] times a second); this module owns the model and its layout.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rbuild_build::{BuildEvent, LayerAction};
use rbuild_solver::{Event, EventKind, ProgressSink};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Redraws per second at most.
pub const REFRESH_HZ: u8 = 10;
/// Output lines kept under a running step.
const LOG_TAIL: usize = 6;
/// The width used when the terminal's cannot be read.
const FALLBACK_WIDTH: usize = 80;

/// The error `--progress=tty` gives when standard error is not a terminal, in buildx's words.
pub const NOT_A_CONSOLE: &str = "failed to get console: provided file is not a console";

/// Where a vertex of the view comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// A solver vertex.
    Solver(usize),
    /// Exporting the image (layers, image, names, cache).
    Export,
    /// Pushing the image.
    Push,
    /// Pulling an image outside a vertex that names it.
    Pull(String),
}

/// How a vertex ended, if it did.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Status {
    Running,
    Done(Duration),
    Cached,
    Error(Duration),
    Canceled(Duration),
}

/// A line under a vertex: an export or push sub-step, with bytes when it moves data.
#[derive(Debug, Clone)]
struct Sub {
    name: String,
    started: Instant,
    ended: Option<Duration>,
    bytes: Option<(u64, Option<u64>)>,
}

/// One vertex of the view.
#[derive(Debug, Clone)]
struct Vertex {
    name: String,
    started: Instant,
    status: Status,
    logs: VecDeque<String>,
    subs: Vec<Sub>,
}

impl Vertex {
    fn new(name: String, now: Instant) -> Vertex {
        Vertex {
            name,
            started: now,
            status: Status::Running,
            logs: VecDeque::new(),
            subs: Vec::new(),
        }
    }

    fn finished(&self) -> bool {
        self.status != Status::Running
    }

    /// The sub-line named `name`, added when new.
    fn sub(&mut self, name: &str, now: Instant) -> &mut Sub {
        let i = match self.subs.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => {
                self.subs.push(Sub {
                    name: name.to_string(),
                    started: now,
                    ended: None,
                    bytes: None,
                });
                self.subs.len() - 1
            }
        };
        &mut self.subs[i]
    }

    /// Ends the vertex (and its open sub-lines) as done, if it is running.
    fn close(&mut self, now: Instant) {
        if self.status == Status::Running {
            self.status = Status::Done(now - self.started);
        }
        for s in &mut self.subs {
            s.ended.get_or_insert(now - s.started);
        }
    }
}

/// What the view shows: vertices in the order they appeared.
#[derive(Debug)]
struct Model {
    started: Instant,
    order: Vec<Key>,
    vertices: HashMap<Key, Vertex>,
    /// Set when the build ended (true: it succeeded).
    finished: Option<(bool, Duration)>,
}

impl Model {
    fn new(now: Instant) -> Model {
        Model {
            started: now,
            order: Vec::new(),
            vertices: HashMap::new(),
            finished: None,
        }
    }

    /// The vertex for `key`, added (named `name`) when new.
    fn vertex(&mut self, key: Key, name: &str, now: Instant) -> &mut Vertex {
        if !self.vertices.contains_key(&key) {
            self.order.push(key.clone());
        }
        self.vertices
            .entry(key)
            .or_insert_with(|| Vertex::new(name.to_string(), now))
    }

    /// Applies one solver event.
    fn solver_event(&mut self, event: &Event, now: Instant) {
        // The build's own `exporting to image` vertex is the view's export group: its sub-steps
        // come from the build events (layers, writing image, naming), not from its log lines.
        let export = event.cache_key.is_none() && event.name == "exporting to image";
        let key = if export {
            Key::Export
        } else {
            Key::Solver(event.vertex.0)
        };
        let v = self.vertex(key, &event.name, now);
        match &event.kind {
            EventKind::Started => {
                v.started = now;
                v.status = Status::Running;
            }
            EventKind::Cached => v.status = Status::Cached,
            EventKind::Log { .. } if export => {}
            EventKind::Log { line, .. } => {
                let text = clean_line(&String::from_utf8_lossy(line));
                v.logs.push_back(text);
                while v.logs.len() > LOG_TAIL {
                    v.logs.pop_front();
                }
            }
            EventKind::Done { duration } => v.status = Status::Done(*duration),
            EventKind::Error { duration, .. } => v.status = Status::Error(*duration),
            EventKind::Canceled => v.status = Status::Canceled(now - v.started),
        }
    }

    /// Applies a build event the view shows; false for the others.
    fn build_event(&mut self, event: &BuildEvent, now: Instant) -> bool {
        match event {
            BuildEvent::Layer(p) => {
                let action = match p.action {
                    LayerAction::Export => "exporting layer",
                    LayerAction::Compress => "compressing layer",
                    _ => "processing layer",
                };
                let name = format!("{action} {}", short_id(&p.layer));
                let sub = self
                    .vertex(Key::Export, "exporting to image", now)
                    .sub(&name, now);
                sub.bytes = Some((p.done, p.total));
                if p.finished {
                    sub.ended = Some(now - sub.started);
                }
            }
            BuildEvent::ImageWritten { digest } => {
                let v = self.vertex(Key::Export, "exporting to image", now);
                let sub = v.sub(&format!("writing image {digest}"), now);
                sub.ended = Some(now - sub.started);
            }
            BuildEvent::Named { name } => {
                let v = self.vertex(Key::Export, "exporting to image", now);
                let sub = v.sub(&format!("naming to {name}"), now);
                sub.ended = Some(now - sub.started);
            }
            BuildEvent::CacheExported { to, .. } => {
                let v = self.vertex(Key::Export, "exporting to image", now);
                let sub = v.sub(&format!("exporting cache to {to}"), now);
                sub.ended = Some(now - sub.started);
            }
            BuildEvent::Pushed(summary) => {
                if let Some(v) = self.vertices.get_mut(&Key::Export) {
                    v.close(now);
                }
                let v = self.vertex(Key::Push, "pushing layers", now);
                let r = &summary.report;
                let sub = v.sub(
                    &format!(
                        "pushed {} blob(s), {} already present, {} mounted",
                        r.uploaded, r.existing, r.mounted
                    ),
                    now,
                );
                sub.bytes = Some((r.uploaded_bytes, Some(r.uploaded_bytes)));
                sub.ended = Some(summary.elapsed);
                for p in &r.pushed {
                    let sub = v.sub(&format!("pushing manifest for {p}@{}", summary.digest), now);
                    sub.ended = Some(Duration::ZERO);
                }
                v.status = Status::Done(summary.elapsed);
            }
            BuildEvent::Pull { image, progress } => {
                let key = self.pulling_vertex(image);
                let name = format!("pulling {image}");
                let blob = format!("sha256:{}", short_id(progress.digest.hex()));
                let sub = self.vertex(key, &name, now).sub(&blob, now);
                sub.bytes = Some((progress.done, Some(progress.total)));
                if progress.done >= progress.total {
                    sub.ended.get_or_insert(now - sub.started);
                }
            }
            BuildEvent::PushBytes(p) => {
                if let Some(v) = self.vertices.get_mut(&Key::Export) {
                    v.close(now);
                }
                let blob = format!("sha256:{}", short_id(p.digest.hex()));
                let sub = self
                    .vertex(Key::Push, "pushing layers", now)
                    .sub(&blob, now);
                sub.bytes = Some((p.done, Some(p.total)));
                if p.done >= p.total {
                    sub.ended.get_or_insert(now - sub.started);
                }
            }
            BuildEvent::Extract {
                image,
                layer,
                finished,
            } => {
                let key = self.pulling_vertex(image);
                let name = format!("pulling {image}");
                let line = format!("extracting sha256:{}", short_id(layer.hex()));
                let sub = self.vertex(key, &name, now).sub(&line, now);
                if *finished {
                    sub.ended.get_or_insert(now - sub.started);
                }
            }
            _ => return false,
        }
        true
    }

    /// The vertex a pull of `image` shows under: the running FROM that names it (the last
    /// one), else a vertex of its own.
    fn pulling_vertex(&self, image: &str) -> Key {
        let repo = image.split('@').next().unwrap_or(image);
        self.order
            .iter()
            .rev()
            .find(|k| {
                matches!(k, Key::Solver(_))
                    && self
                        .vertices
                        .get(*k)
                        .is_some_and(|v| v.status == Status::Running && v.name.contains(repo))
            })
            .cloned()
            .unwrap_or_else(|| Key::Pull(image.to_string()))
    }

    /// Vertices done (finished, cached or failed) and known.
    fn counts(&self) -> (usize, usize) {
        let done = self.vertices.values().filter(|v| v.finished()).count();
        (done, self.vertices.len())
    }

    /// The frame's lines at `width` columns; at most `height` lines when given (finished
    /// vertices leave first, oldest first, then the oldest lines).
    fn lines(&self, width: usize, height: Option<usize>, now: Instant) -> Vec<String> {
        let elapsed = match self.finished {
            Some((_, at)) => at,
            None => now - self.started,
        };
        let (done, total) = self.counts();
        let mut header = format!(
            "[+] Building {:.1}s ({done}/{total})",
            elapsed.as_secs_f64()
        );
        if self.finished.is_some_and(|(ok, _)| ok) {
            header.push_str(" FINISHED");
        }
        let mut blocks: Vec<(bool, Vec<String>)> = self
            .order
            .iter()
            .filter_map(|k| self.vertices.get(k))
            .map(|v| (v.finished(), self.block(v, width, now)))
            .collect();
        if let Some(height) = height {
            let budget = height.saturating_sub(1);
            let mut used: usize = blocks.iter().map(|(_, b)| b.len()).sum();
            while used > budget {
                let Some(i) = blocks.iter().position(|(f, _)| *f) else {
                    break;
                };
                used -= blocks.remove(i).1.len();
            }
            let mut body: Vec<String> = blocks.into_iter().flat_map(|(_, b)| b).collect();
            let cut = body.len().saturating_sub(budget);
            body.drain(..cut);
            return std::iter::once(cut_to(&header, width))
                .chain(body)
                .collect();
        }
        std::iter::once(cut_to(&header, width))
            .chain(blocks.into_iter().flat_map(|(_, b)| b))
            .collect()
    }

    /// A vertex's lines: itself, its sub-lines, and its output tail while it runs (and when it
    /// failed, as BuildKit leaves it).
    fn block(&self, v: &Vertex, width: usize, now: Instant) -> Vec<String> {
        let (prefix, time) = match v.status {
            Status::Running => ("", now - v.started),
            Status::Done(d) => ("", d),
            Status::Cached => ("CACHED ", Duration::ZERO),
            Status::Error(d) => ("ERROR ", d),
            Status::Canceled(d) => ("CANCELED ", d),
        };
        let mut out = vec![align(
            &format!(" => {prefix}{}", v.name),
            &timer(time),
            width,
        )];
        for s in &v.subs {
            let time = s.ended.unwrap_or_else(|| now - s.started);
            let mut left = format!(" => => {}", s.name);
            if let Some((done, total)) = s.bytes {
                left.push(' ');
                left.push_str(&bytes(done, total, time, s.ended.is_some()));
            }
            out.push(align(&left, &timer(time), width));
        }
        if matches!(v.status, Status::Running | Status::Error(_)) {
            for l in &v.logs {
                out.push(cut_to(&format!(" => => # {l}"), width.saturating_sub(1)));
            }
        }
        out
    }
}

/// A duration as BuildKit's tty timers: seconds to 0.1.
fn timer(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// `12.3MB / 45.6MB 3.2MB/s` (decimal units, as BuildKit's pull and push lines), the rate only
/// while the transfer runs.
fn bytes(done: u64, total: Option<u64>, elapsed: Duration, ended: bool) -> String {
    let mut s = match total {
        Some(t) => format!("{} / {}", size(done), size(t)),
        None => size(done),
    };
    let secs = elapsed.as_secs_f64();
    if !ended && secs > 0.0 {
        s.push_str(&format!(" {}/s", size((done as f64 / secs) as u64)));
    }
    s
}

/// Bytes in decimal units without a space (`1.06MB`), as BuildKit prints them.
fn size(n: u64) -> String {
    indicatif::DecimalBytes(n).to_string().replace(' ', "")
}

/// The first 12 hex digits of a digest or snapshot id (`sha256:` dropped), as BuildKit shows.
fn short_id(id: &str) -> &str {
    let hex = id.rsplit(':').next().unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

/// A log line made safe to draw: the text after the last carriage return, escapes and other
/// control characters dropped, tabs as spaces, trailing blanks trimmed.
fn clean_line(raw: &str) -> String {
    let last = raw
        .trim_end_matches(['\n', '\r'])
        .rsplit('\r')
        .next()
        .unwrap_or_default();
    let plain = console::strip_ansi_codes(last);
    let mut out = String::with_capacity(plain.len());
    for c in plain.chars() {
        match c {
            '\t' => out.push_str("    "),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.trim_end().to_string()
}

/// `s` cut to `width` columns.
fn cut_to(s: &str, width: usize) -> String {
    console::truncate_str(s, width, "").into_owned()
}

/// `left` and `right` on one line that stops one column short of `width` (as BuildKit's, so
/// the terminal never wraps at its last column), `right` at its end and at least two spaces
/// before it, `left` cut to make room.
fn align(left: &str, right: &str, width: usize) -> String {
    let width = width.saturating_sub(1);
    let rw = console::measure_text_width(right);
    if width < rw + 3 {
        return cut_to(left, width);
    }
    let left = cut_to(left, width - rw - 2);
    let pad = width - rw - console::measure_text_width(&left);
    format!("{left}{}{right}", " ".repeat(pad))
}

/// The terminal's size of standard error: (rows, columns).
fn term_size() -> (Option<usize>, usize) {
    match console::Term::stderr().size_checked() {
        Some((rows, cols)) if cols > 0 => (Some(rows as usize).filter(|r| *r > 1), cols as usize),
        _ => (None, FALLBACK_WIDTH),
    }
}

/// The tty renderer of one build: a solver sink and the build events it draws, redrawn by
/// indicatif's ticker; [`TtyProgress::finish`] prints the final tree.
pub struct TtyProgress {
    model: Arc<Mutex<Model>>,
    bar: ProgressBar,
}

impl std::fmt::Debug for TtyProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TtyProgress")
    }
}

impl TtyProgress {
    /// Starts the view on standard error (which the caller checked is a terminal).
    pub fn start() -> TtyProgress {
        let model = Arc::new(Mutex::new(Model::new(Instant::now())));
        let frame_model = model.clone();
        let frame = move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let (rows, cols) = term_size();
            let Ok(m) = frame_model.lock() else { return };
            let _ = w.write_str(&m.lines(cols, rows, Instant::now()).join("\n"));
        };
        let style = ProgressStyle::with_template("{frame}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key("frame", frame);
        let bar =
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(REFRESH_HZ));
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(1000 / REFRESH_HZ as u64));
        TtyProgress { model, bar }
    }

    fn model(&self) -> Option<MutexGuard<'_, Model>> {
        self.model.lock().ok()
    }

    /// The sink for the solver's events.
    pub fn sink(&self) -> ProgressSink {
        let model = self.model.clone();
        ProgressSink::new(move |event: Event| {
            if let Ok(mut m) = model.lock() {
                m.solver_event(&event, Instant::now());
            }
        })
    }

    /// Draws `event` when the view shows it; gives it back otherwise, to be printed above the
    /// view (through [`TtyProgress::suspend`]).
    pub fn event(&self, event: BuildEvent) -> Option<BuildEvent> {
        let shown = match self.model() {
            Some(mut m) if m.finished.is_none() => m.build_event(&event, Instant::now()),
            _ => false,
        };
        (!shown).then_some(event)
    }

    /// Runs `f` (which prints) with the view cleared, then redraws it.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// Ends the view: stops redrawing and prints the whole tree once (`ok`: the build
    /// succeeded). Later calls do nothing.
    pub fn finish(&self, ok: bool) {
        let now = Instant::now();
        let lines = {
            let Some(mut m) = self.model() else { return };
            if m.finished.is_some() {
                return;
            }
            let elapsed = now - m.started;
            m.finished = Some((ok, elapsed));
            for (key, v) in m.vertices.iter_mut() {
                if !matches!(key, Key::Solver(_)) {
                    v.close(now);
                }
            }
            m.lines(term_size().1, None, now)
        };
        self.bar.finish_and_clear();
        use std::io::Write;
        let mut err = std::io::stderr().lock();
        for l in lines {
            let _ = writeln!(err, "{l}");
        }
    }
}

impl Drop for TtyProgress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_name_is_cut_and_the_timer_stays_at_the_right_edge() {
        let line = align(" => [2/3] RUN echo a very long command line", "1.2s", 30);
        assert_eq!(line.chars().count(), 29);
        assert!(line.ends_with("  1.2s"), "{line}");
        assert!(line.starts_with(" => [2/3] RUN echo"), "{line}");
    }

    #[test]
    fn log_lines_keep_the_text_after_the_last_carriage_return_without_escapes() {
        assert_eq!(clean_line("10%\r50%\r\x1b[1mdone\x1b[0m\t!\n"), "done    !");
    }

    #[test]
    fn finished_vertices_leave_a_short_terminal_first() {
        let t0 = Instant::now();
        let mut m = Model::new(t0);
        for i in 0..5 {
            m.vertex(Key::Solver(i), &format!("step {i}"), t0).status =
                Status::Done(Duration::from_millis(100));
        }
        m.vertex(Key::Solver(9), "running", t0);
        let lines = m.lines(40, Some(4), t0);
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert!(lines[0].starts_with("[+] Building 0.0s (5/6)"), "{lines:?}");
        assert!(lines[3].starts_with(" => running"), "{lines:?}");
        assert!(lines[1].starts_with(" => step 3"), "{lines:?}");
    }

    #[test]
    fn transfers_show_bytes_and_a_rate_while_they_run() {
        let running = bytes(500_000, Some(1_000_000), Duration::from_secs(2), false);
        assert_eq!(running, "500.00kB / 1.00MB 250.00kB/s");
        let ended = bytes(1_000_000, Some(1_000_000), Duration::from_secs(2), true);
        assert_eq!(ended, "1.00MB / 1.00MB");
    }

    #[test]
    fn short_ids_drop_the_algorithm() {
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("snap1"), "snap1");
    }
}
