//! One logical line to an [`Instruction`]: keyword, flags, the argument form each instruction
//! takes (exec/JSON, shell, words, key=value, HEALTHCHECK) and ONBUILD triggers.

use super::args::{
    maybe_json, parse_health, parse_json, parse_words, split_re_whitespace, split_whitespace_args,
    unquote_flag,
};
use super::grammar::{DockerfileGrammar, Rule};
use super::lines::Logical;
use super::suggest::suggest_instruction;
use super::{Located, Parser, MAX_ONBUILD_DEPTH};
use crate::ast::{Args, Flag, Instruction, InstructionKind, KeyValue};
use crate::error::{ParseError, ParseErrorKind};
use pest::Parser as _;

impl Parser<'_> {
    /// Parses the logical-line text starting at logical offset `from` (the whole line, or an
    /// ONBUILD trigger) into an instruction whose span ends at source offset `end`.
    pub(super) fn parse_instruction(
        &self,
        logical: &Logical,
        from: usize,
        end: usize,
        depth: usize,
    ) -> Result<Instruction, ParseError> {
        let full = logical.text.get(from..).unwrap_or("");
        let trimmed_start = full.trim_start();
        let at = from + (full.len() - trimmed_start.len());
        let text = trimmed_start.trim_end();
        let start_src = logical.src(at);
        let err = |kind: ParseErrorKind| self.error_at(kind, start_src);
        if text.is_empty() {
            return Err(err(ParseErrorKind::Syntax(
                "instruction expected".to_string(),
            )));
        }

        // BuildKit splitCommand: keyword, then extractBuilderFlags, then the rest.
        let pairs = DockerfileGrammar::parse(Rule::instruction_line, text)
            .map_err(|e| err(ParseErrorKind::Syntax(e.variant.message().into_owned())))?;
        let mut command = "";
        let mut flag_words: Vec<Located> = Vec::new();
        let mut rest: Option<Located> = None;
        for top in pairs {
            for p in top.into_inner() {
                match p.as_rule() {
                    Rule::command => command = p.as_str(),
                    Rule::flags => {
                        for f in p.into_inner() {
                            flag_words.push(Located {
                                text: f.as_str(),
                                at: at + f.as_span().start(),
                            });
                        }
                    }
                    Rule::rest => {
                        rest = Some(Located {
                            text: p.as_str(),
                            at: at + p.as_span().start(),
                        })
                    }
                    _ => {}
                }
            }
        }

        let kind = match InstructionKind::from_keyword(command) {
            Some(k) => k,
            None => {
                return Err(err(ParseErrorKind::UnknownInstruction {
                    name: command.to_string(),
                    suggestion: suggest_instruction(command),
                }))
            }
        };

        // Flags: quotes/escapes removed; the word `--` ends the flags.
        let mut flags = Vec::new();
        for f in &flag_words {
            let word = unquote_flag(f.text);
            if word == "--" {
                let after = f.at + f.text.len();
                let tail = logical.text.get(after..from + full.len()).unwrap_or("");
                rest = Some(Located {
                    text: tail,
                    at: after,
                });
                break;
            }
            let body = word.get(2..).unwrap_or("");
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (body.to_string(), None),
            };
            let (s, e) = logical.src_range(f.at, f.at + f.text.len());
            flags.push(Flag {
                name,
                value,
                span: self.span(s, e),
            });
        }
        let (rest_text, rest_at) = match &rest {
            Some(r) => {
                let t = r.text.trim_start();
                (t.trim_end(), r.at + (r.text.len() - t.len()))
            }
            None => ("", at + text.len()),
        };

        let mut onbuild = None;
        let args = match kind {
            InstructionKind::Add | InstructionKind::Copy | InstructionKind::Volume => {
                // BuildKit parseMaybeJSONToList.
                match parse_json(rest_text, kind).map_err(&err)? {
                    Some(v) => Args::Exec(v),
                    None => split_whitespace_args(rest_text),
                }
            }
            InstructionKind::Cmd
            | InstructionKind::Entrypoint
            | InstructionKind::Run
            | InstructionKind::Shell => maybe_json(rest_text, kind).map_err(&err)?,
            InstructionKind::Arg => {
                // BuildKit parseNameOrNameVal.
                let words = parse_words(rest_text, self.escape).map_err(&err)?;
                if words.is_empty() {
                    Args::Empty
                } else {
                    Args::KeyValues(
                        words
                            .into_iter()
                            .map(|w| match w.split_once('=') {
                                Some((k, v)) => KeyValue {
                                    key: k.to_string(),
                                    value: Some(v.to_string()),
                                    legacy: false,
                                },
                                None => KeyValue {
                                    key: w,
                                    value: None,
                                    legacy: false,
                                },
                            })
                            .collect(),
                    )
                }
            }
            InstructionKind::Env | InstructionKind::Label => {
                self.parse_name_val(rest_text, kind).map_err(&err)?
            }
            InstructionKind::Expose | InstructionKind::From => split_whitespace_args(rest_text),
            InstructionKind::Healthcheck => parse_health(rest_text, kind).map_err(&err)?,
            InstructionKind::Maintainer
            | InstructionKind::Stopsignal
            | InstructionKind::User
            | InstructionKind::Workdir => {
                // BuildKit parseString.
                if rest_text.is_empty() {
                    Args::Empty
                } else {
                    Args::Single(rest_text.to_string())
                }
            }
            InstructionKind::Onbuild => {
                // BuildKit parseSubCommand.
                if rest_text.is_empty() {
                    Args::Empty
                } else {
                    if depth >= MAX_ONBUILD_DEPTH {
                        return Err(err(ParseErrorKind::InvalidOnbuildTrigger(
                            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".to_string(),
                        )));
                    }
                    let trigger = self.parse_instruction(logical, rest_at, end, depth + 1)?;
                    if matches!(
                        trigger.kind,
                        InstructionKind::From | InstructionKind::Maintainer
                    ) {
                        return Err(self.error_at(
                            ParseErrorKind::InvalidOnbuildTrigger(format!(
                                "{} isn't allowed as an ONBUILD trigger",
                                trigger.kind
                            )),
                            trigger.span.offset,
                        ));
                    }
                    onbuild = Some(Box::new(trigger));
                    Args::Shell(rest_text.to_string())
                }
            }
        };

        let original = if depth == 0 {
            logical.text.clone()
        } else {
            logical.text.get(from..).unwrap_or("").to_string()
        };
        Ok(Instruction {
            kind,
            name_original: command.to_string(),
            flags,
            args,
            heredocs: Vec::new(),
            span: self.span(start_src, end.max(start_src)),
            onbuild,
            original,
        })
    }

    /// BuildKit parseNameVal (ENV, LABEL): `key=value...` or the legacy `key value`.
    fn parse_name_val(&self, rest: &str, kind: InstructionKind) -> Result<Args, ParseErrorKind> {
        let words = parse_words(rest, self.escape)?;
        let Some(first) = words.first() else {
            return Ok(Args::Empty);
        };
        if !first.contains('=') {
            let mut parts = split_re_whitespace(rest, 2).into_iter();
            let key = parts.next().unwrap_or_default();
            let Some(value) = parts.next() else {
                return Err(ParseErrorKind::MissingValue {
                    instruction: kind.name().to_string(),
                });
            };
            return Ok(Args::KeyValues(vec![KeyValue {
                key: key.to_string(),
                value: Some(value.to_string()),
                legacy: true,
            }]));
        }
        let mut kvs = Vec::with_capacity(words.len());
        for w in words {
            match w.split_once('=') {
                Some((k, v)) => kvs.push(KeyValue {
                    key: k.to_string(),
                    value: Some(v.to_string()),
                    legacy: false,
                }),
                None => return Err(ParseErrorKind::MissingEquals { word: w }),
            }
        }
        Ok(Args::KeyValues(kvs))
    }
}
