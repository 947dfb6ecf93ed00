//! One test per rule: a Dockerfile that triggers it (with the message BuildKit/hadolint prints)
//! and one that does not; every rule in the table has its test.

use rbuild_lint::{lint, LintOptions, Report, RULES};

fn run(src: &str) -> Report {
    run_with(src, &LintOptions::default())
}

fn run_with(src: &str, opts: &LintOptions<'_>) -> Report {
    let df = rbuild_frontend::parse(src).expect("test Dockerfile parses");
    lint(&df, opts).expect("lint runs")
}

fn messages(report: &Report, id: &str) -> Vec<String> {
    report
        .findings
        .iter()
        .filter(|f| f.rule.id == id)
        .map(|f| f.message.clone())
        .collect()
}

/// `$id` fires on `$bad` with `$msg` (its first message) and not on `$good`.
macro_rules! rule_test {
    ($name:ident, $id:literal, $bad:expr, $msg:expr, $good:expr) => {
        #[test]
        fn $name() {
            let bad = run($bad);
            let got = messages(&bad, $id);
            assert_eq!(got.first().map(String::as_str), Some($msg), "{got:?}");
            let good = run($good);
            assert!(
                messages(&good, $id).is_empty(),
                "{:?}",
                messages(&good, $id)
            );
        }
    };
}

