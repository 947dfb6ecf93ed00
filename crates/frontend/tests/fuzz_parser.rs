//! Fuzz / property test for the Dockerfile parser ([`rbuild_frontend::parse`], [`dump`]) and the
//! shell-word expander ([`Lexer::process_word`] / [`Lexer::process_words`], escape `\` and `` ` ``).
//!
//! Inputs are random and mutated Dockerfiles and words, seeded from BuildKit's parser and
//! shell-lexer test data and the conformance cases in `$RBUILD_SHARED` (default
//! `<workspace>/../shared`), plus a built-in seed set (used alone, and announced, when the shared
//! directory is missing) and the files in `tests/regressions/`.
//!
//! Properties checked for every input, each run on a worker thread under `catch_unwind` and a
//! per-input time limit:
//! - no panic, no hang (more than [`TIME_LIMIT`] for one input), inputs capped in size and
//!   outputs not absurdly larger than the input;
//! - parse: deterministic; spans inside the source on character boundaries; `dump` of every
//!   instruction works; errors render; every expanding instruction's words go through the lexer;
//! - round trip (parser): the `original` text of every instruction without heredocs, re-parsed
//!   under the same escape directive, dumps the same;
//! - round trip (expander): any string single-quoted for the lexer expands back to itself.
//!
//! Modes:
//! - default (inside `cargo test`): fixed seed, [`QUICK_CASES`] inputs or [`QUICK_SECS`] seconds,
//!   whichever comes first; the count is printed;
//! - `RBUILD_FUZZ_SECS=600`: runs that many seconds (seed from `RBUILD_FUZZ_SEED` or the clock,
//!   printed; progress every 30 s);
//! - `RBUILD_FUZZ_CASE=<seed>:<index>`: regenerates one case, prints it and runs it (to pin down
//!   a crash that killed the process, e.g. a stack overflow: the progress lines give the range).
//!
//! Findings (panic or hang) are printed with the input and written to
//! `$CARGO_TARGET_TMPDIR/fuzz-findings/`; copy them to `tests/regressions/` (`*.dockerfile` for
//! parser inputs, `*.word` for expander inputs), where the `regressions` test replays them.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use rbuild_frontend::{dump, parse, Args, Instruction, Lexer};

/// Per-input time limit.
const TIME_LIMIT: Duration = Duration::from_secs(2);
/// Inputs of the default (quick) run.
const QUICK_CASES: u64 = 30_000;
/// Wall-clock cap of the default run.
const QUICK_SECS: u64 = 15;
/// Fixed seed of the default run.
const QUICK_SEED: u64 = 0x5eed_d0c4_e2f1_1e00;
/// Size caps (bytes) of generated inputs.
const MAX_DOCKERFILE: usize = 24 * 1024;
const MAX_WORD: usize = 4 * 1024;
/// Longest environment value the expander sees (bounds its output).
const MAX_ENV_VALUE: usize = 16;
/// Stack of the worker thread (as small as a tokio worker's, so deep recursion shows up).
const WORKER_STACK: usize = 2 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// PRNG (splitmix64): small, deterministic, good enough for fuzzing.
// ---------------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    fn for_case(seed: u64, index: u64) -> Rng {
        let mut r = Rng(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        r.next();
        r
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
    /// Skewed towards small values: `0..=max`.
    fn small(&mut self, max: usize) -> usize {
        let a = self.below(max + 1);
        self.below(a + 1)
    }
}

