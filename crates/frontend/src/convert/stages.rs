//! Stage declarations and selection: global ARGs and FROM expansion, the `--target` stage,
//! and the stages and base images it needs (through FROM, `COPY --from` and `RUN --mount from=`).

use super::helpers::{expand, words_of};
use super::{ConvertError, ConvertOptions, NamedContext};
use crate::ast::{Dockerfile, Instruction, InstructionKind, Span};
use crate::expand::Lexer;
use crate::instructions::{self, Command, RunCmd};
use std::collections::BTreeSet;

/// The predefined platform ARGs (rbuild builds linux/amd64 only).
fn platform_args() -> Vec<(String, String)> {
    [
        ("TARGETPLATFORM", "linux/amd64"),
        ("TARGETOS", "linux"),
        ("TARGETARCH", "amd64"),
        ("TARGETVARIANT", ""),
        ("BUILDPLATFORM", "linux/amd64"),
        ("BUILDOS", "linux"),
        ("BUILDARCH", "amd64"),
        ("BUILDVARIANT", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// An image a build needs and the instruction that names it first.
type ImageSite = (String, Span);

/// One stage as declared.
pub(super) struct StageDecl<'a> {
    /// The `AS` name, lower-cased.
    pub(super) name: Option<String>,
    /// The base (image reference or stage), global ARGs expanded.
    pub(super) base: String,
    /// The FROM instruction.
    pub(super) from: &'a Instruction,
    /// The instructions after FROM, with their flags checked.
    pub(super) body: Vec<Command<'a>>,
}

/// The global ARGs (with the platform ARGs first) and the declared stages.
pub(super) struct Parsed<'a> {
    /// The global ARGs, in order, with their values.
    pub(super) meta: Vec<(String, String)>,
    /// The stages, in order.
    pub(super) stages: Vec<StageDecl<'a>>,
}

/// Splits the Dockerfile into global ARGs and stages, expanding each FROM against the globals.
/// Every instruction's flags are checked here, in source order, in every stage (needed by the
/// target or not), as BuildKit parses all instructions before it selects stages.
pub(super) fn split_stages<'a>(
    df: &'a Dockerfile,
    opts: &ConvertOptions,
) -> Result<Parsed<'a>, ConvertError> {
    let lexer = Lexer::new(df.directives.escape);
    let mut meta: Vec<(String, String)> = platform_args();
    let mut stages: Vec<StageDecl> = Vec::new();
    for inst in &df.instructions {
        let cmd = instructions::parse(inst)?;
        match inst.kind {
            InstructionKind::From => {
                let Command::From(from) = &cmd else {
                    return Err(ConvertError::at(&inst.span, "unexpected untyped FROM"));
                };
                let raw_base = &from.base;
                let base = expand(&lexer, raw_base, &meta, &inst.span)?;
                if base.is_empty() {
                    return Err(ConvertError::at(
                        &inst.span,
                        format!("base name ({raw_base}) should not be blank"),
                    ));
                }
                let name = from.stage_name.clone();
                if let Some(n) = &name {
                    if stages.iter().any(|s| s.name.as_deref() == Some(n.as_str())) {
                        return Err(ConvertError::at(
                            &inst.span,
                            format!("duplicate stage name \"{n}\""),
                        ));
                    }
                }
                stages.push(StageDecl {
                    name,
                    base,
                    from: inst,
                    body: Vec::new(),
                });
            }
            _ => match stages.last_mut() {
                Some(stage) => stage.body.push(cmd),
                None if inst.kind == InstructionKind::Arg => {
                    if let Command::Arg(arg) = &cmd {
                        for kv in arg.args {
                            let default = match &kv.value {
                                Some(v) => Some(expand(&lexer, v, &meta, &inst.span)?),
                                None => None,
                            };
                            let value = opts
                                .build_args
                                .get(&kv.key)
                                .cloned()
                                .or(default)
                                .unwrap_or_default();
                            meta.push((kv.key.clone(), value));
                        }
                    }
                }
                None => {
                    return Err(ConvertError::at(
                        &inst.span,
                        format!(
                            "no build stage in current context: {} must come after FROM",
                            inst.name_original.to_uppercase()
                        ),
                    ))
                }
            },
        }
    }
    if stages.is_empty() {
        return Err(ConvertError {
            message: "the Dockerfile has no FROM instruction".into(),
            span: None,
            hint: None,
            parse_error: false,
        });
    }
    Ok(Parsed { meta, stages })
}

