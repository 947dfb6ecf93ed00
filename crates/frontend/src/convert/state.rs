//! Per-stage state (image config, declared ARGs, current vertex) and the instructions that only
//! change it: ENV, ARG, WORKDIR, USER and SHELL.

use super::helpers::{expand, parse_chown};
use super::{ConvertError, Converter};
use crate::instructions::{ArgCmd, EnvCmd, ShellCmd, UserCmd, WorkdirCmd};
use rbuild_llb::{FileAction, FileOp, MkdirAction, Op, VertexIndex};
use rbuild_oci::ImageConfig;

/// The state of a stage while its instructions are converted.
#[derive(Clone)]
pub(super) struct StageState {
    /// The vertex whose result is the stage's filesystem so far.
    pub(super) vertex: VertexIndex,
    /// The image config so far.
    pub(super) config: ImageConfig,
    /// ARGs declared in this stage, in order, with their values.
    pub(super) args: Vec<(String, String)>,
    /// Whether this stage set CMD (an ENTRYPOINT then keeps it).
    pub(super) cmd_set: bool,
    /// The stage label of step names (the `AS` name, `stage-N`, empty in a single unnamed stage).
    pub(super) name: String,
}

impl StageState {
    /// The ENV of the image config as key/value pairs.
    pub(super) fn env(&self) -> Vec<(String, String)> {
        self.config
            .config
            .env
            .iter()
            .flatten()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv.clone(), String::new()),
            })
            .collect()
    }

    /// Variables visible to expansion: ARGs then ENV (ENV wins).
    pub(super) fn vars(&self) -> Vec<(String, String)> {
        let mut vars = self.args.clone();
        vars.extend(self.env());
        vars
    }

    /// Sets (or replaces) one ENV variable.
    pub(super) fn set_env(&mut self, key: &str, value: &str) {
        let env = self.config.config.env.get_or_insert_with(Vec::new);
        let entry = format!("{key}={value}");
        match env
            .iter_mut()
            .find(|kv| kv.split_once('=').map(|(k, _)| k).unwrap_or(kv.as_str()) == key)
        {
            Some(existing) => *existing = entry,
            None => env.push(entry),
        }
    }

    /// The working directory (`/` when unset).
    pub(super) fn workdir(&self) -> String {
        self.config
            .config
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_string())
    }

    /// The shell of shell-form commands (`/bin/sh -c` by default).
    pub(super) fn shell(&self) -> Vec<String> {
        self.config
            .config
            .shell
            .clone()
            .unwrap_or_else(|| vec!["/bin/sh".to_string(), "-c".to_string()])
    }
}

/// Joins `path` onto `base` like Go's path.Join for WORKDIR and relative COPY destinations.
pub(super) fn join_path(base: &str, path: &str) -> String {
    let full = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{base}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in full.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

impl Converter<'_> {
    /// ENV: sets variables, each expanded against the state before the instruction.
    pub(super) fn env(&mut self, state: &mut StageState, cmd: &EnvCmd) -> Result<(), ConvertError> {
        let span = &cmd.inst.span;
        let vars = state.vars();
        let mut shown = Vec::new();
        // One instruction sees the variables as they were before it (Docker's rule:
        // `ENV abc=bye def=$abc` sets def to the previous abc).
        for kv in cmd.env {
            let value = expand(&self.lexer, kv.value.as_deref().unwrap_or(""), &vars, span)?;
            let key = expand(&self.lexer, &kv.key, &vars, span)?;
            state.set_env(&key, &value);
            shown.push(format!("{key}={value}"));
        }
        self.history(state, format!("ENV {}", shown.join(" ")), true);
        Ok(())
    }

    /// ARG: declares stage ARGs, valued by `--build-arg`, the default or a global ARG.
    pub(super) fn arg(&mut self, state: &mut StageState, cmd: &ArgCmd) -> Result<(), ConvertError> {
        let span = &cmd.inst.span;
        if cmd.args.is_empty() {
            return Err(ConvertError::parse_at(
                span,
                "ARG requires exactly one argument",
            ));
        }
        let mut shown = Vec::new();
        let meta = self.meta();
        for kv in cmd.args {
            let default = match &kv.value {
                Some(v) => Some(expand(&self.lexer, v, &state.vars(), span)?),
                None => meta
                    .iter()
                    .rev()
                    .find(|(k, _)| *k == kv.key)
                    .map(|(_, v)| v.clone()),
            };
            let value = self.opts.build_args.get(&kv.key).cloned().or(default);
            shown.push(match &kv.value {
                Some(v) => format!("{}={v}", kv.key),
                None => kv.key.clone(),
            });
            if let Some(value) = value {
                state.args.retain(|(k, _)| k != &kv.key);
                state.args.push((kv.key.clone(), value));
            }
        }
        self.history(state, format!("ARG {}", shown.join(" ")), true);
        Ok(())
    }

    /// WORKDIR: sets the working directory and creates it (owned by the current USER).
    pub(super) fn workdir(
        &mut self,
        state: &mut StageState,
        cmd: &WorkdirCmd,
    ) -> Result<(), ConvertError> {
        let inst = cmd.inst;
        let span = &inst.span;
        let vars = state.vars();
        let path = expand(&self.lexer, &cmd.path, &vars, span)?;
        let wd = join_path(&state.workdir(), &path);
        state.config.config.working_dir = Some(wd.clone());
        let owner = state
            .config
            .config
            .user
            .as_deref()
            .filter(|u| !u.is_empty())
            .and_then(parse_chown);
        let op = Op::File(FileOp {
            actions: vec![FileAction::Mkdir(MkdirAction {
                path: wd.clone(),
                mode: 0o755,
                make_parents: true,
                owner,
            })],
        });
        let name = self.step_name(state, inst);
        state.vertex = self
            .def
            .add(op, vec![state.vertex], name, self.location(span));
        self.history(state, format!("WORKDIR {wd}"), false);
        Ok(())
    }

    /// USER: sets the user of later RUN steps and of the image.
    pub(super) fn user(
        &mut self,
        state: &mut StageState,
        cmd: &UserCmd,
    ) -> Result<(), ConvertError> {
        let span = &cmd.inst.span;
        let vars = state.vars();
        let user = expand(&self.lexer, &cmd.user, &vars, span)?;
        state.config.config.user = Some(user.clone());
        self.history(state, format!("USER {user}"), true);
        Ok(())
    }

    /// SHELL: sets the shell of shell-form RUN/CMD/ENTRYPOINT (JSON form only).
    pub(super) fn shell(
        &mut self,
        state: &mut StageState,
        cmd: &ShellCmd,
    ) -> Result<(), ConvertError> {
        let v = cmd.shell;
        state.config.config.shell = Some(v.to_vec());
        self.history(
            state,
            format!("SHELL {}", serde_json::to_string(v).unwrap_or_default()),
            true,
        );
        Ok(())
    }
}
