//! Rootless test harness shared by the `rootless*.rs` suites and the attack suites' rootless
//! mode: the test users (created with `useradd`, a subordinate id range in `/etc/subuid` and
//! `/etc/subgid`), a copy of the binary they can execute, scratch directories they own, running
//! the real rbuild as one of them through `setpriv`, and reading owners back out of an image.
//!
//! Needs root (to create the users) and `newuidmap`/`newgidmap` (Debian's `uidmap`): [`setup`]
//! skips loudly without them, unless `RBUILD_REQUIRE_ROOT=1` or `CI` is set, which fails instead.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The test user with a subordinate id range.
pub const USER: &str = "rbuild-rootless";
/// The test user without one.
pub const USER_NO_RANGE: &str = "rbuild-nosubid";
/// The range given to [`USER`] when it has none.
pub const RANGE: &str = "300000-365535";

/// Runs `cmd` and fails with its output unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `id FLAG USER` as a number (`-u` uid, `-g` gid).
pub fn id_of(user: &str, flag: &str) -> u32 {
    let out = run(Command::new("id").args([flag, user]));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("numeric id")
}

/// Creates `user` if missing (`-K SUB_UID_COUNT=0` keeps useradd from assigning a range).
/// Several test binaries may race here: a useradd that loses finds the user made.
fn ensure_user(user: &str, with_range: bool) {
    let exists = || {
        Command::new("id")
            .arg(user)
            .output()
            .expect("id")
            .status
            .success()
    };
    if !exists() {
        let out = Command::new("useradd")
            .args([
                "--no-create-home",
                "--shell",
                "/bin/sh",
                "-K",
                "SUB_UID_COUNT=0",
                "-K",
                "SUB_GID_COUNT=0",
                user,
            ])
            .output()
            .expect("useradd");
        assert!(
            out.status.success() || exists(),
            "useradd {user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let listed = |file: &str| {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with(&format!("{user}:")))
    };
    if with_range && !(listed("/etc/subuid") && listed("/etc/subgid")) {
        run(Command::new("usermod").args(["--add-subuids", RANGE, "--add-subgids", RANGE, user]));
    }
    if !with_range {
        assert!(
            !listed("/etc/subuid"),
            "{user} must have no /etc/subuid range for this test"
        );
    }
}

/// The shared setup of one test binary.
pub struct Setup {
    /// The rbuild binary the test users can execute.
    pub rbuild: PathBuf,
    /// `ADDR/busybox:latest` (the shared test registry of [`super::env`]).
    pub base: String,
}

/// The users and the binary; None (after a loud skip) without root or without the map helpers.
pub fn setup() -> Option<&'static Setup> {
    static SETUP: OnceLock<Option<Setup>> = OnceLock::new();
    SETUP
        .get_or_init(|| {
            let env = super::env()?;
            if !Path::new("/usr/bin/newuidmap").exists()
                || !Path::new("/usr/bin/newgidmap").exists()
            {
                assert!(
                    std::env::var("RBUILD_REQUIRE_ROOT").as_deref() != Ok("1")
                        && std::env::var("CI").is_err(),
                    "newuidmap/newgidmap missing (apt-get install uidmap) and \
                     RBUILD_REQUIRE_ROOT=1/CI forbids skipping the rootless tests"
                );
                println!("SKIPPED: newuidmap/newgidmap not installed (apt-get install uidmap)");
                eprintln!("SKIPPED: newuidmap/newgidmap not installed (apt-get install uidmap)");
                return None;
            }
            ensure_user(USER, true);
            ensure_user(USER_NO_RANGE, false);
            let rbuild = user_executable_rbuild();
            Some(Setup {
                rbuild,
                base: env.base.clone(),
            })
        })
        .as_ref()
}

