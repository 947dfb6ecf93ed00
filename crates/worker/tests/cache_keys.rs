//! Pins the cache keys of a representative build graph (every op kind, several options, context
//! and download content digests), computed exactly as a build computes them: the llb key
//! encoding ([`rbuild_worker::key_input`]) hashed by the solver's versioned formula with the
//! inputs' keys. A change to any of these digests changes every user's cache: it must come with
//! a bump of `rbuild_solver::KEY_VERSION` (which renames the cache index file) and new pins here.

//!
//! `the_keys_computed_by_the_worker_are_pinned` closes the chain: it computes keys through the
//! real [`Worker`]'s `Executor::cache_key` over a fixture build context (context checksums of
//! COPY sources and RUN bind mounts, in the order the worker assembles them), so a change to
//! context hashing shows up here as well as in `context_checksum.rs`.

mod common;

use rbuild_llb::*;
use rbuild_oci::Digest;
use rbuild_solver::{CacheKey, ContentDigest, Executor, KEY_VERSION};
use rbuild_worker::{graph_from_definition, key_input, Worker};

fn run(cmd: &str, proxy: &str, host_ip: &str) -> ExecOp {
    ExecOp {
        args: vec!["/bin/sh".into(), "-c".into(), cmd.into()],
        env: vec!["PATH=/usr/local/bin:/usr/bin:/bin".into(), "A=1".into()],
        cwd: "/app".into(),
        user: "1000".into(),
        network: NetworkMode::Default,
        security: SecurityMode::Sandbox,
        extra_hosts: vec![ExtraHost {
            host: "db".into(),
            ip: host_ip.into(),
        }],
        mounts: vec![ExecMount {
            kind: MountType::Cache,
            target: "/root/.cache".into(),
            input: None,
            selector: String::new(),
            readonly: false,
            cache: Some(CacheMountOpt {
                id: "/root/.cache".into(),
                sharing: CacheSharing::Shared,
                uid: 0,
                gid: 0,
                mode: 0o755,
            }),
            tmpfs_size: None,
            secret: None,
            ssh: None,
        }],
        proxy_env: vec![format!("HTTP_PROXY={proxy}"), format!("no_proxy={proxy}")],
    }
}

fn copy(src_input: usize, src: &str, dest: &str) -> FileAction {
    FileAction::Copy(CopyAction::new(src_input, src, dest))
}

fn file(actions: Vec<FileAction>) -> Op {
    Op::File(FileOp { actions })
}

/// The graph of a small Dockerfile; `base` stands for the base image's manifest.
fn graph(base: &[u8], proxy: &str, host_ip: &str) -> Definition {
    let mut def = Definition::new();
    let mut add =
        |op: Op, inputs: Vec<VertexIndex>, name: &str| def.add(op, inputs, name.to_string(), None);
    let image = add(
        Op::Source(SourceOp::Image {
            reference: "docker.io/library/busybox:latest".into(),
            digest: Some(Digest::sha256_of(base)),
        }),
        vec![],
        "FROM busybox",
    );
    let context = add(
        Op::Source(SourceOp::Local {
            name: "context".into(),
            excludes: vec!["target".into()],
        }),
        vec![],
        "context",
    );
    let mkdir = FileAction::Mkdir(MkdirAction {
        path: "/app".into(),
        mode: 0o755,
        make_parents: true,
        owner: Some(ChownOpt {
            user: UserOpt::Name("app".into()),
            group: Some(UserOpt::Id(1000)),
        }),
    });
    let workdir = add(file(vec![mkdir]), vec![image], "WORKDIR /app");
    let copied = add(
        file(vec![copy(1, "src", "/app/src")]),
        vec![workdir, context],
        "COPY src /app/src",
    );
    let ran = add(
        Op::Exec(run("make", proxy, host_ip)),
        vec![copied],
        "RUN make",
    );
    let scratch = add(Op::Source(SourceOp::Scratch), vec![], "scratch");
    let linked = add(
        file(vec![copy(1, "src", "/src")]),
        vec![scratch, context],
        "COPY --link src /src",
    );
    let merged = add(Op::Merge, vec![ran, linked], "merge");
    let http = add(
        Op::Source(SourceOp::Http {
            url: "https://example.com/tool.tgz".into(),
            checksum: None,
            filename: "tool.tgz".into(),
        }),
        vec![],
        "ADD https://example.com/tool.tgz",
    );
    let heredoc = add(
        Op::Source(SourceOp::Inline {
            filename: "run.sh".into(),
            content: "#!/bin/sh\necho hi\n".into(),
        }),
        vec![],
        "COPY <<EOF",
    );
    add(
        file(vec![copy(1, "/tool.tgz", "/opt/"), copy(2, "/run.sh", "/")]),
        vec![merged, http, heredoc],
        "ADD + COPY <<EOF",
    );
    def
}

