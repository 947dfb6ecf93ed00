//! Typed instructions, as BuildKit's `frontend/dockerfile/instructions`: [`parse`] turns one
//! syntax-tree [`Instruction`] into a [`Command`] whose flags are checked in one place against
//! the flags that instruction declares ([`Command::flags_of`]) and read into typed fields.
//!
//! Flag *values* stay raw (not expanded): they are expanded by the converter against the stage's
//! ARG/ENV. As in BuildKit, `ARG` and `STOPSIGNAL` do not check their flags.

mod flags;

use crate::ast::{Flag, Instruction, InstructionKind, Span};
use flags::Flags;

/// A flag-level error of an instruction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstructionError {
    /// A `--flag` the instruction does not take (BuildKit: `unknown flag: --chwon`).
    #[error("unknown flag: --{flag}{}", suggestion.map(|s| format!(" (did you mean --{s}?)")).unwrap_or_default())]
    UnknownFlag {
        /// The instruction.
        instruction: InstructionKind,
        /// The flag name as written, without `--`.
        flag: String,
        /// The closest declared flag, if one is close.
        suggestion: Option<&'static str>,
        /// The flags the instruction takes.
        allowed: &'static [&'static str],
        /// Where the flag is.
        span: Span,
    },
    /// A boolean flag with a value other than `true` or `false`.
    #[error("invalid value for --{flag}: {value} (expected true or false)")]
    NotBool {
        /// The flag name.
        flag: String,
        /// The value as written.
        value: String,
        /// The instruction's span.
        span: Span,
    },
}

impl InstructionError {
    /// Where the error points.
    pub fn span(&self) -> Span {
        match self {
            InstructionError::UnknownFlag { span, .. } | InstructionError::NotBool { span, .. } => {
                *span
            }
        }
    }

    /// What the user can do: the flags the instruction takes.
    pub fn hint(&self) -> Option<String> {
        match self {
            InstructionError::UnknownFlag {
                instruction,
                allowed,
                ..
            } => Some(if allowed.is_empty() {
                format!("{instruction} takes no flags")
            } else {
                let list: Vec<String> = allowed.iter().map(|f| format!("--{f}")).collect();
                format!("{instruction} takes {}", list.join(", "))
            }),
            InstructionError::NotBool { .. } => None,
        }
    }
}

/// `FROM [--platform=...] image [AS name]`.
#[derive(Debug, Clone)]
pub struct FromCmd<'a> {
    /// The instruction.
    pub inst: &'a Instruction,
    /// `--platform` (accepted; rbuild builds linux/amd64 only).
    pub platform: Option<&'a str>,
}

/// `RUN [--mount=...] [--network=...] [--security=...] command`.
#[derive(Debug, Clone)]
pub struct RunCmd<'a> {
    /// The instruction.
    pub inst: &'a Instruction,
    /// Every `--mount`, in order.
    pub mounts: Vec<&'a Flag>,
    /// The last `--network`.
    pub network: Option<&'a Flag>,
    /// The last `--security`.
    pub security: Option<&'a Flag>,
    /// Every `--device` (accepted and not applied, as before flags were checked).
    pub devices: Vec<&'a str>,
}

/// The flags COPY and ADD share.
#[derive(Debug, Clone, Default)]
pub struct CopyFlags<'a> {
    /// `--chown=user[:group]`, raw.
    pub chown: Option<&'a str>,
    /// `--chmod=mode` (octal or symbolic), raw.
    pub chmod: Option<&'a str>,
    /// `--link`.
    pub link: bool,
    /// Every `--exclude` pattern, raw.
    pub exclude: Vec<&'a str>,
}

/// `COPY [--from=...] [--chown=...] [--chmod=...] [--link] [--parents] [--exclude=...] src... dest`.
#[derive(Debug, Clone)]
pub struct CopyCmd<'a> {
    /// The instruction.
    pub inst: &'a Instruction,
    /// The flags shared with ADD.
    pub common: CopyFlags<'a>,
    /// `--from=stage|image`.
    pub from: Option<&'a Flag>,
    /// `--parents`.
    pub parents: bool,
}

/// `ADD [--chown=...] [--chmod=...] [--link] [--checksum=...] [--keep-git-dir] [--unpack]
/// [--exclude=...] src... dest`.
#[derive(Debug, Clone)]
pub struct AddCmd<'a> {
    /// The instruction.
    pub inst: &'a Instruction,
    /// The flags shared with COPY.
    pub common: CopyFlags<'a>,
    /// `--checksum=sha256:...`, raw.
    pub checksum: Option<&'a str>,
    /// `--keep-git-dir` (accepted; git sources are not supported).
    pub keep_git_dir: bool,
    /// `--unpack` (accepted and not applied, as before flags were checked).
    pub unpack: Option<bool>,
}

