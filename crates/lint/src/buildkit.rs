//! BuildKit's build checks (`frontend/dockerfile/linter`), with BuildKit's messages.
//!
//! Checks that need the base image's environment (`UndefinedVar`) only run for stages whose
//! environment is known here: stages rooted in `scratch` (a static lint does not pull images).

use crate::stages::{flag, words, Model, Stage};
use crate::{push, Finding, LintOptions};
use rbuild_frontend::{Args, Dockerfile, Instruction, InstructionKind, Lexer};
use std::cell::RefCell;
use std::collections::BTreeSet;

/// Build arguments BuildKit defines for every build (never reported as undefined).
const PLATFORM_ARGS: &[(&str, &str)] = &[
    ("BUILDPLATFORM", "linux/amd64"),
    ("BUILDOS", "linux"),
    ("BUILDARCH", "amd64"),
    ("BUILDVARIANT", ""),
    ("TARGETPLATFORM", "linux/amd64"),
    ("TARGETOS", "linux"),
    ("TARGETARCH", "amd64"),
    ("TARGETVARIANT", ""),
    ("TARGETSTAGE", ""),
];

/// Variables BuildKit does not report in `UndefinedVar` (its `nonEnvArgs`: platform and proxy
/// arguments, which are set by the builder).
const NON_ENV_ARGS: &[&str] = &[
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "TARGETSTAGE",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Runs every BuildKit check.
pub(crate) fn check(
    df: &Dockerfile,
    model: &Model<'_>,
    opts: &LintOptions<'_>,
    lines: &[&str],
    out: &mut Vec<Finding>,
) {
    let lexer = Lexer::new(df.directives.escape);
    for ins in &df.instructions {
        empty_continuation(ins, lines, out);
        if ins.kind == InstructionKind::Maintainer {
            push(
                out,
                "MaintainerDeprecated",
                "Maintainer instruction is deprecated in favor of using label".into(),
                ins.span,
            );
        }
    }
    casing(model, out);
    let global_args = declared_args(&model.globals);
    for ins in &model.globals {
        secrets(ins, out);
    }
    let mut names = BTreeSet::new();
    for (i, st) in model.stages.iter().enumerate() {
        from_checks(st, &lexer, &global_args, model, out);
        if let Some(name) = st.name() {
            if name == "context" || name == "scratch" {
                push(
                    out,
                    "ReservedStageName",
                    format!("Stage name should not use the same name as reserved stage {name:?}"),
                    st.from.span,
                );
            }
            if !names.insert(name.clone()) {
                push(
                    out,
                    "DuplicateStageName",
                    format!("Duplicate stage name {name:?}, stage names should be unique"),
                    st.from.span,
                );
            }
        }
        stage_checks(i, st, model, opts, &lexer, out);
    }
}

/// `NoEmptyContinuation`: a blank line inside a continued instruction (heredoc bodies aside).
fn empty_continuation(ins: &Instruction, lines: &[&str], out: &mut Vec<Finding>) {
    let mut end = ins.span.end_line;
    if !ins.heredocs.is_empty() {
        // Only the lines before the first heredoc body count.
        if let Some(n) = (ins.span.start_line..=end).find(|&n| {
            lines
                .get(n.wrapping_sub(1))
                .is_some_and(|l| l.contains("<<"))
        }) {
            end = n;
        }
    }
    let blank = (ins.span.start_line + 1..end)
        .any(|n| lines.get(n - 1).is_some_and(|l| l.trim().is_empty()));
    if blank {
        push(
            out,
            "NoEmptyContinuation",
            "Empty continuation line".into(),
            ins.span,
        );
    }
}

fn is_lower(s: &str) -> bool {
    s == s.to_lowercase()
}

fn is_upper(s: &str) -> bool {
    s == s.to_uppercase()
}

/// `ConsistentInstructionCasing`, `StageNameCasing` and `FromAsCasing`.
fn casing(model: &Model<'_>, out: &mut Vec<Finding>) {
    let all: Vec<&Instruction> = model
        .stages
        .iter()
        .flat_map(|s| std::iter::once(s.from).chain(s.body.iter().copied()))
        .collect();
    let lower = all.iter().filter(|i| is_lower(&i.name_original)).count();
    let upper = all
        .iter()
        .filter(|i| !is_lower(&i.name_original) && is_upper(&i.name_original))
        .count();
    let majority_lower = lower > upper;
    for ins in &all {
        let name = &ins.name_original;
        let wanted = if majority_lower && !is_lower(name) {
            "lowercase"
        } else if !majority_lower && !is_upper(name) {
            "uppercase"
        } else {
            continue;
        };
        push(
            out,
            "ConsistentInstructionCasing",
            format!("Command '{name}' should match the case of the command majority ({wanted})"),
            ins.span,
        );
    }
    for st in &model.stages {
        let Some((kw, name)) = &st.alias else {
            continue;
        };
        if !is_lower(name) {
            push(
                out,
                "StageNameCasing",
                format!("Stage name '{name}' should be lowercase"),
                st.from.span,
            );
        }
        let from = &st.from.name_original;
        let matches = if is_lower(from) {
            is_lower(kw)
        } else if is_upper(from) {
            is_upper(kw)
        } else {
            true
        };
        if !matches {
            push(
                out,
                "FromAsCasing",
                format!("'{kw}' and '{from}' keywords' casing do not match"),
                st.from.span,
            );
        }
    }
}

/// The `ARG` declarations of some instructions: (name, default).
fn declared_args(ins: &[&Instruction]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for i in ins.iter().filter(|i| i.kind == InstructionKind::Arg) {
        if let Args::KeyValues(kvs) = &i.args {
            out.extend(kvs.iter().map(|kv| (kv.key.clone(), kv.value.clone())));
        }
    }
    out
}

/// The variables `word` looks up, split into (found, missing) by `known`.
fn lookups(lexer: &Lexer, word: &str, known: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let missing = RefCell::new(Vec::new());
    let env = |name: &str| {
        let v = known(name);
        if v.is_none() {
            missing.borrow_mut().push(name.to_string());
        }
        v
    };
    let _ = lexer.process_word(word, &env);
    missing.into_inner()
}

/// A close name for a suggestion (`did you mean`), as BuildKit's `suggest.Search`: the first
/// option at the smallest Levenshtein distance below 3, case-sensitive; none when an option is
/// the name itself.
fn suggest<'a>(name: &str, options: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<&str> = None;
    let mut min = 3;
    for o in options {
        if o == name {
            return None;
        }
        let d = strsim::levenshtein(name, o);
        if d < min {
            min = d;
            best = Some(o);
        }
    }
    best.map(str::to_string)
}

