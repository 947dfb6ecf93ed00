//! Shared helpers of the converter: variable lookup and word expansion, the words of an
//! instruction's arguments, and `--chown`/USER owner parsing (flags are read from the typed
//! commands of [`crate::instructions`]).

use super::ConvertError;
use crate::ast::{Instruction, Span};
use crate::expand::Lexer;
pub(super) use crate::instructions::args_words;
use rbuild_llb::{ChownOpt, UserOpt};

/// A variable lookup over `vars`, where a later entry wins.
pub(super) fn lookup<'a>(vars: &'a [(String, String)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name: &str| {
        vars.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

/// Expands the variables of `word`, an expansion error pointing at `span`.
pub(super) fn expand(
    lexer: &Lexer,
    word: &str,
    vars: &[(String, String)],
    span: &Span,
) -> Result<String, ConvertError> {
    let f = lookup(vars);
    lexer.process_word(word, &f).map_err(|e| {
        // BuildKit's shell lexer names the word it could not expand.
        let word = crate::quote::go_quote(word);
        ConvertError::at(span, format!("failed to process {word}: {e}"))
    })
}

/// The argument words of an instruction.
pub(super) fn words_of(inst: &Instruction) -> Vec<String> {
    args_words(&inst.args)
}

/// A user or group: a numeric id or a name.
fn parse_user_opt(s: &str) -> UserOpt {
    match s.parse::<u32>() {
        Ok(id) => UserOpt::Id(id),
        Err(_) => UserOpt::Name(s.to_string()),
    }
}

/// A `user[:group]` owner (`--chown`, USER); None for an empty string.
pub(super) fn parse_chown(s: &str) -> Option<ChownOpt> {
    if s.is_empty() {
        return None;
    }
    let (user, group) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    Some(ChownOpt {
        user: parse_user_opt(user),
        group: group.filter(|g| !g.is_empty()).map(parse_user_opt),
    })
}