/// The content digests a build computes (context checksums, the download's digest), fixed
/// here: the worker's checksum tests cover computing them.
fn content(op: &Op) -> Vec<ContentDigest> {
    let digest = |what: &str| ContentDigest {
        what: what.into(),
        digest: *blake3::hash(what.as_bytes()).as_bytes(),
    };
    match op {
        Op::File(f) => f
            .actions
            .iter()
            .filter_map(|a| match a {
                FileAction::Copy(c) if c.src == "src" => Some(digest("context src")),
                _ => None,
            })
            .collect(),
        Op::Source(SourceOp::Http { url, .. }) => vec![digest(url)],
        _ => vec![],
    }
}

/// The keys as the solver computes them. An input read by content (here the ADD + COPY from
/// a download and a heredoc) fills its slot with `CacheKey::content_input` of a digest fixed
/// here (the digests themselves are pinned in `content_keys.rs`).
fn keys(def: &Definition) -> Vec<(String, String)> {
    let mut keys: Vec<CacheKey> = Vec::new();
    let mut out = Vec::new();
    for v in &def.vertices {
        let context: Vec<bool> = v
            .inputs
            .iter()
            .map(|&i| {
                matches!(&def.vertices[i].op,
                    Op::Source(SourceOp::Local { name, .. }) if name == rbuild_worker::MAIN_CONTEXT)
            })
            .collect();
        let by_content = rbuild_worker::content_key::content_inputs(&v.op, &context);
        let inputs: Vec<CacheKey> = v
            .inputs
            .iter()
            .enumerate()
            .map(|(n, &i)| {
                if by_content.contains(&n) {
                    let what = format!("content of input {n}");
                    CacheKey::content_input(&ContentDigest {
                        digest: *blake3::hash(what.as_bytes()).as_bytes(),
                        what,
                    })
                } else {
                    keys[i]
                }
            })
            .collect();
        let key = CacheKey::compute(&key_input(&v.op, content(&v.op)), &inputs);
        keys.push(key);
        out.push((v.name.clone(), key.hex()));
    }
    out
}

