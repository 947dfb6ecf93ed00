//! Rootless mode end to end: the real binary run by an unprivileged user this test creates
//! (`useradd`, a subordinate id range in `/etc/subuid` and `/etc/subgid`), through `setpriv`.
//! The layers must carry in-image owners (0, 1000, 123:456), never host subuids; a rebuild
//! is fully cached; the default root is under `$XDG_DATA_HOME`; a user without a range gets
//! the error that says how to add one; RUN networks and limits behave as documented.
//!
//! Needs root (to create the users) and `newuidmap`/`newgidmap` (Debian's `uidmap`): skips
//! loudly without them, unless `RBUILD_REQUIRE_ROOT=1` (CI), which fails instead.

mod common;

use common::rootless::{
    home_of, id_of, layer_entries, rbuild_as, run, setup, text, write_as, USER, USER_NO_RANGE,
};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

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
