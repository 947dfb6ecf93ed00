//! Metadata instructions that only change the image config and history: LABEL, MAINTAINER,
//! CMD, ENTRYPOINT, EXPOSE, VOLUME, STOPSIGNAL, HEALTHCHECK and ONBUILD.

use super::helpers::{args_words, expand, words_of};
use super::state::StageState;
use super::{ConvertError, Converter};
use crate::ast::{Args, Instruction, InstructionKind};
use crate::instructions::HealthcheckCmd;
use rbuild_oci::HealthConfig;
use std::collections::BTreeMap;

/// The ports of an EXPOSE word (`80`, `53/udp`, `8000-8002`), as `port/proto` keys.
pub(super) fn parse_ports(spec: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    let (start, end) = match ports.split_once('-') {
        Some((a, b)) => (a, b),
        None => (ports, ports),
    };
    let start: u32 = start
        .parse()
        .map_err(|_| format!("invalid containerPort: {spec}"))?;
    let end: u32 = end
        .parse()
        .map_err(|_| format!("invalid containerPort: {spec}"))?;
    if end < start || end > 65535 {
        return Err(format!("invalid port range: {spec}"));
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

/// A Go duration (`30s`, `1m30s`, `500ms`) in nanoseconds; None when malformed.
pub(super) fn parse_duration_ns(s: &str) -> Option<i64> {
    let mut total: f64 = 0.0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphabetic() || n == 'µ' {
                unit.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let value: f64 = num.parse().ok()?;
        num.clear();
        let factor = match unit.as_str() {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * factor;
        any = true;
    }
    if !num.is_empty() {
        return if num == "0" { Some(0) } else { None };
    }
    any.then_some(total as i64)
}

impl Converter<'_> {
    /// LABEL: adds labels to the image config.
    pub(super) fn label(
        &mut self,
        state: &mut StageState,
        inst: &Instruction,
    ) -> Result<(), ConvertError> {
        let span = &inst.span;
        let vars = state.vars();
        let Args::KeyValues(kvs) = &inst.args else {
            return Err(ConvertError::at(
                span,
                "LABEL requires at least one argument",
            ));
        };
        let labels = state.config.config.labels.get_or_insert_with(BTreeMap::new);
        let mut shown = Vec::new();
        for kv in kvs {
            let key = expand(&self.lexer, &kv.key, &vars, span)?;
            let value = expand(&self.lexer, kv.value.as_deref().unwrap_or(""), &vars, span)?;
            shown.push(format!("{key}={value}"));
            labels.insert(key, value);
        }
        self.history(state, format!("LABEL {}", shown.join(" ")), true);
        Ok(())
    }

    /// MAINTAINER: sets the image author.
    pub(super) fn maintainer(
        &mut self,
        state: &mut StageState,
        inst: &Instruction,
    ) -> Result<(), ConvertError> {
        let span = &inst.span;
        let vars = state.vars();
        let text = match &inst.args {
            Args::Shell(s) => s.clone(),
            other => words_of(&Instruction {
                args: other.clone(),
                ..inst.clone()
            })
            .join(" "),
        };
        let author = expand(&self.lexer, &text, &vars, span)?;
        state.config.author = Some(author.clone());
        self.history(state, format!("MAINTAINER {author}"), true);
        Ok(())
    }

    /// CMD or ENTRYPOINT (an ENTRYPOINT clears a CMD inherited from the base).
    pub(super) fn cmd_or_entrypoint(
        &mut self,
        state: &mut StageState,
        inst: &Instruction,
    ) -> Result<(), ConvertError> {
        let cmd = match &inst.args {
            Args::Exec(v) => v.clone(),
            Args::Shell(s) => {
                let mut c = state.shell();
                c.push(s.clone());
                c
            }
            other => words_of(&Instruction {
                args: other.clone(),
                ..inst.clone()
            }),
        };
        let json = serde_json::to_string(&cmd).unwrap_or_default();
        if inst.kind == InstructionKind::Cmd {
            state.config.config.cmd = Some(cmd);
            state.cmd_set = true;
            self.history(state, format!("CMD {json}"), true);
        } else {
            state.config.config.entrypoint = Some(cmd);
            if !state.cmd_set {
                state.config.config.cmd = None;
            }
            self.history(state, format!("ENTRYPOINT {json}"), true);
        }
        Ok(())
    }

    /// EXPOSE: adds exposed ports (`80`, `53/udp`, `8000-8002`).
    pub(super) fn expose(
        &mut self,
        state: &mut StageState,
        inst: &Instruction,
    ) -> Result<(), ConvertError> {
        let span = &inst.span;
        let vars = state.vars();
        let mut shown = Vec::new();
        for w in words_of(inst) {
            let spec = expand(&self.lexer, &w, &vars, span)?;
            for port in parse_ports(&spec).map_err(|m| ConvertError::at(span, m))? {
                state
                    .config
                    .config
                    .exposed_ports
                    .get_or_insert_with(BTreeMap::new)
                    .insert(port.clone(), serde_json::json!({}));
                shown.push(port);
            }
        }
        self.history(state, format!("EXPOSE map[{}]", shown.join(" ")), true);
        Ok(())
    }

    /// VOLUME: adds volumes to the image config.
    pub(super) fn volume(
        &mut self,
        state: &mut StageState,
        inst: &Instruction,
    ) -> Result<(), ConvertError> {
        let span = &inst.span;
        let vars = state.vars();
        let mut shown = Vec::new();
        for w in words_of(inst) {
            let v = expand(&self.lexer, &w, &vars, span)?;
            if v.is_empty() {
                return Err(ConvertError::at(
                    span,
                    "VOLUME specified can not be an empty string",
                ));
            }
            state
                .config
                .config
                .volumes
                .get_or_insert_with(BTreeMap::new)
                .insert(v.clone(), serde_json::json!({}));
            shown.push(v);
        }
        self.history(state, format!("VOLUME [{}]", shown.join(" ")), true);
        Ok(())
    }

    /// STOPSIGNAL: sets the image stop signal.
    pub(super) fn stopsignal(
        &mut self,
        state: &mut StageState,
        inst: &Instruction,
    ) -> Result<(), ConvertError> {
        let span = &inst.span;
        let vars = state.vars();
        let sig = expand(&self.lexer, &words_of(inst).join(" "), &vars, span)?;
        state.config.config.stop_signal = Some(sig.clone());
        self.history(state, format!("STOPSIGNAL {sig}"), true);
        Ok(())
    }

    /// ONBUILD: records a trigger for images built on this one.
    pub(super) fn onbuild(
        &mut self,
        state: &mut StageState,
        inst: &Instruction,
    ) -> Result<(), ConvertError> {
        let trigger = inst.original.trim();
        let rest = trigger.get(7..).unwrap_or("").trim().to_string();
        state
            .config
            .config
            .on_build
            .get_or_insert_with(Vec::new)
            .push(rest.clone());
        self.history(state, format!("ONBUILD {rest}"), true);
        Ok(())
    }

    /// HEALTHCHECK: `NONE` or `CMD` with its interval/timeout/start-period/retries flags.
    pub(super) fn healthcheck(
        &mut self,
        state: &mut StageState,
        cmd: &HealthcheckCmd,
    ) -> Result<(), ConvertError> {
        let inst = cmd.inst;
        let span = &inst.span;
        let (kind, command) = match &inst.args {
            Args::Healthcheck {
                check_type,
                command,
            } => (check_type.to_uppercase(), Some(command.as_ref())),
            Args::Single(s) | Args::Shell(s) => (s.trim().to_uppercase(), None),
            other => (
                args_words(other)
                    .first()
                    .cloned()
                    .unwrap_or_default()
                    .to_uppercase(),
                None,
            ),
        };
        let mut hc = HealthConfig::default();
        if kind == "NONE" {
            hc.test = Some(vec!["NONE".into()]);
        } else if kind == "CMD" {
            hc.test = Some(match command {
                Some(Args::Exec(v)) => std::iter::once("CMD".to_string())
                    .chain(v.iter().cloned())
                    .collect(),
                Some(Args::Shell(s)) | Some(Args::Single(s)) => vec!["CMD-SHELL".into(), s.clone()],
                _ => return Err(ConvertError::at(span, "HEALTHCHECK CMD requires a command")),
            });
            for ((flag_name, value), slot) in cmd.durations.iter().zip([
                &mut hc.interval,
                &mut hc.timeout,
                &mut hc.start_period,
                &mut hc.start_interval,
            ]) {
                if let Some(v) = value {
                    *slot = Some(parse_duration_ns(v).ok_or_else(|| {
                        ConvertError::at(span, format!("invalid duration for --{flag_name}: {v}"))
                    })?)
                    .filter(|d| *d != 0);
                }
            }
            if let Some(r) = cmd.retries {
                hc.retries = Some(r.parse().map_err(|_| {
                    ConvertError::at(span, format!("invalid --retries value: {r}"))
                })?)
                .filter(|r| *r != 0);
            }
        } else {
            return Err(ConvertError::at(
                span,
                format!("Unknown type \"{kind}\" in HEALTHCHECK (try CMD)"),
            ));
        }
        state.config.config.healthcheck = Some(hc);
        self.history(
            state,
            format!(
                "HEALTHCHECK {}",
                inst.original.trim().get(11..).unwrap_or("").trim()
            ),
            true,
        );
        Ok(())
    }
}
