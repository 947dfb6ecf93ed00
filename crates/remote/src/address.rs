//! Builder addresses (`--builder`) and the TLS settings of a `tcp://` one, as buildctl takes
//! them: `docker` (dockerd's embedded BuildKit on its API socket, as buildx's docker driver),
//! `docker-unix:///PATH` (another dockerd socket), `unix:///PATH` (a buildkitd socket) and
//! `tcp://HOST:PORT` with `--tlscacert`, `--tlscert`, `--tlskey`, `--tlsservername`.

use crate::RemoteError;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

/// Where the daemon is (`--builder`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Builder {
    /// dockerd's embedded BuildKit through its API socket.
    Docker {
        /// The API socket.
        socket: PathBuf,
    },
    /// buildkitd's gRPC socket.
    Unix {
        /// The socket.
        socket: PathBuf,
    },
    /// buildkitd over TCP.
    Tcp {
        /// The host name or address.
        host: String,
        /// The port.
        port: u16,
    },
}

impl FromStr for Builder {
    type Err = RemoteError;

    fn from_str(raw: &str) -> Result<Builder, RemoteError> {
        let bad = || RemoteError::Address(raw.to_string());
        if raw == "docker" || raw == "default" {
            return Ok(Builder::Docker {
                socket: crate::transport::docker_socket(),
            });
        }
        if let Some(path) = raw.strip_prefix("docker-unix://") {
            if !path.starts_with('/') {
                return Err(bad());
            }
            return Ok(Builder::Docker {
                socket: PathBuf::from(path),
            });
        }
        if let Some(path) = raw.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(bad());
            }
            return Ok(Builder::Unix {
                socket: PathBuf::from(path),
            });
        }
        if let Some(rest) = raw.strip_prefix("tcp://") {
            let rest = rest.trim_end_matches('/');
            let (host, port) = match rest.strip_prefix('[') {
                // [v6]:port
                Some(v6) => {
                    let (host, port) = v6.split_once("]:").ok_or_else(bad)?;
                    (host, port)
                }
                None => rest.rsplit_once(':').ok_or_else(bad)?,
            };
            if host.is_empty() || host.contains('/') {
                return Err(bad());
            }
            let port: u16 = port.parse().map_err(|_| bad())?;
            return Ok(Builder::Tcp {
                host: host.to_string(),
                port,
            });
        }
        Err(bad())
    }
}

/// buildctl's TLS flags for a `tcp://` builder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// `--tlscacert`: the CA that signs the daemon's certificate (else the system roots).
    pub ca_cert: Option<PathBuf>,
    /// `--tlscert`: the client certificate.
    pub cert: Option<PathBuf>,
    /// `--tlskey`: the client certificate's key.
    pub key: Option<PathBuf>,
    /// `--tlsservername`: the name to verify the daemon's certificate against (else the host).
    pub server_name: Option<String>,
}

impl TlsOptions {
    /// True when any TLS flag is set (a `tcp://` builder without any speaks plain h2c).
    pub fn enabled(&self) -> bool {
        self.ca_cert.is_some()
            || self.cert.is_some()
            || self.key.is_some()
            || self.server_name.is_some()
    }

    /// The rustls client configuration (ALPN `h2`): roots from `--tlscacert`, the client
    /// certificate from `--tlscert`/`--tlskey` (both or neither).
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, RemoteError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let tls_err =
            |what: &str, e: &dyn std::fmt::Display| RemoteError::Tls(format!("{what}: {e}"));
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_cert {
            Some(path) => {
                for cert in CertificateDer::pem_file_iter(path)
                    .map_err(|e| tls_err(&format!("reading {}", path.display()), &e))?
                {
                    let cert =
                        cert.map_err(|e| tls_err(&format!("reading {}", path.display()), &e))?;
                    roots
                        .add(cert)
                        .map_err(|e| tls_err(&format!("adding {}", path.display()), &e))?;
                }
                if roots.is_empty() {
                    return Err(RemoteError::Tls(format!(
                        "{}: no certificate in the file",
                        path.display()
                    )));
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err("TLS versions", &e))?
            .with_root_certificates(roots);
        let mut config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| tls_err(&format!("reading {}", cert.display()), &e))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| tls_err(&format!("reading {}", cert.display()), &e))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| tls_err(&format!("reading {}", key.display()), &e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| tls_err("client certificate", &e))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(RemoteError::Tls(
                    "--tlscert and --tlskey go together".to_string(),
                ))
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_as_buildctl_and_buildx_write_them() {
        assert_eq!(
            "unix:///run/buildkit/buildkitd.sock"
                .parse::<Builder>()
                .unwrap(),
            Builder::Unix {
                socket: "/run/buildkit/buildkitd.sock".into()
            }
        );
        assert_eq!(
            "tcp://buildkitd.example:1234".parse::<Builder>().unwrap(),
            Builder::Tcp {
                host: "buildkitd.example".into(),
                port: 1234
            }
        );
        assert_eq!(
            "tcp://[::1]:1234".parse::<Builder>().unwrap(),
            Builder::Tcp {
                host: "::1".into(),
                port: 1234
            }
        );
        assert_eq!(
            "docker-unix:///var/run/other.sock"
                .parse::<Builder>()
                .unwrap(),
            Builder::Docker {
                socket: "/var/run/other.sock".into()
            }
        );
        assert!(matches!(
            "docker".parse::<Builder>().unwrap(),
            Builder::Docker { .. }
        ));
        for bad in [
            "tcp://host",
            "tcp://host:port",
            "tcp://:1234",
            "tcp://host:99999",
            "unix://relative.sock",
            "http://host:80",
            "buildkitd",
        ] {
            let e = bad.parse::<Builder>().unwrap_err();
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
    }

    /// A CA and a client certificate made by openssl: the configuration loads them, speaks h2,
    /// and refuses a certificate without its key and a file without certificates.
    #[test]
    fn tls_flags_make_the_client_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let made = match rbuild_testsupport::make_tls_material(dir.path()) {
            Ok(made) => made,
            Err(rbuild_testsupport::TestError::MissingTool { .. }) => {
                eprintln!("SKIPPED: openssl is not installed");
                return;
            }
            Err(e) => panic!("make certificates: {e}"),
        };
        let path = |name: &str| Some(dir.path().join(name));
        let options = TlsOptions {
            ca_cert: Some(made.ca.clone()),
            cert: Some(made.client_cert.clone()),
            key: Some(made.client_key.clone()),
            server_name: Some("buildkitd".into()),
        };
        assert!(options.enabled());
        let config = options.client_config().unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(config.client_auth_cert_resolver.has_certs());

        let only_cert = TlsOptions {
            key: None,
            ..options.clone()
        };
        let e = only_cert.client_config().unwrap_err().to_string();
        assert!(e.contains("--tlscert and --tlskey go together"), "{e}");

        std::fs::write(dir.path().join("empty.pem"), "").unwrap();
        let empty_ca = TlsOptions {
            ca_cert: path("empty.pem"),
            ..TlsOptions::default()
        };
        let e = empty_ca.client_config().unwrap_err().to_string();
        assert!(e.contains("no certificate"), "{e}");
        assert!(!TlsOptions::default().enabled());
    }
}
