//! Conversion of a parsed Dockerfile into the llb graph and the image config of the target stage,
//! following BuildKit's dockerfile2llb: global ARGs and FROM expansion, stage selection (only the
//! stages the target needs), per-stage ENV/ARG/WORKDIR/USER/SHELL state, and config + history.
//!
//! Instructions arrive typed, their flags already checked ([`crate::instructions`]). This module
//! holds the public types, the [`Converter`] (which carries the graph, the declared and converted
//! stages, the bases and the current step) and the per-instruction dispatch; `stages` selects
//! stages, `state` owns the stage state (ENV/ARG/WORKDIR/USER/SHELL), `run` builds RUN vertices
//! and their mounts, `copy` COPY/ADD vertices, `config` the image-config instructions, `helpers`
//! the shared expansion and owner helpers, `multi` the conversion of every target platform into
//! one graph. A stage's vertices carry its platform when it is not the build platform.

mod config;
mod copy;
mod helpers;
mod multi;
#[cfg(test)]
mod platform_tests;
mod run;
mod stages;
mod state;
#[cfg(test)]
mod tests;

pub use multi::{convert_multi, PlatformPlan};
pub use stages::{base_image_sites, base_image_sites_multi, base_images, stage_names};

use crate::ast::{Dockerfile, Instruction, Span};
use crate::expand::Lexer;
use crate::instructions::{self, Command, InstructionError};
use copy::CopyRequest;
use rbuild_llb::{
    Definition, Entitlements, ExtraHost, NetworkMode, Op, SourceLocation, SourceOp, VertexIndex,
};
use rbuild_oci::{Digest, History, ImageConfig, Platform};
use stages::{find_stage, StageDecl};
use state::StageState;
use std::collections::{BTreeMap, HashMap};

/// Inputs of a conversion besides the Dockerfile.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target` stage.
    pub target: Option<String>,
    /// The Dockerfile's name for messages and the source map.
    pub dockerfile_name: String,
    /// Default network of RUN steps (`--network`; `RUN --network=default` means this one).
    pub network: NetworkMode,
    /// Entitlements granted on the command line (`--allow`): a `RUN --network=host` or
    /// `RUN --security=insecure` without its entitlement is a conversion error at the flag.
    pub entitlements: Entitlements,
    /// `--add-host` entries, given to every RUN (BuildKit's `Meta.ExtraHosts`).
    pub extra_hosts: Vec<ExtraHost>,
    /// `.dockerignore` patterns for the build context.
    pub context_excludes: Vec<String>,
    /// Creation time (RFC 3339) written into the config and history; None = no timestamps.
    pub created: Option<String>,
    /// Named contexts (`--build-context NAME=...`), by name: each replaces the stage of that
    /// name, or the image of that name in `FROM`, `COPY --from` and `RUN --mount from=`.
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// Stages solved without the cache (`--no-cache-filter`), by name or index.
    pub no_cache_stages: Vec<String>,
    /// The target platform (`--platform`); `None`: the build platform, and the image config
    /// keeps its base's platform (BuildKit's implicit target).
    pub platform: Option<Platform>,
    /// The platform the build runs on (`BUILDPLATFORM`); vertices for it carry no platform.
    pub build_platform: Platform,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            build_args: BTreeMap::new(),
            target: None,
            dockerfile_name: String::new(),
            network: NetworkMode::default(),
            entitlements: Entitlements::default(),
            extra_hosts: Vec::new(),
            context_excludes: Vec::new(),
            created: None,
            named_contexts: BTreeMap::new(),
            no_cache_stages: Vec::new(),
            platform: None,
            build_platform: Platform::host(),
        }
    }
}

impl ConvertOptions {
    /// The platform the build targets: `platform`, else the build platform.
    pub fn target_platform(&self) -> Platform {
        self.platform
            .clone()
            .unwrap_or_else(|| self.build_platform.clone())
            .normalized()
    }
}

/// The options of one conversion per target platform of `platforms` (empty: `opts` alone).
pub(crate) fn per_platform(opts: &ConvertOptions, platforms: &[Platform]) -> Vec<ConvertOptions> {
    if platforms.is_empty() {
        return vec![opts.clone()];
    }
    platforms
        .iter()
        .map(|p| ConvertOptions {
            platform: Some(p.normalized()),
            ..opts.clone()
        })
        .collect()
}

