//! COPY and ADD: sources (build context, `--from` stage or image, URLs, heredocs), destination,
//! `--chown`/`--chmod`/`--exclude`/`--parents`/`--link`/`--checksum`.

use super::helpers::{expand, lookup, parse_chown, words_of};
use super::state::{join_path, StageState};
use super::{ConvertError, Converter};
use crate::ast::{Args, Flag, Heredoc, Instruction, Span};
use crate::expand::Lexer;
use crate::instructions::{AddCmd, CopyCmd, CopyFlags};
use rbuild_llb::{
    ChownOpt, CopyAction, FileAction, FileOp, MkdirAction, Op, SourceOp, SymbolicMode, VertexIndex,
};

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
    /// ADD's `--unpack`.
    unpack: Option<bool>,
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
            unpack: None,
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
            unpack: cmd.unpack,
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
pub(super) fn heredoc_for_word<'a>(word: &str, heredocs: &'a [Heredoc]) -> Option<&'a Heredoc> {
    let name = word
        .strip_prefix("<<")?
        .trim_start_matches('-')
        .trim_matches(|c| c == '"' || c == '\'');
    heredocs.iter().find(|h| h.name == name)
}

/// What every copy action of one COPY/ADD shares: destination, owner, mode and filters.
struct CopyTarget {
    /// The absolute destination (a trailing `/` kept: copy into the directory).
    dest: String,
    owner: Option<ChownOpt>,
    mode: Option<u32>,
    mode_str: Option<String>,
    exclude_patterns: Vec<String>,
    parents: bool,
}

/// What kind of source one copy action reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SourceKind {
    /// A heredoc body (`COPY <<EOF /dest`): one file, no patterns.
    Heredoc,
    /// An ADD URL: the downloaded file, no patterns; `unpack` with `ADD --unpack` (a remote
    /// archive is extracted only when asked).
    Url { unpack: bool },
    /// A path (with wildcards) in the context, a stage or an image; `unpack` for ADD of a
    /// local archive.
    Path { unpack: bool },
}

impl CopyTarget {
    /// The copy action of one source.
    fn action(&self, src_input: usize, src: String, kind: SourceKind) -> FileAction {
        let (pattern, unpack) = match kind {
            SourceKind::Heredoc => (false, false),
            SourceKind::Url { unpack } => (false, unpack),
            SourceKind::Path { unpack } => (true, unpack),
        };
        FileAction::Copy(CopyAction {
            src_input,
            src,
            dest: self.dest.clone(),
            owner: self.owner.clone(),
            mode: self.mode,
            follow_symlinks: true,
            dir_copy_contents: true,
            attempt_unpack: unpack,
            create_dest_path: true,
            allow_wildcard: pattern,
            // BuildKit: a wildcard that matches nothing copies nothing (not an error).
            allow_empty_wildcard: pattern,
            mode_str: self.mode_str.clone(),
            exclude_patterns: if kind == SourceKind::Heredoc {
                Vec::new()
            } else {
                self.exclude_patterns.clone()
            },
            parents: self.parents && pattern,
        })
    }

    /// BuildKit's `--link` layers hold the destination's parents as root-owned 0755
    /// directories (the `--chown` owner applies to the copied entries only).
    fn link_parent(&self) -> Option<FileAction> {
        let trimmed = self.dest.trim_end_matches('/');
        let parent = &trimmed[..trimmed.rfind('/')?];
        (!parent.is_empty()).then(|| {
            FileAction::Mkdir(MkdirAction {
                path: parent.to_string(),
                mode: 0o755,
                make_parents: true,
                owner: None,
            })
        })
    }
}

/// A `--chmod` value (expanded): octal up to 0o7777, or a symbolic mode checked with the
/// grammar the worker applies ([`SymbolicMode`]).
fn chmod_mode(m: String, span: &Span) -> Result<(Option<u32>, Option<String>), ConvertError> {
    match u32::from_str_radix(&m, 8) {
        Ok(v) if v <= 0o7777 => Ok((Some(v), None)),
        Ok(_) => Err(ConvertError::at(
            span,
            format!("invalid chmod parameter: {m}"),
        )),
        Err(_) => match SymbolicMode::parse(&m) {
            Ok(_) => Ok((None, Some(m))),
            Err(e) => Err(ConvertError::at(span, e.to_string())),
        },
    }
}

/// An ADD `--checksum` value (expanded): `sha256:` and 64 hex digits, lower-cased.
fn add_checksum(c: String, span: &Span) -> Result<String, ConvertError> {
    let hex = c.strip_prefix("sha256:").unwrap_or("");
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ConvertError::at(
            span,
            format!("invalid checksum {c}: expected sha256:<64 hex digits>"),
        ));
    }
    Ok(c.to_ascii_lowercase())
}

