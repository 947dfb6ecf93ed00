//! Unit tests of platforms in the conversion: the automatic platform ARGs and their scoping
//! (BuildKit's dockerfile2llb), `FROM --platform`, bases by platform, step names and image
//! configs of multi-platform conversions.

use super::*;
use rbuild_llb::ExecOp;

fn p(s: &str) -> Platform {
    s.parse().expect("platform")
}

/// Options for a build on linux/amd64 targeting `target` (None: implicit).
fn opts_for(target: Option<&str>) -> ConvertOptions {
    ConvertOptions {
        platform: target.map(p),
        build_platform: p("linux/amd64"),
        ..ConvertOptions::default()
    }
}

/// Fake bases for every (image, platform) the conversion needs, each with the platform in its
/// config and a digest of its own.
fn fake_bases(df: &Dockerfile, opts: &ConvertOptions, platforms: &[Platform]) -> Bases {
    base_image_sites_multi(df, opts, platforms)
        .expect("sites")
        .into_iter()
        .map(|(name, platform, _)| {
            let config = ImageConfig {
                architecture: platform.architecture.clone(),
                os: platform.os.clone(),
                ..ImageConfig::default()
            };
            let base = BaseImage {
                reference: format!("docker.io/library/{name}"),
                digest: Digest::sha256_of(format!("{name} {platform}").as_bytes()),
                config,
            };
            ((name, platform), base)
        })
        .collect()
}

fn plan_of(text: &str, opts: &ConvertOptions, platforms: &[Platform]) -> BuildPlan {
    let df = crate::parse(text).expect("parses");
    let bases = fake_bases(&df, opts, platforms);
    convert_multi(&df, opts, platforms, &bases).expect("converts")
}

fn execs(plan: &BuildPlan) -> Vec<(ExecOp, String, Option<Platform>)> {
    plan.definition
        .vertices
        .iter()
        .filter_map(|v| match &v.op {
            Op::Exec(e) => Some((e.clone(), v.name.clone(), v.platform.clone())),
            _ => None,
        })
        .collect()
}

fn env_value(exec: &ExecOp, key: &str) -> Option<String> {
    exec.env
        .iter()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_string))
}

#[test]
fn platform_args_are_global_in_from_lines() {
    let text = "FROM busybox:${TARGETARCH}-${BUILDARCH}-${TARGETOS}-${TARGETVARIANT}x-${BUILDOS}${BUILDVARIANT} AS a\n\
                FROM alpine:$TARGETPLATFORM\nRUN true\n";
    let df = crate::parse(text).expect("parses");
    let sites = base_image_sites(&df, &opts_for(Some("linux/arm/v7"))).expect("sites");
    let names: Vec<&str> = sites.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, vec!["alpine:linux/arm/v7"]);
    let sites = base_image_sites(
        &df,
        &ConvertOptions {
            target: Some("a".into()),
            ..opts_for(Some("linux/arm/v7"))
        },
    )
    .expect("sites");
    assert_eq!(sites[0].0, "busybox:arm-amd64-linux-v7x-linux");
    assert_eq!(sites[0].1, p("linux/arm/v7"));
    // Implicit target: the build platform's values.
    let sites = base_image_sites(
        &df,
        &ConvertOptions {
            target: Some("a".into()),
            ..opts_for(None)
        },
    )
    .expect("sites");
    assert_eq!(sites[0].0, "busybox:amd64-amd64-linux-x-linux");
}

#[test]
fn targetstage_names_the_target() {
    let text = "FROM busybox:$TARGETSTAGE AS First\nFROM busybox:$TARGETSTAGE AS last\n";
    let df = crate::parse(text).expect("parses");
    let names = |target: Option<&str>| {
        let opts = ConvertOptions {
            target: target.map(str::to_string),
            ..opts_for(None)
        };
        base_images(&df, &opts).expect("sites")
    };
    assert_eq!(names(None), vec!["busybox:last"]);
    assert_eq!(names(Some("First")), vec!["busybox:First"]);
    let df = crate::parse("FROM busybox:$TARGETSTAGE\n").expect("parses");
    assert_eq!(
        base_images(&df, &opts_for(None)).expect("sites"),
        vec!["busybox:default"]
    );
}

