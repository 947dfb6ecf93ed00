//! Registry authentication: parsing `WWW-Authenticate` challenges, answering them with Basic
//! credentials or a Bearer token from the challenge's realm (password or identity-token grant),
//! and looking credentials up in docker's config.json (credential helpers included), once per
//! registry on a blocking thread.

use crate::error::chain;
use crate::options::Credentials;
use crate::status::{opt_prefix, registry_message};
use crate::{Reference, RegistryClient, RegistryError};
use reqwest::StatusCode;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A configured credential for one registry.
#[derive(Debug, Clone)]
pub(crate) enum Cred {
    /// Username and password.
    Basic(String, String),
    /// An OAuth2 refresh token (docker login with an identity token).
    IdentityToken(String),
}

/// The authorization cached for one registry and scope set.
#[derive(Debug, Clone)]
pub(crate) enum Auth {
    /// Username and password sent with every request.
    Basic(String, String),
    /// A token from the realm, good until `expires`.
    Bearer {
        /// The bearer token.
        token: String,
        /// When to stop sending it (a little before the registry's expiry).
        expires: Instant,
    },
}

impl RegistryClient {
    /// Answers a challenge: `Ok(None)` when there is nothing to try (no credentials for Basic).
    pub(crate) async fn authenticate(
        &self,
        r: &Reference,
        ch: &Challenge,
        scopes: &[String],
    ) -> Result<Option<Auth>, RegistryError> {
        let cred = self.credential(&r.registry).await?;
        match ch.scheme.as_str() {
            "basic" => Ok(match cred {
                Some(Cred::Basic(u, p)) => Some(Auth::Basic(u, p)),
                _ => None,
            }),
            "bearer" => {
                let name = r.name();
                let realm =
                    ch.params
                        .get("realm")
                        .cloned()
                        .ok_or_else(|| RegistryError::Token {
                            name: name.clone(),
                            realm: "(none)".into(),
                            message: "Bearer challenge without realm".into(),
                        })?;
                let service = ch.params.get("service").cloned();
                let mut query: Vec<(&str, String)> = Vec::new();
                if let Some(s) = &service {
                    query.push(("service", s.clone()));
                }
                // One `scope` parameter per scope, as docker and skopeo send them (a cross-repo
                // mount needs `repository:SRC:pull` besides `repository:DST:pull,push`).
                for scope in scopes {
                    query.push(("scope", scope.clone()));
                }
                let token_err = |message: String| RegistryError::Token {
                    name: name.clone(),
                    realm: realm.clone(),
                    message,
                };
                let rb = match &cred {
                    Some(Cred::IdentityToken(t)) => {
                        // OAuth2 refresh-token grant (docker login with an identity token).
                        let mut form = vec![
                            ("grant_type", "refresh_token".to_string()),
                            ("refresh_token", t.clone()),
                            ("client_id", "rbuild".to_string()),
                        ];
                        form.extend(query.iter().cloned());
                        self.http()?.post(&realm).form(&form)
                    }
                    Some(Cred::Basic(u, p)) => self
                        .http()?
                        .get(&realm)
                        .query(&query)
                        .basic_auth(u, Some(p)),
                    None => self.http()?.get(&realm).query(&query),
                };
                let resp = rb.send().await.map_err(|e| token_err(chain(&e)))?;
                let status = resp.status();
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    let detail = registry_message(resp).await;
                    return Err(RegistryError::Unauthorized {
                        name,
                        status: status.to_string(),
                        detail: opt_prefix(
                            ": ",
                            detail.or_else(|| Some("token request refused".into())),
                        ),
                    });
                }
                if !status.is_success() {
                    return Err(token_err(status.to_string()));
                }
                let body = resp.bytes().await.map_err(|e| token_err(chain(&e)))?;
                #[derive(serde::Deserialize)]
                struct TokenResponse {
                    token: Option<String>,
                    access_token: Option<String>,
                    expires_in: Option<u64>,
                }
                let t: TokenResponse = serde_json::from_slice(&body)
                    .map_err(|e| token_err(format!("invalid token response: {e}")))?;
                let token = t
                    .token
                    .or(t.access_token)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| token_err("no token in the response".into()))?;
                let ttl = t.expires_in.unwrap_or(60).max(10);
                Ok(Some(Auth::Bearer {
                    token,
                    expires: Instant::now() + Duration::from_secs(ttl - ttl / 10),
                }))
            }
            _ => Ok(None),
        }
    }

    /// The configured credential for a registry (looked up once, on a blocking thread).
    pub(crate) async fn credential(&self, registry: &str) -> Result<Option<Cred>, RegistryError> {
        if let Some(c) = self
            .inner
            .creds
            .lock()
            .expect("credential cache poisoned")
            .get(registry)
        {
            return Ok(c.clone());
        }
        let source = self.inner.opts.credentials.clone();
        let reg = registry.to_string();
        let found = tokio::task::spawn_blocking(move || lookup_credential(&source, &reg))
            .await
            .map_err(|e| RegistryError::Task {
                what: format!("credentials for {registry}"),
                message: e.to_string(),
            })??;
        self.inner
            .creds
            .lock()
            .expect("credential cache poisoned")
            .insert(registry.to_string(), found.clone());
        Ok(found)
    }
}

