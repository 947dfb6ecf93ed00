//! What turns rules off or makes them fail: `# check=` directives, `# hadolint ignore=`
//! comments, `.hadolint.yaml`; and the renderings.

use rbuild_lint::{lint, render, HadolintConfig, LintOptions, Report, Severity};

fn run_with(src: &str, opts: &LintOptions<'_>) -> Report {
    let df = rbuild_frontend::parse(src).expect("test Dockerfile parses");
    lint(&df, opts).expect("lint runs")
}

fn run(src: &str) -> Report {
    run_with(src, &LintOptions::default())
}

fn ids(r: &Report) -> Vec<&'static str> {
    r.findings.iter().map(|f| f.rule.id).collect()
}

#[test]
fn check_skip_turns_rules_off() {
    let src = "# check=skip=FromAsCasing,DL3006\nFROM debian as base\nMAINTAINER me\n";
    let r = run(src);
    assert_eq!(ids(&r), ["MaintainerDeprecated"]);
    assert!(!r.error_on_warning);
    assert!(r.violation_error().is_none());
    let all = run("# check=skip=all\nFROM scratch as base\nMAINTAINER me\n");
    assert!(all.findings.is_empty(), "{:?}", ids(&all));
}

#[test]
fn a_check_comment_above_an_instruction_skips_for_it_only() {
    let r = run("FROM scratch\n# check=skip=MaintainerDeprecated\nMAINTAINER a\nFROM scratch\nMAINTAINER b\n");
    let at: Vec<(&str, usize)> = r
        .findings
        .iter()
        .map(|f| (f.rule.id, f.span.start_line))
        .collect();
    assert!(at.contains(&("MaintainerDeprecated", 5)), "{at:?}");
    assert!(!at.contains(&("MaintainerDeprecated", 3)), "{at:?}");
}

#[test]
fn check_error_makes_findings_an_error() {
    let r = run("# check=error=true\nFROM scratch as base\nMAINTAINER me\n");
    assert!(r.error_on_warning);
    assert_eq!(
        r.violation_error().as_deref(),
        Some("lint violation found for rules: FromAsCasing, MaintainerDeprecated")
    );
    let clean = run("# check=error=true\nFROM scratch\n");
    assert!(clean.violation_error().is_none());
    let both = run("# check=skip=MaintainerDeprecated;error=true\nFROM scratch\nMAINTAINER me\n");
    assert!(both.findings.is_empty());
}

#[test]
fn a_bad_check_directive_is_an_error() {
    let df = rbuild_frontend::parse("# check=bogus=1\nFROM scratch\n").unwrap();
    let e = lint(&df, &LintOptions::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to parse check options: invalid check option \"bogus\""
    );
    let df = rbuild_frontend::parse("# check=error=maybe\nFROM scratch\n").unwrap();
    assert!(lint(&df, &LintOptions::default()).is_err());
}

#[test]
fn the_build_arg_replaces_the_directive() {
    let df =
        rbuild_frontend::parse("# check=error=true\nFROM scratch as x\nMAINTAINER a\n").unwrap();
    let opts = LintOptions {
        check_override: Some("skip=FromAsCasing".into()),
        ..LintOptions::default()
    };
    let r = lint(&df, &opts).unwrap();
    assert_eq!(ids(&r), ["MaintainerDeprecated"]);
    assert!(!r.error_on_warning);
}

#[test]
fn hadolint_inline_and_global_ignores() {
    let src = "FROM debian:12\n# hadolint ignore=DL3014,DL3015\nRUN apt-get install curl\nRUN apt-get install git\n";
    let r = run(src);
    let at: Vec<(&str, usize)> = r
        .findings
        .iter()
        .map(|f| (f.rule.id, f.span.start_line))
        .collect();
    assert!(!at.contains(&("DL3014", 3)), "{at:?}");
    assert!(at.contains(&("DL3014", 4)), "{at:?}");
    assert!(at.contains(&("DL3015", 4)), "{at:?}");
    let global = run("# hadolint global ignore=DL3006\nFROM debian\nFROM ubuntu\n");
    assert!(!ids(&global).contains(&"DL3006"));
}

