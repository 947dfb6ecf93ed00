//! The properties checked for every input: no panic, deterministic parsing, spans inside the
//! source on character boundaries, errors that render with 1-based positions, bounded output,
//! line-ending independence, and round trips (instruction text re-parsed, single-quoted words
//! expanded).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

use rbuild_frontend::{dump, parse, Args, Instruction, Lexer};

/// Longest environment value the expander sees (bounds its output).
const MAX_ENV_VALUE: usize = 16;

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

/// Checks one word with the `\\` and `` ` `` lexers (`full`: every lexer option).
pub fn check_word(word: &str, full: bool) -> Result<(), String> {
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
pub static PARSED_OK: AtomicU64 = AtomicU64::new(0);
pub static PARSED_ERR: AtomicU64 = AtomicU64::new(0);
pub static ROUND_TRIPS: AtomicU64 = AtomicU64::new(0);
pub static WORDS_OK: AtomicU64 = AtomicU64::new(0);
pub static WORDS_ERR: AtomicU64 = AtomicU64::new(0);

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

/// Checks one Dockerfile: parse, spans, dump, errors, line endings, round trips.
pub fn check_dockerfile(src: &str) -> Result<(), String> {
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
