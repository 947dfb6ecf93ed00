//! `--cache-to` / `--cache-from`: a build cache shared between machines (e.g. CI runners), as an
//! OCI image manifest in a registry (`type=registry,ref=REF`) or an OCI layout directory
//! (`type=local,dest=DIR` / `type=local,src=DIR`). Format: [`rbuild_oci::cache`]; import:
//! [`rbuild_worker::remote_cache`]; export: [`rbuild_exporter::write_cache_manifest`].
//!
//! Cache keys are portable: they hash the op (no snapshot ids, no absolute paths), the inputs'
//! keys, base images by manifest digest and build-context files by content.

use crate::errors::Report;
use rbuild_exporter::LayerOptions;
use rbuild_oci::Store;
use rbuild_registry::{PushOptions, Reference, RegistryClient};
use rbuild_snapshotter::Snapshotter;
use rbuild_solver::{CacheKey, Executor, Graph, Solver, VertexId};
use rbuild_worker::remote_cache::RemoteCache;
use rbuild_worker::{Value, WorkVertex, Worker};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

/// Where a cache lives.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheLocation {
    /// `type=registry,ref=REF`.
    Registry(String),
    /// `type=local,dest|src=DIR[,tag=TAG]`: an OCI layout.
    Local { dir: PathBuf, tag: String },
}

/// One `--cache-to`.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheTo {
    pub location: CacheLocation,
    /// `mode=max`: every result of the build; `mode=min` (default): the final result only.
    pub max: bool,
}

fn fields(flag: &str, spec: &str) -> Result<BTreeMap<String, String>, Report> {
    let mut out = BTreeMap::new();
    for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            Report::new(format!("error: {flag} `{spec}`: `{part}` is not key=value")).with_code(2)
        })?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

fn location(
    flag: &str,
    spec: &str,
    f: &BTreeMap<String, String>,
    dir_key: &str,
) -> Result<CacheLocation, Report> {
    let bad = |why: String| Report::new(format!("error: {flag} `{spec}`: {why}")).with_code(2);
    match f.get("type").map(String::as_str) {
        Some("registry") => match f.get("ref") {
            Some(r) if !r.is_empty() => Ok(CacheLocation::Registry(r.clone())),
            _ => Err(bad("type=registry needs ref=REF".into())),
        },
        Some("local") => match f.get(dir_key) {
            Some(d) if !d.is_empty() => Ok(CacheLocation::Local {
                dir: PathBuf::from(d),
                tag: f.get("tag").cloned().unwrap_or_else(|| "latest".into()),
            }),
            _ => Err(bad(format!("type=local needs {dir_key}=DIR"))),
        },
        Some(other) => Err(bad(format!(
            "unsupported cache type `{other}` (supported: registry, local)"
        ))),
        None => Err(bad("no type=...".into())),
    }
}

/// Parses `--cache-to type=registry,ref=REF[,mode=min|max]` / `type=local,dest=DIR[,mode=..]`.
pub fn parse_cache_to(spec: &str) -> Result<CacheTo, Report> {
    let f = fields("--cache-to", spec)?;
    let max = match f.get("mode").map(String::as_str) {
        None | Some("min") => false,
        Some("max") => true,
        Some(other) => {
            return Err(Report::new(format!(
                "error: --cache-to `{spec}`: mode must be min or max, not `{other}`"
            ))
            .with_code(2))
        }
    };
    Ok(CacheTo {
        location: location("--cache-to", spec, &f, "dest")?,
        max,
    })
}

/// Parses `--cache-from type=registry,ref=REF` / `type=local,src=DIR`.
pub fn parse_cache_from(spec: &str) -> Result<CacheLocation, Report> {
    let f = fields("--cache-from", spec)?;
    location("--cache-from", spec, &f, "src")
}

