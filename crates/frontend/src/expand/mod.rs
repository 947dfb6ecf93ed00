//! Shell-word expansion with BuildKit's shell-lexer semantics (`frontend/dockerfile/shell`).
//!
//! Supported: `$V`, `${V}`, `${V:-d}`, `${V-d}`, `${V:+x}`, `${V+x}`, `${V:?m}`, `${V?m}`,
//! `${V#p}`, `${V##p}`, `${V%p}`, `${V%%p}` (glob patterns), `${V/p/r}`, `${V//p/r}`, single and
//! double quotes, and escapes with the escape token (`\` or backtick). Positional (`$1`) and
//! special (`$@ $* $# $? $- $$ $! $0`) parameters are recognised and are never set.
//!
//! Which instructions are expanded is given by [`crate::EXPANDING_INSTRUCTIONS`]; shell-form
//! `RUN`/`CMD`/`ENTRYPOINT` are never expanded by the builder.

mod pattern;

use crate::error::ExpandError;
use pattern::{compile_glob, replace, trim_prefix, trim_suffix};

/// A shell-word lexer (BuildKit's `shell.Lex`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    /// The escape token, `\` or backtick.
    pub escape: char,
    /// Keep quote characters in the output (BuildKit `RawQuotes`).
    pub raw_quotes: bool,
    /// Keep escape tokens in the output (BuildKit `RawEscapes`).
    pub raw_escapes: bool,
    /// Leave references to unset variables as written (BuildKit `SkipUnsetEnv`).
    pub skip_unset_env: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer::new('\\')
    }
}

impl Lexer {
    /// A lexer with the given escape token and default options.
    pub fn new(escape: char) -> Lexer {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset_env: false,
        }
    }

    /// Returns a copy that keeps quote characters in its output (useful for text that a shell
    /// will see again).
    pub fn with_raw_quotes(mut self, on: bool) -> Lexer {
        self.raw_quotes = on;
        self
    }

    /// Returns a copy that keeps escape tokens in its output.
    pub fn with_raw_escapes(mut self, on: bool) -> Lexer {
        self.raw_escapes = on;
        self
    }

    /// Returns a copy that leaves references to unset variables untouched.
    pub fn with_skip_unset_env(mut self, on: bool) -> Lexer {
        self.skip_unset_env = on;
        self
    }

    /// Expands `word` into one string, quotes removed (BuildKit `ProcessWord`).
    pub fn process_word(
        &self,
        word: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, ExpandError> {
        self.process(word, env).map(|(w, _)| w)
    }

    /// Expands `word` and splits the result into words (BuildKit `ProcessWords`): blanks from
    /// variable values split words, quoted and escaped blanks do not.
    pub fn process_words(
        &self,
        word: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<String>, ExpandError> {
        self.process(word, env).map(|(_, ws)| ws)
    }

    /// Expands `word`, returning both the single-string and the split result.
    pub fn process(
        &self,
        word: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(String, Vec<String>), ExpandError> {
        let mut sw = ShellWord {
            chars: word.chars().collect(),
            pos: 0,
            escape: self.escape,
            raw_quotes: self.raw_quotes,
            raw_escapes: self.raw_escapes,
            skip_unset: self.skip_unset_env,
            env,
            depth: 0,
        };
        let raw = self.raw_escapes;
        sw.process_stop_on(None, raw)
    }
}

/// Expands one word with the default lexer (`\` escape): [`Lexer::process_word`].
pub fn process_word(
    word: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    Lexer::default().process_word(word, env)
}

/// Expands and splits with the default lexer (`\` escape): [`Lexer::process_words`].
pub fn process_words(
    word: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, ExpandError> {
    Lexer::default().process_words(word, env)
}

/// Nesting limit for `${...${...}}` (protects the stack against hostile input).
const MAX_DEPTH: usize = 256;

struct ShellWord<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_unset: bool,
    env: &'a dyn Fn(&str) -> Option<String>,
    depth: usize,
}

#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() && self.in_word {
            if !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else if !ch.is_whitespace() {
            self.add_raw_char(ch);
        }
    }
    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }
    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

