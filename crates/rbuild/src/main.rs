//! The rbuild command-line interface: argument parsing (clap), progress rendering, output and
//! user-facing error reports with exit codes. The build pipeline itself is the `rbuild_build`
//! library.

// The doc comments of the flags are clap's help text (`[:HARD]`, `[,type=file|env]` are option
// syntax, not intra-doc links); escaping them would change `--help`.
#![allow(rustdoc::broken_intra_doc_links)]

mod build;
mod errors;
mod logging;
mod progress;
mod prune;
mod push;
mod run_opts;

use clap::{Args, Parser, Subcommand};
use rbuild_build::{CacheFromSpec, CacheToSpec, OutputSpec, SecretSpec, SpecError};
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
/// word is not a subcommand (skipping the global `--root` and logging flags).
fn with_default_subcommand(mut argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
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
        let known = [
            "build",
            "images",
            "push",
            "login",
            "prune",
            "du",
            "help",
            "--help",
            "-h",
            "--version",
            "-V",
        ];
        if !known.contains(&arg.as_ref()) {
            argv.insert(i, "build".into());
        }
        return argv;
    }
    argv
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build an image from a Dockerfile.
    Build(Box<BuildArgs>),
    /// List the images in the local store.
    Images,
    /// Push images of the local store to their registries.
    Push(push::PushArgs),
    /// Log in to a registry (saves credentials like `docker login`).
    Login(push::LoginArgs),
    /// Remove build cache, dangling images and unreachable data (like `docker builder prune`).
    Prune(prune::PruneArgs),
    /// Show disk usage of images, build cache, snapshots and cache mounts.
    Du(prune::DuArgs),
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
        if rustix::process::geteuid().is_root() {
            return PathBuf::from("/var/lib/rbuild");
        }
        match std::env::var_os("XDG_DATA_HOME") {
            Some(x) => PathBuf::from(x).join("rbuild"),
            None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".local/share/rbuild"),
        }
    }
}

/// `docker build` flags.
#[derive(Args, Debug, Clone)]
pub struct BuildArgs {
    /// Build context directory.
    pub context: Option<PathBuf>,
    /// Name and optionally a tag (`name:tag`); repeatable.
    #[arg(short = 't', long = "tag")]
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
    /// Do not use the cache.
    #[arg(long)]
    pub no_cache: bool,
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
    /// Progress output: auto, tty, plain, json.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: progress::ProgressMode,
    /// Output: type=oci,dest=PATH[,tar=false] | type=docker,dest=FILE | type=local,dest=DIR.
    #[arg(short = 'o', long = "output", value_parser = clap::value_parser!(OutputSpec))]
    pub outputs: Vec<OutputSpec>,
    /// Push the image to the registries named by the tags (shorthand for type=image,push=true).
    #[arg(long)]
    pub push: bool,
    /// Write build result metadata (digest, descriptor, names) as JSON, like buildx.
    #[arg(long = "metadata-file")]
    pub metadata_file: Option<PathBuf>,
    /// Secret for `RUN --mount=type=secret`: id=ID[,src=FILE|,env=VAR][,type=file|env].
    #[arg(long = "secret", value_parser = clap::value_parser!(SecretSpec))]
    pub secrets: Vec<SecretSpec>,
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
}

/// The spec error behind a clap "invalid value" error, if a spec's `FromStr` failed.
fn spec_error(e: &clap::Error) -> Option<&SpecError> {
    std::error::Error::source(e).and_then(|s| s.downcast_ref::<SpecError>())
}

fn main() -> ExitCode {
    rbuild_sandbox::helper_main_if_requested();
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
            e.exit()
        }
    };
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
        Command::Images => build::images(&cli.store),
        Command::Push(args) => runtime.block_on(push::run_push(args, &cli.store)),
        Command::Login(args) => runtime.block_on(push::run_login(args)),
        Command::Prune(args) => prune::run_prune(args, cli.log.verbose > 0, &cli.store),
        Command::Du(args) => prune::run_du(args, cli.log.verbose > 0, &cli.store),
    };
    // Do not wait for blocking tasks (e.g. a RUN still going after a signal): leaving the process
    // kills the sandbox helper (PR_SET_PDEATHSIG) and the next run sweeps what it left.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(report) => {
            eprintln!("{report}");
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