fn pick_str(rng: &mut Rng, v: &[&'static str]) -> &'static str {
    v[rng.below(v.len())]
}

// ---------------------------------------------------------------------------------------------
// Seeds.
// ---------------------------------------------------------------------------------------------

const BUILTIN_DOCKERFILES: &[&str] = &[
    "FROM alpine\nRUN echo hi\n",
    "# syntax=docker/dockerfile:1\n# escape=\\\nARG BASE=alpine\nFROM ${BASE} AS build\nWORKDIR /src\nCOPY --chown=1:1 --chmod=755 a b /dst/\nRUN --mount=type=cache,target=/root/.cache \\\n    make && \\\n    make install\nFROM scratch\nCOPY --from=build /out /\nENTRYPOINT [\"/app\", \"--flag\"]\nCMD [\"serve\"]\n",
    "# escape=`\nFROM mcr.microsoft.com/windows\nRUN dir `\n  c:\\ `\n  && echo done\nWORKDIR c:\\windows\n",
    "FROM a\nENV A=1 B=\"two words\" C='single $X' D=a\\ b\nENV legacy value with spaces\nLABEL \"k\"=\"v\" k2=v2\nARG X Y=1 Z\n",
    "FROM a\nRUN <<EOF\necho one\necho two\nEOF\nRUN <<-'EOT' bash\n\techo $HOME\n\tEOT\nCOPY <<A <<\"B\" /dst/\nbody a\nA\nbody $b\nB\n",
    "FROM a\nHEALTHCHECK --interval=5s --timeout=3s CMD [\"curl\", \"-f\", \"http://x/\"]\nHEALTHCHECK NONE\nSTOPSIGNAL SIGTERM\nUSER 1000:1000\nVOLUME [\"/a\", \"/b\"]\nVOLUME /c /d\nEXPOSE 80/tcp 443\nSHELL [\"/bin/sh\", \"-c\"]\nMAINTAINER me <me@x>\n",
    "FROM a\nONBUILD RUN echo hi\nONBUILD COPY <<X /x\nbody\nX\nONBUILD ONBUILD RUN x\n",
    "\u{feff}FROM a\r\nRUN x \\\r\n  # comment inside\r\n\r\n  y\r\n",
    "FROM a\nCMD [\"\\u00e9\\ud83d\\ude00\", \"a\\\"b\", \"\\n\\t\"]\nCMD [1, {\"a\": [true, null]}]\nCMD [\"unterminated\nRUN [ not json ]\n",
    "FROM a\nCOPY -- --not-a-flag /x\nADD --checksum=sha256:00 --keep-git-dir=true https://x/y.tar /z\nRUN --network=none --security=insecure true\n",
    "FROM a\nENV X=${Y:-default} Z=${W:+alt} P=${PWD%/*} Q=${PWD##*/} R=${A/b/c} S=${A//b/c}\nWORKDIR ${X:?must be set}\n",
    "frOm a As B\nrun echo lower\nFROM b\nRUNN typo\n",
];

const BUILTIN_WORDS: &[&str] = &[
    "hello",
    "he'll'o",
    "he\\'llo",
    "\"abc\\tdef\"",
    "he$PWD",
    "he\\$PWD",
    "${PWD}",
    "${PWD:-x}",
    "${UNSET-default}",
    "${PWD:+set}",
    "${UNSET:?message}",
    "${PWD#/}",
    "${PWD##*/}",
    "${PWD%/*}",
    "${PWD%%h*}",
    "${PWD/h/H}",
    "${PWD//[a-z]/X}",
    "${PWD/#\\//}",
    "$1 $@ $* $# $? $- $$ $! $0",
    "'a b' \"c $SHELL d\" e\\ f",
    "${KOREAN}",
    "${a:-${b:-${c:-deep}}}",
    "\"${space}\" ${space}",
    "[\"json\", \"${X}\"]",
    "a`$b`c",
    "``",
    "${",
    "$",
    "\"",
    "'",
];

struct Seeds {
    dockerfiles: Vec<String>,
    words: Vec<String>,
    origin: String,
}

fn shared_dir() -> PathBuf {
    match std::env::var_os("RBUILD_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
}

fn regressions_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/regressions")
}

fn sorted_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.is_dir());
    v.sort();
    v
}

