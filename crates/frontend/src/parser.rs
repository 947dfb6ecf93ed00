//! Dockerfile parser: a physical-line pre-pass (directives, comments, continuations, heredoc
//! bodies) around the pest grammar in `dockerfile.pest`, which gives the structure of each
//! logical line (keyword, flags, arguments, JSON arrays, ENV/LABEL/ARG words, heredoc markers).
//!
//! Semantics follow BuildKit's `frontend/dockerfile/parser`; the comments name the BuildKit
//! behaviour each step reproduces.

use pest::iterators::Pair;
use pest::Parser as _;

use crate::ast::{
    Args, Directives, Dockerfile, Flag, Heredoc, Instruction, InstructionKind, KeyValue, Span,
};
use crate::error::{ParseError, ParseErrorKind};
use crate::expand::Lexer;

mod grammar {
    //! The pest-generated parser (kept private: `Rule` is an implementation detail).
    #[derive(pest_derive::Parser)]
    #[grammar = "dockerfile.pest"]
    pub(super) struct DockerfileGrammar;
}
use grammar::{DockerfileGrammar, Rule};

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

/// One physical line of the source.
#[derive(Debug, Clone, Copy)]
struct PhysLine {
    /// Byte offset of the first character (after a BOM on line 1).
    start: usize,
    /// Byte offset past the content, trailing `\r`/`\n` excluded.
    content_end: usize,
    /// Byte offset past the line, newline included.
    full_end: usize,
}

/// A continuation-joined logical line with the mapping back to source offsets.
struct Logical {
    text: String,
    /// `(logical offset, source offset)` for every copied piece, in order.
    segments: Vec<(usize, usize)>,
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
    fn src(&self, pos: usize) -> usize {
        let idx = self.segments.partition_point(|&(l, _)| l <= pos);
        match idx.checked_sub(1).and_then(|i| self.segments.get(i)) {
            Some(&(l, s)) => s + (pos - l),
            None => self.segments.first().map(|&(_, s)| s).unwrap_or(0),
        }
    }

