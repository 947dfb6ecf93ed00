//! `RUN` and its flags, as BuildKit's `commands_runmount.go`, `commands_runnetwork.go`,
//! `commands_runsecurity.go` and `commands_rundevice.go`: `--network` and `--security` read into
//! [`RunNetwork`] and [`Security`], every `--mount` kept with its unexpanded `from=` (for stage
//! selection) and parsed, once the stage's ARG/ENV are known, by [`RunMount::parse`]; `--device`
//! is refused (rbuild has no CDI devices).

use super::mounts::{parse_mount, ParsedMount};
use super::InstructionError;
use crate::ast::{Flag, Instruction, Span};

/// `RUN --network=...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunNetwork {
    /// `default`: the build's network (`rbuild build --network`).
    Default,
    /// `host`: the host's network (needs the network.host entitlement).
    Host,
    /// `none`: no network.
    None,
}

impl RunNetwork {
    /// Reads a `--network` value (BuildKit: `unsupported network mode "bridge"`).
    pub fn parse(value: &str) -> Result<RunNetwork, String> {
        match value {
            "default" => Ok(RunNetwork::Default),
            "host" => Ok(RunNetwork::Host),
            "none" => Ok(RunNetwork::None),
            other => Err(format!("unsupported network mode \"{other}\"")),
        }
    }
}

/// `RUN --security=...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// `sandbox`: the default.
    Sandbox,
    /// `insecure`: all capabilities (needs the security.insecure entitlement).
    Insecure,
}

impl Security {
    /// Reads a `--security` value (BuildKit: `security "root" is not valid`).
    pub fn parse(value: &str) -> Result<Security, String> {
        match value {
            "sandbox" => Ok(Security::Sandbox),
            "insecure" => Ok(Security::Insecure),
            other => Err(format!(
                "security {} is not valid",
                crate::quote::go_quote(other)
            )),
        }
    }
}

/// One `RUN --mount=...` flag.
#[derive(Debug, Clone)]
pub struct RunMount<'a> {
    /// The flag.
    pub flag: &'a Flag,
    /// Its `from=` value as written (not expanded), when the spec reads.
    pub from: Option<String>,
    /// The instruction's span, where a spec error points.
    span: Span,
}

impl RunMount<'_> {
    /// The raw spec (the flag's value).
    pub fn spec(&self) -> &str {
        self.flag.value.as_deref().unwrap_or("")
    }

    /// Parses the spec with every field value expanded by `expand` (the stage's ARG/ENV);
    /// `from=` keeps its unexpanded value (the converter expands it with the global ARGs too).
    pub(crate) fn parse(
        &self,
        expand: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Result<ParsedMount, InstructionError> {
        let invalid = |message: String| InstructionError::Invalid {
            message,
            span: self.span,
        };
        let mut m = parse_mount(self.spec(), expand).map_err(invalid)?;
        m.from = self.from.clone();
        Ok(m)
    }
}

/// `RUN [--mount=...] [--network=...] [--security=...] command`.
#[derive(Debug, Clone)]
pub struct RunCmd<'a> {
    /// The instruction.
    pub inst: &'a Instruction,
    /// Every `--mount`, in order.
    pub mounts: Vec<RunMount<'a>>,
    /// `--network`, read, with its flag (an entitlement error points at it).
    pub network: Option<(RunNetwork, &'a Flag)>,
    /// `--security`, read, with its flag.
    pub security: Option<(Security, &'a Flag)>,
}

/// Types the flags of a RUN (`mount`, `network`, `security` and the refused `device`).
pub(super) fn run_cmd<'a>(
    inst: &'a Instruction,
    f: &super::flags::Flags<'a>,
) -> Result<RunCmd<'a>, InstructionError> {
    if let Some(device) = f.all("device").first() {
        return Err(InstructionError::Invalid {
            message: "RUN --device is not supported by rbuild".into(),
            span: device.span,
        });
    }
    let invalid = |message: String| InstructionError::Invalid {
        message,
        span: inst.span,
    };
    let network = match f.last("network") {
        Some(flag) => Some((
            RunNetwork::parse(flag.value.as_deref().unwrap_or("")).map_err(invalid)?,
            flag,
        )),
        None => None,
    };
    let security = match f.last("security") {
        Some(flag) => Some((
            Security::parse(flag.value.as_deref().unwrap_or("")).map_err(invalid)?,
            flag,
        )),
        None => None,
    };
    let mounts = f
        .all("mount")
        .into_iter()
        .map(|flag| {
            let mut keep = |w: &str| -> Result<String, String> { Ok(w.to_string()) };
            let from = parse_mount(flag.value.as_deref().unwrap_or(""), &mut keep)
                .ok()
                .and_then(|m| m.from);
            RunMount {
                flag,
                from,
                span: inst.span,
            }
        })
        .collect();
    Ok(RunCmd {
        inst,
        mounts,
        network,
        security,
    })
}
