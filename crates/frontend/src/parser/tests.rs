//! Unit tests of the parser: keyword suggestions, quoting, argument forms, heredocs and errors.

use super::args::split_re_whitespace;
use super::suggest::suggest_instruction;
use super::*;
use crate::ast::{Args, InstructionKind, KeyValue};
use crate::quote::go_quote;

fn p(src: &str) -> Dockerfile {
    match parse(src) {
        Ok(d) => d,
        Err(e) => panic!("{}", e.render("Dockerfile")),
    }
}

#[test]
fn suggestions() {
    assert_eq!(suggest_instruction("RUNN").as_deref(), Some("RUN"));
    assert_eq!(suggest_instruction("FORM").as_deref(), Some("FROM"));
    assert_eq!(suggest_instruction("cpy").as_deref(), Some("copy"));
    assert_eq!(suggest_instruction("WROKDIR").as_deref(), Some("WORKDIR"));
    assert_eq!(suggest_instruction("FOOBAR"), None);
    assert_eq!(suggest_instruction("XYZ"), None);
}

#[test]
fn go_quoting() {
    assert_eq!(go_quote("a\"b\\c\t\u{0}♥"), "\"a\\\"b\\\\c\\t\\x00♥\"");
}

#[test]
fn error_render_line_col_caret() {
    let e = parse("FROM alpine\n\n  RUNN echo hi\n").unwrap_err();
    assert_eq!((e.line, e.col), (3, 3));
    assert_eq!(e.line_text, "  RUNN echo hi");
    assert_eq!(
        e.kind,
        ParseErrorKind::UnknownInstruction {
            name: "RUNN".into(),
            suggestion: Some("RUN".into())
        }
    );
    assert_eq!(
        e.render("Dockerfile"),
        "Dockerfile:3:3: unknown instruction: RUNN (did you mean RUN?)\n  RUNN echo hi\n  ^\n"
    );
    assert_eq!(
        e.to_string(),
        "3:3: unknown instruction: RUNN (did you mean RUN?)"
    );
    // Tabs before the column are kept so the caret lines up.
    let e = parse("FROM a\n\tcopyy a b\n").unwrap_err();
    assert_eq!((e.line, e.col), (2, 2));
    assert!(
        e.render("x").ends_with("\tcopyy a b\n\t^\n"),
        "{}",
        e.render("x")
    );
    assert!(e.message.ends_with("(did you mean copy?)"), "{}", e.message);
}

#[test]
fn did_you_mean() {
    let e = parse("FORM alpine\n").unwrap_err();
    assert_eq!(e.message, "unknown instruction: FORM (did you mean FROM?)");
    let e = parse("FROM a\nFOOBAR x\n").unwrap_err();
    assert_eq!(e.message, "unknown instruction: FOOBAR");
    assert_eq!((e.line, e.col), (2, 1));
    let e = parse("FROM a\nONBUILD EXPOS 80\n").unwrap_err();
    assert_eq!(
        e.message,
        "unknown instruction: EXPOS (did you mean EXPOSE?)"
    );
    assert_eq!((e.line, e.col), (2, 9));
}

#[test]
fn other_errors_have_positions() {
    let e = parse("FROM a\nENV x\n").unwrap_err();
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (2, 1, "ENV must have two arguments")
    );
    let e = parse("# escape=x\nFROM a\n").unwrap_err();
    assert_eq!(e.line, 1);
    assert!(matches!(e.kind, ParseErrorKind::InvalidEscapeToken(_)));
    let e = parse("# escape=`\n# escape=`\nFROM a\n").unwrap_err();
    assert_eq!(
        (e.line, e.kind),
        (2, ParseErrorKind::DuplicateDirective("escape".into()))
    );
    let e = parse("# only\n\n").unwrap_err();
    assert_eq!(e.kind, ParseErrorKind::NoInstructions);
    let e = parse("FROM a\nONBUILD ONBUILD RUN x\n").unwrap_err();
    assert!(matches!(e.kind, ParseErrorKind::InvalidOnbuildTrigger(_)));
    let e = parse("FROM a\nONBUILD FROM x\n").unwrap_err();
    assert!(matches!(e.kind, ParseErrorKind::InvalidOnbuildTrigger(_)));
    let e = parse("FROM a\nENV a=b c\n").unwrap_err();
    assert!(matches!(e.kind, ParseErrorKind::MissingEquals { .. }));
}

