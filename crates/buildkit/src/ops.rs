//! One rbuild op in BuildKit's op forms, as BuildKit's Dockerfile frontend (dockerfile2llb and
//! the `llb` client package) emits them: sources by identifier and attributes, ExecOp with its
//! mounts sorted by target, FileOp action chains, MergeOp; with the capabilities each needs.

use crate::caps;
use crate::pb;
use crate::LlbError;
use rbuild_llb::{
    CacheSharing, ChownOpt, CopyAction, ExecMount, ExecOp, FileAction, MkdirAction, MountType,
    NetworkMode, SecurityMode, SourceOp, UserOpt, Vertex, VertexIndex,
};
use std::collections::{BTreeMap, BTreeSet};

/// BuildKit's input index of the empty filesystem (`pb.Empty`).
const EMPTY: i64 = -1;
/// BuildKit's output index of a result nobody keeps (`pb.SkipOutput`).
const SKIP_OUTPUT: i64 = -1;
/// BuildKit's "not set" for a FileOp timestamp or copy mode.
const UNSET: i64 = -1;

/// An op ready to marshal, with the capabilities it needs.
pub(crate) struct Built {
    /// The op (inputs, body; the converter sets the platform and constraints).
    pub op: pb::Op,
    /// Whether the op has a platform (FileOp has none: it is not platform specific).
    pub has_platform: bool,
    /// Capabilities the op needs.
    pub caps: BTreeSet<&'static str>,
    /// The custom name for a helper op the converter adds itself.
    pub name: Option<String>,
}

impl Built {
    fn new(op: pb::op::Op, inputs: Vec<pb::Input>, has_platform: bool) -> Built {
        Built {
            op: pb::Op {
                inputs,
                op: Some(op),
                platform: None,
                constraints: None,
            },
            has_platform,
            caps: BTreeSet::new(),
            name: None,
        }
    }
}

/// Adds helper ops (returns the helper's digest).
pub(crate) type Emit<'a> = dyn FnMut(Built) -> String + 'a;

/// The op's inputs: distinct (digest, output 0) edges; scratch is no edge (`EMPTY`).
#[derive(Default)]
struct Inputs(Vec<pb::Input>);

impl Inputs {
    fn index(&mut self, digest: Option<&String>) -> i64 {
        let Some(digest) = digest else {
            return EMPTY;
        };
        if let Some(i) = self.0.iter().position(|i| &i.digest == digest) {
            return i as i64;
        }
        self.0.push(pb::Input {
            digest: digest.clone(),
            index: 0,
        });
        (self.0.len() - 1) as i64
    }
}

/// The input digests of one vertex (`None`: scratch).
struct VertexInputs<'a> {
    vertex: VertexIndex,
    list: &'a [Option<String>],
}

impl<'a> VertexInputs<'a> {
    fn get(&self, i: usize) -> Result<Option<&'a String>, LlbError> {
        self.list
            .get(i)
            .map(Option::as_ref)
            .ok_or(LlbError::MissingInput {
                vertex: self.vertex,
                input: i,
            })
    }
}

/// What a vertex becomes in LLB.
pub(crate) enum Converted {
    /// An op of its own.
    Op(Box<Built>),
    /// No op: the vertex is the op with this digest, or scratch (`None`), as scratch itself
    /// and a merge of at most one non-scratch input are in BuildKit.
    Same(Option<String>),
}

/// The op of vertex `vertex` whose inputs have the digests `inputs` (`None`: scratch).
pub(crate) fn convert(
    vertex: VertexIndex,
    v: &Vertex,
    inputs: &[Option<String>],
    session: Option<&str>,
    emit: &mut Emit<'_>,
) -> Result<Converted, LlbError> {
    let input = VertexInputs {
        vertex,
        list: inputs,
    };
    Ok(match &v.op {
        rbuild_llb::Op::Source(source) => match source_op(source, session)? {
            Some(built) => Converted::Op(Box::new(built)),
            None => Converted::Same(None),
        },
        rbuild_llb::Op::Exec(exec) => Converted::Op(Box::new(exec_op(vertex, exec, &input, emit)?)),
        rbuild_llb::Op::File(file) => {
            Converted::Op(Box::new(file_op(vertex, &file.actions, &input)?))
        }
        rbuild_llb::Op::Merge => {
            // Scratch adds nothing to a merge, and a merge of one filesystem is that
            // filesystem (BuildKit's llb.Merge): `COPY --link` onto scratch needs no MergeOp.
            let mut layers = Vec::new();
            for i in 0..v.inputs.len() {
                if let Some(d) = input.get(i)? {
                    layers.push(d);
                }
            }
            if layers.len() <= 1 {
                return Ok(Converted::Same(layers.pop().cloned()));
            }
            let mut ins = Inputs::default();
            let merge = layers
                .into_iter()
                .map(|d| pb::MergeInput {
                    input: ins.index(Some(d)),
                })
                .collect();
            let mut built = Built::new(
                pb::op::Op::Merge(pb::MergeOp { inputs: merge }),
                ins.0,
                true,
            );
            built.caps.insert(caps::MERGE_OP);
            Converted::Op(Box::new(built))
        }
    })
}

