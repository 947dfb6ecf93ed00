//! Unit tests of the converter: path, port, duration and flag helpers, and whole conversions.

use super::copy::url_filename;
use super::state::join_path;
use super::*;
use crate::instructions::{parse_duration_ns, parse_ports};
use rbuild_llb::{ExecOp, SecurityMode};

#[test]
fn paths_join_like_go() {
    assert_eq!(join_path("/", "a"), "/a");
    assert_eq!(join_path("/a", "b"), "/a/b");
    assert_eq!(join_path("/a/b", "../c"), "/a/c");
    assert_eq!(join_path("/a/c", "d/"), "/a/c/d");
    assert_eq!(join_path("/x", "/abs"), "/abs");
}

#[test]
fn ports_and_durations() {
    assert_eq!(parse_ports("80").unwrap(), vec!["80/tcp"]);
    assert_eq!(parse_ports("53/UDP").unwrap(), vec!["53/udp"]);
    assert_eq!(
        parse_ports("8000-8002").unwrap(),
        vec!["8000/tcp", "8001/tcp", "8002/tcp"]
    );
    assert!(parse_ports("x").is_err());
    // Docker's port-spec parser: tcp, udp or sctp in any case; BuildKit's words otherwise.
    assert_eq!(parse_ports("5000/SCTP").unwrap(), vec!["5000/sctp"]);
    assert_eq!(parse_ports("80/tcpx").unwrap_err(), "Invalid proto: tcpx");
    assert_eq!(parse_ports("80/").unwrap_err(), "Invalid proto: ");
    assert_eq!(
        parse_ports("http").unwrap_err(),
        "invalid containerPort: http"
    );
    assert_eq!(parse_duration_ns("30s"), Some(30_000_000_000));
    assert_eq!(parse_duration_ns("1m30s"), Some(90_000_000_000));
    assert_eq!(parse_duration_ns("500ms"), Some(500_000_000));
}

#[test]
fn copy_flag_helpers() {
    assert_eq!(url_filename("https://h/a/b.tar.gz?x=1#f"), "b.tar.gz");
    assert_eq!(url_filename("http://h:8080/dir/"), "dir");
    assert_eq!(url_filename("http://h"), "__unnamed__");
    assert_eq!(url_filename("http://h/"), "__unnamed__");
}

fn convert_text(text: &str, opts: &ConvertOptions) -> Result<Vec<ExecOp>, ConvertError> {
    let df = crate::parse(text).expect("parses");
    let plan = convert(&df, opts, &HashMap::new())?;
    Ok(plan
        .definition
        .vertices
        .iter()
        .filter_map(|v| match &v.op {
            Op::Exec(e) => Some(e.clone()),
            _ => None,
        })
        .collect())
}

#[test]
fn run_network_and_security_flags() {
    let text = "FROM scratch\nRUN a\nRUN --network=default b\nRUN --network=none c\n\
                RUN --security=sandbox d\n";
    let opts = ConvertOptions::default();
    let ops = convert_text(text, &opts).unwrap();
    let modes: Vec<_> = ops.iter().map(|e| (e.network, e.security)).collect();
    assert_eq!(
        modes,
        vec![
            (NetworkMode::Default, SecurityMode::Sandbox),
            (NetworkMode::Default, SecurityMode::Sandbox),
            (NetworkMode::None, SecurityMode::Sandbox),
            (NetworkMode::Default, SecurityMode::Sandbox),
        ]
    );
    // `default` follows the build's mode (`--network=none` on the command line).
    let none = ConvertOptions {
        network: NetworkMode::None,
        ..ConvertOptions::default()
    };
    let ops = convert_text(text, &none).unwrap();
    assert_eq!(ops[0].network, NetworkMode::None);
    assert_eq!(ops[1].network, NetworkMode::None);

    let err = convert_text("FROM scratch\nRUN --security=root a\n", &opts).unwrap_err();
    assert_eq!(err.message, "security \"root\" is not valid");
    let err = convert_text("FROM scratch\nRUN --network=bridge a\n", &opts).unwrap_err();
    assert_eq!(err.message, "unsupported network mode \"bridge\"");
}

