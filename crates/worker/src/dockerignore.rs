//! `.dockerignore` matching with Docker's semantics (moby/patternmatcher): comments and blank
//! lines skipped, `!` exceptions, last match wins, patterns cleaned like Go's `filepath.Clean`
//! with leading `/` and `./` removed, `*` and `?` within one path component, `**` across any
//! number of components, and a pattern that matches a directory excludes everything under it.

use crate::glob::glob_match;

/// One pattern line.
#[derive(Debug, Clone)]
struct Pattern {
    parts: Vec<String>,
    exception: bool,
}

/// A compiled `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

fn clean(path: &str) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other.to_string()),
        }
    }
    parts
}

impl Matcher {
    /// Compiles the patterns (lines of a `.dockerignore`, or the excludes of a local source).
    pub fn new<S: AsRef<str>>(lines: &[S]) -> Self {
        let mut patterns = Vec::new();
        for line in lines {
            let line = line.as_ref().trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, body) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let parts = clean(body);
            if parts.is_empty() {
                continue;
            }
            patterns.push(Pattern { parts, exception });
        }
        Matcher { patterns }
    }

    /// Parses the text of a `.dockerignore` file into pattern lines.
    pub fn lines_of(text: &str) -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    }

    /// True when nothing is excluded.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// True when some pattern is an exception (`!`), so excluded directories must still be walked.
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }

    /// True when `rel` (a path relative to the context root) is excluded.
    pub fn excluded(&self, rel: &str) -> bool {
        let path = clean(rel);
        if path.is_empty() {
            return false;
        }
        let mut excluded = false;
        for pattern in &self.patterns {
            let hit = (1..=path.len()).any(|n| match_parts(&pattern.parts, &path[..n]));
            if hit {
                excluded = !pattern.exception;
            }
        }
        excluded
    }
}

fn match_parts(pattern: &[String], path: &[String]) -> bool {
    match pattern.first() {
        None => path.is_empty(),
        Some(p) if p == "**" => {
            (0..=path.len()).any(|skip| match_parts(&pattern[1..], &path[skip..]))
        }
        Some(p) => match path.first() {
            Some(name) => {
                glob_match(p.as_bytes(), name.as_bytes()) && match_parts(&pattern[1..], &path[1..])
            }
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_semantics() {
        let m = Matcher::new(&[
            "# comment",
            "*.log",
            "**/*.tmp",
            "secret/",
            "/abs-style.txt",
            "./dot-style.txt",
            "Dockerfile",
        ]);
        assert!(m.excluded("app.log"));
        assert!(!m.excluded("sub/app.log"), "*.log is top level only");
        assert!(m.excluded("a/b/deep.tmp") && m.excluded("top.tmp"));
        assert!(m.excluded("secret") && m.excluded("secret/key"));
        assert!(m.excluded("abs-style.txt") && m.excluded("dot-style.txt"));
        assert!(!m.excluded("keep.txt") && !m.excluded("a/b/keep.dat"));
        let m = Matcher::new(&["docs", "!docs/keep.md", "*.md", "!README.md"]);
        assert!(m.excluded("docs/a.txt"));
        assert!(
            !m.excluded("docs/keep.md"),
            "the exception re-includes it; *.md is top level only"
        );
        assert!(m.excluded("notes.md"));
        assert!(!m.excluded("README.md"));
        let m = Matcher::new(&["**"]);
        assert!(m.excluded("x/y"));
        let m = Matcher::new(&["a/**/z"]);
        assert!(m.excluded("a/z") && m.excluded("a/b/c/z") && !m.excluded("b/z"));
    }
}