#[test]
fn continuation_with_comments_and_blank_lines() {
    let src = "FROM a\nRUN echo a \\\n  # a comment\n\n   b \\\n#another\n c\nRUN x\n";
    let d = p(src);
    let run = &d.instructions[1];
    assert_eq!(run.args, Args::Shell("echo a    b  c".into()));
    assert_eq!(run.original, "RUN echo a    b  c");
    assert_eq!((run.span.start_line, run.span.end_line), (2, 7));
    assert_eq!((run.span.start_col, run.span.end_col), (1, 3));
    assert_eq!(
        &src[run.span.offset..run.span.offset + run.span.len],
        "RUN echo a \\\n  # a comment\n\n   b \\\n#another\n c"
    );
    assert_eq!(d.instructions[2].span.start_line, 8);
}

#[test]
fn trailing_escape_at_eof_and_crlf() {
    let d = p("FROM a\r\nRUN x \\");
    assert_eq!(d.instructions[1].args, Args::Shell("x".into()));
    let d = p("FROM a\r\nRUN a \\\r\n b\r\n");
    assert_eq!(d.instructions[0].args, Args::Words(vec!["a".into()]));
    assert_eq!(d.instructions[1].args, Args::Shell("a  b".into()));
    // An escaped escape token at the end does not continue the line.
    let d = p("FROM a\nENV C x\\\\\nENV D y\n");
    assert_eq!(d.instructions.len(), 3);
}