fn source_op(source: &SourceOp, session: Option<&str>) -> Result<Option<Built>, LlbError> {
    let mut attrs = BTreeMap::new();
    let mut need = BTreeSet::new();
    let identifier = match source {
        SourceOp::Scratch => return Ok(None),
        SourceOp::Image { reference, digest } => {
            need.insert(caps::SOURCE_IMAGE);
            match digest {
                Some(d) if !reference.contains('@') => format!("docker-image://{reference}@{d}"),
                _ => format!("docker-image://{reference}"),
            }
        }
        SourceOp::Local { name, excludes } => {
            need.insert(caps::SOURCE_LOCAL);
            if let Some(id) = session {
                attrs.insert("local.session".to_string(), id.to_string());
                need.insert(caps::SOURCE_LOCAL_SESSION_ID);
            }
            if !excludes.is_empty() {
                let json = serde_json::to_string(excludes).map_err(LlbError::Json)?;
                attrs.insert("local.excludepatterns".to_string(), json);
                need.insert(caps::SOURCE_LOCAL_EXCLUDE_PATTERNS);
            }
            attrs.insert("local.sharedkeyhint".to_string(), name.clone());
            need.insert(caps::SOURCE_LOCAL_SHARED_KEY_HINT);
            format!("local://{}", crate::local_name(name))
        }
        SourceOp::Http {
            url,
            checksum,
            filename,
        } => {
            need.insert(caps::SOURCE_HTTP);
            if let Some(sum) = checksum {
                attrs.insert("http.checksum".to_string(), sum.clone());
                need.insert(caps::SOURCE_HTTP_CHECKSUM);
            }
            attrs.insert("http.filename".to_string(), filename.clone());
            url.clone()
        }
        SourceOp::Inline { filename, content } => {
            // A heredoc file: BuildKit writes it with a FileOp mkfile on scratch.
            let mkfile = pb::FileActionMkFile {
                path: format!("/{}", filename.trim_start_matches('/')),
                mode: 0o644,
                data: content.clone().into_bytes(),
                owner: None,
                timestamp: UNSET,
            };
            let action = pb::FileAction {
                input: EMPTY,
                secondary_input: EMPTY,
                output: 0,
                action: Some(pb::file_action::Action::Mkfile(mkfile)),
            };
            let mut built = Built::new(
                pb::op::Op::File(pb::FileOp {
                    actions: vec![action],
                }),
                Vec::new(),
                false,
            );
            built.caps.insert(caps::FILE_BASE);
            return Ok(Some(built));
        }
    };
    let mut built = Built::new(
        pb::op::Op::Source(pb::SourceOp { identifier, attrs }),
        Vec::new(),
        true,
    );
    built.caps = need;
    Ok(Some(built))
}

fn proxy_env(list: &[String]) -> Option<pb::ProxyEnv> {
    if list.is_empty() {
        return None;
    }
    let mut proxy = pb::ProxyEnv::default();
    for entry in list {
        let Some((key, value)) = entry.split_once('=') else {
            continue;
        };
        let slot = match key.to_ascii_lowercase().as_str() {
            "http_proxy" => &mut proxy.http_proxy,
            "https_proxy" => &mut proxy.https_proxy,
            "ftp_proxy" => &mut proxy.ftp_proxy,
            "no_proxy" => &mut proxy.no_proxy,
            "all_proxy" => &mut proxy.all_proxy,
            _ => continue,
        };
        *slot = value.to_string();
    }
    Some(proxy)
}

