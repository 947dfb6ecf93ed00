//! RUN: the argv (exec, shell and heredoc forms), `--network`/`--security` and their
//! entitlements, `--mount` wiring into the exec vertex, and the environment (proxy ARGs kept out
//! of the cache key).

use super::helpers::{args_words, expand, lookup};
use super::state::{join_path, StageState};
use super::{ConvertError, Converter, DEFAULT_PATH};
use crate::ast::{Args, Instruction, Span};
use crate::instructions::{RunCmd, RunNetwork, Security};
use rbuild_llb::{
    CacheMountOpt, Entitlement, ExecMount, ExecOp, MountType, NetworkMode, Op, SecretMountOpt,
    SecurityMode, SshMountOpt, VertexIndex,
};

/// The predefined proxy ARGs, which reach RUN without being part of its cache key.
const PROXY_ARGS: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// The error for a RUN flag that needs an entitlement the build was not granted, at the flag,
/// with BuildKit's text and a hint naming the `--allow` that grants it.
pub(super) fn not_entitled(span: &Span, entitlement: Entitlement, flag: &str) -> ConvertError {
    ConvertError::at(span, format!("{entitlement} is not allowed")).with_hint(format!(
        "`RUN {flag}` needs the {entitlement} entitlement: pass `--allow {entitlement}` to \
         `rbuild build` if you trust this Dockerfile"
    ))
}

