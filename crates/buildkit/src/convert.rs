//! The graph walk: the vertices the target needs, in dependency order, each converted
//! ([`crate::ops`]), marshalled and named by the sha256 of its bytes; op metadata, the source
//! map and the terminal op.

use crate::caps;
use crate::ops::{self, Built};
use crate::pb;
use crate::LlbError;
use prost::Message;
use rbuild_llb::{Definition, VertexIndex};
use rbuild_oci::Platform;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// What the conversion needs besides the graph.
#[derive(Debug, Clone)]
pub struct LlbOptions {
    /// The session that serves the local sources (`local.session`); `None`: the solve's own
    /// session (what `buildctl build --local` uses).
    pub session_id: Option<String>,
    /// The Dockerfile's name for the source map.
    pub dockerfile_name: String,
    /// The Dockerfile's text (`None`: no source map).
    pub dockerfile: Option<Vec<u8>>,
    /// The platform of ops whose vertex has none (the build platform, as BuildKit's client
    /// fills in its own).
    pub default_platform: Platform,
    /// Vertices solved without the cache (`--no-cache-filter`): `ignore_cache` in their metadata.
    pub no_cache: Vec<VertexIndex>,
}

impl Default for LlbOptions {
    fn default() -> Self {
        LlbOptions {
            session_id: None,
            dockerfile_name: "Dockerfile".into(),
            dockerfile: None,
            default_platform: Platform::host().normalized(),
            no_cache: Vec::new(),
        }
    }
}

/// One op of the converted graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlbOp {
    /// `sha256:...` of the marshalled op.
    pub digest: String,
    /// The rbuild vertex it came from (`None`: a helper op or the terminal op).
    pub vertex: Option<VertexIndex>,
    /// The name BuildKit prints for it (`llb.customname`; empty for the terminal op).
    pub name: String,
    /// The BuildKit capabilities it needs.
    pub caps: BTreeSet<&'static str>,
}

/// A converted graph: the `pb.Definition` and what each op is.
#[derive(Debug, Clone)]
pub struct Llb {
    /// The definition (ops in dependency order, the terminal op last).
    pub definition: pb::Definition,
    /// The ops in the same order as `definition.def`.
    pub ops: Vec<LlbOp>,
    /// The op digest each rbuild vertex stands for (`None`: scratch or not needed).
    by_vertex: Vec<Option<String>>,
}

impl Llb {
    /// The marshalled `pb.Definition` (what `buildctl debug dump-llb` reads).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.definition.encode_to_vec()
    }

    /// Every capability the graph needs.
    pub fn caps(&self) -> BTreeSet<&'static str> {
        self.ops
            .iter()
            .flat_map(|op| op.caps.iter().copied())
            .collect()
    }

    /// The ops needing a capability for which `supported` is false, with that capability (what
    /// a remote solve refuses before sending the graph to a daemon that lacks it).
    pub fn unsupported(&self, supported: impl Fn(&str) -> bool) -> Vec<(&LlbOp, &'static str)> {
        self.ops
            .iter()
            .flat_map(|op| op.caps.iter().map(move |&cap| (op, cap)))
            .filter(|(_, cap)| !supported(cap))
            .collect()
    }

    /// The digest of the op that rbuild vertex `vertex` stands for: its own, the one it is
    /// identical to, or its only input's for a merge of one layer (`None`: scratch, or a vertex
    /// the target does not need).
    pub fn digest_of(&self, vertex: VertexIndex) -> Option<&str> {
        self.by_vertex.get(vertex)?.as_deref()
    }
}

fn pb_platform(p: &Platform) -> pb::Platform {
    let p = p.normalized();
    pb::Platform {
        architecture: p.architecture.clone(),
        os: p.os.clone(),
        variant: p.variant.clone().unwrap_or_default(),
        os_version: p.os_version.clone().unwrap_or_default(),
    }
}

/// Sets the platform and constraints BuildKit's client gives every op, marshals it and names it.
fn finish(built: &mut Built, platform: &pb::Platform) -> (Vec<u8>, String) {
    if built.has_platform {
        built.op.platform = Some(platform.clone());
    }
    built.op.constraints = Some(pb::WorkerConstraints::default());
    let bytes = built.op.encode_to_vec();
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    (bytes, digest)
}

/// The ops collected so far.
#[derive(Default)]
struct Out {
    def: Vec<Vec<u8>>,
    ops: Vec<LlbOp>,
    metadata: BTreeMap<String, pb::OpMetadata>,
}

