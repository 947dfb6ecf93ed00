//! `rbuild push` and `rbuild login` (the push itself and the metadata document are the
//! library's: [`rbuild_build::push_image`], [`rbuild_build::metadata`]), and writing buildx-style
//! `--metadata-file` JSON.

use crate::errors::Report;
use crate::StoreArgs;
use clap::Args;
use rbuild_build::StateDir;
use rbuild_oci::{Descriptor, Store};
use rbuild_registry::{Reference, RegistryClient, RegistryNotice};
use std::io::Read;
use std::path::{Path, PathBuf};

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

/// Pushes the image `desc` of `store` to every name, printing the registry's notices and the
/// push's counters on stderr and the pushed digest on stdout.
async fn push_and_print(
    store: &Store,
    desc: &Descriptor,
    names: &[String],
    jobs: usize,
) -> Result<(), Report> {
    let summary = rbuild_build::push_image(store, desc, names, jobs, |n: &RegistryNotice| {
        eprintln!("push: {n}")
    })
    .await?;
    crate::progress::print_pushed(&summary);
    println!("{}", desc.digest);
    Ok(())
}

/// Writes buildx's metadata JSON (see [`rbuild_build::metadata`]) to `path`.
pub fn write_metadata(path: &Path, doc: &serde_json::Value) -> Result<(), Report> {
    let text = serde_json::to_string_pretty(doc).unwrap_or_default();
    std::fs::write(path, text + "\n").map_err(|e| {
        Report::new(format!(
            "error: cannot write metadata file `{}`: {e}",
            path.display()
        ))
    })
}

/// Runs `rbuild push NAME...`.
pub async fn run_push(args: PushArgs, store_args: &StoreArgs) -> Result<(), Report> {
    let state = StateDir::new(store_args.root_dir());
    if !state.has_store() {
        return Err(Report::new(format!(
            "error: no image store at `{}` (build an image first)",
            state.root().display()
        )));
    }
    let store = Store::open(&state.store())
        .map_err(|e| Report::from_error("opening the image store", &e))?;
    // Group the names by image.
    let mut groups: Vec<(Descriptor, Vec<String>)> = Vec::new();
    for name in &args.names {
        let full = Reference::parse(name)
            .map_err(|e| Report::from_error(&format!("invalid image name `{name}`"), &e))?;
        let candidates = [
            name.clone(),
            rbuild_exporter::normalize_tag(name),
            full.to_string(),
        ];
        let mut found = None;
        for c in &candidates {
            if let Ok(Some(d)) = store.resolve_tag(c) {
                found = Some(d);
                break;
            }
        }
        let desc = match (found, &full.digest) {
            (Some(d), _) => d,
            (None, Some(digest)) if store.has_blob(digest) => {
                let bytes = store
                    .read_blob(digest)
                    .map_err(|e| Report::from_error("reading the image", &e))?;
                let mt = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| {
                        v.get("mediaType")
                            .and_then(|m| m.as_str())
                            .map(String::from)
                    })
                    .unwrap_or_else(|| rbuild_oci::MediaType::OCI_MANIFEST.to_string());
                Descriptor {
                    media_type: rbuild_oci::MediaType::new(&mt),
                    digest: digest.clone(),
                    size: bytes.len() as u64,
                    platform: None,
                    annotations: None,
                }
            }
            _ => {
                return Err(Report::new(format!(
                    "error: no image named `{name}` in the local store (see `rbuild images`)"
                )))
            }
        };
        match groups.iter_mut().find(|(d, _)| d.digest == desc.digest) {
            Some((_, v)) => v.push(full.to_string()),
            None => groups.push((desc, vec![full.to_string()])),
        }
    }
    let mut last = None;
    for (desc, names) in &groups {
        push_and_print(&store, desc, names, args.jobs).await?;
        last = Some((desc, names));
    }
    if let (Some(path), Some((desc, names))) = (&args.metadata_file, last) {
        write_metadata(path, &rbuild_build::metadata(&store, desc, names))?;
    }
    Ok(())
}

/// Runs `rbuild login [SERVER] -u USER (--password-stdin | -p PASSWORD)`.
pub async fn run_login(args: LoginArgs) -> Result<(), Report> {
    let server = args.server.clone().unwrap_or_else(|| "docker.io".into());
    let registry = server
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    let registry = match registry.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => registry,
    };
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