/// The credential docker's config (or its credential helper) holds for `registry`, as a user
/// name and secret; an identity token is returned with an empty user name (BuildKit's session
/// auth convention). Blocking: reads files, runs helpers.
pub fn docker_config_credential(registry: &str) -> Result<Option<(String, String)>, RegistryError> {
    Ok(
        match lookup_credential(&Credentials::DockerConfig, registry)? {
            Some(Cred::Basic(user, password)) => Some((user, password)),
            Some(Cred::IdentityToken(token)) => Some((String::new(), token)),
            None => None,
        },
    )
}

/// Looks up the credential for `registry` in `source` (blocking: reads files, runs helpers).
fn lookup_credential(source: &Credentials, registry: &str) -> Result<Option<Cred>, RegistryError> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential as D};
    let server = if registry == crate::reference::DOCKER_HUB {
        "https://index.docker.io/v1/"
    } else {
        registry
    };
    let res = match source {
        Credentials::Anonymous => return Ok(None),
        Credentials::Basic { username, password } => {
            return Ok(Some(Cred::Basic(username.clone(), password.clone())))
        }
        Credentials::DockerConfig => docker_credential::get_credential(server),
        Credentials::ConfigFile(path) => match std::fs::File::open(path) {
            Ok(f) => {
                docker_credential::get_credential_from_reader(std::io::BufReader::new(f), server)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(RegistryError::Credentials {
                    registry: registry.into(),
                    message: format!("read {}: {e}", path.display()),
                })
            }
        },
    };
    match res {
        Ok(D::UsernamePassword(u, p)) => Ok(Some(Cred::Basic(u, p))),
        Ok(D::IdentityToken(t)) => Ok(Some(Cred::IdentityToken(t))),
        Err(E::NoCredentialConfigured | E::ConfigNotFound | E::ConfigReadError) => Ok(None),
        // A helper that has nothing for this server says so on stdout with this exact text
        // (docker-credential-helpers' ErrCredentialsNotFound); docker then goes anonymous.
        Err(E::HelperFailure { stdout, .. })
            if stdout.trim() == "credentials not found in native keychain" =>
        {
            Ok(None)
        }
        Err(e) => Err(RegistryError::Credentials {
            registry: registry.into(),
            message: e.to_string(),
        }),
    }
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Challenge {
    /// Lowercased scheme: `basic`, `bearer`.
    pub(crate) scheme: String,
    /// Parameters by lowercased name (`realm`, `service`, `scope`).
    pub(crate) params: HashMap<String, String>,
}

/// A `WWW-Authenticate` header as `(lowercased scheme, parameters)`.
pub(crate) fn parse_challenge_pub(h: &str) -> (String, HashMap<String, String>) {
    let c = parse_challenge(h);
    (c.scheme, c.params)
}

/// Parses a `WWW-Authenticate` header (one challenge; quoted values unescaped).
pub(crate) fn parse_challenge(h: &str) -> Challenge {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = HashMap::new();
    let b = rest.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i] == b' ') {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let key = rest[ks..i].trim().to_ascii_lowercase();
        if i >= b.len() || b[i] == b',' {
            continue;
        }
        i += 1; // '='
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                let ch = rest[i..].chars().next().unwrap_or(' ');
                val.push(ch);
                i += ch.len_utf8();
            }
            i += 1;
        } else {
            let vs = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            val = rest[vs..i].trim().to_string();
        }
        if !key.is_empty() {
            params.insert(key, val);
        }
    }
    Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["service"], "registry.docker.io");
        assert_eq!(c.params["scope"], "repository:library/busybox:pull,push");
        let c = parse_challenge(r#"Basic realm="basic-realm""#);
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "basic-realm");
        assert_eq!(parse_challenge("Basic").params.len(), 0);
    }
}
