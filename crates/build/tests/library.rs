//! Drives real builds through the library API, as an embedder would: a Dockerfile with a RUN
//! (sandboxed; the host's static busybox is the only binary in the image) built into an OCI
//! layout, checked by `umoci`, then rebuilt to see every step come from the cache.

use rbuild_build::{
    build, BuildEvent, BuildRequest, ContextSource, OutputSpec, Progress, ProgressSink, StateDir,
    VertexEvent, VertexEventKind,
};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

/// Records the vertex events and build events a build reports.
#[derive(Default)]
struct Recorder {
    vertices: Arc<Mutex<Vec<VertexEvent>>>,
    events: Mutex<Vec<String>>,
}

impl Progress for Recorder {
    fn solver_sink(&self) -> ProgressSink {
        let vertices = self.vertices.clone();
        ProgressSink::new(move |e| vertices.lock().expect("recorder lock").push(e))
    }

    fn event(&self, event: BuildEvent) {
        self.events
            .lock()
            .expect("recorder lock")
            .push(format!("{event:?}"));
    }
}

impl Recorder {
    /// The names of the steps that ended with `kind`'s variant (the build's own vertices,
    /// `[internal] load ...` and `exporting to image`, have no cache key and are left out).
    fn ended(&self, cached: bool) -> Vec<String> {
        self.vertices
            .lock()
            .expect("recorder lock")
            .iter()
            .filter(|e| match e.kind {
                VertexEventKind::Cached => cached,
                VertexEventKind::Done { .. } => !cached && e.cache_key.is_some(),
                _ => false,
            })
            .map(|e| e.name.clone())
            .collect()
    }
}

fn request(root: &Path, context: &Path, dest: &Path, progress: Arc<Recorder>) -> BuildRequest {
    let mut request = BuildRequest::new(StateDir::new(root), ContextSource::Dir(context.into()));
    request.tags = vec!["example/lib:1".to_string()];
    let output: OutputSpec = format!("type=oci,dest={},tar=false", dest.display())
        .parse()
        .expect("output spec");
    request.outputs.push(output);
    request.progress = progress;
    request
}

/// The layer descriptors of the manifest `digest` in the OCI layout `dir`.
fn manifest_layers(dir: &Path, digest: &impl std::fmt::Display) -> serde_json::Value {
    let digest = digest.to_string();
    let hex = digest.trim_start_matches("sha256:");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("blobs/sha256").join(hex)).expect("manifest blob"),
    )
    .expect("manifest json");
    assert!(
        manifest["layers"].as_array().is_some_and(|l| l.len() == 3),
        "{manifest}"
    );
    manifest["layers"].clone()
}

fn run(runtime: &tokio::runtime::Runtime, request: BuildRequest) -> rbuild_build::BuildResult {
    match runtime.block_on(build(request)) {
        Ok(result) => result,
        Err(e) => panic!("build failed: {e}"),
    }
}