#[test]
fn hadolint_yaml_ignored_threshold_and_registries() {
    let cfg = HadolintConfig::parse(
        "# comment\nignored:\n  - DL3006\n  - DL3059 # inline\nfailure-threshold: error\ntrustedRegistries: [\"docker.io\", 'my.reg:5000']\nlabel-schema: {}\n",
    )
    .unwrap();
    assert_eq!(cfg.ignored, ["DL3006", "DL3059"]);
    assert_eq!(cfg.failure_threshold, Some(Severity::Error));
    assert_eq!(cfg.trusted_registries, ["docker.io", "my.reg:5000"]);
    let opts = LintOptions {
        hadolint: cfg,
        ..LintOptions::default()
    };
    let r = run_with("FROM debian\nRUN a\nRUN b\nCMD x\n", &opts);
    assert!(!ids(&r).contains(&"DL3006"));
    assert!(!ids(&r).contains(&"DL3059"));
    assert!(ids(&r).contains(&"DL3025"));
    // Warnings only: below the `error` threshold, so nothing fails.
    assert!(!r.fails());
    let r = run_with("FROM debian:12\nADD x /x\n", &opts);
    assert!(r.fails(), "DL3020 is an error: {:?}", ids(&r));
    assert!(HadolintConfig::parse("failure-threshold: loud\n").is_err());
}

#[test]
fn default_threshold_fails_on_any_warning_as_buildkit() {
    assert!(run("FROM scratch as x\n").fails());
    assert!(!run("FROM scratch AS x\n").fails());
}

#[test]
fn text_rendering_matches_buildkit() {
    let src = "FROM scratch\nRUN a\nRUN b\nMAINTAINER me\nCOPY x y\nCOPY y z\nCOPY z w\n";
    let opts = LintOptions {
        hadolint_rules: false,
        ..LintOptions::default()
    };
    let r = run_with(src, &opts);
    let text = render::text(&r);
    let expected = "Check complete, 1 warning has been found!\n\
\n\
WARNING: MaintainerDeprecated - https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/\n\
Maintainer instruction is deprecated in favor of using label\n\
Dockerfile:4\n\
--------------------\n\
\x20  2 |     RUN a\n\
\x20  3 |     RUN b\n\
\x20  4 | >>> MAINTAINER me\n\
\x20  5 |     COPY x y\n\
\x20  6 |     COPY y z\n\
--------------------\n";
    assert_eq!(text, expected);
    assert_eq!(
        render::text(&run_with("FROM scratch\n", &opts)),
        "Check complete, no warnings found.\n"
    );
    assert_eq!(
        render::summary(&r, false),
        " 1 warning found (use --debug to expand):\n - MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label (line 4)\n"
    );
}

#[test]
fn json_and_sarif_renderings() {
    let r = run("FROM scratch as base\n");
    let j = render::json(&r);
    let w = &j["warnings"][0];
    assert_eq!(w["ruleName"], "FromAsCasing");
    assert_eq!(
        w["url"],
        "https://docs.docker.com/go/dockerfile/rule/from-as-casing/"
    );
    assert_eq!(w["location"]["ranges"][0]["start"]["line"], 1);
    assert_eq!(j["sources"][0]["filename"], "Dockerfile");
    let s = render::sarif(&r);
    assert_eq!(s["version"], "2.1.0");
    let res = &s["runs"][0]["results"][0];
    assert_eq!(res["ruleId"], "FromAsCasing");
    assert_eq!(res["level"], "warning");
    assert_eq!(
        res["locations"][0]["physicalLocation"]["region"]["startLine"],
        1
    );
    assert_eq!(
        s["runs"][0]["tool"]["driver"]["rules"][0]["id"],
        "FromAsCasing"
    );
}
