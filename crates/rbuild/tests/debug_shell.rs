//! `--debug-on-fail` through a real pseudo-terminal: a shell in the failed RUN's sandbox sees
//! the files the command wrote before failing, its environment, working directory and the same
//! restrictions as the RUN (capabilities, seccomp, hostname); leaving it ends the build with the
//! RUN's error. `--debug-on-fail=keep` keeps that state for `rbuild debug ID`, and `rbuild
//! prune` removes it.

use std::fs;
use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::*;

/// The failing step: records what the RUN itself sees, writes /marker, then fails.
const DOCKERFILE: &str = "ARG BASE\nFROM $BASE\nENV DEBUG_VAR=from-env\nWORKDIR /work\n\
RUN grep -E '^(CapEff|Seccomp)' /proc/self/status > /run-sees && hostname >> /run-sees && \
echo marker-content > /marker && exit 3\n";

/// What the shell is asked: the RUN's view and its own, separated so they can be compared.
const PROBE: &str =
    "cat /marker; echo \"env=$DEBUG_VAR pwd=$(pwd)\"; echo RUN-SEES; cat /run-sees; \
echo SHELL-SEES; grep -E '^(CapEff|Seccomp)' /proc/self/status; hostname; echo END-$((40+2))\n";

fn context() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("Dockerfile"), DOCKERFILE).unwrap();
    dir
}

/// A process on a fresh pseudo-terminal (as its stdin, stdout and stderr) and what it printed.
struct OnPty {
    child: std::process::Child,
    master: fs::File,
    output: Arc<Mutex<Vec<u8>>>,
}