rule_test!(
    stage_name_casing,
    "StageNameCasing",
    "FROM scratch AS Builder\n",
    "Stage name 'Builder' should be lowercase",
    "FROM scratch AS builder\n"
);
rule_test!(
    from_as_casing,
    "FromAsCasing",
    "FROM scratch as builder\n",
    "'as' and 'FROM' keywords' casing do not match",
    "FROM scratch AS builder\nfrom scratch as other\n"
);
rule_test!(
    no_empty_continuation,
    "NoEmptyContinuation",
    "FROM scratch\nRUN echo a \\\n\n  && echo b\n",
    "Empty continuation line",
    "FROM scratch\nRUN echo a \\\n  && echo b\n"
);
rule_test!(
    consistent_instruction_casing,
    "ConsistentInstructionCasing",
    "FROM scratch\nRUN a\nrun b\nCOPY x y\n",
    "Command 'run' should match the case of the command majority (uppercase)",
    "FROM scratch\nRUN a\nCOPY x y\n"
);
rule_test!(
    duplicate_stage_name,
    "DuplicateStageName",
    "FROM scratch AS a\nFROM scratch AS a\n",
    "Duplicate stage name \"a\", stage names should be unique",
    "FROM scratch AS a\nFROM scratch AS b\n"
);
rule_test!(
    reserved_stage_name,
    "ReservedStageName",
    "FROM busybox:1 AS scratch\n",
    "Stage name should not use the same name as reserved stage \"scratch\"",
    "FROM busybox:1 AS base\n"
);
rule_test!(
    json_args_recommended,
    "JSONArgsRecommended",
    "FROM scratch\nCMD echo hi\n",
    "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals",
    "FROM scratch\nCMD [\"echo\", \"hi\"]\nFROM scratch\nSHELL [\"/bin/bash\", \"-c\"]\nENTRYPOINT echo hi\n"
);
rule_test!(
    maintainer_deprecated,
    "MaintainerDeprecated",
    "FROM scratch\nMAINTAINER me\n",
    "Maintainer instruction is deprecated in favor of using label",
    "FROM scratch\nLABEL org.opencontainers.image.authors=me\n"
);
rule_test!(
    undefined_arg_in_from,
    "UndefinedArgInFrom",
    "ARG VERSION=1\nFROM busybox:${VERSIN}\n",
    "FROM argument 'VERSIN' is not declared (did you mean VERSION?)",
    "ARG VERSION=1\nFROM --platform=$BUILDPLATFORM busybox:${VERSION}\n"
);
rule_test!(
    workdir_relative_path,
    "WorkdirRelativePath",
    "FROM scratch\nWORKDIR app\n",
    "Relative workdir \"app\" can have unexpected results if the base image changes",
    "FROM scratch\nWORKDIR /app\nWORKDIR sub\n"
);
rule_test!(
    undefined_var,
    "UndefinedVar",
    "FROM scratch\nARG FOO\nCOPY $FOOO /x\nENV PATH=$PAHT:/x\n",
    "Usage of undefined variable '$FOOO' (did you mean $FOO?)",
    "FROM scratch\nARG FOO\nENV BAR=$FOO\nCOPY $BAR${TARGETARCH} /x\n"
);
rule_test!(
    multiple_instructions_disallowed,
    "MultipleInstructionsDisallowed",
    "FROM scratch\nCMD [\"a\"]\nCMD [\"b\"]\n",
    "Multiple CMD instructions should not be used in the same stage because only the last one will be used",
    "FROM scratch\nCMD [\"a\"]\nFROM scratch\nCMD [\"b\"]\n"
);
rule_test!(
    legacy_key_value_format,
    "LegacyKeyValueFormat",
    "FROM scratch\nENV A b\n",
    "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format",
    "FROM scratch\nENV A=b\nLABEL a=b\n"
);
rule_test!(
    redundant_target_platform,
    "RedundantTargetPlatform",
    "FROM --platform=$TARGETPLATFORM busybox:1\n",
    "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
    "FROM --platform=$BUILDPLATFORM busybox:1\n"
);
rule_test!(
    from_platform_flag_const_disallowed,
    "FromPlatformFlagConstDisallowed",
    "FROM --platform=linux/arm64 busybox:1 AS build\n",
    "FROM --platform flag should not use constant value \"linux/arm64\"",
    "FROM --platform=linux/arm64 busybox:1 AS build-arm64\nFROM --platform=$BUILDPLATFORM busybox:1\n"
);
rule_test!(
    secrets_used_in_arg_or_env,
    "SecretsUsedInArgOrEnv",
    "FROM scratch\nARG SECRET_PASSWORD\n",
    "Do not use ARG or ENV instructions for sensitive data (ARG \"SECRET_PASSWORD\")",
    "FROM scratch\nARG PUBLIC_KEY\nENV KEYBOARD=us\nARG TOKEN_FILE\n"
);
rule_test!(
    invalid_default_arg_in_from,
    "InvalidDefaultArgInFrom",
    "ARG TAG\nFROM busybox:${TAG}\n",
    "Default value for ARG busybox:${TAG} results in empty or invalid base image name",
    "ARG TAG=1.36\nFROM busybox:${TAG}\n"
);
rule_test!(
    expose_proto_casing,
    "ExposeProtoCasing",
    "FROM scratch\nEXPOSE 80/TCP\n",
    "Defined protocol '80/TCP' in EXPOSE instruction should be lowercase",
    "FROM scratch\nEXPOSE 80/tcp 53/udp 8080\n"
);
rule_test!(
    expose_invalid_format,
    "ExposeInvalidFormat",
    "FROM scratch\nEXPOSE 127.0.0.1:80:80\n",
    "EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:80:80'",
    "FROM scratch\nEXPOSE 80\n"
);
rule_test!(
    dl3006_untagged_from,
    "DL3006",
    "FROM debian\n",
    "Always tag the image version explicitly",
    "FROM debian:bookworm AS base\nFROM base\nFROM scratch\n"
);
rule_test!(
    dl3007_latest,
    "DL3007",
    "FROM debian:latest\n",
    "Using latest is prone to errors if the image will ever update. Pin the version explicitly to a release tag",
    "FROM debian:bookworm\n"
);
rule_test!(
    dl3009_apt_lists,
    "DL3009",
    "FROM debian:12\nRUN apt-get update && apt-get install -y --no-install-recommends curl\n",
    "Delete the apt-get lists after installing something",
    "FROM debian:12\nRUN apt-get update && apt-get install -y --no-install-recommends curl \\\n  && rm -rf /var/lib/apt/lists/*\n"
);
rule_test!(
    dl3014_apt_yes,
    "DL3014",
    "FROM debian:12\nRUN apt-get install --no-install-recommends curl\n",
    "Use the `-y` switch to avoid manual input `apt-get -y install <package>`",
    "FROM debian:12\nRUN apt-get install -qy --no-install-recommends curl && apt-get --yes install --no-install-recommends git\n"
);
rule_test!(
    dl3015_no_install_recommends,
    "DL3015",
    "FROM debian:12\nRUN apt-get install -y curl\n",
    "Avoid additional packages by specifying `--no-install-recommends`",
    "FROM debian:12\nRUN apt-get install -y --no-install-recommends curl\n"
);
rule_test!(
    dl3020_add_local,
    "DL3020",
    "FROM scratch\nADD app.py /app/\n",
    "Use COPY instead of ADD for files and folders",
    "FROM scratch\nADD rootfs.tar.gz /\nADD https://example.com/x /x\n"
);
rule_test!(
    dl3025_json_cmd,
    "DL3025",
    "FROM scratch\nENTRYPOINT /bin/app\n",
    "Use arguments JSON notation for CMD and ENTRYPOINT arguments",
    "FROM scratch\nENTRYPOINT [\"/bin/app\"]\n"
);
rule_test!(
    dl4006_pipefail,
    "DL4006",
    "FROM debian:12\nRUN wget -O - https://x | tar xz\n",
    "Set the SHELL option -o pipefail before RUN with a pipe in it. If you are using /bin/sh in an alpine image or if your shell is symlinked to busybox then consider explicitly setting your SHELL to /bin/ash, or disable this check",
    "FROM debian:12\nSHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]\nRUN wget -O - https://x | tar xz\nRUN a || b\n"
);
rule_test!(
    dl3059_consecutive_run,
    "DL3059",
    "FROM scratch\nRUN a\nRUN b\n",
    "Multiple consecutive `RUN` instructions. Consider consolidation.",
    "FROM scratch\nRUN a\nCOPY x /x\nRUN b\nRUN --mount=type=cache,target=/c c\n"
);

