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
    /// The names of the vertices that ended with `kind`'s variant.
    fn ended(&self, cached: bool) -> Vec<String> {
        self.vertices
            .lock()
            .expect("recorder lock")
            .iter()
            .filter(|e| match e.kind {
                VertexEventKind::Cached => cached,
                VertexEventKind::Done { .. } => !cached,
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
    assert_eq!(
        index["manifests"][0]["digest"].as_str(),
        Some(result.digest().to_string().as_str()),
        "the result names the manifest the layout holds"
    );

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

    let layers_before = manifest_layers(&dest, result.digest());

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
    // The layers are the same blobs. (The config is not byte-identical yet: `created` is the
    // build's time; a reproducible cached rebuild is issue 10.)
    assert_eq!(manifest_layers(&dest, again.digest()), layers_before);
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
    let err = match runtime.block_on(build(request(&root, &context, &dest, recorder.clone()))) {
        Ok(_) => panic!("a RUN that exits 1 must fail the build"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("did not complete successfully: exit code: 1"),
        "BuildKit's wording: {err}"
    );
    assert!(!dest.exists(), "no output is written for a failed build");
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
}
