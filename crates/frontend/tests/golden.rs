//! Golden tests of the frontend: for every Dockerfile under `testdata/` the llb graph (as JSON)
//! and the image config the frontend produces are insta snapshots (`tests/snapshots/`), so any
//! change to what the frontend emits shows up in review. The user-facing error messages of a set
//! of bad Dockerfiles (parse errors with caret, conversion errors, unknown flags) are one more
//! snapshot.
//!
//! The frontend is pure: base images are given fixed fake configs and digests here (the digest
//! is the sha256 of the reference), and `onbuild-child`'s parent is the config the frontend
//! produces for `onbuild-base`. Update after a deliberate change with
//! `INSTA_UPDATE=always cargo test -p rbuild-frontend --test golden` and review the diff.

use rbuild_frontend::{base_images, convert, parse, BaseImage, BuildPlan, ConvertOptions};
use rbuild_llb::Entitlements;
use rbuild_oci::{Digest, ImageConfig};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The reference every `ARG BASE` is given.
const BASE: &str = "registry.test/library/busybox:1.36";
/// The reference `onbuild-child`'s `ARG PARENT` is given.
const PARENT: &str = "registry.test/rbuild/onbuild-base:1";

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

/// Every Dockerfile under `testdata/`: `DIR/Dockerfile`, `DIR/Dockerfile.*` and `DIR/*.Dockerfile`,
/// sorted.
fn dockerfiles() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(testdata())
        .expect("testdata")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("testdata dir")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                p.is_file()
                    && (name == "Dockerfile"
                        || name.starts_with("Dockerfile.")
                        || name.ends_with(".Dockerfile"))
            })
            .collect();
        files.sort();
        out.extend(files);
    }
    out
}

/// A fixed base image config, as a registry would serve it.
fn fake_config() -> ImageConfig {
    let mut config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        ..Default::default()
    };
    config.config.env = Some(vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    ]);
    config.config.cmd = Some(vec!["sh".into()]);
    config
}

fn fake_base(reference: &str, config: ImageConfig) -> BaseImage {
    BaseImage {
        reference: reference.to_string(),
        digest: Digest::sha256_of(reference.as_bytes()),
        config,
    }
}

/// The `.dockerignore` beside a Dockerfile (`NAME.dockerignore` first), as plain patterns.
fn excludes(path: &Path) -> Vec<String> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let own = path.with_file_name(format!("{name}.dockerignore"));
    let text = std::fs::read_to_string(own)
        .or_else(|_| std::fs::read_to_string(path.with_file_name(".dockerignore")))
        .unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

