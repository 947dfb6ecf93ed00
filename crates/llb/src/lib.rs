//! The build graph (LLB): the ops a frontend emits ([`Op`]), vertices with ordered inputs,
//! versioned byte encodings (the cache key encoding, and the identity encoding whose sha256 is
//! the vertex digest; see [`Op::cache_key_bytes`]), the source map (vertex -> Dockerfile
//! lines) and JSON (de)serialisation. This is the API other frontends target: build a
//! [`Definition`], serialise it with [`Definition::to_json`], hand it to the solver.

pub mod chmod;
pub mod csv;
mod encoding;
mod entitlements;
mod ops;
pub mod units;

pub use chmod::{InvalidMode, SymbolicMode};
pub use encoding::ENCODING_VERSION;

pub use entitlements::{Entitlement, Entitlements, NotAllowed, UnknownEntitlement};
pub use ops::{
    CacheMountOpt, CacheSharing, ChownOpt, CopyAction, ExecMount, ExecOp, ExtraHost, FileAction,
    FileOp, MkdirAction, MountType, NetworkMode, Op, SecretMountOpt, SecurityMode, SourceOp,
    SshMountOpt, UserOpt,
};

use rbuild_oci::{Digest, Platform};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Index of a vertex inside its [`Definition`].
pub type VertexIndex = usize;

/// Errors reading or validating a definition.
#[derive(Debug, thiserror::Error)]
pub enum LlbError {
    /// The JSON was malformed.
    #[error("invalid llb definition")]
    Json(#[from] serde_json::Error),
    /// An input refers to a vertex that is not earlier in the list.
    #[error("vertex {vertex} refers to input {input}, which is not an earlier vertex")]
    BadInput {
        /// The vertex.
        vertex: usize,
        /// The bad input index.
        input: usize,
    },
}

/// Where a vertex came from in the Dockerfile (1-based lines, inclusive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceLocation {
    /// The Dockerfile's name as the user gave it.
    pub file: String,
    /// First line.
    pub start_line: usize,
    /// Last line.
    pub end_line: usize,
}

/// One node of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vertex {
    /// What to do.
    pub op: Op,
    /// Inputs, as indexes of earlier vertices (order matters; see each op).
    pub inputs: Vec<VertexIndex>,
    /// Human name for progress output, e.g. `[build 2/4] RUN make`.
    pub name: String,
    /// The instruction this vertex came from (not part of the digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceLocation>,
    /// The platform the op is for (BuildKit's per-op `Platform`); `None` = the host's. Part of
    /// the digest (and of the cache key) only when set, so host builds keep their digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// A whole build graph in topological order (inputs always before the vertices that use them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Definition {
    /// The vertices.
    pub vertices: Vec<Vertex>,
    #[serde(skip)]
    dedupe: HashMap<Digest, VertexIndex>,
    #[serde(skip)]
    digests: Vec<Digest>,
}

impl Definition {
    /// An empty definition.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a vertex and returns its index; an identical vertex (same op and inputs) is added once.
    pub fn add(
        &mut self,
        op: Op,
        inputs: Vec<VertexIndex>,
        name: String,
        source: Option<SourceLocation>,
    ) -> VertexIndex {
        self.add_for(op, inputs, name, source, None)
    }

    /// [`Definition::add`] for a platform (`None`: the host's); the same op on the same inputs
    /// for two platforms makes two vertices.
    pub fn add_for(
        &mut self,
        op: Op,
        inputs: Vec<VertexIndex>,
        name: String,
        source: Option<SourceLocation>,
        platform: Option<Platform>,
    ) -> VertexIndex {
        let input_digests: Vec<Digest> = inputs.iter().map(|&i| self.digests[i].clone()).collect();
        let digest = vertex_digest_for(&op, &input_digests, platform.as_ref());
        if let Some(&existing) = self.dedupe.get(&digest) {
            return existing;
        }
        let index = self.vertices.len();
        self.vertices.push(Vertex {
            op,
            inputs,
            name,
            source,
            platform,
        });
        self.digests.push(digest.clone());
        self.dedupe.insert(digest, index);
        index
    }

    /// The digest of vertex `index`.
    pub fn digest(&self, index: VertexIndex) -> &Digest {
        &self.digests[index]
    }

    /// Serialises to JSON.
    pub fn to_json(&self) -> Result<Vec<u8>, LlbError> {
        Ok(serde_json::to_vec_pretty(self)?)
    }

