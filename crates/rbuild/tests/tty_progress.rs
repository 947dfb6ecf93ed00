//! The tty progress view, seen through a real pseudo-terminal of a fixed size (60 columns, 40
//! rows): BuildKit's `[+] Building 1.2s (5/5) FINISHED` header, finished steps collapsed to one
//! line with their time (`CACHED` on a rebuild), a running step's output under it while it runs,
//! the base image's layer downloads (bytes) and extraction under its FROM,
//! lines cut to the terminal's width, the whole tree printed once at the end; and
//! `--progress=tty` refused without a terminal, as buildx refuses it.

use nix::pty::{openpty, Winsize};
use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

mod common;

use common::*;

const COLS: u16 = 60;
const ROWS: u16 = 40;

/// Runs `cmd` with stdin, stdout and stderr on a fresh pty of COLS x ROWS; its exit status and
/// everything it wrote.
fn run_on_pty(mut cmd: Command) -> (ExitStatus, String) {
    let size = Winsize {
        ws_row: ROWS,
        ws_col: COLS,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = openpty(Some(&size), None).expect("openpty");
    for fd in 0..3 {
        let io = Stdio::from(pty.slave.try_clone().expect("dup pty slave"));
        match fd {
            0 => cmd.stdin(io),
            1 => cmd.stdout(io),
            _ => cmd.stderr(io),
        };
    }
    let mut child = cmd.spawn().expect("spawn rbuild on the pty");
    // Only the child holds the slave now, so reading the master ends when it exits.
    drop(cmd);
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        // EIO once the last slave descriptor is closed.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    });
    let status = child.wait().expect("wait for rbuild");
    let out = reader.join().expect("pty reader");
    (status, String::from_utf8_lossy(&out).into_owned())
}

/// `text` without ANSI escape sequences and carriage returns.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // Parameters, then one final byte in @..~.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// The final tree: the lines from the last `[+] Building` header on.
fn final_tree(text: &str) -> Vec<String> {
    let plain = strip_ansi(text);
    let start = plain.rfind("[+] Building").expect("a [+] Building header");
    // The tree ends where the build checks' list (` N warnings found`, printed after the
    // progress at full width, as buildx's) starts.
    plain[start..]
        .lines()
        .take_while(|l| !(l.starts_with(' ') && l.contains(" found")))
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// The `(done/total)` of a header line `[+] Building 1.2s (5/5)...`.
fn header_counts(header: &str) -> (usize, usize) {
    let inner = header
        .split_once('(')
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(c, _)| c)
        .unwrap_or_else(|| panic!("no counts in {header:?}"));
    let (done, total) = inner.split_once('/').expect("done/total");
    (done.parse().unwrap(), total.parse().unwrap())
}

/// True when `line` ends with a BuildKit timer (`1.2s`) at the right edge.
fn ends_with_timer(line: &str) -> bool {
    let Some(t) = line.rsplit(' ').next().and_then(|t| t.strip_suffix('s')) else {
        return false;
    };
    t.split_once('.')
        .is_some_and(|(a, b)| a.parse::<u64>().is_ok() && b.len() == 1 && b.parse::<u8>().is_ok())
}

fn context(dir: &Path) {
    let long = "x".repeat(90);
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "ARG BASE\nFROM $BASE\nRUN echo tty-step-output && sleep 2\n\
             RUN echo {long} > /long && cat /long\nCOPY f /f\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("f"), "f\n").unwrap();
}

fn tty_build(root: &Path, ctx: &Path, base: &str, progress: &str) -> (ExitStatus, String) {
    tty_build_with(root, ctx, base, &[progress, "-t", "tty/view:1"])
}

fn tty_build_with(root: &Path, ctx: &Path, base: &str, args: &[&str]) -> (ExitStatus, String) {
    let mut cmd = rbuild_at(root);
    cmd.arg("build")
        .args(args)
        .arg("--build-arg")
        .arg(format!("BASE={base}"))
        .arg(ctx)
        .env("TERM", "xterm")
        .env_remove("BUILDKIT_PROGRESS");
    run_on_pty(cmd)
}

#[test]
fn tty_view_collapses_finished_steps_cuts_lines_and_prints_the_final_tree() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    context(ctx.path());

    let (status, text) = tty_build(root.path(), ctx.path(), &env.base, "--progress=tty");
    assert!(status.success(), "rbuild failed ({status:?}):\n{text}");
    if std::env::var_os("TTY_PROGRESS_SHOW").is_some() {
        eprintln!("{text}");
    }
    let plain = strip_ansi(&text);
    // While the first RUN sleeps, a live frame shows its output under it.
    assert!(
        plain.contains(" => => # tty-step-output"),
        "no live output tail in:\n{plain}"
    );

    let tree = final_tree(&text);
    let header = &tree[0];
    assert!(
        header.starts_with("[+] Building ") && header.ends_with(" FINISHED"),
        "header: {header:?}\n{}",
        tree.join("\n")
    );
    let (done, total) = header_counts(header);
    assert_eq!(done, total, "every vertex finished: {header}");
    assert!(total >= 4, "FROM, two RUNs and a COPY at least: {header}");
    for line in &tree {
        assert!(
            console_width(line) <= COLS as usize,
            "line wider than the terminal ({} > {COLS}): {line:?}",
            console_width(line)
        );
    }
    // Finished steps collapse to one line each, with the timer at the right edge, and their
    // output is gone.
    let run1: Vec<&String> = tree
        .iter()
        .filter(|l| l.contains("RUN echo tty-step-output"))
        .collect();
    assert_eq!(run1.len(), 1, "{}", tree.join("\n"));
    assert!(run1[0].starts_with(" => "), "{:?}", run1[0]);
    assert!(ends_with_timer(run1[0]), "{:?}", run1[0]);
    assert!(
        !tree.iter().any(|l| l.contains("# tty-step-output")),
        "a finished step's output stays collapsed:\n{}",
        tree.join("\n")
    );
    // The long RUN line is cut to the width (one column short, as BuildKit's), its timer kept.
    let long = tree
        .iter()
        .find(|l| l.contains("RUN echo xxxx"))
        .unwrap_or_else(|| panic!("no long RUN line:\n{}", tree.join("\n")));
    assert_eq!(console_width(long), COLS as usize - 1, "{long:?}");
    assert!(
        long.contains("xxxx  "),
        "two spaces before the timer: {long:?}"
    );
    assert!(ends_with_timer(long), "{long:?}");
    // The base image's layer download, under its FROM, with its bytes.
    let from = tree
        .iter()
        .position(|l| l.contains(" FROM "))
        .unwrap_or_else(|| panic!("no FROM line:\n{}", tree.join("\n")));
    let pulled = &tree[from + 1];
    assert!(
        pulled.starts_with(" => => sha256:") && pulled.contains("B / ") && ends_with_timer(pulled),
        "no layer download under FROM:\n{}",
        tree.join("\n")
    );
    assert!(
        tree[from + 1..]
            .iter()
            .take_while(|l| l.starts_with(" => => "))
            .any(|l| l.starts_with(" => => extracting sha256:") && ends_with_timer(l)),
        "no layer extraction under FROM:\n{}",
        tree.join("\n")
    );
    // The export, as BuildKit's `exporting to image` vertex with its sub-steps, once.
    assert!(
        tree.iter()
            .filter(|l| l.starts_with(" => exporting to image"))
            .count()
            == 1,
        "{}",
        tree.join("\n")
    );
    assert!(
        tree.iter().any(|l| l.starts_with(" => => naming to ")),
        "{}",
        tree.join("\n")
    );
    // The tree is printed once, after the last live frame.
    assert_eq!(
        plain.matches(" FINISHED").count(),
        1,
        "the final tree is printed once:\n{plain}"
    );

    // A rebuild (`auto` picks the tty view on a terminal): the steps it reports are CACHED
    // (the solver reports the cached targets; earlier cached steps are not visited).
    let (status, text) = tty_build(root.path(), ctx.path(), &env.base, "--progress=auto");
    assert!(status.success(), "rbuild failed ({status:?}):\n{text}");
    let tree = final_tree(&text);
    assert!(tree[0].ends_with(" FINISHED"), "{}", tree.join("\n"));
    let step = "COPY f /f";
    let line = tree
        .iter()
        .find(|l| l.contains(step))
        .unwrap_or_else(|| panic!("no `{step}` line:\n{}", tree.join("\n")));
    assert!(line.starts_with(" => CACHED "), "{line:?}");
    assert!(ends_with_timer(line), "{line:?}");
}

