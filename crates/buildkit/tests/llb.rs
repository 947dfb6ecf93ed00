//! The LLB of a representative Dockerfile (multi-stage, `COPY --from`, `--chown`, every kind of
//! RUN mount, `ADD <url>`, `COPY --link`, `--platform`, a heredoc), decoded to JSON and
//! snapshot-tested: any change to the conversion is a visible diff.

use prost::Message;
use rbuild_buildkit::{caps, pb, to_llb, Llb, LlbOptions};
use rbuild_frontend::{convert, parse, BaseImage, ConvertOptions};
use rbuild_oci::{Digest, ImageConfig, Platform};
use serde_json::{json, Value};
use std::collections::HashMap;

const DOCKERFILE: &str = r#"# syntax=docker/dockerfile:1
FROM --platform=linux/arm64 busybox:latest AS build
WORKDIR /src
COPY --chown=1000:1000 app.sh ./
RUN --mount=type=cache,target=/root/.cache,sharing=locked \
    --mount=type=cache,id=owned,target=/var/cache/owned,uid=1000,mode=0700 \
    --mount=type=bind,source=conf,target=/conf \
    --mount=type=tmpfs,target=/scratch,size=64m \
    --mount=type=secret,id=token,env=TOKEN \
    --mount=type=secret,id=npmrc,target=/root/.npmrc \
    --mount=type=ssh \
    sh app.sh > /out.txt
ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://example.com/tool.tar.gz /opt/

FROM busybox:latest
COPY --from=build --chown=app:app /out.txt /out.txt
COPY --link --chmod=0755 run.sh /usr/local/bin/run
COPY <<EOT /etc/motd
hello
EOT
RUN --network=none echo done
"#;

fn amd64() -> Platform {
    "linux/amd64".parse().expect("platform")
}

fn convert_representative() -> (Llb, rbuild_llb::Definition) {
    let df = parse(DOCKERFILE).expect("parses");
    let opts = ConvertOptions {
        dockerfile_name: "Dockerfile".into(),
        context_excludes: vec!["*.md".into()],
        build_platform: amd64(),
        ..ConvertOptions::default()
    };
    let base = BaseImage {
        reference: "docker.io/library/busybox:latest".into(),
        digest: Digest::sha256_of(b"busybox manifest"),
        config: ImageConfig::default(),
    };
    let bases = HashMap::from([("busybox:latest".to_string(), base)]);
    let plan = convert(&df, &opts, &bases).expect("converts");
    let llb = to_llb(
        &plan.definition,
        plan.target,
        &LlbOptions {
            dockerfile: Some(DOCKERFILE.as_bytes().to_vec()),
            default_platform: amd64(),
            ..LlbOptions::default()
        },
    )
    .expect("has an LLB form");
    (llb, plan.definition)
}

/// Byte fields as text in the JSON view (the source's Dockerfile, heredoc files).
fn bytes_as_text(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "data" {
                    if let Value::Array(items) = v {
                        let bytes: Vec<u8> = items
                            .iter()
                            .filter_map(|b| b.as_u64())
                            .map(|b| b as u8)
                            .collect();
                        *v = Value::String(String::from_utf8_lossy(&bytes).into_owned());
                        continue;
                    }
                }
                bytes_as_text(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(bytes_as_text),
        _ => {}
    }
}

/// The marshalled definition decoded again, every op decoded from its bytes.
fn decoded(bytes: &[u8]) -> Value {
    let def = pb::Definition::decode(bytes).expect("decodes");
    let ops: Vec<Value> = def
        .def
        .iter()
        .map(|op| {
            let digest = format!("sha256:{}", sha256_hex(op));
            let decoded = pb::Op::decode(op.as_slice()).expect("op decodes");
            json!({
                "digest": digest,
                "op": serde_json::to_value(&decoded).expect("serialises"),
                "metadata": serde_json::to_value(def.metadata.get(&digest)).expect("serialises"),
            })
        })
        .collect();
    let mut value =
        json!({ "ops": ops, "source": serde_json::to_value(&def.source).expect("serialises") });
    bytes_as_text(&mut value);
    value
}

fn sha256_hex(bytes: &[u8]) -> String {
    Digest::sha256_of(bytes).hex().to_string()
}

#[test]
fn representative_dockerfile_llb_snapshot() {
    let (llb, _) = convert_representative();
    let json = serde_json::to_string_pretty(&decoded(&llb.to_bytes())).expect("json");
    insta::assert_snapshot!("representative_llb", json);
}

#[test]
fn op_digests_are_stable_and_name_the_marshalled_ops() {
    let (first, _) = convert_representative();
    let (second, _) = convert_representative();
    assert_eq!(
        first.to_bytes(),
        second.to_bytes(),
        "marshalling is deterministic"
    );
    for (bytes, op) in first.definition.def.iter().zip(&first.ops) {
        assert_eq!(op.digest, format!("sha256:{}", sha256_hex(bytes)));
    }
    // Every input edge names an earlier op; the terminal op (last) points at the target.
    let mut seen = Vec::new();
    for bytes in &first.definition.def {
        let op = pb::Op::decode(bytes.as_slice()).expect("decodes");
        for input in &op.inputs {
            assert!(
                seen.contains(&input.digest),
                "{} is not earlier",
                input.digest
            );
        }
        seen.push(format!("sha256:{}", sha256_hex(bytes)));
    }
    let last = pb::Op::decode(first.definition.def.last().expect("ops").as_slice()).expect("op");
    assert!(last.op.is_none() && last.inputs.len() == 1);
}

