//! The rbuild command-line interface: argument parsing (clap), progress rendering, output and
//! user-facing error reports with exit codes. The build pipeline itself is the `rbuild_build`
//! library.

// The doc comments of the flags are clap's help text (`[:HARD]`, `[,type=file|env]` are option
// syntax, not intra-doc links); escaping them would change `--help`.
#![allow(rustdoc::broken_intra_doc_links)]

mod build;
mod check;
mod debug;
mod errors;
mod graph;
mod images;
mod import;
mod info;
mod inspect;
mod logging;
mod pipe;
mod progress;
mod prune;
mod pull;
mod push;
mod remote;
mod rmi;
mod run_opts;
mod table;
mod tty;
mod version;

use clap::{Args, Parser, Subcommand};
use rbuild_build::{
    BuildContextSpec, CacheFromSpec, CacheToSpec, OutputSpec, SecretSpec, SpecError,
};
use std::path::PathBuf;
use std::process::ExitCode;

/// rbuild: build OCI images from Dockerfiles, daemonless.
#[derive(Parser, Debug)]
#[command(
    name = "rbuild",
    version,
    about = "Build OCI images from Dockerfiles, the way BuildKit builds them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    log: logging::LogArgs,
}

/// `rbuild [FLAGS] CONTEXT` means `rbuild build [FLAGS] CONTEXT`: inserts `build` when the first
/// word (after the global `--root` and logging flags) looks like a build: a flag other than
/// help/version, or a path (`.`, `-`, containing `/`, or an existing directory that is not a
/// subcommand's name). Any other word is left to clap, which rejects an unknown subcommand.
fn with_default_subcommand(mut argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let mut i = 1;
    while i < argv.len() {
        let arg = argv[i].to_string_lossy();
        if arg == "--root" {
            i += 2;
            continue;
        }
        if arg.starts_with("--root=") || logging::is_log_flag(&arg) {
            i += 1;
            continue;
        }
        let cmd = Cli::command();
        let subcommand = cmd
            .get_subcommands()
            .any(|s| s.get_name() == arg || s.get_all_aliases().any(|a| a == arg))
            || arg == "help";
        let help_or_version = ["--help", "-h", "--version", "-V"].contains(&arg.as_ref());
        let looks_like_build = if arg.starts_with('-') {
            !help_or_version
        } else {
            !subcommand && (arg == "." || arg.contains('/') || std::path::Path::new(&*arg).is_dir())
        };
        if looks_like_build {
            argv.insert(i, "build".into());
        }
        return argv;
    }
    argv
}

/// The subcommands and their one-line help, listed after an "unrecognized subcommand" error.
fn subcommand_list() -> String {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let mut text = String::from("\nCommands:\n");
    for sub in cmd.get_subcommands() {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        text.push_str(&format!("  {:<12}{about}\n", sub.get_name()));
    }
    text
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build an image from a Dockerfile.
    Build(Box<BuildArgs>),
    /// List the images in the local store.
    Images(images::ImagesArgs),
    /// Remove images (names; the blobs are left to garbage collection).
    Rmi(rmi::RmiArgs),
    /// Give an image another name: `rbuild tag SOURCE TARGET`.
    Tag(rmi::TagArgs),
    /// Show images as JSON, like `docker image inspect`.
    Inspect(inspect::InspectArgs),
    /// Show the history of an image.
    History(inspect::HistoryArgs),
    /// Show the rbuild version.
    Version,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(version::CompletionArgs),
    /// Push images of the local store to their registries.
    Push(push::PushArgs),
    /// Log in to a registry (saves credentials like `docker login`).
    Login(push::LoginArgs),
    /// Remove build cache, dangling images and unreachable data (like `docker builder prune`).
    Prune(prune::PruneArgs),
    /// Show disk usage of images, build cache, snapshots and cache mounts.
    Du(prune::DuArgs),
    /// Log out from a registry (removes the credentials `login` saved).
    Logout(pull::LogoutArgs),
    /// Pull an image from a registry into the local store.
    Pull(pull::PullArgs),
    /// Make an image from a root filesystem tarball, like `docker import`.
    Import(import::ImportArgs),
    /// Lint a Dockerfile: BuildKit's build checks and hadolint's rules, without building.
    Check(check::CheckArgs),
    /// Print a build's graph without building: rbuild's JSON, Graphviz DOT or BuildKit LLB.
    Graph(Box<graph::GraphArgs>),
    /// Open a shell in a failed step kept by `rbuild build --debug-on-fail=keep`.
    Debug(debug::DebugArgs),
    /// Show how builds run here: rootless mode and id ranges, snapshot backend, network, limits.
    Info,
}