    /// The source byte range of the logical range `start..end`.
    fn src_range(&self, start: usize, end: usize) -> (usize, usize) {
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

    fn run(mut self) -> Result<Dockerfile, ParseError> {
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

    /// Parses the logical-line text starting at logical offset `from` (the whole line, or an
    /// ONBUILD trigger) into an instruction whose span ends at source offset `end`.
    fn parse_instruction(
        &self,
        logical: &Logical,
        from: usize,
        end: usize,
        depth: usize,
    ) -> Result<Instruction, ParseError> {
        let full = logical.text.get(from..).unwrap_or("");
        let trimmed_start = full.trim_start();
        let at = from + (full.len() - trimmed_start.len());
        let text = trimmed_start.trim_end();
        let start_src = logical.src(at);
        let err = |kind: ParseErrorKind| self.error_at(kind, start_src);
        if text.is_empty() {
            return Err(err(ParseErrorKind::Syntax(
                "instruction expected".to_string(),
            )));
        }

        // BuildKit splitCommand: keyword, then extractBuilderFlags, then the rest.
        let pairs = DockerfileGrammar::parse(Rule::instruction_line, text)
            .map_err(|e| err(ParseErrorKind::Syntax(e.variant.message().into_owned())))?;
        let mut command = "";
        let mut flag_words: Vec<Located> = Vec::new();
        let mut rest: Option<Located> = None;
        for top in pairs {
            for p in top.into_inner() {
                match p.as_rule() {
                    Rule::command => command = p.as_str(),
                    Rule::flags => {
                        for f in p.into_inner() {
                            flag_words.push(Located {
                                text: f.as_str(),
                                at: at + f.as_span().start(),
                            });
                        }
                    }
                    Rule::rest => {
                        rest = Some(Located {
                            text: p.as_str(),
                            at: at + p.as_span().start(),
                        })
                    }
                    _ => {}
                }
            }
        }

        let kind = match InstructionKind::from_keyword(command) {
            Some(k) => k,
            None => {
                return Err(err(ParseErrorKind::UnknownInstruction {
                    name: command.to_string(),
                    suggestion: suggest_instruction(command),
                }))
            }
        };

        // Flags: quotes/escapes removed; the word `--` ends the flags.
        let mut flags = Vec::new();
        for f in &flag_words {
            let word = unquote_flag(f.text);
            if word == "--" {
                let after = f.at + f.text.len();
                let tail = logical.text.get(after..from + full.len()).unwrap_or("");
                rest = Some(Located {
                    text: tail,
                    at: after,
                });
                break;
            }
            let body = word.get(2..).unwrap_or("");
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (body.to_string(), None),
            };
            let (s, e) = logical.src_range(f.at, f.at + f.text.len());
            flags.push(Flag {
                name,
                value,
                span: self.span(s, e),
            });
        }
        let (rest_text, rest_at) = match &rest {
            Some(r) => {
                let t = r.text.trim_start();
                (t.trim_end(), r.at + (r.text.len() - t.len()))
            }
            None => ("", at + text.len()),
        };

        let mut onbuild = None;
        let args = match kind {
            InstructionKind::Add | InstructionKind::Copy | InstructionKind::Volume => {
                // BuildKit parseMaybeJSONToList.
                match parse_json(rest_text, kind).map_err(&err)? {
                    Some(v) => Args::Exec(v),
                    None => split_whitespace_args(rest_text),
                }
            }
            InstructionKind::Cmd
            | InstructionKind::Entrypoint
            | InstructionKind::Run
            | InstructionKind::Shell => maybe_json(rest_text, kind).map_err(&err)?,
            InstructionKind::Arg => {
                // BuildKit parseNameOrNameVal.
                let words = parse_words(rest_text, self.escape).map_err(&err)?;
                if words.is_empty() {
                    Args::Empty
                } else {
                    Args::KeyValues(
                        words
                            .into_iter()
                            .map(|w| match w.split_once('=') {
                                Some((k, v)) => KeyValue {
                                    key: k.to_string(),
                                    value: Some(v.to_string()),
                                    legacy: false,
                                },
                                None => KeyValue {
                                    key: w,
                                    value: None,
                                    legacy: false,
                                },
                            })
                            .collect(),
                    )
                }
            }
            InstructionKind::Env | InstructionKind::Label => {
                self.parse_name_val(rest_text, kind).map_err(&err)?
            }
            InstructionKind::Expose | InstructionKind::From => split_whitespace_args(rest_text),
            InstructionKind::Healthcheck => parse_health(rest_text, kind).map_err(&err)?,
            InstructionKind::Maintainer
            | InstructionKind::Stopsignal
            | InstructionKind::User
            | InstructionKind::Workdir => {
                // BuildKit parseString.
                if rest_text.is_empty() {
                    Args::Empty
                } else {
                    Args::Single(rest_text.to_string())
                }
            }
            InstructionKind::Onbuild => {
                // BuildKit parseSubCommand.
                if rest_text.is_empty() {
                    Args::Empty
                } else {
                    if depth >= MAX_ONBUILD_DEPTH {
                        return Err(err(ParseErrorKind::InvalidOnbuildTrigger(
                            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".to_string(),
                        )));
                    }
                    let trigger = self.parse_instruction(logical, rest_at, end, depth + 1)?;
                    if matches!(
                        trigger.kind,
                        InstructionKind::From | InstructionKind::Maintainer
                    ) {
                        return Err(self.error_at(
                            ParseErrorKind::InvalidOnbuildTrigger(format!(
                                "{} isn't allowed as an ONBUILD trigger",
                                trigger.kind
                            )),
                            trigger.span.offset,
                        ));
                    }
                    onbuild = Some(Box::new(trigger));
                    Args::Shell(rest_text.to_string())
                }
            }
        };

        let original = if depth == 0 {
            logical.text.clone()
        } else {
            logical.text.get(from..).unwrap_or("").to_string()
        };
        Ok(Instruction {
            kind,
            name_original: command.to_string(),
            flags,
            args,
            heredocs: Vec::new(),
            span: self.span(start_src, end.max(start_src)),
            onbuild,
            original,
        })
    }

    /// BuildKit parseNameVal (ENV, LABEL): `key=value...` or the legacy `key value`.
    fn parse_name_val(&self, rest: &str, kind: InstructionKind) -> Result<Args, ParseErrorKind> {
        let words = parse_words(rest, self.escape)?;
        let Some(first) = words.first() else {
            return Ok(Args::Empty);
        };
        if !first.contains('=') {
            let mut parts = split_re_whitespace(rest, 2).into_iter();
            let key = parts.next().unwrap_or_default();
            let Some(value) = parts.next() else {
                return Err(ParseErrorKind::MissingValue {
                    instruction: kind.name().to_string(),
                });
            };
            return Ok(Args::KeyValues(vec![KeyValue {
                key: key.to_string(),
                value: Some(value.to_string()),
                legacy: true,
            }]));
        }
        let mut kvs = Vec::with_capacity(words.len());
        for w in words {
            match w.split_once('=') {
                Some((k, v)) => kvs.push(KeyValue {
                    key: k.to_string(),
                    value: Some(v.to_string()),
                    legacy: false,
                }),
                None => return Err(ParseErrorKind::MissingEquals { word: w }),
            }
        }
        Ok(Args::KeyValues(kvs))
    }

    /// BuildKit heredocsFromLine: the heredoc markers of a logical line, as
    /// `(name, expand, chomp, fd)`.
    fn heredoc_markers(
        &self,
        line: &str,
        at: usize,
    ) -> Result<Vec<(String, bool, bool, u32)>, ParseError> {
        let no_env = |_: &str| -> Option<String> { None };
        let lexer = Lexer::new('\\')
            .with_raw_quotes(true)
            .with_raw_escapes(true);
        let words = lexer.process_words(line, &no_env).unwrap_or_default();
        let mut out = Vec::new();
        for word in words {
            let Ok(pairs) = DockerfileGrammar::parse(Rule::heredoc_marker, &word) else {
                continue;
            };
            let (mut fd, mut chomp, mut rest) = (0u32, false, "");
            for top in pairs {
                for p in top.into_inner() {
                    match p.as_rule() {
                        Rule::heredoc_fd => fd = p.as_str().parse().unwrap_or(0),
                        Rule::heredoc_chomp => chomp = true,
                        Rule::heredoc_word => rest = p.as_str(),
                        _ => {}
                    }
                }
            }
            if rest.is_empty() {
                continue;
            }
            // Lex the delimiter with and without quotes: a difference means it was quoted.
            let lx = Lexer::new('\\').with_skip_unset_env(true);
            let invalid = |e: crate::error::ExpandError| {
                self.error_at(ParseErrorKind::InvalidHeredoc(format!("{rest}: {e}")), at)
            };
            let plain = lx.process_words(rest, &no_env).map_err(invalid)?;
            let [name] = plain.as_slice() else {
                continue;
            };
            let raw = lx
                .with_raw_quotes(true)
                .process_words(rest, &no_env)
                .map_err(invalid)?;
            let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
            let expand = match raw.first() {
                Some(r) => quotes(r) == quotes(name),
                None => true,
            };
            out.push((name.clone(), expand, chomp, fd));
        }
        Ok(out)
    }
}

/// BuildKit `ChompHeredocContent`: strips leading tabs from every line.
fn chomp_tabs(s: &str) -> String {
    s.split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

/// Removes the quotes and `\` escapes of a flag word (BuildKit extractBuilderFlags).
fn unquote_flag(raw: &str) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match quote {
            None if c == '\'' || c == '"' => quote = Some(c),
            Some(q) if c == q => quote = None,
            _ if c == '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// BuildKit `reWhitespace` (`[\t\v\f\r ]+`) split with a limit (`0` = no limit).
fn split_re_whitespace(s: &str, limit: usize) -> Vec<&str> {
    let is_ws = |c: char| matches!(c, '\t' | '\u{0B}' | '\u{0C}' | '\r' | ' ');
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        if limit != 0 && out.len() + 1 == limit {
            out.push(rest);
            return out;
        }
        match rest.find(is_ws) {
            Some(i) => {
                out.push(&rest[..i]);
                rest = rest[i..].trim_start_matches(is_ws);
            }
            None => {
                out.push(rest);
                return out;
            }
        }
    }
}

/// BuildKit parseStringsWhitespaceDelimited.
fn split_whitespace_args(rest: &str) -> Args {
    if rest.is_empty() {
        return Args::Empty;
    }
    Args::Words(
        split_re_whitespace(rest, 0)
            .into_iter()
            .map(str::to_string)
            .collect(),
    )
}

/// BuildKit parseMaybeJSON: empty → no args, JSON array of strings → exec form, otherwise the raw
/// text as shell form.
fn maybe_json(rest: &str, kind: InstructionKind) -> Result<Args, ParseErrorKind> {
    if rest.is_empty() {
        return Ok(Args::Empty);
    }
    Ok(match parse_json(rest, kind)? {
        Some(v) => Args::Exec(v),
        None => Args::Shell(rest.to_string()),
    })
}

/// BuildKit parseHealthConfig: a type word then a maybe-JSON command.
fn parse_health(rest: &str, kind: InstructionKind) -> Result<Args, ParseErrorKind> {
    if rest.is_empty() {
        return Ok(Args::Empty);
    }
    let pairs = DockerfileGrammar::parse(Rule::health_args, rest)
        .map_err(|e| ParseErrorKind::Syntax(e.variant.message().into_owned()))?;
    let (mut check_type, mut cmd) = ("", "");
    for top in pairs {
        for p in top.into_inner() {
            match p.as_rule() {
                Rule::health_type => check_type = p.as_str(),
                Rule::health_cmd => cmd = p.as_str(),
                _ => {}
            }
        }
    }
    Ok(Args::Healthcheck {
        check_type: check_type.to_string(),
        command: Box::new(maybe_json(cmd, kind)?),
    })
}

/// BuildKit parseJSON: `Ok(Some(strings))` for a JSON array of strings, `Ok(None)` when the text
/// is not a JSON array (fall back to another form), an error for a valid JSON array holding
/// anything other than strings.
fn parse_json(rest: &str, kind: InstructionKind) -> Result<Option<Vec<String>>, ParseErrorKind> {
    if !rest.starts_with('[') {
        return Ok(None);
    }
    let Ok(pairs) = DockerfileGrammar::parse(Rule::json_exec, rest) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for top in pairs {
        for p in top.into_inner() {
            match p.as_rule() {
                Rule::json_string => out.push(decode_json_string(p)),
                Rule::json_other => {
                    return Err(ParseErrorKind::NotStringArray {
                        instruction: kind.name().to_string(),
                    })
                }
                _ => {}
            }
        }
    }
    Ok(Some(out))
}

/// Decodes a `json_string` pair (escapes, `\u` surrogate pairs; lone surrogates become U+FFFD
/// as in Go's encoding/json).
fn decode_json_string(p: Pair<'_, Rule>) -> String {
    let raw = p.into_inner().next().map(|c| c.as_str()).unwrap_or("");
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    fn hex4(it: &mut std::str::Chars<'_>) -> Option<u32> {
        let s: String = it.by_ref().take(4).collect();
        u32::from_str_radix(&s, 16).ok()
    }
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('b') => out.push('\u{08}'),
            Some('f') => out.push('\u{0C}'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let Some(hi) = hex4(&mut chars) else { break };
                if (0xD800..0xDC00).contains(&hi) {
                    // A high surrogate: combine with a following low surrogate if there is one.
                    let mut look = chars.clone();
                    if look.next() == Some('\\') && look.next() == Some('u') {
                        if let Some(lo) = hex4(&mut look) {
                            if (0xDC00..0xE000).contains(&lo) {
                                let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                                out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                                chars = look;
                                continue;
                            }
                        }
                    }
                    out.push('\u{FFFD}');
                } else {
                    out.push(char::from_u32(hi).unwrap_or('\u{FFFD}'));
                }
            }
            Some(other) => out.push(other),
            None => break,
        }
    }
    out
}