/// Reads the first usable `--cache-from` (manifest and config only). A cache that cannot be read
/// is a warning, as in BuildKit: the build goes on without it.
pub async fn import(
    specs: &[CacheLocation],
    registry: &RegistryClient,
) -> Option<Arc<RemoteCache>> {
    for spec in specs {
        let loaded = match spec {
            CacheLocation::Registry(r) => match Reference::parse(r) {
                Ok(reference) => RemoteCache::from_registry(registry.clone(), reference)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            CacheLocation::Local { dir, tag } => {
                let (dir, tag) = (dir.clone(), tag.clone());
                tokio::task::spawn_blocking(move || {
                    RemoteCache::from_layout(&dir, Some(&tag)).map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
            }
        };
        match loaded {
            Ok(cache) => {
                eprintln!(
                    "importing cache manifest from {}: {} record(s)",
                    describe(spec),
                    cache.len()
                );
                return Some(Arc::new(cache));
            }
            Err(e) => eprintln!(
                "warning: failed to import cache from {}: {e}",
                describe(spec)
            ),
        }
    }
    None
}

fn describe(spec: &CacheLocation) -> String {
    match spec {
        CacheLocation::Registry(r) => r.clone(),
        CacheLocation::Local { dir, .. } => dir.display().to_string(),
    }
}

/// Prints the problems met while importing cached results.
pub fn report_import(remote: Option<&Arc<RemoteCache>>) {
    for w in remote.map(|r| r.warnings()).unwrap_or_default() {
        eprintln!("warning: cache import: {w}");
    }
}

/// The cache keys of `target` and everything it depends on, in definition order (inputs before
/// their users), taken from the keys the solve computed.
fn keys_of(
    graph: &Graph<WorkVertex>,
    ids: &[VertexId],
    target: VertexId,
    solved_keys: &HashMap<VertexId, CacheKey>,
) -> Result<Vec<(VertexId, CacheKey)>, Report> {
    let mut needed = HashSet::new();
    let mut stack = vec![target];
    while let Some(v) = stack.pop() {
        if needed.insert(v) {
            stack.extend(graph.inputs(v).iter().copied());
        }
    }
    ids.iter()
        .filter(|v| needed.contains(v))
        .map(|&v| {
            solved_keys.get(&v).map(|&key| (v, key)).ok_or_else(|| {
                Report::new("error: cache export: the solve computed no key for a needed vertex")
            })
        })
        .collect()
}

/// Exports the cache of a finished solve to every `--cache-to`.
#[allow(clippy::too_many_arguments)]
pub async fn export(
    specs: &[CacheTo],
    solver: &Solver<Worker>,
    graph: &Graph<WorkVertex>,
    ids: &[VertexId],
    target: VertexId,
    solved_keys: &HashMap<VertexId, CacheKey>,
    store: &Store,
    snapshotter: &Snapshotter,
    layer_opts: &LayerOptions,
    architecture: &str,
    registry: &RegistryClient,
) -> Result<(), Report> {
    if specs.is_empty() {
        return Ok(());
    }
    let Some(index) = solver.index().cloned() else {
        return Ok(());
    };
    let worker = solver.executor().clone();
    let keys = keys_of(graph, ids, target, solved_keys)?;
    for spec in specs {
        let wanted: Vec<(VertexId, CacheKey)> = if spec.max {
            keys.clone()
        } else {
            keys.iter().filter(|(v, _)| *v == target).cloned().collect()
        };
        let (index2, worker2) = (index.clone(), worker.clone());
        let records = tokio::task::spawn_blocking(move || {
            let mut records = Vec::new();
            for (_, key) in wanted {
                let Ok(Some(bytes)) = index2.get(&key) else {
                    continue;
                };
                if let Some(Value::Fs(top)) = worker2.decode(&bytes) {
                    records.push((key.hex(), top));
                }
            }
            records
        })
        .await
        .map_err(|e| Report::new(format!("error: internal task failed: {e}")))?;
        let (s, snap, opts, arch) = (
            store.clone(),
            snapshotter.clone(),
            layer_opts.clone(),
            architecture.to_string(),
        );
        let count = records.len();
        let desc = tokio::task::spawn_blocking(move || {
            rbuild_exporter::write_cache_manifest(&s, &snap, &records, &opts, &arch)
        })
        .await
        .map_err(|e| Report::new(format!("error: internal task failed: {e}")))?
        .map_err(|e| Report::from_error("exporting the build cache", &e))?;
        match &spec.location {
            CacheLocation::Registry(r) => {
                let reference = Reference::parse(r)
                    .map_err(|e| Report::from_error(&format!("invalid cache ref `{r}`"), &e))?;
                registry
                    .push(store, &desc, &[reference], &PushOptions::default())
                    .await
                    .map_err(|e| Report::from_error(&format!("failed to push cache to {r}"), &e))?;
            }
            CacheLocation::Local { dir, tag } => {
                let (s, d, dir2, tag) = (store.clone(), desc.clone(), dir.clone(), tag.clone());
                tokio::task::spawn_blocking(move || {
                    rbuild_exporter::write_cache_layout(&s, &d, &dir2, &tag)
                })
                .await
                .map_err(|e| Report::new(format!("error: internal task failed: {e}")))?
                .map_err(|e| {
                    Report::from_error(&format!("writing the cache to {}", dir.display()), &e)
                })?;
            }
        }
        eprintln!(
            "exporting cache to {} ({} record(s), mode={}) {} done",
            describe(&spec.location),
            count,
            if spec.max { "max" } else { "min" },
            desc.digest
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_specs_parse() {
        assert_eq!(
            parse_cache_to("type=registry,ref=r/c:1,mode=max").unwrap(),
            CacheTo {
                location: CacheLocation::Registry("r/c:1".into()),
                max: true
            }
        );
        assert_eq!(
            parse_cache_to("type=local,dest=/d").unwrap(),
            CacheTo {
                location: CacheLocation::Local {
                    dir: "/d".into(),
                    tag: "latest".into()
                },
                max: false
            }
        );
        assert!(parse_cache_to("type=local,src=/d").is_err());
        assert!(parse_cache_to("type=registry,ref=r,mode=all").is_err());
        assert!(parse_cache_to("type=gha").is_err());
        assert_eq!(
            parse_cache_from("type=local,src=/d,tag=t").unwrap(),
            CacheLocation::Local {
                dir: "/d".into(),
                tag: "t".into()
            }
        );
        assert!(parse_cache_from("type=registry").is_err());
    }
}