/// `HEALTHCHECK [--interval=...] [--timeout=...] [--start-period=...] [--start-interval=...]
/// [--retries=...] CMD command` or `HEALTHCHECK NONE`.
#[derive(Debug, Clone)]
pub struct HealthcheckCmd<'a> {
    /// The instruction.
    pub inst: &'a Instruction,
    /// The duration flags by name (`interval`, `timeout`, `start-period`, `start-interval`).
    pub durations: Vec<(&'static str, Option<&'a str>)>,
    /// `--retries`, raw.
    pub retries: Option<&'a str>,
}

/// A Dockerfile instruction with its flags checked and typed.
#[derive(Debug, Clone)]
pub enum Command<'a> {
    /// `FROM`.
    From(FromCmd<'a>),
    /// `RUN`.
    Run(RunCmd<'a>),
    /// `COPY`.
    Copy(CopyCmd<'a>),
    /// `ADD`.
    Add(AddCmd<'a>),
    /// `HEALTHCHECK`.
    Healthcheck(HealthcheckCmd<'a>),
    /// An instruction without flags (ENV, ARG, LABEL, WORKDIR, USER, CMD, ...).
    Plain(&'a Instruction),
}

const FROM_FLAGS: &[&str] = &["platform"];
const RUN_FLAGS: &[&str] = &["mount", "network", "security", "device"];
const COPY_FLAGS: &[&str] = &["chown", "from", "chmod", "link", "exclude", "parents"];
const ADD_FLAGS: &[&str] = &[
    "chown",
    "chmod",
    "link",
    "keep-git-dir",
    "checksum",
    "unpack",
    "exclude",
];
const HEALTHCHECK_DURATIONS: [&str; 4] = ["interval", "timeout", "start-period", "start-interval"];
const HEALTHCHECK_FLAGS: &[&str] = &[
    "interval",
    "timeout",
    "start-period",
    "start-interval",
    "retries",
];

impl<'a> Command<'a> {
    /// The flags `kind` takes; `None` when its flags are not checked (ARG, STOPSIGNAL).
    pub fn flags_of(kind: InstructionKind) -> Option<&'static [&'static str]> {
        match kind {
            InstructionKind::From => Some(FROM_FLAGS),
            InstructionKind::Run => Some(RUN_FLAGS),
            InstructionKind::Copy => Some(COPY_FLAGS),
            InstructionKind::Add => Some(ADD_FLAGS),
            InstructionKind::Healthcheck => Some(HEALTHCHECK_FLAGS),
            InstructionKind::Arg | InstructionKind::Stopsignal => None,
            _ => Some(&[]),
        }
    }

    /// The syntax-tree instruction.
    pub fn inst(&self) -> &'a Instruction {
        match self {
            Command::From(c) => c.inst,
            Command::Run(c) => c.inst,
            Command::Copy(c) => c.inst,
            Command::Add(c) => c.inst,
            Command::Healthcheck(c) => c.inst,
            Command::Plain(i) => i,
        }
    }

    /// The instruction kind.
    pub fn kind(&self) -> InstructionKind {
        self.inst().kind
    }
}

/// Checks the flags of `inst` and types them (BuildKit's `instructions.ParseInstruction`).
pub fn parse(inst: &Instruction) -> Result<Command<'_>, InstructionError> {
    let Some(allowed) = Command::flags_of(inst.kind) else {
        return Ok(Command::Plain(inst));
    };
    let f = Flags::parse(inst, allowed)?;
    Ok(match inst.kind {
        InstructionKind::From => Command::From(FromCmd {
            inst,
            platform: f.string("platform"),
        }),
        InstructionKind::Run => Command::Run(RunCmd {
            inst,
            mounts: f.all("mount"),
            network: f.last("network"),
            security: f.last("security"),
            devices: f.strings("device"),
        }),
        InstructionKind::Copy => Command::Copy(CopyCmd {
            inst,
            common: copy_flags(&f)?,
            from: f.last("from"),
            parents: f.bool("parents")?,
        }),
        InstructionKind::Add => Command::Add(AddCmd {
            inst,
            common: copy_flags(&f)?,
            checksum: f.string("checksum"),
            keep_git_dir: f.bool("keep-git-dir")?,
            unpack: f.bool_opt("unpack")?,
        }),
        InstructionKind::Healthcheck => Command::Healthcheck(HealthcheckCmd {
            inst,
            durations: HEALTHCHECK_DURATIONS
                .iter()
                .map(|&name| (name, f.string(name)))
                .collect(),
            retries: f.string("retries"),
        }),
        _ => Command::Plain(inst),
    })
}

/// The flags COPY and ADD share.
fn copy_flags<'a>(f: &Flags<'a>) -> Result<CopyFlags<'a>, InstructionError> {
    Ok(CopyFlags {
        chown: f.string("chown"),
        chmod: f.string("chmod"),
        link: f.bool("link")?,
        exclude: f.strings("exclude"),
    })
}

#[cfg(test)]
mod tests;
