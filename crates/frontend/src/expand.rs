//! Shell-word expansion as BuildKit's `shell.Lex` does it for Dockerfile instructions: quotes,
//! escapes, `$V`, `${V}` and the modifiers `:-  -  :+  +  :?  ?  #  ##  %  %%  /  //`.

use crate::error::ExpandError;

/// The expander for one escape token.
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    escape: char,
}

struct State<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Word splitting (ProcessWords) instead of a single word.
    split: bool,
    words: Vec<String>,
    word: String,
    in_word: bool,
}

impl<'a> State<'a> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn push(&mut self, c: char) {
        self.word.push(c);
        self.in_word = true;
    }

    fn push_str(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    /// Adds an unquoted expansion result: split into words when splitting.
    fn push_unquoted(&mut self, s: &str) {
        if !self.split {
            self.push_str(s);
            return;
        }
        for (i, part) in s.split([' ', '\t', '\n']).enumerate() {
            if i > 0 {
                self.end_word();
            }
            if !part.is_empty() {
                self.push_str(part);
            }
        }
    }

    fn end_word(&mut self) {
        if self.in_word {
            self.words.push(std::mem::take(&mut self.word));
            self.in_word = false;
        }
    }

    fn run(&mut self) -> Result<(), ExpandError> {
        while let Some(c) = self.next() {
            if self.split && (c == ' ' || c == '\t' || c == '\n') {
                self.end_word();
                continue;
            }
            if c == self.escape {
                match self.next() {
                    Some(n) => self.push(n),
                    None => self.push(c),
                }
            } else if c == '\'' {
                self.in_word = true;
                self.single_quoted()?;
            } else if c == '"' {
                self.in_word = true;
                self.double_quoted()?;
            } else if c == '$' {
                let value = self.dollar()?;
                match value {
                    Some(v) => self.push_unquoted(&v),
                    None => self.push('$'),
                }
            } else {
                self.push(c);
            }
        }
        self.end_word();
        Ok(())
    }

    fn single_quoted(&mut self) -> Result<(), ExpandError> {
        loop {
            match self.next() {
                None => return Err(ExpandError("unexpected end of statement while looking for matching single-quote".into())),
                Some('\'') => return Ok(()),
                Some(c) => self.push(c),
            }
        }
    }

    fn double_quoted(&mut self) -> Result<(), ExpandError> {
        loop {
            match self.next() {
                None => return Err(ExpandError("unexpected end of statement while looking for matching double-quote".into())),
                Some('"') => return Ok(()),
                Some('$') => match self.dollar()? {
                    Some(v) => self.push_str(&v),
                    None => self.push('$'),
                },
                Some(c) if c == self.escape => match self.peek() {
                    Some(n) if n == '"' || n == '$' || n == self.escape => {
                        self.pos += 1;
                        self.push(n);
                    }
                    _ => self.push(c),
                },
                Some(c) => self.push(c),
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
                self.pos += 1;
            } else {
                break;
            }
        }
        name
    }

    /// Reads a `${...}` word argument up to the closing brace, expanding it.
    fn brace_word(&mut self, stop: &[char]) -> Result<(String, Option<char>), ExpandError> {
        let mut out = String::new();
        loop {
            match self.next() {
                None => return Err(ExpandError("syntax error: missing '}'".into())),
                Some(c) if stop.contains(&c) => return Ok((out, Some(c))),
                Some('$') => match self.dollar()? {
                    Some(v) => out.push_str(&v),
                    None => out.push('$'),
                },
                Some('\'') => loop {
                    match self.next() {
                        None => return Err(ExpandError("unexpected end of statement while looking for matching single-quote".into())),
                        Some('\'') => break,
                        Some(q) => out.push(q),
                    }
                },
                Some(c) if c == self.escape => {
                    if let Some(n) = self.next() {
                        out.push(n);
                    }
                }
                Some(c) => out.push(c),
            }
        }
    }

    /// After a `$`: the expansion, or None when the `$` is literal.
    fn dollar(&mut self) -> Result<Option<String>, ExpandError> {
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                self.braced().map(Some)
            }
            Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
                let name = self.name();
                Ok(Some((self.env)(&name).unwrap_or_default()))
            }
            _ => Ok(None),
        }
    }

    fn braced(&mut self) -> Result<String, ExpandError> {
        let name = self.name();
        if name.is_empty() {
            return Err(ExpandError(format!("bad substitution: missing name in ${{{}", self.chars[self.pos..].iter().collect::<String>())));
        }
        let value = (self.env)(&name);
        let Some(op) = self.next() else {
            return Err(ExpandError("syntax error: missing '}'".into()));
        };
        match op {
            '}' => Ok(value.unwrap_or_default()),
            ':' => {
                let Some(modifier) = self.next() else {
                    return Err(ExpandError("syntax error: missing '}'".into()));
                };
                let (word, _) = self.brace_word(&['}'])?;
                let set_nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
                match modifier {
                    '-' => Ok(if set_nonempty { value.unwrap_or_default() } else { word }),
                    '+' => Ok(if set_nonempty { word } else { String::new() }),
                    '?' => {
                        if set_nonempty {
                            Ok(value.unwrap_or_default())
                        } else {
                            Err(ExpandError(format!("{name}: {}", if word.is_empty() { "is not allowed to be unset".to_string() } else { word })))
                        }
                    }
                    other => Err(ExpandError(format!("unsupported modifier (:{other}) in substitution"))),
                }
            }
            '-' | '+' | '?' => {
                let (word, _) = self.brace_word(&['}'])?;
                match op {
                    '-' => Ok(value.unwrap_or(word)),
                    '+' => Ok(if value.is_some() { word } else { String::new() }),
                    _ => match value {
                        Some(v) => Ok(v),
                        None => Err(ExpandError(format!("{name}: {}", if word.is_empty() { "is not allowed to be unset".to_string() } else { word }))),
                    },
                }
            }
            '#' | '%' => {
                let longest = self.peek() == Some(op);
                if longest {
                    self.pos += 1;
                }
                let (pattern, _) = self.brace_word(&['}'])?;
                let v = value.unwrap_or_default();
                Ok(trim_pattern(&v, &pattern, op == '#', longest))
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.pos += 1;
                }
                let (pattern, stop) = self.brace_word(&['/', '}'])?;
                let replacement = if stop == Some('/') { self.brace_word(&['}'])?.0 } else { String::new() };
                let v = value.unwrap_or_default();
                Ok(replace_pattern(&v, &pattern, &replacement, all))
            }
            other => Err(ExpandError(format!("unsupported modifier ({other}) in substitution"))),
        }
    }
}