impl OnPty {
    fn spawn(mut cmd: Command) -> OnPty {
        let size = nix::pty::Winsize {
            ws_row: 40,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        let child = cmd
            .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
            .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
            .stderr(Stdio::from(pty.slave))
            .spawn()
            .expect("spawn rbuild");
        drop(cmd);
        let master = fs::File::from(pty.master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, sink) = (master.try_clone().unwrap(), output.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once every holder of the slave side is gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        OnPty {
            child,
            master,
            output,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    fn type_text(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).unwrap();
    }

    /// Waits (up to two minutes) until the output contains `needle`.
    fn wait_for(&self, needle: &str) {
        let start = Instant::now();
        while !self.text().contains(needle) {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "no {needle:?} in:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait(mut self) -> (ExitStatus, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader drain what is left.
                std::thread::sleep(Duration::from_millis(200));
                return (status, self.text());
            }
            if start.elapsed() > Duration::from_secs(120) {
                let _ = self.child.kill();
                panic!("rbuild did not exit:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The probe's answers: (the shell's own view, the RUN's recorded view), checked to match.
fn assert_probe(text: &str) {
    assert!(text.contains("marker-content"), "{text}");
    assert!(text.contains("env=from-env pwd=/work"), "{text}");
    let answer = |from: &str, to: &str| -> Vec<String> {
        // The last occurrence: the first is the echoed command line.
        let start = text.rfind(from).expect(from) + from.len();
        let end = start + text[start..].find(to).expect(to);
        text[start..end]
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    };
    let run = answer("RUN-SEES", "SHELL-SEES");
    let shell = answer("SHELL-SEES", "END-42");
    assert!(run.len() >= 3, "{text}");
    assert_eq!(shell, run, "the shell has the RUN's privileges:\n{text}");
    assert!(run
        .iter()
        .any(|l| l.starts_with("Seccomp:") && l.ends_with('2')));
    assert!(run.iter().any(|l| l == "buildkitsandbox"));
}

#[test]
fn a_shell_opens_in_the_failed_step_and_exit_returns_its_error() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let ctx = context();
    let mut cmd = rbuild_at(root.path());
    cmd.args(["build", "--debug-on-fail"])
        .arg("--build-arg")
        .arg(format!("BASE={}", env.base))
        .arg(ctx.path());
    let mut pty = OnPty::spawn(cmd);
    pty.type_text(PROBE);
    pty.wait_for("END-42");
    pty.type_text("exit\n");
    let (status, text) = pty.wait();
    assert_probe(&text);
    assert_eq!(status.code(), Some(1), "{text}");
    // Leaving the shell ends the build with the RUN's own error, after the shell.
    let err = text
        .rfind("did not complete successfully: exit code: 3")
        .expect("the RUN's error");
    assert!(err > text.rfind("END-42").unwrap(), "{text}");
    // Nothing is kept in this mode.
    assert!(!root.path().join("debug-v1").exists());
}

#[test]
fn the_shell_flag_needs_a_terminal() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let ctx = context();
    let out = build(root.path(), ctx.path(), &env.base, &["--debug-on-fail"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_text(&out));
    assert!(
        stderr_text(&out).contains("--debug-on-fail needs a terminal on standard input"),
        "{}",
        stderr_text(&out)
    );
}

/// The kept state's ID, from the hint after the error.
fn kept_id(stderr: &str) -> String {
    let hint = "to enter it: rbuild debug ";
    let at = stderr
        .find(hint)
        .unwrap_or_else(|| panic!("no hint in:\n{stderr}"))
        + hint.len();
    stderr[at..].split_whitespace().next().unwrap().to_string()
}

#[test]
fn a_kept_failure_is_entered_later_and_pruned() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let ctx = context();
    let out = rbuild_at(root.path())
        .args(["build", "--progress=plain", "--debug-on-fail=keep"])
        .arg("--build-arg")
        .arg(format!("BASE={}", env.base))
        .arg(ctx.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr_text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("did not complete successfully: exit code: 3"),
        "{err}"
    );
    let id = kept_id(&err);
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(root.path().join(format!("debug-v1/{id}.json"))).unwrap())
            .unwrap();
    let snapshot = record["snapshot"].as_str().unwrap().to_string();
    let snapshot_dir = root.path().join("snapshots-v1/snapshots").join(&snapshot);
    assert!(snapshot_dir.exists(), "{}", snapshot_dir.display());

    // Entered twice, on a terminal: the state is as the RUN left it each time (the shell's own
    // changes are thrown away), and the shell's status is the command's.
    for round in 0..2 {
        let mut cmd = rbuild_at(root.path());
        cmd.args(["debug", &id]);
        let mut pty = OnPty::spawn(cmd);
        pty.type_text(PROBE);
        pty.wait_for("END-42");
        pty.type_text("test -e /scribble && echo SCRIBBLED; touch /scribble; exit 7\n");
        let (status, text) = pty.wait();
        assert_probe(&text);
        assert!(!text.contains("SCRIBBLED\r\n"), "round {round}:\n{text}");
        assert_eq!(status.code(), Some(7), "{text}");
    }

    // Entering is interactive: without a terminal rbuild says so.
    let out = rbuild_at(root.path())
        .args(["debug", &id])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_text(&out));
    assert!(stderr_text(&out).contains("rbuild debug needs a terminal on standard input"));

    // A collection after another build keeps it; prune removes it.
    let ok = tempfile::tempdir().unwrap();
    fs::write(
        ok.path().join("Dockerfile"),
        "ARG BASE\nFROM $BASE\nRUN echo ok > /ok\n",
    )
    .unwrap();
    assert_ok(&build(
        root.path(),
        ok.path(),
        &env.base,
        &["--gc-keep-storage", "1"],
    ));
    assert!(
        snapshot_dir.exists(),
        "collected by the automatic collection"
    );
    let out = rbuild_at(root.path())
        .args(["prune", "-f"])
        .output()
        .unwrap();
    assert_ok(&out);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("Deleted kept failed steps: 1\n"),
        "{printed}"
    );
    assert!(!snapshot_dir.exists());
    assert!(!root.path().join(format!("debug-v1/{id}.json")).exists());
    let out = rbuild_at(root.path())
        .args(["debug", &id])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_text(&out).contains(&format!("no failed step {id} is kept")),
        "{}",
        stderr_text(&out)
    );
}

#[test]
fn the_shell_runs_as_the_steps_user_with_its_cache_mount() {
    let Some(env) = env() else { return };
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM $BASE\nUSER nobody\n\
         RUN --mount=type=cache,target=/cache,uid=65534 echo cached > /cache/c && exit 5\n",
    )
    .unwrap();
    let probe = "echo \"uid=$(id -u)\"; cat /cache/c; echo END-$((40+2))\n";
    // In the build's own shell.
    let mut cmd = rbuild_at(root.path());
    cmd.args(["build", "--debug-on-fail", "--debug-shell", "/bin/sh -i"])
        .arg("--build-arg")
        .arg(format!("BASE={}", env.base))
        .arg(ctx.path());
    let mut pty = OnPty::spawn(cmd);
    pty.type_text(probe);
    pty.wait_for("END-42");
    pty.type_text("exit\n");
    let (status, text) = pty.wait();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("uid=65534"), "{text}");
    assert!(text.contains("\ncached"), "{text}");
    assert!(text.contains("exit code: 5"), "{text}");

    // And after keeping it.
    let out = rbuild_at(root.path())
        .args(["build", "--debug-on-fail=keep", "--no-cache"])
        .arg("--build-arg")
        .arg(format!("BASE={}", env.base))
        .arg(ctx.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_text(&out));
    let id = kept_id(&stderr_text(&out));
    let mut cmd = rbuild_at(root.path());
    cmd.args(["debug", &id]);
    let mut pty = OnPty::spawn(cmd);
    pty.type_text(probe);
    pty.wait_for("END-42");
    pty.type_text("exit\n");
    let (status, text) = pty.wait();
    assert!(status.success(), "{text}");
    assert!(text.contains("uid=65534"), "{text}");
    assert!(text.contains("\ncached"), "{text}");
}
