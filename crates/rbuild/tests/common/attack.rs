//! Helpers of the sandbox attack suites (`sandbox_attacks.rs`, `sandbox_network.rs`): the static
//! probe (testdata/attack/probe.c), contexts that carry it, and running the real rbuild binary
//! with plain progress against the shared busybox registry, as root or (a [`Mode`]) as the
//! rootless test user of `common::rootless`.

use super::{env, rbuild_at, rootless, testdata};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The static probe (testdata/attack/probe.c), compiled once per test binary.
pub fn probe() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rbuild-attack-probe-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("probe dir");
        let out = dir.join("probe");
        let st = Command::new("gcc")
            .args(["-static", "-O1", "-o"])
            .arg(&out)
            .arg(testdata("attack/probe.c"))
            .status()
            .expect("run gcc (the attack suite compiles a static probe)");
        assert!(st.success(), "gcc -static failed for the attack probe");
        out
    })
}

/// A build context with `Dockerfile` and the probe.
pub fn context(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    fs::copy(probe(), dir.path().join("probe")).unwrap();
    dir
}

/// `rbuild --root ROOT build --progress=plain --build-arg BASE=.. EXTRA.. CONTEXT`.
pub fn rbuild(root: &Path, ctx: &Path, extra: &[&str]) -> Command {
    let env = env().expect("env");
    let mut cmd = rbuild_at(root);
    cmd.args(["build", "--progress=plain", "--build-arg"])
        .arg(format!("BASE={}", env.base))
        .args(extra)
        .arg(ctx);
    cmd
}

/// rbuild's stdout and stderr as one text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Builds `ctx` in a fresh root; fails the test unless the build succeeds; returns its text.
pub fn build_ok(ctx: &Path, extra: &[&str]) -> String {
    let root = tempfile::tempdir().unwrap();
    let out = rbuild(root.path(), ctx, extra).output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "build failed:\n{t}");
    t
}

/// Whether the build's text contains `what`.
pub fn has(t: &str, what: &str) -> bool {
    t.contains(what)
}

/// The start of a Dockerfile that runs the probe: the busybox base plus `/probe`.
pub const PROBE_DOCKERFILE: &str = "ARG BASE\nFROM $BASE\nCOPY probe /probe\n";

/// Who runs rbuild in an attack: root, or the rootless test user (`common::rootless`), so one
/// attack body runs in both modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// rbuild run by root (the shared registry's env).
    Root,
    /// rbuild run by [`rootless::USER`] through `setpriv`.
    Rootless,
}

impl Mode {
    /// Whether this mode can run here; false after a printed skip (not root, or no uidmap).
    pub fn ready(self) -> bool {
        match self {
            Mode::Root => env().is_some(),
            Mode::Rootless => env().is_some() && rootless::setup().is_some(),
        }
    }

    /// Hands a directory the test made to the user the build runs as (rootless: the test user;
    /// root: nothing to do). `recursive` also gives its contents (a context; never a state root,
    /// whose snapshots belong to the user's subordinate ids).
    pub fn own(self, dir: &Path, recursive: bool) {
        if self == Mode::Root {
            return;
        }
        if recursive {
            rootless::chown_tree(rootless::USER, dir);
        } else {
            let (uid, gid) = (
                rootless::id_of(rootless::USER, "-u"),
                rootless::id_of(rootless::USER, "-g"),
            );
            std::os::unix::fs::chown(dir, Some(uid), Some(gid)).expect("chown");
        }
    }

    /// `rbuild --root ROOT build --progress=plain --build-arg BASE=.. EXTRA.. CONTEXT` in this
    /// mode (rootless: ROOT and CONTEXT are given to the test user first; ROOT is its HOME).
    pub fn rbuild(self, root: &Path, ctx: &Path, extra: &[&str]) -> Command {
        let Mode::Rootless = self else {
            return rbuild(root, ctx, extra);
        };
        let setup = rootless::setup().expect("rootless setup");
        self.own(root, false);
        self.own(ctx, true);
        let base = format!("BASE={}", setup.base);
        let (root_s, ctx_s) = (root.to_string_lossy(), ctx.to_string_lossy());
        let mut args = vec![
            "--root",
            &root_s,
            "build",
            "--progress=plain",
            "--build-arg",
            &base,
        ];
        // Rootless, the default RUN network needs /dev/net/tun open to the user; where the host
        // keeps it 0600 (the documented rootless error, see rootless.rs) the attacks, which
        // never need a network, run with --network=none.
        if !rootless_tun_usable() {
            args.push("--network=none");
        }
        args.extend_from_slice(extra);
        args.push(&ctx_s);
        rootless::rbuild_as_cmd(setup, rootless::USER, root, &args)
    }

    /// Builds `ctx` in a fresh root in this mode; fails the test unless the build succeeds;
    /// returns its text.
    pub fn build_ok(self, ctx: &Path, extra: &[&str]) -> String {
        let root = tempfile::tempdir().unwrap();
        let out = self.rbuild(root.path(), ctx, extra).output().unwrap();
        let t = text(&out);
        assert!(out.status.success(), "{self:?} build failed:\n{t}");
        t
    }
}

/// Whether the rootless test user can open /dev/net/tun (the default network's tap device).
fn rootless_tun_usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        let out = Command::new("setpriv")
            .args(["--reuid", rootless::USER, "--regid", rootless::USER])
            .args(["--init-groups", "--", "sh", "-c"])
            .arg("test -r /dev/net/tun -a -w /dev/net/tun")
            .output()
            .expect("run setpriv");
        out.status.success()
    })
}

/// Runs an attack body `fn NAME(mode: Mode)` as two tests, `NAME::root` and `NAME::rootless`.
#[macro_export]
macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn root() {
                    if $crate::common::attack::Mode::Root.ready() {
                        super::$name($crate::common::attack::Mode::Root);
                    }
                }
                #[test]
                fn rootless() {
                    if $crate::common::attack::Mode::Rootless.ready() {
                        super::$name($crate::common::attack::Mode::Rootless);
                    }
                }
            }
        )*
    };
}
