//! The protocol against dockerd's embedded BuildKit: control connection, session with the
//! context served by DiffCopy, status stream, image export into dockerd.

use rbuild_remote::proto::control::SolveRequest;
use rbuild_remote::{Daemon, LocalDir, SessionConfig};

fn docker_socket() -> Option<std::path::PathBuf> {
    let socket = rbuild_remote::transport::docker_socket();
    if socket.exists() {
        Some(socket)
    } else if std::env::var_os("RBUILD_REQUIRE_ROOT").is_some() {
        panic!("dockerd's socket {} is missing", socket.display());
    } else {
        eprintln!("SKIP: dockerd's socket {} is missing", socket.display());
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dockerfile_frontend_solve_through_the_session() {
    let Some(socket) = docker_socket() else {
        return;
    };
    let daemon = Daemon::docker(socket).await.unwrap();
    solve_with_session(daemon).await;
}

/// The session tunnelled through `Control.Session` (buildkitd's way), on dockerd's control API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_through_the_control_api_stream() {
    let Some(socket) = docker_socket() else {
        return;
    };
    let daemon = Daemon::docker(socket)
        .await
        .unwrap()
        .with_control_sessions();
    solve_with_session(daemon).await;
}

async fn solve_with_session(daemon: Daemon) {
    let tag = format!("rbuild-remote-proto-test:{}", rbuild_remote::new_id());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM 127.0.0.1:5000/busybox:latest\nCOPY hello.txt /hello.txt\nRUN cat /hello.txt\n",
    )
    .unwrap();
    // Unique content, so dockerd's cache never answers the RUN.
    let hello = format!("hello from the session {}\n", rbuild_remote::new_id());
    std::fs::write(dir.path().join("hello.txt"), &hello).unwrap();
    let mut config = SessionConfig::default();
    for name in ["context", "dockerfile"] {
        config.dirs.insert(
            name.to_string(),
            LocalDir {
                path: dir.path().to_path_buf(),
                excludes: vec![],
            },
        );
    }
    let (session, _task) = daemon
        .open_session("test", "test-key", config)
        .await
        .unwrap();
    let mut request = SolveRequest {
        session,
        frontend: "dockerfile.v0".to_string(),
        exporter: "moby".to_string(),
        entitlements: vec!["network.host".to_string()],
        ..Default::default()
    };
    request
        .frontend_attrs
        .insert("force-network-mode".into(), "host".into());
    request.exporter_attrs.insert("name".into(), tag.clone());
    let mut logs = String::new();
    let mut names = Vec::new();
    let response = daemon
        .solve(request, |status| {
            for v in status.vertexes {
                names.push(v.name);
            }
            for l in status.logs {
                logs.push_str(&String::from_utf8_lossy(&l.msg));
            }
        })
        .await
        .unwrap();
    let _ = std::process::Command::new("docker")
        .args(["rmi", &tag])
        .output();
    assert!(logs.contains(&hello), "{logs}");
    assert!(
        names.iter().any(|n| n == "[internal] load build context"),
        "{names:?}"
    );
    assert!(response
        .exporter_response
        .contains_key("containerimage.digest"));
}
