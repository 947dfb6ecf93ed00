//! COPY and ADD: sources (build context, `--from` stage or image, URLs, heredocs), destination,
//! `--chown`/`--chmod`/`--exclude`/`--parents`/`--link`/`--checksum`.

use super::helpers::{expand, lookup, parse_chown, words_of};
use super::state::{join_path, StageState};
use super::{ConvertError, Converter};
use crate::ast::{Args, Flag, Instruction};
use crate::expand::Lexer;
use crate::instructions::{AddCmd, CopyCmd, CopyFlags};
use rbuild_llb::{CopyAction, FileAction, FileOp, MkdirAction, Op, SourceOp, SymbolicMode};

/// A COPY or ADD as the converter builds it: the flags they share and the ones only one takes.
pub(super) struct CopyRequest<'c, 'a> {
    inst: &'a Instruction,
    is_add: bool,
    common: &'c CopyFlags<'a>,
    /// COPY's `--from`.
    from: Option<&'a Flag>,
    /// COPY's `--parents`.
    parents: bool,
    /// ADD's `--checksum`.
    checksum: Option<&'a str>,
}

impl<'c, 'a> CopyRequest<'c, 'a> {
    /// A COPY.
    pub(super) fn from_copy(cmd: &'c CopyCmd<'a>) -> Self {
        CopyRequest {
            inst: cmd.inst,
            is_add: false,
            common: &cmd.common,
            from: cmd.from,
            parents: cmd.parents,
            checksum: None,
        }
    }

    /// An ADD.
    pub(super) fn from_add(cmd: &'c AddCmd<'a>) -> Self {
        CopyRequest {
            inst: cmd.inst,
            is_add: true,
            common: &cmd.common,
            from: None,
            parents: false,
            checksum: cmd.checksum,
        }
    }
}

/// The file name BuildKit gives a URL's download: the base name of its path, or `__unnamed__`.
pub(super) fn url_filename(url: &str) -> String {
    let after_scheme = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let path = match after_scheme.find('/') {
        Some(i) => &after_scheme[i..],
        None => "",
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    match path.split('/').rfind(|s| !s.is_empty()) {
        Some(base) if base != "." => base.to_string(),
        _ => "__unnamed__".to_string(),
    }
}

/// The heredoc a COPY/ADD source word (`<<EOF`, `<<-EOF`, `<<"EOF"`) refers to.
pub(super) fn heredoc_for_word<'a>(
    word: &str,
    heredocs: &'a [crate::ast::Heredoc],
) -> Option<&'a crate::ast::Heredoc> {
    let name = word
        .strip_prefix("<<")?
        .trim_start_matches('-')
        .trim_matches(|c| c == '"' || c == '\'');
    heredocs.iter().find(|h| h.name == name)
}

