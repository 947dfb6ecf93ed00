//! User-facing error reports: the message, the Dockerfile excerpt with the failing line marked,
//! the last lines of a failed RUN's output, and the exit code.

use std::fmt;

/// An error as the user sees it.
#[derive(Debug)]
pub struct Report {
    text: String,
    code: u8,
}

impl Report {
    /// A plain error (exit code 1).
    pub fn new(text: impl Into<String>) -> Self {
        Report {
            text: text.into(),
            code: 1,
        }
    }

    /// With another exit code.
    pub fn with_code(mut self, code: u8) -> Self {
        self.code = code;
        self
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        self.code
    }

    /// An error and its chain of causes, `a: b: c`.
    pub fn from_error(context: &str, err: &dyn std::error::Error) -> Self {
        Report::new(format!("error: {context}: {}", chain(err)))
    }
}

/// `err` and its sources joined with `: `.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// BuildKit's excerpt of the Dockerfile around lines `start..=end` (1-based), failing lines marked `>>>`.
pub fn excerpt(file_name: &str, source: &str, start: usize, end: usize) -> String {
    let lines: Vec<&str> = source.lines().collect();
    let mut out = String::new();
    if start == end {
        out.push_str(&format!("{file_name}:{start}\n"));
    } else {
        out.push_str(&format!("{file_name}:{start}-{end}\n"));
    }
    out.push_str("--------------------\n");
    let from = start.saturating_sub(2).max(1);
    let to = (end + 2).min(lines.len());
    for n in from..=to {
        let text = lines.get(n - 1).copied().unwrap_or("");
        let marker = if n >= start && n <= end { ">>>" } else { "   " };
        out.push_str(&format!("{n:>4} | {marker} {text}\n"));
    }
    out.push_str("--------------------");
    out
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_marks_the_failing_line() {
        let src = "FROM a\nRUN b\nRUN c\nRUN d\n";
        let e = excerpt("Dockerfile", src, 3, 3);
        assert!(e.starts_with("Dockerfile:3\n"));
        assert!(e.contains("   3 | >>> RUN c"));
        assert!(e.contains("   2 |     RUN b"));
    }
}