fn options(path: &Path) -> ConvertOptions {
    let build_args: BTreeMap<String, String> = [
        ("BASE", BASE),
        ("PARENT", PARENT),
        ("URL", "http://files.test:8080"),
        (
            "SUM",
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    ConvertOptions {
        build_args,
        dockerfile_name: "Dockerfile".into(),
        entitlements: Entitlements::parse(&["network.host,security.insecure"])
            .expect("entitlements"),
        context_excludes: excludes(path),
        ..ConvertOptions::default()
    }
}

/// Converts one Dockerfile with fake bases; `Err` is the rendered user-facing error.
fn plan_of(path: &Path, parent: Option<&ImageConfig>) -> Result<BuildPlan, String> {
    let source = std::fs::read_to_string(path).expect("read Dockerfile");
    let df = parse(&source).map_err(|e| e.render("Dockerfile"))?;
    let opts = options(path);
    let render = |e: rbuild_frontend::ConvertError| e.render("Dockerfile", &source);
    let mut bases = HashMap::new();
    for name in base_images(&df, &opts).map_err(render)? {
        let config = match (name.as_str(), parent) {
            (PARENT, Some(p)) => p.clone(),
            _ => fake_config(),
        };
        bases.insert(name.clone(), fake_base(&name, config));
    }
    convert(&df, &opts, &bases).map_err(render)
}

/// `dir` or `dir__file` for a Dockerfile not named `Dockerfile`.
fn snapshot_name(path: &Path) -> String {
    let dir = path
        .parent()
        .and_then(|d| d.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if file == "Dockerfile" {
        dir.to_string()
    } else {
        format!("{dir}__{}", file.replace('.', "_"))
    }
}

#[test]
fn testdata_dockerfiles_match_their_snapshots() {
    let files = dockerfiles();
    assert!(
        files.len() >= 20,
        "testdata holds {} Dockerfiles",
        files.len()
    );
    let parent = plan_of(&testdata().join("onbuild-base/Dockerfile"), None)
        .expect("onbuild-base converts")
        .config;
    assert!(
        parent.config.on_build.is_some(),
        "onbuild-base has triggers"
    );
    // No snapshot outlives its Dockerfile.
    let mut expected: Vec<String> = files
        .iter()
        .map(|p| format!("golden__{}.snap", snapshot_name(p)))
        .collect();
    expected.push("golden__errors.snap".into());
    let snapshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    for entry in std::fs::read_dir(&snapshots).expect("snapshots dir") {
        let name = entry.expect("dir entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            !name.ends_with(".snap") || expected.iter().any(|e| *e == name),
            "{name} has no Dockerfile in testdata/ (remove it)"
        );
    }
    for path in files {
        let name = snapshot_name(&path);
        match plan_of(&path, Some(&parent)) {
            Ok(plan) => {
                let llb: serde_json::Value =
                    serde_json::from_slice(&plan.definition.to_json().expect("llb json"))
                        .expect("llb json parses");
                let value = serde_json::json!({
                    "target": plan.target,
                    "llb": llb,
                    "config": plan.config,
                });
                insta::assert_json_snapshot!(name, value);
            }
            Err(message) => insta::assert_snapshot!(name, message),
        }
    }
}

/// Bad Dockerfiles and the message each one gets.
const BAD: &[(&str, &str)] = &[
    ("unknown instruction", "FROM scratch\nRUNN echo hi\n"),
    ("unterminated heredoc", "FROM scratch\nRUN <<EOF\necho hi\n"),
    ("bad escape directive", "# escape=x\nFROM scratch\n"),
    ("no instructions", "# just a comment\n"),
    ("env without =", "FROM scratch\nENV a=b c\n"),
    ("copy with one argument", "FROM scratch\nCOPY onlyone\n"),
    ("no FROM", "RUN true\n"),
    ("FROM with two words", "FROM scratch AS\n"),
    ("duplicate stage", "FROM scratch AS a\nFROM scratch AS a\n"),
    ("invalid chmod", "FROM scratch\nCOPY --chmod=u+q a /b\n"),
    ("octal chmod too big", "FROM scratch\nCOPY --chmod=17777 a /b\n"),
    ("invalid checksum", "FROM scratch\nADD --checksum=md5:00 https://x.test/a /a\n"),
    ("checksum on a local source", "FROM scratch\nADD --checksum=sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824 a /a\n"),
    ("copy from a URL", "FROM scratch\nCOPY https://x.test/a /a\n"),
    ("unsupported network", "FROM scratch\nRUN --network=bridge true\n"),
    ("invalid security", "FROM scratch\nRUN --security=root true\n"),
    ("network.host not granted", "FROM scratch\nRUN --network=host true\n"),
    ("variable in --from", "ARG S=a\nFROM scratch AS a\nFROM scratch\nCOPY --from=$S /x /x\n"),
    ("stage used before it is defined", "FROM scratch AS a\nCOPY --from=later /x /x\nFROM scratch AS later\nFROM a\n"),
    ("bad mount", "FROM scratch\nRUN --mount=type=nfs,target=/x true\n"),
    ("bad port", "FROM scratch\nEXPOSE http\n"),
    ("bad healthcheck duration", "FROM scratch\nHEALTHCHECK --interval=soon CMD true\n"),
    ("shell not in JSON", "FROM scratch\nSHELL /bin/bash -c\n"),
    ("misspelled COPY flag", "FROM scratch\nCOPY --chwon=1:1 a /b\n"),
    ("COPY flag on ADD", "FROM scratch\nADD --from=build a /b\n"),
    ("ADD flag on COPY", "FROM scratch\nCOPY --checksum=sha256:00 a /b\n"),
    ("misspelled RUN flag", "FROM scratch\nRUN --mounts=type=tmpfs,target=/t true\n"),
    ("misspelled FROM flag", "FROM --platfrom=linux/amd64 scratch\n"),
    ("flag on WORKDIR", "FROM scratch\nWORKDIR --parents /a/b\n"),
    ("misspelled HEALTHCHECK flag", "FROM scratch\nHEALTHCHECK --intreval=5s CMD true\n"),
    ("unknown flag in an unused stage", "FROM scratch AS unused\nCOPY --lnk a /b\nFROM scratch\n"),
    ("non-boolean --link", "FROM scratch\nCOPY --link=yes a /b\n"),
    ("string flag without a value", "FROM scratch\nCOPY --chown a /b\n"),
    ("boolean flag with an empty value", "FROM scratch\nCOPY --link= a /b\n"),
    ("duplicate flag", "FROM scratch\nCOPY --chown=1 --chmod=644 --chown=2 a /b\n"),
    ("RUN --device", "FROM scratch\nRUN --device=/dev/fuse true\n"),
    ("unknown target", "FROM scratch AS a\n"),
    (
        "unknown flag in a base's ONBUILD trigger",
        "FROM registry.test/onbuild-typo:1\nRUN true\n",
    ),
];

/// The fake base of the error cases: `onbuild-typo` carries a trigger with a misspelled flag.
fn error_base(name: &str) -> BaseImage {
    let mut config = fake_config();
    if name.contains("onbuild-typo") {
        config.config.on_build = Some(vec!["COPY --chmown=1 a /b".into()]);
    }
    fake_base(name, config)
}

#[test]
fn error_messages_match_their_snapshot() {
    let mut out = String::new();
    for (what, text) in BAD {
        let message = match parse(text) {
            Err(e) => e.render("Dockerfile"),
            Ok(df) => {
                let mut opts = ConvertOptions {
                    dockerfile_name: "Dockerfile".into(),
                    ..ConvertOptions::default()
                };
                if *what == "unknown target" {
                    opts.target = Some("nope".into());
                }
                let result = base_images(&df, &opts).and_then(|images| {
                    let bases = images.iter().map(|n| (n.clone(), error_base(n))).collect();
                    convert(&df, &opts, &bases)
                });
                match result {
                    Err(e) => e.render("Dockerfile", text),
                    Ok(_) => panic!("{what}: converted without an error"),
                }
            }
        };
        out.push_str(&format!("== {what}\n{}\n", message.trim_end()));
    }
    insta::assert_snapshot!("errors", out);
}
