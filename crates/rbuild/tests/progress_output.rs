//! Plain and JSON progress as a user sees them, from the real binary: BuildKit's vertex names and
//! numbering in plain output (snapshots, with times and digests filtered), every JSON line checked
//! against `docs/progress-events.schema.json`, the final `result` and `error` events.

use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Output;

mod common;

use common::*;

/// `rbuild build --progress=MODE --build-arg BASE=... EXTRA... CONTEXT` under `root`.
fn build_mode(root: &Path, ctx: &Path, base: &str, mode: &str, extra: &[&str]) -> Output {
    rbuild_at(root)
        .arg("build")
        .arg(format!("--progress={mode}"))
        .arg("--build-arg")
        .arg(format!("BASE={base}"))
        .args(extra)
        .arg(ctx)
        .output()
        .expect("run rbuild")
}

/// A context holding `testdata/progress-multistage` and its `a.txt`.
fn multistage_context() -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    fs::copy(
        testdata("progress-multistage").join("Dockerfile"),
        ctx.path().join("Dockerfile"),
    )
    .unwrap();
    fs::write(ctx.path().join("a.txt"), "from the context\n").unwrap();
    ctx
}

/// Replaces every `sha256:HEX` by `sha256:<digest>`, the registry's address by `REGISTRY`.
fn scrub(text: &str, base: &str) -> String {
    let registry = base.split('/').next().unwrap_or_default();
    let mut out = text.replace(registry, "REGISTRY");
    while let Some(at) = out.find("sha256:").filter(|&at| {
        out[at + 7..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_hexdigit())
    }) {
        let end = out[at + 7..]
            .find(|c: char| !c.is_ascii_hexdigit())
            .map_or(out.len(), |e| at + 7 + e);
        out.replace_range(at..end, "sha256<digest>");
    }
    out.replace("sha256<digest>", "sha256:<digest>")
}

/// Plain output made comparable: blocks by vertex (a vertex's lines may be interleaved with
/// another's while they run concurrently), sorted by vertex name and renumbered, times zeroed.
fn normalize_plain(stderr: &str, base: &str) -> String {
    let mut blocks: Vec<(String, Vec<String>)> = Vec::new();
    let mut names: std::collections::HashMap<String, String> = Default::default();
    // The build checks' list closes the progress (` N warnings found ...`, as buildx).
    let mut trailer: Vec<&str> = Vec::new();
    for line in stderr.lines() {
        if !trailer.is_empty() || (line.starts_with(' ') && line.contains(" found")) {
            trailer.push(line);
            continue;
        }
        let Some(rest) = line.strip_prefix('#') else {
            assert!(line.is_empty(), "a line outside any vertex: {line:?}");
            continue;
        };
        let (n, text) = rest.split_once(' ').unwrap_or((rest, ""));
        if !names.contains_key(n) {
            // The first line of a vertex is its header.
            names.insert(n.to_string(), text.to_string());
            blocks.push((text.to_string(), Vec::new()));
            continue;
        }
        if names[n] == text {
            continue; // the header again, after another vertex's lines
        }
        let text = zero_times(text);
        let block = blocks
            .iter_mut()
            .find(|(name, _)| *name == names[n])
            .unwrap();
        block.1.push(text);
    }
    blocks.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::new();
    for (i, (name, lines)) in blocks.iter().enumerate() {
        out.push_str(&format!("#{} {name}\n", i + 1));
        for l in lines {
            out.push_str(&format!("#{} {l}\n", i + 1));
        }
    }
    for line in trailer {
        out.push_str(line);
        out.push('\n');
    }
    scrub(&out, base)
}