/// BuildKit parseWords: splits on blanks, keeping quotes and escape tokens in the words; an
/// escape token at the very end is dropped.
fn parse_words(rest: &str, escape: char) -> Result<Vec<String>, ParseErrorKind> {
    let (rule, trail) = if escape == '`' {
        (Rule::words_bt, Rule::bt_trail)
    } else {
        (Rule::words_bs, Rule::bs_trail)
    };
    let pairs = DockerfileGrammar::parse(rule, rest)
        .map_err(|e| ParseErrorKind::Syntax(e.variant.message().into_owned()))?;
    let mut out = Vec::new();
    for top in pairs {
        for w in top.into_inner() {
            if !matches!(w.as_rule(), Rule::word_bs | Rule::word_bt) {
                continue;
            }
            let text = w.as_str();
            let has_trail = w
                .clone()
                .into_inner()
                .flatten()
                .any(|p| p.as_rule() == trail);
            let word = if has_trail {
                text.strip_suffix(escape).unwrap_or(text)
            } else {
                text
            };
            if !word.is_empty() {
                out.push(word.to_string());
            }
        }
    }
    Ok(out)
}

/// The closest instruction keyword to an unknown `word`, if close enough (optimal string
/// alignment distance, at most a third of the word's length rounded up, between 1 and 3). The
/// suggestion is lower-case when the word has no upper-case letter, upper-case otherwise.
pub(crate) fn suggest_instruction(word: &str) -> Option<String> {
    let lower = word.to_lowercase();
    let len = lower.chars().count();
    let threshold = len.div_ceil(3).clamp(1, 3);
    let mut best: Option<(usize, &str)> = None;
    for k in InstructionKind::ALL {
        let d = osa_distance(&lower, &k.name().to_ascii_lowercase());
        if d <= threshold && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, k.name()));
        }
    }
    best.map(|(_, name)| {
        if word.chars().any(char::is_uppercase) {
            name.to_string()
        } else {
            name.to_ascii_lowercase()
        }
    })
}

