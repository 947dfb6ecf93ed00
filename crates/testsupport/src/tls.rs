//! Throwaway TLS material for test servers: a CA, a server and a client certificate made with openssl.

use crate::{io_err, need_tool, run, TestError};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Throwaway TLS material made by [`make_tls_material`].
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    /// The CA certificate (`certs/ca.crt`, alone in its directory for skopeo's cert dirs).
    pub ca: PathBuf,
    /// The server certificate, for 127.0.0.1 and localhost.
    pub server_cert: PathBuf,
    /// The server certificate's key.
    pub server_key: PathBuf,
    /// A client certificate (extended key usage clientAuth).
    pub client_cert: PathBuf,
    /// The client certificate's key.
    pub client_key: PathBuf,
}

/// Makes `certs/ca.crt` (a throwaway CA, alone in `certs/` for skopeo's cert dirs) and
/// `tls/server.crt` + `tls/server.key` (for 127.0.0.1 and localhost, signed by the CA) under `dir`
/// with openssl (P-256 keys, valid two days). Returns the server certificate and key paths.
pub(crate) fn make_tls_certs(dir: &Path) -> Result<(PathBuf, PathBuf), TestError> {
    let made = make_tls_material(dir)?;
    Ok((made.server_cert, made.server_key))
}

/// Makes a throwaway CA, a server certificate for 127.0.0.1 and localhost and a client
/// certificate, all signed by the CA, under `dir` with openssl (P-256 keys, valid two days).
pub fn make_tls_material(dir: &Path) -> Result<TlsMaterial, TestError> {
    let openssl = need_tool("openssl")?;
    let (certs, tls) = (dir.join("certs"), dir.join("tls"));
    for d in [&certs, &tls] {
        fs::create_dir_all(d).map_err(io_err("create", d))?;
    }
    let ca_crt = certs.join("ca.crt");
    let (ca_key, ca_csr, ca_ext) = (tls.join("ca.key"), tls.join("ca.csr"), tls.join("ca.ext"));
    fs::write(
        &ca_ext,
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n",
    )
    .map_err(io_err("write", &ca_ext))?;
    let csr_cmd = |key: &Path, csr: &Path, cn: &str| {
        let mut c = Command::new(&openssl);
        c.args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-subj", cn, "-keyout"])
        .arg(key)
        .arg("-out")
        .arg(csr);
        c
    };
    run(&mut csr_cmd(&ca_key, &ca_csr, "/CN=rbuild-test-ca"))?;
    run(Command::new(&openssl)
        .args(["x509", "-req", "-days", "2", "-in"])
        .arg(&ca_csr)
        .arg("-signkey")
        .arg(&ca_key)
        .arg("-extfile")
        .arg(&ca_ext)
        .arg("-out")
        .arg(&ca_crt))?;
    // One leaf certificate signed by the CA: (certificate, key).
    let issue = |name: &str, cn: &str, serial: &str, usage: &str| {
        let (key, csr, ext, crt) = (
            tls.join(format!("{name}.key")),
            tls.join(format!("{name}.csr")),
            tls.join(format!("{name}.ext")),
            tls.join(format!("{name}.crt")),
        );
        fs::write(
            &ext,
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n{usage}\n\
                 subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
            ),
        )
        .map_err(io_err("write", &ext))?;
        run(&mut csr_cmd(&key, &csr, cn))?;
        run(Command::new(&openssl)
            .args(["x509", "-req", "-days", "2", "-set_serial", serial, "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&ca_crt)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&crt))?;
        Ok::<_, TestError>((crt, key))
    };
    let (server_cert, server_key) = issue(
        "server",
        "/CN=127.0.0.1",
        "2",
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost",
    )?;
    let (client_cert, client_key) = issue(
        "client",
        "/CN=rbuild-client",
        "3",
        "extendedKeyUsage=clientAuth",
    )?;
    Ok(TlsMaterial {
        ca: ca_crt,
        server_cert,
        server_key,
        client_cert,
        client_key,
    })
}
