//! `rbuild rmi` and `rbuild tag`: removing and adding names of stored images, as docker does
//! (`Untagged: NAME`, `Deleted: ID`). Removal drops names only; blobs wait for garbage collection.

use crate::errors::Report;
use crate::table::{print, report};
use crate::StoreArgs;
use clap::Args;
use rbuild_build::images::{Images, Removal};
use rbuild_build::StateDir;

/// `rbuild rmi` arguments.
#[derive(Args, Debug, Clone)]
pub struct RmiArgs {
    /// Remove an image by ID even when several repositories name it.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Images: NAME[:TAG], an image ID (prefix) or a manifest digest.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

/// `rbuild tag` arguments.
#[derive(Args, Debug, Clone)]
pub struct TagArgs {
    /// The image to name: NAME[:TAG], an image ID (prefix) or a manifest digest.
    pub source: String,
    /// The new name, NAME[:TAG].
    pub target: String,
}

/// Runs `rbuild rmi`: every image in turn; errors are reported and the exit code is 1 when
/// any failed (as docker).
pub fn run_rmi(args: &RmiArgs, store: &StoreArgs) -> Result<(), Report> {
    let images = Images::open(&StateDir::new(store.root_dir())).map_err(report)?;
    let mut failed = None;
    for name in &args.images {
        match images.remove(name, args.force) {
            Ok(removals) => {
                let text: String = removals
                    .iter()
                    .map(|r| match r {
                        Removal::Untagged(n) => format!("Untagged: {n}\n"),
                        Removal::Deleted(d) => format!("Deleted: {d}\n"),
                    })
                    .collect();
                print(&text)?;
            }
            Err(e) => {
                if let Some(previous) = failed.replace(report(e)) {
                    eprintln!("{previous}");
                }
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

/// Runs `rbuild tag SOURCE TARGET`.
pub fn run_tag(args: &TagArgs, store: &StoreArgs) -> Result<(), Report> {
    Images::open(&StateDir::new(store.root_dir()))
        .and_then(|i| i.tag(&args.source, &args.target))
        .map_err(report)
}
