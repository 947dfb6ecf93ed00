//! Throwaway TLS material for the test registry: a CA and a server certificate made with openssl.

use crate::{io_err, need_tool, run, TestError};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Makes `certs/ca.crt` (a throwaway CA, alone in `certs/` for skopeo's cert dirs) and
/// `tls/server.crt` + `tls/server.key` (for 127.0.0.1 and localhost, signed by the CA) under `dir`
/// with openssl (P-256 keys, valid two days). Returns the server certificate and key paths.
pub(crate) fn make_tls_certs(dir: &Path) -> Result<(PathBuf, PathBuf), TestError> {
    let openssl = need_tool("openssl")?;
    let (certs, tls) = (dir.join("certs"), dir.join("tls"));
    for d in [&certs, &tls] {
        fs::create_dir_all(d).map_err(io_err("create", d))?;
    }
    let ca_crt = certs.join("ca.crt");
    let (ca_key, ca_csr, ca_ext) = (tls.join("ca.key"), tls.join("ca.csr"), tls.join("ca.ext"));
    let (key, csr, ext, crt) = (
        tls.join("server.key"),
        tls.join("server.csr"),
        tls.join("server.ext"),
        tls.join("server.crt"),
    );
    fs::write(
        &ca_ext,
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n",
    )
    .map_err(io_err("write", &ca_ext))?;
    fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n\
         subjectAltName=IP:127.0.0.1,DNS:localhost\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
    )
    .map_err(io_err("write", &ext))?;
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
    run(&mut csr_cmd(&key, &csr, "/CN=127.0.0.1"))?;
    run(Command::new(&openssl)
        .args(["x509", "-req", "-days", "2", "-set_serial", "2", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(&ca_crt)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&crt))?;
    Ok((crt, key))
}
