//! The typed commands (BuildKit's `commands.go`): one struct per instruction, holding the
//! syntax-tree instruction and its flags and arguments in the shape the converter consumes.
//! Values stay raw (not expanded) where BuildKit expands them later with the stage's ARG/ENV.

use super::run::RunCmd;
use crate::ast::{Flag, Instruction, KeyValue};
use rbuild_oci::HealthConfig;

/// `FROM [--platform=...] image [AS name]`.
#[derive(Debug, Clone)]
pub struct FromCmd<'a> {
    /// The instruction.
    pub inst: &'a Instruction,
    /// `--platform` (accepted; rbuild builds linux/amd64 only).
    pub platform: Option<&'a str>,
    /// The base image or stage, raw (expanded with the global ARGs by the converter).
    pub base: String,
    /// The `AS` name, lower-cased.
    pub stage_name: Option<String>,
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
    /// `--unpack[=BOOL]`: whether an archive source is extracted. Absent: local archives are,
    /// downloaded ones are not (BuildKit's default).
    pub unpack: Option<bool>,
}

/// `HEALTHCHECK [--interval=...] [--timeout=...] [--start-period=...] [--start-interval=...]
/// [--retries=...] CMD command` or `HEALTHCHECK NONE`, read into the config it sets.
#[derive(Debug, Clone)]
pub struct HealthcheckCmd<'a> {
    /// The instruction.
    pub inst: &'a Instruction,
    /// The health check (`test` is `["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", cmd]`; a zero
    /// duration or retry count is left unset).
    pub health: HealthConfig,
}

/// `ENV key=value ...` (or the legacy `ENV key value`).
#[derive(Debug, Clone)]
pub struct EnvCmd<'a> {
    /// The instruction.
    pub inst: &'a Instruction,
    /// The pairs, raw.
    pub env: &'a [KeyValue],
}

/// `ARG name[=default] ...`.
#[derive(Debug, Clone)]
pub struct ArgCmd<'a> {
    /// The instruction.
    pub inst: &'a Instruction,
    /// The declarations, raw (empty for a bare `ARG`, an error inside a stage).
    pub args: &'a [KeyValue],
}

/// `LABEL key=value ...`.
#[derive(Debug, Clone)]
pub struct LabelCmd<'a> {
    /// The instruction.
    pub inst: &'a Instruction,
    /// The pairs, raw.
    pub labels: &'a [KeyValue],
}

/// `MAINTAINER name`.
#[derive(Debug, Clone)]
pub struct MaintainerCmd<'a> {
    /// The instruction.
    pub inst: &'a Instruction,
    /// The name, raw.
    pub maintainer: String,
}

/// `WORKDIR path`.
#[derive(Debug, Clone)]
pub struct WorkdirCmd<'a> {
    /// The instruction.
    pub inst: &'a Instruction,
    /// The path, raw.
    pub path: String,
}

/// `USER user[:group]`.
#[derive(Debug, Clone)]
pub struct UserCmd<'a> {
    /// The instruction.
    pub inst: &'a Instruction,
    /// The user, raw.
    pub user: String,
}

/// `STOPSIGNAL signal`.
#[derive(Debug, Clone)]
pub struct StopsignalCmd<'a> {
    /// The instruction.
    pub inst: &'a Instruction,
    /// The signal, raw.
    pub signal: String,
}

/// `EXPOSE port[/proto] ...`.
#[derive(Debug, Clone)]
pub struct ExposeCmd<'a> {
    /// The instruction.
    pub inst: &'a Instruction,
    /// The port words, raw (expanded, then read by [`super::parse_ports`]).
    pub ports: Vec<String>,
}

/// `VOLUME path ...` or `VOLUME ["path", ...]`.
#[derive(Debug, Clone)]
pub struct VolumeCmd<'a> {
    /// The instruction.
    pub inst: &'a Instruction,
    /// The paths, raw.
    pub volumes: Vec<String>,
}

/// `SHELL ["exe", "arg", ...]`.
#[derive(Debug, Clone)]
pub struct ShellCmd<'a> {
    /// The instruction.
    pub inst: &'a Instruction,
    /// The shell argv.
    pub shell: &'a [String],
}

/// A CMD or ENTRYPOINT command line (BuildKit's `ShellDependantCmdLine`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdLine {
    /// The JSON form (or words taken as they are): the argv.
    Exec(Vec<String>),
    /// The shell form: run by the stage's SHELL.
    Shell(String),
}

/// `CMD command`.
#[derive(Debug, Clone)]
pub struct CmdCmd<'a> {
    /// The instruction.
    pub inst: &'a Instruction,
    /// The command line.
    pub cmd: CmdLine,
}

/// `ENTRYPOINT command`.
#[derive(Debug, Clone)]
pub struct EntrypointCmd<'a> {
    /// The instruction.
    pub inst: &'a Instruction,
    /// The command line.
    pub cmd: CmdLine,
}

/// `ONBUILD instruction`.
#[derive(Debug, Clone)]
pub struct OnbuildCmd<'a> {
    /// The instruction.
    pub inst: &'a Instruction,
    /// The trigger as written after `ONBUILD`.
    pub expression: String,
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
    /// `ENV`.
    Env(EnvCmd<'a>),
    /// `ARG`.
    Arg(ArgCmd<'a>),
    /// `LABEL`.
    Label(LabelCmd<'a>),
    /// `MAINTAINER`.
    Maintainer(MaintainerCmd<'a>),
    /// `WORKDIR`.
    Workdir(WorkdirCmd<'a>),
    /// `USER`.
    User(UserCmd<'a>),
    /// `STOPSIGNAL`.
    Stopsignal(StopsignalCmd<'a>),
    /// `EXPOSE`.
    Expose(ExposeCmd<'a>),
    /// `VOLUME`.
    Volume(VolumeCmd<'a>),
    /// `SHELL`.
    Shell(ShellCmd<'a>),
    /// `CMD`.
    Cmd(CmdCmd<'a>),
    /// `ENTRYPOINT`.
    Entrypoint(EntrypointCmd<'a>),
    /// `ONBUILD`.
    Onbuild(OnbuildCmd<'a>),
}

impl<'a> Command<'a> {
    /// The syntax-tree instruction.
    pub fn inst(&self) -> &'a Instruction {
        match self {
            Command::From(c) => c.inst,
            Command::Run(c) => c.inst,
            Command::Copy(c) => c.inst,
            Command::Add(c) => c.inst,
            Command::Healthcheck(c) => c.inst,
            Command::Env(c) => c.inst,
            Command::Arg(c) => c.inst,
            Command::Label(c) => c.inst,
            Command::Maintainer(c) => c.inst,
            Command::Workdir(c) => c.inst,
            Command::User(c) => c.inst,
            Command::Stopsignal(c) => c.inst,
            Command::Expose(c) => c.inst,
            Command::Volume(c) => c.inst,
            Command::Shell(c) => c.inst,
            Command::Cmd(c) => c.inst,
            Command::Entrypoint(c) => c.inst,
            Command::Onbuild(c) => c.inst,
        }
    }

    /// The instruction kind.
    pub fn kind(&self) -> crate::ast::InstructionKind {
        self.inst().kind
    }
}