#[test]
fn escape_directive_backtick() {
    let d = p("# escape=`\nFROM a\nRUN dir c:\\ `\n  /w\n");
    assert_eq!(d.directives.escape, '`');
    assert_eq!(d.instructions[1].args, Args::Shell("dir c:\\   /w".into()));
    let d = p("# syntax=docker/dockerfile:1\n# check=skip=all\nFROM a\n");
    assert_eq!(d.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
    assert_eq!(d.directives.check.as_deref(), Some("skip=all"));
    // A directive after an instruction is only a comment.
    let d = p("FROM a\n# escape=`\nRUN a \\\n b\n");
    assert_eq!(d.directives.escape, '\\');
    assert_eq!(d.instructions[1].args, Args::Shell("a  b".into()));
    // Case-insensitive keywords.
    let d = p("from a\nRuN b\n");
    assert_eq!(d.instructions[1].kind, InstructionKind::Run);
    assert_eq!(d.instructions[1].name_original, "RuN");
}

#[test]
fn flags_and_spans() {
    let src = "FROM a\nCOPY --from=build --chown=\"a b\" -- --x /y\n";
    let d = p(src);
    let c = &d.instructions[1];
    assert_eq!(c.flags.len(), 2);
    assert_eq!(
        (c.flags[0].name.as_str(), c.flags[0].value.as_deref()),
        ("from", Some("build"))
    );
    assert_eq!(c.flags[1].value.as_deref(), Some("a b"));
    let f = c.flags[1].span;
    assert_eq!(&src[f.offset..f.offset + f.len], "--chown=\"a b\"");
    assert_eq!((f.start_line, f.start_col, f.end_col), (2, 19, 32));
    assert_eq!(c.args, Args::Words(vec!["--x".into(), "/y".into()]));
    assert_eq!(
        dump(c),
        r#"(copy ["--from=build" "--chown=a b"] "--x" "/y")"#
    );
    // A flag split over a continuation maps back to both physical lines.
    let src = "FROM a\nRUN --mount=type=cache,\\\ntarget=/x echo\n";
    let d = p(src);
    let f = &d.instructions[1].flags[0];
    assert_eq!(f.value.as_deref(), Some("type=cache,target=/x"));
    assert_eq!(
        (
            f.span.start_line,
            f.span.start_col,
            f.span.end_line,
            f.span.end_col
        ),
        (2, 5, 3, 10)
    );
}

#[test]
fn heredoc_run_basic_and_quoted() {
    let src = "FROM a\nRUN <<EOF\necho $HOME\nEOF\nRUN <<'EOF' bash\necho $HOME\nEOF\nRUN x\n";
    let d = p(src);
    let r = &d.instructions[1];
    assert_eq!(r.args, Args::Shell("<<EOF".into()));
    assert_eq!(r.heredocs.len(), 1);
    let h = &r.heredocs[0];
    assert_eq!(
        (h.name.as_str(), h.content.as_str(), h.expand, h.chomp),
        ("EOF", "echo $HOME\n", true, false)
    );
    assert_eq!((r.span.start_line, r.span.end_line), (2, 4));
    let q = &d.instructions[2].heredocs[0];
    assert_eq!((q.name.as_str(), q.expand), ("EOF", false));
    let d2 = p("FROM a\nRUN <<\"EOF\"\nx\nEOF\n");
    assert!(!d2.instructions[1].heredocs[0].expand);
    assert_eq!(d.instructions[3].args, Args::Shell("x".into()));
}

#[test]
fn heredoc_chomp_multiple_and_copy() {
    let src = "FROM a\nRUN <<-A 3<<B cat /dev/fd/3\n\t\techo a\n\tA\nb1\n\tb2\nB\nCOPY <<f1 <<\"f2\" /dst/\none\nf1\ntwo ${X}\nf2\n";
    let d = p(src);
    let r = &d.instructions[1];
    assert_eq!(r.heredocs.len(), 2);
    let h0 = &r.heredocs[0];
    assert_eq!(
        (h0.name.as_str(), h0.content.as_str(), h0.chomp),
        ("A", "echo a\n", true)
    );
    let h1 = &r.heredocs[1];
    assert_eq!((h1.name.as_str(), h1.content.as_str()), ("B", "b1\n\tb2\n"));
    assert_eq!(h1.file_descriptor, 3);
    let c = &d.instructions[2];
    assert_eq!(
        c.args,
        Args::Words(vec!["<<f1".into(), "<<\"f2\"".into(), "/dst/".into()])
    );
    let names: Vec<(&str, bool)> = c
        .heredocs
        .iter()
        .map(|h| (h.name.as_str(), h.expand))
        .collect();
    assert_eq!(names, vec![("f1", true), ("f2", false)]);
    assert_eq!(c.heredocs[1].content, "two ${X}\n");
    assert_eq!(c.span.end_line, 12);
}

#[test]
fn heredoc_not_in_json_or_other_instructions_and_unterminated() {
    let d = p("FROM a\nRUN [\"echo\", \"<<EOF\"]\nENV A=<<EOF\n");
    assert!(d.instructions[1].heredocs.is_empty());
    assert!(d.instructions[2].heredocs.is_empty());
    let e = parse("FROM a\nRUN <<EOF\necho\n").unwrap_err();
    assert_eq!(e.kind, ParseErrorKind::UnterminatedHeredoc("EOF".into()));
    assert_eq!(e.line, 2);
}

#[test]
fn onbuild_heredoc_and_nesting() {
    let d = p("FROM a\nONBUILD RUN <<EOF\necho hi\nEOF\n");
    let o = &d.instructions[1];
    let t = o.onbuild.as_ref().expect("trigger");
    assert_eq!(t.kind, InstructionKind::Run);
    assert_eq!(o.heredocs.len(), 1);
    assert_eq!(t.heredocs, o.heredocs);
    assert_eq!(t.original, "RUN <<EOF");
    assert_eq!(o.args, Args::Shell("RUN <<EOF".into()));
    assert_eq!((t.span.start_col, t.span.end_line), (9, 4));
    assert_eq!(dump(o), r#"(onbuild (run "<<EOF"))"#);
}

#[test]
fn args_shapes() {
    let d = p("FROM a AS b\nHEALTHCHECK NONE\nUSER a b\nARG x y=1\nLABEL a=b \"c d\"=e\nCMD [\"a\", 1\nSHELL [\"sh\",\"-c\"]\n");
    let a = |i: usize| &d.instructions[i].args;
    assert_eq!(
        a(0),
        &Args::Words(vec!["a".into(), "AS".into(), "b".into()])
    );
    assert_eq!(
        a(1),
        &Args::Healthcheck {
            check_type: "NONE".into(),
            command: Box::new(Args::Empty)
        }
    );
    assert_eq!(a(2), &Args::Single("a b".into()));
    assert_eq!(
        a(3),
        &Args::KeyValues(vec![
            KeyValue {
                key: "x".into(),
                value: None,
                legacy: false
            },
            KeyValue {
                key: "y".into(),
                value: Some("1".into()),
                legacy: false
            },
        ])
    );
    assert_eq!(
        dump(&d.instructions[4]),
        r#"(label "a" "b" "=" "\"c d\"" "e" "=")"#
    );
    assert_eq!(a(5), &Args::Shell("[\"a\", 1".into()));
    assert!(a(6).is_json());
}

#[test]
fn json_unicode_escapes() {
    let d = p(r#"CMD ["\ud83d\ude00", "\ud800x", "\u00e9"]"#);
    assert_eq!(
        d.instructions[0].args,
        Args::Exec(vec![
            "\u{1F600}".into(),
            "\u{FFFD}x".into(),
            "\u{e9}".into()
        ])
    );
    assert!(parse("CMD [1]").is_err());
    assert!(parse("CMD [{\"a\": [1, 2.5e3, null]}]").is_err());
}

/// Hostile inputs must give errors or trees, never panics or stack overflows.
#[test]
fn robustness() {
    let mut inputs: Vec<String> = [
        "\\",
        "\\\n\\\n",
        "`",
        "#",
        "\u{feff}FROM a",
        "FROM a\nRUN <<",
        "FROM a\nRUN <<-",
        "FROM a\nRUN <<\"\n",
        "FROM a\nCOPY --\n",
        "FROM a\nCOPY --\"\n",
        "FROM a\nCOPY --a\\",
        "HEALTHCHECK \u{a0}x",
        "ENV \u{a0}",
        "ARG \"",
        "LABEL '",
        "FROM a\nRUN \u{e9}<<\u{e9}\n\u{e9}\n",
        "FROM a\r\r\n",
        "ONBUILD",
        "ONBUILD ONBUILD",
        "FROM a\nCMD [\"\\u12\"]",
        "FROM a\nRUN <<$X\nx\n$X\n",
        "FROM a\nRUN <<'a b'\n",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    inputs.push(format!("CMD {}", "[".repeat(100_000)));
    inputs.push(format!("CMD {}{}", "[".repeat(5_000), "]".repeat(5_000)));
    inputs.push(format!("FROM a\nRUN {}", "<<A ".repeat(1000)));
    inputs.push("ONBUILD ".repeat(10_000));
    inputs.push(format!("FROM {}", "\\\n".repeat(10_000)));
    for s in &inputs {
        let _ = parse(s);
    }
    // Every prefix of a rich Dockerfile.
    let rich = "# escape=\\\nFROM a AS b\nRUN --mount=type=cache,target=/x <<-EOF \\\n  && x\n\techo\n\tEOF\nCOPY [\"a\", \"b\"]\nENV a=\"b c\" d='e'\nONBUILD COPY <<X /x\nbody\nX\n";
    for (i, _) in rich.char_indices() {
        let _ = parse(&rich[..i]);
    }
}

#[test]
fn whitespace_split() {
    assert_eq!(split_re_whitespace("a  b\tc", 0), vec!["a", "b", "c"]);
    assert_eq!(split_re_whitespace("a  b\tc", 2), vec!["a", "b\tc"]);
    assert_eq!(split_re_whitespace("a", 2), vec!["a"]);
}
