//! `--output` specs (buildx's syntax): `type=oci|docker|local|tar|image|registry,dest=...` (`-`
//! as `dest` of an archive is standard output; `-` alone is `type=tar,dest=-`, a bare `DIR`
//! `type=local,dest=DIR`), the names of archive and image outputs, and the layer compression an
//! output asks for.

use super::kv::{self, Field};
use super::SpecError;
use rbuild_oci::Compression;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

/// Where one `--output` goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An OCI image layout (a tar, or a directory with `tar=false`); `name=` names it when no
    /// `-t` is given (buildx replaces it with the `-t` names otherwise).
    Oci {
        /// The tar file or directory.
        dest: PathBuf,
        /// A tar (default) or a directory.
        tar: bool,
        /// `name=` values.
        names: Vec<String>,
    },
    /// A `docker load` tarball, named like `Oci`.
    Docker {
        /// The tar file.
        dest: PathBuf,
        /// `name=` values.
        names: Vec<String>,
    },
    /// The final filesystem copied into a directory.
    Local {
        /// The directory.
        dest: PathBuf,
    },
    /// The final filesystem as one tar file.
    Tar {
        /// The tar file.
        dest: PathBuf,
    },
    /// `type=image,name=A[,name=B],push=true` (`type=registry` implies push).
    Image {
        /// The image names.
        names: Vec<String>,
        /// Push them after the build.
        push: bool,
    },
}

/// The layer compression an output asks for (`compression=`, `compression-level=`,
/// `force-compression=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionSpec {
    /// gzip, zstd or none.
    pub compression: Compression,
    /// `compression-level=N` (clamped to the algorithm's range when applied).
    pub level: Option<i32>,
    /// `force-compression=true`: recompress layers whose stored blob differs.
    pub force: bool,
}

/// One `--output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// Where the result goes.
    pub output: Output,
    /// The compression it asks for, if it sets `compression=`.
    pub compression: Option<CompressionSpec>,
}

impl FromStr for OutputSpec {
    type Err = SpecError;

    fn from_str(spec: &str) -> Result<Self, SpecError> {
        // buildx's shorthands: `-` is a tar of the result on standard output, a bare path a
        // local directory.
        if !spec.is_empty() && !spec.contains(['=', ',']) {
            let dest = PathBuf::from(spec);
            let output = if spec == "-" {
                Output::Tar { dest }
            } else {
                Output::Local { dest }
            };
            return Ok(OutputSpec {
                output,
                compression: None,
            });
        }
        let parsed = kv::fields(spec).map_err(|why| SpecError::OutputSyntax {
            spec: spec.to_string(),
            why,
        })?;
        let fields: BTreeMap<String, String> = parsed
            .iter()
            .map(|f| {
                let value = f.value.as_deref().unwrap_or("");
                (f.key.trim().to_string(), value.trim().to_string())
            })
            .collect();
        let dest = fields.get("dest").map(PathBuf::from);
        let need_dest = |kind: &str| {
            dest.clone().ok_or_else(|| SpecError::OutputNeedsDest {
                kind: kind.to_string(),
            })
        };
        let names = names(&parsed);
        for name in &names {
            super::check_reference("-o, --output", name)?;
        }
        let output = match fields.get("type").map(String::as_str) {
            Some("oci") => Output::Oci {
                dest: need_dest("oci")?,
                tar: fields.get("tar").map(|v| v != "false").unwrap_or(true),
                names,
            },
            Some("docker") => Output::Docker {
                dest: need_dest("docker")?,
                names,
            },
            Some("local") => Output::Local {
                dest: need_dest("local")?,
            },
            Some("tar") => Output::Tar {
                dest: need_dest("tar")?,
            },
            Some(kind @ ("image" | "registry")) => {
                let push = kind == "registry" || fields.get("push").is_some_and(|v| v == "true");
                if names.is_empty() && push {
                    return Err(SpecError::OutputNeedsName {
                        kind: kind.to_string(),
                    });
                }
                Output::Image { names, push }
            }
            Some(other) => return Err(SpecError::UnsupportedOutput(other.to_string())),
            None => return Err(SpecError::OutputWithoutType(spec.to_string())),
        };
        Ok(OutputSpec {
            output,
            compression: compression(&fields)?,
        })
    }
}

