//! `.dockerignore` matching with Docker's semantics (moby/patternmatcher): comments and blank
//! lines skipped, `!` exceptions, last match wins, patterns cleaned like Go's `filepath.Clean`
//! with leading `/` and `./` removed, `*` and `?` within one path component, `**` across any
//! number of components, and a pattern that matches a directory excludes everything under it.
//! It also owns the walk rule every context walker shares (copy, cache key, cache-mount seeding),
//! as BuildKit's fsutil walker: an excluded directory is walked only when an exception could match
//! under it, and appears only when something under it is kept.

use crate::glob::glob_match;
use std::fs;
use std::io;
use std::path::Path;

/// What a filtered tree walk does with one entry (BuildKit's fsutil walker semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Included: copied (a directory is walked, its children filtered again).
    Keep,
    /// Excluded, and nothing under it can be re-included: not walked at all.
    Drop,
    /// An excluded directory that an exception (`!`) may re-include something under: walked,
    /// and present in the result (with its own metadata) only when something under it is kept.
    Probe,
}

impl Verdict {
    /// The verdict of two filters applied together (kept only when both keep it).
    pub fn and(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Verdict::Drop, _) | (_, Verdict::Drop) => Verdict::Drop,
            (Verdict::Probe, _) | (_, Verdict::Probe) => Verdict::Probe,
            _ => Verdict::Keep,
        }
    }
}

/// True when walking the directory `dir` (a host path) finds an entry that `verdict` keeps;
/// `verdict` gets the child's host path and name and whether it is a directory.
pub fn keeps_anything(
    dir: &Path,
    verdict: &mut dyn FnMut(&Path, &std::ffi::OsStr, bool) -> Verdict,
) -> io::Result<bool> {
    let mut names: Vec<_> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        let child = dir.join(&name);
        let is_dir = fs::symlink_metadata(&child)?.is_dir();
        match verdict(&child, &name, is_dir) {
            Verdict::Keep => return Ok(true),
            Verdict::Drop => {}
            Verdict::Probe => {
                if keeps_anything(&child, verdict)? {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

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

    /// What a walk does with `rel` (relative to the context root): kept, dropped, or (an excluded
    /// directory under which an exception could still match) walked to look for kept entries.
    pub fn verdict(&self, rel: &str, is_dir: bool) -> Verdict {
        if !self.excluded(rel) {
            return Verdict::Keep;
        }
        if !is_dir {
            return Verdict::Drop;
        }
        let path = clean(rel);
        let reachable = self
            .patterns
            .iter()
            .any(|p| p.exception && could_match_below(&p.parts, &path));
        if reachable {
            Verdict::Probe
        } else {
            Verdict::Drop
        }
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

/// True when `pattern` could match some path strictly below `dir`, or a prefix of it (then it
/// matches everything below). Conservative: a false answer is certain.
fn could_match_below(pattern: &[String], dir: &[String]) -> bool {
    match pattern.first() {
        None => true,
        Some(_) if dir.is_empty() => true,
        Some(p) if p == "**" => {
            (0..=dir.len()).any(|skip| could_match_below(&pattern[1..], &dir[skip..]))
        }
        Some(p) => {
            glob_match(p.as_bytes(), dir[0].as_bytes())
                && could_match_below(&pattern[1..], &dir[1..])
        }
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
        assert_eq!(
            m.verdict("x", true),
            Verdict::Drop,
            "no exceptions: not walked"
        );
        assert!(m.excluded("x/y"));
        let m = Matcher::new(&["a/**/z"]);
        assert!(m.excluded("a/z") && m.excluded("a/b/c/z") && !m.excluded("b/z"));
    }

    #[test]
    fn verdicts_walk_only_where_an_exception_can_match() {
        let m = Matcher::new(&["*", "!src", "!config/*.yml"]);
        assert_eq!(m.verdict("src", true), Verdict::Keep);
        assert_eq!(
            m.verdict(".git", true),
            Verdict::Drop,
            "no exception reaches .git"
        );
        assert_eq!(m.verdict("node_modules", true), Verdict::Drop);
        assert_eq!(m.verdict("config", true), Verdict::Probe);
        assert_eq!(m.verdict("config/sub", true), Verdict::Drop);
        assert_eq!(m.verdict("config/a.yml", false), Verdict::Keep);
        assert_eq!(m.verdict("README", false), Verdict::Drop);
        let m = Matcher::new(&["**/node_modules", "!important/node_modules/keep.me"]);
        assert_eq!(m.verdict("src/node_modules", true), Verdict::Drop);
        assert_eq!(m.verdict("important/node_modules", true), Verdict::Probe);
        let m = Matcher::new(&["logs/*", "!logs/keep*"]);
        assert_eq!(m.verdict("logs", true), Verdict::Keep);
        assert_eq!(m.verdict("logs/sub", true), Verdict::Drop);
        let m = Matcher::new(&["a", "!**/keep"]);
        assert_eq!(m.verdict("a", true), Verdict::Probe);
        assert_eq!(m.verdict("a/b/c", true), Verdict::Probe);
        assert_eq!(Verdict::Keep.and(Verdict::Probe), Verdict::Probe);
        assert_eq!(Verdict::Probe.and(Verdict::Drop), Verdict::Drop);
    }
}
