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
        "RUN --device=/dev/fuse true",
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
fn typed_flags_read_the_last_value() {
    let inst =
        first("FROM scratch\nCOPY --from=a --from=b --chmod=755 --exclude=x --exclude=y s /d\n");
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