/// Optimal-string-alignment edit distance (Levenshtein plus adjacent transpositions).
fn osa_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len() > 64 {
        return usize::MAX; // far too long to be a typo of a keyword
    }
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[n][m]
}

// ---------------------------------------------------------------------------------------------
// BuildKit `result` dump format.
// ---------------------------------------------------------------------------------------------

/// Formats an instruction as one line of BuildKit's parser test `result` files:
/// `(name ["--flag" ...] "arg" ...)` with Go-style quoted strings; ONBUILD nests its trigger;
/// ENV/LABEL give key, value, separator (`"="` or `""` for the legacy form) triples.
pub fn dump(inst: &Instruction) -> String {
    format!("({})", dump_inner(inst))
}

fn dump_inner(inst: &Instruction) -> String {
    let mut s = inst.name_original.to_lowercase();
    if !inst.flags.is_empty() {
        let words: Vec<String> = inst.flags.iter().map(|f| go_quote(&f.to_word())).collect();
        s.push_str(&format!(" [{}]", words.join(" ")));
    }
    if let Some(t) = &inst.onbuild {
        s.push_str(&format!(" ({})", dump_inner(t)));
        return s;
    }
    if inst.kind != InstructionKind::Onbuild {
        dump_args(&mut s, inst.kind, &inst.args);
    }
    s.trim().to_string()
}

