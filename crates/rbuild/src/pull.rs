//! `rbuild pull` and `rbuild logout`: flags and docker's output lines (pulling into the store is
//! the library's [`rbuild_build::pull_image`]; removing credentials the registry crate's
//! [`rbuild_registry::remove_login`]).

use crate::errors::Report;
use crate::StoreArgs;
use clap::Args;
use rbuild_build::StateDir;
use rbuild_registry::{Reference, RegistryClient};

/// `rbuild pull` arguments.
#[derive(Args, Debug, Clone)]
pub struct PullArgs {
    /// The image: NAME[:TAG] or NAME@DIGEST (the host's platform is pulled).
    #[arg(value_name = "NAME[:TAG|@DIGEST]")]
    pub name: String,
    /// Print only the full image name.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// The platform to pull (`linux/arm64`; default: the host's); several, comma-separated,
    /// are stored as one image index of those platforms.
    #[arg(long, value_name = "PLATFORM[,PLATFORM]")]
    pub platform: Option<String>,
}

/// `rbuild logout` arguments.
#[derive(Args, Debug, Clone)]
pub struct LogoutArgs {
    /// The registry (`host[:port]`; Docker Hub when omitted).
    pub server: Option<String>,
}

/// Runs `rbuild pull`: docker's lines (`TAG: Pulling from REPO`, a line per layer, `Digest:`,
/// `Status:`) and the full name last, on stdout.
pub async fn run_pull(args: PullArgs, store: &StoreArgs) -> Result<(), Report> {
    let reference = Reference::parse(&args.name)
        .map_err(|e| Report::new(format!("error: {e}")).with_code(2))?;
    let client = RegistryClient::new().map_err(|e| Report::from_error("registry client", &e))?;
    let what = reference
        .digest
        .as_ref()
        .map(|d| d.to_string())
        .or_else(|| reference.tag.clone())
        .unwrap_or_else(|| "latest".to_string());
    if !args.quiet {
        crate::table::print(&format!("{what}: Pulling from {}\n", reference.repository))?;
    }
    let state = StateDir::new(store.root_dir());
    let platforms = match &args.platform {
        Some(p) => rbuild_oci::parse_platform_list(p)
            .map_err(|e| Report::new(format!("error: {e}")).with_code(2))?,
        None => Vec::new(),
    };
    let pulled = rbuild_build::pull_image_platforms(&state, &reference, &platforms, &client)
        .await
        .map_err(Report::command)?;
    let mut text = String::new();
    if !args.quiet {
        for layer in &pulled.layers {
            let short: String = layer.digest.hex().chars().take(12).collect();
            let status = if layer.existed {
                "Already exists"
            } else {
                "Pull complete"
            };
            text.push_str(&format!("{short}: {status}\n"));
        }
        text.push_str(&format!("Digest: {}\n", pulled.digest));
        let status = if pulled.up_to_date {
            "Image is up to date for"
        } else {
            "Downloaded newer image for"
        };
        text.push_str(&format!("Status: {status} {}\n", reference.familiar()));
    }
    text.push_str(&format!("{}\n", pulled.name));
    crate::table::print(&text)
}

/// Runs `rbuild logout [SERVER]` as docker: `Removing login credentials for SERVER`, or
/// `Not logged in to SERVER` when nothing was saved for it.
pub async fn run_logout(args: LogoutArgs) -> Result<(), Report> {
    let registry = rbuild_registry::login_server(args.server.as_deref());
    let path = rbuild_registry::docker_config_path();
    let shown = registry.clone();
    let removed =
        tokio::task::spawn_blocking(move || rbuild_registry::remove_login(&path, &registry))
            .await
            .map_err(|e| Report::new(format!("error: internal task failed: {e}")))?
            .map_err(|e| Report::from_error("removing credentials", &e))?;
    let text = if removed {
        format!("Removing login credentials for {shown}\n")
    } else {
        format!("Not logged in to {shown}\n")
    };
    crate::table::print(&text)
}
