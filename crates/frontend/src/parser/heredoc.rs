//! Heredocs: the markers of a logical line (`<<EOF`, `<<-EOF`, `<<"EOF"`, `3<<EOF`) and the
//! tab stripping of `<<-` bodies.

use super::grammar::{DockerfileGrammar, Rule};
use super::Parser;
use crate::error::{ParseError, ParseErrorKind};
use crate::expand::Lexer;
use pest::Parser as _;

impl Parser<'_> {
    /// BuildKit heredocsFromLine: the heredoc markers of a logical line, as
    /// `(name, expand, chomp, fd)`.
    pub(super) fn heredoc_markers(
        &self,
        line: &str,
        at: usize,
    ) -> Result<Vec<(String, bool, bool, u32)>, ParseError> {
        let no_env = |_: &str| -> Option<String> { None };
        let lexer = Lexer::new('\\')
            .with_raw_quotes(true)
            .with_raw_escapes(true);
        let words = lexer.process_words(line, &no_env).unwrap_or_default();
        let mut out = Vec::new();
        for word in words {
            let Ok(pairs) = DockerfileGrammar::parse(Rule::heredoc_marker, &word) else {
                continue;
            };
            let (mut fd, mut chomp, mut rest) = (0u32, false, "");
            for top in pairs {
                for p in top.into_inner() {
                    match p.as_rule() {
                        Rule::heredoc_fd => fd = p.as_str().parse().unwrap_or(0),
                        Rule::heredoc_chomp => chomp = true,
                        Rule::heredoc_word => rest = p.as_str(),
                        _ => {}
                    }
                }
            }
            if rest.is_empty() {
                continue;
            }
            // Lex the delimiter with and without quotes: a difference means it was quoted.
            let lx = Lexer::new('\\').with_skip_unset_env(true);
            let invalid = |e: crate::error::ExpandError| {
                self.error_at(ParseErrorKind::InvalidHeredoc(format!("{rest}: {e}")), at)
            };
            let plain = lx.process_words(rest, &no_env).map_err(invalid)?;
            let [name] = plain.as_slice() else {
                continue;
            };
            let raw = lx
                .with_raw_quotes(true)
                .process_words(rest, &no_env)
                .map_err(invalid)?;
            let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
            let expand = match raw.first() {
                Some(r) => quotes(r) == quotes(name),
                None => true,
            };
            out.push((name.clone(), expand, chomp, fd));
        }
        Ok(out)
    }
}

/// BuildKit `ChompHeredocContent`: strips leading tabs from every line.
pub(super) fn chomp_tabs(s: &str) -> String {
    s.split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}
