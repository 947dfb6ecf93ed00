//! One build for several target platforms (`--platform linux/amd64,linux/arm64`): the
//! Dockerfile is converted once per platform into one shared graph, so a vertex that is the
//! same for two platforms (a `FROM --platform=$BUILDPLATFORM` stage that does not read the
//! target's ARGs) is one vertex and runs once; each platform gets its own target vertex and
//! image config (`convert_one`: one platform's stages into the shared graph). Also the `->arch`
//! mark of cross-compiling steps in BuildKit's step names.

use super::stages::{self, needed_stages, split_stages};
use super::{per_platform, Bases, BuildPlan, ConvertError, ConvertOptions, Converter};
use crate::ast::Dockerfile;
use crate::expand::Lexer;
use rbuild_llb::{Definition, Op, VertexIndex};
use rbuild_oci::{ImageConfig, Platform};
use std::collections::HashMap;

/// One target platform of a [`BuildPlan`].
#[derive(Debug, Clone)]
pub struct PlatformPlan {
    /// The target platform (normalised).
    pub platform: Platform,
    /// The vertex whose result is this platform's image filesystem.
    pub target: VertexIndex,
    /// This platform's image config (rootfs is filled in by the exporter).
    pub config: ImageConfig,
    /// This platform's `--no-cache-filter` vertices.
    pub no_cache: Vec<VertexIndex>,
}

/// Converts the Dockerfile for every platform of `platforms` (empty: `opts.platform` alone)
/// into one graph, each image that [`base_image_sites_multi`](super::base_image_sites_multi)
/// listed taken from `bases` by name and platform. Step names carry the platform when more
/// than one is asked for (BuildKit's `MultiPlatformRequested`).
pub fn convert_multi(
    df: &Dockerfile,
    opts: &ConvertOptions,
    platforms: &[Platform],
    bases: &Bases,
) -> Result<BuildPlan, ConvertError> {
    let multi = platforms.len() > 1;
    let mut def = Definition::new();
    let mut plans = Vec::new();
    for opts in per_platform(opts, platforms) {
        plans.push(convert_one(df, &opts, bases, &mut def, multi)?);
    }
    let first = plans.first().cloned().ok_or_else(|| ConvertError {
        message: "no target platform".into(),
        span: None,
        hint: None,
        parse_error: false,
    })?;
    let mut no_cache: Vec<VertexIndex> = plans.iter().flat_map(|p| p.no_cache.clone()).collect();
    no_cache.sort_unstable();
    no_cache.dedup();
    Ok(BuildPlan {
        definition: def,
        target: first.target,
        config: first.config,
        no_cache,
        platforms: plans,
    })
}

/// Converts the target stage for one platform into `def` (shared by every platform of a
/// build, so identical vertices are added once).
pub(super) fn convert_one(
    df: &Dockerfile,
    opts: &ConvertOptions,
    bases: &Bases,
    def: &mut Definition,
    multi: bool,
) -> Result<PlatformPlan, ConvertError> {
    let parsed = split_stages(df, opts)?;
    let lexer = Lexer::new(df.directives.escape);
    let (target, needed, _) = needed_stages(&parsed, opts, &lexer)?;
    let mut conv = Converter {
        df,
        opts,
        lexer,
        def: std::mem::take(def),
        context: None,
        decls: &parsed.stages,
        meta: &parsed.meta,
        bases,
        multi,
        platform: (parsed.target.clone(), None),
        done: HashMap::new(),
        index: 0,
        step: (0, 0),
    };
    let plan = conv.stages(&parsed, target, &needed);
    *def = conv.def;
    plan
}

impl Converter<'_> {
    /// Converts every needed stage in order and describes the target's result.
    fn stages(
        &mut self,
        parsed: &stages::Parsed<'_>,
        target: usize,
        needed: &std::collections::BTreeSet<usize>,
    ) -> Result<PlatformPlan, ConvertError> {
        let opts = self.opts;
        let mut no_cache = Vec::new();
        for (index, decl) in parsed.stages.iter().enumerate() {
            if needed.contains(&index) {
                self.index = index;
                self.set_platform(&decl.platform);
                let first = self.def.vertices.len();
                let state = self.stage(decl)?;
                if stages::filtered(decl, index, &opts.no_cache_stages) {
                    // Sources (scratch, a base image) may be shared with other stages, whose
                    // steps must keep their cache: only the stage's own steps are marked.
                    no_cache.extend(
                        (first..self.def.vertices.len())
                            .chain([state.vertex])
                            .filter(|&v| !matches!(self.def.vertices[v].op, Op::Source(_))),
                    );
                }
                self.done.insert(index, state);
            }
        }
        no_cache.sort_unstable();
        no_cache.dedup();
        let final_state = self.done.remove(&target).ok_or_else(|| ConvertError {
            message: "target stage was not converted".into(),
            span: None,
            hint: None,
            parse_error: false,
        })?;
        let mut config = final_state.config;
        config.created = opts.created.clone();
        let platform = parsed.target.clone();
        if opts.platform.is_some() {
            // An explicit target platform names the image's platform (BuildKit).
            let same = config.os == platform.os && config.architecture == platform.architecture;
            config.os = platform.os.clone();
            config.architecture = platform.architecture.clone();
            if platform.variant.is_some() || !same {
                config.variant = platform.variant.clone();
            }
        }
        if config.architecture.is_empty() {
            config.architecture = platform.architecture.clone();
        }
        if config.os.is_empty() {
            config.os = platform.os.clone();
        }
        Ok(PlatformPlan {
            platform,
            target: final_state.vertex,
            config,
            no_cache,
        })
    }
}

/// BuildKit's `formatTargetPlatform` over a stage's variables: `->arch[/variant]` (or
/// `->os/arch` for another OS) when the stage declared `TARGETPLATFORM` or one of `TARGETOS`,
/// `TARGETARCH`, `TARGETVARIANT` and they name another platform than the stage's own.
pub(super) fn cross_arrow(stage: &Platform, vars: &[(String, String)]) -> String {
    let get = |k: &str| vars.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v);
    let target = match get("TARGETPLATFORM").and_then(|v| v.parse::<Platform>().ok()) {
        Some(p) => p,
        None => {
            let (os, arch, variant) = (get("TARGETOS"), get("TARGETARCH"), get("TARGETVARIANT"));
            if os.is_none() && arch.is_none() && variant.is_none() {
                return String::new();
            }
            let or = |v: Option<&String>, d: &str| {
                v.filter(|v| !v.is_empty())
                    .map_or_else(|| d.to_string(), String::clone)
            };
            Platform::new(
                &or(os, &stage.os),
                &or(arch, &stage.architecture),
                variant.map(String::as_str).filter(|v| !v.is_empty()),
            )
        }
    };
    let (base, target) = (stage.normalized(), target.normalized());
    if target.os != base.os {
        format!("->{target}")
    } else if target.architecture != base.architecture {
        match &target.variant {
            Some(v) => format!("->{}/{v}", target.architecture),
            None => format!("->{}", target.architecture),
        }
    } else {
        String::new()
    }
}
