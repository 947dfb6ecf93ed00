//! End-to-end tests of `--ssh` and `RUN --mount=type=ssh`: a real `ssh-agent` holding a fresh
//! key, a FROM-scratch image made of the host's busybox and `ssh-add` (with its libraries), and
//! the real rbuild binary. The step lists the agent's keys through the mounted socket, so the
//! test proves the socket inside reaches the agent outside.

use rbuild_testsupport::{need_tool, require_root};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

mod common;

use common::*;

/// A running `ssh-agent -D` on a socket of its own; killed (by its pid) on drop.
struct Agent {
    child: Child,
    socket: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent(dir: &Path) -> Agent {
    let socket = dir.join("agent.sock");
    let child = Command::new(need_tool("ssh-agent").unwrap())
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(Stdio::null())
        .spawn()
        .expect("start ssh-agent");
    let agent = Agent { child, socket };
    for _ in 0..200 {
        if agent.socket.exists() {
            return agent;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("ssh-agent did not create {}", agent.socket.display());
}

fn ssh_add(agent: &Agent, args: &[&std::ffi::OsStr]) -> Output {
    Command::new(need_tool("ssh-add").unwrap())
        .args(args)
        .env("SSH_AUTH_SOCK", &agent.socket)
        .output()
        .expect("run ssh-add")
}

/// Copies `bin` and the shared libraries `ldd` names into `rootfs` at the same paths.
fn copy_with_libs(bin: &Path, rootfs: &Path) {
    let out = Command::new("ldd").arg(bin).output().expect("run ldd");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut files = vec![bin.to_path_buf()];
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            files.push(PathBuf::from(p));
        }
    }
    for f in files {
        let dest = rootfs.join(f.strip_prefix("/").unwrap());
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(&f, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", f.display()));
    }
}

/// A context whose image is the host's busybox and ssh-add, and `dockerfile`.
fn context(dir: &Path, dockerfile: &str) -> PathBuf {
    let ctx = dir.join("ctx");
    let rootfs = ctx.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::copy(need_tool("busybox").unwrap(), rootfs.join("bin/busybox")).unwrap();
    copy_with_libs(&need_tool("ssh-add").unwrap(), &rootfs);
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    ctx
}

fn rbuild(root: &Path, ctx: &Path, extra: &[String], agent_env: Option<&Path>) -> Output {
    let mut cmd = rbuild_at(root);
    cmd.args(["build", "--progress=json"]).args(extra).arg(ctx);
    match agent_env {
        Some(s) => cmd.env("SSH_AUTH_SOCK", s),
        None => cmd.env_remove("SSH_AUTH_SOCK"),
    };
    cmd.output().expect("run rbuild")
}

const DOCKERFILE: &str = "FROM scratch\n\
COPY rootfs/ /\n\
RUN --mount=type=ssh --mount=type=ssh,id=absent,target=/absent.sock \
[\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox mkdir /out && \
/bin/busybox test -S \\\"$SSH_AUTH_SOCK\\\" && echo \\\"$SSH_AUTH_SOCK\\\" > /out/sock && \
/bin/busybox test ! -e /absent.sock && /usr/bin/ssh-add -l > /out/keys\"]\n";

#[test]
fn ssh_agent_is_reachable_in_run_and_left_out_of_the_image() {
    if !require_root().expect("root check") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path());
    let key = dir.path().join("id_ed25519");
    let keygen = Command::new(need_tool("ssh-keygen").unwrap())
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "rbuild-ssh-test",
            "-f",
        ])
        .arg(&key)
        .output()
        .expect("run ssh-keygen");
    assert!(keygen.status.success(), "ssh-keygen failed");
    assert!(ssh_add(&agent, &[key.as_os_str()]).status.success());
    let listed = ssh_add(&agent, &["-l".as_ref()]);
    let fingerprint = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(fingerprint.contains("rbuild-ssh-test"), "{fingerprint}");

    let ctx = context(dir.path(), DOCKERFILE);
    let root = dir.path().join("root");
    let local = dir.path().join("local");
    let layout = dir.path().join("layout");
    let outputs = [
        "-o".to_string(),
        format!("type=local,dest={}", local.display()),
        "-o".to_string(),
        format!("type=oci,dest={},tar=false", layout.display()),
    ];
    // `--ssh default` is the SSH_AUTH_SOCK of rbuild.
    let mut args = vec!["--ssh".to_string(), "default".to_string()];
    args.extend(outputs.iter().cloned());
    let out = rbuild(&root, &ctx, &args, Some(&agent.socket));
    assert_ok(&out);
    assert_eq!(
        fs::read_to_string(local.join("out/keys")).unwrap(),
        fingerprint,
        "the step listed the agent's keys through the socket"
    );
    assert_eq!(
        fs::read_to_string(local.join("out/sock")).unwrap(),
        "/run/buildkit/ssh_agent.0\n"
    );
    // No socket, mount point or /run left in the result or any layer.
    assert!(!local.join("run").exists(), "/run leaked into the result");
    assert!(!local.join("absent.sock").exists());
    for e in fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let raw = fs::read(e.unwrap().path()).unwrap();
        let mut plain = Vec::new();
        if std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(raw.as_slice()),
            &mut plain,
        )
        .is_err()
        {
            continue;
        }
        let mut ar = tar::Archive::new(plain.as_slice());
        let Ok(entries) = ar.entries() else { continue };
        for entry in entries {
            let entry = entry.unwrap();
            let p = entry.path().unwrap().to_string_lossy().into_owned();
            assert!(
                !p.contains("ssh_agent") && !p.contains("absent.sock") && !p.contains("run/"),
                "layer holds {p}"
            );
        }
    }

    // ID=SOCKET names the socket; the socket is not part of the cache key, so the step is
    // cached when only the forwarded socket changes.
    let mut args = vec![
        "--ssh".to_string(),
        format!("default={}", agent.socket.display()),
    ];
    args.extend(outputs.iter().cloned());
    let again = rbuild(&root, &ctx, &args, None);
    assert_ok(&again);
    assert_reported_cached(&again, "ssh-add -l");
}

#[test]
fn a_required_ssh_mount_without_ssh_fails_and_an_optional_one_is_skipped() {
    if !require_root().expect("root check") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(
        dir.path(),
        "FROM scratch\nCOPY rootfs/ /\n\
         RUN --mount=type=ssh [\"/bin/busybox\", \"sh\", \"-c\", \
         \"/bin/busybox test ! -e /run/buildkit/ssh_agent.0\"]\n\
         RUN --mount=type=ssh,required=true [\"/bin/busybox\", \"true\"]\n",
    );
    let root = dir.path().join("root");
    let out = rbuild(&root, &ctx, &[], None);
    assert!(!out.status.success(), "built without the required key");
    let err = stderr_text(&out);
    assert!(
        err.contains("no SSH key \"default\" forwarded from the client"),
        "{err}"
    );

    // A key file is refused before anything runs, with a message naming the difference.
    let key = dir.path().join("id_ed25519");
    fs::write(&key, "not a socket").unwrap();
    let args = vec!["--ssh".to_string(), format!("default={}", key.display())];
    let out = rbuild(&root, &ctx, &args, None);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_text(&out));
    assert!(
        stderr_text(&out).contains("not an agent socket"),
        "{}",
        stderr_text(&out)
    );
}
