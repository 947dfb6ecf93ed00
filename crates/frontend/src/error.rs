//! Error types of the frontend: [`ParseError`] for Dockerfile syntax errors and [`ExpandError`]
//! for shell-word expansion errors.

use thiserror::Error;

/// What went wrong while parsing a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseErrorKind {
    /// The file holds no instruction (empty, or only comments and directives).
    #[error("file with no instructions")]
    NoInstructions,
    /// An instruction keyword that is not one of the 18 Dockerfile instructions.
    #[error("unknown instruction: {name}{}", suggestion_text(.suggestion))]
    UnknownInstruction {
        /// The keyword as written.
        name: String,
        /// The closest known keyword, if one is close enough.
        suggestion: Option<String>,
    },
    /// `# escape=` with something other than `\` or backtick.
    #[error("invalid escape token '{0}' does not match ` or \\")]
    InvalidEscapeToken(String),
    /// The same parser directive given twice.
    #[error("only one {0} parser directive can be used")]
    DuplicateDirective(String),
    /// A JSON array holding something other than strings (e.g. nested arrays).
    #[error(
        "{instruction}: when using JSON array syntax, arrays must be comprised of strings only"
    )]
    NotStringArray {
        /// The instruction keyword, upper-case.
        instruction: String,
    },
    /// Legacy `ENV key value` / `LABEL key value` with only a key.
    #[error("{instruction} must have two arguments")]
    MissingValue {
        /// The instruction keyword, upper-case.
        instruction: String,
    },
    /// An `ENV`/`LABEL` word without `=` after a `key=value` word. The word is quoted as Go's
    /// `%q` does (as BuildKit prints it); Rust's `{:?}` would blow a control character up to
    /// `\u{7f}` (found by tests/fuzz_parser.rs).
    #[error(
        "Syntax error - can't find = in {}. Must be of the form: name=value",
        crate::quote::go_quote(.word)
    )]
    MissingEquals {
        /// The offending word.
        word: String,
    },
    /// A heredoc whose terminator line never came.
    #[error("unterminated heredoc {0}")]
    UnterminatedHeredoc(String),
    /// A heredoc delimiter word that the shell lexer rejects.
    #[error("invalid heredoc delimiter: {0}")]
    InvalidHeredoc(String),
    /// An ONBUILD trigger that BuildKit refuses (`ONBUILD ONBUILD`, `ONBUILD FROM`,
    /// `ONBUILD MAINTAINER`).
    #[error("{0}")]
    InvalidOnbuildTrigger(String),
    /// The grammar rejected a line (should not happen for text; kept for robustness).
    #[error("syntax error: {0}")]
    Syntax(String),
}

fn suggestion_text(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" (did you mean {s}?)"),
        None => String::new(),
    }
}

/// A Dockerfile syntax error with its position.
///
/// `Display` gives `LINE:COL: message`; [`ParseError::render`] gives the full user-facing form
/// with the source line and a caret.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{line}:{col}: {message}")]
pub struct ParseError {
    /// The message (the `Display` of `kind`).
    pub message: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters).
    pub col: usize,
    /// The text of the source line (without its newline; empty past the end of the file).
    pub line_text: String,
    /// The typed cause.
    pub kind: ParseErrorKind,
}

impl ParseError {
    /// Builds an error for `kind` at `line`:`col` of `source` (1-based).
    pub fn new(kind: ParseErrorKind, source: &str, line: usize, col: usize) -> ParseError {
        let line_text = source
            .split('\n')
            .nth(line.saturating_sub(1))
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .map(|l| l.strip_prefix('\u{feff}').unwrap_or(l))
            .unwrap_or("")
            .to_string();
        ParseError {
            message: kind.to_string(),
            line,
            col,
            line_text,
            kind,
        }
    }

    /// BuildKit's message for it: `dockerfile parse error on line N: MESSAGE` (a file with no
    /// instruction has no line: just the message).
    pub fn buildkit_message(&self) -> String {
        match self.kind {
            ParseErrorKind::NoInstructions => self.message.clone(),
            _ => format!(
                "dockerfile parse error on line {}: {}",
                self.line, self.message
            ),
        }
    }

    /// True when the error points at a line of the file (not at the file as a whole).
    pub fn has_line(&self) -> bool {
        !matches!(self.kind, ParseErrorKind::NoInstructions)
    }

    /// A compiler-style rendering (the golden and fuzz tests' form; the CLI prints BuildKit's):
    ///
    /// ```text
    /// Dockerfile:3:1: unknown instruction: RUNN (did you mean RUN?)
    /// RUNN echo hi
    /// ^
    /// ```
    ///
    /// The caret is placed under column `col`; tabs before it are kept so it lines up.
    pub fn render(&self, file_name: &str) -> String {
        let mut pad = String::new();
        for ch in self.line_text.chars().take(self.col.saturating_sub(1)) {
            pad.push(if ch == '\t' { '\t' } else { ' ' });
        }
        format!(
            "{file_name}:{}:{}: {}\n{}\n{pad}^\n",
            self.line, self.col, self.message, self.line_text
        )
    }
}

/// A shell-word expansion error (BuildKit's shell lexer errors).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExpandError {
    /// `${` at the end of the word, or a `${...` without its `}`.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${}`, `${:...}`, `${{...}` and similar.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// `${V/pattern` without the second `/`.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// A modifier that is not supported (`${V:=x}`, `${V:#x}`, ...).
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// `${V?msg}` / `${V:?msg}` on an unset (or empty) variable.
    #[error("{name}: {message}")]
    Required {
        /// The variable name.
        name: String,
        /// The message given after `?`, or the default one.
        message: String,
    },
    /// An unterminated quote or construct.
    #[error("unexpected end of statement while looking for matching {0}")]
    Unterminated(String),
}