fn dump_args(s: &mut String, kind: InstructionKind, args: &Args) {
    let mut push = |v: &str| {
        s.push(' ');
        s.push_str(&go_quote(v));
    };
    match args {
        Args::Empty => {}
        Args::Exec(v) | Args::Words(v) => v.iter().for_each(|w| push(w)),
        Args::Shell(t) | Args::Single(t) => push(t),
        Args::KeyValues(kvs) => {
            for kv in kvs {
                if kind == InstructionKind::Arg {
                    match &kv.value {
                        Some(v) => push(&format!("{}={}", kv.key, v)),
                        None => push(&kv.key),
                    }
                } else {
                    push(&kv.key);
                    push(kv.value.as_deref().unwrap_or(""));
                    push(if kv.legacy { "" } else { "=" });
                }
            }
        }
        Args::Healthcheck {
            check_type,
            command,
        } => {
            push(check_type);
            dump_args(s, kind, command);
        }
    }
}

/// Go's `%q` / `strconv.Quote` (printability approximated with Rust's character classes).
pub(crate) fn go_quote(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0B}' => out.push_str("\\v"),
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    !matches!(u,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E
        | 0x2060..=0x206F | 0xE000..=0xF8FF | 0xFEFF | 0xFFF9..=0xFFFB
        | 0xFFFE | 0xFFFF | 0xF0000..=0x10FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(src: &str) -> Dockerfile {
        match parse(src) {
            Ok(d) => d,
            Err(e) => panic!("{}", e.render("Dockerfile")),
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest_instruction("RUNN").as_deref(), Some("RUN"));
        assert_eq!(suggest_instruction("FORM").as_deref(), Some("FROM"));
        assert_eq!(suggest_instruction("cpy").as_deref(), Some("copy"));
        assert_eq!(suggest_instruction("WROKDIR").as_deref(), Some("WORKDIR"));
        assert_eq!(suggest_instruction("FOOBAR"), None);
        assert_eq!(suggest_instruction("XYZ"), None);
    }

    #[test]
    fn go_quoting() {
        assert_eq!(go_quote("a\"b\\c\t\u{0}♥"), "\"a\\\"b\\\\c\\t\\x00♥\"");
    }

    #[test]
    fn error_render_line_col_caret() {
        let e = parse("FROM alpine\n\n  RUNN echo hi\n").unwrap_err();
        assert_eq!((e.line, e.col), (3, 3));
        assert_eq!(e.line_text, "  RUNN echo hi");
        assert_eq!(
            e.kind,
            ParseErrorKind::UnknownInstruction {
                name: "RUNN".into(),
                suggestion: Some("RUN".into())
            }
        );
        assert_eq!(
            e.render("Dockerfile"),
            "Dockerfile:3:3: unknown instruction: RUNN (did you mean RUN?)\n  RUNN echo hi\n  ^\n"
        );
        assert_eq!(
            e.to_string(),
            "3:3: unknown instruction: RUNN (did you mean RUN?)"
        );
        // Tabs before the column are kept so the caret lines up.
        let e = parse("FROM a\n\tcopyy a b\n").unwrap_err();
        assert_eq!((e.line, e.col), (2, 2));
        assert!(
            e.render("x").ends_with("\tcopyy a b\n\t^\n"),
            "{}",
            e.render("x")
        );
        assert!(e.message.ends_with("(did you mean copy?)"), "{}", e.message);
    }

    #[test]
    fn did_you_mean() {
        let e = parse("FORM alpine\n").unwrap_err();
        assert_eq!(e.message, "unknown instruction: FORM (did you mean FROM?)");
        let e = parse("FROM a\nFOOBAR x\n").unwrap_err();
        assert_eq!(e.message, "unknown instruction: FOOBAR");
        assert_eq!((e.line, e.col), (2, 1));
        let e = parse("FROM a\nONBUILD EXPOS 80\n").unwrap_err();
        assert_eq!(
            e.message,
            "unknown instruction: EXPOS (did you mean EXPOSE?)"
        );
        assert_eq!((e.line, e.col), (2, 9));
    }

    #[test]
    fn other_errors_have_positions() {
        let e = parse("FROM a\nENV x\n").unwrap_err();
        assert_eq!(
            (e.line, e.col, e.message.as_str()),
            (2, 1, "ENV must have two arguments")
        );
        let e = parse("# escape=x\nFROM a\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(matches!(e.kind, ParseErrorKind::InvalidEscapeToken(_)));
        let e = parse("# escape=`\n# escape=`\nFROM a\n").unwrap_err();
        assert_eq!(
            (e.line, e.kind),
            (2, ParseErrorKind::DuplicateDirective("escape".into()))
        );
        let e = parse("# only\n\n").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::NoInstructions);
        let e = parse("FROM a\nONBUILD ONBUILD RUN x\n").unwrap_err();
        assert!(matches!(e.kind, ParseErrorKind::InvalidOnbuildTrigger(_)));
        let e = parse("FROM a\nONBUILD FROM x\n").unwrap_err();
        assert!(matches!(e.kind, ParseErrorKind::InvalidOnbuildTrigger(_)));
        let e = parse("FROM a\nENV a=b c\n").unwrap_err();
        assert!(matches!(e.kind, ParseErrorKind::MissingEquals { .. }));
    }

    #[test]
    fn continuation_with_comments_and_blank_lines() {
        let src = "FROM a\nRUN echo a \\\n  # a comment\n\n   b \\\n#another\n c\nRUN x\n";
        let d = p(src);
        let run = &d.instructions[1];
        assert_eq!(run.args, Args::Shell("echo a    b  c".into()));
        assert_eq!(run.original, "RUN echo a    b  c");
        assert_eq!((run.span.start_line, run.span.end_line), (2, 7));
        assert_eq!((run.span.start_col, run.span.end_col), (1, 3));
        assert_eq!(
            &src[run.span.offset..run.span.offset + run.span.len],
            "RUN echo a \\\n  # a comment\n\n   b \\\n#another\n c"
        );
        assert_eq!(d.instructions[2].span.start_line, 8);
    }

    #[test]
    fn trailing_escape_at_eof_and_crlf() {
        let d = p("FROM a\r\nRUN x \\");
        assert_eq!(d.instructions[1].args, Args::Shell("x".into()));
        let d = p("FROM a\r\nRUN a \\\r\n b\r\n");
        assert_eq!(d.instructions[0].args, Args::Words(vec!["a".into()]));
        assert_eq!(d.instructions[1].args, Args::Shell("a  b".into()));
        // An escaped escape token at the end does not continue the line.
        let d = p("FROM a\nENV C x\\\\\nENV D y\n");
        assert_eq!(d.instructions.len(), 3);
    }

    #[test]
    fn escape_directive_backtick() {
        let d = p("# escape=`\nFROM a\nRUN dir c:\\ `\n  /w\n");
        assert_eq!(d.directives.escape, '`');
        assert_eq!(d.instructions[1].args, Args::Shell("dir c:\\   /w".into()));
        let d = p("# syntax=docker/dockerfile:1\n# check=skip=all\nFROM a\n");
        assert_eq!(d.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(d.directives.check.as_deref(), Some("skip=all"));
        // A directive after an instruction is only a comment.
        let d = p("FROM a\n# escape=`\nRUN a \\\n b\n");
        assert_eq!(d.directives.escape, '\\');
        assert_eq!(d.instructions[1].args, Args::Shell("a  b".into()));
        // Case-insensitive keywords.
        let d = p("from a\nRuN b\n");
        assert_eq!(d.instructions[1].kind, InstructionKind::Run);
        assert_eq!(d.instructions[1].name_original, "RuN");
    }

    #[test]
    fn flags_and_spans() {
        let src = "FROM a\nCOPY --from=build --chown=\"a b\" -- --x /y\n";
        let d = p(src);
        let c = &d.instructions[1];
        assert_eq!(c.flags.len(), 2);
        assert_eq!(
            (c.flags[0].name.as_str(), c.flags[0].value.as_deref()),
            ("from", Some("build"))
        );
        assert_eq!(c.flags[1].value.as_deref(), Some("a b"));
        let f = c.flags[1].span;
        assert_eq!(&src[f.offset..f.offset + f.len], "--chown=\"a b\"");
        assert_eq!((f.start_line, f.start_col, f.end_col), (2, 19, 32));
        assert_eq!(c.args, Args::Words(vec!["--x".into(), "/y".into()]));
        assert_eq!(
            dump(c),
            r#"(copy ["--from=build" "--chown=a b"] "--x" "/y")"#
        );
        // A flag split over a continuation maps back to both physical lines.
        let src = "FROM a\nRUN --mount=type=cache,\\\ntarget=/x echo\n";
        let d = p(src);
        let f = &d.instructions[1].flags[0];
        assert_eq!(f.value.as_deref(), Some("type=cache,target=/x"));
        assert_eq!(
            (
                f.span.start_line,
                f.span.start_col,
                f.span.end_line,
                f.span.end_col
            ),
            (2, 5, 3, 10)
        );
    }

    #[test]
    fn heredoc_run_basic_and_quoted() {
        let src = "FROM a\nRUN <<EOF\necho $HOME\nEOF\nRUN <<'EOF' bash\necho $HOME\nEOF\nRUN x\n";
        let d = p(src);
        let r = &d.instructions[1];
        assert_eq!(r.args, Args::Shell("<<EOF".into()));
        assert_eq!(r.heredocs.len(), 1);
        let h = &r.heredocs[0];
        assert_eq!(
            (h.name.as_str(), h.content.as_str(), h.expand, h.chomp),
            ("EOF", "echo $HOME\n", true, false)
        );
        assert_eq!((r.span.start_line, r.span.end_line), (2, 4));
        let q = &d.instructions[2].heredocs[0];
        assert_eq!((q.name.as_str(), q.expand), ("EOF", false));
        let d2 = p("FROM a\nRUN <<\"EOF\"\nx\nEOF\n");
        assert!(!d2.instructions[1].heredocs[0].expand);
        assert_eq!(d.instructions[3].args, Args::Shell("x".into()));
    }

    #[test]
    fn heredoc_chomp_multiple_and_copy() {
        let src = "FROM a\nRUN <<-A 3<<B cat /dev/fd/3\n\t\techo a\n\tA\nb1\n\tb2\nB\nCOPY <<f1 <<\"f2\" /dst/\none\nf1\ntwo ${X}\nf2\n";
        let d = p(src);
        let r = &d.instructions[1];
        assert_eq!(r.heredocs.len(), 2);
        let h0 = &r.heredocs[0];
        assert_eq!(
            (h0.name.as_str(), h0.content.as_str(), h0.chomp),
            ("A", "echo a\n", true)
        );
        let h1 = &r.heredocs[1];
        assert_eq!((h1.name.as_str(), h1.content.as_str()), ("B", "b1\n\tb2\n"));
        assert_eq!(h1.file_descriptor, 3);
        let c = &d.instructions[2];
        assert_eq!(
            c.args,
            Args::Words(vec!["<<f1".into(), "<<\"f2\"".into(), "/dst/".into()])
        );
        let names: Vec<(&str, bool)> = c
            .heredocs
            .iter()
            .map(|h| (h.name.as_str(), h.expand))
            .collect();
        assert_eq!(names, vec![("f1", true), ("f2", false)]);
        assert_eq!(c.heredocs[1].content, "two ${X}\n");
        assert_eq!(c.span.end_line, 12);
    }

    #[test]
    fn heredoc_not_in_json_or_other_instructions_and_unterminated() {
        let d = p("FROM a\nRUN [\"echo\", \"<<EOF\"]\nENV A=<<EOF\n");
        assert!(d.instructions[1].heredocs.is_empty());
        assert!(d.instructions[2].heredocs.is_empty());
        let e = parse("FROM a\nRUN <<EOF\necho\n").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::UnterminatedHeredoc("EOF".into()));
        assert_eq!(e.line, 2);
    }

    #[test]
    fn onbuild_heredoc_and_nesting() {
        let d = p("FROM a\nONBUILD RUN <<EOF\necho hi\nEOF\n");
        let o = &d.instructions[1];
        let t = o.onbuild.as_ref().expect("trigger");
        assert_eq!(t.kind, InstructionKind::Run);
        assert_eq!(o.heredocs.len(), 1);
        assert_eq!(t.heredocs, o.heredocs);
        assert_eq!(t.original, "RUN <<EOF");
        assert_eq!(o.args, Args::Shell("RUN <<EOF".into()));
        assert_eq!((t.span.start_col, t.span.end_line), (9, 4));
        assert_eq!(dump(o), r#"(onbuild (run "<<EOF"))"#);
    }

    #[test]
    fn args_shapes() {
        let d = p("FROM a AS b\nHEALTHCHECK NONE\nUSER a b\nARG x y=1\nLABEL a=b \"c d\"=e\nCMD [\"a\", 1\nSHELL [\"sh\",\"-c\"]\n");
        let a = |i: usize| &d.instructions[i].args;
        assert_eq!(
            a(0),
            &Args::Words(vec!["a".into(), "AS".into(), "b".into()])
        );
        assert_eq!(
            a(1),
            &Args::Healthcheck {
                check_type: "NONE".into(),
                command: Box::new(Args::Empty)
            }
        );
        assert_eq!(a(2), &Args::Single("a b".into()));
        assert_eq!(
            a(3),
            &Args::KeyValues(vec![
                KeyValue {
                    key: "x".into(),
                    value: None,
                    legacy: false
                },
                KeyValue {
                    key: "y".into(),
                    value: Some("1".into()),
                    legacy: false
                },
            ])
        );
        assert_eq!(
            dump(&d.instructions[4]),
            r#"(label "a" "b" "=" "\"c d\"" "e" "=")"#
        );
        assert_eq!(a(5), &Args::Shell("[\"a\", 1".into()));
        assert!(a(6).is_json());
    }

    #[test]
    fn json_unicode_escapes() {
        let d = p(r#"CMD ["\ud83d\ude00", "\ud800x", "\u00e9"]"#);
        assert_eq!(
            d.instructions[0].args,
            Args::Exec(vec![
                "\u{1F600}".into(),
                "\u{FFFD}x".into(),
                "\u{e9}".into()
            ])
        );
        assert!(parse("CMD [1]").is_err());
        assert!(parse("CMD [{\"a\": [1, 2.5e3, null]}]").is_err());
    }

    /// Hostile inputs must give errors or trees, never panics or stack overflows.
    #[test]
    fn robustness() {
        let mut inputs: Vec<String> = [
            "\\",
            "\\\n\\\n",
            "`",
            "#",
            "\u{feff}FROM a",
            "FROM a\nRUN <<",
            "FROM a\nRUN <<-",
            "FROM a\nRUN <<\"\n",
            "FROM a\nCOPY --\n",
            "FROM a\nCOPY --\"\n",
            "FROM a\nCOPY --a\\",
            "HEALTHCHECK \u{a0}x",
            "ENV \u{a0}",
            "ARG \"",
            "LABEL '",
            "FROM a\nRUN \u{e9}<<\u{e9}\n\u{e9}\n",
            "FROM a\r\r\n",
            "ONBUILD",
            "ONBUILD ONBUILD",
            "FROM a\nCMD [\"\\u12\"]",
            "FROM a\nRUN <<$X\nx\n$X\n",
            "FROM a\nRUN <<'a b'\n",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        inputs.push(format!("CMD {}", "[".repeat(100_000)));
        inputs.push(format!("CMD {}{}", "[".repeat(5_000), "]".repeat(5_000)));
        inputs.push(format!("FROM a\nRUN {}", "<<A ".repeat(1000)));
        inputs.push("ONBUILD ".repeat(10_000));
        inputs.push(format!("FROM {}", "\\\n".repeat(10_000)));
        for s in &inputs {
            let _ = parse(s);
        }
        // Every prefix of a rich Dockerfile.
        let rich = "# escape=\\\nFROM a AS b\nRUN --mount=type=cache,target=/x <<-EOF \\\n  && x\n\techo\n\tEOF\nCOPY [\"a\", \"b\"]\nENV a=\"b c\" d='e'\nONBUILD COPY <<X /x\nbody\nX\n";
        for (i, _) in rich.char_indices() {
            let _ = parse(&rich[..i]);
        }
    }

    #[test]
    fn whitespace_split() {
        assert_eq!(split_re_whitespace("a  b\tc", 0), vec!["a", "b", "c"]);
        assert_eq!(split_re_whitespace("a  b\tc", 2), vec!["a", "b\tc"]);
        assert_eq!(split_re_whitespace("a", 2), vec!["a"]);
    }
}
