//! `examples/kubernetes/job.yaml` without a cluster: the manifest passes the JSON schema kept
//! beside it (`schema/job-subset.schema.json`, the subset of batch/v1 Job it uses, written from
//! the Kubernetes API reference, every object closed), and broken copies of it (an unknown
//! field, a misplaced one, wrong types, a bad enum value, a bad quantity, a volume with two
//! sources) fail with the path of what is wrong. The Job is what rootless rbuild needs (the
//! image's user, the relaxations of docs/container.md, the state volume, credentials from a
//! Secret as DOCKER_CONFIG, the registry cache), its rbuild flags parse with rbuild's own
//! parsers, and its container turns into `docker run` arguments (`common::k8s_job`), which
//! `container_image.rs` runs through docker.
//!
//! Needs Debian's python3-yaml and python3-jsonschema: skips loudly without them, unless
//! `RBUILD_REQUIRE_ROOT=1` or `CI` is set.

mod common;

use common::k8s_job::{self, Volumes};
use serde_json::Value;
use std::path::PathBuf;
use std::str::FromStr;

fn manifest() -> PathBuf {
    k8s_job::examples_dir().join("job.yaml")
}

fn schema() -> PathBuf {
    k8s_job::examples_dir().join("schema/job-subset.schema.json")
}

/// The Job, the only document of the manifest.
fn job() -> Value {
    let mut docs = k8s_job::load(&manifest());
    assert_eq!(docs.len(), 1, "one document: the Job");
    docs.remove(0)
}

/// The manifest's text with `from` replaced by `to` (exactly once), checked against the schema.
fn check_broken(from: &str, to: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(manifest()).expect("read job.yaml");
    assert_eq!(text.matches(from).count(), 1, "{from:?} must occur once");
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("job.yaml");
    std::fs::write(&copy, text.replace(from, to)).expect("write the copy");
    k8s_job::validate(&schema(), &copy)
}

#[test]
fn the_job_manifest_passes_its_schema() {
    if !k8s_job::python_tools() {
        return;
    }
    k8s_job::validate(&schema(), &manifest()).expect("job.yaml against the schema");
}

#[test]
fn broken_copies_of_the_manifest_fail_the_schema() {
    if !k8s_job::python_tools() {
        return;
    }
    // (replace, with, what the validator must name)
    let cases: &[(&str, &str, &str)] = &[
        // A misspelt field.
        (
            "        runAsNonRoot: true",
            "        runAsNonRoot: true\n        runAsUsr: 1000",
            "spec/template/spec/securityContext : Additional properties are not allowed ('runAsUsr'",
        ),
        // A field that exists, but not there (procMount is a container's).
        (
            "        fsGroup: 1000",
            "        fsGroup: 1000\n        procMount: Unmasked",
            "spec/template/spec/securityContext : Additional properties are not allowed ('procMount'",
        ),
        // Wrong types.
        (
            "        runAsUser: 1000",
            "        runAsUser: \"1000\"",
            "spec/template/spec/securityContext/runAsUser : '1000' is not of type 'integer'",
        ),
        (
            "              value: \"1\"",
            "              value: 1",
            "spec/template/spec/containers/0/env/1/value : 1 is not of type 'string'",
        ),
        (
            "            allowPrivilegeEscalation: true",
            "            allowPrivilegeEscalation: yes please",
            "spec/template/spec/containers/0/securityContext/allowPrivilegeEscalation : 'yes please' is not of type 'boolean'",
        ),
        // An enum value a Job refuses.
        (
            "      restartPolicy: Never",
            "      restartPolicy: Always",
            "spec/template/spec/restartPolicy : 'Always' is not one of ['Never', 'OnFailure']",
        ),
        (
            "          type: Unconfined\n        appArmorProfile:",
            "          type: unconfined\n        appArmorProfile:",
            "spec/template/spec/securityContext/seccompProfile/type : 'unconfined' is not one of",
        ),
        // A quantity Kubernetes does not parse.
        (
            "              memory: 4Gi",
            "              memory: 4 GB",
            "spec/template/spec/containers/0/resources/limits/memory : '4 GB' is not valid",
        ),
        // A volume with two sources.
        (
            "          emptyDir:\n            sizeLimit: 2Gi",
            "          emptyDir:\n            sizeLimit: 2Gi\n          secret:\n            secretName: x",
            "spec/template/spec/volumes/1 : {",
        ),
        // The wrong API.
        ("apiVersion: batch/v1", "apiVersion: v1", "apiVersion : 'batch/v1' was expected"),
    ];
    for (from, to, want) in cases {
        let err = check_broken(from, to)
            .err()
            .unwrap_or_else(|| panic!("the schema accepted {to:?}"));
        assert!(err.contains(want), "{to:?}: expected {want:?} in:\n{err}");
    }
}