/// FROM's checks: `UndefinedArgInFrom`, `RedundantTargetPlatform`, `InvalidDefaultArgInFrom`.
fn from_checks(
    st: &Stage<'_>,
    lexer: &Lexer,
    global_args: &[(String, Option<String>)],
    model: &Model<'_>,
    out: &mut Vec<Finding>,
) {
    let known = |name: &str| -> Option<String> {
        if let Some((_, v)) = global_args.iter().rev().find(|(k, _)| k == name) {
            return Some(v.clone().unwrap_or_default());
        }
        PLATFORM_ARGS
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    let mut words = vec![st.base.clone()];
    let platform = flag(st.from, "platform");
    words.extend(platform.map(str::to_string));
    for w in &words {
        for name in lookups(lexer, w, &known) {
            let options = global_args
                .iter()
                .map(|(k, _)| k.as_str())
                .chain(PLATFORM_ARGS.iter().map(|(k, _)| *k));
            let mut msg = format!("FROM argument '{name}' is not declared");
            if let Some(s) = suggest(&name, options) {
                msg.push_str(&format!(" (did you mean {s}?)"));
            }
            push(out, "UndefinedArgInFrom", msg, st.from.span);
        }
    }
    if let Some(p) = platform {
        const_platform(st, p, out);
        if p == "$TARGETPLATFORM" || p == "${TARGETPLATFORM}" {
            push(
                out,
                "RedundantTargetPlatform",
                format!("Setting platform to predefined {p} in FROM is redundant as this is the default behavior"),
                st.from.span,
            );
        }
    }
    if st.base.contains('$') {
        let Ok(name) = lexer.process_word(&st.base, &known) else {
            return;
        };
        let is_stage = model
            .stages
            .iter()
            .any(|s| s.name().as_deref() == Some(&name));
        if !is_stage && !valid_reference(&name) {
            push(
                out,
                "InvalidDefaultArgInFrom",
                format!(
                    "Default value for ARG {} results in empty or invalid base image name",
                    st.base
                ),
                st.from.span,
            );
        }
    }
}

/// `FromPlatformFlagConstDisallowed`: `--platform=linux/arm64` written out, unless the stage's
/// name mentions its OS or architecture (a stage made for that platform on purpose).
fn const_platform(st: &Stage<'_>, p: &str, out: &mut Vec<Finding>) {
    if p.contains('$') || p.is_empty() {
        return;
    }
    let parts: Vec<&str> = p.split('/').collect();
    let (os, arch) = match parts.as_slice() {
        [one] if ["linux", "windows", "darwin", "freebsd"].contains(one) => (*one, "amd64"),
        [one] => ("linux", *one),
        [os, arch, ..] => (*os, *arch),
        [] => return,
    };
    let name = st.alias.as_ref().map(|(_, n)| n.as_str()).unwrap_or("");
    if name.contains(os) || name.contains(arch) {
        return;
    }
    push(
        out,
        "FromPlatformFlagConstDisallowed",
        format!("FROM --platform flag should not use constant value {p:?}"),
        st.from.span,
    );
}

/// A rough check of docker's reference grammar: `[host[:port]/]path[:tag][@digest]`.
fn valid_reference(s: &str) -> bool {
    if s.is_empty() || s.chars().any(char::is_whitespace) {
        return false;
    }
    let (name, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    if digest.is_some_and(|d| !d.contains(':') || d.ends_with(':')) {
        return false;
    }
    let (path, tag) = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => (&name[..i], Some(&name[i + 1..])),
        _ => (name, None),
    };
    if tag.is_some_and(|t| {
        t.is_empty()
            || t.len() > 128
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    }) {
        return false;
    }
    let mut comps = path.split('/');
    let first = comps.next().unwrap_or("");
    let rest: Vec<&str> = comps.collect();
    let host = !rest.is_empty() && (first.contains(['.', ':']) || first == "localhost");
    let repo: Vec<&str> = if host {
        rest
    } else {
        path.split('/').collect()
    };
    !repo.is_empty()
        && repo.iter().all(|c| {
            !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
                && !c.starts_with(['.', '_', '-'])
                && !c.ends_with(['.', '_', '-'])
        })
}

/// LegacyKeyValueFormat for an ARG, ENV or LABEL written `KEY value`.
fn legacy_key_value(out: &mut Vec<Finding>, ins: &Instruction) {
    let n = &ins.name_original;
    push(
        out,
        "LegacyKeyValueFormat",
        format!("\"{n} key=value\" should be used instead of legacy \"{n} key value\" format"),
        ins.span,
    );
}

/// `SecretsUsedInArgOrEnv` for one ARG or ENV.
fn secrets(ins: &Instruction, out: &mut Vec<Finding>) {
    let what = match ins.kind {
        InstructionKind::Arg => "ARG",
        InstructionKind::Env => "ENV",
        _ => return,
    };
    let Args::KeyValues(kvs) = &ins.args else {
        return;
    };
    const DENY: &[&str] = &[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    const ALLOW: &[&str] = &["public", "file", "version"];
    for kv in kvs {
        let parts: Vec<String> = kv.key.split('_').map(str::to_lowercase).collect();
        let has = |set: &[&str]| parts.iter().any(|p| set.contains(&p.as_str()));
        if has(DENY) && !has(ALLOW) {
            push(
                out,
                "SecretsUsedInArgOrEnv",
                format!(
                    "Do not use ARG or ENV instructions for sensitive data ({what} {:?})",
                    kv.key
                ),
                ins.span,
            );
        }
    }
}

/// Whether a stage and the stages it derives from (`FROM <stage>`) end in `scratch`, and
/// whether any of them set a SHELL / an absolute WORKDIR.
struct Lineage {
    from_scratch: bool,
    shell_set: bool,
    workdir_set: bool,
    env: Vec<String>,
}

fn lineage(index: usize, model: &Model<'_>) -> Lineage {
    let st = &model.stages[index];
    match model.stage_before(index, &st.base) {
        Some(parent) => {
            let mut p = lineage(parent, model);
            walk_body(&model.stages[parent], &mut p);
            p
        }
        None => Lineage {
            from_scratch: st.base == "scratch",
            shell_set: false,
            workdir_set: false,
            env: Vec::new(),
        },
    }
}

/// What a whole stage body leaves to the stages built on it.
fn walk_body(st: &Stage<'_>, l: &mut Lineage) {
    for ins in &st.body {
        match ins.kind {
            InstructionKind::Shell => l.shell_set = true,
            InstructionKind::Workdir => l.workdir_set = true,
            InstructionKind::Env => {
                if let Args::KeyValues(kvs) = &ins.args {
                    l.env.extend(kvs.iter().map(|kv| kv.key.clone()));
                }
            }
            _ => {}
        }
    }
}

/// The checks that walk one stage's instructions in order.
fn stage_checks(
    index: usize,
    st: &Stage<'_>,
    model: &Model<'_>,
    opts: &LintOptions<'_>,
    lexer: &Lexer,
    out: &mut Vec<Finding>,
) {
    let mut l = lineage(index, model);
    let mut defined: Vec<String> = l.env.clone();
    let mut once: [Option<&Instruction>; 3] = [None, None, None];
    for ins in &st.body {
        secrets(ins, out);
        if l.from_scratch && ins.kind.expands_env() {
            undefined_vars(ins, lexer, &defined, opts, out);
        }
        match ins.kind {
            InstructionKind::Arg | InstructionKind::Env => {
                if let Args::KeyValues(kvs) = &ins.args {
                    defined.extend(kvs.iter().map(|kv| kv.key.clone()));
                    if kvs.iter().any(|kv| kv.legacy) {
                        legacy_key_value(out, ins);
                    }
                }
            }
            InstructionKind::Label => {
                if let Args::KeyValues(kvs) = &ins.args {
                    if kvs.iter().any(|kv| kv.legacy) {
                        legacy_key_value(out, ins);
                    }
                }
            }
            InstructionKind::Shell => l.shell_set = true,
            InstructionKind::Workdir => {
                let path = words(ins).join(" ");
                if !l.workdir_set && !path.starts_with('/') && !path.starts_with('$') {
                    push(
                        out,
                        "WorkdirRelativePath",
                        format!("Relative workdir {path:?} can have unexpected results if the base image changes"),
                        ins.span,
                    );
                }
                l.workdir_set = true;
            }
            InstructionKind::Cmd | InstructionKind::Entrypoint
                if matches!(ins.args, Args::Shell(_)) && !l.shell_set =>
            {
                push(
                    out,
                    "JSONArgsRecommended",
                    format!(
                        "JSON arguments recommended for {} to prevent unintended behavior related to OS signals",
                        ins.name_original
                    ),
                    ins.span,
                );
            }
            InstructionKind::Expose => expose(ins, out),
            InstructionKind::Copy | InstructionKind::Add => copy_ignored(ins, opts, out),
            _ => {}
        }
        let slot = match ins.kind {
            InstructionKind::Cmd => Some(0),
            InstructionKind::Entrypoint => Some(1),
            InstructionKind::Healthcheck => Some(2),
            _ => None,
        };
        if let Some(slot) = slot {
            if let Some(prev) = once[slot] {
                push(
                    out,
                    "MultipleInstructionsDisallowed",
                    format!(
                        "Multiple {} instructions should not be used in the same stage because only the last one will be used",
                        ins.name_original
                    ),
                    prev.span,
                );
            }
            once[slot] = Some(ins);
        }
    }
}

/// `UndefinedVar` for one expanding instruction.
fn undefined_vars(
    ins: &Instruction,
    lexer: &Lexer,
    defined: &[String],
    opts: &LintOptions<'_>,
    out: &mut Vec<Finding>,
) {
    let known =
        |name: &str| (defined.iter().any(|d| d == name) || name == "PATH").then(String::new);
    let mut texts: Vec<String> = match &ins.args {
        Args::KeyValues(kvs) => kvs.iter().filter_map(|kv| kv.value.clone()).collect(),
        _ => words(ins),
    };
    texts.extend(ins.flags.iter().filter_map(|f| f.value.clone()));
    let mut seen = BTreeSet::new();
    for t in &texts {
        for name in lookups(lexer, t, &known) {
            if NON_ENV_ARGS.contains(&name.as_str())
                || opts.build_args.contains(&name)
                || !seen.insert(name.clone())
            {
                continue;
            }
            let mut msg = format!("Usage of undefined variable '${name}'");
            let options = defined.iter().map(String::as_str).chain(["PATH"]);
            if let Some(s) = suggest(&name, options) {
                msg.push_str(&format!(" (did you mean ${s}?)"));
            }
            push(out, "UndefinedVar", msg, ins.span);
        }
    }
}

/// `ExposeProtoCasing` and `ExposeInvalidFormat`.
fn expose(ins: &Instruction, out: &mut Vec<Finding>) {
    for raw in words(ins) {
        if raw.contains('$') {
            continue;
        }
        let (ports, proto) = match raw.rsplit_once('/') {
            Some((p, proto)) => (p, proto),
            None => (raw.as_str(), ""),
        };
        if proto != proto.to_lowercase() {
            push(
                out,
                "ExposeProtoCasing",
                format!("Defined protocol '{raw}' in EXPOSE instruction should be lowercase"),
                ins.span,
            );
        }
        if ports.contains(':') {
            push(
                out,
                "ExposeInvalidFormat",
                format!("EXPOSE instruction should not define an IP address or host-port mapping, found '{raw}'"),
                ins.span,
            );
        }
    }
}

/// `CopyIgnoredFile`: a local source of COPY/ADD that `.dockerignore` excludes.
fn copy_ignored(ins: &Instruction, opts: &LintOptions<'_>, out: &mut Vec<Finding>) {
    let Some(ignored) = opts.dockerignored else {
        return;
    };
    if flag(ins, "from").is_some() || !ins.heredocs.is_empty() {
        return;
    }
    let w = words(ins);
    let Some((_, sources)) = w.split_last() else {
        return;
    };
    let cmd = if ins.kind == InstructionKind::Add {
        "Add"
    } else {
        "Copy"
    };
    for src in sources {
        if src.contains("://") || src.starts_with("git@") {
            continue;
        }
        let clean = clean_path(src);
        if clean == "." || clean == "/" {
            continue;
        }
        if ignored(&clean) {
            push(
                out,
                "CopyIgnoredFile",
                format!("Attempting to {cmd} file {clean:?} that is excluded by .dockerignore"),
                ins.span,
            );
        }
    }
}

/// Go's `filepath.Clean` for relative context paths (leading `/` and `./` removed).
fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::valid_reference;

    #[test]
    fn references() {
        for ok in [
            "busybox",
            "busybox:1.36",
            "127.0.0.1:5000/a/b:c",
            "a@sha256:ab",
        ] {
            assert!(valid_reference(ok), "{ok}");
        }
        for bad in ["", "busybox:", "Busybox", ":tag", "a//b", "a@"] {
            assert!(!valid_reference(bad), "{bad}");
        }
    }
}
