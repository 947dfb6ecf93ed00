//! Kubernetes Job manifests in tests: loading one (YAML through Debian's `python3-yaml`),
//! checking it against the JSON schema kept beside it (`python3-jsonschema`), and turning one
//! of its containers into the `docker run` arguments that run the same container here, the way
//! a kubelet would run it (user, seccomp/AppArmor profiles, `/proc` masking, environment,
//! volumes, limits, entrypoint and arguments).
//!
//! The Python tools are Debian packages (`.ci/run` installs them); without them the caller
//! skips loudly, unless `RBUILD_REQUIRE_ROOT=1` or `CI` is set ([`python_tools`]).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's interpreter (not a user's pyenv/venv one): the packages are installed for it.
const PYTHON: &str = "/usr/bin/python3";

/// `yaml.safe_load_all` of argv[1] as a JSON list on stdout.
const TO_JSON: &str = "import json, sys, yaml\n\
json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)\n";

/// Validates every document of argv[2] against the Draft 2020-12 schema argv[1]; prints one
/// `PATH: MESSAGE` line per error and exits 1 when there is any.
const VALIDATE: &str = "import json, sys, yaml, jsonschema\n\
schema = json.load(open(sys.argv[1]))\n\
jsonschema.Draft202012Validator.check_schema(schema)\n\
v = jsonschema.Draft202012Validator(schema)\n\
errors = [e for d in yaml.safe_load_all(open(sys.argv[2])) for e in v.iter_errors(d)]\n\
for e in errors:\n    print('/'.join(map(str, e.absolute_path)) or '(root)', ':', e.message)\n\
sys.exit(1 if errors else 0)\n";

/// Whether Debian's python3 with `yaml` and `jsonschema` is there; false after a loud skip
/// message; panics instead when `RBUILD_REQUIRE_ROOT=1` or `CI` forbids skipping.
pub fn python_tools() -> bool {
    let ok = Command::new(PYTHON)
        .args(["-c", "import yaml, jsonschema"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("RBUILD_REQUIRE_ROOT").as_deref() != Ok("1")
                && std::env::var("CI").is_err(),
            "{PYTHON} with yaml and jsonschema missing (apt-get install python3-yaml \
             python3-jsonschema) and RBUILD_REQUIRE_ROOT=1/CI forbids skipping"
        );
        println!("SKIPPED: python3-yaml/python3-jsonschema not installed");
        eprintln!("SKIPPED: python3-yaml/python3-jsonschema not installed");
    }
    ok
}

/// The workspace's `examples/kubernetes/` directory.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kubernetes")
}

/// Every YAML document of `path`, as JSON values.
pub fn load(path: &Path) -> Vec<Value> {
    let out = Command::new(PYTHON)
        .args(["-c", TO_JSON])
        .arg(path)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{} is not YAML: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python's JSON")
}

/// Checks `manifest` against `schema`: Ok, or the validator's error lines.
pub fn validate(schema: &Path, manifest: &Path) -> Result<(), String> {
    let out = Command::new(PYTHON)
        .args(["-c", VALIDATE])
        .arg(schema)
        .arg(manifest)
        .output()
        .expect("run python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => Ok(()),
        Some(1) if !text.contains("Traceback") => Err(text),
        _ => panic!("the schema check itself failed: {text}"),
    }
}

/// Where the volumes of a pod come from when its container runs under docker.
#[derive(Debug, Default)]
pub struct Volumes {
    /// Host directories standing for volumes, by volume name: required for `secret` and
    /// `configMap` volumes (the files the Secret's `items` would project, already in place);
    /// for an `emptyDir`, what an init container would have left in it (else an anonymous
    /// volume).
    pub host_dirs: Vec<(String, PathBuf)>,
}