/// BuildKit's form of a mount's source path: absolute, `""` for the root.
fn selector(path: &str) -> String {
    let joined = clean(path);
    if joined == "/" {
        String::new()
    } else {
        joined
    }
}

/// `path.Clean("/" + p)`: absolute, no `.`/`..`/empty components, no trailing slash.
fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

fn exec_op(
    vertex: VertexIndex,
    exec: &ExecOp,
    input: &VertexInputs<'_>,
    emit: &mut Emit<'_>,
) -> Result<Built, LlbError> {
    let mut need = BTreeSet::from([caps::EXEC_META_BASE]);
    let meta = pb::Meta {
        args: exec.args.clone(),
        env: exec.env.clone(),
        cwd: exec.cwd.clone(),
        user: exec.user.clone(),
        proxy_env: proxy_env(&exec.proxy_env),
        extra_hosts: exec
            .extra_hosts
            .iter()
            .map(|h| pb::HostIp {
                host: h.host.clone(),
                ip: h.ip.clone(),
            })
            .collect(),
        hostname: String::new(),
        // Mount points the run created are removed afterwards, nested ones too (what current
        // BuildKit clients ask for; older daemons skip the field).
        remove_mount_stubs_recursive: true,
    };
    if meta.proxy_env.is_some() {
        need.insert(caps::EXEC_META_PROXY);
    }
    let network = match exec.network {
        NetworkMode::Default => pb::NetMode::Unset,
        NetworkMode::Host => pb::NetMode::Host,
        NetworkMode::None => pb::NetMode::None,
    };
    if network != pb::NetMode::Unset {
        need.insert(caps::EXEC_META_NETWORK);
    }
    let security = match exec.security {
        SecurityMode::Sandbox => pb::SecurityMode::Sandbox,
        SecurityMode::Insecure => {
            need.insert(caps::EXEC_META_SECURITY);
            pb::SecurityMode::Insecure
        }
    };
    // The root filesystem and the input-backed mounts, sorted by target ("/" first), then
    // secrets and SSH sockets in their order, as BuildKit's ExecOp marshals them.
    let mut sorted: Vec<(String, Option<&ExecMount>)> = vec![("/".to_string(), None)];
    let mut late: Vec<&ExecMount> = Vec::new();
    for m in &exec.mounts {
        match m.kind {
            MountType::Secret | MountType::Ssh => late.push(m),
            _ => sorted.push((m.target.clone(), Some(m))),
        }
    }
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut ins = Inputs::default();
    let mut mounts = Vec::new();
    let mut secret_env = Vec::new();
    let mut outputs = 0i64;
    for (target, m) in sorted {
        let Some(m) = m else {
            mounts.push(pb::Mount {
                input: ins.index(input.get(0)?),
                dest: "/".into(),
                output: outputs,
                ..Default::default()
            });
            outputs += 1;
            continue;
        };
        let mut mount = pb::Mount {
            dest: target,
            readonly: m.readonly,
            output: SKIP_OUTPUT,
            ..Default::default()
        };
        let source = match m.input {
            Some(i) => input.get(i)?,
            None => None,
        };
        let sel = if m.input.is_some() {
            selector(&m.selector)
        } else {
            String::new()
        };
        match m.kind {
            MountType::Bind => {
                need.insert(caps::EXEC_MOUNT_BIND);
                mount.input = ins.index(source);
                mount.selector = sel;
                if !m.readonly {
                    // A writable bind keeps an output of its own, as BuildKit numbers them for
                    // daemons without `exec.mount.bind.readwrite-nooutput`; nobody uses it.
                    mount.output = outputs;
                    outputs += 1;
                }
            }
            MountType::Cache => {
                let opt = m.cache.as_ref().ok_or(LlbError::NoLlbForm {
                    vertex,
                    what: "a cache mount without its options".into(),
                })?;
                need.insert(caps::EXEC_MOUNT_CACHE);
                need.insert(caps::EXEC_MOUNT_CACHE_SHARING);
                mount.mount_type = pb::MountType::Cache as i32;
                let (source, sel) =
                    if source.is_none() && (opt.uid, opt.gid, opt.mode) != (0, 0, 0o755) {
                        // BuildKit seeds a cache with an owner or mode from a directory made on
                        // scratch ("[internal] settings cache mount permissions").
                        let digest = emit(cache_seed(opt.uid, opt.gid, opt.mode));
                        (Some(digest), "/cache".to_string())
                    } else {
                        (source.cloned(), sel)
                    };
                mount.input = ins.index(source.as_ref());
                mount.selector = sel;
                mount.cache_opt = Some(pb::CacheOpt {
                    id: format!("/{}", opt.id),
                    sharing: match opt.sharing {
                        CacheSharing::Shared => pb::CacheSharingOpt::Shared,
                        CacheSharing::Private => pb::CacheSharingOpt::Private,
                        CacheSharing::Locked => pb::CacheSharingOpt::Locked,
                    } as i32,
                });
            }
            MountType::Tmpfs => {
                need.insert(caps::EXEC_MOUNT_TMPFS);
                mount.input = EMPTY;
                mount.mount_type = pb::MountType::Tmpfs as i32;
                let size = m.tmpfs_size.unwrap_or(0);
                if size > 0 {
                    need.insert(caps::EXEC_MOUNT_TMPFS_SIZE);
                }
                mount.tmpfs_opt = Some(pb::TmpfsOpt {
                    size: i64::try_from(size).unwrap_or(i64::MAX),
                });
            }
            MountType::Secret | MountType::Ssh => {}
        }
        if !mount.selector.is_empty() {
            need.insert(caps::EXEC_MOUNT_SELECTOR);
        }
        mounts.push(mount);
    }
    for m in late {
        if let Some(s) = &m.secret {
            need.insert(caps::EXEC_MOUNT_SECRET);
            if let Some(env) = &s.env {
                need.insert(caps::EXEC_SECRET_ENV);
                secret_env.push(pb::SecretEnv {
                    id: s.id.clone(),
                    name: env.clone(),
                    optional: !s.required,
                });
            }
            if !m.target.is_empty() {
                mounts.push(pb::Mount {
                    input: EMPTY,
                    dest: m.target.clone(),
                    mount_type: pb::MountType::Secret as i32,
                    secret_opt: Some(pb::SecretOpt {
                        id: s.id.clone(),
                        uid: s.uid,
                        gid: s.gid,
                        mode: s.mode,
                        optional: !s.required,
                    }),
                    ..Default::default()
                });
            }
        } else if let Some(s) = &m.ssh {
            need.insert(caps::EXEC_MOUNT_SSH);
            mounts.push(pb::Mount {
                input: EMPTY,
                dest: m.target.clone(),
                mount_type: pb::MountType::Ssh as i32,
                ssh_opt: Some(pb::SshOpt {
                    id: s.id.clone(),
                    uid: s.uid,
                    gid: s.gid,
                    mode: s.mode,
                    optional: !s.required,
                }),
                ..Default::default()
            });
        } else {
            return Err(LlbError::NoLlbForm {
                vertex,
                what: "a secret or ssh mount without its options".into(),
            });
        }
    }
    let mut built = Built::new(
        pb::op::Op::Exec(pb::ExecOp {
            meta: Some(meta),
            mounts,
            network: network as i32,
            security: security as i32,
            secretenv: secret_env,
        }),
        ins.0,
        true,
    );
    built.caps = need;
    Ok(built)
}