/// The resolved base images of a build, by (name as the Dockerfile gives it, platform).
pub type Bases = HashMap<(String, Platform), BaseImage>;

/// What a named context (`--build-context NAME=VALUE`) stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A local directory (`NAME=DIR`), with its own `.dockerignore` patterns.
    Local {
        /// The directory's `.dockerignore` patterns.
        excludes: Vec<String>,
    },
    /// An image (`NAME=docker-image://REF`): the reference to resolve instead of the name.
    Image(String),
}

/// The llb local source name of the named context `name` (the worker serves its directory).
pub fn named_source_name(name: &str) -> String {
    format!("context:{name}")
}

/// A base image the caller resolved: normalised reference, manifest digest and config.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// Normalised reference, e.g. `docker.io/library/busybox:latest`.
    pub reference: String,
    /// The manifest digest (of the platform it was resolved for).
    pub digest: Digest,
    /// Its config.
    pub config: ImageConfig,
}

/// The result of a conversion.
#[derive(Debug, Clone)]
pub struct BuildPlan {
    /// The graph.
    pub definition: Definition,
    /// The vertex whose result is the image's filesystem.
    pub target: VertexIndex,
    /// The image config (rootfs is filled in by the exporter).
    pub config: ImageConfig,
    /// The vertices of the `--no-cache-filter` stages (the solver also re-runs their dependents).
    pub no_cache: Vec<VertexIndex>,
    /// Every target platform's target vertex and config, in the order asked (one entry for a
    /// single-platform conversion; `target` and `config` above are the first's).
    pub platforms: Vec<PlatformPlan>,
}

/// A conversion error, pointing at the instruction that caused it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ConvertError {
    /// What is wrong.
    pub message: String,
    /// Where (None for errors about the whole file, e.g. an unknown --target).
    pub span: Option<Span>,
    /// What the user can do about it (printed after the source line), if anything.
    pub hint: Option<String>,
    /// True for errors in an instruction's own flags and arguments, which BuildKit reports as
    /// `dockerfile parse error on line N: ...` (unknown flag, bad HEALTHCHECK value, ...).
    pub parse_error: bool,
}

impl ConvertError {
    fn at(span: &Span, message: impl Into<String>) -> Self {
        ConvertError {
            message: message.into(),
            span: Some(*span),
            hint: None,
            parse_error: false,
        }
    }

    /// An error BuildKit reports as a parse error (`dockerfile parse error on line N: ...`):
    /// an instruction's arguments it rejects while parsing.
    fn parse_at(span: &Span, message: impl Into<String>) -> Self {
        ConvertError {
            parse_error: true,
            ..ConvertError::at(span, message)
        }
    }

    fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// BuildKit's message for it (after `ERROR: failed to solve: `): the message, prefixed
    /// `dockerfile parse error on line N: ` for an instruction's own flag or argument errors.
    pub fn buildkit_message(&self) -> String {
        match (&self.span, self.parse_error) {
            (Some(span), true) => format!(
                "dockerfile parse error on line {}: {}",
                span.start_line, self.message
            ),
            _ => self.message.clone(),
        }
    }

    /// `FILE:LINE:COL: message`, the source line and a caret (or just the message without a span).
    /// A hint, if any, follows on its own line (`hint: ...`).
    pub fn render(&self, file_name: &str, source: &str) -> String {
        let text = match &self.span {
            Some(span) => {
                let line_text = source
                    .lines()
                    .nth(span.start_line.saturating_sub(1))
                    .unwrap_or("");
                let caret = format!("{}^", " ".repeat(span.start_col.saturating_sub(1)));
                format!(
                    "{file_name}:{}:{}: {}\n{line_text}\n{caret}",
                    span.start_line, span.start_col, self.message
                )
            }
            None => format!("{file_name}: {}", self.message),
        };
        match &self.hint {
            Some(hint) => format!("{text}\nhint: {hint}"),
            None => text,
        }
    }
}