#[test]
fn copy_ignored_file() {
    let ignored = |p: &str| p == "secret.txt" || p.starts_with("node_modules");
    let opts = LintOptions {
        dockerignored: Some(&ignored),
        ..LintOptions::default()
    };
    let bad = run_with(
        "FROM scratch\nCOPY ./secret.txt /x\nADD node_modules/a /y\n",
        &opts,
    );
    assert_eq!(
        messages(&bad, "CopyIgnoredFile"),
        [
            "Attempting to Copy file \"secret.txt\" that is excluded by .dockerignore",
            "Attempting to Add file \"node_modules/a\" that is excluded by .dockerignore",
        ]
    );
    let good = run_with(
        "FROM scratch\nCOPY app.py /x\nCOPY --from=busybox:1 secret.txt /y\n",
        &opts,
    );
    assert!(messages(&good, "CopyIgnoredFile").is_empty());
    // Without a .dockerignore the rule does not run.
    assert!(messages(
        &run("FROM scratch\nCOPY secret.txt /x\n"),
        "CopyIgnoredFile"
    )
    .is_empty());
}

#[test]
fn dl3026_trusted_registries() {
    let opts = LintOptions {
        hadolint: rbuild_lint::HadolintConfig {
            trusted_registries: vec!["127.0.0.1:5000".into()],
            ..Default::default()
        },
        ..LintOptions::default()
    };
    let bad = run_with("FROM debian:12\n", &opts);
    assert_eq!(
        messages(&bad, "DL3026"),
        ["Use only an allowed registry in the FROM image"]
    );
    let good = run_with("FROM 127.0.0.1:5000/debian:12\n", &opts);
    assert!(messages(&good, "DL3026").is_empty());
    assert!(messages(&run("FROM debian:12\n"), "DL3026").is_empty());
}

/// Every rule of the table has a test above (the names are checked here so that a new rule
/// without a test fails).
#[test]
fn every_rule_is_tested() {
    let source = include_str!("rules.rs");
    for rule in RULES {
        assert!(
            source.contains(&format!("\"{}\"", rule.id)),
            "rule {} has no test",
            rule.id
        );
    }
}

/// The issue's Dockerfile: everything it lists is flagged.
#[test]
fn the_issue_dockerfile() {
    let src = "FROM debian as Builder\nMAINTAINER me\nENV A b\nARG SECRET_PASSWORD\nRUN apt-get update && apt-get install curl\nCMD echo hi\n";
    let report = run(src);
    let ids: Vec<&str> = report.findings.iter().map(|f| f.rule.id).collect();
    for id in [
        "FromAsCasing",
        "StageNameCasing",
        "MaintainerDeprecated",
        "LegacyKeyValueFormat",
        "SecretsUsedInArgOrEnv",
        "JSONArgsRecommended",
        "DL3006",
        "DL3014",
        "DL3015",
        "DL3009",
        "DL3025",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    // In line order.
    let lines: Vec<usize> = report.findings.iter().map(|f| f.span.start_line).collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
}