/// A Kubernetes quantity in bytes (`4Gi`, `512Mi`, `2G`, `1000`), for `docker run --memory`.
pub fn bytes(quantity: &str) -> Option<u64> {
    let split = quantity
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(quantity.len());
    let (n, unit) = quantity.split_at(split);
    let n: u64 = n.parse().ok()?;
    let factor: u64 = match unit {
        "" => 1,
        "k" => 1000,
        "M" => 1000_u64.pow(2),
        "G" => 1000_u64.pow(3),
        "T" => 1000_u64.pow(4),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// A CPU quantity (`2`, `1.5`, `500m`) as `docker run --cpus` reads it.
pub fn cpus(quantity: &str) -> Option<String> {
    match quantity.strip_suffix('m') {
        Some(milli) => {
            let m: u64 = milli.parse().ok()?;
            Some(format!("{}.{:03}", m / 1000, m % 1000))
        }
        None => quantity.parse::<f64>().ok().map(|_| quantity.to_string()),
    }
}

/// The string at `v[key]`, or None.
fn s<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// The `docker run` arguments (after `run`) that run container `name` of `job` the way its pod
/// runs it: `--user` from `runAsUser`/`runAsGroup` (the container's over the pod's),
/// `--security-opt seccomp=unconfined`/`apparmor=unconfined`/`systempaths=unconfined` from
/// `Unconfined` profiles and `procMount: Unmasked`, `no-new-privileges` from
/// `allowPrivilegeEscalation: false`, `--privileged`, capabilities, `--read-only`, `-e` for
/// each plain `env` value, a `-v` per volume mount (the host directory `volumes` gives for it,
/// else an anonymous volume for an `emptyDir`; `:ro` when `readOnly`), `--memory`
/// and `--cpus` from `resources.limits`, `-w`, `--entrypoint` from `command[0]`, then
/// `image` (or the manifest's) and `command[1..]` + `args`. `--rm` and the network are the
/// caller's. Errors name what has no docker equivalent here (e.g. `valueFrom` env).
pub fn docker_run_args(
    job: &Value,
    name: &str,
    image: Option<&str>,
    volumes: &Volumes,
) -> Result<Vec<String>, String> {
    let pod = &job["spec"]["template"]["spec"];
    let container = pod["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| s(c, "name") == Some(name)))
        .ok_or_else(|| format!("no container {name:?} in the Job"))?;
    let (psc, csc) = (&pod["securityContext"], &container["securityContext"]);
    // The container's setting wins over the pod's, as in the kubelet.
    let pick = |key: &str| -> &Value {
        match csc.get(key) {
            Some(v) => v,
            None => psc.get(key).unwrap_or(&Value::Null),
        }
    };
    let mut args: Vec<String> = Vec::new();
    let mut push = |a: &str, b: String| {
        args.push(a.to_string());
        args.push(b);
    };
    match (pick("runAsUser").as_u64(), pick("runAsGroup").as_u64()) {
        (Some(u), Some(g)) => push("--user", format!("{u}:{g}")),
        (Some(u), None) => push("--user", u.to_string()),
        (None, Some(_)) => return Err("runAsGroup without runAsUser".into()),
        (None, None) => {}
    }
    for (key, opt) in [
        ("seccompProfile", "seccomp"),
        ("appArmorProfile", "apparmor"),
    ] {
        match s(pick(key), "type") {
            Some("Unconfined") => push("--security-opt", format!("{opt}=unconfined")),
            None | Some("RuntimeDefault") => {}
            Some(other) => return Err(format!("{key} {other} has no docker equivalent here")),
        }
    }
    if s(csc, "procMount") == Some("Unmasked") {
        push("--security-opt", "systempaths=unconfined".into());
    }
    if csc.get("allowPrivilegeEscalation") == Some(&Value::Bool(false)) {
        push("--security-opt", "no-new-privileges".into());
    }
    if csc.get("privileged") == Some(&Value::Bool(true)) {
        args.push("--privileged".into());
    }
    for (key, flag) in [("add", "--cap-add"), ("drop", "--cap-drop")] {
        for cap in csc["capabilities"][key].as_array().into_iter().flatten() {
            args.push(flag.into());
            args.push(cap.as_str().ok_or("capability not a string")?.into());
        }
    }
    if csc.get("readOnlyRootFilesystem") == Some(&Value::Bool(true)) {
        args.push("--read-only".into());
    }
    for env in container["env"].as_array().into_iter().flatten() {
        let key = s(env, "name").ok_or("env entry without a name")?;
        let value = s(env, "value").ok_or_else(|| format!("env {key}: only plain values"))?;
        args.push("-e".into());
        args.push(format!("{key}={value}"));
    }
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let vname = s(mount, "name").ok_or("volume mount without a name")?;
        let path = s(mount, "mountPath").ok_or("volume mount without a mountPath")?;
        let ro = mount.get("readOnly") == Some(&Value::Bool(true));
        let volume = pod["volumes"]
            .as_array()
            .and_then(|vs| vs.iter().find(|v| s(v, "name") == Some(vname)))
            .ok_or_else(|| format!("volume {vname} is not declared"))?;
        let host = volumes.host_dirs.iter().find(|(n, _)| n == vname);
        let spec = if let Some((_, host)) = host {
            format!("{}:{path}", host.display())
        } else if volume.get("emptyDir").is_some() {
            path.to_string()
        } else if volume.get("secret").is_some() || volume.get("configMap").is_some() {
            return Err(format!("no host directory given for volume {vname}"));
        } else {
            return Err(format!(
                "volume {vname}: only emptyDir, secret and configMap"
            ));
        };
        args.push("-v".into());
        args.push(if ro { format!("{spec}:ro") } else { spec });
    }
    let limits = &container["resources"]["limits"];
    if let Some(memory) = s(limits, "memory") {
        let b = bytes(memory).ok_or_else(|| format!("memory limit {memory:?}"))?;
        args.push("--memory".into());
        args.push(b.to_string());
    }
    if let Some(cpu) = s(limits, "cpu") {
        args.push("--cpus".into());
        args.push(cpus(cpu).ok_or_else(|| format!("cpu limit {cpu:?}"))?);
    }
    if let Some(dir) = s(container, "workingDir") {
        args.push("-w".into());
        args.push(dir.into());
    }
    let command: Vec<&str> = container["command"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if let Some(entrypoint) = command.first() {
        args.push("--entrypoint".into());
        args.push((*entrypoint).into());
    }
    let image = match image {
        Some(i) => i,
        None => s(container, "image").ok_or("container without an image")?,
    };
    args.push(image.into());
    args.extend(command.iter().skip(1).map(|c| c.to_string()));
    for a in container["args"].as_array().into_iter().flatten() {
        args.push(a.as_str().ok_or("argument not a string")?.into());
    }
    Ok(args)
}