impl Converter<'_> {
    /// The environment of a RUN step: ENV, then stage ARGs ENV does not shadow, then PATH.
    fn run_env(&self, state: &StageState) -> Vec<String> {
        let env = state.env();
        let mut out: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for (k, v) in &state.args {
            if !env.iter().any(|(ek, _)| ek == k) {
                out.push(format!("{k}={v}"));
            }
        }
        if !env.iter().any(|(k, _)| k == "PATH") {
            out.push(DEFAULT_PATH.to_string());
        }
        out
    }

    /// The vertex a `--mount from=` names: an earlier stage or an image, the name expanded
    /// against the global ARGs, then the stage's ARG/ENV.
    fn mount_from_vertex(
        &mut self,
        state: &StageState,
        from: &str,
        span: &Span,
    ) -> Result<VertexIndex, ConvertError> {
        let mut vars = self.meta();
        vars.extend(state.vars());
        let from = expand(&self.lexer, from, &vars, span)?;
        self.named_vertex(state, &from, span)
    }

    /// The `--mount` flags of a RUN as exec mounts, and the extra vertex inputs they use
    /// (input `k` of the exec vertex is `extra[k - 1]`).
    fn run_mounts(
        &mut self,
        state: &StageState,
        run: &RunCmd,
    ) -> Result<(Vec<ExecMount>, Vec<VertexIndex>), ConvertError> {
        let span = &run.inst.span;
        let vars = state.vars();
        let mut mounts = Vec::new();
        let mut extra: Vec<VertexIndex> = Vec::new();
        for f in &run.mounts {
            let lexer = &self.lexer;
            let mut ex = |w: &str| -> Result<String, String> {
                lexer
                    .process_word(w, &lookup(&vars))
                    .map_err(|e| e.to_string())
            };
            // `from` stays unexpanded: it is expanded (once) against the global ARGs too, as
            // for COPY --from.
            let m = f.parse(&mut ex)?;
            let target = if m.target.is_empty() {
                String::new()
            } else {
                join_path(&state.workdir(), &m.target)
            };
            if target == "/" {
                return Err(ConvertError::at(span, "invalid mount target \"/\""));
            }
            let source_vertex = match (&m.kind, &m.from) {
                (MountType::Bind, None) => Some(self.context()),
                (MountType::Bind | MountType::Cache, Some(from)) => {
                    Some(self.mount_from_vertex(state, from, span)?)
                }
                _ => None,
            };
            let input = source_vertex.map(|v| match extra.iter().position(|&e| e == v) {
                Some(p) => p + 1,
                None => {
                    extra.push(v);
                    extra.len()
                }
            });
            let selector = match &m.source {
                Some(src) if input.is_some() => join_path("/", src),
                _ => "/".to_string(),
            };
            let mut mount = ExecMount {
                kind: m.kind.clone(),
                target: target.clone(),
                input,
                selector,
                readonly: m.readonly,
                cache: None,
                tmpfs_size: None,
                secret: None,
                ssh: None,
            };
            match m.kind {
                MountType::Cache => {
                    mount.cache = Some(CacheMountOpt {
                        id: if m.id.is_empty() {
                            target.clone()
                        } else {
                            m.id.clone()
                        },
                        sharing: m.sharing,
                        uid: m.uid.unwrap_or(0),
                        gid: m.gid.unwrap_or(0),
                        mode: m.mode.unwrap_or(0o755),
                    })
                }
                MountType::Tmpfs => mount.tmpfs_size = m.size,
                MountType::Secret => {
                    mount.readonly = true;
                    mount.secret = Some(SecretMountOpt {
                        id: m.id.clone(),
                        env: m.env.clone(),
                        required: m.required,
                        mode: m.mode.unwrap_or(0o400),
                        uid: m.uid.unwrap_or(0),
                        gid: m.gid.unwrap_or(0),
                    })
                }
                MountType::Ssh => {
                    // As BuildKit's llb: the N-th ssh mount of the RUN defaults to
                    // /run/buildkit/ssh_agent.N.
                    if mount.target.is_empty() {
                        let n = mounts
                            .iter()
                            .filter(|m: &&ExecMount| m.ssh.is_some())
                            .count();
                        mount.target = format!("/run/buildkit/ssh_agent.{n}");
                    }
                    mount.readonly = false;
                    mount.ssh = Some(SshMountOpt {
                        id: m.id.clone(),
                        required: m.required,
                        mode: m.mode.unwrap_or(0o600),
                        uid: m.uid.unwrap_or(0),
                        gid: m.gid.unwrap_or(0),
                    })
                }
                MountType::Bind => {}
            }
            mounts.push(mount);
        }
        Ok((mounts, extra))
    }

    /// The network and security modes of a RUN, checked against the granted entitlements.
    /// Only an explicit Dockerfile flag is checked here (as buildx), so the caret points at it;
    /// `--network=host` on the command line grants network.host itself.
    fn run_modes(&self, run: &RunCmd) -> Result<(NetworkMode, SecurityMode), ConvertError> {
        let network = match run.network {
            None | Some((RunNetwork::Default, _)) => self.opts.network,
            Some((RunNetwork::Host, _)) => NetworkMode::Host,
            Some((RunNetwork::None, _)) => NetworkMode::None,
        };
        let security = match run.security {
            None | Some((Security::Sandbox, _)) => SecurityMode::Sandbox,
            Some((Security::Insecure, _)) => SecurityMode::Insecure,
        };
        if let Some((_, f)) = run.network.filter(|_| network == NetworkMode::Host) {
            if !self.opts.entitlements.allows(Entitlement::NetworkHost) {
                return Err(not_entitled(
                    &f.span,
                    Entitlement::NetworkHost,
                    &f.to_word(),
                ));
            }
        }
        if let Some((_, f)) = run.security.filter(|_| security == SecurityMode::Insecure) {
            if !self.opts.entitlements.allows(Entitlement::SecurityInsecure) {
                return Err(not_entitled(
                    &f.span,
                    Entitlement::SecurityInsecure,
                    &f.to_word(),
                ));
            }
        }
        Ok((network, security))
    }

    /// The environment of a RUN split into what counts for the cache key and the proxy
    /// variables, which reach the process but stay out of the key (BuildKit's ProxyEnv).
    fn run_env_split(&self, state: &StageState) -> (Vec<String>, Vec<String>) {
        let env = state.env();
        let is_proxy = |kv: &String| {
            let key = kv.split_once('=').map(|(k, _)| k).unwrap_or(kv.as_str());
            PROXY_ARGS.contains(&key) && !env.iter().any(|(k, _)| k == key)
        };
        let (mut proxy_env, keyed): (Vec<String>, Vec<String>) =
            self.run_env(state).into_iter().partition(is_proxy);
        // Proxy args are predefined: a --build-arg reaches RUN without an ARG line.
        for key in PROXY_ARGS {
            let declared = proxy_env
                .iter()
                .any(|kv| kv.split_once('=').map(|(k, _)| k) == Some(key));
            let in_env = env.iter().any(|(k, _)| k == key);
            if let (false, false, Some(value)) = (declared, in_env, self.opts.build_args.get(key)) {
                proxy_env.push(format!("{key}={value}"));
            }
        }
        (keyed, proxy_env)
    }

    /// The history line of a RUN: BuildKit's `RUN |N K=V ... cmd # buildkit`, where the
    /// `|N` prefix lists the stage ARGs that ENV does not shadow.
    fn run_history(&self, state: &mut StageState, inst: &Instruction, args: &[String]) {
        let env = state.env();
        let arg_values: Vec<String> = state
            .args
            .iter()
            .filter(|(k, _)| !env.iter().any(|(ek, _)| ek == k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let prefix = if arg_values.is_empty() {
            String::new()
        } else {
            format!("|{} {} ", arg_values.len(), arg_values.join(" "))
        };
        let shown = match &inst.args {
            Args::Exec(v) => serde_json::to_string(v).unwrap_or_default(),
            _ => args.join(" "),
        };
        self.history(state, format!("RUN {prefix}{shown} # buildkit"), false);
    }

    /// RUN: one exec vertex on the stage, with its mounts' sources as extra inputs.
    pub(super) fn run(&mut self, state: &mut StageState, run: &RunCmd) -> Result<(), ConvertError> {
        let inst = run.inst;
        let span = &inst.span;
        let (mounts, extra_inputs) = self.run_mounts(state, run)?;
        let args = match &inst.args {
            Args::Exec(v) => v.clone(),
            Args::Shell(s) if !inst.heredocs.is_empty() => self.heredoc_args(state, s, inst),
            Args::Shell(s) => {
                let mut a = state.shell();
                a.push(s.clone());
                a
            }
            other => args_words(other),
        };
        if args.is_empty() {
            return Err(ConvertError::parse_at(
                span,
                "RUN requires at least one argument",
            ));
        }
        let (network, security) = self.run_modes(run)?;
        let (mut env, proxy_env) = self.run_env_split(state);
        // As BuildKit: the first ssh mount is SSH_AUTH_SOCK unless the environment sets it.
        if let Some(first) = mounts.iter().find(|m| m.ssh.is_some()) {
            if !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
                env.push(format!("SSH_AUTH_SOCK={}", first.target));
            }
        }
        let op = Op::Exec(ExecOp {
            args: args.clone(),
            env,
            cwd: state.workdir(),
            user: state.config.config.user.clone().unwrap_or_default(),
            network,
            security,
            extra_hosts: self.opts.extra_hosts.clone(),
            mounts,
            proxy_env,
        });
        let name = self.step_name(state, inst);
        let mut inputs = vec![state.vertex];
        inputs.extend(extra_inputs);
        let location = self.location(span);
        state.vertex = self.add(op, inputs, name, location);
        self.run_history(state, inst, &args);
        Ok(())
    }

    /// The argv of a shell-form RUN with heredocs, as BuildKit runs them: a command that is only
    /// a heredoc runs the heredoc as the script (a `#!` line picks the interpreter); otherwise the
    /// bodies follow the command line, for the shell to feed to the command.
    fn heredoc_args(&self, state: &StageState, cmd: &str, inst: &Instruction) -> Vec<String> {
        let mut args = state.shell();
        let strip = |h: &crate::ast::Heredoc| -> String {
            if h.chomp {
                h.content
                    .lines()
                    .map(|l| format!("{}\n", l.trim_start_matches('\t')))
                    .collect()
            } else {
                h.content.clone()
            }
        };
        let marker_only = inst.heredocs.len() == 1 && {
            let t = cmd.trim().trim_start_matches("<<").trim_start_matches('-');
            t.trim_matches(|c| c == '"' || c == '\'') == inst.heredocs[0].name
        };
        if marker_only {
            let body = strip(&inst.heredocs[0]);
            if let Some(first) = body.lines().next().and_then(|l| l.strip_prefix("#!")) {
                args.push(format!(
                    "{} /dev/stdin <<'RBUILD_HEREDOC_EOF'\n{body}RBUILD_HEREDOC_EOF\n",
                    first.trim()
                ));
            } else {
                args.push(body);
            }
            return args;
        }
        let mut full = cmd.to_string();
        full.push('\n');
        for h in &inst.heredocs {
            full.push_str(&h.content);
            full.push_str(&h.name);
            full.push('\n');
        }
        args.push(full);
        args
    }
}
