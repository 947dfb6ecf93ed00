//! The physical-line pre-pass: parser directives, comments, line continuations and heredoc
//! bodies, joining physical lines into logical lines mapped back to source offsets.

use super::grammar::{DockerfileGrammar, Rule};
use super::heredoc::chomp_tabs;
use super::Parser;
use crate::ast::{Directives, Dockerfile, Heredoc};
use crate::error::{ParseError, ParseErrorKind};
use pest::Parser as _;

/// One physical line of the source.
#[derive(Debug, Clone, Copy)]
pub(super) struct PhysLine {
    /// Byte offset of the first character (after a BOM on line 1).
    pub(super) start: usize,
    /// Byte offset past the content, trailing `\r`/`\n` excluded.
    pub(super) content_end: usize,
    /// Byte offset past the line, newline included.
    pub(super) full_end: usize,
}

/// A continuation-joined logical line with the mapping back to source offsets.
pub(super) struct Logical {
    /// The joined text.
    pub(super) text: String,
    /// `(logical offset, source offset)` for every copied piece, in order.
    pub(super) segments: Vec<(usize, usize)>,
}

impl Logical {
    fn push(&mut self, piece: &str, src: usize) {
        if piece.is_empty() {
            return;
        }
        self.segments.push((self.text.len(), src));
        self.text.push_str(piece);
    }

    /// The source byte offset of logical byte offset `pos`.
    pub(super) fn src(&self, pos: usize) -> usize {
        let idx = self.segments.partition_point(|&(l, _)| l <= pos);
        match idx.checked_sub(1).and_then(|i| self.segments.get(i)) {
            Some(&(l, s)) => s + (pos - l),
            None => self.segments.first().map(|&(_, s)| s).unwrap_or(0),
        }
    }

    /// The source byte range of the logical range `start..end`.
    pub(super) fn src_range(&self, start: usize, end: usize) -> (usize, usize) {
        let s = self.src(start);
        if end <= start {
            return (s, s);
        }
        let last = self
            .text
            .get(..end)
            .and_then(|t| t.chars().next_back())
            .map(char::len_utf8)
            .unwrap_or(0);
        let e = self.src(end - last) + last;
        (s, e)
    }
}

