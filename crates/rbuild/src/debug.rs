//! Debugging a failed RUN: the build flags (`--debug-on-fail[=shell|keep]`, `--debug-shell`)
//! turned into the library's [`DebugMode`], the hint a kept failure prints, and `rbuild debug
//! ID`, which enters a kept state again.

use crate::errors::Report;
use crate::progress::ProgressMode;
use crate::StoreArgs;
use clap::{Args, ValueEnum};
use rbuild_build::debug::{DebugMode, KeptRun};
use rbuild_build::StateDir;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

/// The shell a debug session runs when `--debug-shell` does not name one.
const DEFAULT_SHELL: &str = "/bin/sh";

/// What `--debug-on-fail` does when a RUN fails.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebugOnFail {
    /// Open a shell in the failed step (needs a terminal on standard input).
    Shell,
    /// Keep the failed step's state and print the `rbuild debug ID` that enters it.
    Keep,
}

/// The build's debug flags.
#[derive(Args, Debug, Clone, Default)]
pub struct DebugFlags {
    /// When a RUN fails: open a shell in its sandbox, over its filesystem as it left it
    /// (`shell`, the default; needs a terminal), or keep that state for `rbuild debug ID`
    /// (`keep`, removed by `rbuild prune`). The build then fails with the RUN's error. With a
    /// shell, progress is shown as plain lines.
    #[arg(long = "debug-on-fail", value_name = "MODE", value_enum, num_args = 0..=1,
          require_equals = true, default_missing_value = "shell")]
    pub debug_on_fail: Option<DebugOnFail>,
    /// The command of the debug shell (default /bin/sh), split at whitespace.
    #[arg(long = "debug-shell", value_name = "CMD")]
    pub debug_shell: Option<String>,
}

/// `rbuild debug` flags.
#[derive(Args, Debug, Clone)]
pub struct DebugArgs {
    /// The kept failed step (its ID, printed by `rbuild build --debug-on-fail=keep`).
    pub id: String,
    /// The command of the shell (default /bin/sh), split at whitespace.
    #[arg(long = "shell", value_name = "CMD")]
    pub shell: Option<String>,
}

/// A shell command line as argv.
fn shell_argv(cmd: Option<&str>) -> Result<Vec<String>, Report> {
    let argv: Vec<String> = cmd
        .unwrap_or(DEFAULT_SHELL)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if argv.is_empty() {
        return Err(Report::new("error: the debug shell command is empty").with_code(2));
    }
    Ok(argv)
}

/// The states a build kept (filled while it runs).
pub type Kept = Arc<Mutex<Vec<KeptRun>>>;

/// The library's debug mode for the flags, and where kept states are collected.
pub fn mode(flags: &DebugFlags) -> Result<(DebugMode, Kept), Report> {
    let kept = Kept::default();
    let mode = match flags.debug_on_fail {
        None => {
            if flags.debug_shell.is_some() {
                return Err(Report::new("error: --debug-shell needs --debug-on-fail").with_code(2));
            }
            DebugMode::Off
        }
        Some(DebugOnFail::Shell) => {
            if !std::io::stdin().is_terminal() {
                return Err(Report::new(
                    "error: --debug-on-fail needs a terminal on standard input; \
                     use --debug-on-fail=keep and `rbuild debug ID` later",
                )
                .with_code(2));
            }
            DebugMode::Shell {
                shell: shell_argv(flags.debug_shell.as_deref())?,
                on_error: Arc::new(|e: &str| eprintln!("error: debug shell: {e}")),
            }
        }
        Some(DebugOnFail::Keep) => {
            let sink = kept.clone();
            DebugMode::Keep {
                on_kept: Arc::new(move |run: &KeptRun| {
                    if let Ok(mut runs) = sink.lock() {
                        runs.push(run.clone());
                    }
                }),
                on_error: Arc::new(|e: &str| {
                    eprintln!("error: keeping the failed step's state: {e}")
                }),
            }
        }
    };
    Ok((mode, kept))
}

/// The progress mode of a build with these flags: with a debug shell, a live (tty) view would
/// draw over the shell, so the progress is shown as plain lines instead.
pub fn progress_mode(flags: &DebugFlags, mode: ProgressMode) -> ProgressMode {
    match (flags.debug_on_fail, mode) {
        (Some(DebugOnFail::Shell), ProgressMode::Auto | ProgressMode::Tty) => ProgressMode::Plain,
        _ => mode,
    }
}

/// The failed build's report, followed by how to enter each kept state.
pub fn with_hints(report: Report, kept: &Kept) -> Report {
    let runs = kept.lock().map(|r| r.clone()).unwrap_or_default();
    if runs.is_empty() {
        return report;
    }
    let mut text = report.to_string();
    for run in runs {
        text.push_str(&format!(
            "\nThe failed step's state is kept; to enter it: rbuild debug {}",
            run.id
        ));
    }
    Report::new(text).with_code(report.exit_code())
}

/// Runs `rbuild debug ID`: a shell in the kept state; exits with the shell's status.
pub fn run(args: DebugArgs, store: &StoreArgs) -> Result<(), Report> {
    let state = StateDir::new(store.root_dir());
    let shell = shell_argv(args.shell.as_deref())?;
    rbuild_build::debug::kept_run(&state, &args.id)
        .map_err(|e| Report::new(format!("error: {e}")))?;
    if !std::io::stdin().is_terminal() {
        return Err(
            Report::new("error: rbuild debug needs a terminal on standard input").with_code(2),
        );
    }
    let engine = crate::run_opts::engine_settings(false)?;
    let status = rbuild_build::debug::enter(&state, &args.id, shell, engine.process_sandbox)
        .map_err(|e| Report::from_error("debug", &e))?;
    // The shell's own status is the command's, as `docker run`'s (it said why itself).
    match status {
        rbuild_sandbox::ExitStatus::Code(0) => Ok(()),
        rbuild_sandbox::ExitStatus::Code(c) => std::process::exit(c),
        rbuild_sandbox::ExitStatus::Signal(s) => std::process::exit(128 + s),
        rbuild_sandbox::ExitStatus::OomKilled { .. } => Err(Report::new(
            "error: the debug shell was killed: out of memory",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_commands_split_at_whitespace() {
        assert_eq!(shell_argv(None).unwrap(), vec!["/bin/sh"]);
        assert_eq!(
            shell_argv(Some("/bin/bash  -l")).unwrap(),
            vec!["/bin/bash", "-l"]
        );
        assert_eq!(shell_argv(Some("  ")).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn keep_collects_states_and_off_rejects_a_lone_shell() {
        let flags = DebugFlags {
            debug_on_fail: None,
            debug_shell: Some("/bin/bash".into()),
        };
        assert_eq!(mode(&flags).map(|_| ()).unwrap_err().exit_code(), 2);
        let flags = DebugFlags {
            debug_on_fail: Some(DebugOnFail::Keep),
            debug_shell: None,
        };
        let (mode, kept) = mode(&flags).unwrap();
        assert!(matches!(mode, DebugMode::Keep { .. }));
        assert!(kept.lock().unwrap().is_empty());
        assert_eq!(progress_mode(&flags, ProgressMode::Tty), ProgressMode::Tty);
        let shell = DebugFlags {
            debug_on_fail: Some(DebugOnFail::Shell),
            debug_shell: None,
        };
        assert_eq!(
            progress_mode(&shell, ProgressMode::Auto),
            ProgressMode::Plain
        );
        assert_eq!(
            progress_mode(&shell, ProgressMode::Json),
            ProgressMode::Json
        );
    }
}
