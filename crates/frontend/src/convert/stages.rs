//! Stage declarations and selection: global ARGs and FROM expansion, the `--target` stage,
//! and the stages and base images it needs (through FROM, `COPY --from` and `RUN --mount from=`).

use super::helpers::{expand, words_of};
use super::{ConvertError, ConvertOptions, NamedContext};
use crate::ast::{Dockerfile, Instruction, InstructionKind, Span};
use crate::expand::Lexer;
use crate::instructions::{self, Command, FromCmd, RunCmd};
use rbuild_oci::Platform;
use std::collections::{BTreeMap, BTreeSet};

/// The automatic platform ARGs of a build for `target` on `build`, and `TARGETSTAGE` (BuildKit's
/// `defaultArgs`),
/// each replaced by a `--build-arg` of its name as BuildKit does. They are global: FROM lines
/// see them, a stage only after `ARG NAME` without a value.
pub(super) fn platform_args(
    target: &Platform,
    build: &Platform,
    target_stage: &str,
    build_args: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let os_version = |p: &Platform| p.os_version.clone().unwrap_or_default();
    let variant = |p: &Platform| p.normalized().variant.unwrap_or_default();
    let (t, b) = (target.normalized(), build.normalized());
    [
        ("BUILDPLATFORM", b.to_string()),
        ("BUILDOS", b.os.clone()),
        ("BUILDOSVERSION", os_version(&b)),
        ("BUILDARCH", b.architecture.clone()),
        ("BUILDVARIANT", variant(&b)),
        ("TARGETPLATFORM", t.to_string()),
        ("TARGETOS", t.os.clone()),
        ("TARGETOSVERSION", os_version(&t)),
        ("TARGETARCH", t.architecture.clone()),
        ("TARGETVARIANT", variant(&t)),
        ("TARGETSTAGE", target_stage.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| {
        let v = build_args.get(k).cloned().unwrap_or(v);
        (k.to_string(), v)
    })
    .collect()
}

/// An image a build needs, the platform it is needed for and the instruction that names it
/// first.
pub(super) type ImageSite = (String, Platform, Span);

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
    /// The platform the stage builds for: its `FROM --platform`, its base stage's, else the
    /// build's target (`scratch` always the target, as BuildKit).
    pub(super) platform: Platform,
}

/// The global ARGs (with the platform ARGs first) and the declared stages.
pub(super) struct Parsed<'a> {
    /// The global ARGs, in order, with their values.
    pub(super) meta: Vec<(String, String)>,
    /// The stages, in order.
    pub(super) stages: Vec<StageDecl<'a>>,
    /// The build's target platform.
    pub(super) target: Platform,
}