/// The value of `--flag VALUE` in the rbuild container's args.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

#[test]
fn the_job_runs_rootless_rbuild_as_its_image_expects() {
    if !k8s_job::python_tools() {
        return;
    }
    let job = job();
    let pod = &job["spec"]["template"]["spec"];
    let psc = &pod["securityContext"];
    // The image's user (packaging/container/Dockerfile: rbuild, 1000:1000, numeric).
    assert_eq!(psc["runAsUser"], 1000);
    assert_eq!(psc["runAsGroup"], 1000);
    assert_eq!(psc["runAsNonRoot"], true);
    // Only rootless BuildKit's relaxations.
    assert_eq!(psc["seccompProfile"]["type"], "Unconfined");
    assert_eq!(psc["appArmorProfile"]["type"], "Unconfined");
    let rbuild = &pod["containers"][0];
    assert_eq!(rbuild["name"], "rbuild");
    let csc = &rbuild["securityContext"];
    assert_eq!(csc["privileged"], false);
    // no_new_privs would void newuidmap's file capabilities.
    assert_eq!(csc["allowPrivilegeEscalation"], true);
    assert!(csc.get("capabilities").is_none(), "{csc}");
    assert!(pod.get("hostPID").is_none() && pod.get("hostNetwork").is_none());

    let env: Vec<(&str, &str)> = rbuild["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap()))
        .collect();
    assert!(env.contains(&("RBUILD_NO_PROCESS_SANDBOX", "1")), "{env:?}");
    let docker_config = env
        .iter()
        .find(|(k, _)| *k == "DOCKER_CONFIG")
        .map(|(_, v)| *v)
        .expect("DOCKER_CONFIG");
    let mounts = rbuild["volumeMounts"].as_array().expect("volumeMounts");
    let mount_of = |path: &str| {
        mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}: {mounts:?}"))
    };
    let volume = |name: &Value| {
        pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| &v["name"] == name)
            .expect("declared volume")
            .clone()
    };
    // Credentials: the Secret's .dockerconfigjson as config.json in DOCKER_CONFIG, read-only.
    let auth = mount_of(docker_config);
    assert_eq!(auth["readOnly"], true);
    let secret = volume(&auth["name"]);
    assert_eq!(secret["secret"]["items"][0]["key"], ".dockerconfigjson");
    assert_eq!(secret["secret"]["items"][0]["path"], "config.json");
    // The state root of the image's user is an emptyDir (a real filesystem for overlayfs).
    let state = mount_of("/home/rbuild/.local/share/rbuild");
    assert!(volume(&state["name"]).get("emptyDir").is_some());
    // Requests and limits for CPU, memory and the ephemeral storage the emptyDirs use.
    for kind in ["requests", "limits"] {
        for r in ["cpu", "memory", "ephemeral-storage"] {
            assert!(
                rbuild["resources"][kind][r].is_string(),
                "resources.{kind}.{r} missing"
            );
        }
    }

    // The build's flags, read by rbuild's own parsers: push, cache import and export.
    let args: Vec<String> = rbuild["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect();
    assert_eq!(args.first().map(String::as_str), Some("build"));
    let output = flag_value(&args, "--output").expect("--output");
    let output = rbuild_build::OutputSpec::from_str(output).expect("--output parses");
    assert!(
        format!("{output:?}").contains("push: true"),
        "the output pushes: {output:?}"
    );
    let from = flag_value(&args, "--cache-from").expect("--cache-from");
    rbuild_build::CacheFromSpec::from_str(from).expect("--cache-from parses");
    assert!(from.starts_with("type=registry,"), "{from}");
    let to = flag_value(&args, "--cache-to").expect("--cache-to");
    rbuild_build::CacheToSpec::from_str(to).expect("--cache-to parses");
    assert!(
        to.starts_with("type=registry,") && to.ends_with(",mode=max"),
        "{to}"
    );
    // The context is the workspace volume the init container fills.
    assert_eq!(args.last().map(String::as_str), Some("/workspace"));
    assert!(volume(&mount_of("/workspace")["name"])
        .get("emptyDir")
        .is_some());
}

