//! Conversion of a parsed Dockerfile into the llb graph and the image config of the target stage,
//! following BuildKit's dockerfile2llb: global ARGs and FROM expansion, stage selection (only the
//! stages the target needs), per-stage ENV/ARG/WORKDIR/USER/SHELL state, and config + history.

use crate::ast::{Args, Dockerfile, Instruction, InstructionKind, Span};
use crate::expand::Lexer;
use rbuild_llb::{
    CacheMountOpt, ChownOpt, CopyAction, Definition, Entitlement, Entitlements, ExecMount, ExecOp,
    ExtraHost, FileAction, FileOp, MkdirAction, MountType, NetworkMode, Op, SecretMountOpt,
    SecurityMode, SourceLocation, SourceOp, UserOpt, VertexIndex,
};
use rbuild_oci::{Digest, HealthConfig, History, ImageConfig};
use std::collections::{BTreeMap, BTreeSet, HashMap};

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
const PROXY_ARGS: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
];

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

/// One stage as declared.
struct StageDecl<'a> {
    name: Option<String>,
    base: String,
    from: &'a Instruction,
    body: Vec<&'a Instruction>,
}

struct Parsed<'a> {
    meta: Vec<(String, String)>,
    stages: Vec<StageDecl<'a>>,
}

fn lookup<'a>(vars: &'a [(String, String)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name: &str| {
        vars.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

fn expand(
    lexer: &Lexer,
    word: &str,
    vars: &[(String, String)],
    span: &Span,
) -> Result<String, ConvertError> {
    let f = lookup(vars);
    lexer
        .process_word(word, &f)
        .map_err(|e| ConvertError::at(span, e.to_string()))
}

fn words_of(inst: &Instruction) -> Vec<String> {
    args_words(&inst.args)
}

fn args_words(args: &Args) -> Vec<String> {
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

fn flag<'a>(inst: &'a Instruction, name: &str) -> Option<&'a str> {
    last_flag(inst, name).map(|f| f.value.as_deref().unwrap_or(""))
}

/// The last `--name` flag of an instruction (the one that counts), with its span.
fn last_flag<'a>(inst: &'a Instruction, name: &str) -> Option<&'a crate::ast::Flag> {
    inst.flags.iter().rev().find(|f| f.name == name)
}

/// The error for a RUN flag that needs an entitlement the build was not granted, at the flag,
/// with BuildKit's text and a hint naming the `--allow` that grants it.
fn not_entitled(span: &Span, entitlement: Entitlement, flag: &str) -> ConvertError {
    ConvertError::at(span, format!("{entitlement} is not allowed")).with_hint(format!(
        "`RUN {flag}` needs the {entitlement} entitlement: pass `--allow {entitlement}` to \
         `rbuild build` if you trust this Dockerfile"
    ))
}

/// Every value of a repeatable flag, in order.
fn flags_all<'a>(inst: &'a Instruction, name: &str) -> Vec<&'a str> {
    inst.flags
        .iter()
        .filter(|f| f.name == name)
        .map(|f| f.value.as_deref().unwrap_or(""))
        .collect()
}

/// A boolean flag: absent = false, `--x` or `--x=true` = true, `--x=false` = false.
fn bool_flag(inst: &Instruction, name: &str) -> Result<bool, String> {
    match flag(inst, name) {
        None => Ok(false),
        Some("") | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(format!(
            "invalid value for --{name}: {v} (expected true or false)"
        )),
    }
}

/// True for a chmod(1)-style symbolic mode: `[ugoa]*([-+=]([rwxXst]*|[ugo]))+`, comma-separated.
fn valid_symbolic_mode(s: &str) -> bool {
    s.split(',').all(|clause| {
        let rest = clause.trim_start_matches(['u', 'g', 'o', 'a']);
        if rest.is_empty() {
            return false;
        }
        let b = rest.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if !matches!(b[i], b'+' | b'-' | b'=') {
                return false;
            }
            i += 1;
            if i < b.len() && matches!(b[i], b'u' | b'g' | b'o') {
                i += 1;
                continue;
            }
            while i < b.len() && matches!(b[i], b'r' | b'w' | b'x' | b'X' | b's' | b't') {
                i += 1;
            }
        }
        true
    })
}

/// The file name BuildKit gives a URL's download: the base name of its path, or `__unnamed__`.
fn url_filename(url: &str) -> String {
    let after_scheme = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let path = match after_scheme.find('/') {
        Some(i) => &after_scheme[i..],
        None => "",
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    match path.split('/').rfind(|s| !s.is_empty()) {
        Some(base) if base != "." => base.to_string(),
        _ => "__unnamed__".to_string(),
    }
}

fn split_stages<'a>(df: &'a Dockerfile, opts: &ConvertOptions) -> Result<Parsed<'a>, ConvertError> {
    let lexer = Lexer::new(df.directives.escape);
    let mut meta: Vec<(String, String)> = platform_args();
    let mut stages: Vec<StageDecl> = Vec::new();
    for inst in &df.instructions {
        match inst.kind {
            InstructionKind::From => {
                let words = words_of(inst);
                let Some(raw_base) = words.first() else {
                    return Err(ConvertError::at(
                        &inst.span,
                        "FROM requires the name of a base image",
                    ));
                };
                let base = expand(&lexer, raw_base, &meta, &inst.span)?;
                if base.is_empty() {
                    return Err(ConvertError::at(
                        &inst.span,
                        format!("base name ({raw_base}) should not be blank"),
                    ));
                }
                let name =
                    match words.len() {
                        1 => None,
                        3 if words[1].eq_ignore_ascii_case("as") => Some(words[2].to_lowercase()),
                        _ => return Err(ConvertError::at(
                            &inst.span,
                            "FROM requires either one or three arguments (FROM image [AS name])",
                        )),
                    };
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
                Some(stage) => stage.body.push(inst),
                None if inst.kind == InstructionKind::Arg => {
                    if let Args::KeyValues(kvs) = &inst.args {
                        for kv in kvs {
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
        });
    }
    Ok(Parsed { meta, stages })
}

fn find_stage(stages: &[StageDecl], name: &str, before: usize) -> Option<usize> {
    let lower = name.to_lowercase();
    if let Some(i) = stages[..before]
        .iter()
        .position(|s| s.name.as_deref() == Some(lower.as_str()))
    {
        return Some(i);
    }
    name.parse::<usize>().ok().filter(|&i| i < before)
}

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
                    }
                })
        }
    }
}

