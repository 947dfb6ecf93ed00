//! Rootless mode end to end: the real binary run by an unprivileged user this test creates
//! (`useradd`, a subordinate id range in `/etc/subuid` and `/etc/subgid`), through `setpriv`.
//! The layers must carry in-image owners (0, 1000, 123:456), never host subuids; a rebuild
//! is fully cached; the default root is under `$XDG_DATA_HOME`; a user without a range gets
//! the error that says how to add one; RUN networks and limits behave as documented.
//!
//! Needs root (to create the users) and `newuidmap`/`newgidmap` (Debian's `uidmap`): skips
//! loudly without them, unless `RBUILD_REQUIRE_ROOT=1` (CI), which fails instead.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The test user with a subordinate id range.
const USER: &str = "rbuild-rootless";
/// The test user without one.
const USER_NO_RANGE: &str = "rbuild-nosubid";
/// The range given to [`USER`] when it has none.
const RANGE: &str = "300000-365535";

/// Runs `cmd` and fails with its output unless it succeeds.
fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn id_of(user: &str, flag: &str) -> u32 {
    let out = run(Command::new("id").args([flag, user]));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("numeric id")
}

/// Creates `user` if missing (`-K SUB_UID_COUNT=0` keeps useradd from assigning a range).
fn ensure_user(user: &str, with_range: bool) {
    if !Command::new("id")
        .arg(user)
        .output()
        .expect("id")
        .status
        .success()
    {
        run(Command::new("useradd").args([
            "--no-create-home",
            "--shell",
            "/bin/sh",
            "-K",
            "SUB_UID_COUNT=0",
            "-K",
            "SUB_GID_COUNT=0",
            user,
        ]));
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

/// The shared setup: None (after a loud skip) without root or without the map helpers.
struct Setup {
    /// Holds the copied binary (a directory every user may enter).
    _bin_dir: tempfile::TempDir,
    /// The rbuild binary the test users can execute.
    rbuild: PathBuf,
    /// `ADDR/busybox:latest`.
    base: String,
}

fn setup() -> Option<&'static Setup> {
    static SETUP: OnceLock<Option<Setup>> = OnceLock::new();
    SETUP
        .get_or_init(|| {
            let env = common::env()?;
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
            let bin_dir = tempfile::Builder::new()
                .prefix("rbuild-rootless-bin")
                .tempdir()
                .expect("tempdir");
            open_to_all(bin_dir.path());
            let rbuild = bin_dir.path().join("rbuild");
            std::fs::copy(common::RBUILD, &rbuild).expect("copy rbuild");
            std::fs::set_permissions(&rbuild, std::fs::Permissions::from_mode(0o755))
                .expect("chmod rbuild");
            Some(Setup {
                _bin_dir: bin_dir,
                rbuild,
                base: env.base.clone(),
            })
        })
        .as_ref()
}

fn open_to_all(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
}

/// A home directory owned by `user` (the test's scratch: context, outputs, state).
fn home_of(user: &str) -> tempfile::TempDir {
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
fn write_as(user: &str, home: &Path, rel: &str, text: &str) {
    let path = home.join(rel);
    let parent = path.parent().expect("parent");
    std::fs::create_dir_all(parent).expect("mkdir");
    std::fs::write(&path, text).expect("write");
    for p in [parent, path.as_path()] {
        std::os::unix::fs::chown(p, Some(id_of(user, "-u")), Some(id_of(user, "-g")))
            .expect("chown");
    }
}

/// `rbuild ARGS` as `user` (setpriv: the user's uid, gid and groups; a clean environment with
/// HOME, XDG_DATA_HOME and DOCKER_CONFIG under `home`).
fn rbuild_as(setup: &Setup, user: &str, home: &Path, args: &[&str]) -> Output {
    let uid = id_of(user, "-u").to_string();
    let gid = id_of(user, "-g").to_string();
    Command::new("setpriv")
        .args(["--reuid", &uid, "--regid", &gid, "--init-groups", "--"])
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
        )
        .output()
        .expect("run rbuild as the test user")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every layer of an OCI archive: (path, uid, gid) of each entry, and `/uid`'s content.
fn layer_entries(archive: &Path) -> (Vec<(String, u64, u64)>, Option<String>) {
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

#[test]
fn rootless_build_records_in_image_owners_and_caches() {
    let Some(setup) = setup() else { return };
    let home = home_of(USER);
    let h = home.path();
    write_as(USER, h, "ctx/f.txt", "hello\n");
    write_as(
        USER,
        h,
        "ctx/Dockerfile",
        &format!(
            "FROM {}\n\
             RUN mkdir /d && echo a > /d/a && echo b > /d/b && chown 1000:1000 /d/b\n\
             COPY --chown=123:456 f.txt /f.txt\n\
             RUN id -u > /uid\n",
            setup.base
        ),
    );
    let out_tar = h.join("image.tar");
    let dest = format!("type=oci,dest={}", out_tar.display());
    let args = [
        "build",
        "--progress=json",
        "--network=none",
        "-o",
        dest.as_str(),
        "ctx",
    ];
    let first = rbuild_as(setup, USER, h, &args);
    assert!(first.status.success(), "rootless build: {}", text(&first));

    // The default root of an ordinary user: $XDG_DATA_HOME/rbuild.
    assert!(
        h.join("xdg/rbuild/index.json").is_file(),
        "no store under $XDG_DATA_HOME/rbuild"
    );
    let (entries, uid_file) = layer_entries(&out_tar);
    let owner = |path: &str| {
        entries
            .iter()
            .find(|(p, _, _)| p.trim_end_matches('/') == path)
            .map(|&(_, u, g)| (u, g))
    };
    assert_eq!(owner("d/a"), Some((0, 0)), "{entries:?}");
    assert_eq!(owner("d/b"), Some((1000, 1000)), "{entries:?}");
    assert_eq!(owner("f.txt"), Some((123, 456)), "{entries:?}");
    assert_eq!(uid_file.as_deref(), Some("0\n"), "RUN id -u");
    assert!(
        entries.iter().all(|&(_, u, g)| u < 65536 && g < 65536),
        "a host subuid reached a layer: {entries:?}"
    );

    let second = rbuild_as(setup, USER, h, &args);
    assert!(second.status.success(), "rebuild: {}", text(&second));
    let (ran, cached) = common::ran_and_cached(&second);
    assert!(ran.is_empty(), "steps ran again: {ran:?}");
    assert!(cached.len() >= 3, "not fully cached: {cached:?}");

    let info = rbuild_as(setup, USER, h, &["info"]);
    let info_text = text(&info);
    assert!(info.status.success(), "rbuild info: {info_text}");
    assert!(info_text.contains("Rootless: true"), "{info_text}");
    assert!(
        info_text.contains(&format!("Root: {}", h.join("xdg/rbuild").display())),
        "{info_text}"
    );
    assert!(
        info_text.contains("Snapshotter: overlay"),
        "overlay should mount in the user namespace here (kernel >= 5.11): {info_text}"
    );
}

#[test]
fn rootless_deletes_become_whiteouts_and_opaque_dirs() {
    let Some(setup) = setup() else { return };
    let home = home_of(USER);
    let h = home.path();
    write_as(
        USER,
        h,
        "ctx/Dockerfile",
        &format!(
            "FROM {}\n\
             RUN mkdir /d && echo 1 > /d/one && echo k > /keep && echo g > /gone\n\
             RUN rm -rf /d /gone && mkdir /d && echo x > /d/x\n\
             RUN ls /d && test ! -e /gone && cat /keep\n",
            setup.base
        ),
    );
    let out_tar = h.join("image.tar");
    let dest = format!("type=oci,dest={}", out_tar.display());
    let out = rbuild_as(
        setup,
        USER,
        h,
        &[
            "build",
            "--progress=plain",
            "--network=none",
            "-o",
            &dest,
            "ctx",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let (entries, _) = layer_entries(&out_tar);
    let has = |path: &str| entries.iter().any(|(p, _, _)| p == path);
    assert!(has(".wh.gone"), "no whiteout for /gone: {entries:?}");
    assert!(
        has("d/.wh..wh..opq"),
        "no opaque marker for /d: {entries:?}"
    );
    assert!(has("d/x"), "{entries:?}");
}

#[test]
fn a_user_without_a_subuid_range_is_told_how_to_add_one() {
    let Some(setup) = setup() else { return };
    let home = home_of(USER_NO_RANGE);
    let out = rbuild_as(setup, USER_NO_RANGE, home.path(), &["info"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains(&format!("no range for user {USER_NO_RANGE}"))
            && t.contains("/etc/subuid")
            && t.contains("usermod --add-subuids"),
        "{t}"
    );
}

/// A one-shot HTTP server on host loopback; returns its port.
fn serve_once(body: &'static str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn rootless_networks_host_none_and_default() {
    let Some(setup) = setup() else { return };
    let home = home_of(USER);
    let h = home.path();
    let port = serve_once("from-the-host");
    write_as(
        USER,
        h,
        "host/Dockerfile",
        &format!(
            "FROM {}\nRUN wget -qO- http://127.0.0.1:{port}/ > /got && cat /got\n",
            setup.base
        ),
    );
    let out = rbuild_as(
        setup,
        USER,
        h,
        &["build", "--progress=plain", "--network=host", "host"],
    );
    let t = text(&out);
    assert!(out.status.success(), "--network=host: {t}");
    assert!(t.contains("from-the-host"), "{t}");

    write_as(
        USER,
        h,
        "net/Dockerfile",
        &format!(
            "FROM {}\nRUN ip -o link | grep -c ': ' > /links; cat /links\n",
            setup.base
        ),
    );
    let none = rbuild_as(
        setup,
        USER,
        h,
        &[
            "build",
            "--progress=plain",
            "--no-cache",
            "--network=none",
            "net",
        ],
    );
    let t = text(&none);
    assert!(none.status.success(), "--network=none: {t}");
    assert!(t.contains(" 1\n"), "only lo under --network=none: {t}");

    let default = rbuild_as(
        setup,
        USER,
        h,
        &["build", "--progress=plain", "--no-cache", "net"],
    );
    let t = text(&default);
    let tun_open = run(Command::new("setpriv").args([
        "--reuid",
        &id_of(USER, "-u").to_string(),
        "--regid",
        &id_of(USER, "-g").to_string(),
        "--init-groups",
        "--",
        "sh",
        "-c",
        "test -r /dev/net/tun -a -w /dev/net/tun && echo yes || echo no",
    ]));
    if String::from_utf8_lossy(&tun_open.stdout).trim() == "yes" {
        assert!(default.status.success(), "default network: {t}");
        assert!(
            t.contains(" 2\n"),
            "lo and tap0 under the default network: {t}"
        );
    } else {
        // This host leaves /dev/net/tun 0600: the default network cannot start rootless, and
        // the error says how to fix it.
        assert!(!default.status.success(), "{t}");
        assert!(
            t.contains("/dev/net/tun") && t.contains("--network=none"),
            "{t}"
        );
    }
}

#[test]
fn rootless_limits_without_delegation_warn_and_build() {
    let Some(setup) = setup() else { return };
    let home = home_of(USER);
    let h = home.path();
    write_as(
        USER,
        h,
        "ctx/Dockerfile",
        &format!("FROM {}\nRUN echo limited\n", setup.base),
    );
    let out = rbuild_as(
        setup,
        USER,
        h,
        &[
            "build",
            "--progress=plain",
            "--network=none",
            "--memory=64m",
            "--pids-limit=50",
            "ctx",
        ],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let info = text(&rbuild_as(setup, USER, h, &["info"]));
    if info.contains("Limits: not enforced") {
        assert!(
            t.contains("WARNING: --memory, --pids-limit not enforced: rootless mode without a delegated cgroup v2 subtree"),
            "{t}"
        );
    } else {
        assert!(!t.contains("not enforced"), "{t}");
    }
}

#[test]
fn rootless_run_for_a_foreign_platform_under_emulation() {
    let Some(setup) = setup() else { return };
    let Some(deb) = rbuild_testsupport::arm64_busybox_deb().expect("arm64 busybox") else {
        return;
    };
    if rbuild_testsupport::qemu_aarch64().is_none() {
        assert!(
            std::env::var("RBUILD_REQUIRE_ROOT").as_deref() != Ok("1"),
            "qemu-aarch64-static missing (apt-get install qemu-user-static)"
        );
        println!("SKIPPED: qemu-aarch64-static not installed");
        return;
    }
    let home = home_of(USER);
    let h = home.path();
    let binary = rbuild_testsupport::arm64_busybox_binary(&deb).expect("arm64 busybox binary");
    write_as(
        USER,
        h,
        "ctx/Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"uname\", \"-m\"]\n",
    );
    let bin = h.join("ctx/busybox");
    std::fs::write(&bin, binary).expect("write busybox");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::chown(&bin, Some(id_of(USER, "-u")), Some(id_of(USER, "-g")))
        .expect("chown");
    let out = rbuild_as(
        setup,
        USER,
        h,
        &[
            "build",
            "--progress=plain",
            "--network=none",
            "--platform=linux/arm64",
            "ctx",
        ],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains(" aarch64\n"),
        "RUN under qemu-aarch64-static: {t}"
    );
}