impl From<InstructionError> for ConvertError {
    fn from(e: InstructionError) -> Self {
        ConvertError {
            message: e.to_string(),
            span: Some(e.span()),
            hint: e.hint(),
            parse_error: true,
        }
    }
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The graph being built, with what every stage shares (options, lexer, the build context, the
/// declared stages, the stages converted so far and the resolved base images) and where the
/// conversion is (the current stage and step).
struct Converter<'a> {
    df: &'a Dockerfile,
    opts: &'a ConvertOptions,
    lexer: Lexer,
    def: Definition,
    context: Option<VertexIndex>,
    /// Every declared stage.
    decls: &'a [StageDecl<'a>],
    /// The global ARGs with their values.
    meta: &'a [(String, String)],
    /// The resolved base images.
    bases: &'a Bases,
    /// Whether step names carry the platform (a multi-platform build, as BuildKit's).
    multi: bool,
    /// The platform of the stage being converted, and the one its vertices carry (`None`
    /// when it is the build platform).
    platform: (Platform, Option<Platform>),
    /// The stages converted so far, by index.
    done: HashMap<usize, StageState>,
    /// The index of the stage being converted.
    index: usize,
    /// The current step and the stage's step count, for step names (`[name 2/5]`).
    step: (usize, usize),
}

impl<'a> Converter<'a> {
    fn location(&self, span: &Span) -> Option<SourceLocation> {
        Some(SourceLocation {
            file: self.opts.dockerfile_name.clone(),
            start_line: span.start_line,
            end_line: span.end_line,
        })
    }

    /// Adds a vertex of the current stage (for the stage's platform).
    fn add(
        &mut self,
        op: Op,
        inputs: Vec<VertexIndex>,
        name: String,
        source: Option<SourceLocation>,
    ) -> VertexIndex {
        let platform = self.platform.1.clone();
        self.def.add_for(op, inputs, name, source, platform)
    }

    /// The platform a vertex for `platform` carries: none for the build platform.
    fn vertex_platform(&self, platform: &Platform) -> Option<Platform> {
        (!platform.same_as(&self.opts.build_platform)).then(|| platform.normalized())
    }

    /// Sets the platform of the stage being converted.
    fn set_platform(&mut self, platform: &Platform) {
        self.platform = (platform.normalized(), self.vertex_platform(platform));
    }

    /// A step label with the stage's platform in front in a multi-platform build (`linux/arm64
    /// build 2/4`, `linux/amd64->arm64 build 3/4` when the stage declared the target's ARGs and
    /// builds for another architecture, as BuildKit's `prefixCommand`).
    fn platform_label(&self, label: String, vars: &[(String, String)]) -> String {
        if !self.multi || label.is_empty() {
            return label;
        }
        let arrow = multi::cross_arrow(&self.platform.0, vars);
        format!("{}{arrow} {label}", self.platform.0)
    }

    fn context(&mut self) -> VertexIndex {
        if let Some(c) = self.context {
            return c;
        }
        let c = self.def.add(
            Op::Source(SourceOp::Local {
                name: "context".into(),
                excludes: self.opts.context_excludes.clone(),
            }),
            vec![],
            "[internal] load build context".into(),
            None,
        );
        self.context = Some(c);
        c
    }

    fn history(&self, state: &mut StageState, created_by: String, empty_layer: bool) {
        state.config.history.push(History {
            created: self.opts.created.clone(),
            created_by: Some(created_by),
            author: None,
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer,
        });
    }

    fn image_state(&mut self, base: &BaseImage, stage_label: &str, span: &Span) -> StageState {
        let name = bracketed(
            &self.platform_label(stage_label.to_string(), &[]),
            &format!("FROM {}@{}", base.reference, base.digest),
        );
        let vertex = self.add(
            Op::Source(SourceOp::Image {
                reference: base.reference.clone(),
                digest: Some(base.digest.clone()),
            }),
            vec![],
            name,
            self.location(span),
        );
        let mut config = base.config.clone();
        config.created = None;
        config.rootfs = Default::default();
        if config.config.env.is_none() {
            config.config.env = Some(vec![DEFAULT_PATH.to_string()]);
        }
        StageState {
            vertex,
            config,
            args: Vec::new(),
            cmd_set: false,
            name: String::new(),
        }
    }

