//! Proptest strategies for Dockerfile-ish input: a seed (or a Dockerfile built from keywords,
//! flags and tokens) run through a list of structured mutations (byte flips, span copies and
//! deletions, token and nesting insertions, line swaps, keyword swaps, truncation, broken UTF-8).
//! Shrinking drops and simplifies mutations, so a failure shrinks towards its seed.

use std::fmt;

use proptest::prelude::*;
use proptest::sample::{select, Index};

use super::seeds::Seeds;

/// Size caps (bytes) of generated inputs.
const MAX_DOCKERFILE: usize = 24 * 1024;
const MAX_WORD: usize = 4 * 1024;

/// Tokens with a meaning somewhere in the grammar, the lexer or the line handling.
const SPECIAL_TOKENS: &[&str] = &[
    "\\\n",
    "\\",
    "`\n",
    "`",
    "<<EOF",
    "<<-EOF",
    "<<'EOF'",
    "<<\"EOF\"",
    "\nEOF\n",
    "3<<X",
    "${",
    "}",
    "$",
    "${X:-",
    "${X/",
    "${X#",
    "${X%%",
    "${X:?",
    "$(",
    "\"",
    "'",
    "[",
    "]",
    "[\"",
    "\"]",
    "\", \"",
    "{",
    "#",
    "\n#",
    "# escape=`\n",
    "# escape=\\\n",
    "# syntax=x\n",
    "# check=x\n",
    "--",
    "--flag=",
    "--mount=type=cache,target=/x",
    "--from=",
    "--",
    " -- ",
    "=",
    " ",
    "\t",
    "\n",
    "\r\n",
    "\r",
    "\u{0B}",
    "\u{0C}",
    "\0",
    "\u{a0}",
    "\u{feff}",
    "\u{2028}",
    "é",
    "한",
    "😀",
    "\\u",
    "\\ud83d",
    "\\\"",
    "\\\\",
    "ONBUILD ",
    "HEALTHCHECK ",
    "CMD ",
    "NONE",
    "FROM ",
    "AS ",
    "RUN ",
    "COPY ",
    "ENV ",
    "ARG ",
    "LABEL ",
    "SHELL ",
    "*",
    "?",
    "[a-z]",
    "[!",
    "/",
    "//",
];

/// Instruction keywords, in odd cases and misspelled too.
const KEYWORDS: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "MAINTAINER",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
    "run",
    "Copy",
    "RUNN",
    "onbuild onbuild",
];

/// Bytes that are syntax, whitespace or the start of a multi-byte sequence.
const INTERESTING_BYTES: &[u8] = &[
    0, 0x7f, 0x80, 0xc3, 0xe2, 0xf0, 0xff, b'\n', b'\r', b'\t', b' ', b'\\', b'`', b'$', b'{',
    b'}', b'"', b'\'', b'[', b']', b'#', b'=', b'-', b'<', b':', b',',
];

/// Openers and closers nested thousands deep (stack-depth probes).
const NESTINGS: &[(&str, &str)] = &[
    ("${a:-", "}"),
    ("${", "}"),
    ("[", "]"),
    ("[\"", "\"]"),
    ("{\"a\":", "}"),
    ("\"", "\""),
    ("'", "'"),
    ("$(", ")"),
    ("ONBUILD ", ""),
    ("<<A ", "\nA"),
    ("\\\n", ""),
    ("${a/", "/b}"),
    ("${a#", "}"),
];

/// One input of the fuzz test.
#[derive(Clone)]
pub enum Case {
    /// A whole Dockerfile for `parse`.
    Dockerfile(String),
    /// A word for the expander; `full` runs every lexer option on it.
    Word {
        /// The word.
        word: String,
        /// Every lexer option (one word in four), else the two escapes only.
        full: bool,
    },
}

impl Case {
    /// `("dockerfile" | "word", text)`: the kind doubles as the regression file extension.
    pub fn describe(&self) -> (&'static str, &str) {
        match self {
            Case::Dockerfile(s) => ("dockerfile", s),
            Case::Word { word, .. } => ("word", word),
        }
    }
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, text) = self.describe();
        write!(f, "{kind} {}", show(text))
    }
}

/// `text` quoted, cut after 2000 bytes.
pub fn show(text: &str) -> String {
    if text.len() > 2000 {
        let mut cut = 2000;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{:?}... ({} bytes)", &text[..cut], text.len())
    } else {
        format!("{text:?}")
    }
}

/// Where a span starts and how long it is (clamped to the data when applied).
#[derive(Debug, Clone)]
struct Span {
    start: Index,
    len: usize,
}

impl Span {
    fn range(&self, len: usize) -> (usize, usize) {
        let s = self.start.index(len + 1);
        (s, s + self.len.min(len - s))
    }
}

