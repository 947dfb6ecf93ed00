//! Fuzz / property test for the Dockerfile parser ([`rbuild_frontend::parse`], `dump`) and the
//! shell-word expander (`Lexer::process_word` / `process_words`, escape `\` and `` ` ``), with
//! `proptest`.
//!
//! Inputs come from the strategies in `fuzz/strategy.rs`: seeds (BuildKit's parser and
//! shell-lexer test data and the conformance cases in `$RBUILD_SHARED`, default
//! `<workspace>/../shared`; a built-in set, used alone and announced when that is missing; the
//! files in `tests/regressions/`) or Dockerfiles built from keywords and tokens, run through
//! structured mutations. The properties (`fuzz/checks.rs`), checked on a worker thread under
//! `catch_unwind` and a per-input time limit:
//! - no panic, no hang (more than [`TIME_LIMIT`] for one input), inputs capped in size and
//!   outputs not absurdly larger than the input;
//! - parse: deterministic; spans inside the source on character boundaries; `dump` of every
//!   instruction works; errors render with 1-based positions; every expanding instruction's
//!   words go through the lexer; CRLF line endings or an extra final newline change nothing;
//! - round trip (parser): the `original` text of every instruction without heredocs, re-parsed
//!   under the same escape directive, dumps the same;
//! - round trip (expander): any string single-quoted for the lexer expands back to itself.
//!
//! Modes:
//! - default (inside `cargo test`): a fixed seed and [`QUICK_CASES`] inputs
//!   (`RBUILD_FUZZ_CASES=N` changes the count);
//! - `RBUILD_FUZZ_SECS=600`: batches of [`LONG_BATCH`] inputs with fresh seeds (base from
//!   `RBUILD_FUZZ_SEED` or the clock, printed) until that many seconds have passed;
//!   `RBUILD_FUZZ_SEED=S RBUILD_FUZZ_CASES=N` alone replays the first batch of a seed;
//! - `RBUILD_FUZZ_TRACE=1`: writes each input to `fuzz-findings/last.<kind>` before checking it,
//!   to pin down a crash that kills the process (a stack overflow).
//!
//! A failure is shrunk by proptest, printed and written to `$CARGO_TARGET_TMPDIR/fuzz-findings/`;
//! copy it to `tests/regressions/` (`*.dockerfile` for parser inputs, `*.word` for expander
//! inputs), where the `regressions` test replays it.

mod fuzz;

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use rbuild_frontend::parse;

use fuzz::checks::{self, check_dockerfile, check_word};
use fuzz::seeds::{load_seeds, regression_files, regressions_dir};
use fuzz::strategy::{self, Case};

/// Per-input time limit.
const TIME_LIMIT: Duration = Duration::from_secs(2);
/// Inputs of the default (quick) run.
const QUICK_CASES: u32 = 4_000;
/// Inputs per seed in the long mode.
const LONG_BATCH: u32 = 20_000;
/// Fixed seed of the default run.
const QUICK_SEED: u64 = 0x5eed_d0c4_e2f1_1e00;
/// Stack of the worker thread (as small as a tokio worker's, so deep recursion shows up).
const WORKER_STACK: usize = 2 * 1024 * 1024;