#[test]
fn a_failed_step_keeps_its_output_in_the_final_tree() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM $BASE\nRUN echo before-failing && exit 3\n",
    )
    .unwrap();
    let (status, text) = tty_build(root.path(), ctx.path(), &env.base, "--progress=tty");
    assert!(!status.success(), "the build should fail:\n{text}");
    let tree = final_tree(&text);
    assert!(
        !tree[0].contains("FINISHED"),
        "a failed build is not FINISHED: {}",
        tree[0]
    );
    let failed = tree
        .iter()
        .position(|l| l.starts_with(" => ERROR ") && l.contains("RUN echo before-failing"))
        .unwrap_or_else(|| panic!("no ERROR line:\n{}", tree.join("\n")));
    assert!(
        tree[failed + 1..]
            .iter()
            .any(|l| l.starts_with(" => => # before-failing")),
        "{}",
        tree.join("\n")
    );
}

#[test]
fn a_push_shows_its_layers_bytes() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM $BASE\nRUN head -c 300000 /dev/urandom > /blob\n",
    )
    .unwrap();
    let name = format!("{}/tty/pushed:1", env.registry.addr());
    let (status, text) = tty_build_with(
        root.path(),
        ctx.path(),
        &env.base,
        &["--progress=tty", "--push", "-t", &name],
    );
    assert!(status.success(), "rbuild failed ({status:?}):\n{text}");
    let tree = final_tree(&text);
    if std::env::var_os("TTY_PROGRESS_SHOW").is_some() {
        eprintln!("{}", tree.join("\n"));
    }
    let push = tree
        .iter()
        .position(|l| l.starts_with(" => pushing layers"))
        .unwrap_or_else(|| panic!("no push vertex:\n{}", tree.join("\n")));
    assert!(ends_with_timer(&tree[push]), "{:?}", tree[push]);
    let blobs: Vec<&String> = tree[push + 1..]
        .iter()
        .take_while(|l| l.starts_with(" => => "))
        .filter(|l| l.starts_with(" => => sha256:"))
        .collect();
    assert!(!blobs.is_empty(), "no blob lines:\n{}", tree.join("\n"));
    for b in blobs {
        let (done, total) = b
            .trim_start_matches(" => => sha256:")
            .split_once(" / ")
            .map(|(d, t)| {
                (
                    d.split(' ').nth(1).unwrap_or_default(),
                    t.split(' ').next().unwrap_or_default(),
                )
            })
            .unwrap_or_else(|| panic!("no bytes in {b:?}"));
        assert_eq!(done, total, "an uploaded blob is complete: {b:?}");
    }
}