/// What a line operation does.
#[derive(Debug, Clone, Copy)]
enum LineOp {
    Duplicate,
    Remove,
    Swap,
    Continue { space: bool },
}

/// One edit of the input bytes.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit {
        at: Index,
        bit: u8,
    },
    SetByte {
        at: Index,
        byte: u8,
    },
    Copy {
        span: Span,
        to: Index,
    },
    Delete {
        span: Span,
    },
    Repeat {
        span: Span,
        times: usize,
    },
    Splice {
        other: Index,
        span: Span,
        at: Index,
        keep_prefix_only: bool,
    },
    Insert {
        text: Vec<u8>,
        at: Index,
    },
    Line {
        op: LineOp,
        i: Index,
        j: Index,
    },
    Keyword {
        line: Index,
        keyword: &'static str,
    },
    Truncate {
        at: Index,
    },
}

/// Mostly small, sometimes up to `max`: proptest draws uniformly and shrinks towards the low end.
fn skewed(min: usize, max: usize) -> BoxedStrategy<usize> {
    prop_oneof![3 => min..=max.min(min + 8), 1 => min..=max].boxed()
}

fn span() -> impl Strategy<Value = Span> {
    (any::<Index>(), skewed(0, 256)).prop_map(|(start, len)| Span { start, len })
}