#[test]
fn the_job_container_as_docker_run_arguments() {
    if !k8s_job::python_tools() {
        return;
    }
    let job = job();
    let volumes = Volumes {
        host_dirs: vec![("registry-auth".into(), PathBuf::from("/tmp/auth"))],
    };
    let args = k8s_job::docker_run_args(&job, "rbuild", Some("rbuild:local"), &volumes)
        .expect("docker arguments");
    let want = [
        "--user",
        "1000:1000",
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "apparmor=unconfined",
        "-e",
        "DOCKER_CONFIG=/home/rbuild/.docker",
        "-e",
        "RBUILD_NO_PROCESS_SANDBOX=1",
        "-v",
        "/home/rbuild/.local/share/rbuild",
        "-v",
        "/tmp/auth:/home/rbuild/.docker:ro",
        "-v",
        "/workspace:ro",
        "--memory",
        "4294967296",
        "--cpus",
        "2",
        "rbuild:local",
        "build",
        "--progress=plain",
        "--output",
        "type=image,name=registry.example.com/team/app:latest,push=true",
        "--cache-from",
        "type=registry,ref=registry.example.com/team/app:buildcache",
        "--cache-to",
        "type=registry,ref=registry.example.com/team/app:buildcache,mode=max",
        "/workspace",
    ];
    assert_eq!(args, want);
    // A secret volume needs its host directory. The init container (with the pod's security
    // context, as the kubelet gives it) maps too.
    let err = k8s_job::docker_run_args(&job, "rbuild", None, &Volumes::default()).unwrap_err();
    assert_eq!(err, "no host directory given for volume registry-auth");
    let init = serde_json::json!({"spec": {"template": {"spec": {
        "securityContext": job["spec"]["template"]["spec"]["securityContext"],
        "containers": job["spec"]["template"]["spec"]["initContainers"],
        "volumes": job["spec"]["template"]["spec"]["volumes"],
    }}}});
    let args = k8s_job::docker_run_args(&init, "checkout", None, &Volumes::default())
        .expect("init container");
    assert_eq!(
        args,
        [
            "--user",
            "1000:1000",
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "apparmor=unconfined",
            "-v",
            "/workspace",
            "alpine/git:2.45.2",
            "clone",
            "--depth=1",
            "https://git.example.com/team/app.git",
            "/workspace"
        ]
    );
}

#[test]
fn kubernetes_quantities_for_docker() {
    assert_eq!(k8s_job::bytes("4Gi"), Some(4 << 30));
    assert_eq!(k8s_job::bytes("512Mi"), Some(512 << 20));
    assert_eq!(k8s_job::bytes("2G"), Some(2_000_000_000));
    assert_eq!(k8s_job::bytes("1000"), Some(1000));
    assert_eq!(k8s_job::bytes("4 GB"), None);
    assert_eq!(k8s_job::cpus("2").as_deref(), Some("2"));
    assert_eq!(k8s_job::cpus("1500m").as_deref(), Some("1.500"));
    assert_eq!(k8s_job::cpus("250m").as_deref(), Some("0.250"));
    assert_eq!(k8s_job::cpus("two"), None);
}