    fn scratch_state(&mut self) -> StageState {
        let vertex = self.def.add(
            Op::Source(SourceOp::Scratch),
            vec![],
            "scratch".into(),
            None,
        );
        let platform = self.platform.0.clone();
        let mut config = ImageConfig {
            architecture: platform.architecture,
            os: platform.os,
            variant: platform.variant,
            ..Default::default()
        };
        config.config.env = Some(vec![DEFAULT_PATH.to_string()]);
        config.config.working_dir = Some("/".to_string());
        StageState {
            vertex,
            config,
            args: Vec::new(),
            cmd_set: false,
            name: String::new(),
        }
    }

    /// The progress name of the next step, as BuildKit's: `[stage k/n] INSTRUCTION`, `[k/n]
    /// INSTRUCTION` in a single unnamed stage (only the base image and RUN/COPY/ADD/WORKDIR
    /// count), the instruction's text with the variables it sees expanded (quotes kept, unset
    /// variables left as written).
    fn step_name(&mut self, state: &StageState, inst: &Instruction) -> String {
        let vars = state.vars();
        let lookup = helpers::lookup(&vars);
        let lexer = self.lexer.with_raw_quotes(true).with_skip_unset_env(true);
        let text = inst.original.trim();
        let shown = lexer
            .process_word(text, &lookup)
            .unwrap_or_else(|_| text.to_string());
        self.step.0 += 1;
        let (step, total) = self.step;
        let label = self.platform_label(step_label(&state.name, step, total), &vars);
        format!("[{label}] {shown}")
    }

    /// Converts one instruction of a stage: a dispatch to the per-instruction functions.
    fn instruction(&mut self, state: &mut StageState, cmd: &Command) -> Result<(), ConvertError> {
        match cmd {
            Command::Run(c) => self.run(state, c),
            Command::Copy(c) => self.copy(state, &CopyRequest::from_copy(c)),
            Command::Add(c) => self.copy(state, &CopyRequest::from_add(c)),
            Command::Healthcheck(c) => self.healthcheck(state, c),
            Command::From(c) => Err(ConvertError::at(&c.inst.span, "unexpected FROM")),
            Command::Env(c) => self.env(state, c),
            Command::Arg(c) => self.arg(state, c),
            Command::Label(c) => self.label(state, c),
            Command::Maintainer(c) => self.maintainer(state, c),
            Command::Workdir(c) => self.workdir(state, c),
            Command::User(c) => self.user(state, c),
            Command::Cmd(c) => self.cmd_or_entrypoint(state, &c.cmd, true),
            Command::Entrypoint(c) => self.cmd_or_entrypoint(state, &c.cmd, false),
            Command::Expose(c) => self.expose(state, c),
            Command::Volume(c) => self.volume(state, c),
            Command::Stopsignal(c) => self.stopsignal(state, c),
            Command::Shell(c) => self.shell(state, c),
            Command::Onbuild(c) => self.onbuild(state, c),
        }
    }

    /// The stage converted so far whose index is `i` (an earlier stage), for `FROM stage`,
    /// `COPY --from` and `RUN --mount from=`.
    fn built_stage(&self, i: usize, name: &str, span: &Span) -> Result<&StageState, ConvertError> {
        self.done
            .get(&i)
            .ok_or_else(|| ConvertError::at(span, format!("stage {name} was not built")))
    }

    /// An image source vertex for a resolved base image named `name` (`COPY --from=image`,
    /// `RUN --mount from=image`).
    fn image_source(
        &mut self,
        state: &StageState,
        name: &str,
        span: &Span,
    ) -> Result<VertexIndex, ConvertError> {
        // An image in `--from` is an implicit stage for the target platform (BuildKit).
        let platform = self.opts.target_platform();
        let base = self
            .bases
            .get(&(name.to_string(), platform.clone()))
            .ok_or_else(|| ConvertError::at(span, format!("image {name} was not resolved")))?;
        let label = bracketed(
            &state.name,
            &format!("FROM {}@{}", base.reference, base.digest),
        );
        let op = Op::Source(SourceOp::Image {
            reference: base.reference.clone(),
            digest: Some(base.digest.clone()),
        });
        let location = self.location(span);
        let platform = self.vertex_platform(&platform);
        Ok(self.def.add_for(op, vec![], label, location, platform))
    }