/// Where rbuild keeps its state.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// State directory (image store, snapshots, cache).
    #[arg(long, env = "RBUILD_ROOT", global = true)]
    pub root: Option<PathBuf>,
}

impl StoreArgs {
    /// The state directory: --root, RBUILD_ROOT, /var/lib/rbuild for root, else XDG data home.
    pub fn root_dir(&self) -> PathBuf {
        if let Some(root) = &self.root {
            return root.clone();
        }
        if rustix::process::geteuid().is_root() && !rbuild_sandbox::rootless::is_rootless() {
            return PathBuf::from("/var/lib/rbuild");
        }
        match std::env::var_os("XDG_DATA_HOME") {
            Some(x) => PathBuf::from(x).join("rbuild"),
            None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".local/share/rbuild"),
        }
    }
}

/// One `--platform` value, read as containerd reads it.
pub(crate) fn parse_platform(s: &str) -> Result<rbuild_oci::Platform, rbuild_oci::PlatformError> {
    s.parse()
}

/// `docker build` flags.
#[derive(Args, Debug, Clone)]
pub struct BuildArgs {
    /// Build context directory.
    pub context: Option<PathBuf>,
    /// Name and optionally a tag (`name:tag`); repeatable. Checked with the docker reference
    /// grammar before anything runs.
    #[arg(short = 't', long = "tag", value_parser = rbuild_build::parse_tag)]
    pub tags: Vec<String>,
    /// Dockerfile path (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Build-time variable `KEY=VALUE` (or `KEY` to take it from the environment).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Stage to build.
    #[arg(long)]
    pub target: Option<String>,
    /// Target platform(s): PLATFORM[,PLATFORM...] (`linux/amd64`, `linux/arm64`,
    /// `linux/arm/v7`); repeatable. More than one builds an image index.
    #[arg(long = "platform", value_name = "PLATFORM", value_delimiter = ',',
          value_parser = parse_platform)]
    pub platforms: Vec<rbuild_oci::Platform>,
    /// Do not use the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Do not use the cache for these stages (and the steps that depend on them):
    /// STAGE[,STAGE...]; repeatable.
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,
    /// Named context for FROM, COPY --from and RUN --mount from=: NAME=DIR (a local
    /// directory with its own .dockerignore) or NAME=docker-image://REF (an image instead of
    /// the image or stage NAME); repeatable.
    #[arg(long = "build-context", value_name = "NAME=DIR|docker-image://REF",
          value_parser = clap::value_parser!(BuildContextSpec))]
    pub build_contexts: Vec<BuildContextSpec>,
    /// Always resolve base image tags again.
    #[arg(long)]
    pub pull: bool,
    /// Network of RUN steps: default (a private network namespace with outbound access),
    /// host (implies `--allow network.host`) or none.
    #[arg(long, value_enum, default_value = "default")]
    pub network: run_opts::NetworkArg,
    /// Grant an entitlement to the Dockerfile: network.host (`RUN --network=host`),
    /// security.insecure (`RUN --security=insecure`); repeatable or comma-separated.
    #[arg(long = "allow", value_name = "ENTITLEMENT", value_parser = run_opts::parse_allow)]
    pub allow: Vec<String>,
    /// Add a custom host-to-IP mapping (`NAME:IP`) to /etc/hosts of every RUN; repeatable.
    #[arg(long = "add-host", value_name = "NAME:IP", value_parser = run_opts::parse_add_host)]
    pub add_hosts: Vec<rbuild_llb::ExtraHost>,
    /// Memory limit of each RUN (e.g. 64m, 1g; units b, k, m, g, t).
    #[arg(short = 'm', long, value_name = "BYTES", value_parser = run_opts::parse_size)]
    pub memory: Option<u64>,
    /// Memory + swap limit of each RUN; -1 for unlimited swap (default: twice --memory).
    #[arg(long = "memory-swap", value_name = "BYTES", allow_hyphen_values = true,
          value_parser = run_opts::parse_memory_swap)]
    pub memory_swap: Option<rbuild_sandbox::SwapLimit>,
    /// CPUs each RUN may use (a decimal, e.g. 1.5).
    #[arg(long, value_name = "DECIMAL", value_parser = run_opts::parse_cpus)]
    pub cpus: Option<u64>,
    /// Relative CPU weight of each RUN (1024 is the default weight).
    #[arg(long = "cpu-shares", value_name = "SHARES", allow_hyphen_values = true)]
    pub cpu_shares: Option<i64>,
    /// CPUs each RUN may run on (0-3, 0,1).
    #[arg(long = "cpuset-cpus", value_name = "CPUS")]
    pub cpuset_cpus: Option<String>,
    /// Maximum number of processes of each RUN (-1 or 0: unlimited).
    #[arg(long = "pids-limit", value_name = "N", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Resource limit of each RUN: NAME=SOFT[:HARD] (nofile, nproc, core, stack, ...); repeatable.
    // Help text for clap, not rustdoc: its brackets are literal.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]", value_parser = run_opts::parse_ulimit)]
    pub ulimits: Vec<rbuild_sandbox::Ulimit>,
    /// Size of /dev/shm in each RUN (default 64m).
    #[arg(long = "shm-size", value_name = "BYTES", value_parser = run_opts::parse_size)]
    pub shm_size: Option<u64>,
    /// Parent cgroup of each RUN's cgroup (relative to the cgroup root).
    #[arg(long = "cgroup-parent", value_name = "CGROUP")]
    pub cgroup_parent: Option<String>,
    /// Progress output: auto, tty, plain, json (default: $BUILDKIT_PROGRESS, else auto).
    #[arg(
        long,
        value_enum,
        env = "BUILDKIT_PROGRESS",
        default_value = "auto",
        hide_env_values = true
    )]
    pub progress: progress::ProgressMode,
    /// Output (repeatable): type=local,dest=DIR (the final filesystem) | type=tar,dest=FILE
    /// (it as one tar) | type=oci,dest=FILE[,tar=false][,name=REF] (OCI layout) |
    /// type=docker,dest=FILE[,name=REF] (`docker load` archive) | type=image[,name=REF][,push=true]
    /// (the store) | type=registry,name=REF (push). Archives take dest=- for standard output;
    /// `-` alone is type=tar,dest=- and a bare DIR type=local,dest=DIR. Layer compression:
    /// compression=gzip|zstd|uncompressed[,compression-level=N][,force-compression=true].
    #[arg(short = 'o', long = "output", value_parser = clap::value_parser!(OutputSpec))]
    pub outputs: Vec<OutputSpec>,
    /// Push the image to the registries named by the tags (shorthand for type=image,push=true).
    #[arg(long)]
    pub push: bool,
    /// Load the image into the docker daemon (shorthand for type=docker streamed into it):
    /// the daemon's unix socket is $DOCKER_HOST (unix://PATH), else /var/run/docker.sock.
    #[arg(long)]
    pub load: bool,
    /// Write build result metadata (digest, descriptor, names) as JSON, like buildx.
    #[arg(long = "metadata-file")]
    pub metadata_file: Option<PathBuf>,
    /// Print only the image ID (`sha256:...`, the config digest) on stdout; no progress.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Only lint the Dockerfile (as `rbuild check`), do not build; exit 1 on findings.
    #[arg(long)]
    pub check: bool,
    /// Write the image ID (the config digest) to FILE.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Solve on a remote BuildKit daemon instead of locally: `docker` (the local dockerd's
    /// embedded BuildKit, as buildx's docker driver), `docker-unix:///PATH`, `unix:///PATH`
    /// (buildkitd) or `tcp://HOST:PORT` (buildkitd; TLS with the --tls* flags, as buildctl's).
    #[arg(long, value_name = "ADDR", value_parser = clap::value_parser!(rbuild_remote::Builder))]
    pub builder: Option<rbuild_remote::Builder>,
    /// CA certificate of a `tcp://` builder (buildctl's --tlscacert).
    #[arg(long, value_name = "FILE", requires = "builder")]
    pub tlscacert: Option<PathBuf>,
    /// Client certificate for a `tcp://` builder (buildctl's --tlscert).
    #[arg(long, value_name = "FILE", requires = "builder")]
    pub tlscert: Option<PathBuf>,
    /// Client key for a `tcp://` builder (buildctl's --tlskey).
    #[arg(long, value_name = "FILE", requires = "builder")]
    pub tlskey: Option<PathBuf>,
    /// Server name to verify a `tcp://` builder's certificate against (buildctl's
    /// --tlsservername).
    #[arg(long, value_name = "NAME", requires = "builder")]
    pub tlsservername: Option<String>,
    /// Set a label of the image (`KEY=VALUE`; `KEY` alone for an empty value); repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = build::parse_label)]
    pub labels: Vec<(String, String)>,
    /// Add an annotation to the image manifest (`KEY=VALUE` or `manifest:KEY=VALUE`); repeatable.
    #[arg(long = "annotation", value_name = "[manifest:]KEY=VALUE",
          value_parser = build::parse_annotation)]
    pub annotations: Vec<(String, String)>,
    /// Secret for `RUN --mount=type=secret`: id=ID[,src=FILE|,env=VAR][,type=file|env].
    #[arg(long = "secret", value_parser = clap::value_parser!(SecretSpec))]
    pub secrets: Vec<SecretSpec>,
    /// SSH agent socket for `RUN --mount=type=ssh`: default (the socket in $SSH_AUTH_SOCK),
    /// ID (the same socket under another id) or ID=SOCKET; sockets only, not key files.
    #[arg(long = "ssh", value_name = "default|ID[=SOCKET]",
          value_parser = clap::value_parser!(rbuild_build::SshSpec))]
    pub ssh: Vec<rbuild_build::SshSpec>,
    /// Export the build cache: type=registry,ref=REF[,mode=min|max] or type=local,dest=DIR[,mode=..].
    #[arg(long = "cache-to", value_parser = clap::value_parser!(CacheToSpec))]
    pub cache_to: Vec<CacheToSpec>,
    /// Import a build cache: type=registry,ref=REF or type=local,src=DIR.
    #[arg(long = "cache-from", value_parser = clap::value_parser!(CacheFromSpec))]
    pub cache_from: Vec<CacheFromSpec>,
    /// Storage budget of the automatic garbage collection after a build: SIZE (e.g. 20GB), or
    /// 0/off to disable [env: RBUILD_GC_KEEP_STORAGE] (default: 10% of the root's filesystem,
    /// at most 20GB).
    #[arg(long = "gc-keep-storage", value_name = "SIZE")]
    pub gc_keep_storage: Option<String>,
    /// `--debug-on-fail`, `--debug-shell`.
    #[command(flatten)]
    pub debug: debug::DebugFlags,
}

