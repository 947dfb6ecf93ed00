//! Tests of flag checking: every flag rbuild accepted before flags were declared still parses,
//! and unknown flags are refused with BuildKit's wording, a suggestion and the allowed list.

use super::*;

fn first(text: &str) -> Instruction {
    let df = crate::parse(text).expect("parses");
    df.instructions.last().cloned().expect("an instruction")
}

#[test]
fn flags_rbuild_accepted_still_parse() {
    for text in [
        "FROM --platform=$BUILDPLATFORM busybox AS b",
        "RUN --mount=type=cache,target=/c --network=none --security=sandbox true",
        "COPY --from=b --chown=1:2 --chmod=u+x --link --parents --exclude=*.md --exclude=x a /d/",
        "COPY --link=false a /d",
        "ADD --checksum=sha256:00 --keep-git-dir=true --unpack=false --chown=1 --chmod=644 --link --exclude=y https://x/a /d",
        "HEALTHCHECK --interval=5s --timeout=3s --start-period=1s --start-interval=1s --retries=2 CMD true",
        "HEALTHCHECK NONE",
        "ARG --anything x",
        "STOPSIGNAL --anything 9",
        "WORKDIR /x",
    ] {
        let inst = first(&format!("FROM scratch\n{text}\n"));
        assert!(parse(&inst).is_ok(), "{text}: {:?}", parse(&inst).err());
    }
}

#[test]
fn typed_flags_read_their_values() {
    let inst = first("FROM scratch\nCOPY --from=b --chmod=755 --exclude=x --exclude=y s /d\n");
    let Command::Copy(c) = parse(&inst).expect("parses") else {
        panic!("not a COPY");
    };
    assert_eq!(c.from.and_then(|f| f.value.as_deref()), Some("b"));
    assert_eq!(c.common.chmod, Some("755"));
    assert_eq!(c.common.exclude, vec!["x", "y"]);
    assert!(!c.common.link && !c.parents);
    let inst = first("FROM scratch\nADD --unpack a /d\n");
    let Command::Add(a) = parse(&inst).expect("parses") else {
        panic!("not an ADD");
    };
    assert_eq!(a.unpack, Some(true));
    assert_eq!(a.checksum, None);
}

#[test]
fn unknown_flags_are_refused_with_the_allowed_list() {
    let inst = first("FROM scratch\nCOPY  --chwon=1 a /b\n");
    let err = parse(&inst).expect_err("unknown flag");
    assert_eq!(
        err.to_string(),
        "unknown flag: --chwon (did you mean --chown?)"
    );
    assert_eq!(
        err.hint().as_deref(),
        Some("COPY takes --chown, --from, --chmod, --link, --exclude, --parents")
    );
    assert_eq!((err.span().start_line, err.span().start_col), (2, 7));

    let err =
        parse(&first("FROM scratch\nCOPY --checksum=sha256:00 a /b\n")).expect_err("ADD only");
    assert_eq!(err.to_string(), "unknown flag: --checksum");
    let err = parse(&first("FROM scratch\nADD --from=x a /b\n")).expect_err("COPY only");
    assert_eq!(err.to_string(), "unknown flag: --from");
    let err = parse(&first("FROM scratch\nWORKDIR --x=1 /a\n")).expect_err("no flags");
    assert_eq!(err.hint().as_deref(), Some("WORKDIR takes no flags"));
    let err = parse(&first("FROM --platfrom=linux/amd64 scratch\n")).expect_err("typo");
    assert_eq!(
        err.to_string(),
        "unknown flag: --platfrom (did you mean --platform?)"
    );
    let err = parse(&first(
        "FROM scratch\nRUN --mounts=type=tmpfs,target=/t true\n",
    ))
    .expect_err("typo");
    assert_eq!(
        err.to_string(),
        "unknown flag: --mounts (did you mean --mount?)"
    );
}

#[test]
fn booleans_are_checked() {
    let err = parse(&first("FROM scratch\nCOPY --link=yes a /b\n")).expect_err("not a bool");
    assert_eq!(
        err.to_string(),
        "invalid value for --link: yes (expected true or false)"
    );
    assert_eq!(err.hint(), None);
}