#[test]
fn a_stage_sees_a_platform_arg_only_after_declaring_it() {
    let text = "FROM scratch\nWORKDIR /w$TARGETARCH\nRUN echo one $TARGETARCH\n\
                ARG TARGETARCH BUILDPLATFORM\nRUN echo two $TARGETARCH\n";
    let plan = plan_of(text, &opts_for(Some("linux/arm64")), &[]);
    let runs = execs(&plan);
    assert_eq!(env_value(&runs[0].0, "TARGETARCH"), None);
    assert!(
        runs[0].1.ends_with("RUN echo one $TARGETARCH"),
        "{}",
        runs[0].1
    );
    assert_eq!(
        env_value(&runs[1].0, "TARGETARCH").as_deref(),
        Some("arm64")
    );
    assert_eq!(
        env_value(&runs[1].0, "BUILDPLATFORM").as_deref(),
        Some("linux/amd64")
    );
    assert!(runs[1].1.ends_with("RUN echo two arm64"), "{}", runs[1].1);
    // Undeclared in the stage: expands to nothing.
    let mkdir = plan
        .definition
        .vertices
        .iter()
        .find_map(|v| match &v.op {
            Op::File(f) => match &f.actions[0] {
                rbuild_llb::FileAction::Mkdir(m) => Some(m.path.clone()),
                _ => None,
            },
            _ => None,
        })
        .expect("workdir");
    assert_eq!(mkdir, "/w");
}

#[test]
fn global_declarations_and_build_args_of_platform_args() {
    // A global `ARG TARGETARCH` without a value keeps the automatic value; one with a value
    // replaces it (BuildKit's buildMetaArgs).
    let text = "ARG TARGETARCH\nARG BUILDARCH=mine\nFROM busybox:$TARGETARCH-$BUILDARCH\n\
                ARG TARGETARCH\nARG BUILDARCH\nRUN x\n";
    let opts = opts_for(Some("linux/arm64"));
    let df = crate::parse(text).expect("parses");
    assert_eq!(
        base_images(&df, &opts).expect("sites"),
        vec!["busybox:arm64-mine"]
    );
    let plan = plan_of(text, &opts, &[]);
    let run = &execs(&plan)[0].0;
    assert_eq!(env_value(run, "TARGETARCH").as_deref(), Some("arm64"));
    assert_eq!(env_value(run, "BUILDARCH").as_deref(), Some("mine"));
    // `--build-arg TARGETARCH=x` wins everywhere (current BuildKit's defaultArgs overrides).
    let mut opts = opts_for(Some("linux/arm64"));
    opts.build_args.insert("TARGETARCH".into(), "x".into());
    assert_eq!(
        base_images(&df, &opts).expect("sites"),
        vec!["busybox:x-mine"]
    );
    let plan = plan_of(text, &opts, &[]);
    assert_eq!(
        env_value(&execs(&plan)[0].0, "TARGETARCH").as_deref(),
        Some("x")
    );
}

#[test]
fn from_platform_sets_the_stage_platform_and_targetplatform_stays_the_target() {
    let text = "FROM --platform=$BUILDPLATFORM busybox AS build\nARG TARGETPLATFORM\n\
                RUN echo $TARGETPLATFORM\nFROM busybox\nCOPY --from=build /a /a\nRUN y\n";
    let opts = opts_for(Some("linux/arm64"));
    let df = crate::parse(text).expect("parses");
    let sites = base_image_sites(&df, &opts).expect("sites");
    let needs: Vec<(String, String)> = sites
        .iter()
        .map(|(n, p, _)| (n.clone(), p.to_string()))
        .collect();
    assert_eq!(
        needs,
        vec![
            ("busybox".to_string(), "linux/arm64".to_string()),
            ("busybox".to_string(), "linux/amd64".to_string())
        ]
    );
    let plan = plan_of(text, &opts, &[]);
    let runs = execs(&plan);
    // The build stage runs on the build platform (no vertex platform), for the target.
    assert_eq!(runs[0].2, None);
    assert_eq!(
        env_value(&runs[0].0, "TARGETPLATFORM").as_deref(),
        Some("linux/arm64")
    );
    assert_eq!(runs[1].2, Some(p("linux/arm64")));
    assert_eq!(plan.config.architecture, "arm64");
    // Two image sources: busybox for each platform, by their own digests.
    let images: Vec<Option<Platform>> = plan
        .definition
        .vertices
        .iter()
        .filter(|v| matches!(v.op, Op::Source(SourceOp::Image { .. })))
        .map(|v| v.platform.clone())
        .collect();
    assert_eq!(images, vec![None, Some(p("linux/arm64"))]);
}

#[test]
fn bad_from_platforms_are_buildkit_errors_at_the_flag() {
    let df = crate::parse("FROM --platform=$NOPE busybox\n").expect("parses");
    let err = base_images(&df, &opts_for(None)).unwrap_err();
    assert_eq!(err.message, "empty platform value from expression $NOPE");
    assert_eq!(err.span.map(|s| s.start_col), Some(6));
    let df = crate::parse("FROM --platform=linux/bogus busybox\n").expect("parses");
    let err = base_images(&df, &opts_for(None)).unwrap_err();
    assert_eq!(
        err.message,
        "failed to parse platform linux/bogus: \"linux/bogus\": unknown operating system or \
         architecture: invalid argument"
    );
    assert!(!err.parse_error);
    // `linux/aarch64` is read as containerd reads it.
    let df = crate::parse("FROM --platform=linux/aarch64 busybox\n").expect("parses");
    let sites = base_image_sites(&df, &opts_for(None)).expect("sites");
    assert_eq!(sites[0].1, p("linux/arm64"));
}