/// Text worth inserting: a token, a long run of one, deep nesting, a character (maybe cut
/// short), or random bytes.
fn insertion() -> impl Strategy<Value = Vec<u8>> {
    let run_unit = prop_oneof![
        select(SPECIAL_TOKENS).prop_map(|t| t.as_bytes().to_vec()),
        select(INTERESTING_BYTES).prop_map(|b| vec![b]),
    ];
    prop_oneof![
        6 => select(SPECIAL_TOKENS).prop_map(|t| t.as_bytes().to_vec()),
        2 => (run_unit, skewed(1, 4000)).prop_map(|(u, n)| u.repeat(n)),
        2 => (select(NESTINGS), skewed(1, 3000), any::<Index>(), any::<bool>()).prop_map(
            |((open, close), k, cut, balanced)| {
                let close_k = if balanced { k } else { cut.index(k + 1) };
                format!("{}{}", open.repeat(k), close.repeat(close_k)).into_bytes()
            }
        ),
        2 => (any::<char>(), any::<bool>()).prop_map(|(c, broken)| {
            let mut buf = [0u8; 4];
            let mut bytes = c.encode_utf8(&mut buf).as_bytes().to_vec();
            if broken && bytes.len() > 1 {
                bytes.pop();
            }
            bytes
        }),
        2 => prop::collection::vec(any::<u8>(), 1..=16),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let line_op = prop_oneof![
        Just(LineOp::Duplicate),
        Just(LineOp::Remove),
        Just(LineOp::Swap),
        any::<bool>().prop_map(|space| LineOp::Continue { space }),
    ];
    prop_oneof![
        1 => (any::<Index>(), 0..8u8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        1 => (any::<Index>(), select(INTERESTING_BYTES))
            .prop_map(|(at, byte)| Mutation::SetByte { at, byte }),
        1 => (span(), any::<Index>()).prop_map(|(span, to)| Mutation::Copy { span, to }),
        1 => span().prop_map(|span| Mutation::Delete { span }),
        1 => (span(), prop_oneof![9 => 1..=4usize, 1 => 1..=201usize])
            .prop_map(|(span, times)| Mutation::Repeat { span, times }),
        1 => (any::<Index>(), span(), any::<Index>(), any::<bool>()).prop_map(
            |(other, span, at, keep_prefix_only)| Mutation::Splice { other, span, at, keep_prefix_only }
        ),
        6 => (insertion(), any::<Index>()).prop_map(|(text, at)| Mutation::Insert { text, at }),
        1 => (line_op, any::<Index>(), any::<Index>())
            .prop_map(|(op, i, j)| Mutation::Line { op, i, j }),
        1 => (any::<Index>(), select(KEYWORDS))
            .prop_map(|(line, keyword)| Mutation::Keyword { line, keyword }),
        1 => any::<Index>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn lines_of(data: &[u8]) -> Vec<Vec<u8>> {
    data.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect()
}

impl Mutation {
    /// Applies the edit to `data`; `pool` holds the inputs a splice takes from.
    fn apply(&self, data: &mut Vec<u8>, pool: &[String], cap: usize) {
        let len = data.len();
        match self {
            Mutation::FlipBit { at, bit } if len > 0 => data[at.index(len)] ^= 1 << bit,
            Mutation::SetByte { at, byte } if len > 0 => data[at.index(len)] = *byte,
            Mutation::FlipBit { .. } | Mutation::SetByte { .. } => {}
            Mutation::Copy { span, to } => {
                let (s, e) = span.range(len);
                let piece = data[s..e].to_vec();
                let at = to.index(len + 1);
                data.splice(at..at, piece);
            }
            Mutation::Delete { span } => {
                let (s, e) = span.range(len);
                data.drain(s..e);
            }
            Mutation::Repeat { span, times } => {
                let (s, e) = span.range(len);
                let piece = data[s..e].repeat(*times);
                data.splice(e..e, piece);
            }
            Mutation::Splice {
                other,
                span,
                at,
                keep_prefix_only,
            } => {
                let other = pool[other.index(pool.len())].as_bytes();
                let (os, oe) = span.range(other.len());
                let at = at.index(len + 1);
                if *keep_prefix_only {
                    data.truncate(at);
                    data.extend_from_slice(&other[os..]);
                } else {
                    data.splice(at..at, other[os..oe].iter().copied());
                }
            }
            Mutation::Insert { text, at } => {
                let at = at.index(len + 1);
                data.splice(at..at, text.iter().copied());
            }
            Mutation::Line { op, i, j } => {
                let mut lines = lines_of(data);
                let (i, j) = (i.index(lines.len()), j.index(lines.len()));
                match op {
                    LineOp::Duplicate => {
                        let l = lines[i].clone();
                        lines.insert(j, l);
                    }
                    LineOp::Remove if lines.len() > 1 => {
                        lines.remove(i);
                    }
                    LineOp::Remove => {}
                    LineOp::Swap => lines.swap(i, j),
                    LineOp::Continue { space } => {
                        lines[i].extend_from_slice(if *space { b" \\" } else { b"\\" })
                    }
                }
                *data = lines.join(&b'\n');
            }
            Mutation::Keyword { line, keyword } => {
                let mut lines = lines_of(data);
                let i = line.index(lines.len());
                let l = &mut lines[i];
                let end = l
                    .iter()
                    .position(|b| b.is_ascii_whitespace())
                    .unwrap_or(l.len());
                l.splice(0..end, keyword.bytes());
                *data = lines.join(&b'\n');
            }
            // Anywhere, so it may split a UTF-8 sequence.
            Mutation::Truncate { at } if len > 0 => data.truncate(at.index(len)),
            Mutation::Truncate { .. } => {}
        }
        data.truncate(cap);
    }
}

/// A Dockerfile built from scratch: an optional directive, then lines of a keyword, flags and
/// words or tokens, some followed by a heredoc body.
fn scratch_dockerfile(words: Vec<String>) -> impl Strategy<Value = Vec<u8>> {
    let header = prop::option::weighted(
        0.2,
        select(&["# escape=`\n", "# escape=\\\n", "# syntax=x\n# check=y\n"][..]),
    );
    let flag = select(
        &[
            " --from=a",
            " --mount=type=bind",
            " --chown=\"a b\"",
            " --x",
            " --",
        ][..],
    );
    let arg = prop_oneof![
        select(words).prop_map(|w| format!(" {w}")),
        select(SPECIAL_TOKENS).prop_map(|t| format!(" {t}")),
    ];
    let line = (
        select(KEYWORDS),
        prop::collection::vec(flag, 0..=3),
        prop::collection::vec(arg, 0..=6),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(kw, flags, args, heredoc)| {
            let body = if heredoc { "body $X\nEOF\n" } else { "" };
            format!("{kw}{}{}\n{body}", flags.concat(), args.concat())
        });
    (header, prop::collection::vec(line, 1..=13))
        .prop_map(|(h, lines)| format!("{}{}", h.unwrap_or(""), lines.concat()).into_bytes())
}

/// The fuzz input: 70% Dockerfiles (a seed, or one in twelve built from scratch, then 1 to 10
/// mutations), 30% words (a seed, then 1 to 6 mutations; one in four with every lexer option).
pub fn case(seeds: &Seeds) -> impl Strategy<Value = Case> {
    let dockerfiles = seeds.dockerfiles.clone();
    let words = seeds.words.clone();
    let start = prop_oneof![
        12 => select(dockerfiles.clone()).prop_map(String::into_bytes),
        1 => scratch_dockerfile(words.clone()),
    ];
    let dockerfile =
        (start, prop::collection::vec(mutation(), 1..=10)).prop_map(move |(mut data, muts)| {
            for m in &muts {
                m.apply(&mut data, &dockerfiles, MAX_DOCKERFILE);
            }
            Case::Dockerfile(String::from_utf8_lossy(&data).into_owned())
        });
    let word = (
        select(words.clone()),
        prop::collection::vec(mutation(), 1..=6),
        prop::bool::weighted(0.25),
    )
        .prop_map(move |(w, muts, full)| {
            let mut data = w.into_bytes();
            for m in &muts {
                m.apply(&mut data, &words, MAX_WORD);
            }
            Case::Word {
                word: String::from_utf8_lossy(&data).into_owned(),
                full,
            }
        });
    prop_oneof![7 => dockerfile, 3 => word]
}