impl Converter<'_> {
    /// The destination, owner, mode and `--exclude` patterns of a COPY/ADD, expanded.
    fn copy_target(
        &self,
        state: &StageState,
        req: &CopyRequest,
        dest_raw: &str,
    ) -> Result<CopyTarget, ConvertError> {
        let span = &req.inst.span;
        let vars = state.vars();
        let dest_expanded = expand(&self.lexer, dest_raw, &vars, span)?;
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
        let owner = match req.common.chown {
            Some(c) => parse_chown(&expand(&self.lexer, c, &vars, span)?),
            None => None,
        };
        let (mode, mode_str) = match req.common.chmod {
            Some(m) => chmod_mode(expand(&self.lexer, m, &vars, span)?, span)?,
            None => (None, None),
        };
        let mut exclude_patterns = Vec::new();
        for e in &req.common.exclude {
            exclude_patterns.push(expand(&self.lexer, e, &vars, span)?);
        }
        Ok(CopyTarget {
            dest,
            owner,
            mode,
            mode_str,
            exclude_patterns,
            parents: req.parents,
        })
    }

    /// The vertex the path sources are read from (`--from` stage or image, else the build
    /// context) and whether it is the context.
    fn copy_source(
        &mut self,
        state: &StageState,
        req: &CopyRequest,
    ) -> Result<(VertexIndex, bool), ConvertError> {
        match req.from {
            Some(from) => {
                let span = &req.inst.span;
                let raw = from.value.as_deref().unwrap_or("");
                let from = expand(&self.lexer, raw, &self.meta(), span)?;
                Ok((self.named_vertex(state, &from, span)?, false))
            }
            None => Ok((self.context(), true)),
        }
    }

    /// An inline source holding a heredoc's body (expanded unless the delimiter was quoted).
    fn heredoc_source(
        &mut self,
        doc: &Heredoc,
        vars: &[(String, String)],
        span: &Span,
    ) -> Result<VertexIndex, ConvertError> {
        let content = if doc.expand {
            let lexer = Lexer::new(self.df.directives.escape)
                .with_raw_quotes(true)
                .with_raw_escapes(true);
            lexer
                .process_word(&doc.content, &lookup(vars))
                .map_err(|e| ConvertError::at(span, e.to_string()))?
        } else {
            doc.content.clone()
        };
        let op = Op::Source(SourceOp::Inline {
            filename: doc.name.clone(),
            content,
        });
        let location = self.location(span);
        Ok(self
            .def
            .add(op, vec![], format!("heredoc {}", doc.name), location))
    }

    /// COPY or ADD: one file op copying every source to the destination (merged onto the stage
    /// for `--link`).
    pub(super) fn copy(
        &mut self,
        state: &mut StageState,
        req: &CopyRequest,
    ) -> Result<(), ConvertError> {
        let inst = req.inst;
        let span = &inst.span;
        let keyword = if req.is_add { "ADD" } else { "COPY" };
        let vars = state.vars();
        let mut words = match &inst.args {
            Args::Exec(v) => v.clone(),
            _ => words_of(inst),
        };
        let Some(dest_raw) = words.pop().filter(|_| !words.is_empty()) else {
            return Err(ConvertError::parse_at(
                span,
                format!(
                    "{keyword} requires at least two arguments, but only one was provided. \
                     Destination could not be determined"
                ),
            ));
        };
        let target = self.copy_target(state, req, &dest_raw)?;
        let checksum = match req.checksum {
            Some(c) => Some(add_checksum(expand(&self.lexer, c, &vars, span)?, span)?),
            None => None,
        };
        let (src_vertex, from_context) = self.copy_source(state, req)?;
        let link = req.common.link;
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
        let mut actions: Vec<FileAction> = if link {
            target.link_parent().into_iter().collect()
        } else {
            Vec::new()
        };
        for src in &words {
            // COPY <<EOF /dest: the heredoc body becomes a file named after its delimiter.
            if let Some(doc) = heredoc_for_word(src, &inst.heredocs) {
                inputs.push(self.heredoc_source(doc, &vars, span)?);
                let path = format!("/{}", doc.name);
                actions.push(target.action(inputs.len() - 1, path, SourceKind::Heredoc));
                continue;
            }
            let src = expand(&self.lexer, src, &vars, span)?;
            let is_url = src.starts_with("http://") || src.starts_with("https://");
            if is_url && !req.is_add {
                return Err(ConvertError::at(
                    span,
                    format!("source can't be a URL for COPY: {src}"),
                ));
            }
            if is_url {
                let filename = url_filename(&src);
                let op = Op::Source(SourceOp::Http {
                    url: src.clone(),
                    checksum: checksum.clone(),
                    filename: filename.clone(),
                });
                let location = self.location(span);
                inputs.push(self.def.add(op, vec![], src, location));
                let path = format!("/{filename}");
                let unpack = req.unpack.unwrap_or(false);
                actions.push(target.action(inputs.len() - 1, path, SourceKind::Url { unpack }));
                continue;
            }
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
            // ADD extracts a local archive unless `--unpack=false`.
            let unpack = req.unpack.unwrap_or(req.is_add && from_context);
            actions.push(target.action(input, src, SourceKind::Path { unpack }));
        }
        let name = self.step_name(state, inst);
        let copied = self.add(
            Op::File(FileOp { actions }),
            inputs,
            name.clone(),
            self.location(span),
        );
        state.vertex = if link {
            self.add(
                Op::Merge,
                vec![state.vertex, copied],
                format!("{name} [merge]"),
                self.location(span),
            )
        } else {
            copied
        };
        let mut shown: Vec<String> = inst
            .flags
            .iter()
            .map(|f| format!("--{}={}", f.name, f.value.clone().unwrap_or_default()))
            .collect();
        shown.extend(words);
        shown.push(dest_raw);
        self.history(
            state,
            format!("{keyword} {} # buildkit", shown.join(" ")),
            false,
        );
        Ok(())
    }
}