/// The directory a cache mount with an owner or mode starts from.
fn cache_seed(uid: u32, gid: u32, mode: u32) -> Built {
    let mkdir = pb::FileActionMkDir {
        path: "/cache".into(),
        mode: mode as i32,
        make_parents: false,
        owner: Some(pb::ChownOpt {
            user: Some(pb::UserOpt {
                user: Some(pb::user_opt::User::ById(uid)),
            }),
            group: Some(pb::UserOpt {
                user: Some(pb::user_opt::User::ById(gid)),
            }),
        }),
        timestamp: UNSET,
    };
    let mut built = Built::new(
        pb::op::Op::File(pb::FileOp {
            actions: vec![pb::FileAction {
                input: EMPTY,
                secondary_input: EMPTY,
                output: 0,
                action: Some(pb::file_action::Action::Mkdir(mkdir)),
            }],
        }),
        Vec::new(),
        false,
    );
    built.caps.insert(caps::FILE_BASE);
    built.name = Some("[internal] settings cache mount permissions".into());
    built
}

fn user_opt(user: &UserOpt, base: i64) -> pb::UserOpt {
    pb::UserOpt {
        user: Some(match user {
            UserOpt::Id(id) => pb::user_opt::User::ById(*id),
            UserOpt::Name(name) => pb::user_opt::User::ByName(pb::NamedUserOpt {
                name: name.clone(),
                input: base,
            }),
        }),
    }
}