#[test]
fn the_keys_of_a_representative_graph_are_pinned() {
    assert_eq!(KEY_VERSION, 3, "a new key version needs new pins below");
    let got = keys(&graph(b"manifest-1", "http://proxy:3128", "10.0.0.5"));
    let want: Vec<(String, String)> = [
        (
            "FROM busybox",
            "e64d70f9c7803788abed7a2fe9ce558825a234d57d637982fd6f28c1c90d9c78",
        ),
        (
            "context",
            "dfd3e277c9ea2df5069ff0f07610c004cf6c0ea642fdba06aa7112449b9c4549",
        ),
        (
            "WORKDIR /app",
            "0b32df02fc37d4ea7078ed0ebcd59c42198af4b8c50a20dcb0344cec8f608ff2",
        ),
        (
            "COPY src /app/src",
            "10c2210cf6ad1f7edc65e58a423a141c765abd17ebeb798a6c295fd68fedef9c",
        ),
        (
            "RUN make",
            "e663975c2b96ae676b06200a5b672f661b4c6abfe5dde615467e179e001f5406",
        ),
        (
            "scratch",
            "e05e0dd2c41ee698175a338dfa4f69be1a6c15b2a085c0290ec7da13c8cf3607",
        ),
        (
            "COPY --link src /src",
            "3c77c93ef2379f8f882521903522d93a4fe70a5c94ac2670499435d504f00920",
        ),
        (
            "merge",
            "fca7e9816551fc43c23740b635a88752610ce290130d3822dd1c66a6f6d7b5cf",
        ),
        (
            "ADD https://example.com/tool.tgz",
            "93faaced5a2b6ef1f9346b9d06139ffa5887f8ce7f76377f631939c6fe64f150",
        ),
        (
            "COPY <<EOF",
            "030078f2d5ede28aff7aa28b2928aea54e2f80966d073c40caef9cc2996a47cd",
        ),
        (
            "ADD + COPY <<EOF",
            "c7cbf390d9429842716c88dc7d907dcb2ea1ffccbe8ab5b90f8bd205a7ec792e",
        ),
    ]
    .iter()
    .map(|(n, k)| (n.to_string(), k.to_string()))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn proxies_and_host_addresses_do_not_change_keys() {
    let a = keys(&graph(b"manifest-1", "http://proxy:3128", "10.0.0.5"));
    let b = keys(&graph(b"manifest-1", "http://other:8080", "192.168.1.9"));
    assert_eq!(a, b);
}

#[test]
fn a_new_base_changes_the_keys_on_it_but_not_the_linked_copy() {
    let a = keys(&graph(b"manifest-1", "http://proxy:3128", "10.0.0.5"));
    let b = keys(&graph(b"manifest-2", "http://proxy:3128", "10.0.0.5"));
    let changed: Vec<&str> = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| x.1 != y.1)
        .map(|(x, _)| x.0.as_str())
        .collect();
    assert_eq!(
        changed,
        [
            "FROM busybox",
            "WORKDIR /app",
            "COPY src /app/src",
            "RUN make",
            "merge",
            "ADD + COPY <<EOF"
        ]
    );
}

/// A graph reading the fixture context: a COPY of two context paths (order counts), a RUN with
/// a cache mount and a bind mount of a context path, and an ADD with a pinned checksum.
fn context_graph() -> Definition {
    let mut def = Definition::new();
    let mut add =
        |op: Op, inputs: Vec<VertexIndex>, name: &str| def.add(op, inputs, name.to_string(), None);
    let image = add(
        Op::Source(SourceOp::Image {
            reference: "docker.io/library/busybox:latest".into(),
            digest: Some(Digest::sha256_of(b"manifest-1")),
        }),
        vec![],
        "FROM busybox",
    );
    let context = add(
        Op::Source(SourceOp::Local {
            name: "context".into(),
            excludes: common::EXCLUDES.iter().map(|e| e.to_string()).collect(),
        }),
        vec![],
        "context",
    );
    let copied = add(
        file(vec![
            copy(1, "src", "/app/src"),
            copy(1, "README.md", "/app/"),
        ]),
        vec![image, context],
        "COPY src README.md /app/",
    );
    let mut exec = run("make", "http://proxy:3128", "10.0.0.5");
    exec.mounts.push(ExecMount {
        kind: MountType::Bind,
        target: "/scripts".into(),
        input: Some(1),
        selector: "/src/run.sh".into(),
        readonly: true,
        cache: None,
        tmpfs_size: None,
        secret: None,
        ssh: None,
    });
    add(
        Op::Exec(exec),
        vec![copied, context],
        "RUN --mount=type=cache,type=bind make",
    );
    add(
        Op::Source(SourceOp::Http {
            url: "https://example.com/tool.tgz".into(),
            checksum: Some(format!("sha256:{}", "ab".repeat(32))),
            filename: "tool.tgz".into(),
        }),
        vec![],
        "ADD --checksum https://example.com/tool.tgz",
    );
    def
}