fn read_lossy(p: &Path) -> Option<String> {
    fs::read(p)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn load_seeds() -> Seeds {
    let mut dockerfiles: Vec<String> = BUILTIN_DOCKERFILES.iter().map(|s| s.to_string()).collect();
    let mut words: Vec<String> = BUILTIN_WORDS.iter().map(|s| s.to_string()).collect();
    let conf = shared_dir().join("conformance");
    let bk = conf.join("buildkit-parser");
    let mut counts = Vec::new();
    if bk.is_dir() || conf.join("cases").is_dir() {
        let mut n = 0;
        for sub in ["parser/testfiles", "parser/testfiles-negative"] {
            for d in sorted_dirs(&bk.join(sub)) {
                if let Some(s) = read_lossy(&d.join("Dockerfile")) {
                    dockerfiles.push(s);
                    n += 1;
                }
            }
        }
        counts.push(format!("{n} buildkit parser testfiles"));
        let mut n = 0;
        for d in sorted_dirs(&conf.join("cases")) {
            if let Some(s) = read_lossy(&d.join("Dockerfile")) {
                dockerfiles.push(s);
                n += 1;
            }
        }
        counts.push(format!("{n} conformance cases"));
        let mut n = 0;
        if let Some(t) = read_lossy(&bk.join("shell/envVarTest")) {
            for line in t.lines().filter(|l| !l.starts_with('#')) {
                let parts: Vec<&str> = line.split('|').collect();
                if parts.len() == 3 {
                    words.push(parts[1].trim().to_string());
                    n += 1;
                }
            }
        }
        if let Some(t) = read_lossy(&bk.join("shell/wordsTest")) {
            for line in t.lines().filter(|l| !l.starts_with('#')) {
                if let Some((input, _)) = line.split_once('|') {
                    words.push(input.trim().to_string());
                    n += 1;
                }
            }
        }
        counts.push(format!("{n} shell lexer words"));
    } else {
        println!(
            "fuzz seeds: ../shared not found ({}), using the built-in seed set only",
            conf.display()
        );
    }
    // Regression inputs are good seeds too.
    let mut n = 0;
    for (name, text) in regression_files() {
        if name.ends_with(".word") {
            words.push(text);
        } else {
            dockerfiles.push(text);
        }
        n += 1;
    }
    counts.push(format!("{n} regression files"));
    // Every instruction line of the Dockerfiles is a word seed as well (the expander sees them).
    let extra: Vec<String> = dockerfiles
        .iter()
        .flat_map(|d| d.lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|l| !l.trim().is_empty())
        .flat_map(|l| {
            let mut v: Vec<String> = l.split_whitespace().skip(1).map(str::to_string).collect();
            v.push(l);
            v
        })
        .collect();
    words.extend(extra);
    words.sort();
    words.dedup();
    let origin = format!(
        "{} built-in Dockerfiles + {} built-in words + {}",
        BUILTIN_DOCKERFILES.len(),
        BUILTIN_WORDS.len(),
        counts.join(" + ")
    );
    Seeds {
        dockerfiles,
        words,
        origin,
    }
}

fn regression_files() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = fs::read_dir(regressions_dir())
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && matches!(
                            p.extension().and_then(|e| e.to_str()),
                            Some("dockerfile" | "word")
                        )
                })
                .filter_map(|p| {
                    let name = p.file_name()?.to_string_lossy().into_owned();
                    Some((name, read_lossy(&p)?))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// Mutations.
// ---------------------------------------------------------------------------------------------

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

const INTERESTING_BYTES: &[u8] = &[
    0, 0x7f, 0x80, 0xc3, 0xe2, 0xf0, 0xff, b'\n', b'\r', b'\t', b' ', b'\\', b'`', b'$', b'{',
    b'}', b'"', b'\'', b'[', b']', b'#', b'=', b'-', b'<', b':', b',',
];

fn deep_nesting(rng: &mut Rng) -> String {
    let k = 1 + rng.small(3000);
    let (open, close) = *rng.pick(&[
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
    ]);
    let close_k = if rng.chance(50) { k } else { rng.below(k + 1) };
    format!("{}{}", open.repeat(k), close.repeat(close_k))
}

fn long_run(rng: &mut Rng) -> Vec<u8> {
    let unit: Vec<u8> = if rng.chance(50) {
        rng.pick(SPECIAL_TOKENS).as_bytes().to_vec()
    } else {
        vec![*rng.pick(INTERESTING_BYTES)]
    };
    let n = 1 + rng.small(4000);
    unit.repeat(n)
}

/// A random span `start..end` of `v` (may be empty).
fn span(rng: &mut Rng, len: usize) -> (usize, usize) {
    let s = rng.below(len + 1);
    let l = rng.small((len - s).min(256));
    (s, s + l)
}

fn mutate(rng: &mut Rng, data: &mut Vec<u8>, pool: &[String], cap: usize) {
    let len = data.len();
    match rng.below(16) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = *rng.pick(INTERESTING_BYTES);
        }
        2 => {
            let (s, e) = span(rng, len);
            let piece = data[s..e].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, piece);
        }
        3 => {
            let (s, e) = span(rng, len);
            data.drain(s..e);
        }
        4 => {
            // Duplicate a span in place, possibly many times.
            let (s, e) = span(rng, len);
            let max = if rng.chance(10) { 200 } else { 3 };
            let times = 1 + rng.small(max);
            let piece = data[s..e].repeat(times);
            data.splice(e..e, piece);
        }
        5 => {
            // Splice with another input: our prefix + its suffix, or insert a span of it.
            let other = rng.pick(pool).as_bytes();
            let (os, oe) = span(rng, other.len());
            if rng.chance(50) {
                let cut = rng.below(len + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[os..]);
            } else {
                let at = rng.below(len + 1);
                data.splice(at..at, other[os..oe].iter().copied());
            }
        }
        6..=8 => {
            let tok = rng.pick(SPECIAL_TOKENS).as_bytes();
            let at = rng.below(len + 1);
            data.splice(at..at, tok.iter().copied());
        }
        9 => {
            let run = long_run(rng);
            let at = rng.below(len + 1);
            data.splice(at..at, run);
        }
        10 => {
            let nest = deep_nesting(rng);
            let at = rng.below(len + 1);
            data.splice(at..at, nest.bytes());
        }
        11 => {
            // Line operations: duplicate, drop or swap whole lines; add continuations.
            let mut lines: Vec<Vec<u8>> = data.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            let i = rng.below(lines.len());
            let j = rng.below(lines.len());
            match rng.below(4) {
                0 => {
                    let l = lines[i].clone();
                    lines.insert(j, l);
                }
                1 if lines.len() > 1 => {
                    lines.remove(i);
                }
                2 => lines.swap(i, j),
                _ => lines[i].extend_from_slice(if rng.chance(50) { b" \\" } else { b"\\" }),
            }
            *data = lines.join(&b'\n');
        }
        12 => {
            // Replace the keyword of a line.
            let mut lines: Vec<Vec<u8>> = data.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            let i = rng.below(lines.len());
            let l = &mut lines[i];
            let kw_end = l
                .iter()
                .position(|b| b.is_ascii_whitespace())
                .unwrap_or(l.len());
            l.splice(0..kw_end, rng.pick(KEYWORDS).bytes());
            *data = lines.join(&b'\n');
        }
        13 if len > 0 => {
            // Truncate anywhere (may split a UTF-8 sequence).
            data.truncate(rng.below(len));
        }
        14 => {
            // Insert a random multi-byte character (or a broken one).
            let c = char::from_u32(rng.next() as u32 % 0x11_0000).unwrap_or('\u{fffd}');
            let mut buf = [0u8; 4];
            let mut bytes = c.encode_utf8(&mut buf).as_bytes().to_vec();
            if rng.chance(30) && bytes.len() > 1 {
                bytes.pop();
            }
            let at = rng.below(len + 1);
            data.splice(at..at, bytes);
        }
        _ => {
            // Random bytes.
            let n = 1 + rng.small(16);
            let at = rng.below(len + 1);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            data.splice(at..at, bytes);
        }
    }
    if data.len() > cap {
        data.truncate(cap);
    }
}