/// What a stage refers to: other stages it needs and images it uses.
fn stage_refs(
    parsed: &Parsed,
    index: usize,
    lexer: &Lexer,
) -> Result<(Vec<usize>, Vec<String>), ConvertError> {
    let stage = &parsed.stages[index];
    let mut deps = Vec::new();
    let mut images = Vec::new();
    if stage.base != "scratch" {
        match find_stage(&parsed.stages, &stage.base, index) {
            Some(i) => deps.push(i),
            None => images.push(stage.base.clone()),
        }
    }
    for inst in &stage.body {
        let mut froms: Vec<String> = Vec::new();
        if matches!(inst.kind, InstructionKind::Copy | InstructionKind::Add) {
            if let Some(from) = flag(inst, "from") {
                froms.push(from.to_string());
            }
        }
        if inst.kind == InstructionKind::Run {
            froms.extend(run_mount_froms(inst));
        }
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
                    None => images.push(from),
                }
            }
        }
    }
    Ok((deps, images))
}

/// The `from=` values (not yet expanded) of a RUN's `--mount` flags.
fn run_mount_froms(inst: &Instruction) -> Vec<String> {
    inst.flags
        .iter()
        .filter(|f| f.name == "mount")
        .filter_map(|f| {
            let mut ex = |w: &str| -> Result<String, String> { Ok(w.to_string()) };
            crate::mounts::parse_mount(f.value.as_deref().unwrap_or(""), &mut ex)
                .ok()?
                .from
        })
        .collect()
}

fn needed_stages(
    parsed: &Parsed,
    opts: &ConvertOptions,
    lexer: &Lexer,
) -> Result<(usize, BTreeSet<usize>, Vec<String>), ConvertError> {
    let target = target_index(parsed, opts)?;
    let mut needed = BTreeSet::new();
    let mut images = Vec::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if !needed.insert(i) {
            continue;
        }
        let (deps, imgs) = stage_refs(parsed, i, lexer)?;
        todo.extend(deps);
        for img in imgs {
            if !images.contains(&img) {
                images.push(img);
            }
        }
    }
    Ok((target, needed, images))
}

/// The image references (as written, ARGs expanded) the build needs resolved before [`convert`].
pub fn base_images(df: &Dockerfile, opts: &ConvertOptions) -> Result<Vec<String>, ConvertError> {
    let parsed = split_stages(df, opts)?;
    let lexer = Lexer::new(df.directives.escape);
    Ok(needed_stages(&parsed, opts, &lexer)?.2)
}

/// The state of a stage while its instructions are converted.
#[derive(Clone)]
struct StageState {
    vertex: VertexIndex,
    config: ImageConfig,
    /// ARGs declared in this stage, in order, with their values.
    args: Vec<(String, String)>,
    cmd_set: bool,
    name: String,
}

impl StageState {
    fn env(&self) -> Vec<(String, String)> {
        self.config
            .config
            .env
            .iter()
            .flatten()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv.clone(), String::new()),
            })
            .collect()
    }

    /// Variables visible to expansion: ARGs then ENV (ENV wins).
    fn vars(&self) -> Vec<(String, String)> {
        let mut vars = self.args.clone();
        vars.extend(self.env());
        vars
    }

    fn set_env(&mut self, key: &str, value: &str) {
        let env = self.config.config.env.get_or_insert_with(Vec::new);
        let entry = format!("{key}={value}");
        match env
            .iter_mut()
            .find(|kv| kv.split_once('=').map(|(k, _)| k).unwrap_or(kv.as_str()) == key)
        {
            Some(existing) => *existing = entry,
            None => env.push(entry),
        }
    }

    fn workdir(&self) -> String {
        self.config
            .config
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_string())
    }

    fn shell(&self) -> Vec<String> {
        self.config
            .config
            .shell
            .clone()
            .unwrap_or_else(|| vec!["/bin/sh".to_string(), "-c".to_string()])
    }
}

