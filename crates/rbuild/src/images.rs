//! `rbuild images`: the store's images as `docker images` shows them (REPOSITORY, TAG, IMAGE ID,
//! CREATED, SIZE; `-a` for dangling images too, `-q`, `--digests`, `--format table|json`). A
//! multi-platform image is one row (ID: the index digest); `--format json` names every image's
//! platforms (`Platform`, comma-separated), `--platforms` adds a PLATFORM column to the table.

use crate::errors::Report;
use crate::table::{go_time, human_size, print, render, report, since};
use crate::StoreArgs;
use clap::Args;
use rbuild_build::images::{split_name, ImageSummary, Images};
use rbuild_build::StateDir;

/// `rbuild images` flags.
#[derive(Args, Debug, Clone)]
pub struct ImagesArgs {
    /// Show all images, dangling ones too (untagged: `<none>` `<none>`, e.g. the previous
    /// build of a moved tag, kept until garbage collection); hidden by default.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only show image IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Show digests (the manifest digest).
    #[arg(long)]
    pub digests: bool,
    /// Don't truncate output (full image IDs).
    #[arg(long)]
    pub no_trunc: bool,
    /// Add a PLATFORM column (a multi-platform image's platforms, comma-separated).
    #[arg(long)]
    pub platforms: bool,
    /// Format output: table (default) or json (one JSON object per line).
    #[arg(long, value_name = "table|json")]
    pub format: Option<String>,
}

/// One row: an image under one of its names.
struct Row<'a> {
    image: &'a ImageSummary,
    repository: String,
    tag: String,
}

/// Runs `rbuild images`.
pub fn run(args: &ImagesArgs, store: &StoreArgs) -> Result<(), Report> {
    let format = args.format.as_deref().unwrap_or("table");
    if !matches!(format, "table" | "json") {
        return Err(Report::new(format!(
            "error: unsupported --format `{format}` (table, json)"
        ))
        .with_code(2));
    }
    let images = Images::open(&StateDir::new(store.root_dir()))
        .and_then(|i| if args.all { i.list_all() } else { i.list() })
        .map_err(report)?;
    let rows: Vec<Row<'_>> = images
        .iter()
        .flat_map(|image| {
            let mut names = image.names.clone();
            names.sort();
            let dangling = names
                .is_empty()
                .then(|| ("<none>".to_string(), "<none>".to_string()));
            let named = names.into_iter().map(|n| split_name(&n));
            named.chain(dangling).map(move |(repository, tag)| Row {
                image,
                repository,
                tag,
            })
        })
        .collect();
    let id = |i: &ImageSummary| {
        if args.no_trunc {
            i.id().to_string()
        } else {
            i.id().hex()[..12].to_string()
        }
    };
    if args.quiet {
        let text: String = rows.iter().map(|r| format!("{}\n", id(r.image))).collect();
        return print(&text);
    }
    if format == "json" {
        let mut text = String::new();
        for r in &rows {
            let created = r.image.created_unix();
            // Docker's keys, in its (sorted) order; the counts it does not track are N/A.
            let line = serde_json::json!({
                "Containers": "N/A",
                "CreatedAt": go_time(created),
                "CreatedSince": since(created),
                "Digest": r.image.digest().to_string(),
                "ID": id(r.image),
                "Platform": platforms(r.image),
                "Repository": r.repository,
                "SharedSize": "N/A",
                "Size": human_size(r.image.size),
                "Tag": r.tag,
                "UniqueSize": "N/A",
                "VirtualSize": human_size(r.image.size),
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
        return print(&text);
    }
    let mut table = vec![header(args.digests, args.platforms)];
    for r in &rows {
        let mut row = vec![r.repository.clone(), r.tag.clone()];
        if args.digests {
            row.push(r.image.digest().to_string());
        }
        row.push(id(r.image));
        if args.platforms {
            row.push(platforms(r.image));
        }
        row.push(since(r.image.created_unix()));
        row.push(human_size(r.image.size));
        table.push(row);
    }
    print(&render(&table))
}

/// An image's platforms, comma-separated (`linux/amd64,linux/arm64/v8`).
fn platforms(image: &ImageSummary) -> String {
    image
        .platform_list()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn header(digests: bool, platforms: bool) -> Vec<String> {
    let mut h = vec!["REPOSITORY", "TAG"];
    if digests {
        h.push("DIGEST");
    }
    h.push("IMAGE ID");
    if platforms {
        h.push("PLATFORM");
    }
    h.extend(["CREATED", "SIZE"]);
    h.into_iter().map(String::from).collect()
}