#[test]
fn flags_follow_bflag_rules() {
    let err = parse(&first("FROM scratch\nCOPY --chown a /b\n")).expect_err("no value");
    assert_eq!(err.to_string(), "missing a value on flag: --chown");
    assert_eq!((err.span().start_line, err.span().start_col), (2, 6));
    let err = parse(&first("FROM scratch\nCOPY --link= a /b\n")).expect_err("empty bool");
    assert_eq!(err.to_string(), "missing a value on flag: --link");
    let err = parse(&first(
        "FROM scratch\nCOPY --from=a --chown=1 --from=b s /d\n",
    ))
    .expect_err("twice");
    assert_eq!(err.to_string(), "duplicate flag specified: --from");
    assert_eq!(err.span().start_col, 25);
    // Repeatable flags repeat; booleans read case-insensitively.
    let inst = first("FROM scratch\nCOPY --exclude=a --exclude=b --link=TRUE s /d\n");
    let Command::Copy(c) = parse(&inst).expect("parses") else {
        panic!("not a COPY");
    };
    assert!(c.common.link);
    assert_eq!(c.common.exclude, vec!["a", "b"]);
}

#[test]
fn run_flags_are_typed() {
    let inst = first(
        "FROM scratch\nRUN --network=none --security=insecure --mount=type=cache,target=/c,from=$S true\n",
    );
    let Command::Run(r) = parse(&inst).expect("parses") else {
        panic!("not a RUN");
    };
    assert_eq!(r.network.map(|n| n.0), Some(RunNetwork::None));
    assert_eq!(r.security.map(|s| s.0), Some(Security::Insecure));
    assert_eq!(r.mounts[0].from.as_deref(), Some("$S"));
    let mut ex = |w: &str| -> Result<String, String> { Ok(w.replace("/c", "/cache")) };
    let m = r.mounts[0].parse(&mut ex).expect("mount parses");
    assert_eq!(
        (m.target.as_str(), m.from.as_deref()),
        ("/cache", Some("$S"))
    );
    let err = parse(&first("FROM scratch\nRUN --network=bridge true\n")).expect_err("bridge");
    assert_eq!(err.to_string(), "unsupported network mode \"bridge\"");
    let err = parse(&first("FROM scratch\nRUN --device=/dev/fuse true\n")).expect_err("device");
    assert_eq!(err.to_string(), "RUN --device is not supported by rbuild");
    assert_eq!(err.span().start_col, 5);
}

#[test]
fn arguments_are_read_and_checked() {
    let cmd = |text: &str| {
        let inst = first(&format!("FROM scratch\n{text}\n"));
        format!("{:?}", parse(&inst).map(|c| c.kind()))
    };
    assert_eq!(cmd("ENV a=1"), "Ok(Env)");
    assert_eq!(
        cmd("SHELL /bin/sh -c"),
        "Err(Invalid { message: \"SHELL requires the arguments to be in JSON form\", span: Span { start_line: 2, start_col: 1, end_line: 2, end_col: 17, offset: 13, len: 16 } })"
    );
    let inst = first("FROM scratch\nCMD echo hi\n");
    let Command::Cmd(c) = parse(&inst).expect("parses") else {
        panic!("not a CMD");
    };
    assert_eq!(c.cmd, CmdLine::Shell("echo hi".into()));
    let inst = first("FROM scratch\nHEALTHCHECK --interval=5s --retries=0 CMD [\"true\"]\n");
    let Command::Healthcheck(h) = parse(&inst).expect("parses") else {
        panic!("not a HEALTHCHECK");
    };
    assert_eq!(h.health.interval, Some(5_000_000_000));
    assert_eq!(h.health.retries, None);
    let from = first("FROM busybox AS Build\n");
    let Command::From(f) = parse(&from).expect("parses") else {
        panic!("not a FROM");
    };
    assert_eq!(
        (f.base.as_str(), f.stage_name.as_deref()),
        ("busybox", Some("build"))
    );
    let err = parse(&first("FROM a b\n")).expect_err("two words");
    assert_eq!(
        err.to_string(),
        "FROM requires either one or three arguments (FROM image [AS name])"
    );
}

#[test]
fn healthcheck_values_are_checked_as_buildkit() {
    let message = |flags: &str| {
        let text = format!("FROM scratch\nHEALTHCHECK {flags} CMD true\n");
        match parse(&first(&text)) {
            Ok(_) => "ok".to_string(),
            Err(e) => e.to_string(),
        }
    };
    assert_eq!(
        message("--interval=soon"),
        "time: invalid duration \"soon\""
    );
    assert_eq!(
        message("--timeout=500us"),
        "Interval \"timeout\" cannot be less than 1ms"
    );
    assert_eq!(
        message("--start-period=-1s"),
        "Interval \"start-period\" cannot be less than 1ms"
    );
    assert_eq!(message("--interval=1ms --timeout=0s"), "ok");
    assert_eq!(message("--retries=-1"), "--retries cannot be negative (-1)");
    assert_eq!(
        message("--retries=x"),
        "strconv.ParseInt: parsing \"x\": invalid syntax"
    );
    assert_eq!(message("--retries=0"), "ok");
}
