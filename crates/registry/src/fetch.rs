//! Plain HTTP(S) downloads for `ADD <url>`: [`fetch_url`] streams a URL's body to a file while
//! hashing it, and reports the `Last-Modified` time.

use crate::RegistryError;
use rbuild_oci::{Digest, Sha256Writer};
use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

/// What [`fetch_url`] downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedUrl {
    /// sha256 of the body.
    pub digest: Digest,
    /// Body size in bytes.
    pub size: u64,
    /// The `Last-Modified` header, when present and valid.
    pub last_modified: Option<SystemTime>,
    /// The file name from `Content-Disposition: ...; filename=...`, when present.
    pub disposition_filename: Option<String>,
}

/// GETs `url` (http or https, redirects followed) and writes the body to `dest` (created or
/// truncated). Any status but 2xx is an error naming the URL. The registry client's connect and
/// stall timeouts apply ([`crate::CONNECT_TIMEOUT_ENV`], [`crate::STALL_TIMEOUT_ENV`]).
pub async fn fetch_url(url: &str, dest: &Path) -> Result<FetchedUrl, RegistryError> {
    let what = url.to_string();
    let transport = |cause: String| RegistryError::Transport {
        what: what.clone(),
        url: url.to_string(),
        cause,
    };
    use crate::options::timeout_from_env;
    let connect =
        timeout_from_env(crate::CONNECT_TIMEOUT_ENV)?.unwrap_or(crate::DEFAULT_CONNECT_TIMEOUT);
    let stall = timeout_from_env(crate::STALL_TIMEOUT_ENV)?.unwrap_or(crate::DEFAULT_STALL_TIMEOUT);
    let client = reqwest::Client::builder()
        .user_agent(concat!("rbuild/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(connect)
        .read_timeout(stall)
        .build()
        .map_err(|e| transport(error_chain(&e)))?;
    let error_chain = |e: &reqwest::Error| {
        if e.is_timeout() && !e.is_connect() {
            format!(
                "no response for {}s (set {}=SECONDS to wait longer)",
                stall.as_secs_f64(),
                crate::STALL_TIMEOUT_ENV
            )
        } else {
            error_chain(e)
        }
    };
    let started = std::time::Instant::now();
    let sent = client.get(url).send().await;
    match &sent {
        Ok(resp) => tracing::debug!(
            method = "GET",
            url,
            status = resp.status().as_u16(),
            time = ?started.elapsed(),
            "http request"
        ),
        Err(e) => tracing::debug!(
            method = "GET",
            url,
            error = %e,
            time = ?started.elapsed(),
            "http request failed"
        ),
    }
    let mut resp = sent.map_err(|e| {
        if e.is_connect() {
            RegistryError::Connect {
                what: what.clone(),
                addr: url.to_string(),
                cause: if e.is_timeout() {
                    error_chain(&e)
                } else {
                    crate::transport::root_cause(&e)
                },
            }
        } else {
            transport(error_chain(&e))
        }
    })?;
    let status = resp.status();
    if !status.is_success() {
        return Err(RegistryError::Http {
            what: what.clone(),
            status: status.to_string(),
            url: url.to_string(),
            detail: String::new(),
        });
    }
    let header = |name: reqwest::header::HeaderName| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let last_modified = header(reqwest::header::LAST_MODIFIED).and_then(|v| parse_http_date(&v));
    let disposition_filename =
        header(reqwest::header::CONTENT_DISPOSITION).and_then(|v| disposition_filename(&v));
    let file = std::fs::File::create(dest)
        .map_err(|e| transport(format!("create {}: {e}", dest.display())))?;
    let mut out = Sha256Writer::new(std::io::BufWriter::new(file));
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport(error_chain(&e)))? {
        out.write_all(&chunk)
            .map_err(|e| transport(format!("write {}: {e}", dest.display())))?;
    }
    let (digest, size, mut buf) = out.finish();
    buf.flush()
        .map_err(|e| transport(format!("write {}: {e}", dest.display())))?;
    Ok(FetchedUrl {
        digest,
        size,
        last_modified,
        disposition_filename,
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn disposition_filename(v: &str) -> Option<String> {
    v.split(';').find_map(|part| {
        let (k, val) = part.trim().split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("filename") {
            return None;
        }
        let name = val.trim().trim_matches('"');
        let base = name.rsplit(['/', '\\']).next().unwrap_or("");
        (!base.is_empty() && base != "." && base != "..").then(|| base.to_string())
    })
}

/// Parses an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, or the obsolete RFC 850 and asctime
/// forms recipients must accept), as `Last-Modified` carries it.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_and_dispositions() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            784111777
        );
        assert!(parse_http_date("yesterday").is_none());
        assert_eq!(
            disposition_filename("attachment; filename=\"a/b.txt\"").as_deref(),
            Some("b.txt")
        );
        assert_eq!(disposition_filename("inline"), None);
    }
}