#[test]
fn privileged_run_flags_need_entitlements() {
    let text = "FROM scratch\nRUN   --network=host true\n";
    let err = convert_text(text, &ConvertOptions::default()).unwrap_err();
    assert_eq!(err.message, "network.host is not allowed");
    let rendered = err.render("Dockerfile", text);
    assert!(
        rendered.starts_with(
            "Dockerfile:2:7: network.host is not allowed\nRUN   --network=host true\n      ^\n"
        ),
        "{rendered}"
    );
    assert!(rendered.contains("hint: `RUN --network=host` needs the network.host entitlement: pass `--allow network.host`"), "{rendered}");

    let insecure = "FROM scratch\nRUN --network=none --security=insecure true\n";
    let err = convert_text(insecure, &ConvertOptions::default()).unwrap_err();
    assert_eq!(err.message, "security.insecure is not allowed");
    assert_eq!(err.span.map(|s| s.start_col), Some(20));
    // network.host does not grant security.insecure.
    let host_only = ConvertOptions {
        entitlements: Entitlements::parse(&["network.host"]).unwrap(),
        ..ConvertOptions::default()
    };
    assert!(convert_text(insecure, &host_only).is_err());
    let ops = convert_text(text, &host_only).unwrap();
    assert_eq!(ops[0].network, NetworkMode::Host);

    let all = ConvertOptions {
        entitlements: Entitlements::parse(&["network.host,security.insecure"]).unwrap(),
        ..ConvertOptions::default()
    };
    let ops = convert_text(insecure, &all).unwrap();
    assert_eq!(ops[0].security, SecurityMode::Insecure);
    assert_eq!(ops[0].network, NetworkMode::None);
    // A stage the target does not need is not converted, so not checked (as BuildKit).
    let unused = "FROM scratch AS x\nRUN --network=host a\nFROM scratch\nRUN b\n";
    assert!(convert_text(unused, &ConvertOptions::default()).is_ok());
}

#[test]
fn extra_hosts_reach_every_run() {
    let hosts = vec![ExtraHost {
        host: "db".into(),
        ip: "10.1.2.3".into(),
    }];
    let opts = ConvertOptions {
        extra_hosts: hosts.clone(),
        ..ConvertOptions::default()
    };
    let ops = convert_text("FROM scratch\nRUN a\nRUN --network=none b\n", &opts).unwrap();
    assert_eq!(ops.len(), 2);
    assert!(ops.iter().all(|e| e.extra_hosts == hosts));
}

#[test]
fn from_flags_refuse_variables_everywhere() {
    let opts = ConvertOptions::default();
    // Refused even in a stage the target does not need, as BuildKit checks every stage.
    for (text, line, col, msg) in [
        (
            "ARG S=a\nFROM scratch AS a\nFROM scratch AS unused\nCOPY --from=$S /x /x\nFROM scratch\n",
            4,
            6,
            "variable expansion is not supported for --from",
        ),
        (
            "FROM scratch AS a\nFROM scratch\nCOPY --chown=1 --from=${S:-a} /x /x\n",
            3,
            16,
            "variable expansion is not supported for --from",
        ),
        (
            "FROM scratch AS a\nFROM scratch\nRUN --mount=from=$S,target=/m true\n",
            3,
            5,
            "'from' doesn't support variable expansion, define alias stage instead",
        ),
    ] {
        let df = crate::parse(text).expect("parses");
        let err = base_images(&df, &opts).unwrap_err();
        assert!(err.message.starts_with(msg), "{text}: {}", err.message);
        let span = err.span.expect("a position");
        assert_eq!((span.start_line, span.start_col), (line, col), "{text}");
    }
    // Literal names, and a `$` at the very end of a mount's from= (BuildKit lets it through).
    for ok in [
        "FROM scratch AS a\nFROM scratch\nCOPY --from=a /x /x\n",
        "FROM scratch AS a\nFROM scratch\nCOPY --from=0 /x /x\n",
        "FROM scratch AS a\nFROM scratch\nRUN --mount=from=a$,target=/m true\n",
    ] {
        let df = crate::parse(ok).expect("parses");
        assert!(base_images(&df, &opts).is_ok(), "{ok}");
    }
}