/// The `name=` values of an output: `name=a,b` (a bare field continues the names), `"name=a,b"`
/// and repeated `name=` all give several names.
fn names(fields: &[Field]) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_name = false;
    for f in fields {
        match (&f.value, f.key.as_str()) {
            (Some(v), "name") => {
                in_name = true;
                // A quoted field keeps its commas: `"name=a,b"` names two images, as buildx.
                names.extend(v.split(',').map(|n| n.trim_matches('"').to_string()));
            }
            (Some(_), _) => in_name = false,
            (None, _) if in_name => names.push(f.raw.trim_matches('"').to_string()),
            (None, _) => {}
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

fn compression(fields: &BTreeMap<String, String>) -> Result<Option<CompressionSpec>, SpecError> {
    let Some(c) = fields.get("compression") else {
        return Ok(None);
    };
    let compression = match c.as_str() {
        "gzip" => Compression::Gzip,
        "zstd" => Compression::Zstd,
        "uncompressed" => Compression::None,
        other => return Err(SpecError::UnsupportedCompression(other.to_string())),
    };
    let level = match fields.get("compression-level") {
        Some(level) => Some(
            level
                .parse::<i32>()
                .map_err(|_| SpecError::CompressionLevel(level.clone()))?,
        ),
        None => None,
    };
    Ok(Some(CompressionSpec {
        compression,
        level,
        force: fields.get("force-compression").is_some_and(|v| v == "true"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(spec: &str) -> Output {
        spec.parse::<OutputSpec>().unwrap().output
    }

    fn err(spec: &str) -> String {
        spec.parse::<OutputSpec>().unwrap_err().to_string()
    }

    #[test]
    fn buildx_shorthands() {
        assert_eq!(out("-"), Output::Tar { dest: "-".into() });
        assert_eq!(
            out("./out"),
            Output::Local {
                dest: "./out".into()
            }
        );
        assert_eq!(
            out("type=docker,dest=-"),
            Output::Docker {
                dest: "-".into(),
                names: vec![]
            }
        );
        assert!(err("a=b").contains("no type="), "{}", err("a=b"));
    }

    #[test]
    fn outputs_parse() {
        assert_eq!(
            out("type=oci,dest=/x"),
            Output::Oci {
                dest: "/x".into(),
                tar: true,
                names: vec![]
            }
        );
        assert_eq!(
            out("type=oci,dest=/x,tar=false,name=app/x:1"),
            Output::Oci {
                dest: "/x".into(),
                tar: false,
                names: vec!["app/x:1".into()]
            }
        );
        assert_eq!(
            out("type=docker,dest=/x,name=a:1,b,name=c"),
            Output::Docker {
                dest: "/x".into(),
                names: vec!["a:1".into(), "b".into(), "c".into()]
            }
        );
        assert_eq!(
            out(r#"type=docker,dest=/x,"name=a:1,b""#),
            Output::Docker {
                dest: "/x".into(),
                names: vec!["a:1".into(), "b".into()]
            }
        );
        assert_eq!(
            out("type=image,name=r/a:1,r/b:2,push=true"),
            Output::Image {
                names: vec!["r/a:1".into(), "r/b:2".into()],
                push: true
            }
        );
        assert_eq!(
            out("type=registry,name=r/a"),
            Output::Image {
                names: vec!["r/a".into()],
                push: true
            }
        );
        assert_eq!(out("type=local,dest=d"), Output::Local { dest: "d".into() });
        assert_eq!(
            out(" type = tar , dest = t "),
            Output::Tar { dest: "t".into() }
        );
    }

    #[test]
    fn output_errors_read_like_buildx() {
        assert_eq!(err("type=oci"), "--output type=oci needs dest=PATH");
        assert_eq!(
            err("type=nope,dest=/x"),
            "unsupported output type `nope` (supported: oci, docker, local, image, registry)"
        );
        assert_eq!(err("dest=/x"), "--output `dest=/x` has no type=...");
        assert_eq!(
            err("type=image,push=true"),
            "--output type=image needs name=REF to push"
        );
        assert_eq!(
            err(r#"type=oci,"dest=/x"#),
            r#"--output `type=oci,"dest=/x`: unterminated quoted field `dest=/x`"#
        );
        assert_eq!(
            err("type=oci,dest=/x,compression=lz4"),
            "unsupported compression `lz4` (gzip, zstd, uncompressed)"
        );
        assert_eq!(
            err("type=oci,dest=/x,compression=zstd,compression-level=hi"),
            "invalid compression-level `hi`"
        );
    }

    #[test]
    fn compression_is_read() {
        let spec: OutputSpec =
            "type=oci,dest=/x,compression=zstd,compression-level=30,force-compression=true"
                .parse()
                .unwrap();
        assert_eq!(
            spec.compression,
            Some(CompressionSpec {
                compression: Compression::Zstd,
                level: Some(30),
                force: true
            })
        );
        let spec: OutputSpec = "type=oci,dest=/x,compression-level=3".parse().unwrap();
        assert_eq!(spec.compression, None);
    }
}