    /// The vertex a `--from` / `from=` value names: an earlier stage, a named context or a
    /// resolved image.
    fn named_vertex(
        &mut self,
        state: &StageState,
        from: &str,
        span: &Span,
    ) -> Result<VertexIndex, ConvertError> {
        match find_stage(self.decls, from, self.index) {
            Some(i) => Ok(self.built_stage(i, from, span)?.vertex),
            None => match self.opts.named_contexts.get(from) {
                Some(nc) => {
                    let label = state.name.clone();
                    let stage = self.platform.clone();
                    self.set_platform(&self.opts.target_platform());
                    let vertex = self.named_context_state(from, nc, &label, span);
                    self.platform = stage;
                    Ok(vertex?.vertex)
                }
                None => self.image_source(state, from, span),
            },
        }
    }

    /// The state a named context starts: an image's (its config too) or a directory's (an
    /// empty config, as `scratch`).
    fn named_context_state(
        &mut self,
        name: &str,
        nc: &NamedContext,
        stage_label: &str,
        span: &Span,
    ) -> Result<StageState, ConvertError> {
        match nc {
            NamedContext::Image(reference) => {
                let key = (reference.clone(), self.platform.0.clone());
                let base = self.bases.get(&key).ok_or_else(|| {
                    ConvertError::at(span, format!("image {reference} was not resolved"))
                })?;
                Ok(self.image_state(base, stage_label, span))
            }
            NamedContext::Local { excludes } => {
                let mut state = self.scratch_state();
                state.vertex = self.def.add(
                    Op::Source(SourceOp::Local {
                        name: named_source_name(name),
                        excludes: excludes.clone(),
                    }),
                    vec![],
                    format!("[context {name}] load from client"),
                    None,
                );
                Ok(state)
            }
        }
    }

    /// How many of the ONBUILD triggers the stage's base runs make a step (RUN, COPY, ADD,
    /// WORKDIR), so that they count in the stage's `k/n`.
    fn trigger_steps(&self, decl: &StageDecl<'_>, index: usize) -> usize {
        let triggers = match find_stage(self.decls, &decl.base, index) {
            Some(i) => self.done.get(&i).map(|s| &s.config.config.on_build),
            None => self
                .bases
                .get(&(decl.base.clone(), decl.platform.clone()))
                .map(|b| &b.config.config.on_build),
        };
        triggers.and_then(Option::as_ref).map_or(0, |t| {
            t.iter()
                .filter(|t| {
                    let word = t.split_whitespace().next().unwrap_or_default();
                    ["RUN", "COPY", "ADD", "WORKDIR"]
                        .iter()
                        .any(|w| word.eq_ignore_ascii_case(w))
                })
                .count()
        })
    }

    /// The global ARGs (platform ARGs first), for `--from` values and stage ARG defaults.
    fn meta(&self) -> Vec<(String, String)> {
        self.meta.to_vec()
    }
}

/// A step's label as BuildKit prints it: `name k/n`, or `k/n` in an unnamed stage, `k` padded
/// to the width of `n` (`[ 2/12]`).
fn step_label(stage: &str, step: usize, total: usize) -> String {
    let width = total.to_string().len();
    if stage.is_empty() {
        format!("{step:>width$}/{total}")
    } else {
        format!("{stage} {step:>width$}/{total}")
    }
}

/// `[label] text`, or `text` alone when `label` is empty.
fn bracketed(label: &str, text: &str) -> String {
    if label.is_empty() {
        text.to_string()
    } else {
        format!("[{label}] {text}")
    }
}

