//! What a registry's response means: which statuses are worth a retry, `Retry-After`, and the
//! typed [`RegistryError`] for a final non-success response (from its status and the
//! distribution or ECR error body).

use crate::call::Call;
use crate::RegistryError;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use std::time::Duration;

/// 5xx and 429 are worth another attempt.
pub(crate) fn is_retryable_status(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// `Retry-After` in seconds (HTTP dates are not used by registries), capped at 60 s.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: u64 = v.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(60)))
}

/// The error for a final non-success response of `call`.
pub(crate) async fn status_error(
    call: &Call<'_>,
    url: &str,
    resp: reqwest::Response,
) -> RegistryError {
    let status = resp.status();
    let (code, message) = registry_error_body(resp).await;
    let detail = message.clone().or_else(|| code.clone());
    let name = call.r.name();
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if call.push => {
            RegistryError::PushDenied {
                name,
                status: status.to_string(),
                detail: opt_prefix(": ", detail),
            }
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Unauthorized {
            name,
            status: status.to_string(),
            detail: opt_prefix(": ", detail),
        },
        StatusCode::NOT_FOUND
            if call.push
                && (code.as_deref() == Some("NAME_UNKNOWN")
                    || detail
                        .as_deref()
                        .is_some_and(|d| d.contains("RepositoryNotFoundException"))) =>
        {
            RegistryError::RepositoryNotFound {
                registry: call.r.registry.clone(),
                repository: call.r.repository.clone(),
                detail: opt_prefix(": ", detail),
            }
        }
        StatusCode::NOT_FOUND => RegistryError::NotFound {
            what: call.what.clone(),
            detail: detail.map(|d| format!(" ({d})")).unwrap_or_default(),
        },
        _ => RegistryError::Http {
            what: call.what.clone(),
            status: status.to_string(),
            url: url.to_string(),
            detail: opt_prefix(": ", detail),
        },
    }
}

/// `errors[0].code` and `errors[0].message` of a distribution error body (ECR's
/// `RepositoryNotFoundException` JSON too).
async fn registry_error_body(resp: reqwest::Response) -> (Option<String>, Option<String>) {
    let Ok(body) = resp.bytes().await else {
        return (None, None);
    };
    parse_error_body(&body)
}

/// `(code, message)` of an error body: distribution `errors[0]`, ECR's `__type`, or short text.
pub(crate) fn parse_error_body(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        let text = String::from_utf8_lossy(body).trim().to_string();
        return (None, (!text.is_empty() && text.len() < 500).then_some(text));
    };
    let s = |v: Option<&serde_json::Value>| {
        v.and_then(|m| m.as_str())
            .filter(|m| !m.is_empty())
            .map(str::to_string)
    };
    if let Some(e) = v.get("errors").and_then(|e| e.get(0)) {
        return (s(e.get("code")), s(e.get("message")));
    }
    // ECR's API error shape: {"__type":"RepositoryNotFoundException","message":"..."}
    let typ = s(v.get("__type"));
    let msg = s(v.get("message")).map(|m| match &typ {
        Some(t) => format!("{t}: {m}"),
        None => m,
    });
    (typ, msg)
}

/// `prefix` + `s`, or nothing without `s`.
pub(crate) fn opt_prefix(prefix: &str, s: Option<String>) -> String {
    s.map(|s| format!("{prefix}{s}")).unwrap_or_default()
}

/// The first `errors[].message` of a distribution error body.
pub(crate) async fn registry_message(resp: reqwest::Response) -> Option<String> {
    let body = resp.bytes().await.ok()?;
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let e = v.get("errors")?.get(0)?;
    let msg = e
        .get("message")
        .and_then(|m| m.as_str())
        .filter(|m| !m.is_empty());
    msg.or_else(|| e.get("code").and_then(|c| c.as_str()))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_and_retry_after() {
        let (code, msg) = parse_error_body(
            br#"{"errors":[{"code":"NAME_UNKNOWN","message":"The repository with name 'app' does not exist in the registry with id '123456789012'"}]}"#,
        );
        assert_eq!(code.as_deref(), Some("NAME_UNKNOWN"));
        assert!(msg.unwrap().contains("'app' does not exist"));
        let (code, msg) = parse_error_body(
            br#"{"__type":"RepositoryNotFoundException","message":"repo missing"}"#,
        );
        assert_eq!(code.as_deref(), Some("RepositoryNotFoundException"));
        assert_eq!(
            msg.as_deref(),
            Some("RepositoryNotFoundException: repo missing")
        );
        assert_eq!(parse_error_body(b"").1, None);
        assert_eq!(parse_error_body(b"oops\n").1.as_deref(), Some("oops"));
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(reqwest::header::RETRY_AFTER, "9999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(60)));
        assert!(is_retryable_status(StatusCode::TOO_MANY_REQUESTS));
        assert!(is_retryable_status(StatusCode::BAD_GATEWAY));
        assert!(!is_retryable_status(StatusCode::NOT_FOUND));
    }
}