fn library_builds_runs_and_caches() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root, context, dest) = (
        tmp.path().join("root"),
        tmp.path().join("ctx"),
        tmp.path().join("layout"),
    );
    std::fs::create_dir_all(&context).expect("context dir");
    std::fs::copy("/bin/busybox", context.join("busybox")).expect("copy busybox");
    std::fs::write(context.join("hello.txt"), "hello from the library\n").expect("write");
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY hello.txt /hello.txt\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox tr a-z A-Z < /hello.txt > /upper.txt\"]\n",
    )
    .expect("write Dockerfile");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let first = Arc::new(Recorder::default());
    let result = run(&runtime, request(&root, &context, &dest, first.clone()));
    let done = first.ended(false);
    assert!(
        done.iter().any(|n| n.contains("RUN")),
        "the RUN executed: {done:?}"
    );
    assert_eq!(result.outputs.len(), 1, "{:?}", result.outputs);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("index.json")).expect("index.json"))
            .expect("index json");
    // The layout holds the image with gzip layers (the store keeps them uncompressed): the
    // output's result names that manifest, the build's the store's.
    let archived = result.outputs[0]
        .manifest
        .clone()
        .expect("archive manifest");
    assert_eq!(
        index["manifests"][0]["digest"].as_str(),
        Some(archived.digest.to_string().as_str()),
        "the output's result names the manifest the layout holds"
    );
    assert_ne!(&archived.digest, result.digest());
    assert_eq!(result.metadata.digest, archived.digest);

    // umoci, an independent reader, unpacks what the library wrote.
    let bundle = tmp.path().join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:1", dest.display()))
        .arg(&bundle)
        .output()
        .expect("run umoci");
    assert!(
        out.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/upper.txt")).expect("upper.txt"),
        "HELLO FROM THE LIBRARY\n"
    );

    let layers_before = manifest_layers(&dest, &archived.digest);

    // The same request again: every step is reported cached and the image is the same.
    let second = Arc::new(Recorder::default());
    std::fs::remove_dir_all(&dest).expect("remove layout");
    let again = run(&runtime, request(&root, &context, &dest, second.clone()));
    assert!(
        second.ended(false).is_empty(),
        "nothing executed: {:?}",
        second.ended(false)
    );
    assert!(
        second.ended(true).iter().any(|n| n.contains("RUN")),
        "the RUN was reported cached: {:?}",
        second.ended(true)
    );
    // The layers are the same blobs and the image is identical: its times are the cached
    // results', not the clock's.
    let archived_again = again.outputs[0].manifest.clone().expect("archive manifest");
    assert_eq!(archived_again, archived, "the same compressed variants");
    assert_eq!(
        manifest_layers(&dest, &archived_again.digest),
        layers_before
    );
    assert_eq!(again.config_digest, result.config_digest);
    assert_eq!(again.digest(), result.digest());
    assert!(
        !second.events.lock().expect("lock").is_empty(),
        "build events reached the embedder's Progress"
    );
}

fn a_failing_run_is_a_typed_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root, context, dest) = (
        tmp.path().join("root"),
        tmp.path().join("ctx"),
        tmp.path().join("layout"),
    );
    std::fs::create_dir_all(&context).expect("context dir");
    std::fs::copy("/bin/busybox", context.join("busybox")).expect("copy busybox");
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"false\"]\n",
    )
    .expect("write Dockerfile");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let recorder = Arc::new(Recorder::default());
    let error = match runtime.block_on(build(request(&root, &context, &dest, recorder.clone()))) {
        Ok(_) => panic!("a RUN that exits 1 must fail the build"),
        Err(e) => e,
    };
    // Typed: the failed vertex and the RUN's exit code, without parsing the text.
    let failure = error.solve_failure().expect("a solve failure");
    assert_eq!(failure.exit_code(), Some(1), "{error}");
    assert!(
        failure.vertex_name().is_some_and(|n| n.contains("RUN")),
        "{:?}",
        failure.vertex_name()
    );
    assert!(failure.at.is_some_and(|l| l.start == 3), "{:?}", failure.at);
    assert!(error.registry_error().is_none());
    let err = error.to_string();
    assert!(
        err.contains("did not complete successfully: exit code: 1"),
        "BuildKit's wording: {err}"
    );
    assert!(!dest.exists(), "no output is written for a failed build");
}

/// A tar stream of a context: a Dockerfile copying busybox and `name.txt` holding `text`.
fn context_tar(text: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], mode: u32| {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        builder
            .append_data(&mut header, path, data)
            .expect("tar entry");
    };
    add(
        "Dockerfile",
        b"FROM scratch\nCOPY busybox /bin/busybox\nCOPY name.txt /name.txt\n\
          RUN [\"/bin/busybox\", \"cp\", \"/name.txt\", \"/copied.txt\"]\n",
        0o644,
    );
    add(
        "busybox",
        &std::fs::read("/bin/busybox").expect("read busybox"),
        0o755,
    );
    add("name.txt", text.as_bytes(), 0o644);
    builder.into_inner().expect("tar")
}

