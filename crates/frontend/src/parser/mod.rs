//! Dockerfile parser: a physical-line pre-pass (directives, comments, continuations, heredoc
//! bodies) around the pest grammar in `dockerfile.pest`, which gives the structure of each
//! logical line (keyword, flags, arguments, JSON arrays, ENV/LABEL/ARG words, heredoc markers).
//!
//! Semantics follow BuildKit's `frontend/dockerfile/parser`; the comments name the BuildKit
//! behaviour each step reproduces.
//!
//! This module holds the entry point and the parser state; `lines` is the physical-line pre-pass,
//! `instruction` turns a logical line into an instruction, `args` splits the argument forms,
//! `heredoc` finds heredoc markers, `suggest` proposes keywords and `dump` prints BuildKit's
//! test format.

mod args;
mod dump;
mod heredoc;
mod instruction;
mod lines;
mod suggest;
#[cfg(test)]
mod tests;

pub use dump::dump;

use crate::ast::{Dockerfile, Span};
use crate::error::{ParseError, ParseErrorKind};
use lines::PhysLine;

mod grammar {
    //! The pest-generated parser (kept private: `Rule` is an implementation detail).
    #[derive(pest_derive::Parser)]
    #[grammar = "dockerfile.pest"]
    pub(super) struct DockerfileGrammar;
}

/// Deepest accepted `ONBUILD` nesting (BuildKit rejects `ONBUILD ONBUILD` anyway).
const MAX_ONBUILD_DEPTH: usize = 1;

/// Parses a Dockerfile.
///
/// Errors: unknown instructions (with a `did you mean` suggestion), bad or repeated directives,
/// JSON arrays of non-strings, legacy `ENV key` without a value, `ENV a=b c`, unterminated
/// heredocs, `ONBUILD ONBUILD`/`ONBUILD FROM`/`ONBUILD MAINTAINER`, and a file without
/// instructions. Argument-count checks of individual instructions are left to the converter
/// (as BuildKit leaves them to its `instructions` package).
pub fn parse(source: &str) -> Result<Dockerfile, ParseError> {
    Parser::new(source).run()
}

/// The parser's state: the source split into physical lines, and the directives seen so far.
struct Parser<'s> {
    source: &'s str,
    lines: Vec<PhysLine>,
    escape: char,
    syntax: Option<String>,
    check: Option<String>,
    directives_done: bool,
    seen_directives: Vec<String>,
}

/// The part of a line a rule produced, with its offset inside the logical line.
struct Located<'a> {
    text: &'a str,
    /// Logical offset of `text`.
    at: usize,
}

impl<'s> Parser<'s> {
    fn new(source: &'s str) -> Parser<'s> {
        let bom = if source.starts_with('\u{feff}') {
            '\u{feff}'.len_utf8()
        } else {
            0
        };
        let mut lines = Vec::new();
        let mut start = bom;
        while start < source.len() {
            let rest = &source[start..];
            let full_end = match rest.find('\n') {
                Some(i) => start + i + 1,
                None => source.len(),
            };
            // BuildKit trimNewline: trailing '\r' and '\n' characters.
            let content = source[start..full_end].trim_end_matches(['\r', '\n']);
            lines.push(PhysLine {
                start,
                content_end: start + content.len(),
                full_end,
            });
            start = full_end;
        }
        Parser {
            source,
            lines,
            escape: '\\',
            syntax: None,
            check: None,
            directives_done: false,
            seen_directives: Vec::new(),
        }
    }

    fn content(&self, idx: usize) -> &'s str {
        let l = self.lines[idx];
        &self.source[l.start..l.content_end]
    }

    /// 1-based (line, column) of a source byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        let idx = self
            .lines
            .partition_point(|l| l.start <= offset)
            .saturating_sub(1);
        match self.lines.get(idx) {
            Some(l) => {
                let from = l.start.min(offset);
                let col = self
                    .source
                    .get(from..offset)
                    .map(|s| s.chars().count())
                    .unwrap_or(0);
                (idx + 1, col + 1)
            }
            None => (1, 1),
        }
    }

    fn span(&self, start: usize, end: usize) -> Span {
        let (start_line, start_col) = self.position(start);
        let (end_line, end_col) = self.position(end);
        Span {
            start_line,
            start_col,
            end_line,
            end_col,
            offset: start,
            len: end.saturating_sub(start),
        }
    }

    fn error_at(&self, kind: ParseErrorKind, offset: usize) -> ParseError {
        let (line, col) = self.position(offset);
        ParseError::new(kind, self.source, line, col)
    }

    fn error_line(&self, kind: ParseErrorKind, line: usize) -> ParseError {
        ParseError::new(kind, self.source, line, 1)
    }
}