/// A Dockerfile built from scratch out of keywords, flags and tokens.
fn generate_dockerfile(rng: &mut Rng, words: &[String]) -> Vec<u8> {
    let mut out = String::new();
    if rng.chance(20) {
        out.push_str(pick_str(
            rng,
            &["# escape=`\n", "# escape=\\\n", "# syntax=x\n# check=y\n"],
        ));
    }
    for _ in 0..1 + rng.small(12) {
        out.push_str(pick_str(rng, KEYWORDS));
        for _ in 0..rng.small(3) {
            out.push_str(pick_str(
                rng,
                &[
                    " --from=a",
                    " --mount=type=bind",
                    " --chown=\"a b\"",
                    " --x",
                    " --",
                ],
            ));
        }
        for _ in 0..rng.small(6) {
            out.push(' ');
            if rng.chance(50) {
                let w: &String = rng.pick(words);
                out.push_str(w);
            } else {
                out.push_str(pick_str(rng, SPECIAL_TOKENS));
            }
        }
        out.push('\n');
        if rng.chance(10) {
            out.push_str("body $X\nEOF\n");
        }
    }
    out.into_bytes()
}

enum Case {
    Dockerfile(String),
    Word(String),
}

fn generate(rng: &mut Rng, seeds: &Seeds) -> Case {
    if rng.chance(70) {
        let mut data = if rng.chance(8) {
            generate_dockerfile(rng, &seeds.words)
        } else {
            rng.pick(&seeds.dockerfiles).as_bytes().to_vec()
        };
        for _ in 0..1 + rng.small(10) {
            mutate(rng, &mut data, &seeds.dockerfiles, MAX_DOCKERFILE);
        }
        Case::Dockerfile(String::from_utf8_lossy(&data).into_owned())
    } else {
        let mut data = rng.pick(&seeds.words).as_bytes().to_vec();
        for _ in 0..1 + rng.small(6) {
            mutate(rng, &mut data, &seeds.words, MAX_WORD);
        }
        Case::Word(String::from_utf8_lossy(&data).into_owned())
    }
}

// ---------------------------------------------------------------------------------------------
// Checks (run on the worker thread).
// ---------------------------------------------------------------------------------------------

fn env_lookup(name: &str) -> Option<String> {
    static ENV: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    let env = ENV.get_or_init(|| {
        [
            ("PWD", "/home"),
            ("SHELL", "bash"),
            ("KOREAN", "한국어"),
            ("NULL", ""),
            ("space", "abc  def"),
            ("leading", "  ab c"),
            ("trailing", "ab c   "),
            ("X", "x"),
            ("a", "$a${a}"),
            ("b", "'\"\\`"),
            ("long", "0123456789abcdef"),
        ]
        .into()
    });
    let v = env.get(name).map(|v| v.to_string());
    if let Some(v) = &v {
        assert!(v.len() <= MAX_ENV_VALUE);
    }
    v
}

/// Output of the expander must stay within what `n` input chars can produce: each reference
/// yields at most one value, pattern replacement at most `value * (replacement + 1)`.
fn expansion_bound(input_len: usize) -> usize {
    (input_len + 1) * (MAX_ENV_VALUE + 1) * 4 + input_len * input_len.min(4096)
}

fn lexers() -> Vec<Lexer> {
    let mut v = Vec::new();
    for esc in ['\\', '`'] {
        for bits in 0..8u8 {
            v.push(
                Lexer::new(esc)
                    .with_raw_quotes(bits & 1 != 0)
                    .with_raw_escapes(bits & 2 != 0)
                    .with_skip_unset_env(bits & 4 != 0),
            );
        }
    }
    v
}

