//! The HTTP transport of the registry client: sending requests with the cached auth (one 401
//! challenge answered), retries with exponential backoff for connection errors, 5xx and 429,
//! stall detection (connect and stall timeouts, a separate stall budget), waiting notices while a
//! registry sends nothing, reading small bodies, and mapping transport failures to errors.

use crate::auth::{parse_challenge, Auth};
use crate::call::Call;
use crate::error::chain;
use crate::status::{is_retryable_status, retry_after, status_error};
use crate::{Reference, RegistryClient, RegistryError, RegistryNotice, CONNECT_TIMEOUT_ENV};
use reqwest::header::{HeaderMap, ACCEPT, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use std::time::{Duration, Instant};

/// While a registry sends nothing, a [`RegistryNotice::Waiting`] goes out this often.
const WAIT_NOTICE_INTERVAL: Duration = Duration::from_secs(10);

/// One HTTP request's description, for building errors.
pub(crate) struct Req<'a> {
    /// The repository (and registry).
    pub(crate) r: &'a Reference,
    /// The path under `/v2/REPOSITORY/`, e.g. `manifests/latest`.
    pub(crate) path: String,
    /// The `Accept` header, if any.
    pub(crate) accept: Option<&'a str>,
    /// For messages.
    pub(crate) what: String,
}

/// Counts the failed attempts of one request or transfer, stalls apart from other failures.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    /// Failed attempts of any kind.
    failed: u32,
    /// Failed attempts that were stalls or connect timeouts.
    stalled: u32,
}

/// A failed attempt as a retry notice reports it.
#[derive(Debug)]
pub(crate) struct Failure {
    /// A stall or connect timeout (counted against the stall retries).
    pub(crate) stalled: bool,
    /// A short cause for the notice.
    pub(crate) cause: String,
    /// The wait the registry asked for (`Retry-After`); the backoff delay when `None`.
    pub(crate) delay: Option<Duration>,
}

impl Failure {
    /// A failure waiting for the backoff delay.
    pub(crate) fn new(stalled: bool, cause: String) -> Failure {
        Failure {
            stalled,
            cause,
            delay: None,
        }
    }
}

impl RegistryClient {
    /// Sends a GET with the cached auth for the repository (answering one 401 challenge, retrying
    /// connection errors, 5xx and 429); any non-success status becomes an error.
    pub(crate) async fn send(&self, req: &Req<'_>) -> Result<reqwest::Response, RegistryError> {
        self.send_ranged(req, None).await
    }

    /// [`Self::send`] with an optional `Range: bytes=FROM-` header.
    pub(crate) async fn send_ranged(
        &self,
        req: &Req<'_>,
        range_from: Option<u64>,
    ) -> Result<reqwest::Response, RegistryError> {
        let url = self.url(req.r, &req.path);
        let call = Call {
            r: req.r,
            scopes: vec![format!("repository:{}:pull", req.r.repository)],
            what: req.what.clone(),
            replayable: true,
            push: false,
            upload: false,
        };
        let accept = req.accept;
        let resp = self
            .execute(&call, &|http: &reqwest::Client| {
                let mut rb = http.get(&url);
                if let Some(a) = accept {
                    rb = rb.header(ACCEPT, a);
                }
                if let Some(from) = range_from {
                    rb = rb.header(reqwest::header::RANGE, format!("bytes={from}-"));
                }
                rb
            })
            .await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(status_error(&call, &url, resp).await)
    }

