//! `rbuild graph` against the real binary: the graph JSON (snapshot), Graphviz DOT rendered by
//! `dot -Tsvg`, and BuildKit LLB decoded again (with the loopback registry's busybox as a base).
//! Nothing is built: no step runs and no snapshot is made.

mod common;

use common::{rbuild_at, stderr_text};
use prost::Message;
use rbuild_buildkit::pb;
use rbuild_testsupport::require_root;
use std::path::Path;
use std::process::Output;

/// A scratch-based multi-stage Dockerfile: planned without any registry.
const SCRATCH_DOCKERFILE: &str = r#"FROM scratch AS tools
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "echo hi > /x"]

FROM scratch
WORKDIR /app
COPY --from=tools /x /x
COPY --link --chown=1:2 a.txt /app/
"#;

fn context(dir: &Path, dockerfile: &str) {
    std::fs::create_dir_all(dir).expect("mkdir context");
    std::fs::write(dir.join("Dockerfile"), dockerfile).expect("write Dockerfile");
    std::fs::write(dir.join("busybox"), b"not really busybox").expect("write");
    std::fs::write(dir.join("a.txt"), b"a").expect("write");
}

fn graph(root: &Path, args: &[&str], ctx: &Path) -> Output {
    rbuild_at(root)
        .arg("graph")
        .args(args)
        .arg(ctx)
        .output()
        .expect("run rbuild graph")
}

fn ok(out: &Output) -> &[u8] {
    assert!(
        out.status.success(),
        "rbuild graph failed:\n{}",
        stderr_text(out)
    );
    &out.stdout
}

/// No snapshot was made: planning does not touch the snapshotter.
fn assert_nothing_built(root: &Path) {
    let snapshots = rbuild_build::StateDir::new(root).snapshots();
    let count = std::fs::read_dir(&snapshots)
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(
        count,
        0,
        "graph made snapshots under {}",
        snapshots.display()
    );
}

#[test]
fn graph_json_is_stable_and_documented() {
    if !require_root().expect("root check") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root, ctx) = (tmp.path().join("root"), tmp.path().join("ctx"));
    context(&ctx, SCRATCH_DOCKERFILE);
    let out = graph(&root, &[], &ctx);
    let json = String::from_utf8(ok(&out).to_vec()).expect("utf-8");
    let again = graph(&root, &["--format", "json"], &ctx);
    assert_eq!(
        json.as_bytes(),
        ok(&again),
        "the JSON is the same on every run"
    );
    let value: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(value["schemaVersion"], 1);
    insta::with_settings!({filters => vec![(r"linux/[a-z0-9]+(/v[0-9])?", "linux/HOST")]}, {
        insta::assert_snapshot!("graph_json", json);
    });
    assert_nothing_built(&root);
}

