//! `rbuild inspect` (a JSON array like `docker image inspect`) and `rbuild history` (the
//! config's history, newest first, like `docker history`). A multi-platform image shows one
//! platform's image (`--platform`, else the host's) under the index's ID, digest and descriptor,
//! as docker with the containerd image store does.

use crate::errors::Report;
use crate::table::{human_size, print, render, report, since};
use crate::StoreArgs;
use clap::Args;
use rbuild_build::images::{parse_rfc3339, split_name, ImageSummary, Images};
use rbuild_build::StateDir;
use serde_json::{json, Value};

/// `rbuild inspect` arguments.
#[derive(Args, Debug, Clone)]
pub struct InspectArgs {
    /// Images: NAME[:TAG], an image ID (prefix) or a manifest digest.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Of a multi-platform image, show this platform's image (default: the host's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
}

/// `rbuild history` arguments.
#[derive(Args, Debug, Clone)]
pub struct HistoryArgs {
    /// The image: NAME[:TAG], an image ID (prefix) or a manifest digest.
    pub image: String,
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Of a multi-platform image, show this platform's history (default: the host's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
}

/// `--platform`'s value, read as containerd reads a specifier (a usage error otherwise).
fn platform_arg(arg: &Option<String>) -> Result<Option<rbuild_oci::Platform>, Report> {
    arg.as_deref()
        .map(str::parse::<rbuild_oci::Platform>)
        .transpose()
        .map_err(|e| Report::new(format!("error: {e}")).with_code(2))
}

/// The image `name` names and, for a multi-platform image, its `platform`'s image: the
/// named image (its ID, names, descriptor) and the image whose config and layers are shown.
fn resolve_shown(
    images: &Images,
    name: &str,
    platform: Option<&rbuild_oci::Platform>,
) -> Result<(ImageSummary, ImageSummary), rbuild_build::images::ImageError> {
    let top = images.resolve(name)?;
    if !top.is_index() {
        return Ok((top.clone(), top));
    }
    let shown = images.resolve_platform(name, platform)?;
    Ok((top, shown))
}

/// Runs `rbuild inspect`: the images found, as one JSON array; a missing one is an error
/// (exit 1) after the array, as docker.
pub fn run_inspect(args: &InspectArgs, store: &StoreArgs) -> Result<(), Report> {
    let platform = platform_arg(&args.platform)?;
    let images = Images::open(&StateDir::new(store.root_dir())).map_err(report)?;
    let mut found = Vec::new();
    let mut failed = None;
    for name in &args.images {
        match resolve_shown(&images, name, platform.as_ref()) {
            Ok((top, shown)) => found.push(inspect_json(&top, &shown)),
            Err(e) => {
                if let Some(previous) = failed.replace(report(e)) {
                    eprintln!("{previous}");
                }
            }
        }
    }
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    serde::Serialize::serialize(&found, &mut ser)
        .map_err(|e| Report::from_error("formatting JSON", &e))?;
    buf.push(b'\n');
    print(&String::from_utf8_lossy(&buf))?;
    failed.map_or(Ok(()), Err)
}

/// Docker's `image inspect` object for one image: `image` as named (ID, names, digest,
/// descriptor) showing the config and size of `shown` (itself, or one platform of an index).
fn inspect_json(image: &ImageSummary, shown: &ImageSummary) -> Value {
    let mut tags = image.names.clone();
    tags.sort();
    let mut repos: Vec<String> = tags.iter().map(|n| split_name(n).0).collect();
    repos.dedup();
    let config = &shown.record.config;
    let diff_ids: Vec<String> = config
        .rootfs
        .diff_ids
        .iter()
        .map(|d| d.to_string())
        .collect();
    let mut out = json!({
        "Id": image.id().to_string(),
        "RepoTags": tags,
        "RepoDigests": repos
            .iter()
            .map(|r| format!("{r}@{}", image.digest()))
            .collect::<Vec<_>>(),
        "Parent": "",
        "Comment": "",
        "Created": config.created.clone().unwrap_or_default(),
        "DockerVersion": "",
        "Author": config.author.clone().unwrap_or_default(),
        "Config": config.config,
        "Architecture": config.architecture,
        "Os": config.os,
        "Size": shown.size,
        "RootFS": { "Type": "layers", "Layers": diff_ids },
        "Metadata": { "LastTagTime": "0001-01-01T00:00:00Z" },
        "Descriptor": image.descriptor,
    });
    if let (Some(v), Some(map)) = (&config.variant, out.as_object_mut()) {
        map.insert("Variant".into(), json!(v));
    }
    out
}

/// Runs `rbuild history IMAGE`.
pub fn run_history(args: &HistoryArgs, store: &StoreArgs) -> Result<(), Report> {
    let platform = platform_arg(&args.platform)?;
    let images = Images::open(&StateDir::new(store.root_dir())).map_err(report)?;
    let (image, shown) = resolve_shown(&images, &args.image, platform.as_ref()).map_err(report)?;
    let id = if args.no_trunc {
        image.id().to_string()
    } else {
        image.id().hex()[..12].to_string()
    };
    // The layers in order, matched to the history entries that made one.
    let mut layers = shown.record.manifest.layers.iter();
    let mut rows = Vec::new();
    for entry in &shown.record.config.history {
        let size = if entry.empty_layer {
            0
        } else {
            match layers.next() {
                Some(l) => images.layer_size(l).map_err(report)?,
                None => 0,
            }
        };
        let created_by = entry.created_by.clone().unwrap_or_default();
        let created_by = created_by
            .strip_prefix("/bin/sh -c #(nop) ")
            .map(|s| s.trim().to_string())
            .unwrap_or(created_by);
        let created_by = if args.no_trunc {
            created_by
        } else {
            ellipsis(&created_by, 45)
        };
        rows.push(vec![
            "<missing>".to_string(),
            since(entry.created.as_deref().and_then(parse_rfc3339)),
            created_by,
            human_size(size),
            entry.comment.clone().unwrap_or_default(),
        ]);
    }
    rows.reverse();
    if let Some(top) = rows.first_mut() {
        top[0] = id.clone();
    }
    if args.quiet {
        let text: String = rows.iter().map(|r| format!("{}\n", r[0])).collect();
        return print(&text);
    }
    let mut table = vec![["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()];
    table.extend(rows);
    print(&render(&table))
}

/// Docker's `stringutils.Ellipsis`: at most `max` characters, the last one `…` when cut.
fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_commands_are_cut_with_an_ellipsis() {
        assert_eq!(ellipsis("short", 45), "short");
        let long = "x".repeat(50);
        let cut = ellipsis(&long, 45);
        assert_eq!(cut.chars().count(), 45);
        assert!(cut.ends_with('…'));
    }
}