impl Parser<'_> {
    /// BuildKit directive handling: directives are recognised only until the first line that is
    /// not one; an unknown name ends the directive block.
    fn possible_directive(&mut self, line: &str, line_no: usize) -> Result<(), ParseError> {
        if self.directives_done {
            return Ok(());
        }
        let Ok(pairs) = DockerfileGrammar::parse(Rule::directive, line) else {
            self.directives_done = true;
            return Ok(());
        };
        let mut name = String::new();
        let mut value = String::new();
        for top in pairs {
            for p in top.into_inner() {
                match p.as_rule() {
                    Rule::directive_name => name = p.as_str().to_ascii_lowercase(),
                    Rule::directive_value => value = p.as_str().to_string(),
                    _ => {}
                }
            }
        }
        if !matches!(name.as_str(), "escape" | "syntax" | "check") {
            self.directives_done = true;
            return Ok(());
        }
        if self.seen_directives.contains(&name) {
            return Err(self.error_line(ParseErrorKind::DuplicateDirective(name), line_no));
        }
        self.seen_directives.push(name.clone());
        match name.as_str() {
            "escape" => {
                if value != "`" && value != "\\" {
                    return Err(self.error_line(ParseErrorKind::InvalidEscapeToken(value), line_no));
                }
                self.escape = value.chars().next().unwrap_or('\\');
            }
            "syntax" => self.syntax = Some(value),
            _ => self.check = Some(value),
        }
        Ok(())
    }

    /// BuildKit `trimContinuationCharacter`: `([^E])E[ \t]*$|^E[ \t]*$` → `$1`.
    /// Returns the kept prefix and whether the line ends the instruction.
    fn trim_continuation<'a>(&self, line: &'a str) -> (&'a str, bool) {
        let t = line.trim_end_matches([' ', '\t']);
        if let Some(before) = t.strip_suffix(self.escape) {
            if before.is_empty() || !before.ends_with(self.escape) {
                return (before, false);
            }
        }
        (line, true)
    }

    /// Parses the whole source: directives, then one instruction per logical line.
    pub(super) fn run(mut self) -> Result<Dockerfile, ParseError> {
        let mut instructions = Vec::new();
        let mut li = 0;
        let n = self.lines.len();
        while li < n {
            let raw = self.content(li);
            let stripped = raw.trim_start();
            let strip_off = self.lines[li].start + (raw.len() - stripped.len());
            self.possible_directive(stripped, li + 1)?;
            // BuildKit trimComments: a line whose first non-blank is '#' is a comment.
            let first = if stripped.starts_with('#') {
                ""
            } else {
                stripped
            };
            let start_line_idx = li;
            li += 1;

            let (piece, mut eol) = self.trim_continuation(first);
            if eol && piece.is_empty() {
                continue;
            }
            let mut logical = Logical {
                text: String::new(),
                segments: Vec::new(),
            };
            logical.push(piece, strip_off);
            let mut last_line_idx = start_line_idx;
            while !eol && li < n {
                let raw = self.content(li);
                let src = self.lines[li].start;
                last_line_idx = li;
                li += 1;
                let left = raw.trim_start();
                if left.starts_with('#') || left.is_empty() {
                    // Comment lines and empty lines inside a continuation are skipped.
                    continue;
                }
                let (piece, e) = self.trim_continuation(raw);
                eol = e;
                logical.push(piece, src);
            }
            if logical.segments.is_empty() {
                // Only escape tokens and blank lines: keep a position for the error.
                logical.segments.push((0, strip_off));
            }

            let mut end = self.lines[last_line_idx].content_end;
            let mut inst = self.parse_instruction(&logical, 0, end, 0)?;

            // Heredocs (RUN/COPY/ADD in shell form, also as ONBUILD triggers).
            let (target_kind, target_json) = match &inst.onbuild {
                Some(t) => (t.kind, t.args.is_json()),
                None => (inst.kind, inst.args.is_json()),
            };
            if target_kind.can_contain_heredoc() && !target_json && logical.text.contains("<<") {
                let markers = self.heredoc_markers(&logical.text, inst.span.offset)?;
                for (name, expand, chomp, fd) in markers {
                    let mut content = String::new();
                    let mut terminated = false;
                    while li < n {
                        let l = self.lines[li];
                        li += 1;
                        end = l.content_end;
                        let body = self.content(li - 1);
                        let candidate = if chomp {
                            body.trim_start_matches('\t')
                        } else {
                            body
                        };
                        if candidate == name {
                            terminated = true;
                            break;
                        }
                        content.push_str(&self.source[l.start..l.full_end]);
                    }
                    if !terminated {
                        return Err(self.error_at(
                            ParseErrorKind::UnterminatedHeredoc(name),
                            inst.span.offset,
                        ));
                    }
                    if chomp {
                        content = chomp_tabs(&content);
                    }
                    inst.heredocs.push(Heredoc {
                        name,
                        content,
                        expand,
                        chomp,
                        file_descriptor: fd,
                    });
                }
                inst.span = self.span(inst.span.offset, end);
                if let Some(t) = inst.onbuild.as_mut() {
                    t.heredocs = inst.heredocs.clone();
                    t.span = self.span(t.span.offset, end);
                }
            }
            instructions.push(inst);
        }
        if instructions.is_empty() {
            return Err(self.error_line(ParseErrorKind::NoInstructions, n.max(1)));
        }
        Ok(Dockerfile {
            directives: Directives {
                escape: self.escape,
                syntax: self.syntax,
                check: self.check,
            },
            instructions,
            source: self.source.to_string(),
        })
    }
}