#[test]
fn copy_sources_allow_an_empty_wildcard() {
    let text = "FROM scratch\nCOPY a b* /d/\nADD https://example.com/f /f\n";
    let df = crate::parse(text).expect("parses");
    let plan = convert(&df, &ConvertOptions::default(), &HashMap::new()).expect("converts");
    let copies: Vec<(String, bool, bool)> = plan
        .definition
        .vertices
        .iter()
        .filter_map(|v| match &v.op {
            Op::File(f) => Some(f.actions.clone()),
            _ => None,
        })
        .flatten()
        .filter_map(|a| match a {
            rbuild_llb::FileAction::Copy(c) => {
                Some((c.src, c.allow_wildcard, c.allow_empty_wildcard))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        copies,
        vec![
            ("a".to_string(), true, true),
            ("b*".to_string(), true, true),
            ("/f".to_string(), false, false),
        ]
    );
}

#[test]
fn named_contexts_replace_stages_and_images() {
    let text = "FROM alpine AS base\nRUN never\nFROM node:20\nCOPY --from=lib a /a\n\
                COPY --from=base b /b\n";
    let mut named = BTreeMap::new();
    named.insert(
        "base".to_string(),
        NamedContext::Local {
            excludes: vec!["x".into()],
        },
    );
    named.insert(
        "lib".to_string(),
        NamedContext::Image("example.com/lib:2".into()),
    );
    named.insert(
        "node:20".to_string(),
        NamedContext::Image("example.com/node:pinned".into()),
    );
    let opts = ConvertOptions {
        named_contexts: named,
        ..ConvertOptions::default()
    };
    let df = crate::parse(text).expect("parses");
    // The replaced stage's base (alpine) is not needed; the overridden names are.
    let images = base_images(&df, &opts).expect("images");
    assert_eq!(images, vec!["example.com/node:pinned", "example.com/lib:2"]);
    let bases: HashMap<String, BaseImage> = images
        .iter()
        .map(|r| {
            let base = BaseImage {
                reference: format!("docker.io/{r}"),
                digest: Digest::sha256_of(r.as_bytes()),
                config: ImageConfig::default(),
            };
            (r.clone(), base)
        })
        .collect();
    let plan = convert(&df, &opts, &bases).expect("converts");
    let ops: Vec<&Op> = plan.definition.vertices.iter().map(|v| &v.op).collect();
    assert!(
        !ops.iter().any(|op| matches!(op, Op::Exec(_))),
        "stage base ran"
    );
    assert!(ops.iter().any(|op| matches!(op,
        Op::Source(SourceOp::Local { name, excludes }) if name == "context:base" && excludes == &["x"])));
    assert!(ops.iter().any(|op| matches!(op,
        Op::Source(SourceOp::Image { reference, .. }) if reference == "docker.io/example.com/node:pinned")));
}

#[test]
fn no_cache_filter_names_the_stage_vertices() {
    let text = "FROM scratch AS a\nRUN one\nFROM scratch AS b\nRUN two\nFROM scratch\n\
                COPY --from=a / /\n";
    let df = crate::parse(text).expect("parses");
    let opts = ConvertOptions {
        no_cache_stages: vec!["A".into()],
        ..ConvertOptions::default()
    };
    let plan = convert(&df, &opts, &HashMap::new()).expect("converts");
    let names: Vec<&str> = plan
        .no_cache
        .iter()
        .map(|&v| plan.definition.vertices[v].name.as_str())
        .collect();
    assert!(names.iter().any(|n| n.contains("RUN one")), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.contains("RUN two") || n.contains("COPY")),
        "{names:?}"
    );
    let none = convert(&df, &ConvertOptions::default(), &HashMap::new()).expect("converts");
    assert!(none.no_cache.is_empty());
}