    /// The delay before retry number `attempt` (0-based): base * 2^attempt, capped at 10 s, plus jitter.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let base = self.inner.opts.retry_base_delay;
        let exp = base.saturating_mul(1u32 << attempt.min(16));
        let capped = exp.min(Duration::from_secs(10));
        // Jitter: up to +25%, from the clock (no rand dependency).
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        capped + capped.mul_f64(f64::from(nanos % 1000) / 4000.0)
    }

    /// How many times a failed request may be retried ([`ClientOptions::max_retries`](crate::ClientOptions::max_retries)).
    pub(crate) fn max_retries(&self) -> u32 {
        self.inner.opts.max_retries
    }

    /// Sends the request `make` builds, with the cached auth for `call.scopes`: answers one 401
    /// challenge (token for exactly those scopes), and for replayable requests retries connection
    /// errors, 5xx and 429 with exponential backoff (honouring `Retry-After`). Returns the response
    /// whatever its final status (callers map statuses), except for transport errors.
    pub(crate) async fn execute(
        &self,
        call: &Call<'_>,
        make: &(dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Sync),
    ) -> Result<reqwest::Response, RegistryError> {
        let key = format!("{}|{}", call.r.registry, call.scopes.join(" "));
        let mut authed_after_challenge = false;
        let mut attempts = Attempts::default();
        let http = if call.upload {
            self.upload_http()?
        } else {
            self.http()?
        };
        loop {
            let cached = self
                .inner
                .auth
                .lock()
                .expect("auth cache poisoned")
                .get(&key)
                .cloned();
            let mut rb = make(http);
            rb = match &cached {
                Some(Auth::Basic(u, p)) => rb.basic_auth(u, Some(p)),
                Some(Auth::Bearer { token, expires }) if *expires > Instant::now() => {
                    rb.bearer_auth(token)
                }
                _ => rb,
            };
            let request = match rb.build() {
                Ok(request) => request,
                Err(e) => return Err(self.request_error(call, e)),
            };
            let (method, url) = (request.method().clone(), request.url().clone());
            let started = Instant::now();
            let sent = if call.upload {
                http.execute(request).await
            } else {
                self.watched(call.r, &call.what, http.execute(request))
                    .await
            };
            match &sent {
                Ok(resp) => tracing::debug!(
                    %method,
                    %url,
                    status = resp.status().as_u16(),
                    time = ?started.elapsed(),
                    "registry request"
                ),
                Err(e) => tracing::debug!(
                    %method,
                    %url,
                    error = %e,
                    time = ?started.elapsed(),
                    "registry request failed"
                ),
            }
            let resp = match sent {
                Ok(resp) => resp,
                Err(e) => {
                    // A timed-out connect counts as a stall; the response not starting within
                    // the stall timeout is one.
                    let stalled = e.is_timeout();
                    let read_stall = stalled && !e.is_connect();
                    let url = e.url().map(|u| u.to_string()).unwrap_or_default();
                    let replay = call.replayable && !e.is_builder() && !e.is_redirect();
                    if !replay || !self.may_retry(&attempts, stalled) {
                        return Err(if read_stall {
                            self.stall_error(call.r, &call.what, &url, &attempts)
                        } else {
                            self.request_error(call, e)
                        });
                    }
                    let cause = self.cause_of(&e);
                    self.pause_before_retry(
                        &mut attempts,
                        call.r,
                        &call.what,
                        Failure::new(stalled, cause),
                    )
                    .await;
                    continue;
                }
            };
            let status = resp.status();
            if call.replayable && is_retryable_status(status) && self.may_retry(&attempts, false) {
                let delay = retry_after(resp.headers()).map(|d| d.max(self.backoff(0)));
                drop(resp);
                self.pause_before_retry(
                    &mut attempts,
                    call.r,
                    &call.what,
                    Failure {
                        delay,
                        ..Failure::new(false, status.to_string())
                    },
                )
                .await;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED && !authed_after_challenge {
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(parse_challenge);
                if let Some(ch) = challenge {
                    if let Some(auth) = self.authenticate(call.r, &ch, &call.scopes).await? {
                        self.inner
                            .auth
                            .lock()
                            .expect("auth cache poisoned")
                            .insert(key.clone(), auth);
                        authed_after_challenge = true;
                        continue;
                    }
                }
            }
            return Ok(resp);
        }
    }

    /// Sends `req` and reads its whole body (at most `limit` bytes). A body that breaks off or
    /// stalls is asked for again, within the same retry budget as the request itself.
    pub(crate) async fn get_small(
        &self,
        req: &Req<'_>,
        limit: usize,
    ) -> Result<(HeaderMap, Vec<u8>), RegistryError> {
        let mut attempts = Attempts::default();
        'attempt: loop {
            let mut resp = self.send(req).await?;
            let headers = resp.headers().clone();
            let url = resp.url().to_string();
            let mut out = Vec::new();
            loop {
                match self.watched(req.r, &req.what, resp.chunk()).await {
                    Ok(Some(c)) => {
                        if out.len() + c.len() > limit {
                            return Err(RegistryError::TooLarge {
                                what: req.what.clone(),
                                limit,
                            });
                        }
                        out.extend_from_slice(&c);
                    }
                    Ok(None) => return Ok((headers, out)),
                    Err(e) => {
                        let stalled = e.is_timeout();
                        if !self.may_retry(&attempts, stalled) {
                            return Err(if stalled {
                                self.stall_error(req.r, &req.what, &url, &attempts)
                            } else {
                                transport(&req.what, e)
                            });
                        }
                        let cause = self.cause_of(&e);
                        self.pause_before_retry(
                            &mut attempts,
                            req.r,
                            &req.what,
                            Failure::new(stalled, cause),
                        )
                        .await;
                        continue 'attempt;
                    }
                }
            }
        }
    }

    /// Whether another attempt may follow the failed one (`stalled`: a stall or connect timeout).
    pub(crate) fn may_retry(&self, a: &Attempts, stalled: bool) -> bool {
        a.failed < self.max_retries() && (!stalled || a.stalled < self.inner.opts.max_stall_retries)
    }

    /// Counts a failed attempt, tells the notice sink that another follows, and waits for the
    /// backoff delay (or the failure's own delay, e.g. from `Retry-After`).
    pub(crate) async fn pause_before_retry(
        &self,
        a: &mut Attempts,
        r: &Reference,
        what: &str,
        failure: Failure,
    ) {
        let Failure {
            stalled,
            cause,
            delay,
        } = failure;
        let delay = delay.unwrap_or_else(|| self.backoff(a.failed));
        a.failed += 1;
        let (attempt, attempts) = if stalled {
            a.stalled += 1;
            (a.stalled + 1, self.inner.opts.max_stall_retries + 1)
        } else {
            (a.failed + 1, self.max_retries() + 1)
        };
        self.notify(RegistryNotice::Retrying {
            what: what.to_string(),
            registry: r.registry.clone(),
            cause,
            attempt,
            attempts,
            delay,
        });
        tokio::time::sleep(delay).await;
    }

    /// The error once a stalled request or transfer may not be retried any more.
    pub(crate) fn stall_error(
        &self,
        r: &Reference,
        what: &str,
        url: &str,
        a: &Attempts,
    ) -> RegistryError {
        let attempt = a.stalled + 1;
        RegistryError::Stalled {
            what: what.to_string(),
            registry: r.registry.clone(),
            url: url.to_string(),
            timeout: self.inner.opts.stall_timeout,
            attempt,
            attempts: (self.inner.opts.max_stall_retries + 1).max(attempt),
        }
    }

    /// A short cause for a retry notice: `no response for 30s`, or the innermost error.
    pub(crate) fn cause_of(&self, e: &reqwest::Error) -> String {
        if e.is_timeout() && e.is_connect() {
            format!(
                "connect timed out after {}s",
                self.inner.opts.connect_timeout.as_secs_f64()
            )
        } else if e.is_timeout() {
            format!(
                "no response for {}s",
                self.inner.opts.stall_timeout.as_secs_f64()
            )
        } else {
            root_cause(e)
        }
    }

    /// Awaits `fut`, sending a [`RegistryNotice::Waiting`] every [`WAIT_NOTICE_INTERVAL`] it
    /// takes (only with a notice sink, and a stall timeout longer than the interval).
    pub(crate) async fn watched<F: std::future::Future>(
        &self,
        r: &Reference,
        what: &str,
        fut: F,
    ) -> F::Output {
        let timeout = self.inner.opts.stall_timeout;
        if self.notices.is_none() || timeout <= WAIT_NOTICE_INTERVAL {
            return fut.await;
        }
        tokio::pin!(fut);
        let start = Instant::now();
        loop {
            tokio::select! {
                out = &mut fut => return out,
                () = tokio::time::sleep(WAIT_NOTICE_INTERVAL) => {
                    self.notify(RegistryNotice::Waiting {
                        what: what.to_string(),
                        registry: r.registry.clone(),
                        waited: start.elapsed(),
                        timeout,
                    });
                }
            }
        }
    }

    /// The error for a request that failed before any response: connect (or untrusted
    /// certificate) errors name the registry's address, others are transport errors.
    fn request_error(&self, call: &Call<'_>, e: reqwest::Error) -> RegistryError {
        if e.is_connect() {
            let addr = format!("registry {}", call.r.registry);
            let url_addr = format!("{}://{}", self.scheme(&call.r.registry), call.r.registry);
            let cause = if e.is_timeout() {
                format!(
                    "timed out after {}s (set {CONNECT_TIMEOUT_ENV}=SECONDS to wait longer)",
                    self.inner.opts.connect_timeout.as_secs_f64()
                )
            } else {
                root_cause(&e)
            };
            // rustls's `Error::InvalidCertificate` (rustls is not a direct dependency to downcast to).
            if cause.starts_with("invalid peer certificate") {
                return RegistryError::UntrustedCertificate {
                    what: call.what.clone(),
                    addr: url_addr,
                    cause,
                };
            }
            RegistryError::Connect {
                what: call.what.clone(),
                addr,
                cause,
            }
        } else {
            transport(&call.what, e)
        }
    }
}