impl ShellWord<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get_env(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    /// Reads until `stop` (consumed) or the end of input when `stop` is `None`.
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), ExpandError> {
        let saved_raw = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.process_stop_on_inner(stop);
        self.raw_escapes = saved_raw;
        r
    }

    fn process_stop_on_inner(
        &mut self,
        stop: Option<char>,
    ) -> Result<(String, Vec<String>), ExpandError> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let tmp = self.process_dollar()?;
                    result.push_str(&tmp);
                    words.add_string(&tmp);
                }
                '\'' => {
                    let tmp = self.process_single_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                '"' => {
                    let tmp = self.process_double_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                _ => {
                    self.pos += 1;
                    if ch == self.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        match self.next() {
                            // An escape token at the end of the word is dropped.
                            None => break,
                            Some(c) => {
                                words.add_raw_char(c);
                                result.push(c);
                            }
                        }
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        if let Some(stop) = stop {
            return Err(ExpandError::Unterminated(stop.to_string()));
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> Result<String, ExpandError> {
        // Everything up to the next ' is literal; ' cannot be escaped inside.
        let mut result = String::new();
        let open = self.next();
        if self.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(ExpandError::Unterminated("single-quote".to_string()));
                }
                Some('\'') => {
                    if self.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, ExpandError> {
        // Literal except `$` expansions; the escape token escapes `"`, `$` and itself.
        let mut result = String::new();
        let open = self.next();
        if self.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(ExpandError::Unterminated("double-quote".to_string()));
                }
                Some('"') => {
                    self.pos += 1;
                    if self.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                }
                Some(ch) => {
                    self.pos += 1;
                    let mut out = ch;
                    if ch == self.escape {
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                if self.raw_escapes {
                                    result.push(ch);
                                }
                                self.pos += 1;
                                out = n;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(out);
                }
            }
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_numeric() {
                while let Some(d) = self.peek() {
                    if !d.is_numeric() {
                        break;
                    }
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.pos += 1;
                name.push(ch);
                return name;
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            name.push(ch);
            self.pos += 1;
        }
        name
    }

    fn process_dollar(&mut self) -> Result<String, ExpandError> {
        if self.depth >= MAX_DEPTH {
            return Err(ExpandError::BadSubstitution);
        }
        self.depth += 1;
        let r = self.process_dollar_inner();
        self.depth -= 1;
        r
    }

    fn process_dollar_inner(&mut self) -> Result<String, ExpandError> {
        self.pos += 1; // the '$'
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1; // the '{'
        match self.peek() {
            None => return Err(ExpandError::MissingBrace),
            Some('{') | Some('}') | Some(':') => return Err(ExpandError::BadSubstitution),
            Some(_) => {}
        }
        let name = self.process_name();
        let ch = self.next();
        match ch {
            None => Err(ExpandError::MissingBrace),
            Some('}') => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(c @ (':' | '+' | '-' | '?' | '#' | '%')) => {
                let mut modifier = c.to_string();
                let null_is_unset = c == ':';
                let op = if null_is_unset {
                    match self.next() {
                        Some(o) => {
                            modifier.push(o);
                            o
                        }
                        None => return Err(ExpandError::MissingBrace),
                    }
                } else {
                    c
                };
                let raw_escapes = op == '#' || op == '%';
                if null_is_unset && raw_escapes {
                    return Err(ExpandError::UnsupportedModifier(modifier));
                }
                let word = match self.process_stop_on(Some('}'), raw_escapes) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(ExpandError::MissingBrace);
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name);
                if self.skip_unset && value.is_none() {
                    return Ok(format!("${{{name}{modifier}{word}}}"));
                }
                let unset_like = match &value {
                    None => true,
                    Some(v) => null_is_unset && v.is_empty(),
                };
                match op {
                    '-' => Ok(if unset_like {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    '+' => Ok(if unset_like { String::new() } else { word }),
                    '?' => match value {
                        None => Err(ExpandError::Required {
                            name,
                            message: if word.is_empty() {
                                "is not allowed to be unset".to_string()
                            } else {
                                word
                            },
                        }),
                        Some(v) if null_is_unset && v.is_empty() => Err(ExpandError::Required {
                            name,
                            message: if word.is_empty() {
                                "is not allowed to be empty".to_string()
                            } else {
                                word
                            },
                        }),
                        Some(v) => Ok(v),
                    },
                    '#' | '%' => {
                        let value = value.unwrap_or_default();
                        let (greedy, pat) = match word.strip_prefix(op) {
                            Some(rest) => (true, rest.to_string()),
                            None => (false, word),
                        };
                        let pat = compile_glob(&pat, self.escape);
                        Ok(if op == '#' {
                            trim_prefix(&value, &pat, greedy)
                        } else {
                            trim_suffix(&value, &pat, greedy)
                        })
                    }
                    _ => Err(ExpandError::UnsupportedModifier(modifier)),
                }
            }
            Some('/') => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.pos += 1;
                }
                let pattern = match self.process_stop_on(Some('/'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(ExpandError::MissingSlash);
                        }
                        return Err(e);
                    }
                };
                let replacement = match self.process_stop_on(Some('}'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(ExpandError::MissingBrace);
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name).unwrap_or_default();
                let pat = compile_glob(&pattern, self.escape);
                Ok(replace(&value, &pat, &replacement, replace_all))
            }
            Some(c) => Err(ExpandError::UnsupportedModifier(c.to_string())),
        }
    }
}

fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PWD" => Some("/home".into()),
            "F" => Some("dir/file.tar.gz".into()),
            "E" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn basic() {
        let lx = Lexer::default();
        assert_eq!(lx.process_word("he$PWD", &env).unwrap(), "he/home");
        assert_eq!(lx.process_word("${X:-a b}", &env).unwrap(), "a b");
        assert_eq!(lx.process_word("${E-x}", &env).unwrap(), "");
        assert_eq!(lx.process_word("${E:-x}", &env).unwrap(), "x");
        assert!(lx.process_word("${X:?}", &env).is_err());
    }

    #[test]
    fn patterns() {
        let lx = Lexer::default();
        assert_eq!(lx.process_word("${F#*/}", &env).unwrap(), "file.tar.gz");
        assert_eq!(lx.process_word("${F##*.}", &env).unwrap(), "gz");
        assert_eq!(lx.process_word("${F%.*}", &env).unwrap(), "dir/file.tar");
        assert_eq!(lx.process_word("${F%%.*}", &env).unwrap(), "dir/file");
        assert_eq!(
            lx.process_word("${F/./_}", &env).unwrap(),
            "dir/file_tar.gz"
        );
        assert_eq!(
            lx.process_word("${F//./_}", &env).unwrap(),
            "dir/file_tar_gz"
        );
        assert_eq!(
            lx.process_word("${F//[a-f]/X}", &env).unwrap(),
            "Xir/XilX.tXr.gz"
        );
        assert_eq!(lx.process_word(r"${F#dir\/}", &env).unwrap(), "file.tar.gz");
        assert_eq!(lx.process_word("${F%?z}", &env).unwrap(), "dir/file.tar.");
        assert!(lx.process_word("${F:#x}", &env).is_err());
        assert!(lx.process_word("${F/x", &env).is_err());
    }

    #[test]
    fn backtick_escape() {
        let lx = Lexer::new('`');
        assert_eq!(
            lx.process_word(r"c:\path`$PWD", &env).unwrap(),
            r"c:\path$PWD"
        );
    }

    #[test]
    fn raw_quotes() {
        let lx = Lexer::default().with_raw_quotes(true);
        assert_eq!(
            lx.process_word(r#"a "b $PWD" 'c'"#, &env).unwrap(),
            r#"a "b /home" 'c'"#
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let s = "${a:-".repeat(10_000);
        assert!(Lexer::default().process_word(&s, &env).is_err());
    }
}
