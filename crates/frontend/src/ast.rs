//! The spanned Dockerfile syntax tree produced by [`crate::parse`].
//!
//! The tree mirrors what BuildKit's `frontend/dockerfile/parser` produces: arguments are kept raw
//! (quotes, escape tokens and `$VAR` references are *not* processed here — see [`crate::expand`]
//! for that), so that the converter can apply BuildKit's per-instruction semantics later.

use serde::Serialize;

/// A position range in the Dockerfile source.
///
/// Lines and columns are 1-based; columns count Unicode scalar values (characters), not bytes.
/// The end position is exclusive (one past the last character). `offset` and `len` are byte
/// offsets into [`Dockerfile::source`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Span {
    /// 1-based line of the first character.
    pub start_line: usize,
    /// 1-based column of the first character.
    pub start_col: usize,
    /// 1-based line of the last character.
    pub end_line: usize,
    /// 1-based column one past the last character (exclusive).
    pub end_col: usize,
    /// Byte offset of the first character in the source.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dockerfile {
    /// The parser directives found at the top of the file.
    pub directives: Directives,
    /// The instructions, in source order.
    pub instructions: Vec<Instruction>,
    /// The complete source text the spans refer to.
    pub source: String,
}

/// Parser directives (`# syntax=`, `# escape=`, `# check=`) from the top of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directives {
    /// The escape token: `\` (default) or `` ` ``. It escapes characters and continues lines.
    pub escape: char,
    /// The `# syntax=` value, if present.
    pub syntax: Option<String>,
    /// The `# check=` value, if present.
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            escape: '\\',
            syntax: None,
            check: None,
        }
    }
}

/// The 18 Dockerfile instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum InstructionKind {
    /// `FROM image [AS name]`
    From,
    /// `RUN command`
    Run,
    /// `CMD command`
    Cmd,
    /// `LABEL key=value ...`
    Label,
    /// `MAINTAINER name` (deprecated)
    Maintainer,
    /// `EXPOSE port[/proto] ...`
    Expose,
    /// `ENV key=value ...`
    Env,
    /// `ADD src... dest`
    Add,
    /// `COPY src... dest`
    Copy,
    /// `ENTRYPOINT command`
    Entrypoint,
    /// `VOLUME path ...`
    Volume,
    /// `USER user[:group]`
    User,
    /// `WORKDIR path`
    Workdir,
    /// `ARG name[=default] ...`
    Arg,
    /// `ONBUILD instruction`
    Onbuild,
    /// `STOPSIGNAL signal`
    Stopsignal,
    /// `HEALTHCHECK [flags] CMD command` or `HEALTHCHECK NONE`
    Healthcheck,
    /// `SHELL ["exe", "arg"...]`
    Shell,
}

/// Instructions whose arguments BuildKit expands with the stage environment (ARG and ENV values).
///
/// `FROM` is expanded too, but only with the global (before the first `FROM`) ARGs. RUN, CMD,
/// ENTRYPOINT, SHELL, HEALTHCHECK, MAINTAINER and ONBUILD are never expanded by the builder
/// (shell-form commands are expanded by the shell at run time). In current BuildKit some *flags*
/// of non-expanding instructions (e.g. `RUN --mount=...`, `--network`) are expanded as well.
pub const EXPANDING_INSTRUCTIONS: &[InstructionKind] = &[
    InstructionKind::Add,
    InstructionKind::Arg,
    InstructionKind::Copy,
    InstructionKind::Env,
    InstructionKind::Expose,
    InstructionKind::From,
    InstructionKind::Label,
    InstructionKind::Stopsignal,
    InstructionKind::User,
    InstructionKind::Volume,
    InstructionKind::Workdir,
];

impl InstructionKind {
    /// All 18 instructions.
    pub const ALL: [InstructionKind; 18] = [
        InstructionKind::From,
        InstructionKind::Run,
        InstructionKind::Cmd,
        InstructionKind::Label,
        InstructionKind::Maintainer,
        InstructionKind::Expose,
        InstructionKind::Env,
        InstructionKind::Add,
        InstructionKind::Copy,
        InstructionKind::Entrypoint,
        InstructionKind::Volume,
        InstructionKind::User,
        InstructionKind::Workdir,
        InstructionKind::Arg,
        InstructionKind::Onbuild,
        InstructionKind::Stopsignal,
        InstructionKind::Healthcheck,
        InstructionKind::Shell,
    ];

    /// The canonical (upper-case) keyword, e.g. `"STOPSIGNAL"`.
    pub fn name(self) -> &'static str {
        match self {
            InstructionKind::From => "FROM",
            InstructionKind::Run => "RUN",
            InstructionKind::Cmd => "CMD",
            InstructionKind::Label => "LABEL",
            InstructionKind::Maintainer => "MAINTAINER",
            InstructionKind::Expose => "EXPOSE",
            InstructionKind::Env => "ENV",
            InstructionKind::Add => "ADD",
            InstructionKind::Copy => "COPY",
            InstructionKind::Entrypoint => "ENTRYPOINT",
            InstructionKind::Volume => "VOLUME",
            InstructionKind::User => "USER",
            InstructionKind::Workdir => "WORKDIR",
            InstructionKind::Arg => "ARG",
            InstructionKind::Onbuild => "ONBUILD",
            InstructionKind::Stopsignal => "STOPSIGNAL",
            InstructionKind::Healthcheck => "HEALTHCHECK",
            InstructionKind::Shell => "SHELL",
        }
    }

    /// Looks a keyword up case-insensitively (`"run"`, `"Run"`, `"RUN"`).
    pub fn from_keyword(word: &str) -> Option<InstructionKind> {
        InstructionKind::ALL
            .iter()
            .copied()
            .find(|k| k.name().eq_ignore_ascii_case(word))
    }

    /// Whether BuildKit expands `$VAR` references in this instruction's arguments
    /// (see [`EXPANDING_INSTRUCTIONS`]).
    pub fn expands_env(self) -> bool {
        EXPANDING_INSTRUCTIONS.contains(&self)
    }

    /// Whether the instruction may carry heredocs (`RUN`, `COPY`, `ADD`; shell form only).
    pub fn can_contain_heredoc(self) -> bool {
        matches!(
            self,
            InstructionKind::Run | InstructionKind::Copy | InstructionKind::Add
        )
    }
}