#[tokio::test]
async fn the_keys_computed_by_the_worker_are_pinned() {
    if !common::root_or_skip("the_keys_computed_by_the_worker_are_pinned") {
        return;
    }
    assert_eq!(KEY_VERSION, 3, "a new key version needs new pins below");
    let dir = tempfile::tempdir().expect("tempdir");
    let context = dir.path().join("context");
    std::fs::create_dir(&context).expect("mkdir");
    common::context_fixture(&context);
    let state = dir.path().join("state");
    let worker = Worker::new(
        rbuild_oci::Store::open(&state.join("store")).expect("store"),
        rbuild_snapshotter::Snapshotter::open(&state.join("snapshots")).expect("snapshots"),
        rbuild_sandbox::Sandbox::new("/nonexistent/rbuild".into()),
        rbuild_registry::RegistryClient::new().expect("registry client"),
        state.join("cache-mounts"),
    )
    .with_context(Some(context));
    let def = context_graph();
    let (graph, ids) = graph_from_definition(&def);
    let mut keys: Vec<CacheKey> = Vec::new();
    let mut got = Vec::new();
    for &id in &ids {
        let inputs: Vec<CacheKey> = graph.inputs(id).iter().map(|i| keys[i.0]).collect();
        let vertex = graph.vertex(id).expect("vertex");
        let input = worker.cache_key(vertex, &inputs).await.expect("cache key");
        let key = CacheKey::compute(&input, &inputs);
        keys.push(key);
        let what: Vec<String> = input.content.iter().map(|c| c.what.clone()).collect();
        got.push((graph.name(id).to_string(), what.join(","), key.hex()));
    }
    let want: Vec<(String, String, String)> = [
        (
            "FROM busybox",
            "",
            "e64d70f9c7803788abed7a2fe9ce558825a234d57d637982fd6f28c1c90d9c78",
        ),
        (
            "context",
            "",
            "7420f8455f0cd8da87b9cfc3918c522299ad7e0dae06a7b100bad60bf9497bf0",
        ),
        (
            "COPY src README.md /app/",
            "context src,context README.md",
            "7b2890870ee796ac8887ad9d38836b134fe3ce5c2ffc27e3c722cb433972ea52",
        ),
        (
            "RUN --mount=type=cache,type=bind make",
            "context src/run.sh",
            "3e15d4fea896f7103ee00716951109074fb322dad06d3c5417f8a44ecb3a866b",
        ),
        (
            "ADD --checksum https://example.com/tool.tgz",
            "https://example.com/tool.tgz",
            "1c8cf4d651537b4b6c38aaf9fa636a6e4067d935e1f3e3d147183ef558765d9a",
        ),
    ]
    .iter()
    .map(|(n, w, k)| (n.to_string(), w.to_string(), k.to_string()))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn a_platform_changes_the_key_only_when_set() {
    use rbuild_worker::key_input_for;
    let op = Op::Exec(run("make", "", "10.0.0.5"));
    let arm64: rbuild_oci::Platform = "linux/arm64".parse().expect("platform");
    let amd64: rbuild_oci::Platform = "linux/amd64".parse().expect("platform");
    let key = |input: rbuild_solver::KeyInput| CacheKey::compute(&input, &[]);
    // No platform: exactly the key without one (host builds and their caches stay valid).
    assert_eq!(
        key(key_input_for(&op, None, vec![])),
        key(key_input(&op, vec![]))
    );
    // Two platforms never share a result, and neither shares the host's (None) result.
    let on_arm = key(key_input_for(&op, Some(&arm64), vec![]));
    let on_amd = key(key_input_for(&op, Some(&amd64), vec![]));
    assert_ne!(on_arm, key(key_input(&op, vec![])));
    assert_ne!(on_arm, on_amd);
    // The graph carries the platform into the worker's vertex.
    let mut def = Definition::new();
    let base = def.add(Op::Source(SourceOp::Scratch), vec![], "s".into(), None);
    let v = def.add_for(op, vec![base], "r".into(), None, Some(arm64.clone()));
    let (graph, ids) = graph_from_definition(&def);
    let vertex = graph.vertex(ids[v]).expect("vertex");
    assert_eq!(vertex.platform.as_ref(), Some(&arm64));
}