/// A copy of the rbuild binary under test that every user may execute (the build tree may sit
/// below directories a test user cannot enter). One copy per build of the binary, shared by all
/// test binaries and runs (`/tmp/rbuild-rootless-bin/rbuild-SIZE-MTIME`, replaced atomically),
/// so runs leave no copies behind.
pub fn user_executable_rbuild() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let dir = Path::new("/tmp/rbuild-rootless-bin");
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => panic!("mkdir {}: {e}", dir.display()),
    }
    let meta = std::fs::symlink_metadata(dir).expect("stat the binary dir");
    assert!(
        meta.is_dir() && meta.uid() == 0,
        "{} is not a directory owned by root",
        dir.display()
    );
    open_to_all(dir);
    let src = std::fs::metadata(super::RBUILD).expect("stat rbuild");
    let name = format!("rbuild-{}-{}.{}", src.size(), src.mtime(), src.mtime_nsec());
    let dest = dir.join(&name);
    if std::fs::metadata(&dest).map(|m| m.size()).ok() != Some(src.size()) {
        let tmp = dir.join(format!(".tmp-{}-{name}", std::process::id()));
        std::fs::copy(super::RBUILD, &tmp).expect("copy rbuild");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::rename(&tmp, &dest).expect("rename the rbuild copy");
    }
    // Copies of earlier builds of the binary are not needed any more.
    for entry in std::fs::read_dir(dir)
        .expect("read the binary dir")
        .flatten()
    {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if file.starts_with("rbuild-") && file != name {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    dest
}

/// Makes `dir` enterable and readable by every user (mode 0755).
pub fn open_to_all(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
}

/// Gives `path` and everything below it (symlinks themselves, never their targets) to `user`.
pub fn chown_tree(user: &str, path: &Path) {
    run(Command::new("chown")
        .args(["-R", "-P", &format!("{user}:")])
        .arg(path));
}

/// A home directory owned by `user` (the test's scratch: context, outputs, state).
pub fn home_of(user: &str) -> tempfile::TempDir {
    let home = tempfile::Builder::new()
        .prefix("rbuild-rootless-home")
        .tempdir()
        .expect("tempdir");
    std::os::unix::fs::chown(
        home.path(),
        Some(id_of(user, "-u")),
        Some(id_of(user, "-g")),
    )
    .expect("chown home");
    home
}

/// Writes `rel` under `home` as `user` would own it.
pub fn write_as(user: &str, home: &Path, rel: &str, text: &str) {
    let path = home.join(rel);
    let parent = path.parent().expect("parent");
    std::fs::create_dir_all(parent).expect("mkdir");
    std::fs::write(&path, text).expect("write");
    for p in [parent, path.as_path()] {
        std::os::unix::fs::chown(p, Some(id_of(user, "-u")), Some(id_of(user, "-g")))
            .expect("chown");
    }
}

/// The command `rbuild ARGS` as `user` (setpriv: the user's uid, gid and groups; a clean
/// environment with HOME, XDG_DATA_HOME and DOCKER_CONFIG under `home`), not yet run; a test of
/// credentials sets its own `DOCKER_CONFIG` on it, which wins.
pub fn rbuild_as_cmd(setup: &Setup, user: &str, home: &Path, args: &[&str]) -> Command {
    let uid = id_of(user, "-u").to_string();
    let gid = id_of(user, "-g").to_string();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", &uid, "--regid", &gid, "--init-groups", "--"])
        .arg(&setup.rbuild)
        .args(args)
        .current_dir(home)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("xdg"))
        .env(
            "DOCKER_CONFIG",
            rbuild_testsupport::isolated_docker_config(home),
        );
    cmd
}

/// `rbuild ARGS` as `user`, run (see [`rbuild_as_cmd`]).
pub fn rbuild_as(setup: &Setup, user: &str, home: &Path, args: &[&str]) -> Output {
    rbuild_as_cmd(setup, user, home, args)
        .output()
        .expect("run rbuild as the test user")
}

/// stdout and stderr as one text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every layer of an OCI archive: (path, uid, gid) of each entry, and `/uid`'s content.
pub fn layer_entries(archive: &Path) -> (Vec<(String, u64, u64)>, Option<String>) {
    let mut outer = tar::Archive::new(std::fs::File::open(archive).expect("open oci archive"));
    let mut entries = Vec::new();
    let mut uid_file = None;
    for blob in outer.entries().expect("entries") {
        let mut blob = blob.expect("entry");
        let mut data = Vec::new();
        blob.read_to_end(&mut data).expect("read blob");
        if data.len() < 2 || data[..2] != [0x1f, 0x8b] {
            continue; // json blobs
        }
        let mut layer = tar::Archive::new(flate2::read::GzDecoder::new(&data[..]));
        for e in layer.entries().expect("layer entries") {
            let mut e = e.expect("layer entry");
            let path = e.path().expect("path").to_string_lossy().into_owned();
            let header = e.header();
            let (uid, gid) = (header.uid().expect("uid"), header.gid().expect("gid"));
            if path == "uid" {
                let mut s = String::new();
                e.read_to_string(&mut s).expect("read /uid");
                uid_file = Some(s);
            }
            entries.push((path, uid, gid));
        }
    }
    (entries, uid_file)
}

/// Unpacks the OCI layout `layout` (tag `tag`) with `umoci unpack` (as root, so owners are kept)
/// and returns `(uid, gid)` of each of `paths` in the unpacked root filesystem (None where the
/// path is missing). None (after a printed skip) when umoci is not installed.
pub fn umoci_owners(layout: &Path, tag: &str, paths: &[&str]) -> Option<Vec<Option<(u32, u32)>>> {
    use std::os::unix::fs::MetadataExt;
    let Ok(umoci) = rbuild_testsupport::need_tool("umoci") else {
        assert!(
            std::env::var("RBUILD_REQUIRE_ROOT").as_deref() != Ok("1"),
            "umoci missing (apt-get install umoci)"
        );
        println!("SKIPPED: umoci not installed: layer owners not checked with umoci");
        return None;
    };
    let bundle = tempfile::tempdir().expect("bundle dir");
    let dest = bundle.path().join("b");
    let out = Command::new(umoci)
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&dest)
        .output()
        .expect("run umoci");
    assert!(out.status.success(), "umoci unpack: {}", text(&out));
    let rootfs = dest.join("rootfs");
    Some(
        paths
            .iter()
            .map(|p| {
                std::fs::symlink_metadata(rootfs.join(p.trim_start_matches('/')))
                    .ok()
                    .map(|m| (m.uid(), m.gid()))
            })
            .collect(),
    )
}