impl Out {
    fn push(&mut self, bytes: Vec<u8>, op: LlbOp, ignore_cache: bool) {
        if self.ops.iter().any(|o| o.digest == op.digest) {
            return;
        }
        let mut description = BTreeMap::new();
        if !op.name.is_empty() {
            description.insert("llb.customname".to_string(), op.name.clone());
        }
        self.metadata.insert(
            op.digest.clone(),
            pb::OpMetadata {
                ignore_cache,
                description,
                caps: op.caps.iter().map(|c| (c.to_string(), true)).collect(),
            },
        );
        self.def.push(bytes);
        self.ops.push(op);
    }
}

/// Converts the part of `def` that `target` needs into BuildKit's LLB.
pub fn to_llb(def: &Definition, target: VertexIndex, opts: &LlbOptions) -> Result<Llb, LlbError> {
    let n = def.vertices.len();
    if target >= n {
        return Err(LlbError::NoTarget(target));
    }
    let mut needed = vec![false; n];
    needed[target] = true;
    for i in (0..n).rev() {
        if needed[i] {
            for &input in &def.vertices[i].inputs {
                if input >= i {
                    return Err(LlbError::MissingInput { vertex: i, input });
                }
                needed[input] = true;
            }
        }
    }
    let default_platform = pb_platform(&opts.default_platform);
    let mut out = Out::default();
    let mut digests: Vec<Option<String>> = vec![None; n];
    let mut locations: BTreeMap<String, pb::Locations> = BTreeMap::new();
    for (index, v) in def.vertices.iter().enumerate() {
        if !needed[index] {
            continue;
        }
        let platform = v
            .platform
            .as_ref()
            .map_or_else(|| default_platform.clone(), pb_platform);
        let inputs: Vec<Option<String>> = v.inputs.iter().map(|&i| digests[i].clone()).collect();
        let mut helpers: Vec<(Vec<u8>, LlbOp)> = Vec::new();
        let mut emit = |mut helper: Built| -> String {
            let (bytes, digest) = finish(&mut helper, &platform);
            helpers.push((
                bytes,
                LlbOp {
                    digest: digest.clone(),
                    vertex: None,
                    name: helper.name.take().unwrap_or_default(),
                    caps: helper.caps,
                },
            ));
            digest
        };
        let built = ops::convert(index, v, &inputs, opts.session_id.as_deref(), &mut emit)?;
        for (bytes, op) in helpers {
            out.push(bytes, op, false);
        }
        let mut built = match built {
            ops::Converted::Op(built) => *built,
            ops::Converted::Same(digest) => {
                digests[index] = digest;
                continue;
            }
        };
        let (bytes, digest) = finish(&mut built, &platform);
        if let Some(loc) = &v.source {
            let range = pb::Range {
                start: Some(pb::Position {
                    line: loc.start_line as i32,
                    character: 0,
                }),
                end: Some(pb::Position {
                    line: loc.end_line as i32,
                    character: 0,
                }),
            };
            locations
                .entry(digest.clone())
                .or_default()
                .locations
                .push(pb::Location {
                    source_index: 0,
                    ranges: vec![range],
                });
        }
        digests[index] = Some(digest.clone());
        out.push(
            bytes,
            LlbOp {
                digest,
                vertex: Some(index),
                name: v.name.clone(),
                caps: built.caps,
            },
            opts.no_cache.contains(&index),
        );
    }
    if let Some(head) = &digests[target] {
        let mut terminal_caps = BTreeSet::from([caps::CONSTRAINTS, caps::PLATFORM]);
        if out.metadata.values().any(|m| !m.description.is_empty()) {
            terminal_caps.insert(caps::META_DESCRIPTION);
        }
        if out.metadata.values().any(|m| m.ignore_cache) {
            terminal_caps.insert(caps::META_IGNORE_CACHE);
        }
        let terminal = pb::Op {
            inputs: vec![pb::Input {
                digest: head.clone(),
                index: 0,
            }],
            ..Default::default()
        };
        let bytes = terminal.encode_to_vec();
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        out.push(
            bytes,
            LlbOp {
                digest,
                vertex: None,
                name: String::new(),
                caps: terminal_caps,
            },
            false,
        );
    }
    let source = opts.dockerfile.as_ref().map(|data| pb::Source {
        locations,
        infos: vec![pb::SourceInfo {
            filename: opts.dockerfile_name.clone(),
            data: data.clone(),
            language: "Dockerfile".into(),
        }],
    });
    Ok(Llb {
        definition: pb::Definition {
            def: out.def,
            metadata: out.metadata,
            source,
        },
        ops: out.ops,
        by_vertex: digests,
    })
}