/// Splits the Dockerfile into global ARGs and stages, expanding each FROM against the globals.
/// Every instruction's flags are checked here, in source order, in every stage (needed by the
/// target or not), as BuildKit parses all instructions before it selects stages.
pub(super) fn split_stages<'a>(
    df: &'a Dockerfile,
    opts: &ConvertOptions,
) -> Result<Parsed<'a>, ConvertError> {
    let lexer = Lexer::new(df.directives.escape);
    let target = opts.target_platform();
    // TARGETSTAGE: `--target`, else the last stage's name, else `default` (BuildKit).
    let last_stage = (df.instructions.iter())
        .rfind(|i| i.kind == InstructionKind::From)
        .and_then(|i| {
            let words = words_of(i);
            let n = words.len();
            (n >= 3 && words[n - 2].eq_ignore_ascii_case("as")).then(|| words[n - 1].to_lowercase())
        });
    let target_stage = (opts.target.clone().filter(|t| !t.is_empty()))
        .or(last_stage)
        .unwrap_or_else(|| "default".to_string());
    let mut meta = platform_args(
        &target,
        &opts.build_platform,
        &target_stage,
        &opts.build_args,
    );
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
                // BuildKit reads the flag of every stage, then a stage based on another takes
                // that one's platform and `scratch` the target's.
                let flag = from_platform(&lexer, from, &meta)?;
                let platform = if base == "scratch" {
                    target.clone()
                } else if let Some(i) = find_stage(&stages, &base, stages.len()) {
                    stages[i].platform.clone()
                } else {
                    flag.unwrap_or_else(|| target.clone())
                };
                stages.push(StageDecl {
                    name,
                    base,
                    from: inst,
                    body: Vec::new(),
                    platform,
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
                            let value = opts.build_args.get(&kv.key).cloned().or(default);
                            // BuildKit: a global `ARG NAME` without a value keeps an automatic
                            // platform ARG's value.
                            if value.is_none() && meta.iter().any(|(k, _)| *k == kv.key) {
                                continue;
                            }
                            meta.push((kv.key.clone(), value.unwrap_or_default()));
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
    Ok(Parsed {
        meta,
        stages,
        target,
    })
}

/// A stage's `FROM --platform=EXPR`, expanded with the global ARGs (the automatic platform ARGs
/// included) and parsed; BuildKit's messages at the flag when it is empty or no platform.
fn from_platform(
    lexer: &Lexer,
    from: &FromCmd,
    meta: &[(String, String)],
) -> Result<Option<Platform>, ConvertError> {
    let Some(raw) = from.platform else {
        return Ok(None);
    };
    let span = (from.inst.flags.iter())
        .find(|f| f.name.eq_ignore_ascii_case("platform"))
        .map_or(from.inst.span, |f| f.span);
    let value = expand(lexer, raw, meta, &span).map_err(|e| {
        ConvertError::at(
            &span,
            format!(
                "failed to process arguments for platform {raw}: {}",
                e.message
            ),
        )
    })?;
    if value.is_empty() {
        return Err(ConvertError::at(
            &span,
            format!("empty platform value from expression {raw}"),
        ));
    }
    value
        .parse::<Platform>()
        .map(Some)
        .map_err(|e| ConvertError::at(&span, format!("failed to parse platform {raw}: {e}")))
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
    let platform = stage.platform.clone();
    let mut deps = Vec::new();
    let mut images = Vec::new();
    if let Some(nc) = (stage.name.as_ref()).and_then(|n| opts.named_contexts.get(n)) {
        // The named context replaces the whole stage.
        images.extend(context_image(nc).map(|i| (i, platform, from_span)));
        return Ok((deps, images));
    }
    if stage.base != "scratch" {
        match find_stage(&parsed.stages, &stage.base, index) {
            Some(i) => deps.push(i),
            None => match opts.named_contexts.get(&stage.base) {
                Some(nc) => images.extend(context_image(nc).map(|i| (i, platform, from_span))),
                None => images.push((stage.base.clone(), platform, from_span)),
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
                    // An image in `--from` is an implicit stage for the target platform.
                    None => match opts.named_contexts.get(&from) {
                        Some(nc) => images.extend(
                            context_image(nc).map(|i| (i, parsed.target.clone(), inst.span)),
                        ),
                        None => images.push((from, parsed.target.clone(), inst.span)),
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
        for (img, platform, span) in imgs {
            if !images.iter().any(|(i, p, _)| *i == img && *p == platform) {
                images.push((img, platform, span));
            }
        }
    }
    Ok((target, needed, images))
}

/// The image references (as written, ARGs expanded) the build needs resolved before
/// [`convert`](fn@super::convert).
pub fn base_images(df: &Dockerfile, opts: &ConvertOptions) -> Result<Vec<String>, ConvertError> {
    let mut names: Vec<String> = Vec::new();
    for (name, _, _) in base_image_sites(df, opts)? {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

/// [`base_images`] with the platform each one is needed for (an image named for two platforms
/// is listed twice) and the instruction that first names it (its FROM, or the COPY/RUN whose
/// `--from` names it), for diagnostics that point at the Dockerfile.
pub fn base_image_sites(
    df: &Dockerfile,
    opts: &ConvertOptions,
) -> Result<Vec<(String, Platform, Span)>, ConvertError> {
    let parsed = split_stages(df, opts)?;
    let lexer = Lexer::new(df.directives.escape);
    Ok(needed_stages(&parsed, opts, &lexer)?.2)
}

/// [`base_image_sites`] of a build for every platform of `platforms` (the target platforms of
/// one multi-platform build; empty: `opts.platform` alone), each (image, platform) once.
pub fn base_image_sites_multi(
    df: &Dockerfile,
    opts: &ConvertOptions,
    platforms: &[Platform],
) -> Result<Vec<(String, Platform, Span)>, ConvertError> {
    let mut out: Vec<(String, Platform, Span)> = Vec::new();
    for opts in super::per_platform(opts, platforms) {
        for site in base_image_sites(df, &opts)? {
            if !out.iter().any(|(n, p, _)| *n == site.0 && *p == site.1) {
                out.push(site);
            }
        }
    }
    Ok(out)
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
