//! Typed instructions, as BuildKit's `frontend/dockerfile/instructions`: [`parse`] turns one
//! syntax-tree [`Instruction`] into a [`Command`] (one typed struct per instruction, in
//! `commands`) whose flags are checked in one place against the flags that instruction declares
//! ([`Command::flags_of`], `flags`) and whose arguments are read and validated here: the shape
//! of each instruction's arguments, HEALTHCHECK (`config`), RUN's network, security and mounts
//! (`run`, `mounts`).
//!
//! Values stay raw (not expanded) where BuildKit expands them later: the converter expands them
//! against the stage's ARG/ENV (mount specs through [`RunMount`]). As in BuildKit, `ARG` and
//! `STOPSIGNAL` do not check their flags.

mod commands;
mod config;
mod flags;
pub(crate) mod mounts;
mod run;

pub use commands::{
    AddCmd, ArgCmd, CmdCmd, CmdLine, Command, CopyCmd, CopyFlags, EntrypointCmd, EnvCmd, ExposeCmd,
    FromCmd, HealthcheckCmd, LabelCmd, MaintainerCmd, OnbuildCmd, ShellCmd, StopsignalCmd, UserCmd,
    VolumeCmd, WorkdirCmd,
};
pub(crate) use config::args_words;
pub use config::{parse_duration_ns, parse_ports};
pub use run::{RunCmd, RunMount, RunNetwork, Security};

use crate::ast::{Args, Instruction, InstructionKind, Span};
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
    /// A string flag without `=value`, or a boolean with `=` and nothing after it (BuildKit:
    /// `missing a value on flag: --chown`).
    #[error("missing a value on flag: --{flag}")]
    MissingValue {
        /// The flag name.
        flag: String,
        /// Where the flag is.
        span: Span,
    },
    /// A flag that may be given once, given again (BuildKit: `duplicate flag specified:
    /// --chown`).
    #[error("duplicate flag specified: --{flag}")]
    DuplicateFlag {
        /// The flag name.
        flag: String,
        /// Where the second one is.
        span: Span,
    },
    /// Arguments or a flag value the instruction refuses (the message says why).
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
        /// Where.
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
            InstructionError::UnknownFlag { span, .. }
            | InstructionError::NotBool { span, .. }
            | InstructionError::MissingValue { span, .. }
            | InstructionError::DuplicateFlag { span, .. }
            | InstructionError::Invalid { span, .. } => *span,
        }
    }

    /// Whether the error is about a flag's name or form (not an argument or a value): the
    /// errors a base image's ONBUILD trigger reports with the trigger's text.
    pub fn is_flag_error(&self) -> bool {
        !matches!(self, InstructionError::Invalid { .. })
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
            _ => None,
        }
    }
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
const HEALTHCHECK_FLAGS: &[&str] = &[
    "interval",
    "timeout",
    "start-period",
    "start-interval",
    "retries",
];

impl Command<'_> {
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
}

/// Checks the flags of `inst`, reads its arguments and types both (BuildKit's
/// `instructions.ParseInstruction`).
pub fn parse(inst: &Instruction) -> Result<Command<'_>, InstructionError> {
    let f = match Command::flags_of(inst.kind) {
        Some(allowed) => Some(Flags::parse(inst, allowed)?),
        None => None,
    };
    let invalid = |message: &str| InstructionError::Invalid {
        message: message.to_string(),
        span: inst.span,
    };
    let key_values = |what: &str| match &inst.args {
        Args::KeyValues(kvs) => Ok(kvs.as_slice()),
        _ => Err(invalid(what)),
    };
    let text = || args_words(&inst.args).join(" ");
    let words = || args_words(&inst.args);
    Ok(match (inst.kind, f) {
        (InstructionKind::Arg, _) => Command::Arg(ArgCmd {
            inst,
            args: match &inst.args {
                Args::KeyValues(kvs) => kvs.as_slice(),
                _ => &[],
            },
        }),
        (InstructionKind::Stopsignal, _) => Command::Stopsignal(StopsignalCmd {
            inst,
            signal: text(),
        }),
        (_, None) => return Err(invalid("unchecked flags")),
        (InstructionKind::From, Some(f)) => from_cmd(inst, &f)?,
        (InstructionKind::Run, Some(f)) => Command::Run(run::run_cmd(inst, &f)?),
        (InstructionKind::Copy, Some(f)) => Command::Copy(CopyCmd {
            inst,
            common: copy_flags(&f)?,
            from: f.last("from"),
            parents: f.bool("parents")?,
        }),
        (InstructionKind::Add, Some(f)) => Command::Add(AddCmd {
            inst,
            common: copy_flags(&f)?,
            checksum: f.string("checksum"),
            keep_git_dir: f.bool("keep-git-dir")?,
            unpack: f.bool_opt("unpack")?,
        }),
        (InstructionKind::Healthcheck, Some(f)) => Command::Healthcheck(HealthcheckCmd {
            inst,
            health: config::health_config(inst, &|name| f.string(name).map(str::to_string))?,
        }),
        (InstructionKind::Env, _) => Command::Env(EnvCmd {
            inst,
            env: key_values("ENV requires at least one argument")?,
        }),
        (InstructionKind::Label, _) => Command::Label(LabelCmd {
            inst,
            labels: key_values("LABEL requires at least one argument")?,
        }),
        (InstructionKind::Maintainer, _) => Command::Maintainer(MaintainerCmd {
            inst,
            maintainer: match &inst.args {
                Args::Shell(s) => s.clone(),
                _ => text(),
            },
        }),
        (InstructionKind::Workdir, _) => Command::Workdir(WorkdirCmd { inst, path: text() }),
        (InstructionKind::User, _) => Command::User(UserCmd { inst, user: text() }),
        (InstructionKind::Expose, _) => Command::Expose(ExposeCmd {
            inst,
            ports: words(),
        }),
        (InstructionKind::Volume, _) => Command::Volume(VolumeCmd {
            inst,
            volumes: words(),
        }),
        (InstructionKind::Shell, _) => match &inst.args {
            Args::Exec(v) => Command::Shell(ShellCmd { inst, shell: v }),
            _ => return Err(invalid("SHELL requires the arguments to be in JSON form")),
        },
        (InstructionKind::Cmd, _) => Command::Cmd(CmdCmd {
            inst,
            cmd: config::cmd_line(&inst.args),
        }),
        (InstructionKind::Entrypoint, _) => Command::Entrypoint(EntrypointCmd {
            inst,
            cmd: config::cmd_line(&inst.args),
        }),
        (InstructionKind::Onbuild, _) => Command::Onbuild(OnbuildCmd {
            inst,
            expression: inst
                .original
                .trim()
                .get(7..)
                .unwrap_or("")
                .trim()
                .to_string(),
        }),
    })
}

/// `FROM`: the base word and the optional `AS name`.
fn from_cmd<'a>(inst: &'a Instruction, f: &Flags<'a>) -> Result<Command<'a>, InstructionError> {
    let invalid = |message: &str| InstructionError::Invalid {
        message: message.to_string(),
        span: inst.span,
    };
    let words = args_words(&inst.args);
    let Some(base) = words.first() else {
        return Err(invalid("FROM requires the name of a base image"));
    };
    let stage_name = match words.len() {
        1 => None,
        3 if words[1].eq_ignore_ascii_case("as") => Some(words[2].to_lowercase()),
        _ => {
            return Err(invalid(
                "FROM requires either one or three arguments (FROM image [AS name])",
            ))
        }
    };
    Ok(Command::From(FromCmd {
        inst,
        platform: f.string("platform"),
        base: base.clone(),
        stage_name,
    }))
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
