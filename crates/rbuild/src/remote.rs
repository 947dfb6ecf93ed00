//! `rbuild build --builder ADDR`: hands the parsed request to `rbuild_remote`, renders its
//! progress like a local build's, prints the image ID and maps its errors.

use crate::errors::Report;
use crate::progress::{self, CliProgress};
use crate::BuildArgs;
use rbuild_build::BuildRequest;
use rbuild_remote::{Builder, RemoteBuildError};
use std::sync::Arc;

/// Runs the build on `builder`.
pub(crate) async fn run(
    request: BuildRequest,
    builder: &Builder,
    args: &BuildArgs,
    cli_progress: Option<Arc<CliProgress>>,
    lint: Option<&rbuild_lint::Report>,
) -> Result<(), Report> {
    let tls = rbuild_remote::TlsOptions {
        ca_cert: args.tlscacert.clone(),
        cert: args.tlscert.clone(),
        key: args.tlskey.clone(),
        server_name: args.tlsservername.clone(),
    };
    let built = rbuild_remote::build(request, builder, &tls).await;
    if let Some(p) = &cli_progress {
        p.finish(built.is_ok());
    }
    if let (Some(lint), false) = (lint, args.quiet) {
        if args.progress == progress::ProgressMode::Json {
            lint.findings.iter().for_each(progress::lint_warning);
        } else {
            crate::check::print_summary(lint, tracing::enabled!(tracing::Level::DEBUG));
        }
    }
    let result = built.map_err(|e| match e {
        RemoteBuildError::Plan(e) => Report::from(e),
        RemoteBuildError::Solve(text) => Report::new(text),
        RemoteBuildError::Remote(e) => Report::new(format!("ERROR: {e}")),
        RemoteBuildError::Unsupported(text) => Report::new(format!("ERROR: {text}")),
    })?;
    if let Some(digest) = result.digest() {
        if args.quiet {
            println!("{digest}");
        }
        if let Some(path) = &args.iidfile {
            std::fs::write(path, digest).map_err(|e| {
                Report::from_error(&format!("writing the image ID to {}", path.display()), &e)
            })?;
        }
    }
    if let Some(path) = &args.metadata_file {
        // buildx's metadata file: the exporter's response.
        let text = serde_json::to_string_pretty(&result.exporter_response)
            .map_err(|e| Report::from_error("encoding the build metadata", &e))?;
        std::fs::write(path, text).map_err(|e| {
            Report::from_error(&format!("writing the metadata to {}", path.display()), &e)
        })?;
    }
    Ok(())
}