    /// Checks every RUN against the granted entitlements (as BuildKit's solver does before it
    /// runs anything): the first vertex needing one that was not granted is an error.
    pub fn check_entitlements(&self, allowed: &Entitlements) -> Result<(), NotAllowed> {
        for (vertex, v) in self.vertices.iter().enumerate() {
            if let Op::Exec(exec) = &v.op {
                if let Some(entitlement) = allowed.missing(&exec.entitlements()) {
                    return Err(NotAllowed {
                        entitlement,
                        vertex,
                    });
                }
            }
        }
        Ok(())
    }

    /// Reads JSON, validates the inputs and recomputes the digests.
    pub fn from_json(bytes: &[u8]) -> Result<Definition, LlbError> {
        let raw: Definition = serde_json::from_slice(bytes)?;
        let mut def = Definition::new();
        for (i, v) in raw.vertices.into_iter().enumerate() {
            if let Some(&bad) = v.inputs.iter().find(|&&inp| inp >= i) {
                return Err(LlbError::BadInput {
                    vertex: i,
                    input: bad,
                });
            }
            let input_digests: Vec<Digest> =
                v.inputs.iter().map(|&x| def.digests[x].clone()).collect();
            let digest = vertex_digest_for(&v.op, &input_digests, v.platform.as_ref());
            def.dedupe.entry(digest.clone()).or_insert(i);
            def.digests.push(digest);
            def.vertices.push(v);
        }
        Ok(def)
    }
}

/// The vertex digest: sha256 of the op's identity encoding ([`Op::identity_bytes`], every
/// field) followed by the number of inputs and each input's digest (length-prefixed).
pub fn vertex_digest(op: &Op, inputs: &[Digest]) -> Digest {
    vertex_digest_for(op, inputs, None)
}

/// [`vertex_digest`] of a vertex for `platform`: a set platform's bytes
/// ([`platform_bytes`]) follow the inputs, so `None` gives exactly [`vertex_digest`].
pub fn vertex_digest_for(op: &Op, inputs: &[Digest], platform: Option<&Platform>) -> Digest {
    let mut bytes = op.identity_bytes();
    bytes.extend_from_slice(&(inputs.len() as u64).to_le_bytes());
    for input in inputs {
        let text = input.to_string();
        bytes.extend_from_slice(&(text.len() as u64).to_le_bytes());
        bytes.extend_from_slice(text.as_bytes());
    }
    if let Some(p) = platform {
        bytes.extend_from_slice(&platform_bytes(p));
    }
    Digest::sha256_of(&bytes)
}