impl std::fmt::Display for InstructionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One instruction (one logical line, plus any heredoc bodies that follow it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instruction {
    /// Which instruction this is.
    pub kind: InstructionKind,
    /// The keyword exactly as written (e.g. `"run"`).
    pub name_original: String,
    /// The `--flag[=value]` words between the keyword and the arguments.
    pub flags: Vec<Flag>,
    /// The arguments, raw (not expanded, quotes kept where BuildKit keeps them).
    pub args: Args,
    /// Heredocs introduced on this line (`<<EOF`), bodies in order. For `ONBUILD`, the heredocs of
    /// the trigger are recorded here (as BuildKit does) and also on the nested instruction.
    pub heredocs: Vec<Heredoc>,
    /// Source range: all physical lines of the instruction including heredoc bodies and
    /// terminators. For a nested `ONBUILD` trigger it starts at the trigger keyword.
    pub span: Span,
    /// For `ONBUILD`: the trigger instruction. `None` for other instructions (and for an
    /// `ONBUILD` without arguments).
    pub onbuild: Option<Box<Instruction>>,
    /// The logical line as written with continuations joined (BuildKit's `Node.Original`).
    /// For an `ONBUILD` trigger this is the text after `ONBUILD` and its flags.
    pub original: String,
}

/// A `--name[=value]` flag. Quotes and `\` escapes in the flag word are already removed
/// (as BuildKit's flag extraction does); `$VAR`s are not expanded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flag {
    /// The flag name without the leading `--` (e.g. `"from"`).
    pub name: String,
    /// The value after the first `=`, or `None` for a bare `--name`.
    pub value: Option<String>,
    /// Source range of the flag word.
    pub span: Span,
}

impl Flag {
    /// The flag word as BuildKit reports it: `--name` or `--name=value`.
    pub fn to_word(&self) -> String {
        match &self.value {
            Some(v) => format!("--{}={}", self.name, v),
            None => format!("--{}", self.name),
        }
    }
}

/// A heredoc body (`<<EOF ... EOF`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter word with quotes removed (also the file name for `COPY <<name`).
    pub name: String,
    /// The body: every line between the marker line and the terminator, each with its newline.
    /// For `<<-` (chomp) the leading tabs of every line are already stripped.
    pub content: String,
    /// `false` when the delimiter was (partly) quoted (`<<"EOF"`, `<<'EOF'`): no expansion.
    pub expand: bool,
    /// `true` for `<<-EOF` (leading tabs stripped from body and terminator).
    pub chomp: bool,
    /// The file descriptor written before `<<` (`3<<EOF`), 0 when absent.
    pub file_descriptor: u32,
}

/// An `ENV`/`LABEL` pair or an `ARG` declaration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    /// The key, raw.
    pub key: String,
    /// The value, raw (quotes and escapes kept). Always `Some` for ENV and LABEL; `None` for an
    /// ARG without `=`.
    pub value: Option<String>,
    /// `true` for the legacy `ENV key value with spaces` form (one pair, no `=`).
    pub legacy: bool,
}

/// The arguments of an instruction, shaped the way BuildKit's parser splits them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Args {
    /// No arguments at all (e.g. a bare `CMD` or `HEALTHCHECK`, or `ONBUILD` handled through
    /// [`Instruction::onbuild`]).
    Empty,
    /// JSON array form (RUN, CMD, ENTRYPOINT, SHELL, and ADD/COPY/VOLUME in JSON form): the
    /// decoded strings.
    Exec(Vec<String>),
    /// Shell form (RUN, CMD, ENTRYPOINT, SHELL, and ONBUILD's trigger text): the raw rest of the
    /// line, continuations removed, not expanded.
    Shell(String),
    /// One raw string (MAINTAINER, USER, WORKDIR, STOPSIGNAL): the rest of the line.
    Single(String),
    /// Whitespace-separated raw words (FROM, EXPOSE, and ADD/COPY/VOLUME not in JSON form).
    Words(Vec<String>),
    /// ENV / LABEL pairs and ARG declarations.
    KeyValues(Vec<KeyValue>),
    /// HEALTHCHECK with arguments: the type word (`CMD`, `NONE`, ...) and the command, which is
    /// [`Args::Empty`], [`Args::Exec`] or [`Args::Shell`].
    Healthcheck {
        /// The first word as written (`CMD`, `NONE`, ...).
        check_type: String,
        /// The command after the type word.
        command: Box<Args>,
    },
}

impl Args {
    /// `true` for the JSON array form (BuildKit's `json` attribute), including inside a
    /// HEALTHCHECK.
    pub fn is_json(&self) -> bool {
        match self {
            Args::Exec(_) => true,
            Args::Healthcheck { command, .. } => command.is_json(),
            _ => false,
        }
    }
}
