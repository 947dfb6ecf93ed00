//! Seed inputs of the parser fuzz test: a built-in set, BuildKit's parser and shell-lexer test
//! data and the conformance cases under `$RBUILD_SHARED` (default `<workspace>/../shared`), and the
//! regression corpus in `tests/regressions/`.

use std::fs;
use std::path::{Path, PathBuf};

/// Seeds used even without the shared corpus: one of each construct the parser knows.
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

/// Expander seeds used even without the shared corpus.
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

/// The seed inputs the strategies start from.
pub struct Seeds {
    /// Whole Dockerfiles.
    pub dockerfiles: Vec<String>,
    /// Shell words (and instruction lines) for the expander.
    pub words: Vec<String>,
    /// Where the seeds came from, for the log.
    pub origin: String,
}

fn shared_dir() -> PathBuf {
    match std::env::var_os("RBUILD_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
}

/// `tests/regressions/`: inputs that once failed, replayed by the `regressions` test.
pub fn regressions_dir() -> PathBuf {
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

/// Loads every seed (the shared corpus when present, else says so).
pub fn load_seeds() -> Seeds {
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

/// `(file name, text)` of every `*.dockerfile` and `*.word` in [`regressions_dir`], sorted.
pub fn regression_files() -> Vec<(String, String)> {
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