/// Whether a command needs rootless mode's user namespace when run as an ordinary user: every
/// command that reads or writes the store (snapshots hold files of in-image owners).
fn needs_namespace(command: &Command) -> bool {
    !matches!(
        command,
        Command::Version
            | Command::Completion(_)
            | Command::Check(_)
            | Command::Login(_)
            | Command::Logout(_)
    )
}

/// The spec error behind a clap "invalid value" error, if a spec's `FromStr` failed.
fn spec_error(e: &clap::Error) -> Option<&SpecError> {
    std::error::Error::source(e).and_then(|s| s.downcast_ref::<SpecError>())
}

fn main() -> ExitCode {
    rbuild_sandbox::helper_main_if_requested();
    pipe::exit_quietly_on_closed_pipe();
    let cli = match Cli::try_parse_from(with_default_subcommand(std::env::args_os().collect())) {
        Ok(cli) => cli,
        Err(e) => {
            // A bad `--output`/`--secret`/`--cache-*` spec reads as rbuild's own message (and
            // exit code), not clap's "invalid value" line.
            if let Some(spec) = spec_error(&e) {
                let report = errors::Report::from(spec);
                eprintln!("{report}");
                return ExitCode::from(report.exit_code());
            }
            if e.kind() == clap::error::ErrorKind::InvalidSubcommand {
                eprint!("{}", e.render());
                eprint!("{}", subcommand_list());
                return ExitCode::from(2);
            }
            e.exit()
        }
    };
    // As an ordinary user, everything that touches the store runs as "root" of a user namespace
    // of its own (before any thread exists).
    if needs_namespace(&cli.command) {
        if let Err(e) = rbuild_sandbox::rootless::enter_if_needed() {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    // For prune and du, -v lists records (as docker's -v) rather than turning on debug logs.
    let listing = matches!(cli.command, Command::Prune(_) | Command::Du(_));
    let mut log = cli.log.clone();
    if listing {
        log.verbose = 0;
    }
    logging::init(&log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Build(args) => runtime.block_on(build::run(*args, &cli.store)),
        Command::Images(args) => images::run(&args, &cli.store),
        Command::Rmi(args) => rmi::run_rmi(&args, &cli.store),
        Command::Tag(args) => rmi::run_tag(&args, &cli.store),
        Command::Inspect(args) => inspect::run_inspect(&args, &cli.store),
        Command::History(args) => inspect::run_history(&args, &cli.store),
        Command::Version => version::run_version(),
        Command::Completion(args) => version::run_completion(&args),
        Command::Push(args) => runtime.block_on(push::run_push(args, &cli.store)),
        Command::Login(args) => runtime.block_on(push::run_login(args)),
        Command::Prune(args) => prune::run_prune(args, cli.log.verbose > 0, &cli.store),
        Command::Du(args) => prune::run_du(args, cli.log.verbose > 0, &cli.store),
        Command::Logout(args) => runtime.block_on(pull::run_logout(args)),
        Command::Pull(args) => runtime.block_on(pull::run_pull(args, &cli.store)),
        Command::Import(args) => runtime.block_on(import::run_import(args, &cli.store)),
        Command::Check(args) => check::run(&args),
        Command::Graph(args) => runtime.block_on(graph::run(*args, &cli.store)),
        Command::Debug(args) => debug::run(args, &cli.store),
        Command::Info => info::run(&cli.store),
    };
    // Do not wait for blocking tasks (e.g. a RUN still going after a signal): leaving the process
    // kills the sandbox helper (PR_SET_PDEATHSIG) and the next run sweeps what it left.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(report) => {
            if progress::json_errors() {
                progress::print_error(&report);
            } else {
                let text = report.to_string();
                if !text.is_empty() {
                    eprintln!("{text}");
                }
            }
            ExitCode::from(report.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(with_default_subcommand(
            args.iter().map(std::ffi::OsString::from).collect(),
        ))
    }

    #[test]
    fn specs_are_parsed_by_clap() {
        let cli = parse(&[
            "rbuild",
            "-o",
            "type=local,dest=/out",
            "--secret",
            "id=s,src=/f",
            "--cache-to",
            "type=local,dest=/c,mode=max",
            "--cache-from",
            "type=registry,ref=r/c",
            ".",
        ])
        .unwrap();
        let Command::Build(args) = cli.command else {
            panic!("not a build")
        };
        assert_eq!(
            args.outputs[0].output,
            rbuild_build::Output::Local {
                dest: "/out".into()
            }
        );
        assert_eq!(args.secrets[0].id, "s");
        assert!(args.cache_to[0].max);
        assert_eq!(args.cache_from[0].location.to_string(), "r/c");
    }

    #[test]
    fn a_bad_spec_keeps_its_own_message_and_exit_code() {
        let err = parse(&["rbuild", "--secret", "src=/f", "."])
            .map(|_| ())
            .unwrap_err();
        let report = errors::Report::from(spec_error(&err).expect("a spec error"));
        assert_eq!(
            report.to_string(),
            "error: invalid secret `src=/f`: id is required"
        );
        assert_eq!(report.exit_code(), 2);
        let err = parse(&["rbuild", "-o", "type=oci", "."])
            .map(|_| ())
            .unwrap_err();
        let report = errors::Report::from(spec_error(&err).expect("a spec error"));
        assert_eq!(
            report.to_string(),
            "error: --output type=oci needs dest=PATH"
        );
        assert_eq!(report.exit_code(), 1);
        let err = parse(&["rbuild", "--bogus", "."]).map(|_| ()).unwrap_err();
        assert!(spec_error(&err).is_none());
    }
}