/// An owner; names are looked up in the action's base (`base`), as BuildKit's ChownOpt.
fn chown(owner: &Option<ChownOpt>, base: i64) -> Option<pb::ChownOpt> {
    owner.as_ref().map(|o| pb::ChownOpt {
        user: Some(user_opt(&o.user, base)),
        group: o.group.as_ref().map(|g| user_opt(g, base)),
    })
}

fn file_op(
    vertex: VertexIndex,
    actions: &[FileAction],
    input: &VertexInputs<'_>,
) -> Result<Built, LlbError> {
    let mut need = BTreeSet::from([caps::FILE_BASE]);
    let mut ins = Inputs::default();
    // The base first, then each copy's source (BuildKit's marshal state adds them in this order).
    let base = ins.index(input.get(0)?);
    let mut sources = Vec::new();
    for action in actions {
        if let FileAction::Copy(c) = action {
            sources.push(ins.index(input.get(c.src_input)?));
        }
    }
    let count = ins.0.len() as i64;
    let mut sources = sources.into_iter();
    let mut out = Vec::new();
    for (i, action) in actions.iter().enumerate() {
        // The first action works on the base; each later one on the previous one's result,
        // numbered after the inputs.
        let on = if i == 0 { base } else { count + i as i64 - 1 };
        let output = if i + 1 == actions.len() {
            0
        } else {
            SKIP_OUTPUT
        };
        let (secondary, body) = match action {
            FileAction::Copy(c) => {
                let src = sources.next().unwrap_or(EMPTY);
                (
                    src,
                    pb::file_action::Action::Copy(copy(vertex, c, on, &mut need)?),
                )
            }
            FileAction::Mkdir(m) => (EMPTY, pb::file_action::Action::Mkdir(mkdir(m, on))),
        };
        out.push(pb::FileAction {
            input: on,
            secondary_input: secondary,
            output,
            action: Some(body),
        });
    }
    let mut built = Built::new(pb::op::Op::File(pb::FileOp { actions: out }), ins.0, false);
    built.caps = need;
    Ok(built)
}

fn copy(
    vertex: VertexIndex,
    c: &CopyAction,
    base: i64,
    need: &mut BTreeSet<&'static str>,
) -> Result<pb::FileActionCopy, LlbError> {
    if c.parents {
        return Err(LlbError::NoLlbForm {
            vertex,
            what: "COPY --parents".into(),
        });
    }
    if !c.exclude_patterns.is_empty() {
        need.insert(caps::FILE_COPY_INCLUDE_EXCLUDE);
    }
    let mut mode = c.mode.map_or(UNSET as i32, |m| m as i32);
    let mode_str = match &c.mode_str {
        Some(s) => {
            need.insert(caps::FILE_COPY_MODE_STRING);
            mode = 0;
            s.clone()
        }
        None => String::new(),
    };
    // A trailing "/" of the source ("dir/") is dropped by BuildKit's path.Clean; the
    // destination keeps it (it means "into this directory").
    let src = clean(&c.src);
    Ok(pb::FileActionCopy {
        src,
        dest: c.dest.clone(),
        owner: chown(&c.owner, base),
        mode,
        follow_symlink: c.follow_symlinks,
        dir_copy_contents: c.dir_copy_contents,
        attempt_unpack_docker_compatibility: c.attempt_unpack,
        create_dest_path: c.create_dest_path,
        allow_wildcard: c.allow_wildcard,
        allow_empty_wildcard: c.allow_empty_wildcard,
        timestamp: UNSET,
        include_patterns: Vec::new(),
        exclude_patterns: c.exclude_patterns.clone(),
        always_replace_existing_dest_paths: false,
        mode_str,
    })
}

fn mkdir(m: &MkdirAction, base: i64) -> pb::FileActionMkDir {
    pb::FileActionMkDir {
        path: m.path.clone(),
        mode: m.mode as i32,
        make_parents: m.make_parents,
        owner: chown(&m.owner, base),
        timestamp: UNSET,
    }
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn clean_is_go_path_clean_of_an_absolute_path() {
        assert_eq!(clean("a/b/"), "/a/b");
        assert_eq!(clean("."), "/");
        assert_eq!(clean("/x/./y/../z"), "/x/z");
        assert_eq!(clean("*.txt"), "/*.txt");
    }
}
