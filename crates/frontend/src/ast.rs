//! The spanned AST of a Dockerfile.

use serde::Serialize;

/// A region of the Dockerfile: 1-based lines and columns, byte offset and length.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Span {
    /// First line.
    pub start_line: usize,
    /// Column on the first line.
    pub start_col: usize,
    /// Last line.
    pub end_line: usize,
    /// Column on the last line.
    pub end_col: usize,
    /// Byte offset of the start.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
}

/// Parser directives from the top of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directives {
    /// The escape character (`\` or a backtick).
    pub escape: char,
    /// `# syntax=`.
    pub syntax: Option<String>,
    /// `# check=`.
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives { escape: '\\', syntax: None, check: None }
    }
}

/// The 18 instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum InstructionKind {
    /// FROM.
    From,
    /// RUN.
    Run,
    /// CMD.
    Cmd,
    /// LABEL.
    Label,
    /// MAINTAINER.
    Maintainer,
    /// EXPOSE.
    Expose,
    /// ENV.
    Env,
    /// ADD.
    Add,
    /// COPY.
    Copy,
    /// ENTRYPOINT.
    Entrypoint,
    /// VOLUME.
    Volume,
    /// USER.
    User,
    /// WORKDIR.
    Workdir,
    /// ARG.
    Arg,
    /// ONBUILD.
    Onbuild,
    /// STOPSIGNAL.
    Stopsignal,
    /// HEALTHCHECK.
    Healthcheck,
    /// SHELL.
    Shell,
}

impl InstructionKind {
    /// All instructions with their lowercase names.
    pub const ALL: [(&'static str, InstructionKind); 18] = [
        ("from", InstructionKind::From),
        ("run", InstructionKind::Run),
        ("cmd", InstructionKind::Cmd),
        ("label", InstructionKind::Label),
        ("maintainer", InstructionKind::Maintainer),
        ("expose", InstructionKind::Expose),
        ("env", InstructionKind::Env),
        ("add", InstructionKind::Add),
        ("copy", InstructionKind::Copy),
        ("entrypoint", InstructionKind::Entrypoint),
        ("volume", InstructionKind::Volume),
        ("user", InstructionKind::User),
        ("workdir", InstructionKind::Workdir),
        ("arg", InstructionKind::Arg),
        ("onbuild", InstructionKind::Onbuild),
        ("stopsignal", InstructionKind::Stopsignal),
        ("healthcheck", InstructionKind::Healthcheck),
        ("shell", InstructionKind::Shell),
    ];

    /// Looks up a keyword, case-insensitively.
    pub fn from_keyword(word: &str) -> Option<InstructionKind> {
        let lower = word.to_ascii_lowercase();
        Self::ALL.iter().find(|(name, _)| *name == lower).map(|(_, k)| *k)
    }

    /// The lowercase keyword.
    pub fn keyword(&self) -> &'static str {
        Self::ALL.iter().find(|(_, k)| k == self).map(|(n, _)| *n).unwrap_or("")
    }

    /// True for the instructions whose arguments BuildKit expands with ARG/ENV values.
    pub fn expands(&self) -> bool {
        matches!(
            self,
            InstructionKind::Add
                | InstructionKind::Copy
                | InstructionKind::Env
                | InstructionKind::Expose
                | InstructionKind::From
                | InstructionKind::Label
                | InstructionKind::Stopsignal
                | InstructionKind::User
                | InstructionKind::Volume
                | InstructionKind::Workdir
                | InstructionKind::Arg
        )
    }
}

/// A `--name=value` flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flag {
    /// Name without dashes.
    pub name: String,
    /// Value (None for a bare `--name`).
    pub value: Option<String>,
    /// Where it is.
    pub span: Span,
}

/// One `key=value` (or legacy `key value`) of ENV, LABEL or ARG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The raw value, quotes kept (None for `ARG name`).
    pub value: Option<String>,
    /// True for the legacy `ENV key value` form.
    pub legacy: bool,
}

/// A heredoc body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter word.
    pub name: String,
    /// The body (each line with its newline).
    pub content: String,
    /// False when the delimiter was quoted (no expansion).
    pub expand: bool,
    /// `<<-`: leading tabs are stripped.
    pub chomp: bool,
}

/// Arguments of an instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Args {
    /// JSON exec form.
    Exec(Vec<String>),
    /// The raw rest of the line (shell form), not expanded.
    Shell(String),
    /// ENV, LABEL, ARG.
    KeyValues(Vec<KeyValue>),
    /// Whitespace-separated words (quotes kept).
    Words(Vec<String>),
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instruction {
    /// Which instruction.
    pub kind: InstructionKind,
    /// The keyword as written.
    pub name_original: String,
    /// Flags before the arguments.
    pub flags: Vec<Flag>,
    /// The arguments.
    pub args: Args,
    /// Heredoc bodies.
    pub heredocs: Vec<Heredoc>,
    /// All physical lines of the instruction.
    pub span: Span,
    /// The instruction an ONBUILD wraps.
    pub onbuild: Option<Box<Instruction>>,
    /// The logical line as written, continuations joined.
    pub original: String,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dockerfile {
    /// Directives.
    pub directives: Directives,
    /// Instructions in order.
    pub instructions: Vec<Instruction>,
    /// The source text.
    pub source: String,
}