#[test]
fn host_builds_keep_their_graph() {
    // No --platform and --platform=<build platform> give the same graph as before platforms
    // existed: no vertex carries one.
    let text =
        "FROM busybox\nARG TARGETARCH\nRUN echo $TARGETARCH\nFROM scratch\nCOPY --from=0 / /\n";
    let implicit = plan_of(text, &opts_for(None), &[]);
    let explicit = plan_of(text, &opts_for(Some("linux/amd64")), &[]);
    assert!(implicit
        .definition
        .vertices
        .iter()
        .all(|v| v.platform.is_none()));
    let digests = |plan: &BuildPlan| {
        (0..plan.definition.vertices.len())
            .map(|i| plan.definition.digest(i).clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(digests(&implicit), digests(&explicit));
    assert_eq!(implicit.config.architecture, "amd64");
    assert_eq!(implicit.platforms.len(), 1);
}

#[test]
fn one_graph_for_several_platforms() {
    let text = "FROM --platform=$BUILDPLATFORM busybox AS build\nRUN make-common\n\
                ARG TARGETARCH\nRUN make $TARGETARCH\nFROM scratch\n\
                COPY --from=build /out /out\n";
    let platforms = [p("linux/amd64"), p("linux/arm64")];
    let plan = plan_of(text, &opts_for(None), &platforms);
    assert_eq!(plan.platforms.len(), 2);
    let runs = execs(&plan);
    // The common RUN once; the TARGETARCH one per platform (its env differs).
    let names: Vec<&str> = runs.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "[linux/amd64 build 2/3] RUN make-common",
            "[linux/amd64 build 3/3] RUN make amd64",
            "[linux/amd64->arm64 build 3/3] RUN make arm64",
        ]
    );
    assert!(runs.iter().all(|r| r.2.is_none()), "build-platform stage");
    let (amd, arm) = (&plan.platforms[0], &plan.platforms[1]);
    assert_ne!(amd.target, arm.target);
    assert_eq!(plan.definition.vertices[amd.target].platform, None);
    assert_eq!(
        plan.definition.vertices[arm.target].platform,
        Some(p("linux/arm64"))
    );
    assert!(plan.definition.vertices[arm.target]
        .name
        .starts_with("[linux/arm64 stage-1 1/1] COPY"));
    assert_eq!(
        (
            amd.config.architecture.as_str(),
            arm.config.architecture.as_str()
        ),
        ("amd64", "arm64")
    );
    assert_eq!(arm.config.os, "linux");
    // One FROM for the build platform only.
    let froms = plan
        .definition
        .vertices
        .iter()
        .filter(|v| matches!(v.op, Op::Source(SourceOp::Image { .. })))
        .count();
    assert_eq!(froms, 1);
    let df = crate::parse(text).expect("parses");
    let sites = base_image_sites_multi(&df, &opts_for(None), &platforms).expect("sites");
    assert_eq!(sites.len(), 1);
    assert_eq!(sites[0].1, p("linux/amd64"));
}

#[test]
fn variants_land_in_the_config() {
    let plan = plan_of("FROM scratch\n", &opts_for(Some("linux/arm/v7")), &[]);
    assert_eq!(plan.config.architecture, "arm");
    assert_eq!(plan.config.variant.as_deref(), Some("v7"));
    // The base's platform is replaced by an explicit target's.
    let plan = plan_of(
        "FROM --platform=linux/amd64 busybox\n",
        &opts_for(Some("linux/arm64")),
        &[],
    );
    assert_eq!(plan.config.architecture, "arm64");
}

#[test]
fn the_cross_arrow_follows_buildkit() {
    let amd = p("linux/amd64");
    let vars = |kv: &[(&str, &str)]| -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(multi::cross_arrow(&amd, &[]), "");
    assert_eq!(
        multi::cross_arrow(&amd, &vars(&[("TARGETARCH", "arm64")])),
        "->arm64"
    );
    assert_eq!(
        multi::cross_arrow(&amd, &vars(&[("TARGETARCH", "amd64")])),
        ""
    );
    assert_eq!(
        multi::cross_arrow(&amd, &vars(&[("TARGETPLATFORM", "linux/arm/v7")])),
        "->arm/v7"
    );
    assert_eq!(
        multi::cross_arrow(&amd, &vars(&[("TARGETPLATFORM", "windows/amd64")])),
        "->windows/amd64"
    );
}
