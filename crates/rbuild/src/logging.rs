//! Debug logging: the `-v`/`--verbose` and `--debug` global flags and `RUST_LOG` turn on a
//! `tracing` subscriber that writes the libraries' events to stderr (cache keys and why each
//! step hit or missed the cache, registry requests, timings). Off by default: without a flag
//! or `RUST_LOG` no subscriber is installed and the output is unchanged.

use clap::{ArgAction, Args};
use tracing_subscriber::EnvFilter;

/// The logging flags (global: accepted before or after the subcommand).
#[derive(Args, Debug, Clone, Default)]
pub struct LogArgs {
    /// Log debug details to stderr: each step's cache key and why it hit or missed the cache,
    /// registry requests, timings (-vv: trace). RUST_LOG (e.g. rbuild=debug) overrides.
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Same as -v.
    #[arg(long, global = true)]
    pub debug: bool,
}

impl LogArgs {
    /// The filter the flags ask for: `RUST_LOG` when set, else debug (trace for `-vv`) for
    /// rbuild's crates (targets `rbuild*`), else `None` (no logging).
    fn filter(&self) -> Option<EnvFilter> {
        if let Some(spec) = std::env::var_os(EnvFilter::DEFAULT_ENV).filter(|s| !s.is_empty()) {
            // An unparsable directive is ignored, as tracing-subscriber does.
            return Some(EnvFilter::builder().parse_lossy(spec.to_string_lossy()));
        }
        let level = match (self.verbose, self.debug) {
            (0, false) => return None,
            (0 | 1, _) => "debug",
            _ => "trace",
        };
        Some(EnvFilter::new(format!("rbuild={level}")))
    }
}

/// Installs the stderr subscriber when the flags or `RUST_LOG` ask for logs.
pub fn init(args: &LogArgs) {
    let Some(filter) = args.filter() else {
        return;
    };
    // Fails only when a subscriber is already set (never, in the binary).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// True for the words of the logging flags (so that `rbuild -v .` still means `rbuild build`).
pub fn is_log_flag(arg: &str) -> bool {
    arg == "--debug"
        || arg == "--verbose"
        || (arg.len() > 1 && arg.starts_with('-') && arg[1..].bytes().all(|b| b == b'v'))
}
