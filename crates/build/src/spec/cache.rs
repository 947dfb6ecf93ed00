//! `--cache-to` / `--cache-from` specs: a build cache in a registry (`type=registry,ref=REF`) or
//! an OCI layout directory (`type=local,dest=DIR` / `type=local,src=DIR`, optional `tag=`).

use super::kv;
use super::SpecError;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

/// Where a build cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    /// `type=registry,ref=REF`.
    Registry(String),
    /// `type=local,dest|src=DIR[,tag=TAG]`: an OCI layout.
    Local {
        /// The layout directory.
        dir: PathBuf,
        /// The tag of the cache manifest in it (default `latest`).
        tag: String,
    },
}

impl std::fmt::Display for CacheLocation {
    /// The reference or the directory, as progress lines name a cache.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheLocation::Registry(r) => f.write_str(r),
            CacheLocation::Local { dir, .. } => write!(f, "{}", dir.display()),
        }
    }
}

/// One `--cache-to type=registry,ref=REF[,mode=min|max]` / `type=local,dest=DIR[,mode=..]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheToSpec {
    /// Where the cache goes.
    pub location: CacheLocation,
    /// `mode=max`: every result of the build; `mode=min` (default): the final result only.
    pub max: bool,
}

/// One `--cache-from type=registry,ref=REF` / `type=local,src=DIR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheFromSpec {
    /// Where the cache is read.
    pub location: CacheLocation,
}

fn fields(flag: &'static str, spec: &str) -> Result<BTreeMap<String, String>, SpecError> {
    let bad = |why: String| SpecError::Cache {
        flag,
        spec: spec.to_string(),
        why,
    };
    let mut out = BTreeMap::new();
    for field in kv::fields(spec).map_err(|e| bad(e.to_string()))? {
        if field.raw.trim().is_empty() {
            continue;
        }
        let Some(v) = field.value else {
            return Err(bad(format!("`{}` is not key=value", field.raw)));
        };
        out.insert(field.key.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

fn location(
    flag: &'static str,
    spec: &str,
    f: &BTreeMap<String, String>,
    dir_key: &str,
) -> Result<CacheLocation, SpecError> {
    let bad = |why: String| SpecError::Cache {
        flag,
        spec: spec.to_string(),
        why,
    };
    match f.get("type").map(String::as_str) {
        Some("registry") => match f.get("ref") {
            Some(r) if !r.is_empty() => match rbuild_registry::Reference::parse(r) {
                Ok(_) => Ok(CacheLocation::Registry(r.clone())),
                Err(e) => Err(bad(format!("ref={r}: {e}"))),
            },
            _ => Err(bad("type=registry needs ref=REF".into())),
        },
        Some("local") => match f.get(dir_key) {
            Some(d) if !d.is_empty() => Ok(CacheLocation::Local {
                dir: PathBuf::from(d),
                tag: f.get("tag").cloned().unwrap_or_else(|| "latest".into()),
            }),
            _ => Err(bad(format!("type=local needs {dir_key}=DIR"))),
        },
        Some(other) => Err(bad(format!(
            "unsupported cache type `{other}` (supported: registry, local)"
        ))),
        None => Err(bad("no type=...".into())),
    }
}

impl FromStr for CacheToSpec {
    type Err = SpecError;

    fn from_str(spec: &str) -> Result<Self, SpecError> {
        let f = fields("--cache-to", spec)?;
        let max = match f.get("mode").map(String::as_str) {
            None | Some("min") => false,
            Some("max") => true,
            Some(other) => {
                return Err(SpecError::Cache {
                    flag: "--cache-to",
                    spec: spec.to_string(),
                    why: format!("mode must be min or max, not `{other}`"),
                })
            }
        };
        Ok(CacheToSpec {
            location: location("--cache-to", spec, &f, "dest")?,
            max,
        })
    }
}

impl FromStr for CacheFromSpec {
    type Err = SpecError;

    fn from_str(spec: &str) -> Result<Self, SpecError> {
        let f = fields("--cache-from", spec)?;
        Ok(CacheFromSpec {
            location: location("--cache-from", spec, &f, "src")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_specs_parse() {
        assert_eq!(
            "type=registry,ref=r/c:1,mode=max"
                .parse::<CacheToSpec>()
                .unwrap(),
            CacheToSpec {
                location: CacheLocation::Registry("r/c:1".into()),
                max: true
            }
        );
        assert_eq!(
            "type=local,dest=/d,".parse::<CacheToSpec>().unwrap(),
            CacheToSpec {
                location: CacheLocation::Local {
                    dir: "/d".into(),
                    tag: "latest".into()
                },
                max: false
            }
        );
        assert_eq!(
            "type=local,src=/d,tag=t".parse::<CacheFromSpec>().unwrap(),
            CacheFromSpec {
                location: CacheLocation::Local {
                    dir: "/d".into(),
                    tag: "t".into()
                }
            }
        );
    }

    #[test]
    fn cache_errors_name_the_flag_and_spec() {
        let to = |s: &str| s.parse::<CacheToSpec>().unwrap_err().to_string();
        let from = |s: &str| s.parse::<CacheFromSpec>().unwrap_err().to_string();
        assert_eq!(
            to("type=local,src=/d"),
            "--cache-to `type=local,src=/d`: type=local needs dest=DIR"
        );
        assert_eq!(
            to("type=registry,ref=r,mode=all"),
            "--cache-to `type=registry,ref=r,mode=all`: mode must be min or max, not `all`"
        );
        assert_eq!(
            to("type=gha"),
            "--cache-to `type=gha`: unsupported cache type `gha` (supported: registry, local)"
        );
        assert_eq!(to("ref=x"), "--cache-to `ref=x`: no type=...");
        assert_eq!(
            from("type=registry"),
            "--cache-from `type=registry`: type=registry needs ref=REF"
        );
        assert_eq!(
            from("type=local,oops"),
            "--cache-from `type=local,oops`: `oops` is not key=value"
        );
        assert!("type=gha".parse::<CacheToSpec>().unwrap_err().is_usage());
    }
}
