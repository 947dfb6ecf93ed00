//! hadolint's rules under their `DL` ids (hadolint's messages and default severities).

use crate::stages::{flag, words, Model};
use crate::{push, Finding, LintOptions};
use rbuild_frontend::{Args, Dockerfile, Instruction, InstructionKind};

/// Runs every hadolint rule.
pub(crate) fn check(
    _df: &Dockerfile,
    model: &Model<'_>,
    opts: &LintOptions<'_>,
    out: &mut Vec<Finding>,
) {
    let last = model.stages.len().saturating_sub(1);
    for (i, st) in model.stages.iter().enumerate() {
        from_rules(i, &st.base, st.from, model, opts, out);
        let mut pipefail = false;
        let mut prev: Option<&Instruction> = None;
        for ins in &st.body {
            match ins.kind {
                InstructionKind::Run => {
                    let script = run_script(ins);
                    apt_rules(ins, &script, i == last, out);
                    if !pipefail && has_pipe(&script) && !script.contains("set -o pipefail") {
                        push(out, "DL4006", describe("DL4006"), ins.span);
                    }
                    if let Some(p) = prev.filter(|p| p.kind == InstructionKind::Run) {
                        if p.flags
                            .iter()
                            .map(|f| f.to_word())
                            .eq(ins.flags.iter().map(|f| f.to_word()))
                        {
                            push(out, "DL3059", describe("DL3059"), ins.span);
                        }
                    }
                }
                InstructionKind::Shell => {
                    let w = words(ins);
                    let exe = w.first().map(String::as_str).unwrap_or("");
                    // A non-POSIX shell (pwsh, cmd) or one with pipefail turns DL4006 off.
                    pipefail = w.iter().any(|a| a == "pipefail") || !exe.ends_with("sh");
                }
                InstructionKind::Add => add_rule(ins, out),
                InstructionKind::Cmd | InstructionKind::Entrypoint => {
                    if matches!(ins.args, Args::Shell(_)) {
                        push(out, "DL3025", describe("DL3025"), ins.span);
                    }
                }
                _ => {}
            }
            prev = Some(ins);
        }
    }
}

fn describe(id: &str) -> String {
    crate::rule(id)
        .map(|r| r.description.to_string())
        .unwrap_or_default()
}

/// DL3006, DL3007, DL3026 on one FROM.
fn from_rules(
    index: usize,
    base: &str,
    from: &Instruction,
    model: &Model<'_>,
    opts: &LintOptions<'_>,
    out: &mut Vec<Finding>,
) {
    if base.is_empty() || base == "scratch" || base.contains('$') {
        return;
    }
    if model.stage_before(index, base).is_some() {
        return;
    }
    let (name, digest) = match base.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (base, None),
    };
    let tag = name
        .rfind(':')
        .filter(|&i| !name[i..].contains('/'))
        .map(|i| &name[i + 1..]);
    if tag.is_none() && digest.is_none() {
        push(out, "DL3006", describe("DL3006"), from.span);
    }
    if tag == Some("latest") && digest.is_none() {
        push(out, "DL3007", describe("DL3007"), from.span);
    }
    let trusted = &opts.hadolint.trusted_registries;
    if !trusted.is_empty() {
        let first = name.split('/').next().unwrap_or("");
        let registry = if name.contains('/') && (first.contains(['.', ':']) || first == "localhost")
        {
            first
        } else {
            "docker.io"
        };
        let ok = trusted.iter().any(|t| {
            t == registry
                || (registry == "docker.io" && (t == "hub.docker.com" || t == "index.docker.io"))
                || t.strip_prefix("*.")
                    .is_some_and(|s| registry.ends_with(&format!(".{s}")))
        });
        if !ok {
            push(out, "DL3026", describe("DL3026"), from.span);
        }
    }
}

/// A RUN's script: the shell form's text, the exec form's words joined, heredoc bodies added.
fn run_script(ins: &Instruction) -> String {
    let mut s = match &ins.args {
        Args::Shell(s) => s.clone(),
        Args::Exec(w) => w.join(" "),
        _ => String::new(),
    };
    for h in &ins.heredocs {
        s.push('\n');
        s.push_str(&h.content);
    }
    s
}

