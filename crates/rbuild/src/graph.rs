//! `rbuild graph`: the build's graph without building it, as rbuild's graph JSON, Graphviz DOT
//! or BuildKit LLB (the marshalled `pb.Definition`, what `buildctl debug dump-llb` reads). The
//! library plans ([`rbuild_build::graph::plan_graph`]) and renders; this module parses the
//! flags, picks the rendering and writes it.

use crate::errors::Report;
use crate::{run_opts, StoreArgs};
use clap::{Args, ValueEnum};
use rbuild_build::{BuildContextSpec, BuildRequest, ContextSource, DockerfileSource, StateDir};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

/// What `rbuild graph` prints.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GraphFormat {
    /// rbuild's graph JSON (docs/graph.md).
    #[default]
    Json,
    /// Graphviz DOT: stages as clusters, edges from input to consumer.
    Dot,
    /// BuildKit LLB: the marshalled pb.Definition (binary).
    Llb,
}

/// `rbuild graph` flags: the build flags that shape the graph.
#[derive(Args, Debug, Clone)]
pub struct GraphArgs {
    /// Build context directory.
    pub context: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: GraphFormat,
    /// Write to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Dockerfile path (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Build-time variable `KEY=VALUE` (or `KEY` to take it from the environment).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Stage to build.
    #[arg(long)]
    pub target: Option<String>,
    /// Target platform(s): PLATFORM[,PLATFORM...]; `--format llb` takes one.
    #[arg(long = "platform", value_name = "PLATFORM", value_delimiter = ',',
          value_parser = crate::parse_platform)]
    pub platforms: Vec<rbuild_oci::Platform>,
    /// Named context: NAME=DIR or NAME=docker-image://REF; repeatable.
    #[arg(long = "build-context", value_name = "NAME=DIR|docker-image://REF",
          value_parser = clap::value_parser!(BuildContextSpec))]
    pub build_contexts: Vec<BuildContextSpec>,
    /// Stages marked to be solved without the cache: STAGE[,STAGE...].
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,
    /// Network of RUN steps: default, host (implies `--allow network.host`) or none.
    #[arg(long, value_enum, default_value = "default")]
    pub network: run_opts::NetworkArg,
    /// Grant an entitlement (network.host, security.insecure).
    #[arg(long = "allow", value_name = "ENTITLEMENT", value_parser = run_opts::parse_allow)]
    pub allow: Vec<String>,
    /// Add a host-to-IP mapping (`NAME:IP`) to every RUN.
    #[arg(long = "add-host", value_name = "NAME:IP", value_parser = run_opts::parse_add_host)]
    pub add_hosts: Vec<rbuild_llb::ExtraHost>,
    /// Secrets as for `build` (only their ids matter: the graph holds no secret value).
    #[arg(long = "secret", value_parser = clap::value_parser!(rbuild_build::SecretSpec))]
    pub secrets: Vec<rbuild_build::SecretSpec>,
    /// SSH sockets as for `build` (only their ids matter).
    #[arg(long = "ssh", value_name = "default|ID[=SOCKET]",
          value_parser = clap::value_parser!(rbuild_build::SshSpec))]
    pub ssh: Vec<rbuild_build::SshSpec>,
    /// Always resolve base image tags again.
    #[arg(long)]
    pub pull: bool,
}

/// Runs `rbuild graph`.
pub async fn run(args: GraphArgs, store: &StoreArgs) -> Result<(), Report> {
    if args.format == GraphFormat::Llb && args.output.is_none() && std::io::stdout().is_terminal() {
        return Err(Report::new(
            "error: --format llb writes binary protobuf: refusing to write it to a terminal (use -o FILE or a pipe)",
        ));
    }
    let mut entitlements = rbuild_llb::Entitlements::parse(&args.allow)
        .map_err(|e| Report::new(format!("error: {e}")).with_code(2))?;
    if args.network == run_opts::NetworkArg::Host {
        entitlements.grant(rbuild_llb::Entitlement::NetworkHost);
    }
    let mut request = BuildRequest::new(
        StateDir::new(store.root_dir()),
        ContextSource::Dir(args.context.clone()),
    );
    request.dockerfile = match &args.file {
        Some(f) if f == Path::new("-") => DockerfileSource::Stream(Box::new(std::io::stdin())),
        Some(f) => DockerfileSource::Path(f.clone()),
        None => DockerfileSource::Default,
    };
    request.build_args = crate::build::parse_build_args(&args.build_args);
    request.target = args.target.clone();
    for p in &args.platforms {
        if !request.platforms.iter().any(|q| q.same_as(p)) {
            request.platforms.push(p.clone());
        }
    }
    request.named_contexts = args.build_contexts.clone();
    request.no_cache_filter = args.no_cache_filter.clone();
    request.network = args.network.mode();
    request.entitlements = entitlements;
    request.extra_hosts = args.add_hosts.clone();
    request.secrets = args.secrets.clone();
    request.ssh = args.ssh.clone();
    request.pull = args.pull;
    let graph = rbuild_build::graph::plan_graph(request).await?;
    let bytes = match args.format {
        GraphFormat::Json => graph.to_json().map_err(graph_error)?,
        GraphFormat::Dot => graph.to_dot().into_bytes(),
        GraphFormat::Llb => graph.to_llb(None).map_err(graph_error)?.to_bytes(),
    };
    match &args.output {
        Some(path) => std::fs::write(path, &bytes)
            .map_err(|e| Report::from_error(&format!("writing {}", path.display()), &e)),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)
                .and_then(|()| out.flush())
                .map_err(|e| Report::from_error("writing the graph", &e))
        }
    }
}

fn graph_error(e: rbuild_build::graph::GraphError) -> Report {
    Report::new(format!("error: {e}"))
}