/// The index of the stage `name` (an `AS` name or a number) declared before `before`.
pub(super) fn find_stage(stages: &[StageDecl], name: &str, before: usize) -> Option<usize> {
    let lower = name.to_lowercase();
    if let Some(i) = stages[..before]
        .iter()
        .position(|s| s.name.as_deref() == Some(lower.as_str()))
    {
        return Some(i);
    }
    name.parse::<usize>().ok().filter(|&i| i < before)
}

/// The index of the `--target` stage, or of the last stage.
fn target_index(parsed: &Parsed, opts: &ConvertOptions) -> Result<usize, ConvertError> {
    match &opts.target {
        None => Ok(parsed.stages.len() - 1),
        Some(t) => {
            let lower = t.to_lowercase();
            parsed
                .stages
                .iter()
                .position(|s| s.name.as_deref() == Some(lower.as_str()))
                .ok_or_else(|| {
                    let names: Vec<String> = parsed
                        .stages
                        .iter()
                        .filter_map(|s| s.name.clone())
                        .collect();
                    ConvertError {
                        message: format!(
                            "target stage \"{t}\" could not be found (stages: {})",
                            if names.is_empty() {
                                "none named".to_string()
                            } else {
                                names.join(", ")
                            }
                        ),
                        span: None,
                        hint: None,
                        parse_error: false,
                    }
                })
        }
    }
}

/// What a stage refers to: other stages it needs and images it uses.
pub(super) fn stage_refs(
    parsed: &Parsed,
    index: usize,
    lexer: &Lexer,
    opts: &ConvertOptions,
) -> Result<(Vec<usize>, Vec<ImageSite>), ConvertError> {
    let stage = &parsed.stages[index];
    let from_span = stage.from.span;
    let mut deps = Vec::new();
    let mut images = Vec::new();
    if let Some(nc) = (stage.name.as_ref()).and_then(|n| opts.named_contexts.get(n)) {
        // The named context replaces the whole stage.
        images.extend(context_image(nc).map(|i| (i, from_span)));
        return Ok((deps, images));
    }
    if stage.base != "scratch" {
        match find_stage(&parsed.stages, &stage.base, index) {
            Some(i) => deps.push(i),
            None => match opts.named_contexts.get(&stage.base) {
                Some(nc) => images.extend(context_image(nc).map(|i| (i, from_span))),
                None => images.push((stage.base.clone(), from_span)),
            },
        }
    }
    for cmd in &stage.body {
        let inst = cmd.inst();
        let froms: Vec<String> = match cmd {
            Command::Copy(copy) => copy
                .from
                .map(|f| f.value.clone().unwrap_or_default())
                .into_iter()
                .collect(),
            Command::Run(run) => run_mount_froms(run),
            _ => Vec::new(),
        };
        for from in &froms {
            {
                let from = expand(lexer, from, &parsed.meta, &inst.span)?;
                match find_stage(&parsed.stages, &from, index) {
                    Some(i) => deps.push(i),
                    None if parsed
                        .stages
                        .iter()
                        .any(|s| s.name.as_deref() == Some(from.to_lowercase().as_str())) =>
                    {
                        return Err(ConvertError::at(
                            &inst.span,
                            format!("stage \"{from}\" is used before it is defined"),
                        ));
                    }
                    None => match opts.named_contexts.get(&from) {
                        Some(nc) => images.extend(context_image(nc).map(|i| (i, inst.span))),
                        None => images.push((from, inst.span)),
                    },
                }
            }
        }
    }
    Ok((deps, images))
}