#[test]
fn graph_dot_renders_with_graphviz() {
    if !require_root().expect("root check") {
        return;
    }
    let required = std::env::var_os("CI").is_some()
        || std::env::var("RBUILD_REQUIRE_ROOT").is_ok_and(|v| v == "1");
    let dot_found = std::process::Command::new("dot")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !dot_found {
        assert!(
            !required,
            "Graphviz `dot` is missing (apt-get install graphviz)"
        );
        println!("SKIPPED: Graphviz `dot` is not installed");
        eprintln!("SKIPPED: Graphviz `dot` is not installed");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root, ctx) = (tmp.path().join("root"), tmp.path().join("ctx"));
    context(&ctx, SCRATCH_DOCKERFILE);
    let dot_file = tmp.path().join("graph.dot");
    let out = graph(
        &root,
        &["--format", "dot", "-o", dot_file.to_str().expect("utf-8")],
        &ctx,
    );
    assert!(ok(&out).is_empty(), "-o FILE leaves stdout empty");
    let dot = std::fs::read_to_string(&dot_file).expect("read dot");
    assert!(
        dot.contains("subgraph cluster_0 {\n    label=\"tools\";"),
        "{dot}"
    );
    assert!(dot.contains("label=\"stage-1\""), "{dot}");
    let svg_file = tmp.path().join("graph.svg");
    let rendered = std::process::Command::new("dot")
        .args(["-Tsvg", "-o"])
        .arg(&svg_file)
        .arg(&dot_file)
        .output()
        .expect("run dot");
    assert!(
        rendered.status.success(),
        "dot rejected the graph: {}\n{dot}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let svg = std::fs::read_to_string(&svg_file).expect("read svg");
    for text in [
        "[tools 2/2] RUN [&quot;/bin/busybox&quot;, &quot;sh&quot;, &quot;&#45;c&quot;, &quot;echo hi &gt; /x&quot;]",
        "[stage&#45;1 2/3] COPY &#45;&#45;from=tools /x /x",
        "[internal] load build context",
    ] {
        assert!(svg.contains(text), "{text} missing from the SVG:\n{svg}");
    }
    // Edges go from input to consumer: the RUN feeds the COPY --from.
    let run = dot
        .lines()
        .find(|l| l.contains("[tools 2/2] RUN"))
        .and_then(|l| l.split_whitespace().next())
        .expect("RUN node");
    let copy = dot
        .lines()
        .find(|l| l.contains("COPY --from=tools"))
        .and_then(|l| l.split_whitespace().next())
        .expect("COPY node");
    assert!(dot.contains(&format!("{run} -> {copy};")), "{dot}");
}

/// Decodes a marshalled definition into its ops.
fn ops(bytes: &[u8]) -> (pb::Definition, Vec<pb::Op>) {
    let def = pb::Definition::decode(bytes).expect("a pb.Definition");
    let ops = def
        .def
        .iter()
        .map(|b| pb::Op::decode(b.as_slice()).expect("a pb.Op"))
        .collect();
    (def, ops)
}

#[test]
fn graph_llb_is_buildkit_definition_with_pinned_base() {
    let Some(env) = common::env() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root, ctx) = (tmp.path().join("root"), tmp.path().join("ctx"));
    let dockerfile = format!(
        "FROM {} AS base\nRUN --mount=type=cache,target=/var/cache echo hi > /hi\n\nFROM base\nCOPY a.txt /a.txt\n",
        env.base
    );
    context(&ctx, &dockerfile);
    let out = graph(&root, &["--format", "llb"], &ctx);
    let bytes = ok(&out).to_vec();
    let file = tmp.path().join("def.pb");
    let again = graph(
        &root,
        &["--format", "llb", "-o", file.to_str().expect("utf-8")],
        &ctx,
    );
    ok(&again);
    assert_eq!(
        std::fs::read(&file).expect("read"),
        bytes,
        "deterministic bytes"
    );
    let (def, ops) = ops(&bytes);
    // The terminal op is last and points at the final COPY.
    let terminal = ops.last().expect("ops");
    assert!(terminal.op.is_none() && terminal.inputs.len() == 1);
    let image = ops
        .iter()
        .find_map(|op| match &op.op {
            Some(pb::op::Op::Source(s)) if s.identifier.starts_with("docker-image://") => {
                Some(s.identifier.clone())
            }
            _ => None,
        })
        .expect("an image source");
    assert!(
        image.starts_with(&format!("docker-image://{}@sha256:", env.base)),
        "{image}"
    );
    let exec = ops
        .iter()
        .find_map(|op| match &op.op {
            Some(pb::op::Op::Exec(e)) => Some(e.clone()),
            _ => None,
        })
        .expect("an exec op");
    let cache = exec
        .mounts
        .iter()
        .find(|m| m.dest == "/var/cache")
        .expect("the cache mount");
    assert_eq!(cache.mount_type, pb::MountType::Cache as i32);
    // The source map holds the Dockerfile, and the RUN's op points at line 2.
    let source = def.source.expect("a source map");
    assert_eq!(source.infos[0].data, dockerfile.as_bytes());
    let lines: Vec<i32> = source
        .locations
        .values()
        .flat_map(|l| &l.locations)
        .flat_map(|l| &l.ranges)
        .filter_map(|r| r.start.as_ref().map(|p| p.line))
        .collect();
    assert!(lines.contains(&2), "{lines:?}");
    // Every op but the terminal one has its name and caps in the metadata.
    let named = def
        .metadata
        .values()
        .filter(|m| m.description.contains_key("llb.customname"))
        .count();
    assert_eq!(named, ops.len() - 1, "{:?}", def.metadata);
    assert_nothing_built(&root);
}

#[test]
fn graph_llb_refuses_several_platforms() {
    if !require_root().expect("root check") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root, ctx) = (tmp.path().join("root"), tmp.path().join("ctx"));
    context(&ctx, "FROM scratch\nCOPY a.txt /\n");
    let out = graph(
        &root,
        &["--format", "llb", "--platform", "linux/amd64,linux/arm64"],
        &ctx,
    );
    assert!(!out.status.success());
    assert_eq!(
        stderr_text(&out).trim(),
        "error: --format llb needs one target platform, the build has 2: give one --platform"
    );
    // One platform is fine, and the JSON lists both.
    ok(&graph(
        &root,
        &[
            "--format",
            "llb",
            "--platform",
            "linux/arm64",
            "-o",
            "/dev/null",
        ],
        &ctx,
    ));
    let json = graph(&root, &["--platform", "linux/amd64,linux/arm64"], &ctx);
    let value: serde_json::Value = serde_json::from_slice(ok(&json)).expect("json");
    assert_eq!(value["platforms"].as_array().map(Vec::len), Some(2));
}

#[test]
fn graph_llb_is_not_written_to_a_terminal() {
    if !require_root().expect("root check") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root, ctx) = (tmp.path().join("root"), tmp.path().join("ctx"));
    context(&ctx, "FROM scratch\nCOPY a.txt /\n");
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let out = rbuild_at(&root)
        .args(["graph", "--format", "llb"])
        .arg(&ctx)
        .stdout(std::process::Stdio::from(pty.slave))
        .output()
        .expect("run rbuild graph");
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: --format llb writes binary protobuf: refusing to write it to a terminal (use -o FILE or a pipe)"
    );
    // DOT is text: a terminal is fine.
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let dot = rbuild_at(&root)
        .args(["graph", "--format", "dot"])
        .arg(&ctx)
        .stdout(std::process::Stdio::from(pty.slave))
        .output()
        .expect("run rbuild graph");
    assert!(
        dot.status.success(),
        "{}",
        String::from_utf8_lossy(&dot.stderr)
    );
    drop(pty.master);
}
