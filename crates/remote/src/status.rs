//! BuildKit's status stream mapped onto rbuild's per-vertex progress events, so a remote solve
//! renders as a local one: a vertex's first `started` is `Started`, its `completed` is `Cached`,
//! `Done` or `Error` (BuildKit's message), its logs are `Log` lines, and a status line (bytes
//! transferred, a layer's progress) is shown as a log line of its vertex when it completes.

use crate::proto::control::{StatusResponse, Time};
use rbuild_solver::{Event, EventKind, LogStream, ProgressSink, VertexId};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Remote vertices are numbered from here, apart from the solver's and the build's own.
const FIRST_ID: usize = 1 << 41;

/// The state of one status stream's mapping.
pub(crate) struct StatusMapper {
    sink: ProgressSink,
    ids: HashMap<String, (VertexId, String)>,
    started: HashMap<String, SystemTime>,
    ended: HashSet<String>,
    partial: HashMap<(String, i64), Vec<u8>>,
    /// The first error a vertex reported (its digest, name and BuildKit's message).
    pub(crate) failed: Option<(String, String, String)>,
}

fn time_of(t: &Option<Time>) -> Option<SystemTime> {
    let t = t.as_ref()?;
    let secs = u64::try_from(t.seconds).ok()?;
    let nanos = u32::try_from(t.nanos).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// docker's go-units `HumanSize`: decimal units, four significant digits (`45B`, `2.13MB`).
fn human_size(bytes: i64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut value = bytes.max(0) as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let integer_digits = if value < 1.0 {
        1
    } else {
        value.log10().floor() as usize + 1
    };
    let text = format!("{:.*}", 4usize.saturating_sub(integer_digits), value);
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{}", UNITS[unit])
}

impl StatusMapper {
    /// A mapper sending to `sink`.
    pub(crate) fn new(sink: ProgressSink) -> StatusMapper {
        StatusMapper {
            sink,
            ids: HashMap::new(),
            started: HashMap::new(),
            ended: HashSet::new(),
            partial: HashMap::new(),
            failed: None,
        }
    }

    fn emit(&self, digest: &str, kind: EventKind, at: SystemTime) {
        if let Some((id, name)) = self.ids.get(digest) {
            self.sink.emit(Event {
                vertex: *id,
                name: name.clone(),
                cache_key: None,
                kind,
                at,
            });
        }
    }

    /// Maps one status message. The lines of a vertex that arrive with its completion
    /// (`pushing manifest for ...`, its last log) are shown before the completion.
    pub(crate) fn update(&mut self, status: StatusResponse) {
        let StatusResponse {
            vertexes,
            mut statuses,
            mut logs,
        } = status;
        for vertex in &vertexes {
            if !self.ids.contains_key(&vertex.digest) {
                let id = VertexId(FIRST_ID + self.ids.len());
                self.ids
                    .insert(vertex.digest.clone(), (id, vertex.name.clone()));
            }
        }
        for vertex in vertexes {
            if self.ended.contains(&vertex.digest) {
                continue;
            }
            let now = SystemTime::now();
            let started = time_of(&vertex.started);
            if let Some(at) = started {
                if !vertex.cached && !self.started.contains_key(&vertex.digest) {
                    self.started.insert(vertex.digest.clone(), at);
                    self.emit(&vertex.digest, EventKind::Started, at);
                }
            }
            let Some(completed) = time_of(&vertex.completed) else {
                continue;
            };
            let (own, rest): (Vec<_>, Vec<_>) = statuses
                .into_iter()
                .partition(|st| st.vertex == vertex.digest);
            statuses = rest;
            let (own_logs, rest): (Vec<_>, Vec<_>) =
                logs.into_iter().partition(|l| l.vertex == vertex.digest);
            logs = rest;
            self.statuses_and_logs(own, own_logs);
            self.flush_logs(&vertex.digest);
            let duration = self
                .started
                .get(&vertex.digest)
                .and_then(|s| completed.duration_since(*s).ok())
                .unwrap_or_default();
            let kind = if !vertex.error.is_empty() {
                if self.failed.is_none() {
                    self.failed = Some((
                        vertex.digest.clone(),
                        vertex.name.clone(),
                        vertex.error.clone(),
                    ));
                }
                EventKind::Error {
                    message: vertex.error.clone(),
                    duration,
                }
            } else if vertex.cached {
                EventKind::Cached
            } else {
                if !self.started.contains_key(&vertex.digest) {
                    self.emit(&vertex.digest, EventKind::Started, started.unwrap_or(now));
                }
                EventKind::Done { duration }
            };
            self.ended.insert(vertex.digest.clone());
            self.emit(&vertex.digest, kind, completed);
        }
        self.statuses_and_logs(statuses, logs);
    }

    /// The finished statuses of vertices still running, as buildx prints them, and the logs.
    fn statuses_and_logs(
        &mut self,
        statuses: Vec<crate::proto::control::VertexStatus>,
        logs: Vec<crate::proto::control::VertexLog>,
    ) {
        for st in statuses {
            if time_of(&st.completed).is_none() || self.ended.contains(&st.vertex) {
                continue;
            }
            // As buildx prints a finished status: `transferring context: 45B done`,
            // `sha256:... 2.13MB / 2.13MB done`.
            let line = if st.total > 0 {
                format!(
                    "{} {} / {} done",
                    st.id,
                    human_size(st.current),
                    human_size(st.total)
                )
            } else if st.current > 0 {
                format!("{} {} done", st.id, human_size(st.current))
            } else {
                format!("{} done", st.id)
            };
            self.emit(
                &st.vertex,
                EventKind::Log {
                    stream: LogStream::Stderr,
                    line: line.into_bytes(),
                },
                SystemTime::now(),
            );
        }
        for log in logs {
            let stream = if log.stream == 1 {
                LogStream::Stdout
            } else {
                LogStream::Stderr
            };
            let key = (log.vertex.clone(), log.stream);
            let buf = self.partial.entry(key).or_default();
            buf.extend_from_slice(&log.msg);
            let mut lines = Vec::new();
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                lines.push(line[..line.len() - 1].to_vec());
            }
            let at = time_of(&log.timestamp).unwrap_or_else(SystemTime::now);
            for line in lines {
                self.emit(&log.vertex, EventKind::Log { stream, line }, at);
            }
        }
    }

    /// Sends what is left of a vertex's unterminated log lines.
    fn flush_logs(&mut self, digest: &str) {
        for stream in [1i64, 2] {
            if let Some(rest) = self.partial.remove(&(digest.to_string(), stream)) {
                if !rest.is_empty() {
                    let stream = if stream == 1 {
                        LogStream::Stdout
                    } else {
                        LogStream::Stderr
                    };
                    self.emit(
                        digest,
                        EventKind::Log { stream, line: rest },
                        SystemTime::now(),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_go_units_prints_them() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(45), "45B");
        assert_eq!(human_size(2_130_944), "2.131MB");
        assert_eq!(human_size(1_000), "1kB");
        assert_eq!(human_size(123_456_789), "123.5MB");
    }
    use crate::proto::control::{Vertex, VertexLog};
    use std::sync::Mutex;

    fn at(seconds: i64) -> Option<Time> {
        Some(Time { seconds, nanos: 0 })
    }

    /// A run vertex: started, two log messages split mid-line, completed; a cached vertex; a
    /// failed one. Each vertex gets one terminal event, logs come out as whole lines.
    #[test]
    fn buildkits_status_becomes_rbuilds_events() {
        let events = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let events = events.clone();
            ProgressSink::new(move |e| events.lock().unwrap().push(e))
        };
        let mut mapper = StatusMapper::new(sink);
        let vertex = |digest: &str, name: &str| Vertex {
            digest: digest.into(),
            name: name.into(),
            ..Default::default()
        };
        mapper.update(StatusResponse {
            vertexes: vec![Vertex {
                started: at(10),
                ..vertex("sha256:run", "[2/2] RUN make")
            }],
            ..Default::default()
        });
        mapper.update(StatusResponse {
            logs: vec![
                VertexLog {
                    vertex: "sha256:run".into(),
                    stream: 1,
                    msg: b"hel".to_vec(),
                    ..Default::default()
                },
                VertexLog {
                    vertex: "sha256:run".into(),
                    stream: 1,
                    msg: b"lo\nwor".to_vec(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        mapper.update(StatusResponse {
            vertexes: vec![
                Vertex {
                    started: at(10),
                    completed: at(12),
                    ..vertex("sha256:run", "[2/2] RUN make")
                },
                Vertex {
                    cached: true,
                    started: at(9),
                    completed: at(9),
                    ..vertex("sha256:from", "[1/2] FROM busybox")
                },
                Vertex {
                    started: at(11),
                    completed: at(12),
                    error: "exit code: 2".into(),
                    ..vertex("sha256:bad", "[3/3] RUN false")
                },
            ],
            ..Default::default()
        });
        let events = events.lock().unwrap();
        let kinds: Vec<(String, String)> = events
            .iter()
            .map(|e| {
                let kind = match &e.kind {
                    EventKind::Log { line, .. } => {
                        format!("log {}", String::from_utf8_lossy(line))
                    }
                    EventKind::Done { duration } => format!("done {}s", duration.as_secs()),
                    other => format!("{other:?}"),
                };
                (e.name.clone(), kind)
            })
            .collect();
        let want = |n: &str, k: &str| (n.to_string(), k.to_string());
        assert_eq!(
            kinds,
            vec![
                want("[2/2] RUN make", "Started"),
                want("[2/2] RUN make", "log hello"),
                want("[2/2] RUN make", "log wor"),
                want("[2/2] RUN make", "done 2s"),
                want("[1/2] FROM busybox", "Cached"),
                want("[3/3] RUN false", "Started"),
                want(
                    "[3/3] RUN false",
                    "Error { message: \"exit code: 2\", duration: 1s }"
                ),
            ]
        );
        assert_eq!(
            mapper.failed,
            Some((
                "sha256:bad".into(),
                "[3/3] RUN false".into(),
                "exit code: 2".into()
            ))
        );
    }

    /// The last status line and log of a vertex that arrive in the message completing it are
    /// shown before its completion, not dropped.
    #[test]
    fn lines_arriving_with_the_completion_come_before_it() {
        use crate::proto::control::VertexStatus;
        let events = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let events = events.clone();
            ProgressSink::new(move |e| events.lock().unwrap().push(e))
        };
        let mut mapper = StatusMapper::new(sink);
        let export = Vertex {
            digest: "sha256:export".into(),
            name: "exporting to image".into(),
            started: at(10),
            ..Default::default()
        };
        mapper.update(StatusResponse {
            vertexes: vec![export.clone()],
            ..Default::default()
        });
        mapper.update(StatusResponse {
            vertexes: vec![Vertex {
                completed: at(11),
                ..export
            }],
            statuses: vec![VertexStatus {
                id: "pushing manifest for reg/x:1".into(),
                vertex: "sha256:export".into(),
                started: at(10),
                completed: at(11),
                ..Default::default()
            }],
            logs: vec![VertexLog {
                vertex: "sha256:export".into(),
                stream: 2,
                msg: b"pushed\n".to_vec(),
                ..Default::default()
            }],
        });
        let events = events.lock().unwrap();
        let kinds: Vec<String> = events
            .iter()
            .map(|e| match &e.kind {
                EventKind::Log { line, .. } => format!("log {}", String::from_utf8_lossy(line)),
                EventKind::Done { .. } => "done".to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "Started",
                "log pushing manifest for reg/x:1 done",
                "log pushed",
                "done"
            ]
        );
    }
}