impl Converter<'_> {
    /// COPY or ADD: one file op copying every source to the destination (merged onto the stage
    /// for `--link`).
    pub(super) fn copy(
        &mut self,
        state: &mut StageState,
        req: &CopyRequest,
    ) -> Result<(), ConvertError> {
        let inst = req.inst;
        let span = &inst.span;
        let is_add = req.is_add;
        let vars = state.vars();
        let mut words = match &inst.args {
            Args::Exec(v) => v.clone(),
            _ => words_of(inst),
        };
        if words.len() < 2 {
            return Err(ConvertError::at(span, format!("{} requires at least two arguments, but only one was provided. Destination could not be determined", if is_add { "ADD" } else { "COPY" })));
        }
        let dest_raw = words.pop().unwrap_or_default();
        let dest_expanded = expand(&self.lexer, &dest_raw, &vars, span)?;
        let mut dest = if dest_expanded.starts_with('/') {
            dest_expanded.clone()
        } else {
            join_path(&state.workdir(), &dest_expanded)
        };
        if (dest_expanded.ends_with('/') || dest_expanded == "." || dest_expanded.ends_with("/."))
            && !dest.ends_with('/')
        {
            dest.push('/');
        }
        let chown = match req.common.chown {
            Some(c) => parse_chown(&expand(&self.lexer, c, &vars, span)?),
            None => None,
        };
        let (mode, mode_str) = match req.common.chmod {
            Some(m) => {
                let m = expand(&self.lexer, m, &vars, span)?;
                match u32::from_str_radix(&m, 8) {
                    Ok(v) if v <= 0o7777 => (Some(v), None),
                    Ok(_) => {
                        return Err(ConvertError::at(
                            span,
                            format!("invalid chmod parameter: {m}"),
                        ))
                    }
                    Err(_) => match SymbolicMode::parse(&m) {
                        Ok(_) => (None, Some(m)),
                        Err(e) => return Err(ConvertError::at(span, e.to_string())),
                    },
                }
            }
            None => (None, None),
        };
        let mut exclude_patterns = Vec::new();
        for e in &req.common.exclude {
            exclude_patterns.push(expand(&self.lexer, e, &vars, span)?);
        }
        let parents = req.parents;
        let link = req.common.link;
        let checksum = match req.checksum {
            Some(c) => {
                let c = expand(&self.lexer, c, &vars, span)?;
                let hex = c.strip_prefix("sha256:").unwrap_or("");
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ConvertError::at(
                        span,
                        format!("invalid checksum {c}: expected sha256:<64 hex digits>"),
                    ));
                }
                Some(c.to_ascii_lowercase())
            }
            None => None,
        };
        let (src_vertex, from_context) = match req.from {
            Some(from) => {
                let raw = from.value.as_deref().unwrap_or("");
                let from = expand(&self.lexer, raw, &self.meta(), span)?;
                (self.named_vertex(state, &from, span)?, false)
            }
            None => (self.context(), true),
        };
        // --link: the copy is built on scratch (its cache key ignores the base) and then merged.
        let base = if link {
            self.def.add(
                Op::Source(SourceOp::Scratch),
                vec![],
                "scratch".into(),
                None,
            )
        } else {
            state.vertex
        };
        let mut inputs = vec![base];
        let mut src_input = None;
        let mut actions = Vec::new();
        // BuildKit's --link layers hold the destination's parents as root-owned 0755 directories
        // (the --chown owner applies to the copied entries only).
        if link {
            let trimmed = dest.trim_end_matches('/');
            if let Some(parent) = trimmed.rfind('/').map(|i| &trimmed[..i]) {
                if !parent.is_empty() {
                    actions.push(FileAction::Mkdir(MkdirAction {
                        path: parent.to_string(),
                        mode: 0o755,
                        make_parents: true,
                        owner: None,
                    }));
                }
            }
        }
        for src in &words {
            // COPY <<EOF /dest: the heredoc body becomes a file named after its delimiter.
            if let Some(doc) = heredoc_for_word(src, &inst.heredocs) {
                let content = if doc.expand {
                    let lexer = Lexer::new(self.df.directives.escape)
                        .with_raw_quotes(true)
                        .with_raw_escapes(true);
                    let f = lookup(&vars);
                    lexer
                        .process_word(&doc.content, &f)
                        .map_err(|e| ConvertError::at(span, e.to_string()))?
                } else {
                    doc.content.clone()
                };
                let inline = self.def.add(
                    Op::Source(SourceOp::Inline {
                        filename: doc.name.clone(),
                        content,
                    }),
                    vec![],
                    format!("heredoc {}", doc.name),
                    self.location(span),
                );
                inputs.push(inline);
                actions.push(FileAction::Copy(CopyAction {
                    src_input: inputs.len() - 1,
                    src: format!("/{}", doc.name),
                    dest: dest.clone(),
                    owner: chown.clone(),
                    mode,
                    follow_symlinks: true,
                    dir_copy_contents: true,
                    attempt_unpack: false,
                    create_dest_path: true,
                    allow_wildcard: false,
                    allow_empty_wildcard: false,
                    mode_str: mode_str.clone(),
                    exclude_patterns: Vec::new(),
                    parents: false,
                }));
                continue;
            }
            let src = expand(&self.lexer, src, &vars, span)?;
            let is_url = src.starts_with("http://") || src.starts_with("https://");
            if is_url && !is_add {
                return Err(ConvertError::at(
                    span,
                    format!("source can't be a URL for COPY: {src}"),
                ));
            }
            let (input, src_path, unpack) = if is_url {
                let filename = url_filename(&src);
                let http = self.def.add(
                    Op::Source(SourceOp::Http {
                        url: src.clone(),
                        checksum: checksum.clone(),
                        filename: filename.clone(),
                    }),
                    vec![],
                    src.clone(),
                    self.location(span),
                );
                inputs.push(http);
                (inputs.len() - 1, format!("/{filename}"), false)
            } else {
                if checksum.is_some() {
                    return Err(ConvertError::at(
                        span,
                        "--checksum can only be used with a URL source (or a Git repository)",
                    ));
                }
                let input = *src_input.get_or_insert_with(|| {
                    inputs.push(src_vertex);
                    inputs.len() - 1
                });
                (input, src, is_add && from_context)
            };
            actions.push(FileAction::Copy(CopyAction {
                src_input: input,
                src: src_path,
                dest: dest.clone(),
                owner: chown.clone(),
                mode,
                follow_symlinks: true,
                dir_copy_contents: true,
                attempt_unpack: unpack,
                create_dest_path: true,
                allow_wildcard: !is_url,
                // BuildKit: a wildcard that matches nothing copies nothing (not an error).
                allow_empty_wildcard: !is_url,
                mode_str: mode_str.clone(),
                exclude_patterns: exclude_patterns.clone(),
                parents: parents && !is_url,
            }));
        }
        let name = self.step_name(state, inst);
        let copied = self.def.add(
            Op::File(FileOp { actions }),
            inputs,
            name.clone(),
            self.location(span),
        );
        state.vertex = if link {
            self.def.add(
                Op::Merge,
                vec![state.vertex, copied],
                format!("{name} [merge]"),
                self.location(span),
            )
        } else {
            copied
        };
        let flags: Vec<String> = inst
            .flags
            .iter()
            .map(|f| format!("--{}={}", f.name, f.value.clone().unwrap_or_default()))
            .collect();
        let mut shown = flags;
        shown.extend(words.iter().cloned());
        shown.push(dest_raw);
        self.history(
            state,
            format!(
                "{} {} # buildkit",
                if is_add { "ADD" } else { "COPY" },
                shown.join(" ")
            ),
            false,
        );
        Ok(())
    }
}