fn check_case(case: &Case) -> Result<(), String> {
    match case {
        Case::Dockerfile(s) => check_dockerfile(s),
        Case::Word { word, full } => check_word(word, *full),
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
    tx: mpsc::Sender<Arc<Case>>,
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
        let (tx, job_rx) = mpsc::channel::<Arc<Case>>();
        let (out_tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("fuzz-worker".into())
            .stack_size(WORKER_STACK)
            .spawn(move || {
                for case in job_rx {
                    let r = panic::catch_unwind(AssertUnwindSafe(|| check_case(&case)));
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
    fn run(&self, case: Arc<Case>) -> Result<(), Option<String>> {
        self.tx
            .send(case)
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

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn findings_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-findings")
}

fn save_finding(case: &Case, tag: &str) -> PathBuf {
    let (kind, text) = case.describe();
    let dir = findings_dir();
    let _ = fs::create_dir_all(&dir);
    let p = dir.join(format!("{tag}-{:016x}.{kind}", fnv(text)));
    let _ = fs::write(&p, text);
    p
}

fn env_u64(name: &str) -> Option<u64> {
    let s = std::env::var(name).ok()?;
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// A proptest RNG for `seed` (ChaCha, so runs are reproducible across platforms).
fn rng_for(seed: u64) -> TestRng {
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(
            &(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes(),
        );
    }
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

/// Runs `cases` inputs from `seed`; on a failure returns the shrunk input and the message.
fn run_batch(
    seeds: &fuzz::seeds::Seeds,
    worker: &Worker,
    seed: u64,
    cases: u32,
    trace: bool,
) -> Result<u64, (Case, String)> {
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(config, rng_for(seed));
    let tried = std::sync::atomic::AtomicU64::new(0);
    let result = runner.run(&strategy::case(seeds), |case| {
        tried.fetch_add(1, Relaxed);
        if trace {
            let (kind, text) = case.describe();
            let _ = fs::create_dir_all(findings_dir());
            let _ = fs::write(findings_dir().join(format!("last.{kind}")), text);
        }
        match worker.run(Arc::new(case.clone())) {
            Ok(()) => Ok(()),
            Err(Some(msg)) => Err(TestCaseError::fail(msg)),
            Err(None) => {
                // The worker is stuck: report this input and stop (shrinking cannot go on).
                let p = save_finding(&case, "hang");
                eprintln!(
                    "HANG (> {TIME_LIMIT:?}) with seed {seed:#x}, saved to {}:\n{case:?}",
                    p.display()
                );
                std::process::exit(101);
            }
        }
    });
    match result {
        Ok(()) => Ok(tried.load(Relaxed)),
        Err(TestError::Fail(reason, case)) => Err((case, reason.to_string())),
        Err(TestError::Abort(reason)) => Err((
            Case::Dockerfile(String::new()),
            format!("proptest aborted: {reason}"),
        )),
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
    let long_secs = env_u64("RBUILD_FUZZ_SECS");
    let trace = std::env::var("RBUILD_FUZZ_TRACE").as_deref() == Ok("1");
    let base = env_u64("RBUILD_FUZZ_SEED").unwrap_or_else(|| match long_secs {
        Some(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        None => QUICK_SEED,
    });
    let default_cases = if long_secs.is_some() {
        LONG_BATCH
    } else {
        QUICK_CASES
    };
    let cases = env_u64("RBUILD_FUZZ_CASES").map_or(default_cases, |n| n as u32);
    let mode = if long_secs.is_some() { "long" } else { "quick" };
    println!("fuzz mode {mode}: seed {base:#x}, {cases} inputs per seed");
    let worker = Worker::spawn();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(long_secs.unwrap_or(0));
    let mut tried = 0;
    let mut seed = base;
    loop {
        match run_batch(&seeds, &worker, seed, cases, trace) {
            Ok(n) => tried += n,
            Err((case, msg)) => {
                let p = save_finding(&case, "finding");
                panic!(
                    "FINDING with seed {seed:#x} (shrunk): {msg}\n  input: {case:?}\n  saved to {}",
                    p.display()
                );
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        println!(
            "fuzz progress: {tried} inputs, seed {seed:#x} done, {:.0} s",
            start.elapsed().as_secs_f64()
        );
        seed = seed.wrapping_add(1);
    }
    println!(
        "fuzz {mode}: {tried} inputs in {:.1} s, seeds {base:#x}..={seed:#x}, no findings",
        start.elapsed().as_secs_f64()
    );
    println!(
        "fuzz checks: {} Dockerfiles parsed, {} rejected, {} instruction round trips; {} lexer runs expanded, {} rejected",
        checks::PARSED_OK.load(Relaxed),
        checks::PARSED_ERR.load(Relaxed),
        checks::ROUND_TRIPS.load(Relaxed),
        checks::WORDS_OK.load(Relaxed),
        checks::WORDS_ERR.load(Relaxed)
    );
    // The strategies must reach both outcomes of the parser and the round trip, or the
    // properties above check little.
    assert!(checks::PARSED_OK.load(Relaxed) > 0 && checks::PARSED_ERR.load(Relaxed) > 0);
    assert!(checks::ROUND_TRIPS.load(Relaxed) > 0 && checks::WORDS_OK.load(Relaxed) > 0);
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
            Case::Word {
                word: text.clone(),
                full: true,
            }
        } else {
            Case::Dockerfile(text.clone())
        };
        match worker.run(Arc::new(case)) {
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
