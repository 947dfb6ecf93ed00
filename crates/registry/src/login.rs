//! `rbuild login`: checking credentials against a registry and saving them the way `docker login`
//! does (docker's `config.json`, or the configured credential helper).

use crate::auth::parse_challenge_pub;
use crate::error::chain;
use crate::{RegistryClient, RegistryError};
use reqwest::header::WWW_AUTHENTICATE;
use reqwest::StatusCode;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The key Docker Hub's credentials live under in config.json.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path() -> PathBuf {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("config.json"),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".docker/config.json"),
    }
}

/// The config.json key for a registry: Docker Hub's aliases map to [`DOCKER_HUB_AUTH_KEY`].
pub fn auth_key(registry: &str) -> String {
    let r = registry
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let host = r.split('/').next().unwrap_or(r);
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB_AUTH_KEY.to_string()
        }
        _ => host.to_string(),
    }
}

/// The registry `docker login SERVER` logs in to: the host (and port) of `server` without a
/// scheme or path, Docker Hub's aliases (`index.docker.io`, `registry-1.docker.io`) as
/// `docker.io`, and `docker.io` when no server is given.
pub fn login_server(server: Option<&str>) -> String {
    let host = server
        .unwrap_or("docker.io")
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .split('/')
        .next()
        .unwrap_or("");
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => host.to_string(),
    }
}

/// Where [`save_login`] put the credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SavedTo {
    /// The `auths` section of this file.
    File(PathBuf),
    /// `docker-credential-NAME store`.
    Helper(String),
}

fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Saves `username`/`password` for `registry` like `docker login`: into the credential helper
/// named by `credHelpers[KEY]` or `credsStore` when set, else as base64 `auth` in `auths[KEY]` of
/// `config` (other content kept; written atomically with mode 0600).
pub fn save_login(
    config: &Path,
    registry: &str,
    username: &str,
    password: &str,
) -> Result<SavedTo, RegistryError> {
    let key = auth_key(registry);
    let err = |message: String| RegistryError::Credentials {
        registry: registry.to_string(),
        message,
    };
    let mut doc: serde_json::Value = match std::fs::read(config) {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => serde_json::json!({}),
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| err(format!("{} is not valid JSON: {e}", config.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(err(format!("read {}: {e}", config.display()))),
    };
    if !doc.is_object() {
        return Err(err(format!("{} is not a JSON object", config.display())));
    }
    let helper = doc
        .get("credHelpers")
        .and_then(|h| h.get(&key))
        .and_then(|h| h.as_str())
        .or_else(|| doc.get("credsStore").and_then(|h| h.as_str()))
        .filter(|h| !h.is_empty())
        .map(str::to_string);
    if let Some(h) = helper {
        let prog = format!("docker-credential-{h}");
        let mut child = std::process::Command::new(&prog)
            .arg("store")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("run {prog}: {e}")))?;
        let payload =
            serde_json::json!({"ServerURL": key, "Username": username, "Secret": password});
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(payload.to_string().as_bytes())
                .map_err(|e| err(format!("write to {prog}: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| err(format!("wait for {prog}: {e}")))?;
        if !out.status.success() {
            return Err(err(format!(
                "{prog} store failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        return Ok(SavedTo::Helper(prog));
    }
    let obj = doc.as_object_mut().expect("checked above");
    let auths = obj.entry("auths").or_insert_with(|| serde_json::json!({}));
    if !auths.is_object() {
        *auths = serde_json::json!({});
    }
    auths.as_object_mut().expect("object").insert(
        key,
        serde_json::json!({ "auth": base64(format!("{username}:{password}").as_bytes()) }),
    );
    let dir = config.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| err(format!("create {}: {e}", dir.display())))?;
    let tmp = dir.join(format!(".config.json.rbuild-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut text = serde_json::to_string_pretty(&doc).map_err(std::io::Error::other)?;
        text.push('\n');
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, config)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(format!("write {}: {e}", config.display()))
    })?;
    Ok(SavedTo::File(config.to_path_buf()))
}

/// Removes the saved credentials of `registry` like `docker logout`: the `auths[KEY]` entry of
/// `config` (the file rewritten atomically, other content kept) and, when a credential helper is
/// configured for the key (`credHelpers[KEY]` or `credsStore`), `docker-credential-NAME erase`.
/// Returns whether anything was removed (`false`: not logged in).
pub fn remove_login(config: &Path, registry: &str) -> Result<bool, RegistryError> {
    let key = auth_key(registry);
    let err = |message: String| RegistryError::Credentials {
        registry: registry.to_string(),
        message,
    };
    let mut doc: serde_json::Value = match std::fs::read(config) {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => return Ok(false),
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| err(format!("{} is not valid JSON: {e}", config.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(err(format!("read {}: {e}", config.display()))),
    };
    let helper = doc
        .get("credHelpers")
        .and_then(|h| h.get(&key))
        .and_then(|h| h.as_str())
        .or_else(|| doc.get("credsStore").and_then(|h| h.as_str()))
        .filter(|h| !h.is_empty())
        .map(str::to_string);
    let mut removed = false;
    if let Some(h) = helper {
        let prog = format!("docker-credential-{h}");
        let mut child = std::process::Command::new(&prog)
            .arg("erase")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("run {prog}: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(key.as_bytes())
                .map_err(|e| err(format!("write to {prog}: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| err(format!("wait for {prog}: {e}")))?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        if out.status.success() {
            removed = true;
        } else if !said.to_ascii_lowercase().contains("not found") {
            return Err(err(format!("{prog} erase failed ({}): {said}", out.status)));
        }
    }
    let in_file = doc
        .get_mut("auths")
        .and_then(|a| a.as_object_mut())
        .and_then(|a| a.remove(&key))
        .is_some();
    if in_file {
        write_config(config, &doc).map_err(|e| err(format!("write {}: {e}", config.display())))?;
        removed = true;
    }
    Ok(removed)
}

/// Writes `doc` to `config` atomically (a temp file in its directory, mode 0600, renamed over).
fn write_config(config: &Path, doc: &serde_json::Value) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = config.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".config.json.rbuild-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut text = serde_json::to_string_pretty(doc).map_err(std::io::Error::other)?;
        text.push('\n');
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, config)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

impl RegistryClient {
    /// Checks `username`/`password` against `registry` the way `docker login` does: `GET /v2/`,
    /// then Basic auth or a token request (no scope) per the challenge. `Ok` when accepted.
    pub async fn check_login(
        &self,
        registry: &str,
        username: &str,
        password: &str,
    ) -> Result<(), RegistryError> {
        let base = self.registry_base(registry);
        let url = format!("{base}/v2/");
        let denied = |status: StatusCode, detail: &str| RegistryError::Unauthorized {
            name: registry.to_string(),
            status: status.to_string(),
            detail: format!(": login refused{detail}"),
        };
        let transport = |e: reqwest::Error| RegistryError::Transport {
            what: format!("login to {registry}"),
            url: url.clone(),
            cause: chain(&e),
        };
        let http = self.http()?;
        let resp = http.get(&url).send().await.map_err(transport)?;
        if resp.status().is_success() {
            return Ok(());
        }
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Err(RegistryError::Http {
                what: format!("login to {registry}"),
                status: resp.status().to_string(),
                url: url.clone(),
                detail: String::new(),
            });
        }
        let ch = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(parse_challenge_pub)
            .unwrap_or_default();
        let resp = match ch.0.as_str() {
            "bearer" => {
                let realm = ch.1.get("realm").cloned().unwrap_or_default();
                let mut q: Vec<(&str, String)> = vec![("account", username.to_string())];
                if let Some(s) = ch.1.get("service") {
                    q.push(("service", s.clone()));
                }
                http.get(&realm)
                    .query(&q)
                    .basic_auth(username, Some(password))
                    .send()
                    .await
                    .map_err(transport)?
            }
            _ => http
                .get(&url)
                .basic_auth(username, Some(password))
                .send()
                .await
                .map_err(transport)?,
        };
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(denied(resp.status(), ""))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_servers_normalise_like_docker_login() {
        assert_eq!(login_server(None), "docker.io");
        assert_eq!(login_server(Some("index.docker.io")), "docker.io");
        assert_eq!(
            login_server(Some("https://registry-1.docker.io/v2/")),
            "docker.io"
        );
        assert_eq!(
            login_server(Some("http://localhost:5000/")),
            "localhost:5000"
        );
        assert_eq!(login_server(Some("ghcr.io/owner")), "ghcr.io");
    }

    #[test]
    fn keys_and_base64() {
        assert_eq!(auth_key("docker.io"), DOCKER_HUB_AUTH_KEY);
        assert_eq!(auth_key("index.docker.io"), DOCKER_HUB_AUTH_KEY);
        assert_eq!(auth_key("https://index.docker.io/v1/"), DOCKER_HUB_AUTH_KEY);
        assert_eq!(auth_key("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(
            auth_key("123456789012.dkr.ecr.us-east-1.amazonaws.com"),
            "123456789012.dkr.ecr.us-east-1.amazonaws.com"
        );
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
    }

    #[test]
    fn save_merges_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let cfg = t.path().join("d/config.json");
        std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
        std::fs::write(
            &cfg,
            r#"{"auths":{"other.io":{"auth":"eDp5"}},"psFormat":"table"}"#,
        )
        .unwrap();
        let saved = save_login(&cfg, "docker.io", "me", "secret").unwrap();
        assert_eq!(saved, SavedTo::File(cfg.clone()));
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
        assert_eq!(v["psFormat"], "table");
        assert_eq!(v["auths"]["other.io"]["auth"], "eDp5");
        assert_eq!(
            v["auths"][DOCKER_HUB_AUTH_KEY]["auth"],
            base64(b"me:secret")
        );
        let mode = std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