#[test]
fn caps_cover_what_the_graph_uses() {
    let (llb, _) = convert_representative();
    let all = llb.caps();
    for cap in [
        caps::SOURCE_IMAGE,
        caps::SOURCE_LOCAL,
        caps::SOURCE_LOCAL_EXCLUDE_PATTERNS,
        caps::SOURCE_HTTP,
        caps::SOURCE_HTTP_CHECKSUM,
        caps::EXEC_MOUNT_CACHE,
        caps::EXEC_MOUNT_TMPFS_SIZE,
        caps::EXEC_MOUNT_SECRET,
        caps::EXEC_SECRET_ENV,
        caps::EXEC_MOUNT_SSH,
        caps::EXEC_META_NETWORK,
        caps::FILE_BASE,
        caps::MERGE_OP,
        caps::META_DESCRIPTION,
    ] {
        assert!(all.contains(cap), "{cap} missing from {all:?}");
    }
    assert!(!all.contains(caps::EXEC_META_SECURITY), "{all:?}");
}

#[test]
fn unsupported_names_the_ops_a_daemon_cannot_solve() {
    let (llb, _) = convert_representative();
    // A daemon without merge ops (BuildKit before 0.10) cannot solve the COPY --link.
    let missing = llb.unsupported(|cap| cap != caps::MERGE_OP);
    assert_eq!(missing.len(), 1, "{missing:?}");
    let (op, cap) = missing[0];
    assert_eq!(caps::describe(cap), "COPY --link");
    assert!(op.name.contains("COPY --link"), "{}", op.name);
    assert!(llb.unsupported(|_| true).is_empty());
}

#[test]
fn named_contexts_are_locals_by_their_name() {
    use rbuild_frontend::NamedContext;
    let df = parse("FROM scratch\nCOPY --from=assets logo.png /\n").expect("parses");
    let opts = ConvertOptions {
        named_contexts: [(
            "assets".to_string(),
            NamedContext::Local {
                excludes: Vec::new(),
            },
        )]
        .into(),
        ..ConvertOptions::default()
    };
    let plan = convert(&df, &opts, &HashMap::new()).expect("converts");
    let llb = to_llb(&plan.definition, plan.target, &LlbOptions::default()).expect("converts");
    let source = pb::Op::decode(llb.definition.def[0].as_slice()).expect("op");
    let Some(pb::op::Op::Source(src)) = source.op else {
        panic!("first op is not a source: {source:?}");
    };
    assert_eq!(src.identifier, "local://assets");
    assert_eq!(
        src.attrs.get("local.sharedkeyhint").map(String::as_str),
        Some("context:assets")
    );
    assert_eq!(rbuild_buildkit::local_name("context:assets"), "assets");
    assert_eq!(rbuild_buildkit::local_name("context"), "context");
}

#[test]
fn copy_link_onto_scratch_needs_no_merge() {
    let df = parse("FROM scratch\nCOPY --link a /a\n").expect("parses");
    let plan = convert(&df, &ConvertOptions::default(), &HashMap::new()).expect("converts");
    let llb = to_llb(&plan.definition, plan.target, &LlbOptions::default()).expect("converts");
    assert!(!llb.caps().contains(caps::MERGE_OP), "{:?}", llb.ops);
    // The context, the copy on scratch, the terminal op pointing at the copy.
    assert_eq!(llb.ops.len(), 3, "{:?}", llb.ops);
    let terminal = pb::Op::decode(llb.definition.def[2].as_slice()).expect("op");
    assert_eq!(terminal.inputs[0].digest, llb.ops[1].digest);
    assert_eq!(
        llb.digest_of(plan.target),
        Some(llb.ops[1].digest.as_str()),
        "the merge vertex is the copy"
    );
}

#[test]
fn copy_parents_has_no_llb_form() {
    let df = parse("FROM scratch\nCOPY --parents a/./b /dst/\n").expect("parses");
    let plan = convert(&df, &ConvertOptions::default(), &HashMap::new()).expect("converts");
    let err = to_llb(&plan.definition, plan.target, &LlbOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "COPY --parents has no BuildKit LLB form (vertex {})",
            plan.target
        )
    );
}

#[test]
fn scratch_is_no_op_and_a_session_names_local_sources() {
    let df = parse("FROM scratch\nCOPY a /a\n").expect("parses");
    let plan = convert(&df, &ConvertOptions::default(), &HashMap::new()).expect("converts");
    let opts = LlbOptions {
        session_id: Some("sess-1".into()),
        ..LlbOptions::default()
    };
    let llb = to_llb(&plan.definition, plan.target, &opts).expect("converts");
    // local://context, the FileOp, the terminal op.
    assert_eq!(llb.ops.len(), 3, "{:?}", llb.ops);
    let source = pb::Op::decode(llb.definition.def[0].as_slice()).expect("op");
    let Some(pb::op::Op::Source(src)) = source.op else {
        panic!("first op is not a source: {source:?}");
    };
    assert_eq!(src.identifier, "local://context");
    assert_eq!(
        src.attrs.get("local.session").map(String::as_str),
        Some("sess-1")
    );
    let file = pb::Op::decode(llb.definition.def[1].as_slice()).expect("op");
    let Some(pb::op::Op::File(f)) = file.op else {
        panic!("second op is not a file op: {file:?}");
    };
    // The copy works on scratch (-1) with the context as its secondary input (0).
    assert_eq!((f.actions[0].input, f.actions[0].secondary_input), (-1, 0));
    assert!(file.platform.is_none(), "a FileOp has no platform");
}
