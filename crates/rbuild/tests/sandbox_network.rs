//! The sandbox attack suite, network part: a build on the default network (its own namespace
//! behind slirp4netns) can neither sniff the host's loopback traffic, reach services on the
//! host's loopback, nor listen on host ports, yet has outbound connectivity. Each attack has a
//! positive control on `--network=host` showing that the same probe does detect the leak.
//!
//! Safety: the only packets sniffed are the test's own, on loopback; servers bind 127.0.0.1 or
//! live in a network namespace the test creates.

mod common;

use common::attack::{build_ok, context, has, rbuild, text, PROBE_DOCKERFILE};
use common::{env, RBUILD};
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Sends an HTTP request with a secret header to a server on the host's loopback every 50 ms
/// until dropped.
struct LoopbackChatter {
    stop: Arc<AtomicBool>,
    marker: String,
}

impl LoopbackChatter {
    fn start() -> LoopbackChatter {
        let marker = format!("RBUILD-SNIFF-{}", std::process::id());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            for c in listener.incoming() {
                let Ok(mut c) = c else { continue };
                let mut buf = [0u8; 512];
                let _ = c.read(&mut buf);
            }
        });
        let m = marker.clone();
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if let Ok(mut c) = TcpStream::connect(addr) {
                    let _ = write!(c, "GET / HTTP/1.1\r\nAuthorization: Bearer {m}\r\n\r\n");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        LoopbackChatter { stop, marker }
    }
}

impl Drop for LoopbackChatter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn default_network_cannot_sniff_host_loopback() {
    if env().is_none() {
        return;
    }
    let chatter = LoopbackChatter::start();
    let ctx = context(&format!(
        "{PROBE_DOCKERFILE}RUN /probe sniff 2 {}\n",
        chatter.marker
    ));
    let t = build_ok(ctx.path(), &[]);
    assert!(has(&t, "packet_socket=ok"), "{t}");
    assert!(
        has(&t, "marker-seen=no"),
        "default network sniffed the host:\n{t}"
    );
    // Control: on the host network the same probe sees the header.
    let t = build_ok(ctx.path(), &["--network=host"]);
    assert!(
        has(&t, "marker-seen=yes"),
        "control: host network should see it:\n{t}"
    );
}

/// A server on the host's loopback that counts connections.
fn counting_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            if s.is_ok() {
                c.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (port, count)
}

#[test]
fn default_network_cannot_reach_host_loopback_services() {
    if env().is_none() {
        return;
    }
    let (port, count) = counting_server();
    let ctx = context(&format!(
        "ARG BASE\nFROM $BASE\nRUN nc -w 2 127.0.0.1 {port} </dev/null; nc -w 2 10.0.2.2 {port} </dev/null; echo t\"\"ried\n"
    ));
    let t = build_ok(ctx.path(), &[]);
    assert!(has(&t, "tried"), "{t}");
    assert_eq!(count.load(Ordering::SeqCst), 0, "reached the host:\n{t}");
    build_ok(ctx.path(), &["--network=host"]);
    assert!(
        count.load(Ordering::SeqCst) > 0,
        "control: host network should connect"
    );
}

#[test]
fn default_network_cannot_listen_on_host_ports() {
    if env().is_none() {
        return;
    }
    // Reserved (bound, not listening, SO_REUSEADDR) for the whole test: busybox nc, which sets
    // SO_REUSEADDR too, can still listen on it, but no other process can take the port.
    let reserved = rbuild_testsupport::RefusedPort::bind_shareable().unwrap();
    let port = reserved.port();
    let ctx = context(&format!(
        "ARG BASE\nFROM $BASE\nRUN (nc -l -p {port} </dev/null >/dev/null &) ; sleep 3; echo l\"\"istened\n"
    ));
    let attempt = |extra: &[&str]| -> usize {
        let root = tempfile::tempdir().unwrap();
        let mut child = rbuild(root.path(), ctx.path(), extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut connected = 0;
        loop {
            if TcpStream::connect_timeout(
                &format!("127.0.0.1:{port}").parse().unwrap(),
                Duration::from_millis(100),
            )
            .is_ok()
            {
                connected += 1;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(child.wait().unwrap().success());
        connected
    };
    assert_eq!(
        attempt(&[]),
        0,
        "the default network listened on a host port"
    );
    assert!(
        attempt(&["--network=host"]) > 0,
        "control: host network should listen on the host"
    );
}

/// Outbound connectivity of the default network, checked inside a network namespace this test
/// creates (an extra address on its own `lo` with a server on it, standing in for the
/// internet), never towards any other address.
#[test]
fn default_network_has_outbound_connectivity() {
    if env().is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let www = work.path().join("www");
    fs::create_dir_all(&www).unwrap();
    let marker = format!("outbound-ok-{}", std::process::id());
    fs::write(www.join("marker.txt"), &marker).unwrap();
    let ctx = work.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    rbuild_testsupport::make_busybox_rootfs_tar(&ctx.join("rootfs.tar")).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nADD rootfs.tar /\nRUN wget -q -O- http://10.123.0.1:8080/marker.txt; echo; cat /etc/resolv.conf\n",
    )
    .unwrap();
    let root = work.path().join("root");
    let script = format!(
        "set -e; ip link set lo up; ip addr add 10.123.0.1/32 dev lo; \
         busybox httpd -p 10.123.0.1:8080 -h {www}; \
         {rbuild} --root {root} build --progress=plain {ctx}",
        www = www.display(),
        rbuild = RBUILD,
        root = root.display(),
        ctx = ctx.display()
    );
    let out = Command::new("unshare")
        .args(["--net", "--fork", "--kill-child", "sh", "-c", &script])
        .env(
            "DOCKER_CONFIG",
            rbuild_testsupport::isolated_docker_config(&root),
        )
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(has(&t, &marker), "no outbound connectivity:\n{t}");
    assert!(has(&t, "nameserver"), "no resolv.conf:\n{t}");
}
