//! `rbuild version` (the client section of `docker version`) and `rbuild completion SHELL`
//! (shell completion scripts from the clap definition, via clap_complete).

use crate::errors::Report;
use crate::table::print;
use clap::{Args, CommandFactory};

/// `rbuild completion` arguments.
#[derive(Args, Debug, Clone)]
pub struct CompletionArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Runs `rbuild version`: version, git commit (when `RBUILD_GIT_COMMIT` was set at build
/// time), OS/Arch.
pub fn run_version() -> Result<(), Report> {
    let mut text = String::from("Client:\n");
    text.push_str(&format!(
        " Version:           {}\n",
        env!("CARGO_PKG_VERSION")
    ));
    if let Some(commit) = option_env!("RBUILD_GIT_COMMIT") {
        text.push_str(&format!(" Git commit:        {commit}\n"));
    }
    text.push_str(&format!(
        " OS/Arch:           {}/{}\n",
        std::env::consts::OS,
        go_arch(std::env::consts::ARCH)
    ));
    print(&text)
}

/// Go's GOARCH name of a Rust target architecture.
fn go_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Runs `rbuild completion SHELL`: the script on stdout.
pub fn run_completion(args: &CompletionArgs) -> Result<(), Report> {
    let mut cmd = crate::Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "rbuild", &mut buf);
    print(&String::from_utf8_lossy(&buf))
}