/// A transport error for `what` (URL and error chain included).
pub(crate) fn transport(what: &str, e: reqwest::Error) -> RegistryError {
    let url = e.url().map(|u| u.to_string()).unwrap_or_default();
    RegistryError::Transport {
        what: what.to_string(),
        url,
        cause: chain(&e),
    }
}

/// The innermost error of `e` in plain words, e.g. `connection refused`: an OS error's
/// description in lower case without its number (not `Connection refused (os error 111)`, nor
/// the HTTP stack's `tcp connect error: ...` wrappers), a name lookup failure as `no such host`.
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    let mut dns = false;
    loop {
        dns |= cur.to_string().starts_with("dns error");
        if let Some(io) = cur.downcast_ref::<std::io::Error>() {
            if io.raw_os_error().is_some() {
                return os_words(io);
            }
        }
        match cur.source() {
            Some(s) => cur = s,
            None => break,
        }
    }
    if dns {
        return "no such host".to_string();
    }
    cur.to_string()
}

/// `Connection refused (os error 111)` -> `connection refused`.
fn os_words(io: &std::io::Error) -> String {
    let text = io.to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_read_as_plain_words() {
        let refused = std::io::Error::from_raw_os_error(111);
        assert_eq!(root_cause(&refused), "connection refused");
        #[derive(Debug, thiserror::Error)]
        #[error("tcp connect error")]
        struct Wrapper(#[source] std::io::Error);
        let wrapped = Wrapper(std::io::Error::from_raw_os_error(113));
        assert_eq!(root_cause(&wrapped), "no route to host");
        let plain = std::io::Error::other("no such thing");
        assert_eq!(root_cause(&plain), "no such thing");
    }
}
