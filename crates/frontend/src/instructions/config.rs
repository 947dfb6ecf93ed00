//! Argument readers of the image-config instructions: HEALTHCHECK (its type word, command and
//! duration flags, as BuildKit's `parseHealthcheck`), CMD/ENTRYPOINT command lines, EXPOSE
//! ports and Go durations.

use super::commands::CmdLine;
use super::InstructionError;
use crate::ast::{Args, Instruction};
use rbuild_oci::HealthConfig;

/// The ports of an EXPOSE word (`80`, `53/udp`, `8000-8002`), as `port/proto` keys.
pub fn parse_ports(spec: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto),
        None => (spec, "tcp"),
    };
    // As Docker's nat.ParsePortSpec (BuildKit's EXPOSE): tcp, udp or sctp, any case.
    let proto = proto.to_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        let written = spec.split_once('/').map_or("", |(_, p)| p);
        return Err(format!("Invalid proto: {written}"));
    }
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
pub fn parse_duration_ns(s: &str) -> Option<i64> {
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

/// The words of an argument list (keys only for key=value lists).
pub(crate) fn args_words(args: &Args) -> Vec<String> {
    match args {
        Args::Exec(v) | Args::Words(v) => v.clone(),
        Args::Shell(s) => s.split_whitespace().map(str::to_string).collect(),
        Args::Single(s) => vec![s.clone()],
        Args::KeyValues(kv) => kv.iter().map(|k| k.key.clone()).collect(),
        Args::Healthcheck {
            check_type,
            command,
        } => {
            let mut w = vec![check_type.clone()];
            w.extend(args_words(command));
            w
        }
        Args::Empty => Vec::new(),
    }
}

/// The command line of a CMD or ENTRYPOINT: the JSON form, the shell form, or (for any other
/// argument shape) its words taken as the argv.
pub(super) fn cmd_line(args: &Args) -> CmdLine {
    match args {
        Args::Exec(v) => CmdLine::Exec(v.clone()),
        Args::Shell(s) => CmdLine::Shell(s.clone()),
        other => CmdLine::Exec(args_words(other)),
    }
}

/// The duration flags of HEALTHCHECK, in the order of [`health_config`]'s slots.
const HEALTHCHECK_DURATIONS: [&str; 4] = ["interval", "timeout", "start-period", "start-interval"];

/// A HEALTHCHECK duration flag's value in nanoseconds, checked as BuildKit does: a Go duration
/// (`time: invalid duration "soon"`), zero or at least 1ms (`Interval "interval" cannot be less
/// than 1ms`, negative ones included).
fn health_duration(flag_name: &str, value: &str) -> Result<i64, String> {
    let (negative, magnitude) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value.strip_prefix('+').unwrap_or(value)),
    };
    let ns = parse_duration_ns(magnitude)
        .ok_or_else(|| format!("time: invalid duration {}", crate::quote::go_quote(value)))?;
    if ns != 0 && (negative || ns < 1_000_000) {
        return Err(format!(
            "Interval {} cannot be less than 1ms",
            crate::quote::go_quote(flag_name)
        ));
    }
    Ok(ns)
}

/// Reads a HEALTHCHECK: `NONE`, or `CMD` with its command and flags (`durations` and `retries`
/// are the raw flag values by name).
pub(super) fn health_config(
    inst: &Instruction,
    flag: &dyn Fn(&str) -> Option<String>,
) -> Result<HealthConfig, InstructionError> {
    let invalid = |message: String| InstructionError::Invalid {
        message,
        span: inst.span,
    };
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
        return Ok(hc);
    }
    if kind != "CMD" {
        return Err(invalid(format!(
            "Unknown type \"{kind}\" in HEALTHCHECK (try CMD)"
        )));
    }
    hc.test = Some(match command {
        Some(Args::Exec(v)) => std::iter::once("CMD".to_string())
            .chain(v.iter().cloned())
            .collect(),
        Some(Args::Shell(s)) | Some(Args::Single(s)) => vec!["CMD-SHELL".into(), s.clone()],
        _ => return Err(invalid("HEALTHCHECK CMD requires a command".into())),
    });
    for (flag_name, slot) in HEALTHCHECK_DURATIONS.iter().zip([
        &mut hc.interval,
        &mut hc.timeout,
        &mut hc.start_period,
        &mut hc.start_interval,
    ]) {
        if let Some(v) = flag(flag_name).filter(|v| !v.is_empty()) {
            *slot = Some(health_duration(flag_name, &v).map_err(invalid)?).filter(|d| *d != 0);
        }
    }
    if let Some(r) = flag("retries").filter(|r| !r.is_empty()) {
        // BuildKit's words: strconv's error, then the range check.
        let retries: i32 = r.parse().map_err(|_| {
            invalid(format!(
                "strconv.ParseInt: parsing {}: invalid syntax",
                crate::quote::go_quote(&r)
            ))
        })?;
        if retries < 0 {
            return Err(invalid(format!("--retries cannot be negative ({retries})")));
        }
        hc.retries = Some(i64::from(retries)).filter(|r| *r != 0);
    }
    Ok(hc)
}