/// The simple commands of a script, each as its words (split on `;`, `&&`, `||`, `|`,
/// newlines; quotes are not interpreted beyond removal of the characters).
fn commands(script: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let normalised = script
        .replace("&&", "\n")
        .replace("||", "\n")
        .replace([';', '|', '&'], "\n");
    for part in normalised.lines() {
        let words: Vec<String> = part
            .split_whitespace()
            .map(|w| w.trim_matches(['"', '\'', '(', ')']).to_string())
            .filter(|w| !w.is_empty())
            .collect();
        if !words.is_empty() {
            out.push(words);
        }
    }
    out
}

/// Whether the script pipes one command into another (`a | b`, not `a || b`).
fn has_pipe(script: &str) -> bool {
    let b = script.as_bytes();
    (0..b.len())
        .any(|i| b[i] == b'|' && b.get(i + 1) != Some(&b'|') && (i == 0 || b[i - 1] != b'|'))
}

/// The arguments after `apt-get` in a command, when the command runs apt-get.
fn apt_get_args(cmd: &[String]) -> Option<&[String]> {
    let i = cmd
        .iter()
        .position(|w| w == "apt-get" || w.ends_with("/apt-get"))?;
    Some(&cmd[i + 1..])
}

/// DL3009, DL3014, DL3015.
fn apt_rules(ins: &Instruction, script: &str, last_stage: bool, out: &mut Vec<Finding>) {
    let cmds = commands(script);
    let mut update = false;
    for cmd in &cmds {
        let Some(args) = apt_get_args(cmd) else {
            continue;
        };
        let verb = args
            .iter()
            .find(|a| !a.starts_with('-'))
            .map(String::as_str);
        if verb == Some("update") {
            update = true;
        }
        if verb != Some("install") {
            continue;
        }
        let yes = args.iter().any(|a| {
            matches!(
                a.as_str(),
                "-y" | "--yes" | "--assume-yes" | "-qq" | "-q=2" | "--quiet=2"
            ) || (a.starts_with('-') && !a.starts_with("--") && a.contains('y'))
        }) || args.iter().filter(|a| *a == "-q").count() >= 2;
        if !yes {
            push(out, "DL3014", describe("DL3014"), ins.span);
        }
        let no_rec = args
            .iter()
            .any(|a| a == "--no-install-recommends" || a.contains("APT::Install-Recommends=false"));
        if !no_rec {
            push(out, "DL3015", describe("DL3015"), ins.span);
        }
    }
    let cache_mount = ins
        .flags
        .iter()
        .filter(|f| f.name == "mount")
        .filter_map(|f| f.value.as_deref())
        .any(|v| v.contains("type=cache") && v.contains("/var/lib/apt/lists"));
    let cleaned = cmds.iter().any(|c| {
        c.first().is_some_and(|w| w == "rm")
            && c.iter().any(|w| w.starts_with("/var/lib/apt/lists"))
    });
    if update && last_stage && !cleaned && !cache_mount {
        push(out, "DL3009", describe("DL3009"), ins.span);
    }
}

/// DL3020: ADD of local files that are not archives.
fn add_rule(ins: &Instruction, out: &mut Vec<Finding>) {
    if flag(ins, "from").is_some() || !ins.heredocs.is_empty() {
        return;
    }
    let w = words(ins);
    let Some((_, sources)) = w.split_last() else {
        return;
    };
    const ARCHIVES: &[&str] = &[
        ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz", ".tar.zst",
        ".gz", ".bz2", ".xz", ".zst", ".lz", ".lzma", ".tlz", ".zip", ".Z",
    ];
    let local_file = sources.iter().any(|s| {
        !s.contains("://") && !s.starts_with("git@") && !ARCHIVES.iter().any(|a| s.ends_with(a))
    });
    if local_file {
        push(out, "DL3020", describe("DL3020"), ins.span);
    }
}