#[test]
fn progress_tty_without_a_terminal_is_refused_before_the_build() {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    // A Dockerfile that would fail at once if the build started.
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nRUN false\n").unwrap();
    let out = rbuild_at(root.path())
        .args(["build", "--progress=tty"])
        .arg(ctx.path())
        .env_remove("BUILDKIT_PROGRESS")
        .stdin(Stdio::null())
        .output()
        .expect("run rbuild");
    let err = stderr_text(&out);
    assert!(!out.status.success(), "{err}");
    assert_eq!(
        err.trim_end(),
        "ERROR: failed to get console: provided file is not a console"
    );

    // `auto` on a pipe is plain.
    if env().is_none() {
        return;
    }
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nCOPY f /f\n").unwrap();
    std::fs::write(ctx.path().join("f"), "f\n").unwrap();
    let out = rbuild_at(root.path())
        .args(["build", "--progress=auto"])
        .arg(ctx.path())
        .env_remove("BUILDKIT_PROGRESS")
        .stdin(Stdio::null())
        .output()
        .expect("run rbuild");
    let err = stderr_text(&out);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("[+] Building"), "{err}");
    assert!(err.lines().any(|l| l.starts_with("#1 ")), "{err}");
}

/// Display columns of a line (one per char: the tests' text is ASCII, plus the `=>` arrows).
fn console_width(line: &str) -> usize {
    line.chars().count()
}
