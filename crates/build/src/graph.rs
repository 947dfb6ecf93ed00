//! A build's graph without building it (`rbuild graph`): [`plan_graph`] plans as a build does
//! and [`GraphPlan`] renders the graph as rbuild's graph JSON (schema in `docs/graph.md`,
//! versioned by [`GRAPH_SCHEMA_VERSION`]), as Graphviz DOT (stages as clusters, vertices named
//! as BuildKit prints them, edges from input to consumer) or as BuildKit's LLB (a marshalled
//! `pb.Definition`, through `rbuild_buildkit`).

use crate::error::BuildError;
use crate::request::BuildRequest;
use rbuild_buildkit::{Llb, LlbError, LlbOptions};
use rbuild_frontend::BuildPlan;
use rbuild_llb::{SourceLocation, Vertex};
use rbuild_oci::Platform;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

/// The version of the graph JSON's schema; it changes only when a field changes meaning or
/// goes away (new fields may appear without a change).
pub const GRAPH_SCHEMA_VERSION: u32 = 1;

/// Why a graph has no LLB rendering.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// A part of the graph has no LLB form.
    #[error(transparent)]
    Llb(#[from] LlbError),
    /// One LLB definition has one result: a multi-platform graph has several.
    #[error("--format llb needs one target platform, the build has {0}: give one --platform")]
    MultiPlatform(usize),
    /// The JSON could not be written.
    #[error("writing the graph JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// A planned build: the graph, its targets and the Dockerfile it came from.
#[derive(Debug, Clone)]
pub struct GraphPlan {
    /// The frontend's plan (graph, targets, image configs).
    pub plan: BuildPlan,
    /// The Dockerfile's name (`Dockerfile`, or the `-f` path).
    pub dockerfile_name: String,
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// The platform the build runs on (the platform of vertices without one).
    pub build_platform: Platform,
    /// The directories a session serves for the graph's local sources, by their LLB local name
    /// (`context`, and `NAME` for each `--build-context NAME=DIR`; see
    /// [`rbuild_buildkit::local_name`]).
    pub local_dirs: BTreeMap<String, PathBuf>,
    /// Keeps a streamed context's temp dir alive as long as the plan.
    _temp: Option<Arc<tempfile::TempDir>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GraphJson<'a> {
    schema_version: u32,
    dockerfile: &'a str,
    target: usize,
    platforms: Vec<PlatformJson>,
    vertices: Vec<VertexJson<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PlatformJson {
    platform: String,
    target: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VertexJson<'a> {
    index: usize,
    digest: String,
    name: &'a str,
    stage: Option<String>,
    inputs: &'a [usize],
    platform: Option<String>,
    source: Option<SourceJson<'a>>,
    no_cache: bool,
    op: &'a rbuild_llb::Op,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SourceJson<'a> {
    file: &'a str,
    start_line: usize,
    end_line: usize,
}

impl<'a> From<&'a SourceLocation> for SourceJson<'a> {
    fn from(loc: &'a SourceLocation) -> Self {
        SourceJson {
            file: &loc.file,
            start_line: loc.start_line,
            end_line: loc.end_line,
        }
    }
}

/// The stage a vertex belongs to, from the name BuildKit gives it: `[build 2/4] RUN ...` is in
/// `build`, `[3/4] ...` (a one-stage Dockerfile) in `stage-0`; `[internal] ...` and unbracketed
/// names (an `ADD <url>` source) are in none.
pub fn stage_of(name: &str) -> Option<String> {
    let inner = name.strip_prefix('[')?.split_once(']')?.0;
    let mut words: Vec<&str> = inner.split_whitespace().collect();
    let step = words.pop()?;
    let (k, n) = step.split_once('/')?;
    if k.parse::<u32>().is_err() || n.parse::<u32>().is_err() {
        return None;
    }
    Some(match words.is_empty() {
        true => "stage-0".to_string(),
        false => words.join(" "),
    })
}

/// Plans the build `request` describes as a build does before it solves (Dockerfile and
/// `.dockerignore` read, base images resolved, graph converted and checked) and returns its
/// graph; nothing runs. The request's outputs, cache, secrets, limits and tags are not used.
pub async fn plan_graph(request: BuildRequest) -> Result<GraphPlan, BuildError> {
    let planned = crate::pipeline::graph::plan_only(request).await?;
    let mut local_dirs: BTreeMap<String, PathBuf> = planned
        .named_dirs
        .into_iter()
        .map(|(source, dir)| (rbuild_buildkit::local_name(&source).to_string(), dir))
        .collect();
    local_dirs.insert("context".to_string(), planned.context);
    Ok(GraphPlan {
        plan: planned.plan,
        dockerfile_name: planned.text.name,
        dockerfile: planned.text.source,
        build_platform: planned.build_platform,
        local_dirs,
        _temp: planned.temp.map(Arc::new),
    })
}

/// A DOT double-quoted string.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl GraphPlan {
    fn targets(&self) -> Vec<usize> {
        let mut t: Vec<usize> = self.plan.platforms.iter().map(|p| p.target).collect();
        if t.is_empty() {
            t.push(self.plan.target);
        }
        t
    }

    /// rbuild's graph JSON (pretty, with a trailing newline).
    pub fn to_json(&self) -> Result<Vec<u8>, GraphError> {
        let def = &self.plan.definition;
        let doc = GraphJson {
            schema_version: GRAPH_SCHEMA_VERSION,
            dockerfile: &self.dockerfile_name,
            target: self.plan.target,
            platforms: self
                .plan
                .platforms
                .iter()
                .map(|p| PlatformJson {
                    platform: p.platform.to_string(),
                    target: p.target,
                })
                .collect(),
            vertices: def
                .vertices
                .iter()
                .enumerate()
                .map(|(index, v): (usize, &Vertex)| VertexJson {
                    index,
                    digest: def.digest(index).to_string(),
                    name: &v.name,
                    stage: stage_of(&v.name),
                    inputs: &v.inputs,
                    platform: v.platform.as_ref().map(|p| p.to_string()),
                    source: v.source.as_ref().map(SourceJson::from),
                    no_cache: self.plan.no_cache.contains(&index),
                    op: &v.op,
                })
                .collect(),
        };
        let mut out = serde_json::to_vec_pretty(&doc)?;
        out.push(b'\n');
        Ok(out)
    }

    /// The graph as Graphviz DOT: one cluster per stage, a node per vertex labelled with its
    /// name, an edge from each input to the vertex that uses it; targets drawn bold.
    pub fn to_dot(&self) -> String {
        let def = &self.plan.definition;
        let targets = self.targets();
        let mut stages: Vec<(String, Vec<usize>)> = Vec::new();
        let mut loose = Vec::new();
        for (i, v) in def.vertices.iter().enumerate() {
            match stage_of(&v.name) {
                Some(stage) => match stages.iter_mut().find(|(s, _)| *s == stage) {
                    Some((_, list)) => list.push(i),
                    None => stages.push((stage, vec![i])),
                },
                None => loose.push(i),
            }
        }
        let node = |out: &mut String, indent: &str, i: usize| {
            let v = &def.vertices[i];
            let name = if v.name.is_empty() {
                format!("vertex {i}")
            } else {
                v.name.clone()
            };
            let style = if targets.contains(&i) {
                ", style=bold"
            } else {
                ""
            };
            let _ = writeln!(out, "{indent}v{i} [label={}{style}];", quoted(&name));
        };
        let mut out = String::from("digraph rbuild {\n");
        out.push_str("  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n");
        for (n, (stage, list)) in stages.iter().enumerate() {
            let _ = writeln!(out, "  subgraph cluster_{n} {{");
            let _ = writeln!(out, "    label={};", quoted(stage));
            for &i in list {
                node(&mut out, "    ", i);
            }
            out.push_str("  }\n");
        }
        for &i in &loose {
            node(&mut out, "  ", i);
        }
        for (i, v) in def.vertices.iter().enumerate() {
            for &input in &v.inputs {
                let _ = writeln!(out, "  v{input} -> v{i};");
            }
        }
        out.push_str("}\n");
        out
    }

    /// The graph as BuildKit LLB (`session`: the session that serves its local sources; `None`
    /// for the solve's own).
    pub fn to_llb(&self, session: Option<String>) -> Result<Llb, GraphError> {
        let targets = self.targets();
        if targets.len() > 1 {
            return Err(GraphError::MultiPlatform(targets.len()));
        }
        let opts = LlbOptions {
            session_id: session,
            dockerfile_name: self.dockerfile_name.clone(),
            dockerfile: Some(self.dockerfile.clone().into_bytes()),
            default_platform: self.build_platform.clone(),
            no_cache: self.plan.no_cache.clone(),
        };
        Ok(rbuild_buildkit::to_llb(
            &self.plan.definition,
            self.plan.target,
            &opts,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_come_from_buildkit_names() {
        assert_eq!(stage_of("[build 2/4] RUN make").as_deref(), Some("build"));
        assert_eq!(stage_of("[2/3] COPY a b").as_deref(), Some("stage-0"));
        assert_eq!(
            stage_of("[linux/arm64 build 1/2] FROM x").as_deref(),
            Some("linux/arm64 build")
        );
        assert_eq!(stage_of("[internal] load build context"), None);
        assert_eq!(stage_of("https://example.com/x"), None);
    }

    #[test]
    fn dot_strings_are_escaped() {
        assert_eq!(
            quoted("RUN echo \"a\\b\"\nx"),
            "\"RUN echo \\\"a\\\\b\\\"\\nx\""
        );
    }
}
