//! The reqwest clients under [`RegistryClient`](crate::RegistryClient): rustls (ring) with the
//! system roots plus extra trusted CAs from PEM data, the user agent, the redirect limit, and the
//! connect and stall (read) timeouts a client is built with.

use crate::error::chain;
use crate::options::ClientOptions;
use crate::RegistryError;
use std::time::Duration;

/// The `User-Agent` of every registry request.
const USER_AGENT: &str = concat!("rbuild/", env!("CARGO_PKG_VERSION"));

/// The extra trusted CA certificates of `opts` (none without `extra_ca_pem`); PEM data without a
/// certificate is an error.
pub(crate) fn extra_roots(
    opts: &ClientOptions,
) -> Result<Vec<reqwest::Certificate>, RegistryError> {
    let Some(pem) = &opts.extra_ca_pem else {
        return Ok(Vec::new());
    };
    let certs = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|e| RegistryError::Setup(format!("extra CA certificate: {}", chain(&e))))?;
    if certs.is_empty() {
        return Err(RegistryError::Setup(
            "extra CA certificate: no certificate in the PEM data".into(),
        ));
    }
    Ok(certs)
}

/// A client trusting the system roots and `roots`, with `opts.connect_timeout`, and `stall` as
/// the read timeout when given (none for blob uploads, whose body may take any time to send).
pub(crate) fn build_http(
    opts: &ClientOptions,
    roots: &[reqwest::Certificate],
    stall: Option<Duration>,
) -> Result<reqwest::Client, RegistryError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(opts.connect_timeout)
        .redirect(reqwest::redirect::Policy::limited(10));
    if let Some(t) = stall {
        // reqwest: the response must start within `t` of the request, then every body
        // read within `t` of the previous one.
        builder = builder.read_timeout(t);
    }
    for c in roots {
        builder = builder.add_root_certificate(c.clone());
    }
    builder.build().map_err(|e| RegistryError::Setup(chain(&e)))
}
