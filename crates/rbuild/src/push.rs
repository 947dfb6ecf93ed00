//! `rbuild push` and `rbuild login` flags and output (resolving and pushing images and the
//! metadata document are the library's: [`rbuild_build::push_names`],
//! [`rbuild_build::ImageMetadata`]; a login's server name is the registry crate's
//! [`rbuild_registry::login_server`]), and writing buildx-style `--metadata-file` JSON.

use crate::errors::Report;
use crate::StoreArgs;
use clap::Args;
use rbuild_build::{BuildError, BuildEvent, ImageMetadata, Progress, StateDir};
use rbuild_registry::RegistryClient;
use rbuild_solver::ProgressSink;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `rbuild push` flags.
#[derive(Args, Debug, Clone)]
pub struct PushArgs {
    /// Image names in the local store (`registry/repo:tag`); names of the same image are pushed together.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Write the result (digest, descriptor, names) as JSON, like `docker buildx --metadata-file`.
    #[arg(long = "metadata-file")]
    pub metadata_file: Option<PathBuf>,
    /// Blobs uploaded at once.
    #[arg(long, default_value_t = 3)]
    pub jobs: usize,
}

/// `rbuild login` flags.
#[derive(Args, Debug, Clone)]
pub struct LoginArgs {
    /// The registry (`host[:port]`; Docker Hub when omitted).
    pub server: Option<String>,
    /// User name (`AWS` for ECR, `oauth2accesstoken` or `_json_key` for GCR/Artifact Registry).
    #[arg(short = 'u', long = "username")]
    pub username: Option<String>,
    /// Password (prefer --password-stdin).
    #[arg(short = 'p', long = "password")]
    pub password: Option<String>,
    /// Read the password from stdin.
    #[arg(long = "password-stdin")]
    pub password_stdin: bool,
}

/// The progress of `rbuild push`: registry notices and each image's counters on stderr, the
/// pushed digest on stdout.
struct PushProgress;

impl Progress for PushProgress {
    fn solver_sink(&self) -> ProgressSink {
        ProgressSink::discard()
    }

    fn event(&self, event: BuildEvent) {
        match event {
            BuildEvent::PushNotice(notice) => eprintln!("push: {notice}"),
            BuildEvent::Pushed(summary) => {
                crate::progress::print_pushed(&summary);
                println!("{}", summary.digest);
            }
            BuildEvent::Layer(p) => {
                crate::progress::layer_progress(crate::progress::ProgressMode::Plain, &p)
            }
            _ => {}
        }
    }
}

/// Writes buildx's metadata JSON (see [`rbuild_build::ImageMetadata`]) to `path`.
pub fn write_metadata(path: &Path, doc: &ImageMetadata) -> Result<(), Report> {
    let text = doc
        .to_json_pretty()
        .map_err(|e| Report::from_error("encoding the metadata file", &e))?;
    std::fs::write(path, text + "\n").map_err(|e| {
        Report::new(format!(
            "error: cannot write metadata file `{}`: {e}",
            path.display()
        ))
    })
}

/// Runs `rbuild push NAME...`: the library resolves the names to stored images and pushes each
/// image to its names ([`rbuild_build::push_names`]).
pub async fn run_push(args: PushArgs, store_args: &StoreArgs) -> Result<(), Report> {
    let state = StateDir::new(store_args.root_dir());
    if !state.has_store() {
        // Before the registry client is set up, as the push itself would find it.
        return Err(BuildError::NoStore {
            root: state.root().to_path_buf(),
        }
        .into());
    }
    let client = RegistryClient::new().map_err(|e| Report::from_error("registry client", &e))?;
    let pushed = rbuild_build::push_names(
        &state,
        &args.names,
        args.jobs,
        &client,
        Arc::new(PushProgress),
    )
    .await
    .map_err(Report::command)?;
    if let (Some(path), Some(last)) = (&args.metadata_file, pushed.last()) {
        write_metadata(path, &last.metadata)?;
    }
    Ok(())
}

/// Runs `rbuild login [SERVER] -u USER (--password-stdin | -p PASSWORD)`.
pub async fn run_login(args: LoginArgs) -> Result<(), Report> {
    let registry = rbuild_registry::login_server(args.server.as_deref());
    let Some(username) = args.username.clone().filter(|u| !u.is_empty()) else {
        return Err(Report::new("error: give a user name with -u USER").with_code(2));
    };
    let password = match (&args.password, args.password_stdin) {
        (Some(_), true) => {
            return Err(Report::new(
                "error: --password and --password-stdin are mutually exclusive",
            )
            .with_code(2))
        }
        (Some(p), false) => {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            p.clone()
        }
        (None, true) => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Report::new(format!("error: reading the password from stdin: {e}")))?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => {
            return Err(Report::new("error: give the password with --password-stdin").with_code(2))
        }
    };
    if password.is_empty() {
        return Err(Report::new("error: empty password").with_code(2));
    }
    let client = RegistryClient::new().map_err(|e| Report::from_error("registry client", &e))?;
    client
        .check_login(&registry, &username, &password)
        .await
        .map_err(|e| Report::from_error(&format!("login to {registry} failed"), &e))?;
    let path = rbuild_registry::docker_config_path();
    let saved = tokio::task::spawn_blocking(move || {
        rbuild_registry::save_login(&path, &registry, &username, &password)
    })
    .await
    .map_err(|e| Report::new(format!("error: internal task failed: {e}")))?
    .map_err(|e| Report::from_error("saving credentials", &e))?;
    match saved {
        rbuild_registry::SavedTo::File(p) => {
            eprintln!("Credentials saved to {}", p.display())
        }
        rbuild_registry::SavedTo::Helper(h) => eprintln!("Credentials saved with {h}"),
    }
    eprintln!("Login Succeeded");
    Ok(())
}
