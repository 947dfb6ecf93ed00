//! `rbuild import`: flags and output of making an image from a root filesystem tarball (the
//! work is the library's [`rbuild_build::import::import_image`]); prints the image ID as
//! `docker import` does.

use crate::errors::Report;
use crate::StoreArgs;
use clap::Args;
use rbuild_build::import::{import_image, ImportRequest, ImportSource};
use rbuild_build::StateDir;

/// `rbuild import` arguments.
#[derive(Args, Debug, Clone)]
pub struct ImportArgs {
    /// The root filesystem tarball (plain or gzip tar): a file, an http(s) URL or `-` for stdin.
    #[arg(value_name = "FILE|URL|-")]
    pub source: String,
    /// The name to store the image under, NAME[:TAG] (docker reference grammar).
    #[arg(value_name = "NAME[:TAG]")]
    pub name: Option<String>,
    /// Apply a Dockerfile instruction to the image config (CMD, ENTRYPOINT, ENV, EXPOSE,
    /// HEALTHCHECK, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR); repeatable.
    #[arg(short = 'c', long = "change", value_name = "INSTRUCTION")]
    pub changes: Vec<String>,
    /// The history comment of the imported layer (default `Imported from SOURCE`).
    #[arg(short = 'm', long = "message")]
    pub message: Option<String>,
    /// The platform the config names (`linux/arm64`, `linux/arm/v7`; default: the host's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
}

/// Runs `rbuild import`: the image ID (`sha256:...`) on stdout.
pub async fn run_import(args: ImportArgs, store: &StoreArgs) -> Result<(), Report> {
    let platform = args
        .platform
        .as_deref()
        .map(str::parse::<rbuild_oci::Platform>)
        .transpose()
        .map_err(|e| Report::new(format!("error: {e}")).with_code(2))?;
    let request = ImportRequest {
        platform,
        source: ImportSource::parse(&args.source),
        name: args.name,
        changes: args.changes,
        message: args.message,
        // SOURCE_DATE_EPOCH from the environment pins `created`, as for builds.
        created: std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok()),
    };
    let imported = import_image(&StateDir::new(store.root_dir()), request)
        .await
        .map_err(|e| {
            let code = match e {
                rbuild_build::import::ImportError::InvalidReference(_)
                | rbuild_build::import::ImportError::NameRequired
                | rbuild_build::import::ImportError::DigestName(_)
                | rbuild_build::import::ImportError::BadChange(_) => 2,
                _ => 1,
            };
            Report::new(format!("error: {e}")).with_code(code)
        })?;
    crate::table::print(&format!("{}\n", imported.id))
}
