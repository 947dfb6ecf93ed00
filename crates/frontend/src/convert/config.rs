//! Metadata instructions that only change the image config and history: LABEL, MAINTAINER,
//! CMD, ENTRYPOINT, EXPOSE, VOLUME, STOPSIGNAL, HEALTHCHECK and ONBUILD.

use super::helpers::expand;
use super::state::StageState;
use super::{ConvertError, Converter};
use crate::instructions::{
    parse_ports, CmdLine, ExposeCmd, HealthcheckCmd, LabelCmd, MaintainerCmd, OnbuildCmd,
    StopsignalCmd, VolumeCmd,
};
use std::collections::BTreeMap;

impl Converter<'_> {
    /// LABEL: adds labels to the image config.
    pub(super) fn label(
        &mut self,
        state: &mut StageState,
        cmd: &LabelCmd,
    ) -> Result<(), ConvertError> {
        let span = &cmd.inst.span;
        let vars = state.vars();
        let labels = state.config.config.labels.get_or_insert_with(BTreeMap::new);
        let mut shown = Vec::new();
        for kv in cmd.labels {
            let key = expand(&self.lexer, &kv.key, &vars, span)?;
            let value = expand(&self.lexer, kv.value.as_deref().unwrap_or(""), &vars, span)?;
            shown.push(format!("{key}={value}"));
            labels.insert(key, value);
        }
        self.history(state, format!("LABEL {}", shown.join(" ")), true);
        Ok(())
    }

    /// MAINTAINER: sets the image author.
    pub(super) fn maintainer(
        &mut self,
        state: &mut StageState,
        cmd: &MaintainerCmd,
    ) -> Result<(), ConvertError> {
        let span = &cmd.inst.span;
        let vars = state.vars();
        let author = expand(&self.lexer, &cmd.maintainer, &vars, span)?;
        state.config.author = Some(author.clone());
        self.history(state, format!("MAINTAINER {author}"), true);
        Ok(())
    }

    /// CMD or ENTRYPOINT (an ENTRYPOINT clears a CMD inherited from the base).
    pub(super) fn cmd_or_entrypoint(
        &mut self,
        state: &mut StageState,
        line: &CmdLine,
        is_cmd: bool,
    ) -> Result<(), ConvertError> {
        let cmd = match line {
            CmdLine::Exec(v) => v.clone(),
            CmdLine::Shell(s) => {
                let mut c = state.shell();
                c.push(s.clone());
                c
            }
        };
        let json = serde_json::to_string(&cmd).unwrap_or_default();
        if is_cmd {
            state.config.config.cmd = Some(cmd);
            state.cmd_set = true;
            self.history(state, format!("CMD {json}"), true);
        } else {
            state.config.config.entrypoint = Some(cmd);
            if !state.cmd_set {
                state.config.config.cmd = None;
            }
            self.history(state, format!("ENTRYPOINT {json}"), true);
        }
        Ok(())
    }

    /// EXPOSE: adds exposed ports (`80`, `53/udp`, `8000-8002`).
    pub(super) fn expose(
        &mut self,
        state: &mut StageState,
        cmd: &ExposeCmd,
    ) -> Result<(), ConvertError> {
        let span = &cmd.inst.span;
        let vars = state.vars();
        let mut shown = Vec::new();
        for w in &cmd.ports {
            let spec = expand(&self.lexer, w, &vars, span)?;
            for port in parse_ports(&spec).map_err(|m| ConvertError::at(span, m))? {
                state
                    .config
                    .config
                    .exposed_ports
                    .get_or_insert_with(BTreeMap::new)
                    .insert(port.clone(), serde_json::json!({}));
                shown.push(port);
            }
        }
        self.history(state, format!("EXPOSE map[{}]", shown.join(" ")), true);
        Ok(())
    }

    /// VOLUME: adds volumes to the image config.
    pub(super) fn volume(
        &mut self,
        state: &mut StageState,
        cmd: &VolumeCmd,
    ) -> Result<(), ConvertError> {
        let span = &cmd.inst.span;
        let vars = state.vars();
        let mut shown = Vec::new();
        for w in &cmd.volumes {
            let v = expand(&self.lexer, w, &vars, span)?;
            if v.is_empty() {
                return Err(ConvertError::at(
                    span,
                    "VOLUME specified can not be an empty string",
                ));
            }
            state
                .config
                .config
                .volumes
                .get_or_insert_with(BTreeMap::new)
                .insert(v.clone(), serde_json::json!({}));
            shown.push(v);
        }
        self.history(state, format!("VOLUME [{}]", shown.join(" ")), true);
        Ok(())
    }

    /// STOPSIGNAL: sets the image stop signal.
    pub(super) fn stopsignal(
        &mut self,
        state: &mut StageState,
        cmd: &StopsignalCmd,
    ) -> Result<(), ConvertError> {
        let span = &cmd.inst.span;
        let vars = state.vars();
        let sig = expand(&self.lexer, &cmd.signal, &vars, span)?;
        state.config.config.stop_signal = Some(sig.clone());
        self.history(state, format!("STOPSIGNAL {sig}"), true);
        Ok(())
    }

    /// ONBUILD: records a trigger for images built on this one.
    pub(super) fn onbuild(
        &mut self,
        state: &mut StageState,
        cmd: &OnbuildCmd,
    ) -> Result<(), ConvertError> {
        let rest = cmd.expression.clone();
        state
            .config
            .config
            .on_build
            .get_or_insert_with(Vec::new)
            .push(rest.clone());
        self.history(state, format!("ONBUILD {rest}"), true);
        Ok(())
    }

    /// HEALTHCHECK: sets the health check read by [`crate::instructions`].
    pub(super) fn healthcheck(
        &mut self,
        state: &mut StageState,
        cmd: &HealthcheckCmd,
    ) -> Result<(), ConvertError> {
        let inst = cmd.inst;
        let hc = cmd.health.clone();
        state.config.config.healthcheck = Some(hc);
        self.history(
            state,
            format!(
                "HEALTHCHECK {}",
                inst.original.trim().get(11..).unwrap_or("").trim()
            ),
            true,
        );
        Ok(())
    }
}