/// `0.123 line` -> `T line`, `DONE 1.2s` -> `DONE T`, `exporting layers 0.1s done` -> `T done`.
fn zero_times(text: &str) -> String {
    let words: Vec<&str> = text.split(' ').collect();
    let is_time = |w: &str| {
        let w = w
            .trim_end_matches('s')
            .trim_start_matches('(')
            .trim_end_matches(")");
        let w = w.trim_end_matches('s');
        !w.is_empty() && w.contains('.') && w.chars().all(|c| c.is_ascii_digit() || c == '.')
    };
    words
        .iter()
        .map(|w| if is_time(w) { "T" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

/// JSON events made comparable: per vertex name (sorted) its events in order; the other events
/// in order after them, without times, durations, keys and digests.
fn normalize_json(stderr: &str, base: &str) -> String {
    let mut per_vertex: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut others = Vec::new();
    for line in stderr.lines() {
        let v: Value = serde_json::from_str(line).expect("a JSON line");
        let kind = v["event"].as_str().unwrap_or_default().to_string();
        match v.get("vertex").and(v.get("name")).and_then(Value::as_str) {
            Some(name) => {
                let detail = match kind.as_str() {
                    "log" => format!(
                        "log {}",
                        zero_times(v["line"].as_str().unwrap_or_default().trim_end())
                    ),
                    "error" => format!("error {}", v["error"].as_str().unwrap_or_default()),
                    k => k.to_string(),
                };
                per_vertex.entry(name.to_string()).or_default().push(detail);
            }
            // Byte counts in between depend on the network's chunks: only a layer's last.
            None if (kind == "pull" || kind == "push_progress") && v["current"] != v["total"] => {}
            None => {
                let mut v = v.clone();
                if let Some(obj) = v.as_object_mut() {
                    obj.remove("time");
                    obj.remove("duration_ms");
                    obj.remove("event");
                }
                others.push(format!("{kind} {v}"));
            }
        }
    }
    let mut out = String::new();
    for (name, events) in per_vertex {
        out.push_str(&format!("{name}: {}\n", events.join(" | ")));
    }
    for o in others {
        out.push_str(&o);
        out.push('\n');
    }
    scrub(&out, base)
}

/// Checks `value` against the JSON Schema subset the progress schema uses (`type`, `const`,
/// `enum`, `properties`, `required`, `items`, `oneOf`, `anyOf`, `minimum`); errors name the path.
fn validate(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_u64() || value.is_i64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => false,
        });
        if !ok {
            return Err(format!("{path}: {value} is not of type {types:?}"));
        }
    }
    if let Some(c) = schema.get("const") {
        if c != value {
            return Err(format!("{path}: {value} is not {c}"));
        }
    }
    if let Some(Value::Array(options)) = schema.get("enum") {
        if !options.contains(value) {
            return Err(format!("{path}: {value} is not one of {options:?}"));
        }
    }
    if let (Some(min), Some(n)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) {
        if n < min {
            return Err(format!("{path}: {n} is below {min}"));
        }
    }
    if let (Some(Value::Array(required)), Some(obj)) = (schema.get("required"), value.as_object()) {
        for r in required.iter().filter_map(Value::as_str) {
            if !obj.contains_key(r) {
                return Err(format!("{path}: `{r}` is missing"));
            }
        }
    }
    if let (Some(Value::Object(props)), Some(obj)) = (schema.get("properties"), value.as_object()) {
        for (k, v) in obj {
            if let Some(s) = props.get(k) {
                validate(s, v, &format!("{path}.{k}"))?;
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            validate(items, v, &format!("{path}[{i}]"))?;
        }
    }
    if let Some(Value::Array(any)) = schema.get("anyOf") {
        if !any.iter().any(|s| validate(s, value, path).is_ok()) {
            return Err(format!("{path}: {value} matches no anyOf branch"));
        }
    }
    if let Some(Value::Array(one)) = schema.get("oneOf") {
        let matched: Vec<String> = one
            .iter()
            .map(|s| validate(s, value, path))
            .filter_map(Result::err)
            .collect();
        let ok = one.len() - matched.len();
        if ok != 1 {
            return Err(format!(
                "{path}: {value} matches {ok} oneOf branches: {matched:?}"
            ));
        }
    }
    Ok(())
}

/// The progress events' schema in the repository.
fn schema() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/progress-events.schema.json");
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

/// Every stderr line of `out` is one JSON object valid against the schema; returns them.
fn valid_lines(out: &Output) -> Vec<Value> {
    let schema = schema();
    // The raw stream (`stderr_text` turns the final error event back into its report).
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\nwhole stderr:\n{stderr}"));
            if let Err(e) = validate(&schema, &v, "$") {
                panic!("{e}\nline: {line}");
            }
            v
        })
        .collect()
}

#[test]
fn the_validator_rejects_what_the_schema_forbids() {
    let schema = schema();
    let good = serde_json::json!({"event":"named","name":"x","time":1.0});
    assert!(validate(&schema, &good, "$").is_ok());
    for bad in [
        serde_json::json!({"event":"named","time":1.0}),
        serde_json::json!({"event":"named","name":3,"time":1.0}),
        serde_json::json!({"event":"nonsense","time":1.0}),
        serde_json::json!({"event":"error","time":1.0}),
        serde_json::json!({"event":"result","time":1.0,"image":"x"}),
    ] {
        assert!(validate(&schema, &bad, "$").is_err(), "accepted {bad}");
    }
}