/// The image a named context needs resolved, if it is one.
fn context_image(nc: &NamedContext) -> Option<String> {
    match nc {
        NamedContext::Image(reference) => Some(reference.clone()),
        NamedContext::Local { .. } => None,
    }
}

/// Whether the stage `decl` (number `index`) is named by `--no-cache-filter`.
pub(super) fn filtered(decl: &StageDecl, index: usize, filter: &[String]) -> bool {
    filter
        .iter()
        .any(|f| decl.name.as_deref() == Some(f.to_lowercase().as_str()) || *f == index.to_string())
}

/// The `from=` values (not yet expanded) of a RUN's `--mount` flags.
fn run_mount_froms(run: &RunCmd) -> Vec<String> {
    run.mounts.iter().filter_map(|m| m.from.clone()).collect()
}

/// Refuses variables in `COPY --from` and `RUN --mount from=` in every stage (needed or not), as
/// BuildKit does: the way to parametrise a source stage is an ARG in a `FROM ${VAR} AS src` stage.
fn check_from_flags(parsed: &Parsed, lexer: &Lexer) -> Result<(), ConvertError> {
    for cmd in parsed.stages.iter().flat_map(|s| s.body.iter()) {
        if let Command::Copy(copy) = cmd {
            if let Some(f) = copy.from {
                let raw = f.value.as_deref().unwrap_or("");
                // BuildKit expands the word with no variables at all: any change means it held
                // an expansion.
                if expand(lexer, raw, &[], &f.span)? != raw {
                    return Err(ConvertError::at(
                        &f.span,
                        "variable expansion is not supported for --from, define a new stage with \
                         FROM using ARG from global scope as a workaround",
                    ));
                }
            }
        }
        if let Command::Run(run) = cmd {
            for m in &run.mounts {
                // BuildKit's parse-time rule: a `$` anywhere but at the very end.
                if (m.from.as_deref())
                    .is_some_and(|v| v.find('$').is_some_and(|i| i + 1 != v.len()))
                {
                    return Err(ConvertError::at(
                        &m.flag.span,
                        "'from' doesn't support variable expansion, define alias stage instead",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The target stage, every stage it needs, and the images those stages use.
pub(super) fn needed_stages(
    parsed: &Parsed,
    opts: &ConvertOptions,
    lexer: &Lexer,
) -> Result<(usize, BTreeSet<usize>, Vec<ImageSite>), ConvertError> {
    check_from_flags(parsed, lexer)?;
    let target = target_index(parsed, opts)?;
    let mut needed = BTreeSet::new();
    let mut images = Vec::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if !needed.insert(i) {
            continue;
        }
        let (deps, imgs) = stage_refs(parsed, i, lexer, opts)?;
        todo.extend(deps);
        for (img, span) in imgs {
            if !images.iter().any(|(i, _)| *i == img) {
                images.push((img, span));
            }
        }
    }
    Ok((target, needed, images))
}

/// The image references (as written, ARGs expanded) the build needs resolved before
/// [`convert`](fn@super::convert).
pub fn base_images(df: &Dockerfile, opts: &ConvertOptions) -> Result<Vec<String>, ConvertError> {
    Ok(base_image_sites(df, opts)?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

/// [`base_images`] with the instruction that first names each one (its FROM, or the COPY/RUN
/// whose `--from` names it), for diagnostics that point at the Dockerfile.
pub fn base_image_sites(
    df: &Dockerfile,
    opts: &ConvertOptions,
) -> Result<Vec<(String, Span)>, ConvertError> {
    let parsed = split_stages(df, opts)?;
    let lexer = Lexer::new(df.directives.escape);
    Ok(needed_stages(&parsed, opts, &lexer)?.2)
}

/// The names of the stages (`AS name`), in order, for messages such as an unknown `--from`.
pub fn stage_names(df: &Dockerfile) -> Vec<String> {
    df.instructions
        .iter()
        .filter(|i| i.kind == InstructionKind::From)
        .filter_map(|i| {
            let words = words_of(i);
            (words.len() == 3 && words[1].eq_ignore_ascii_case("as"))
                .then(|| words[2].to_lowercase())
        })
        .collect()
}
