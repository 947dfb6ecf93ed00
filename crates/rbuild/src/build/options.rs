//! Parsing of the `rbuild build` option values: `--output` specs, `--secret` specs, layer
//! compression from the outputs, and `--build-arg`s.

use crate::errors::Report;
use rbuild_exporter::LayerOptions;
use rbuild_worker::SecretSource;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One `--output`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Output {
    /// An OCI image layout (a tar, or a directory with `tar=false`); `name=` names it when no
    /// `-t` is given (buildx replaces it with the `-t` names otherwise).
    Oci {
        dest: PathBuf,
        tar: bool,
        names: Vec<String>,
    },
    /// A `docker load` tarball, named like `Oci`.
    Docker { dest: PathBuf, names: Vec<String> },
    /// The final filesystem copied into a directory.
    Local { dest: PathBuf },
    /// The final filesystem as one tar file.
    Tar { dest: PathBuf },
    /// `type=image,name=A[,name=B],push=true` (`type=registry` implies push).
    Image { names: Vec<String>, push: bool },
}

/// Parses one `--output` like buildx: `type=oci|docker|local|tar|image|registry,dest=...`.
pub(super) fn parse_output(spec: &str) -> Result<Output, Report> {
    let mut fields = BTreeMap::new();
    for part in spec.split(',') {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        fields.insert(k.trim().to_string(), v.trim().to_string());
    }
    let dest = fields.get("dest").map(PathBuf::from);
    let need_dest = |kind: &str| {
        dest.clone()
            .ok_or_else(|| Report::new(format!("error: --output type={kind} needs dest=PATH")))
    };
    match fields.get("type").map(String::as_str) {
        Some("oci") => Ok(Output::Oci {
            dest: need_dest("oci")?,
            tar: fields.get("tar").map(|v| v != "false").unwrap_or(true),
            names: output_names(spec),
        }),
        Some("docker") => Ok(Output::Docker {
            dest: need_dest("docker")?,
            names: output_names(spec),
        }),
        Some("local") => Ok(Output::Local {
            dest: need_dest("local")?,
        }),
        Some("tar") => Ok(Output::Tar {
            dest: need_dest("tar")?,
        }),
        Some(kind @ ("image" | "registry")) => {
            let names = output_names(spec);
            let push = kind == "registry" || fields.get("push").is_some_and(|v| v == "true");
            if names.is_empty() && push {
                return Err(Report::new(format!(
                    "error: --output type={kind} needs name=REF to push"
                )));
            }
            Ok(Output::Image { names, push })
        }
        Some(other) => Err(Report::new(format!(
            "error: unsupported output type `{other}` (supported: oci, docker, local, image, registry)"
        ))),
        None => Err(Report::new(format!(
            "error: --output `{spec}` has no type=..."
        ))),
    }
}

/// The `name=` values of an output: `name=a,b` (buildx's CSV) and repeated `name=` both give
/// several names.
fn output_names(spec: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_name = false;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("name", v)) => {
                in_name = true;
                names.push(v.trim_matches('"').to_string());
            }
            Some(_) => in_name = false,
            None if in_name => names.push(part.trim_matches('"').to_string()),
            None => {}
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

/// Parses `--secret` like buildx: `id=ID[,src|source=FILE][,env=VAR][,type=file|env]`; with
/// neither a source nor an env, the variable named ID if set, else the file ID.
pub(super) fn parse_secret(raw: &str) -> Result<(String, SecretSource), Report> {
    let bad = |why: &str| Report::new(format!("error: invalid secret `{raw}`: {why}")).with_code(2);
    let (mut id, mut kind, mut src, mut env) = (None, None, None, None);
    for field in raw.split(',') {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| bad(&format!("field `{field}` is not key=value")))?;
        match k.to_ascii_lowercase().as_str() {
            "id" => id = Some(v.to_string()),
            "type" => match v {
                "file" | "env" => kind = Some(v.to_string()),
                _ => return Err(bad(&format!("unsupported secret type `{v}`"))),
            },
            "src" | "source" => src = Some(v.to_string()),
            "env" => env = Some(v.to_string()),
            _ => return Err(bad(&format!("unexpected key `{k}`"))),
        }
    }
    let id = id
        .filter(|i| !i.is_empty())
        .ok_or_else(|| bad("id is required"))?;
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
    Ok((id, source))
}

/// Layer compression from the outputs' `compression=gzip|zstd|uncompressed`, `compression-level=N`
/// and `force-compression=true` (the image is assembled once, so the first output that sets them wins).
pub(super) fn layer_options(specs: &[String]) -> Result<LayerOptions, Report> {
    let mut opts = LayerOptions::default();
    for spec in specs {
        let fields: BTreeMap<&str, &str> = spec
            .split(',')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        if let Some(c) = fields.get("compression") {
            opts.compression = match *c {
                "gzip" => rbuild_oci::Compression::Gzip,
                "zstd" => rbuild_oci::Compression::Zstd,
                "uncompressed" => rbuild_oci::Compression::None,
                other => {
                    return Err(Report::new(format!(
                        "error: unsupported compression `{other}` (gzip, zstd, uncompressed)"
                    )))
                }
            };
            if let Some(level) = fields.get("compression-level") {
                let level: i32 = level.parse().map_err(|_| {
                    Report::new(format!("error: invalid compression-level `{level}`"))
                })?;
                match opts.compression {
                    rbuild_oci::Compression::Gzip => {
                        opts.gzip_level = Some(level.clamp(0, 9) as u32)
                    }
                    rbuild_oci::Compression::Zstd => opts.zstd_level = Some(level.clamp(1, 22)),
                    rbuild_oci::Compression::None => {}
                }
            }
            opts.force_compression = fields
                .get("force-compression")
                .is_some_and(|v| *v == "true");
            break;
        }
    }
    Ok(opts)
}

/// The `--build-arg`s as a map: `K=V`, or a bare `K` taking its value from the environment.
pub(super) fn parse_build_args(raw: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for arg in raw {
        match arg.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(arg) {
                    out.insert(arg.clone(), v);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_parse_like_buildx() {
        let p = |s: &str| parse_secret(s).ok();
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
        assert!(p("src=/f").is_none());
        assert!(p("id=a,type=bogus").is_none());
        assert!(p("id=a,what=1").is_none());
    }

    #[test]
    fn outputs_parse() {
        assert_eq!(
            parse_output("type=oci,dest=/x").unwrap(),
            Output::Oci {
                dest: "/x".into(),
                tar: true,
                names: vec![]
            }
        );
        assert_eq!(
            parse_output("type=oci,dest=/x,tar=false,name=app/x:1").unwrap(),
            Output::Oci {
                dest: "/x".into(),
                tar: false,
                names: vec!["app/x:1".into()]
            }
        );
        assert_eq!(
            parse_output("type=docker,dest=/x,name=a:1,b,name=c").unwrap(),
            Output::Docker {
                dest: "/x".into(),
                names: vec!["a:1".into(), "b".into(), "c".into()]
            }
        );
        assert!(parse_output("type=oci").is_err());
        assert!(parse_output("type=nope,dest=/x").is_err());
        assert_eq!(
            parse_output("type=image,name=r/a:1,r/b:2,push=true").unwrap(),
            Output::Image {
                names: vec!["r/a:1".into(), "r/b:2".into()],
                push: true
            }
        );
        assert_eq!(
            parse_output("type=registry,name=r/a").unwrap(),
            Output::Image {
                names: vec!["r/a".into()],
                push: true
            }
        );
        assert!(parse_output("type=image,push=true").is_err());
    }
}
