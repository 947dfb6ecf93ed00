//! `--secret` specs (buildx's syntax): `id=ID[,src|source=FILE][,env=VAR][,type=file|env]`.

use super::kv;
use super::SpecError;
use rbuild_worker::SecretSource;
use std::path::PathBuf;
use std::str::FromStr;

/// One `--secret`: the id a `RUN --mount=type=secret,id=ID` names, and where its value is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    /// The secret's id.
    pub id: String,
    /// A file or an environment variable.
    pub source: SecretSource,
}

impl FromStr for SecretSpec {
    type Err = SpecError;

    /// With neither a source nor an env, the variable named ID if it is set (when parsed), else
    /// the file ID, as buildx.
    fn from_str(raw: &str) -> Result<Self, SpecError> {
        let bad = |why: String| SpecError::Secret {
            spec: raw.to_string(),
            why,
        };
        let (mut id, mut kind, mut src, mut env) = (None, None, None, None);
        for field in kv::fields(raw).map_err(|e| bad(e.to_string()))? {
            let Some(v) = field.value else {
                return Err(bad(format!("field `{}` is not key=value", field.raw)));
            };
            match field.key.to_ascii_lowercase().as_str() {
                "id" => id = Some(v),
                "type" => match v.as_str() {
                    "file" | "env" => kind = Some(v),
                    _ => return Err(bad(format!("unsupported secret type `{v}`"))),
                },
                "src" | "source" => src = Some(v),
                "env" => env = Some(v),
                k => return Err(bad(format!("unexpected key `{k}`"))),
            }
        }
        let id = id
            .filter(|i| !i.is_empty())
            .ok_or_else(|| bad("id is required".into()))?;
        let source = match (kind.as_deref(), src, env) {
            (_, _, Some(var)) => SecretSource::Env(var),
            (Some("env"), Some(var), None) => SecretSource::Env(var),
            (Some("env"), None, None) => SecretSource::Env(id.clone()),
            (_, Some(file), None) => SecretSource::File(PathBuf::from(file)),
            (Some("file"), None, None) => SecretSource::File(PathBuf::from(&id)),
            (_, None, None) => {
                if std::env::var_os(&id).is_some() {
                    SecretSource::Env(id.clone())
                } else {
                    SecretSource::File(PathBuf::from(&id))
                }
            }
        };
        Ok(SecretSpec { id, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Option<(String, SecretSource)> {
        s.parse::<SecretSpec>().ok().map(|s| (s.id, s.source))
    }

    #[test]
    fn secrets_parse_like_buildx() {
        assert_eq!(
            p("id=a,src=/f"),
            Some(("a".into(), SecretSource::File("/f".into())))
        );
        assert_eq!(
            p("id=a,source=/f,type=file"),
            Some(("a".into(), SecretSource::File("/f".into())))
        );
        assert_eq!(
            p("id=a,env=V"),
            Some(("a".into(), SecretSource::Env("V".into())))
        );
        assert_eq!(
            p("type=env,id=a,src=V"),
            Some(("a".into(), SecretSource::Env("V".into())))
        );
        assert_eq!(
            p("type=env,id=a"),
            Some(("a".into(), SecretSource::Env("a".into())))
        );
        assert_eq!(
            p("ID=a,SRC=/f"),
            Some(("a".into(), SecretSource::File("/f".into())))
        );
    }

    #[test]
    fn secret_errors_name_the_spec() {
        let err = |s: &str| s.parse::<SecretSpec>().unwrap_err().to_string();
        assert_eq!(err("src=/f"), "invalid secret `src=/f`: id is required");
        assert_eq!(
            err("id=a,type=bogus"),
            "invalid secret `id=a,type=bogus`: unsupported secret type `bogus`"
        );
        assert_eq!(
            err("id=a,what=1"),
            "invalid secret `id=a,what=1`: unexpected key `what`"
        );
        assert_eq!(
            err("id=a,plain"),
            "invalid secret `id=a,plain`: field `plain` is not key=value"
        );
        assert_eq!(
            err(r#"id=a,"src=/f"#),
            r#"invalid secret `id=a,"src=/f`: unterminated quoted field `src=/f`"#
        );
        assert!("src=/f".parse::<SecretSpec>().unwrap_err().is_usage());
    }
}