fn glob(pattern: &[char], text: &[char]) -> bool {
    match pattern.first() {
        None => text.is_empty(),
        Some('*') => (0..=text.len()).any(|i| glob(&pattern[1..], &text[i..])),
        Some('?') => !text.is_empty() && glob(&pattern[1..], &text[1..]),
        Some('\\') if pattern.len() > 1 => text.first() == Some(&pattern[1]) && glob(&pattern[2..], &text[1..]),
        Some(p) => text.first() == Some(p) && glob(&pattern[1..], &text[1..]),
    }
}

fn trim_pattern(value: &str, pattern: &str, prefix: bool, longest: bool) -> String {
    let v: Vec<char> = value.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let candidates: Vec<usize> = if longest { (0..=v.len()).rev().collect() } else { (0..=v.len()).collect() };
    for n in candidates {
        if prefix {
            if glob(&p, &v[..n]) {
                return v[n..].iter().collect();
            }
        } else if glob(&p, &v[v.len() - n..]) {
            return v[..v.len() - n].iter().collect();
        }
    }
    value.to_string()
}

fn replace_pattern(value: &str, pattern: &str, replacement: &str, all: bool) -> String {
    let v: Vec<char> = value.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut replaced = false;
    while i < v.len() {
        if !(replaced && !all) {
            // Longest match starting at i.
            if let Some(n) = (1..=v.len() - i).rev().find(|&n| glob(&p, &v[i..i + n])) {
                out.push_str(replacement);
                i += n;
                replaced = true;
                continue;
            }
        }
        out.push(v[i]);
        i += 1;
    }
    out
}

impl Lexer {
    /// A lexer for the Dockerfile's escape token.
    pub fn new(escape: char) -> Self {
        Lexer { escape }
    }

    /// Expands one word (quotes removed), as BuildKit's ProcessWord.
    pub fn process_word(&self, word: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
        let mut st = State { chars: word.chars().collect(), pos: 0, escape: self.escape, env, split: false, words: Vec::new(), word: String::new(), in_word: false };
        st.run()?;
        Ok(st.words.into_iter().next().unwrap_or_default())
    }

    /// Expands and splits into words, as BuildKit's ProcessWords.
    pub fn process_words(&self, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>, ExpandError> {
        let mut st = State { chars: text.chars().collect(), pos: 0, escape: self.escape, env, split: true, words: Vec::new(), word: String::new(), in_word: false };
        st.run()?;
        Ok(st.words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("abc".into()),
            "E" => Some(String::new()),
            "P" => Some("/usr/local/bin/tool.tar.gz".into()),
            _ => None,
        }
    }

    #[test]
    fn modifiers() {
        let l = Lexer::new('\\');
        let w = |s: &str| l.process_word(s, &env).unwrap();
        assert_eq!(w("$A ${A}x"), "abc abcx");
        assert_eq!(w("${U:-d} ${E:-d} ${E-d} ${U-d}"), "d d  d");
        assert_eq!(w("${A:+x} ${E:+x} ${E+x} ${U+x}"), "x  x ");
        assert_eq!(w("${P#*/} ${P##*/} ${P%.*} ${P%%.*}"), "usr/local/bin/tool.tar.gz tool.tar.gz /usr/local/bin/tool.tar /usr/local/bin/tool");
        assert_eq!(w("${A/b/X} ${P//l/L}"), "aXc /usr/LocaL/bin/tooL.tar.gz");
        assert_eq!(w("'$A' \"$A\" \\$A"), "$A abc $A");
        assert!(l.process_word("${U:?must be set}", &env).is_err());
        assert!(l.process_word("${A", &env).is_err());
        assert_eq!(l.process_words("a \"b c\" $A", &env).unwrap(), vec!["a", "b c", "abc"]);
    }
}
