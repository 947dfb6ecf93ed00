//! Conversion of a parsed Dockerfile into the llb graph and the image config of the target stage,
//! following BuildKit's dockerfile2llb: global ARGs and FROM expansion, stage selection (only the
//! stages the target needs), per-stage ENV/ARG/WORKDIR/USER/SHELL state, and config + history.
//!
//! This module holds the public types, the [`Converter`] driver and the per-instruction dispatch;
//! `stages` selects stages, `state` owns the stage state (ENV/ARG/WORKDIR/USER/SHELL), `run` and
//! `copy` build RUN and COPY/ADD vertices, `config` the metadata instructions, `helpers` the
//! shared expansion and flag helpers.

mod config;
mod copy;
mod helpers;
mod run;
mod stages;
mod state;
#[cfg(test)]
mod tests;

pub use stages::{base_images, stage_names};

use crate::ast::{Dockerfile, Instruction, InstructionKind, Span};
use crate::expand::Lexer;
use rbuild_llb::{
    Definition, Entitlements, ExtraHost, NetworkMode, Op, SourceLocation, SourceOp, VertexIndex,
};
use rbuild_oci::{Digest, History, ImageConfig};
use stages::{find_stage, needed_stages, split_meta, split_stages, StageDecl};
use state::StageState;
use std::collections::{BTreeMap, HashMap};

/// Inputs of a conversion besides the Dockerfile.
#[derive(Debug, Clone, Default)]
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
}

/// A base image the caller resolved: normalised reference, manifest digest and config.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// Normalised reference, e.g. `docker.io/library/busybox:latest`.
    pub reference: String,
    /// The linux/amd64 manifest digest.
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
}

impl ConvertError {
    fn at(span: &Span, message: impl Into<String>) -> Self {
        ConvertError {
            message: message.into(),
            span: Some(*span),
            hint: None,
        }
    }

    fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
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

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a stage's instructions may refer to besides its own state: the stages converted so far,
/// every declared stage, the index of the current one, and the resolved base images.
#[derive(Clone, Copy)]
struct StageCtx<'r> {
    stages: &'r HashMap<usize, StageState>,
    decls: &'r [StageDecl<'r>],
    index: usize,
    bases: &'r HashMap<String, BaseImage>,
}

/// The graph being built, with what every stage shares (options, lexer, the build context).
struct Converter<'a> {
    df: &'a Dockerfile,
    opts: &'a ConvertOptions,
    lexer: Lexer,
    def: Definition,
    context: Option<VertexIndex>,
}

impl<'a> Converter<'a> {
    fn location(&self, span: &Span) -> Option<SourceLocation> {
        Some(SourceLocation {
            file: self.opts.dockerfile_name.clone(),
            start_line: span.start_line,
            end_line: span.end_line,
        })
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
        let name = format!("[{stage_label}] FROM {}@{}", base.reference, base.digest);
        let vertex = self.def.add(
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
        let mut config = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
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

    fn step_name(
        &self,
        state: &StageState,
        step: usize,
        total: usize,
        inst: &Instruction,
    ) -> String {
        format!(
            "[{} {}/{}] {}",
            state.name,
            step,
            total,
            inst.original.trim()
        )
    }

    /// Converts one instruction of a stage: a dispatch to the per-instruction functions.
    fn instruction(
        &mut self,
        state: &mut StageState,
        inst: &Instruction,
        step: usize,
        total: usize,
        refs: StageCtx<'_>,
    ) -> Result<(), ConvertError> {
        match inst.kind {
            InstructionKind::Env => self.env(state, inst),
            InstructionKind::Arg => self.arg(state, inst),
            InstructionKind::Label => self.label(state, inst),
            InstructionKind::Maintainer => self.maintainer(state, inst),
            InstructionKind::Workdir => self.workdir(state, inst, step, total),
            InstructionKind::User => self.user(state, inst),
            InstructionKind::Run => self.run(state, inst, step, total, refs),
            InstructionKind::Copy | InstructionKind::Add => {
                self.copy(state, inst, step, total, refs)
            }
            InstructionKind::Cmd | InstructionKind::Entrypoint => {
                self.cmd_or_entrypoint(state, inst)
            }
            InstructionKind::Expose => self.expose(state, inst),
            InstructionKind::Volume => self.volume(state, inst),
            InstructionKind::Stopsignal => self.stopsignal(state, inst),
            InstructionKind::Shell => self.shell(state, inst),
            InstructionKind::Healthcheck => self.healthcheck(state, inst),
            InstructionKind::Onbuild => self.onbuild(state, inst),
            InstructionKind::From => Err(ConvertError::at(&inst.span, "unexpected FROM")),
        }
    }

    fn meta(&self) -> Vec<(String, String)> {
        split_meta(self.df, self.opts)
    }
}

/// Converts the Dockerfile into a build graph for the target stage, using `bases` for every
/// image that [`base_images`] listed.
pub fn convert(
    df: &Dockerfile,
    opts: &ConvertOptions,
    bases: &HashMap<String, BaseImage>,
) -> Result<BuildPlan, ConvertError> {
    let parsed = split_stages(df, opts)?;
    let lexer = Lexer::new(df.directives.escape);
    let (target, needed, _) = needed_stages(&parsed, opts, &lexer)?;
    let mut conv = Converter {
        df,
        opts,
        lexer: Lexer::new(df.directives.escape),
        def: Definition::new(),
        context: None,
    };
    let mut done: HashMap<usize, StageState> = HashMap::new();
    for (index, decl) in parsed.stages.iter().enumerate() {
        if !needed.contains(&index) {
            continue;
        }
        let label = decl
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{index}"));
        let total = decl.body.len() + 1;
        let mut state = if decl.base == "scratch" {
            conv.scratch_state()
        } else if let Some(i) = find_stage(&parsed.stages, &decl.base, index) {
            let mut s = done.get(&i).cloned().ok_or_else(|| {
                ConvertError::at(
                    &decl.from.span,
                    format!("stage {} was not built", decl.base),
                )
            })?;
            s.args.clear();
            s.cmd_set = false;
            s
        } else {
            let base = bases.get(&decl.base).ok_or_else(|| {
                ConvertError::at(
                    &decl.from.span,
                    format!("image {} was not resolved", decl.base),
                )
            })?;
            conv.image_state(base, &format!("{label} 1/{total}"), &decl.from.span)
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
                inst.span = decl.from.span;
                trigger_insts.push(inst);
            }
        }
        let refs = StageCtx {
            stages: &done,
            decls: &parsed.stages,
            index,
            bases,
        };
        for inst in &trigger_insts {
            conv.instruction(&mut state, inst, 1, total, refs)?;
        }
        for (step, inst) in decl.body.iter().enumerate() {
            conv.instruction(&mut state, inst, step + 2, total, refs)?;
        }
        done.insert(index, state);
    }
    let final_state = done.remove(&target).ok_or_else(|| ConvertError {
        message: "target stage was not converted".into(),
        span: None,
        hint: None,
    })?;
    let mut config = final_state.config;
    config.created = opts.created.clone();
    if config.architecture.is_empty() {
        config.architecture = "amd64".into();
    }
    if config.os.is_empty() {
        config.os = "linux".into();
    }
    Ok(BuildPlan {
        definition: conv.def,
        target: final_state.vertex,
        config,
    })
}
