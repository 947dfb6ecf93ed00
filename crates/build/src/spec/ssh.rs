//! `--ssh` specs (buildx's syntax): `default`, `ID` or `ID=SOCKET`: an SSH agent socket that
//! `RUN --mount=type=ssh,id=ID` reaches. Without a path, the `SSH_AUTH_SOCK` of this process.

use super::SpecError;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::str::FromStr;

/// One `--ssh`: the id a `RUN --mount=type=ssh,id=ID` names, and the agent socket it reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSpec {
    /// The id (`default` unless named).
    pub id: String,
    /// The host's agent socket, bound into the steps that mount it.
    pub socket: PathBuf,
}

impl FromStr for SshSpec {
    type Err = SpecError;

    /// Checks (when parsed) that the path is a unix socket: key files, which buildx also
    /// takes, are refused, as is more than one path per id.
    fn from_str(raw: &str) -> Result<Self, SpecError> {
        let bad = |why: String| SpecError::Ssh {
            spec: raw.to_string(),
            why,
        };
        let (id, paths) = match raw.split_once('=') {
            Some((id, paths)) => (id, Some(paths)),
            None => (raw, None),
        };
        if id.is_empty() {
            return Err(bad("id is required".into()));
        }
        let socket = match paths {
            None | Some("") => match std::env::var_os("SSH_AUTH_SOCK") {
                Some(s) if !s.is_empty() => PathBuf::from(s),
                _ => {
                    return Err(bad(
                        "invalid empty ssh agent socket: make sure SSH_AUTH_SOCK is set".into(),
                    ))
                }
            },
            Some(p) if p.contains(',') => {
                return Err(bad(
                    "only one agent socket per id is supported (several paths need an agent \
                     that merges them)"
                        .into(),
                ))
            }
            Some(p) => PathBuf::from(p),
        };
        match std::fs::metadata(&socket) {
            Ok(md) if md.file_type().is_socket() => {}
            Ok(md) if md.is_file() => {
                return Err(bad(format!(
                    "{} is a file, not an agent socket: rbuild forwards ssh-agent sockets only \
                     (load the key with ssh-add and pass the agent's socket)",
                    socket.display()
                )))
            }
            Ok(_) => return Err(bad(format!("{} is not a socket", socket.display()))),
            Err(e) => return Err(bad(format!("{}: {e}", socket.display()))),
        }
        Ok(SshSpec {
            id: id.to_string(),
            socket,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_only() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let spec: SshSpec = format!("gh={}", sock.display()).parse().unwrap();
        assert_eq!(
            (spec.id.as_str(), spec.socket.as_path()),
            ("gh", sock.as_path())
        );
        let key = dir.path().join("id_ed25519");
        std::fs::write(&key, "k").unwrap();
        let err = |s: String| s.parse::<SshSpec>().unwrap_err().to_string();
        assert!(err(format!("default={}", key.display())).contains("not an agent socket"));
        assert!(err(format!("a={},{}", sock.display(), sock.display())).contains("one agent"));
        assert!(err(format!("a={}", dir.path().join("nope").display())).contains("nope"));
        assert!(err(format!("={}", sock.display())).contains("id is required"));
    }
}