/// The bytes a vertex's platform adds to its digest and its cache key: a tag, then the
/// normalised `os/arch[/variant]` length-prefixed (appended after everything else, so a vertex
/// without a platform keeps its bytes).
pub fn platform_bytes(platform: &Platform) -> Vec<u8> {
    let text = platform.to_string();
    let mut bytes = b"rbuild-platform".to_vec();
    bytes.extend_from_slice(&(text.len() as u64).to_le_bytes());
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(cmd: &str) -> Op {
        Op::Exec(ExecOp {
            args: vec!["/bin/sh".into(), "-c".into(), cmd.into()],
            env: vec![],
            cwd: "/".into(),
            user: String::new(),
            network: NetworkMode::Default,
            security: SecurityMode::Sandbox,
            extra_hosts: vec![],
            mounts: vec![],
            proxy_env: vec![],
        })
    }

    fn exec_op(op: &Op) -> &ExecOp {
        match op {
            Op::Exec(e) => e,
            _ => unreachable!("test helper"),
        }
    }

    #[test]
    fn default_modes_stay_out_of_the_encoding() {
        // The canonical encoding of a plain RUN: network always, security and extra hosts only
        // when they are not the default (keeps the encoding, and the digests, small and stable).
        let op = exec("a");
        let json = String::from_utf8(rbuild_oci::canonical_json(&op).unwrap()).unwrap();
        assert!(json.contains(r#""network":"default""#), "{json}");
        assert!(!json.contains("security"), "{json}");
        assert!(!json.contains("extra_hosts"), "{json}");
        let back: Op = serde_json::from_str(&json).unwrap();
        assert_eq!(back, op);

        let mut insecure = exec_op(&op).clone();
        insecure.security = SecurityMode::Insecure;
        insecure.extra_hosts = vec![ExtraHost {
            host: "db".into(),
            ip: "10.0.0.5".into(),
        }];
        let json = serde_json::to_string(&Op::Exec(insecure.clone())).unwrap();
        assert!(json.contains(r#""security":"insecure""#), "{json}");
        assert!(json.contains(r#""extra_hosts":[{"host":"db","ip":"10.0.0.5"}]"#));
        let back: Op = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Op::Exec(insecure));
    }

    #[test]
    fn network_and_security_change_the_digest() {
        let base = exec("a");
        let mut host = exec_op(&base).clone();
        host.network = NetworkMode::Host;
        let mut insecure = exec_op(&base).clone();
        insecure.security = SecurityMode::Insecure;
        let digests = [
            vertex_digest(&base, &[]),
            vertex_digest(&Op::Exec(host), &[]),
            vertex_digest(&Op::Exec(insecure), &[]),
        ];
        assert_ne!(digests[0], digests[1]);
        assert_ne!(digests[0], digests[2]);
        assert_ne!(digests[1], digests[2]);
    }

    #[test]
    fn entitlements_are_checked_per_run() {
        let mut def = Definition::new();
        let base = def.add(Op::Source(SourceOp::Scratch), vec![], "s".into(), None);
        let plain = def.add(exec("a"), vec![base], "a".into(), None);
        assert!(def.check_entitlements(&Entitlements::none()).is_ok());
        let mut host = exec_op(&exec("b")).clone();
        host.network = NetworkMode::Host;
        let h = def.add(Op::Exec(host), vec![plain], "b".into(), None);
        let err = def.check_entitlements(&Entitlements::none()).unwrap_err();
        assert_eq!((err.entitlement, err.vertex), (Entitlement::NetworkHost, h));
        let allowed = Entitlements::parse(&["network.host"]).unwrap();
        assert!(def.check_entitlements(&allowed).is_ok());
        let mut insecure = exec_op(&exec("c")).clone();
        insecure.security = SecurityMode::Insecure;
        def.add(Op::Exec(insecure), vec![h], "c".into(), None);
        let err = def.check_entitlements(&allowed).unwrap_err();
        assert_eq!(err.to_string(), "security.insecure is not allowed");
    }

    #[test]
    fn digests_dedupe_and_round_trip() {
        let mut def = Definition::new();
        let base = def.add(
            Op::Source(SourceOp::Scratch),
            vec![],
            "scratch".into(),
            None,
        );
        let a = def.add(exec("a"), vec![base], "a".into(), None);
        let a2 = def.add(exec("a"), vec![base], "other name".into(), None);
        let b = def.add(exec("b"), vec![a], "b".into(), None);
        assert_eq!(a, a2);
        assert_ne!(def.digest(a), def.digest(b));
        let json = def.to_json().unwrap();
        let back = Definition::from_json(&json).unwrap();
        assert_eq!(back.digest(b), def.digest(b));
        assert_eq!(back.vertices.len(), 3);
        // the digest covers inputs: same op on another input differs
        let c = def.add(exec("b"), vec![base], "b".into(), None);
        assert_ne!(def.digest(c), def.digest(b));
    }

    #[test]
    fn platform_is_in_the_digest_only_when_set() {
        let arm64: Platform = "linux/arm64".parse().unwrap();
        let mut def = Definition::new();
        let base = def.add(Op::Source(SourceOp::Scratch), vec![], "s".into(), None);
        let host = def.add(exec("a"), vec![base], "a".into(), None);
        // No platform: exactly the digest without one (existing digests and snapshots stay).
        let plain = vertex_digest(&exec("a"), std::slice::from_ref(def.digest(base)));
        assert_eq!(def.digest(host), &plain);
        let none = def.add_for(exec("a"), vec![base], "a".into(), None, None);
        assert_eq!(none, host);
        let arm = def.add_for(exec("a"), vec![base], "a".into(), None, Some(arm64.clone()));
        assert_ne!(arm, host);
        assert_ne!(def.digest(arm), def.digest(host));
        let arm_again = def.add_for(exec("a"), vec![base], "b".into(), None, Some(arm64));
        assert_eq!(arm_again, arm);
        let riscv = def.add_for(
            exec("a"),
            vec![base],
            "a".into(),
            None,
            Some("linux/riscv64".parse().unwrap()),
        );
        assert_ne!(def.digest(riscv), def.digest(arm));
        // JSON: no `platform` key without one; round trip keeps the digests.
        let json = String::from_utf8(def.to_json().unwrap()).unwrap();
        assert_eq!(json.matches("\"platform\"").count(), 2, "{json}");
        let back = Definition::from_json(json.as_bytes()).unwrap();
        assert_eq!(back.digest(arm), def.digest(arm));
        assert_eq!(back.digest(host), def.digest(host));
        assert_eq!(back.vertices[arm].platform, def.vertices[arm].platform);
    }

    #[test]
    fn rejects_forward_inputs() {
        let json = br#"{"vertices":[{"op":{"source":"scratch"},"inputs":[0],"name":"x"}]}"#;
        assert!(matches!(
            Definition::from_json(json),
            Err(LlbError::BadInput { .. })
        ));
    }
}