#[test]
fn json_lines_follow_the_schema_and_end_with_result_or_error() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let ctx = multistage_context();
    let tag = ["-t", "progress/json:1"];

    let cold = build_mode(root.path(), ctx.path(), &env.base, "json", &tag);
    assert_ok(&cold);
    let events = valid_lines(&cold);
    let last = events.last().expect("events");
    assert_eq!(last["event"], "result", "{last}");
    assert!(last["image"].as_str().unwrap().starts_with("sha256:"));
    assert!(last["config_digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert!(
        last["tags"][0]
            .as_str()
            .unwrap()
            .ends_with("progress/json:1"),
        "{last}"
    );
    let names: Vec<&str> = events.iter().filter_map(|e| e["name"].as_str()).collect();
    for expected in [
        "[internal] load build definition from Dockerfile",
        "[internal] load .dockerignore",
        "[builder 2/4] WORKDIR /src",
        "[builder 4/4] RUN echo \"hello\" > out && cat a.txt",
        "[stage-1 2/2] COPY --from=builder /src/out /out",
        "exporting to image",
    ] {
        assert!(names.contains(&expected), "no `{expected}` in {names:?}");
    }
    assert!(events.iter().any(|e| e["event"] == "image_written"));
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "named"
                && e["name"].as_str().unwrap().ends_with("progress/json:1"))
    );
    let run_log = events
        .iter()
        .find(|e| {
            e["event"] == "log" && e["line"].as_str().map(str::trim_end) == Some("from the context")
        })
        .expect("the RUN's output");
    assert!(run_log["elapsed"].as_f64().unwrap() < 60.0);

    // A fully cached rebuild lists every step of the target as cached.
    let cached = build_mode(root.path(), ctx.path(), &env.base, "json", &tag);
    assert_ok(&cached);
    let events = valid_lines(&cached);
    let cached_names: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "cached")
        .filter_map(|e| e["name"].as_str())
        .collect();
    for step in [
        "[builder 2/4]",
        "[builder 3/4]",
        "[builder 4/4]",
        "[stage-1 2/2]",
    ] {
        assert!(
            cached_names.iter().any(|n| n.starts_with(step)),
            "`{step}` not listed cached: {cached_names:?}"
        );
    }
    assert_eq!(events.last().unwrap()["event"], "result");

    // A failure ends with an error event holding the report; nothing but JSON on stderr.
    fs::remove_file(ctx.path().join("a.txt")).unwrap();
    let failed = build_mode(root.path(), ctx.path(), &env.base, "json", &tag);
    assert!(!failed.status.success());
    let events = valid_lines(&failed);
    let last = events.last().unwrap();
    assert_eq!(last["event"], "error", "{last}");
    assert!(
        last["message"].as_str().unwrap().contains("a.txt"),
        "{last}"
    );
    assert_eq!(last["exit_code"], 1);
}

#[test]
fn plain_and_json_snapshots_of_a_multistage_build_and_its_cached_rebuild() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let ctx = multistage_context();
    let tag = ["-t", "progress/plain:1"];
    let cold = build_mode(root.path(), ctx.path(), &env.base, "plain", &tag);
    assert_ok(&cold);
    insta::assert_snapshot!(
        "plain_cold",
        normalize_plain(&stderr_text(&cold), &env.base)
    );
    let cached = build_mode(root.path(), ctx.path(), &env.base, "plain", &tag);
    assert_ok(&cached);
    insta::assert_snapshot!(
        "plain_cached",
        normalize_plain(&stderr_text(&cached), &env.base)
    );
    let json = build_mode(root.path(), ctx.path(), &env.base, "json", &tag);
    assert_ok(&json);
    insta::assert_snapshot!(
        "json_cached",
        normalize_json(&stderr_text(&json), &env.base)
    );
    let root2 = tempfile::tempdir().unwrap();
    let json_cold = build_mode(root2.path(), ctx.path(), &env.base, "json", &tag);
    assert_ok(&json_cold);
    insta::assert_snapshot!(
        "json_cold",
        normalize_json(&stderr_text(&json_cold), &env.base)
    );
}

#[test]
fn plain_shows_a_missing_copy_source_under_its_step() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let ctx = multistage_context();
    fs::remove_file(ctx.path().join("a.txt")).unwrap();
    let out = build_mode(root.path(), ctx.path(), &env.base, "plain", &[]);
    assert!(!out.status.success());
    let text = stderr_text(&out);
    let header = text
        .lines()
        .position(|l| l.ends_with("[builder 3/4] COPY a.txt ."))
        .unwrap_or_else(|| panic!("no COPY header:\n{text}"));
    let number = text.lines().nth(header).unwrap().split(' ').next().unwrap();
    assert!(
        text.lines()
            .skip(header)
            .any(|l| l.starts_with(&format!("{number} ERROR:")) && l.contains("a.txt")),
        "no ERROR line under the COPY's header:\n{text}"
    );
}