/// Two builds of one root in one process, each with a context stream: each gets its own temp
/// context (neither removes the other's), both are gone afterwards, and a registry client given
/// in the request is the one used (anonymous credentials, no environment).
fn concurrent_streamed_contexts_stay_apart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let requests: Vec<_> = ["first", "second"]
        .iter()
        .map(|name| {
            let dest = tmp.path().join(name);
            let mut request = BuildRequest::new(
                StateDir::new(&root),
                ContextSource::Stream(Box::new(std::io::Cursor::new(context_tar(name)))),
            );
            let output: OutputSpec = format!("type=local,dest={}", dest.display())
                .parse()
                .expect("output spec");
            request.outputs.push(output);
            let options = rbuild_build::ClientOptions {
                credentials: rbuild_build::Credentials::Anonymous,
                ..rbuild_build::ClientOptions::default()
            };
            request.registry =
                Some(rbuild_build::RegistryClient::with_options(options).expect("client"));
            (dest, request)
        })
        .collect();
    let (dests, requests): (Vec<_>, Vec<_>) = requests.into_iter().unzip();
    let results = runtime.block_on(futures_util::future::join_all(
        requests.into_iter().map(build),
    ));
    for ((result, dest), name) in results.into_iter().zip(&dests).zip(["first", "second"]) {
        if let Err(e) = result {
            panic!("build of {name} failed: {e}");
        }
        assert_eq!(
            std::fs::read_to_string(dest.join("copied.txt")).expect("copied.txt"),
            name
        );
    }
    let left: Vec<_> = std::fs::read_dir(StateDir::new(&root).tmp())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "temp contexts left behind: {left:?}");
}

/// `plan_graph` plans without building: the graph of a streamed context, the directories a
/// session would serve (the context stays as long as the plan, then goes), no snapshot made.
fn plan_graph_keeps_its_context() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let assets = tmp.path().join("assets");
    std::fs::create_dir_all(&assets).expect("mkdir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut request = BuildRequest::new(
        StateDir::new(&root),
        ContextSource::Stream(Box::new(std::io::Cursor::new(context_tar("graph")))),
    );
    request.named_contexts = vec![format!("assets={}", assets.display())
        .parse()
        .expect("build context spec")];
    let graph = runtime
        .block_on(rbuild_build::graph::plan_graph(request))
        .expect("plans");
    let context = graph
        .local_dirs
        .get("context")
        .expect("the context")
        .clone();
    assert_eq!(
        std::fs::read_to_string(context.join("name.txt")).expect("context file"),
        "graph"
    );
    assert_eq!(graph.local_dirs.get("assets"), Some(&assets));
    let names: Vec<&str> = graph
        .plan
        .definition
        .vertices
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.ends_with("RUN [\"/bin/busybox\", \"cp\", \"/name.txt\", \"/copied.txt\"]")),
        "{names:?}"
    );
    let llb = graph.to_llb(Some("session".into())).expect("llb");
    assert!(llb.caps().contains("exec.meta.base"));
    let snapshots = std::fs::read_dir(StateDir::new(&root).snapshots())
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(snapshots, 0, "planning made snapshots");
    drop(graph);
    assert!(!context.exists(), "the streamed context outlived its plan");
}

fn main() {
    rbuild_build::helper_main_if_requested();
    match rbuild_testsupport::require_root() {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => panic!("{e}"),
    }
    if !Path::new("/bin/busybox").exists() || rbuild_testsupport::need_tool("umoci").is_err() {
        if std::env::var("RBUILD_REQUIRE_ROOT").as_deref() == Ok("1") {
            panic!("busybox-static and umoci are needed (scripts/test.sh installs them)");
        }
        println!("SKIPPED: needs /bin/busybox (busybox-static) and umoci");
        return;
    }
    library_builds_runs_and_caches();
    println!("test library_builds_runs_and_caches ... ok");
    a_failing_run_is_a_typed_error();
    println!("test a_failing_run_is_a_typed_error ... ok");
    concurrent_streamed_contexts_stay_apart();
    println!("test concurrent_streamed_contexts_stay_apart ... ok");
    plan_graph_keeps_its_context();
    println!("test plan_graph_keeps_its_context ... ok");
}