/// Joins `path` onto `base` like Go's path.Join for WORKDIR and relative COPY destinations.
fn join_path(base: &str, path: &str) -> String {
    let full = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{base}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in full.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

fn parse_user_opt(s: &str) -> UserOpt {
    match s.parse::<u32>() {
        Ok(id) => UserOpt::Id(id),
        Err(_) => UserOpt::Name(s.to_string()),
    }
}

fn parse_chown(s: &str) -> Option<ChownOpt> {
    if s.is_empty() {
        return None;
    }
    let (user, group) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    Some(ChownOpt {
        user: parse_user_opt(user),
        group: group.filter(|g| !g.is_empty()).map(parse_user_opt),
    })
}

fn parse_ports(spec: &str) -> Result<Vec<String>, String> {
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

fn parse_duration_ns(s: &str) -> Option<i64> {
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

    fn run_env(&self, state: &StageState) -> Vec<String> {
        let env = state.env();
        let mut out: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for (k, v) in &state.args {
            if !env.iter().any(|(ek, _)| ek == k) {
                out.push(format!("{k}={v}"));
            }
        }
        if !env.iter().any(|(k, _)| k == "PATH") {
            out.push(DEFAULT_PATH.to_string());
        }
        out
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

    #[allow(clippy::too_many_arguments)]
    fn instruction(
        &mut self,
        state: &mut StageState,
        inst: &Instruction,
        step: usize,
        total: usize,
        stages: &HashMap<usize, StageState>,
        decls: &[StageDecl],
        index: usize,
        bases: &HashMap<String, BaseImage>,
    ) -> Result<(), ConvertError> {
        let span = &inst.span;
        let vars = state.vars();
        match inst.kind {
            InstructionKind::Env => {
                let Args::KeyValues(kvs) = &inst.args else {
                    return Err(ConvertError::at(span, "ENV requires at least one argument"));
                };
                let mut shown = Vec::new();
                // One instruction sees the variables as they were before it (Docker's rule:
                // `ENV abc=bye def=$abc` sets def to the previous abc).
                for kv in kvs {
                    let value =
                        expand(&self.lexer, kv.value.as_deref().unwrap_or(""), &vars, span)?;
                    let key = expand(&self.lexer, &kv.key, &vars, span)?;
                    state.set_env(&key, &value);
                    shown.push(format!("{key}={value}"));
                }
                self.history(state, format!("ENV {}", shown.join(" ")), true);
            }
            InstructionKind::Arg => {
                let Args::KeyValues(kvs) = &inst.args else {
                    return Err(ConvertError::at(span, "ARG requires exactly one argument"));
                };
                let mut shown = Vec::new();
                let meta = split_meta(self.df, self.opts);
                for kv in kvs {
                    let default = match &kv.value {
                        Some(v) => Some(expand(&self.lexer, v, &state.vars(), span)?),
                        None => meta
                            .iter()
                            .rev()
                            .find(|(k, _)| *k == kv.key)
                            .map(|(_, v)| v.clone()),
                    };
                    let value = self.opts.build_args.get(&kv.key).cloned().or(default);
                    shown.push(match &kv.value {
                        Some(v) => format!("{}={v}", kv.key),
                        None => kv.key.clone(),
                    });
                    if let Some(value) = value {
                        state.args.retain(|(k, _)| k != &kv.key);
                        state.args.push((kv.key.clone(), value));
                    }
                }
                self.history(state, format!("ARG {}", shown.join(" ")), true);
            }
            InstructionKind::Label => {
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
                    let value =
                        expand(&self.lexer, kv.value.as_deref().unwrap_or(""), &vars, span)?;
                    shown.push(format!("{key}={value}"));
                    labels.insert(key, value);
                }
                self.history(state, format!("LABEL {}", shown.join(" ")), true);
            }
            InstructionKind::Maintainer => {
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
            }
            InstructionKind::Workdir => {
                let raw = words_of(inst).join(" ");
                let path = expand(&self.lexer, &raw, &vars, span)?;
                let wd = join_path(&state.workdir(), &path);
                state.config.config.working_dir = Some(wd.clone());
                let owner = state
                    .config
                    .config
                    .user
                    .as_deref()
                    .filter(|u| !u.is_empty())
                    .and_then(parse_chown);
                let op = Op::File(FileOp {
                    actions: vec![FileAction::Mkdir(MkdirAction {
                        path: wd.clone(),
                        mode: 0o755,
                        make_parents: true,
                        owner,
                    })],
                });
                let name = self.step_name(state, step, total, inst);
                state.vertex = self
                    .def
                    .add(op, vec![state.vertex], name, self.location(span));
                self.history(state, format!("WORKDIR {wd}"), false);
            }
            InstructionKind::User => {
                let user = expand(&self.lexer, &words_of(inst).join(" "), &vars, span)?;
                state.config.config.user = Some(user.clone());
                self.history(state, format!("USER {user}"), true);
            }
            InstructionKind::Run => {
                self.run(state, inst, step, total, stages, decls, index, bases)?
            }
            InstructionKind::Copy | InstructionKind::Add => {
                self.copy(state, inst, step, total, stages, decls, index, bases)?
            }
            InstructionKind::Cmd | InstructionKind::Entrypoint => {
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
            }
            InstructionKind::Expose => {
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
            }
            InstructionKind::Volume => {
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
            }
            InstructionKind::Stopsignal => {
                let sig = expand(&self.lexer, &words_of(inst).join(" "), &vars, span)?;
                state.config.config.stop_signal = Some(sig.clone());
                self.history(state, format!("STOPSIGNAL {sig}"), true);
            }
            InstructionKind::Shell => {
                let Args::Exec(v) = &inst.args else {
                    return Err(ConvertError::at(
                        span,
                        "SHELL requires the arguments to be in JSON form",
                    ));
                };
                state.config.config.shell = Some(v.clone());
                self.history(
                    state,
                    format!("SHELL {}", serde_json::to_string(v).unwrap_or_default()),
                    true,
                );
            }
            InstructionKind::Healthcheck => self.healthcheck(state, inst)?,
            InstructionKind::Onbuild => {
                let trigger = inst.original.trim();
                let rest = trigger.get(7..).unwrap_or("").trim().to_string();
                state
                    .config
                    .config
                    .on_build
                    .get_or_insert_with(Vec::new)
                    .push(rest.clone());
                self.history(state, format!("ONBUILD {rest}"), true);
            }
            InstructionKind::From => return Err(ConvertError::at(span, "unexpected FROM")),
        }
        Ok(())
    }

    fn healthcheck(
        &mut self,
        state: &mut StageState,
        inst: &Instruction,
    ) -> Result<(), ConvertError> {
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
            for (flag_name, slot) in [
                ("interval", &mut hc.interval),
                ("timeout", &mut hc.timeout),
                ("start-period", &mut hc.start_period),
                ("start-interval", &mut hc.start_interval),
            ] {
                if let Some(v) = flag(inst, flag_name) {
                    *slot = Some(parse_duration_ns(v).ok_or_else(|| {
                        ConvertError::at(span, format!("invalid duration for --{flag_name}: {v}"))
                    })?)
                    .filter(|d| *d != 0);
                }
            }
            if let Some(r) = flag(inst, "retries") {
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

    /// The vertex a `--mount from=` names: an earlier stage or an image.
    #[allow(clippy::too_many_arguments)]
    fn mount_from_vertex(
        &mut self,
        state: &StageState,
        from: &str,
        span: &Span,
        stages: &HashMap<usize, StageState>,
        decls: &[StageDecl],
        index: usize,
        bases: &HashMap<String, BaseImage>,
    ) -> Result<VertexIndex, ConvertError> {
        // Global ARGs, then the stage's ARG/ENV.
        let mut vars = self.meta();
        vars.extend(state.vars());
        let from = expand(&self.lexer, from, &vars, span)?;
        if let Some(i) = find_stage(decls, &from, index) {
            return stages
                .get(&i)
                .map(|s| s.vertex)
                .ok_or_else(|| ConvertError::at(span, format!("stage {from} was not built")));
        }
        let base = bases
            .get(&from)
            .ok_or_else(|| ConvertError::at(span, format!("image {from} was not resolved")))?;
        let name = format!("[{}] FROM {}@{}", state.name, base.reference, base.digest);
        Ok(self.def.add(
            Op::Source(SourceOp::Image {
                reference: base.reference.clone(),
                digest: Some(base.digest.clone()),
            }),
            vec![],
            name,
            self.location(span),
        ))
    }

    /// The `--mount` flags of a RUN as exec mounts, and the extra vertex inputs they use
    /// (input `k` of the exec vertex is `extra[k - 1]`).
    #[allow(clippy::too_many_arguments)]
    fn run_mounts(
        &mut self,
        state: &StageState,
        inst: &Instruction,
        stages: &HashMap<usize, StageState>,
        decls: &[StageDecl],
        index: usize,
        bases: &HashMap<String, BaseImage>,
    ) -> Result<(Vec<ExecMount>, Vec<VertexIndex>), ConvertError> {
        let span = &inst.span;
        let vars = state.vars();
        let mut mounts = Vec::new();
        let mut extra: Vec<VertexIndex> = Vec::new();
        for f in inst.flags.iter().filter(|f| f.name == "mount") {
            let lexer = &self.lexer;
            let mut ex = |w: &str| -> Result<String, String> {
                lexer
                    .process_word(w, &lookup(&vars))
                    .map_err(|e| e.to_string())
            };
            let raw = f.value.as_deref().unwrap_or("");
            let mut m =
                crate::mounts::parse_mount(raw, &mut ex).map_err(|e| ConvertError::at(span, e))?;
            // `from` is expanded (once) against the global ARGs too, as for COPY --from.
            let mut keep = |w: &str| -> Result<String, String> { Ok(w.to_string()) };
            m.from = crate::mounts::parse_mount(raw, &mut keep)
                .map_err(|e| ConvertError::at(span, e))?
                .from;
            let target = if m.target.is_empty() {
                String::new()
            } else {
                join_path(&state.workdir(), &m.target)
            };
            if target == "/" {
                return Err(ConvertError::at(span, "invalid mount target \"/\""));
            }
            let source_vertex = match (&m.kind, &m.from) {
                (MountType::Bind, None) => Some(self.context()),
                (MountType::Bind | MountType::Cache, Some(from)) => {
                    Some(self.mount_from_vertex(state, from, span, stages, decls, index, bases)?)
                }
                _ => None,
            };
            let input = source_vertex.map(|v| match extra.iter().position(|&e| e == v) {
                Some(p) => p + 1,
                None => {
                    extra.push(v);
                    extra.len()
                }
            });
            let selector = match &m.source {
                Some(src) if input.is_some() => join_path("/", src),
                _ => "/".to_string(),
            };
            let mut mount = ExecMount {
                kind: m.kind.clone(),
                target: target.clone(),
                input,
                selector,
                readonly: m.readonly,
                cache: None,
                tmpfs_size: None,
                secret: None,
            };
            match m.kind {
                MountType::Cache => {
                    mount.cache = Some(CacheMountOpt {
                        id: if m.id.is_empty() {
                            target.clone()
                        } else {
                            m.id.clone()
                        },
                        sharing: m.sharing,
                        uid: m.uid.unwrap_or(0),
                        gid: m.gid.unwrap_or(0),
                        mode: m.mode.unwrap_or(0o755),
                    })
                }
                MountType::Tmpfs => mount.tmpfs_size = m.size,
                MountType::Secret => {
                    mount.readonly = true;
                    mount.secret = Some(SecretMountOpt {
                        id: m.id.clone(),
                        env: m.env.clone(),
                        required: m.required,
                        mode: m.mode.unwrap_or(0o400),
                        uid: m.uid.unwrap_or(0),
                        gid: m.gid.unwrap_or(0),
                    })
                }
                MountType::Bind => {}
            }
            mounts.push(mount);
        }
        Ok((mounts, extra))
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        state: &mut StageState,
        inst: &Instruction,
        step: usize,
        total: usize,
        stages: &HashMap<usize, StageState>,
        decls: &[StageDecl],
        index: usize,
        bases: &HashMap<String, BaseImage>,
    ) -> Result<(), ConvertError> {
        let span = &inst.span;
        let (mounts, extra_inputs) = self.run_mounts(state, inst, stages, decls, index, bases)?;
        let args = match &inst.args {
            Args::Exec(v) => v.clone(),
            Args::Shell(s) if !inst.heredocs.is_empty() => self.heredoc_args(state, s, inst),
            Args::Shell(s) => {
                let mut a = state.shell();
                a.push(s.clone());
                a
            }
            other => words_of(&Instruction {
                args: other.clone(),
                ..inst.clone()
            }),
        };
        if args.is_empty() {
            return Err(ConvertError::at(span, "RUN requires at least one argument"));
        }
        let network_flag = last_flag(inst, "network");
        let network = match network_flag.map(|f| f.value.as_deref().unwrap_or("")) {
            None | Some("default") => self.opts.network,
            Some("host") => NetworkMode::Host,
            Some("none") => NetworkMode::None,
            Some(other) => {
                return Err(ConvertError::at(
                    span,
                    format!("unsupported network mode \"{other}\""),
                ))
            }
        };
        let security_flag = last_flag(inst, "security");
        let security = match security_flag.map(|f| f.value.as_deref().unwrap_or("")) {
            None | Some("sandbox") => SecurityMode::Sandbox,
            Some("insecure") => SecurityMode::Insecure,
            Some(other) => {
                return Err(ConvertError::at(
                    span,
                    format!("security {} is not valid", crate::parser::go_quote(other)),
                ))
            }
        };
        // Entitlements (as buildx): only an explicit Dockerfile flag is checked here, so the
        // caret points at it; `--network=host` on the command line grants network.host itself.
        if let Some(f) = network_flag.filter(|_| network == NetworkMode::Host) {
            if !self.opts.entitlements.allows(Entitlement::NetworkHost) {
                return Err(not_entitled(
                    &f.span,
                    Entitlement::NetworkHost,
                    &f.to_word(),
                ));
            }
        }
        if let Some(f) = security_flag.filter(|_| security == SecurityMode::Insecure) {
            if !self.opts.entitlements.allows(Entitlement::SecurityInsecure) {
                return Err(not_entitled(
                    &f.span,
                    Entitlement::SecurityInsecure,
                    &f.to_word(),
                ));
            }
        }
        let user = state.config.config.user.clone().unwrap_or_default();
        // Proxy build args reach the process but stay out of the cache key (BuildKit's ProxyEnv).
        let is_proxy = |kv: &String| {
            let key = kv.split_once('=').map(|(k, _)| k).unwrap_or(kv.as_str());
            PROXY_ARGS.contains(&key) && !state.env().iter().any(|(k, _)| k == key)
        };
        let (mut proxy_env, env): (Vec<String>, Vec<String>) =
            self.run_env(state).into_iter().partition(is_proxy);
        // Proxy args are predefined: a --build-arg reaches RUN without an ARG line.
        for key in PROXY_ARGS {
            let declared = proxy_env
                .iter()
                .any(|kv| kv.split_once('=').map(|(k, _)| k) == Some(key));
            let in_env = state.env().iter().any(|(k, _)| k == key);
            if let (false, false, Some(value)) = (declared, in_env, self.opts.build_args.get(key)) {
                proxy_env.push(format!("{key}={value}"));
            }
        }
        let op = Op::Exec(ExecOp {
            args: args.clone(),
            env,
            cwd: state.workdir(),
            user,
            network,
            security,
            extra_hosts: self.opts.extra_hosts.clone(),
            mounts,
            proxy_env,
        });
        let name = self.step_name(state, step, total, inst);
        let mut inputs = vec![state.vertex];
        inputs.extend(extra_inputs);
        state.vertex = self.def.add(op, inputs, name, self.location(span));
        let env_names: Vec<&(String, String)> = state
            .args
            .iter()
            .filter(|(k, _)| !state.env().iter().any(|(ek, _)| ek == k))
            .collect();
        let prefix = if env_names.is_empty() {
            String::new()
        } else {
            format!(
                "|{} {} ",
                env_names.len(),
                env_names
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        };
        let shown = match &inst.args {
            Args::Exec(v) => serde_json::to_string(v).unwrap_or_default(),
            _ => args.join(" "),
        };
        self.history(state, format!("RUN {prefix}{shown} # buildkit"), false);
        Ok(())
    }

    /// The argv of a shell-form RUN with heredocs, as BuildKit runs them: a command that is only
    /// a heredoc runs the heredoc as the script (a `#!` line picks the interpreter); otherwise the
    /// bodies follow the command line, for the shell to feed to the command.
    fn heredoc_args(&self, state: &StageState, cmd: &str, inst: &Instruction) -> Vec<String> {
        let mut args = state.shell();
        let strip = |h: &crate::ast::Heredoc| -> String {
            if h.chomp {
                h.content
                    .lines()
                    .map(|l| format!("{}\n", l.trim_start_matches('\t')))
                    .collect()
            } else {
                h.content.clone()
            }
        };
        let marker_only = inst.heredocs.len() == 1 && {
            let t = cmd.trim().trim_start_matches("<<").trim_start_matches('-');
            t.trim_matches(|c| c == '"' || c == '\'') == inst.heredocs[0].name
        };
        if marker_only {
            let body = strip(&inst.heredocs[0]);
            if let Some(first) = body.lines().next().and_then(|l| l.strip_prefix("#!")) {
                args.push(format!(
                    "{} /dev/stdin <<'RBUILD_HEREDOC_EOF'\n{body}RBUILD_HEREDOC_EOF\n",
                    first.trim()
                ));
            } else {
                args.push(body);
            }
            return args;
        }
        let mut full = cmd.to_string();
        full.push('\n');
        for h in &inst.heredocs {
            full.push_str(&h.content);
            full.push_str(&h.name);
            full.push('\n');
        }
        args.push(full);
        args
    }

    #[allow(clippy::too_many_arguments)]
    fn copy(
        &mut self,
        state: &mut StageState,
        inst: &Instruction,
        step: usize,
        total: usize,
        stages: &HashMap<usize, StageState>,
        decls: &[StageDecl],
        index: usize,
        bases: &HashMap<String, BaseImage>,
    ) -> Result<(), ConvertError> {
        let span = &inst.span;
        let is_add = inst.kind == InstructionKind::Add;
        let vars = state.vars();
        let mut words = match &inst.args {
            Args::Exec(v) => v.clone(),
            _ => words_of(inst),
        };
        if words.len() < 2 {
            return Err(ConvertError::at(span, format!("{} requires at least two arguments, but only one was provided. Destination could not be determined", if is_add { "ADD" } else { "COPY" })));
        }
        let dest_raw = words.pop().unwrap_or_default();
        let dest_expanded = expand(&self.lexer, &dest_raw, &vars, span)?;
        let mut dest = if dest_expanded.starts_with('/') {
            dest_expanded.clone()
        } else {
            join_path(&state.workdir(), &dest_expanded)
        };
        if (dest_expanded.ends_with('/') || dest_expanded == "." || dest_expanded.ends_with("/."))
            && !dest.ends_with('/')
        {
            dest.push('/');
        }
        let chown = match flag(inst, "chown") {
            Some(c) => parse_chown(&expand(&self.lexer, c, &vars, span)?),
            None => None,
        };
        let (mode, mode_str) = match flag(inst, "chmod") {
            Some(m) => {
                let m = expand(&self.lexer, m, &vars, span)?;
                match u32::from_str_radix(&m, 8) {
                    Ok(v) if v <= 0o7777 => (Some(v), None),
                    Err(_) if valid_symbolic_mode(&m) => (None, Some(m)),
                    _ => {
                        return Err(ConvertError::at(
                            span,
                            format!("invalid chmod parameter: {m}"),
                        ))
                    }
                }
            }
            None => (None, None),
        };
        let mut exclude_patterns = Vec::new();
        for e in flags_all(inst, "exclude") {
            exclude_patterns.push(expand(&self.lexer, e, &vars, span)?);
        }
        let parents = bool_flag(inst, "parents").map_err(|e| ConvertError::at(span, e))?;
        let link = bool_flag(inst, "link").map_err(|e| ConvertError::at(span, e))?;
        let checksum = match flag(inst, "checksum") {
            Some(c) if is_add => {
                let c = expand(&self.lexer, c, &vars, span)?;
                let hex = c.strip_prefix("sha256:").unwrap_or("");
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ConvertError::at(
                        span,
                        format!("invalid checksum {c}: expected sha256:<64 hex digits>"),
                    ));
                }
                Some(c.to_ascii_lowercase())
            }
            Some(_) => {
                return Err(ConvertError::at(
                    span,
                    "the --checksum flag is only supported by ADD",
                ))
            }
            None => None,
        };
        let (src_vertex, from_context) = match flag(inst, "from") {
            Some(from) => {
                let from = expand(&self.lexer, from, &self.meta(), span)?;
                match find_stage(decls, &from, index) {
                    Some(i) => (
                        stages.get(&i).map(|s| s.vertex).ok_or_else(|| {
                            ConvertError::at(span, format!("stage {from} was not built"))
                        })?,
                        false,
                    ),
                    None => {
                        let base = bases.get(&from).ok_or_else(|| {
                            ConvertError::at(span, format!("image {from} was not resolved"))
                        })?;
                        let name =
                            format!("[{}] FROM {}@{}", state.name, base.reference, base.digest);
                        (
                            self.def.add(
                                Op::Source(SourceOp::Image {
                                    reference: base.reference.clone(),
                                    digest: Some(base.digest.clone()),
                                }),
                                vec![],
                                name,
                                self.location(span),
                            ),
                            false,
                        )
                    }
                }
            }
            None => (self.context(), true),
        };
        // --link: the copy is built on scratch (its cache key ignores the base) and then merged.
        let base = if link {
            self.def.add(
                Op::Source(SourceOp::Scratch),
                vec![],
                "scratch".into(),
                None,
            )
        } else {
            state.vertex
        };
        let mut inputs = vec![base];
        let mut src_input = None;
        let mut actions = Vec::new();
        // BuildKit's --link layers hold the destination's parents as root-owned 0755 directories
        // (the --chown owner applies to the copied entries only).
        if link {
            let trimmed = dest.trim_end_matches('/');
            if let Some(parent) = trimmed.rfind('/').map(|i| &trimmed[..i]) {
                if !parent.is_empty() {
                    actions.push(FileAction::Mkdir(MkdirAction {
                        path: parent.to_string(),
                        mode: 0o755,
                        make_parents: true,
                        owner: None,
                    }));
                }
            }
        }
        for src in &words {
            // COPY <<EOF /dest: the heredoc body becomes a file named after its delimiter.
            if let Some(doc) = heredoc_for_word(src, &inst.heredocs) {
                let content = if doc.expand {
                    let lexer = Lexer::new(self.df.directives.escape)
                        .with_raw_quotes(true)
                        .with_raw_escapes(true);
                    let f = lookup(&vars);
                    lexer
                        .process_word(&doc.content, &f)
                        .map_err(|e| ConvertError::at(span, e.to_string()))?
                } else {
                    doc.content.clone()
                };
                let inline = self.def.add(
                    Op::Source(SourceOp::Inline {
                        filename: doc.name.clone(),
                        content,
                    }),
                    vec![],
                    format!("heredoc {}", doc.name),
                    self.location(span),
                );
                inputs.push(inline);
                actions.push(FileAction::Copy(CopyAction {
                    src_input: inputs.len() - 1,
                    src: format!("/{}", doc.name),
                    dest: dest.clone(),
                    owner: chown.clone(),
                    mode,
                    follow_symlinks: true,
                    dir_copy_contents: true,
                    attempt_unpack: false,
                    create_dest_path: true,
                    allow_wildcard: false,
                    allow_empty_wildcard: false,
                    mode_str: mode_str.clone(),
                    exclude_patterns: Vec::new(),
                    parents: false,
                }));
                continue;
            }
            let src = expand(&self.lexer, src, &vars, span)?;
            let is_url = src.starts_with("http://") || src.starts_with("https://");
            if is_url && !is_add {
                return Err(ConvertError::at(
                    span,
                    format!("source can't be a URL for COPY: {src}"),
                ));
            }
            let (input, src_path, unpack) = if is_url {
                let filename = url_filename(&src);
                let http = self.def.add(
                    Op::Source(SourceOp::Http {
                        url: src.clone(),
                        checksum: checksum.clone(),
                        filename: filename.clone(),
                    }),
                    vec![],
                    src.clone(),
                    self.location(span),
                );
                inputs.push(http);
                (inputs.len() - 1, format!("/{filename}"), false)
            } else {
                if checksum.is_some() {
                    return Err(ConvertError::at(
                        span,
                        "--checksum can only be used with a URL source (or a Git repository)",
                    ));
                }
                let input = *src_input.get_or_insert_with(|| {
                    inputs.push(src_vertex);
                    inputs.len() - 1
                });
                (input, src, is_add && from_context)
            };
            actions.push(FileAction::Copy(CopyAction {
                src_input: input,
                src: src_path,
                dest: dest.clone(),
                owner: chown.clone(),
                mode,
                follow_symlinks: true,
                dir_copy_contents: true,
                attempt_unpack: unpack,
                create_dest_path: true,
                allow_wildcard: !is_url,
                allow_empty_wildcard: false,
                mode_str: mode_str.clone(),
                exclude_patterns: exclude_patterns.clone(),
                parents: parents && !is_url,
            }));
        }
        let name = self.step_name(state, step, total, inst);
        let copied = self.def.add(
            Op::File(FileOp { actions }),
            inputs,
            name.clone(),
            self.location(span),
        );
        state.vertex = if link {
            self.def.add(
                Op::Merge,
                vec![state.vertex, copied],
                format!("{name} [merge]"),
                self.location(span),
            )
        } else {
            copied
        };
        let flags: Vec<String> = inst
            .flags
            .iter()
            .map(|f| format!("--{}={}", f.name, f.value.clone().unwrap_or_default()))
            .collect();
        let mut shown = flags;
        shown.extend(words.iter().cloned());
        shown.push(dest_raw);
        self.history(
            state,
            format!(
                "{} {} # buildkit",
                if is_add { "ADD" } else { "COPY" },
                shown.join(" ")
            ),
            false,
        );
        Ok(())
    }

    fn meta(&self) -> Vec<(String, String)> {
        split_meta(self.df, self.opts)
    }
}

fn split_meta(df: &Dockerfile, opts: &ConvertOptions) -> Vec<(String, String)> {
    split_stages(df, opts).map(|p| p.meta).unwrap_or_default()
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
        for inst in &trigger_insts {
            conv.instruction(
                &mut state,
                inst,
                1,
                total,
                &done,
                &parsed.stages,
                index,
                bases,
            )?;
        }
        for (step, inst) in decl.body.iter().enumerate() {
            conv.instruction(
                &mut state,
                inst,
                step + 2,
                total,
                &done,
                &parsed.stages,
                index,
                bases,
            )?;
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

/// The heredoc a COPY/ADD source word (`<<EOF`, `<<-EOF`, `<<"EOF"`) refers to.
fn heredoc_for_word<'a>(
    word: &str,
    heredocs: &'a [crate::ast::Heredoc],
) -> Option<&'a crate::ast::Heredoc> {
    let name = word
        .strip_prefix("<<")?
        .trim_start_matches('-')
        .trim_matches(|c| c == '"' || c == '\'');
    heredocs.iter().find(|h| h.name == name)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_like_go() {
        assert_eq!(join_path("/", "a"), "/a");
        assert_eq!(join_path("/a", "b"), "/a/b");
        assert_eq!(join_path("/a/b", "../c"), "/a/c");
        assert_eq!(join_path("/a/c", "d/"), "/a/c/d");
        assert_eq!(join_path("/x", "/abs"), "/abs");
    }

    #[test]
    fn ports_and_durations() {
        assert_eq!(parse_ports("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(parse_ports("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(
            parse_ports("8000-8002").unwrap(),
            vec!["8000/tcp", "8001/tcp", "8002/tcp"]
        );
        assert!(parse_ports("x").is_err());
        assert_eq!(parse_duration_ns("30s"), Some(30_000_000_000));
        assert_eq!(parse_duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration_ns("500ms"), Some(500_000_000));
    }

    #[test]
    fn copy_flag_helpers() {
        for ok in ["u+x", "u+x,g-w,o=r", "a=rX", "go=u", "+x", "ug+rw-x", "o="] {
            assert!(valid_symbolic_mode(ok), "{ok}");
        }
        for bad in ["", "u", "x+r", "u+q", "u+r,", "rwx"] {
            assert!(!valid_symbolic_mode(bad), "{bad}");
        }
        assert_eq!(url_filename("https://h/a/b.tar.gz?x=1#f"), "b.tar.gz");
        assert_eq!(url_filename("http://h:8080/dir/"), "dir");
        assert_eq!(url_filename("http://h"), "__unnamed__");
        assert_eq!(url_filename("http://h/"), "__unnamed__");
    }

    fn convert_text(text: &str, opts: &ConvertOptions) -> Result<Vec<ExecOp>, ConvertError> {
        let df = crate::parse(text).expect("parses");
        let plan = convert(&df, opts, &HashMap::new())?;
        Ok(plan
            .definition
            .vertices
            .iter()
            .filter_map(|v| match &v.op {
                Op::Exec(e) => Some(e.clone()),
                _ => None,
            })
            .collect())
    }

    #[test]
    fn run_network_and_security_flags() {
        let text = "FROM scratch\nRUN a\nRUN --network=default b\nRUN --network=none c\n\
                    RUN --security=sandbox d\n";
        let opts = ConvertOptions::default();
        let ops = convert_text(text, &opts).unwrap();
        let modes: Vec<_> = ops.iter().map(|e| (e.network, e.security)).collect();
        assert_eq!(
            modes,
            vec![
                (NetworkMode::Default, SecurityMode::Sandbox),
                (NetworkMode::Default, SecurityMode::Sandbox),
                (NetworkMode::None, SecurityMode::Sandbox),
                (NetworkMode::Default, SecurityMode::Sandbox),
            ]
        );
        // `default` follows the build's mode (`--network=none` on the command line).
        let none = ConvertOptions {
            network: NetworkMode::None,
            ..ConvertOptions::default()
        };
        let ops = convert_text(text, &none).unwrap();
        assert_eq!(ops[0].network, NetworkMode::None);
        assert_eq!(ops[1].network, NetworkMode::None);

        let err = convert_text("FROM scratch\nRUN --security=root a\n", &opts).unwrap_err();
        assert_eq!(err.message, "security \"root\" is not valid");
        let err = convert_text("FROM scratch\nRUN --network=bridge a\n", &opts).unwrap_err();
        assert_eq!(err.message, "unsupported network mode \"bridge\"");
    }

    #[test]
    fn privileged_run_flags_need_entitlements() {
        let text = "FROM scratch\nRUN   --network=host true\n";
        let err = convert_text(text, &ConvertOptions::default()).unwrap_err();
        assert_eq!(err.message, "network.host is not allowed");
        let rendered = err.render("Dockerfile", text);
        assert!(
            rendered.starts_with(
                "Dockerfile:2:7: network.host is not allowed\nRUN   --network=host true\n      ^\n"
            ),
            "{rendered}"
        );
        assert!(rendered.contains("hint: `RUN --network=host` needs the network.host entitlement: pass `--allow network.host`"), "{rendered}");

        let insecure = "FROM scratch\nRUN --network=none --security=insecure true\n";
        let err = convert_text(insecure, &ConvertOptions::default()).unwrap_err();
        assert_eq!(err.message, "security.insecure is not allowed");
        assert_eq!(err.span.map(|s| s.start_col), Some(20));
        // network.host does not grant security.insecure.
        let host_only = ConvertOptions {
            entitlements: Entitlements::parse(&["network.host"]).unwrap(),
            ..ConvertOptions::default()
        };
        assert!(convert_text(insecure, &host_only).is_err());
        let ops = convert_text(text, &host_only).unwrap();
        assert_eq!(ops[0].network, NetworkMode::Host);

        let all = ConvertOptions {
            entitlements: Entitlements::parse(&["network.host,security.insecure"]).unwrap(),
            ..ConvertOptions::default()
        };
        let ops = convert_text(insecure, &all).unwrap();
        assert_eq!(ops[0].security, SecurityMode::Insecure);
        assert_eq!(ops[0].network, NetworkMode::None);
        // A stage the target does not need is not converted, so not checked (as BuildKit).
        let unused = "FROM scratch AS x\nRUN --network=host a\nFROM scratch\nRUN b\n";
        assert!(convert_text(unused, &ConvertOptions::default()).is_ok());
    }

    #[test]
    fn extra_hosts_reach_every_run() {
        let hosts = vec![ExtraHost {
            host: "db".into(),
            ip: "10.1.2.3".into(),
        }];
        let opts = ConvertOptions {
            extra_hosts: hosts.clone(),
            ..ConvertOptions::default()
        };
        let ops = convert_text("FROM scratch\nRUN a\nRUN --network=none b\n", &opts).unwrap();
        assert_eq!(ops.len(), 2);
        assert!(ops.iter().all(|e| e.extra_hosts == hosts));
    }
}