/// Quotes `s` so that the lexer gives it back unchanged: `'...'` with `'` written as `'E''`.
fn quote_for(s: &str, escape: char) -> String {
    let mut out = String::from("'");
    for c in s.chars() {
        if c == '\'' {
            out.push('\'');
            out.push(escape);
            out.push_str("''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

fn check_word(word: &str, full: bool) -> Result<(), String> {
    let bound = expansion_bound(word.chars().count());
    let all = lexers();
    let chosen: Vec<Lexer> = if full {
        all
    } else {
        vec![Lexer::new('\\'), Lexer::new('`')]
    };
    for lx in &chosen {
        let r1 = lx.process_word(word, &env_lookup);
        let r2 = lx.process_words(word, &env_lookup);
        match (&r1, &r2) {
            (Ok(w), Ok(ws)) => {
                WORDS_OK.fetch_add(1, Relaxed);
                if w.len() > bound {
                    return Err(format!(
                        "{lx:?}: process_word output {} bytes > bound {bound}",
                        w.len()
                    ));
                }
                let total: usize = ws.iter().map(String::len).sum();
                if total > bound {
                    return Err(format!(
                        "{lx:?}: process_words output {total} bytes > bound {bound}"
                    ));
                }
            }
            (Err(e), Err(f)) if e == f => {
                WORDS_ERR.fetch_add(1, Relaxed);
                let _ = e.to_string();
            }
            _ => {
                return Err(format!(
                    "{lx:?}: process_word and process_words disagree: {r1:?} vs {r2:?}"
                ))
            }
        }
        // Determinism.
        if lx.process_word(word, &env_lookup) != r1 {
            return Err(format!("{lx:?}: process_word is not deterministic"));
        }
    }
    // Round trip: a single-quoted word comes back verbatim (quotes and escapes not raw).
    for esc in ['\\', '`'] {
        let lx = Lexer::new(esc);
        let q = quote_for(word, esc);
        match lx.process_word(&q, &env_lookup) {
            Ok(got) if got == word => {}
            other => {
                return Err(format!(
                    "round trip with escape {esc:?}: {q:?} expanded to {other:?}, want the input"
                ))
            }
        }
        let words = lx.process_words(&q, &env_lookup);
        let ok = match &words {
            Ok(ws) => ws.len() == 1 && ws[0] == word || word.is_empty() && ws.len() <= 1,
            Err(_) => false,
        };
        if !ok {
            return Err(format!(
                "round trip with escape {esc:?}: process_words({q:?}) = {words:?}, want [input]"
            ));
        }
    }
    Ok(())
}

fn string_bytes(inst: &Instruction) -> usize {
    fn args_bytes(a: &Args) -> usize {
        match a {
            Args::Empty => 0,
            Args::Exec(v) | Args::Words(v) => v.iter().map(String::len).sum(),
            Args::Shell(s) | Args::Single(s) => s.len(),
            Args::KeyValues(kvs) => kvs
                .iter()
                .map(|kv| kv.key.len() + kv.value.as_ref().map_or(0, String::len))
                .sum(),
            Args::Healthcheck {
                check_type,
                command,
            } => check_type.len() + args_bytes(command),
        }
    }
    inst.name_original.len()
        + inst.original.len()
        + inst
            .flags
            .iter()
            .map(|f| f.name.len() + f.value.as_ref().map_or(0, String::len))
            .sum::<usize>()
        + args_bytes(&inst.args)
        + inst
            .heredocs
            .iter()
            .map(|h| h.name.len() + h.content.len())
            .sum::<usize>()
        + inst.onbuild.as_deref().map_or(0, string_bytes)
}

fn check_span(src: &str, sp: &rbuild_frontend::Span, what: &str) -> Result<(), String> {
    let end = sp.offset.checked_add(sp.len).ok_or("span overflow")?;
    if end > src.len() || !src.is_char_boundary(sp.offset) || !src.is_char_boundary(end) {
        return Err(format!(
            "{what}: span {sp:?} not inside the source ({} bytes)",
            src.len()
        ));
    }
    let lines = src.split('\n').count();
    if sp.start_line == 0 || sp.start_col == 0 || sp.start_line > sp.end_line || sp.end_line > lines
    {
        return Err(format!(
            "{what}: bad span lines/cols {sp:?} ({lines} lines)"
        ));
    }
    Ok(())
}

fn word_args(inst: &Instruction) -> Vec<&str> {
    let mut v: Vec<&str> = inst
        .flags
        .iter()
        .filter_map(|f| f.value.as_deref())
        .collect();
    match &inst.args {
        Args::Words(w) | Args::Exec(w) => v.extend(w.iter().map(String::as_str)),
        Args::Single(s) => v.push(s),
        Args::KeyValues(kvs) => {
            for kv in kvs {
                v.push(&kv.key);
                v.extend(kv.value.as_deref());
            }
        }
        _ => {}
    }
    v
}

/// How often each outcome occurred (printed at the end, to show the checks are exercised).
static PARSED_OK: AtomicU64 = AtomicU64::new(0);
static PARSED_ERR: AtomicU64 = AtomicU64::new(0);
static ROUND_TRIPS: AtomicU64 = AtomicU64::new(0);
static WORDS_OK: AtomicU64 = AtomicU64::new(0);
static WORDS_ERR: AtomicU64 = AtomicU64::new(0);

/// What must not depend on line endings: the dump and heredoc names of every instruction.
fn summary(r: &Result<rbuild_frontend::Dockerfile, rbuild_frontend::ParseError>) -> Vec<String> {
    match r {
        Ok(df) => df
            .instructions
            .iter()
            .map(|i| {
                let names: Vec<&str> = i.heredocs.iter().map(|h| h.name.as_str()).collect();
                format!("{} {names:?}", dump(i))
            })
            .collect(),
        Err(e) => vec![format!("error {e}")],
    }
}

fn check_dockerfile(src: &str) -> Result<(), String> {
    let r = parse(src);
    match &r {
        Ok(_) => PARSED_OK.fetch_add(1, Relaxed),
        Err(_) => PARSED_ERR.fetch_add(1, Relaxed),
    };
    if parse(src) != r {
        return Err("parse is not deterministic".into());
    }
    let df = match r {
        Err(e) => {
            let rendered = e.render("Dockerfile");
            if e.line == 0 || e.col == 0 {
                return Err(format!(
                    "error position {}:{} is not 1-based: {e}",
                    e.line, e.col
                ));
            }
            // Message (words quoted Go-style: at most 4 bytes per byte), line text, caret pad.
            if rendered.len() > 6 * src.len() + 4096 {
                return Err(format!("error rendering is {} bytes", rendered.len()));
            }
            return Ok(());
        }
        Ok(df) => df,
    };
    if df.source != src {
        return Err("Dockerfile.source differs from the input".into());
    }
    let mut total = 0;
    let mut dumps = Vec::new();
    for (i, inst) in df.instructions.iter().enumerate() {
        check_span(src, &inst.span, &format!("instruction {i}"))?;
        for f in &inst.flags {
            check_span(src, &f.span, &format!("instruction {i} flag"))?;
        }
        if let Some(t) = &inst.onbuild {
            check_span(src, &t.span, &format!("instruction {i} trigger"))?;
        }
        let d = dump(inst);
        total += d.len() + string_bytes(inst);
        dumps.push(d);
        // The expander sees what the converter would hand it.
        if inst.kind.expands_env() {
            let lx = Lexer::new(df.directives.escape);
            for w in word_args(inst) {
                let _ = lx.process_words(w, &env_lookup);
                let _ = lx.process_word(w, &env_lookup);
            }
        }
    }
    // ONBUILD keeps its heredocs twice and dump quotes with up to 10 bytes per 4-byte char.
    let bound = 24 * src.len() + 256 * df.instructions.len() + 4096;
    if total > bound {
        return Err(format!(
            "parse output {total} bytes > bound {bound} for {} input bytes",
            src.len()
        ));
    }
    // Line endings: the same file with CRLF line endings, or with one more newline at the end,
    // parses to the same instructions.
    if !src.contains('\r') {
        let want = summary(&Ok(df.clone()));
        for (what, variant) in [
            ("CRLF line endings", src.replace('\n', "\r\n")),
            ("an extra newline at the end", format!("{src}\n")),
        ] {
            let got = summary(&parse(&variant));
            if got != want {
                return Err(format!("{what} changes the result: {got:?}, want {want:?}"));
            }
        }
    }
    // Round trip: each instruction's logical line, re-parsed alone, dumps the same.
    let esc = df.directives.escape;
    for (i, inst) in df.instructions.iter().enumerate() {
        let o = &inst.original;
        if !inst.heredocs.is_empty()
            || o.contains('\n')
            // A trailing escape token would continue the line when re-parsed (also behind a
            // `\r` that the parser trims from the text but that hid the token from the
            // continuation check: `RUN x \<CR>\<LF>`).
            || o.trim_end().ends_with(esc)
        {
            continue;
        }
        ROUND_TRIPS.fetch_add(1, Relaxed);
        let text = format!("# escape={esc}\n{o}\n");
        match parse(&text) {
            Ok(again)
                if again.instructions.len() == 1 && dump(&again.instructions[0]) == dumps[i] => {}
            other => {
                return Err(format!(
                    "round trip of instruction {i}: {text:?} gives {:?}, want [{}]",
                    other.map(|d| d.instructions.iter().map(dump).collect::<Vec<_>>()),
                    dumps[i]
                ))
            }
        }
    }
    Ok(())
}

fn check_case(case: &Case, full: bool) -> Result<(), String> {
    match case {
        Case::Dockerfile(s) => check_dockerfile(s),
        Case::Word(w) => check_word(w, full),
    }
}

// ---------------------------------------------------------------------------------------------
// Worker with catch_unwind and a time limit.
// ---------------------------------------------------------------------------------------------

enum Outcome {
    Ok,
    Property(String),
    Panic(String),
}

struct Worker {
    tx: mpsc::Sender<(Arc<Case>, bool)>,
    rx: mpsc::Receiver<Outcome>,
}

fn last_panic() -> &'static Mutex<Option<String>> {
    static LAST: OnceLock<Mutex<Option<String>>> = OnceLock::new();
    LAST.get_or_init(|| Mutex::new(None))
}

fn install_panic_hook() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let prev = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if thread::current().name() == Some("fuzz-worker") {
                let msg = match info.payload().downcast_ref::<&str>() {
                    Some(s) => s.to_string(),
                    None => info
                        .payload()
                        .downcast_ref::<String>()
                        .cloned()
                        .unwrap_or_else(|| "<non-string panic>".into()),
                };
                let loc = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                *last_panic().lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(format!("{loc}: {msg}"));
            } else {
                prev(info);
            }
        }));
    });
}

