//! `RUN --mount=...` values, parsed like BuildKit's `instructions.ParseMount`: a CSV record of
//! `key=value` fields (and a few bare flags, read by [`rbuild_llb::csv`]), each value expanded
//! with the build's ARG/ENV; a tmpfs `size=` is a docker size ([`rbuild_llb::units`]).

use rbuild_llb::units::ram_in_bytes;
use rbuild_llb::{CacheSharing, MountType};

/// One parsed `--mount` flag (targets not yet made absolute against WORKDIR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedMount {
    pub kind: MountType,
    pub from: Option<String>,
    pub source: Option<String>,
    pub target: String,
    pub readonly: bool,
    pub id: String,
    pub sharing: CacheSharing,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub required: bool,
    pub env: Option<String>,
}

/// Splits one CSV record ([`rbuild_llb::csv`]), with BuildKit's message for a bad quote.
fn csv_fields(value: &str) -> Result<Vec<String>, String> {
    rbuild_llb::csv::fields(value)
        .map(|fields| fields.into_iter().map(|f| f.raw).collect())
        .map_err(|_| format!("extraneous or missing \" in quoted-field: {value}"))
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("invalid value for {key}: {v}")),
    }
}

/// Parses one `--mount` value; `expand` does ARG/ENV expansion of each field's value.
pub(crate) fn parse_mount(
    value: &str,
    expand: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<ParsedMount, String> {
    let fields = csv_fields(value)?;
    let mut kind = MountType::Bind;
    for field in &fields {
        if let Some((k, v)) = field.split_once('=') {
            if k.eq_ignore_ascii_case("type") {
                kind = match v.to_ascii_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => return Err(format!("unsupported mount type \"{v}\"")),
                };
            }
        }
    }
    let mut m = ParsedMount {
        kind: kind.clone(),
        from: None,
        source: None,
        target: String::new(),
        readonly: false,
        id: String::new(),
        sharing: CacheSharing::Shared,
        mode: None,
        uid: None,
        gid: None,
        size: None,
        required: false,
        env: None,
    };
    let mut ro_auto = true;
    for field in &fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
            None => (field.to_ascii_lowercase(), None),
        };
        let Some(raw) = value else {
            match key.as_str() {
                "readonly" | "ro" => {
                    m.readonly = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = false;
                    ro_auto = false;
                }
                "required" if matches!(kind, MountType::Secret | MountType::Ssh) => {
                    m.required = true
                }
                _ => return Err(format!("unexpected key '{key}' in '{field}'")),
            }
            continue;
        };
        if key == "type" {
            continue;
        }
        let v = expand(raw)?;
        match key.as_str() {
            "from" => m.from = Some(v),
            "source" | "src" => m.source = Some(v),
            "target" | "dst" | "destination" => m.target = v,
            "readonly" | "ro" => {
                m.readonly = parse_bool(&key, &v)?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.readonly = !parse_bool(&key, &v)?;
                ro_auto = false;
            }
            "required" if matches!(kind, MountType::Secret | MountType::Ssh) => {
                m.required = parse_bool(&key, &v)?
            }
            "id" => m.id = v,
            "sharing" => {
                m.sharing = match v.to_ascii_lowercase().as_str() {
                    "shared" => CacheSharing::Shared,
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    _ => return Err(format!("unsupported sharing value \"{v}\"")),
                }
            }
            "mode" => {
                m.mode = Some(
                    u32::from_str_radix(&v, 8)
                        .map_err(|_| format!("invalid value {v} for mode"))?,
                )
            }
            "uid" => {
                m.uid = Some(
                    v.parse()
                        .map_err(|_| format!("invalid value {v} for uid"))?,
                )
            }
            "gid" => {
                m.gid = Some(
                    v.parse()
                        .map_err(|_| format!("invalid value {v} for gid"))?,
                )
            }
            "size" if kind == MountType::Tmpfs => {
                m.size = Some(ram_in_bytes(&v).map_err(|e| e.to_string())?)
            }
            "env" if kind == MountType::Secret => m.env = Some(v),
            _ => return Err(format!("unexpected key '{key}' in '{field}'")),
        }
    }
    if ro_auto {
        m.readonly = matches!(kind, MountType::Bind | MountType::Secret);
    }
    if kind == MountType::Secret {
        if m.id.is_empty() {
            if m.target.is_empty() {
                return Err("invalid secret mount: id or target is required".to_string());
            }
            m.id = m
                .target
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
        }
        if m.target.is_empty() && m.env.is_none() {
            m.target = format!("/run/secrets/{}", m.id);
        }
    } else if kind == MountType::Ssh {
        // The target defaults to /run/buildkit/ssh_agent.N (N counts the RUN's ssh mounts).
        if m.id.is_empty() {
            m.id = "default".to_string();
        }
    } else if m.target.is_empty() {
        return Err("invalid mount target \"\"".to_string());
    }
    if m.from.is_some() {
        let name = match kind {
            MountType::Tmpfs => Some("tmpfs"),
            MountType::Secret => Some("secret"),
            MountType::Ssh => Some("ssh"),
            MountType::Bind | MountType::Cache => None,
        };
        if let Some(name) = name {
            return Err(format!("'from' is not supported for {name} mounts"));
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &str) -> Result<ParsedMount, String> {
        parse_mount(v, &mut |s: &str| Ok(s.replace("$X", "ex")))
    }

    #[test]
    fn defaults_and_expansion() {
        let m = p("type=cache,target=/c/$X").unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.target, "/c/ex");
        assert!(!m.readonly);
        let b = p("target=/m,source=a").unwrap();
        assert_eq!(b.kind, MountType::Bind);
        assert!(b.readonly);
        assert!(!p("target=/m,rw").unwrap().readonly);
        assert!(!p("target=/m,readwrite=true").unwrap().readonly);
        let s = p("type=secret,id=tok").unwrap();
        assert_eq!(s.target, "/run/secrets/tok");
        let e = p("type=secret,id=tok,env=TOKEN,required").unwrap();
        assert_eq!(e.target, "");
        assert!(e.required);
        let t = p("type=secret,target=/x/key").unwrap();
        assert_eq!(t.id, "key");
        let f = p("type=tmpfs,target=/t,size=64m").unwrap();
        assert_eq!(f.size, Some(64 << 20));
        let h = p("type=ssh").unwrap();
        assert_eq!(
            (h.kind, h.id.as_str(), h.target.as_str()),
            (MountType::Ssh, "default", "")
        );
        assert!(!h.required);
        let h = p("type=ssh,id=gh,target=/a.sock,required,mode=0640,uid=5").unwrap();
        assert_eq!((h.id.as_str(), h.target.as_str()), ("gh", "/a.sock"));
        assert_eq!((h.required, h.mode, h.uid), (true, Some(0o640), Some(5)));
        let q = p("\"type=cache\",\"target=/a,b\"").unwrap();
        assert_eq!(q.target, "/a,b");
    }

    #[test]
    fn errors() {
        assert!(p("type=nope,target=/x")
            .unwrap_err()
            .contains("unsupported mount type"));
        assert!(p("type=cache,target=/x,bogus=1")
            .unwrap_err()
            .contains("unexpected key"));
        assert!(p("type=cache").is_err());
        assert!(p("type=cache,target=/x,sharing=weird").is_err());
        assert_eq!(ram_in_bytes("1GiB").unwrap(), 1 << 30);
    }

    #[test]
    fn run_mounts_become_exec_mounts_and_inputs() {
        use rbuild_llb::Op;
        let df = crate::parse(
            "FROM scratch AS data\n\
             FROM scratch\n\
             ARG CID=ids\n\
             WORKDIR /w\n\
             RUN --mount=type=cache,target=c,id=$CID,sharing=locked \\\n\
             --mount=type=bind,from=data,source=/x,target=/b,rw \\\n\
             --mount=type=bind,source=f,target=/f \\\n\
             --mount=type=tmpfs,target=/t,size=1k \\\n\
             --mount=type=secret,id=s,env=S true\n",
        )
        .unwrap();
        let opts = crate::ConvertOptions {
            dockerfile_name: "Dockerfile".into(),
            ..Default::default()
        };
        let plan = crate::convert(&df, &opts, &std::collections::HashMap::new()).unwrap();
        let def = &plan.definition;
        let v = &def.vertices[plan.target];
        let Op::Exec(exec) = &v.op else {
            panic!("not an exec: {:?}", v.op)
        };
        assert_eq!(exec.mounts.len(), 5);
        let cache = &exec.mounts[0];
        assert_eq!(cache.target, "/w/c");
        let copt = cache.cache.as_ref().unwrap();
        assert_eq!(copt.id, "ids");
        assert_eq!(copt.sharing, CacheSharing::Locked);
        assert_eq!(copt.mode, 0o755);
        assert_eq!(cache.input, None);
        let stage = &exec.mounts[1];
        assert!(!stage.readonly);
        assert_eq!(stage.selector, "/x");
        let ctx = &exec.mounts[2];
        assert!(ctx.readonly);
        assert_eq!(ctx.selector, "/f");
        // input 0 = the rootfs, then the stage, then the build context.
        assert_eq!(v.inputs.len(), 3);
        assert_eq!(stage.input, Some(1));
        assert_eq!(ctx.input, Some(2));
        assert!(matches!(
            def.vertices[v.inputs[2]].op,
            Op::Source(rbuild_llb::SourceOp::Local { .. })
        ));
        assert_eq!(exec.mounts[3].tmpfs_size, Some(1024));
        let secret = &exec.mounts[4];
        assert_eq!(secret.target, "");
        let sopt = secret.secret.as_ref().unwrap();
        assert_eq!((sopt.id.as_str(), sopt.env.as_deref()), ("s", Some("S")));
        assert_eq!(sopt.mode, 0o400);
        assert!(!sopt.required);
    }

    #[test]
    fn ssh_mounts_default_like_buildkit() {
        use rbuild_llb::Op;
        let df = crate::parse(
            "FROM scratch\n\
             RUN --mount=type=ssh --mount=type=ssh,id=gh,target=/gh.sock,required true\n\
             ENV SSH_AUTH_SOCK=/mine\n\
             RUN --mount=type=ssh true\n",
        )
        .unwrap();
        let opts = crate::ConvertOptions {
            dockerfile_name: "Dockerfile".into(),
            ..Default::default()
        };
        let plan = crate::convert(&df, &opts, &std::collections::HashMap::new()).unwrap();
        let def = &plan.definition;
        let last = &def.vertices[plan.target];
        let first = &def.vertices[last.inputs[0]];
        let (Op::Exec(a), Op::Exec(b)) = (&first.op, &last.op) else {
            panic!("not execs")
        };
        assert_eq!(a.mounts[0].target, "/run/buildkit/ssh_agent.0");
        let o = a.mounts[0].ssh.as_ref().unwrap();
        assert_eq!(
            (o.id.as_str(), o.required, o.mode),
            ("default", false, 0o600)
        );
        assert_eq!(a.mounts[1].target, "/gh.sock");
        assert!(a.mounts[1].ssh.as_ref().unwrap().required);
        assert!(a
            .env
            .contains(&"SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0".to_string()));
        // An SSH_AUTH_SOCK the stage sets wins.
        assert!(b.env.contains(&"SSH_AUTH_SOCK=/mine".to_string()));
        assert_eq!(
            b.env
                .iter()
                .filter(|e| e.starts_with("SSH_AUTH_SOCK="))
                .count(),
            1
        );
    }
}