/// Converts the Dockerfile into a build graph for the target stage, using `bases` (by name) for
/// every image that [`base_images`] listed; for a single target platform (`opts.platform`).
pub fn convert(
    df: &Dockerfile,
    opts: &ConvertOptions,
    bases: &HashMap<String, BaseImage>,
) -> Result<BuildPlan, ConvertError> {
    let by_platform: Bases = base_image_sites(df, opts)?
        .into_iter()
        .filter_map(|(name, platform, _)| {
            let base = bases.get(&name)?.clone();
            Some(((name, platform), base))
        })
        .collect();
    convert_multi(df, opts, &[], &by_platform)
}

impl Converter<'_> {
    /// Converts one stage: its base (scratch, an earlier stage or an image), the ONBUILD
    /// triggers of that base, then its own instructions.
    fn stage(&mut self, decl: &StageDecl<'_>) -> Result<StageState, ConvertError> {
        let index = self.index;
        // BuildKit names steps `[name k/n]` (`[stage-N k/n]` for an unnamed stage among
        // several, `[k/n]` in a single-stage Dockerfile) and counts the base image (not scratch
        // or an earlier stage) and the steps that make a vertex.
        let label = match &decl.name {
            Some(name) => name.clone(),
            None if self.decls.len() > 1 => format!("stage-{index}"),
            None => String::new(),
        };
        let own_base =
            decl.base != "scratch" && find_stage(self.decls, &decl.base, index).is_none();
        let total = usize::from(own_base)
            + decl
                .body
                .iter()
                .filter(|c| {
                    matches!(
                        c,
                        Command::Run(_) | Command::Copy(_) | Command::Add(_) | Command::Workdir(_)
                    )
                })
                .count()
            + self.trigger_steps(decl, index);
        // A named context of the stage's name replaces the whole stage (BuildKit).
        if let Some(nc) = decl
            .name
            .as_ref()
            .and_then(|n| self.opts.named_contexts.get(n))
        {
            let name = decl.name.clone().unwrap_or_default();
            let mut state =
                self.named_context_state(&name, nc, &step_label(&label, 1, 1), &decl.from.span)?;
            state.name = label;
            return Ok(state);
        }
        let mut state = if decl.base == "scratch" {
            self.scratch_state()
        } else if let Some(i) = find_stage(self.decls, &decl.base, index) {
            let mut s = self.built_stage(i, &decl.base, &decl.from.span)?.clone();
            s.args.clear();
            s.cmd_set = false;
            s
        } else if let Some(nc) = self.opts.named_contexts.get(&decl.base) {
            self.named_context_state(
                &decl.base,
                nc,
                &step_label(&label, 1, total),
                &decl.from.span,
            )?
        } else {
            let key = (decl.base.clone(), decl.platform.clone());
            let base = self.bases.get(&key).ok_or_else(|| {
                ConvertError::at(
                    &decl.from.span,
                    format!("image {} was not resolved", decl.base),
                )
            })?;
            self.image_state(base, &step_label(&label, 1, total), &decl.from.span)
        };
        state.name = label;
        // ONBUILD triggers of the base run first and are not inherited.
        let triggers = state.config.config.on_build.take().unwrap_or_default();
        let mut trigger_insts = Vec::new();
        for t in &triggers {
            let parsed_trigger = crate::parse(&format!("{t}\n")).map_err(|e| {
                ConvertError::at(
                    &decl.from.span,
                    format!("invalid ONBUILD trigger `{t}`: {}", e.message),
                )
            })?;
            for mut inst in parsed_trigger.instructions {
                // The trigger's text is not in this Dockerfile: every position is the FROM's.
                inst.span = decl.from.span;
                for flag in &mut inst.flags {
                    flag.span = decl.from.span;
                }
                trigger_insts.push((t, inst));
            }
        }
        self.step = (usize::from(own_base), total);
        for (t, inst) in &trigger_insts {
            let cmd = instructions::parse(inst).map_err(|e| {
                if !e.is_flag_error() {
                    return ConvertError::from(e);
                }
                let hint = e.hint();
                ConvertError {
                    message: format!("invalid ONBUILD trigger `{t}`: {e}"),
                    span: Some(decl.from.span),
                    hint,
                    parse_error: false,
                }
            })?;
            self.instruction(&mut state, &cmd)?;
        }
        for cmd in &decl.body {
            self.instruction(&mut state, cmd)?;
        }
        Ok(state)
    }
}