impl Worker {
    fn spawn() -> Worker {
        install_panic_hook();
        let (tx, job_rx) = mpsc::channel::<(Arc<Case>, bool)>();
        let (out_tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("fuzz-worker".into())
            .stack_size(WORKER_STACK)
            .spawn(move || {
                for (case, full) in job_rx {
                    let r = panic::catch_unwind(AssertUnwindSafe(|| check_case(&case, full)));
                    let o = match r {
                        Ok(Ok(())) => Outcome::Ok,
                        Ok(Err(m)) => Outcome::Property(m),
                        Err(_) => Outcome::Panic(
                            last_panic()
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .take()
                                .unwrap_or_else(|| "panic".into()),
                        ),
                    };
                    if out_tx.send(o).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn fuzz worker");
        Worker { tx, rx }
    }

    /// Runs one case; `Err(None)` means it hung.
    fn run(&self, case: Arc<Case>, full: bool) -> Result<(), Option<String>> {
        self.tx
            .send((case, full))
            .map_err(|_| Some("worker gone".to_string()))?;
        match self.rx.recv_timeout(TIME_LIMIT) {
            Ok(Outcome::Ok) => Ok(()),
            Ok(Outcome::Property(m)) => Err(Some(format!("property violated: {m}"))),
            Ok(Outcome::Panic(m)) => Err(Some(format!("panic: {m}"))),
            Err(_) => Err(None),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Driver.
// ---------------------------------------------------------------------------------------------

fn describe(case: &Case) -> (&'static str, &str) {
    match case {
        Case::Dockerfile(s) => ("dockerfile", s),
        Case::Word(s) => ("word", s),
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn save_finding(case: &Case, tag: &str) -> PathBuf {
    let (kind, text) = describe(case);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-findings");
    let _ = fs::create_dir_all(&dir);
    let p = dir.join(format!("{tag}-{:016x}.{kind}", fnv(text)));
    let _ = fs::write(&p, text);
    p
}

fn show(text: &str) -> String {
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

#[test]
fn fuzz_parser_and_expander() {
    let seeds = load_seeds();
    println!(
        "fuzz seeds: {} Dockerfiles, {} words ({})",
        seeds.dockerfiles.len(),
        seeds.words.len(),
        seeds.origin
    );
    let long_secs: Option<u64> = std::env::var("RBUILD_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok());
    let replay: Option<(u64, u64)> = std::env::var("RBUILD_FUZZ_CASE").ok().and_then(|s| {
        let (a, b) = s.split_once(':')?;
        Some((parse_u64(a)?, b.parse().ok()?))
    });
    let seed = match (&replay, long_secs) {
        (Some((s, _)), _) => *s,
        (None, Some(_)) => std::env::var("RBUILD_FUZZ_SEED")
            .ok()
            .and_then(|s| parse_u64(&s))
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            }),
        (None, None) => QUICK_SEED,
    };
    let (max_cases, secs) = match (&replay, long_secs) {
        (Some(_), _) => (1, 3600),
        (None, Some(s)) => (u64::MAX, s),
        (None, None) => (QUICK_CASES, QUICK_SECS),
    };
    let mode = if replay.is_some() {
        "replay"
    } else if long_secs.is_some() {
        "long"
    } else {
        "quick"
    };
    println!("fuzz mode {mode}: seed {seed:#x}, up to {secs} s");
    let worker = Worker::spawn();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut last_report = start;
    let mut tried: u64 = 0;
    let (mut n_docker, mut n_word, mut n_bytes) = (0u64, 0u64, 0u64);
    let mut findings: BTreeMap<String, (String, PathBuf)> = BTreeMap::new();
    let first_index = replay.map(|(_, i)| i).unwrap_or(0);
    let mut index = first_index;
    while tried < max_cases && Instant::now() < deadline {
        let mut rng = Rng::for_case(seed, index);
        let case = Arc::new(generate(&mut rng, &seeds));
        if replay.is_some() {
            let (kind, text) = describe(&case);
            println!("case {seed:#x}:{index} ({kind}): {}", show(text));
        }
        match &*case {
            Case::Dockerfile(s) => {
                n_docker += 1;
                n_bytes += s.len() as u64;
            }
            Case::Word(s) => {
                n_word += 1;
                n_bytes += s.len() as u64;
            }
        }
        // The full lexer-option matrix on one word in four keeps the throughput up.
        let full = index & 3 == 0 || replay.is_some();
        tried += 1;
        match worker.run(case.clone(), full) {
            Ok(()) => {}
            Err(None) => {
                let (kind, text) = describe(&case);
                let p = save_finding(&case, "hang");
                panic!(
                    "HANG (> {TIME_LIMIT:?}) on case {seed:#x}:{index} ({kind}), saved to {}:\n{}",
                    p.display(),
                    show(text)
                );
            }
            Err(Some(msg)) => {
                let key = msg
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(160)
                    .collect::<String>();
                if let std::collections::btree_map::Entry::Vacant(slot) = findings.entry(key) {
                    let (kind, text) = describe(&case);
                    let p = save_finding(&case, "finding");
                    println!(
                        "FINDING on case {seed:#x}:{index} ({kind}): {msg}\n  input: {}\n  saved to {}",
                        show(text),
                        p.display()
                    );
                    slot.insert((msg, p));
                }
            }
        }
        index += 1;
        if long_secs.is_some() && last_report.elapsed() >= Duration::from_secs(30) {
            last_report = Instant::now();
            println!(
                "fuzz progress: {tried} inputs ({n_docker} Dockerfiles, {n_word} words), next case {seed:#x}:{index}, {} findings, {:.0} s",
                findings.len(),
                start.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "fuzz {mode}: {tried} inputs tried ({n_docker} Dockerfiles, {n_word} words, {} MiB) in {:.1} s, seed {seed:#x}, cases {first_index}..{index}, {} distinct findings",
        n_bytes / (1024 * 1024),
        start.elapsed().as_secs_f64(),
        findings.len()
    );
    println!(
        "fuzz checks: {} Dockerfiles parsed, {} rejected, {} instruction round trips; {} lexer runs expanded, {} rejected",
        PARSED_OK.load(Relaxed),
        PARSED_ERR.load(Relaxed),
        ROUND_TRIPS.load(Relaxed),
        WORDS_OK.load(Relaxed),
        WORDS_ERR.load(Relaxed)
    );
    assert!(
        findings.is_empty(),
        "{} distinct findings:\n{}",
        findings.len(),
        findings
            .values()
            .map(|(m, p)| format!("- {m}\n  ({})", p.display()))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Replays every input in `tests/regressions/` (`*.dockerfile`: parser checks, `*.word`: expander
/// checks with all lexer options) under the same panic and time checks as the fuzzer.
#[test]
fn regressions() {
    let files = regression_files();
    let worker = Worker::spawn();
    let mut failures = Vec::new();
    for (name, text) in &files {
        let case = if name.ends_with(".word") {
            Case::Word(text.clone())
        } else {
            Case::Dockerfile(text.clone())
        };
        match worker.run(Arc::new(case), true) {
            Ok(()) => {}
            Err(None) => panic!("regression {name}: HANG (> {TIME_LIMIT:?})"),
            Err(Some(m)) => failures.push(format!("{name}: {m}")),
        }
    }
    println!("fuzz regressions: {} files replayed", files.len());
    assert!(
        !files.is_empty(),
        "no regression files in {}",
        regressions_dir().display()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rng_is_deterministic() {
    let a: Vec<u64> = (0..4).map(|i| Rng::for_case(7, i).next()).collect();
    let b: Vec<u64> = (0..4).map(|i| Rng::for_case(7, i).next()).collect();
    assert_eq!(a, b);
    let mut r = Rng::new(1);
    assert!((0..1000).all(|_| r.below(10) < 10));
}

/// Fuzz finding: `ENV a=b <word>` error messages quoted the word with Rust's `{:?}`
/// (`\u{7f}`: 8 bytes per control byte); BuildKit prints it with Go's `%q` (`\x7f`).
#[test]
fn missing_equals_word_is_go_quoted() {
    let e = parse("FROM a\nENV a=b \u{7f}\u{7f}\"\n").expect_err("ENV a=b c must fail");
    assert_eq!(
        e.message,
        "Syntax error - can't find = in \"\\x7f\\x7f\\\"\". Must be of the form: name=value"
    );
}
