//! User-facing error reports: the text the CLI prints for a failure and the exit code it maps to
//! (2 for usage errors, 128+N for a build canceled by signal N, 1 otherwise). A build error
//! becomes text in one place, `Report::from(BuildError)`, in BuildKit's style (a JSON progress
//! stream can report the typed error instead and skip it).

use rbuild_build::{BuildError, InputError, SpecError};
use rbuild_registry::RegistryError;
use std::fmt;

pub use rbuild_build::chain;

/// An error as the user sees it.
#[derive(Debug)]
pub struct Report {
    text: String,
    code: u8,
}

impl Report {
    /// A plain error (exit code 1).
    pub fn new(text: impl Into<String>) -> Self {
        Report {
            text: text.into(),
            code: 1,
        }
    }

    /// With another exit code.
    pub fn with_code(mut self, code: u8) -> Self {
        self.code = code;
        self
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        self.code
    }

    /// An error and its chain of causes, `a: b: c`.
    pub fn from_error(context: &str, err: &dyn std::error::Error) -> Self {
        Report::new(format!("error: {context}: {}", chain(err)))
    }
}

impl Report {
    /// A failure of a store or registry command outside a build (`rbuild push`, `rbuild pull`):
    /// `error: MESSAGE` as docker's commands print it, with the same plain-words hint for
    /// registry failures as a build's.
    pub fn command(err: BuildError) -> Report {
        if matches!(err, BuildError::Canceled { .. }) || err.is_usage() {
            return Report::from(err);
        }
        let text = format!("error: {err}");
        match err.registry_error().and_then(registry_hint) {
            Some(hint) if !text.contains("\nhint: ") => {
                Report::new(format!("{text}\nhint: {hint}"))
            }
            _ => Report::new(text),
        }
    }
}

impl From<BuildError> for Report {
    /// The one place a build error becomes text, in BuildKit's style: complete reports
    /// (Dockerfile excerpt, failed RUN box) as they are, errors of the solve as `ERROR: failed to
    /// solve: MESSAGE`, errors of the inputs as `ERROR: MESSAGE`, usage errors as clap's
    /// `error: MESSAGE` (exit code 2); registry failures get a `hint:` line in plain words.
    fn from(err: BuildError) -> Report {
        let text = match &err {
            BuildError::Canceled { signal } => {
                return Report::new("error: build canceled").with_code(signal_exit_code(*signal))
            }
            e if e.is_usage() => return Report::new(format!("error: {e}")).with_code(2),
            e if e.is_report() => e.to_string(),
            // Flag values, in clap's and docker's words (`error: invalid argument ...`).
            BuildError::Spec(_) => return Report::new(format!("error: {err}")),
            BuildError::BothFromStdin => format!("ERROR: {err}"),
            BuildError::Input(input) if !matches!(input, InputError::ReadDockerfile { .. }) => {
                format!("ERROR: {err}")
            }
            e => format!("ERROR: failed to solve: {e}"),
        };
        match err.registry_error().and_then(registry_hint) {
            Some(hint) if !text.contains("\nhint: ") => {
                Report::new(format!("{text}\nhint: {hint}"))
            }
            _ => Report::new(text),
        }
    }
}

/// What to do about a registry failure, in plain words (none when the message says it already).
fn registry_hint(err: &RegistryError) -> Option<String> {
    match err {
        RegistryError::Unauthorized { name, status, .. } => {
            let registry = name.split('/').next().unwrap_or(name);
            Some(if status.starts_with("403") {
                format!(
                    "the registry refused these credentials access to {name}: check the image \
                     name, and that this account may pull it (`rbuild login {registry}` to \
                     switch accounts)"
                )
            } else {
                format!(
                    "the registry wants credentials for {name}: log in with `rbuild login \
                     {registry}` (or `docker login`), and check the image name is right"
                )
            })
        }
        RegistryError::Connect { addr, cause, .. } if cause.contains("no such host") => {
            Some(format!(
                "the host name of {addr} does not resolve: check its spelling, and that this \
                 machine's DNS works (/etc/resolv.conf)"
            ))
        }
        RegistryError::Connect { addr, cause, .. } if cause.contains("refused") => Some(format!(
            "nothing accepts connections at {addr}: check the host and port in the image name, \
             and that the registry is running"
        )),
        RegistryError::Connect { addr, .. } => Some(format!(
            "check the network path to {addr} (a proxy or firewall may be in the way)"
        )),
        RegistryError::Token { realm, .. } => Some(format!(
            "the registry's token service at {realm} failed: check the credentials \
             (`rbuild login`) and that the service is reachable"
        )),
        _ => None,
    }
}

impl From<&SpecError> for Report {
    /// `error: MESSAGE`, exit code 2 for the specs buildx treats as usage errors.
    fn from(err: &SpecError) -> Report {
        Report::new(format!("error: {err}")).with_code(if err.is_usage() { 2 } else { 1 })
    }
}

/// The shell's exit code for a process ended by `signal` (128 + N).
fn signal_exit_code(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(1)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A base image resolution that failed on `err`, as the pipeline reports it.
    fn resolve_failure(err: RegistryError) -> BuildError {
        BuildError::registry("failed to resolve source metadata for r.example/a:1", err)
    }

    #[test]
    fn registry_failures_get_plain_words() {
        let connect = |cause: &str| RegistryError::Connect {
            what: "r.example/a:1".into(),
            addr: "registry r.example".into(),
            cause: cause.into(),
        };
        let dns = Report::from(resolve_failure(connect("no such host"))).to_string();
        assert!(
            dns.starts_with("ERROR: failed to solve: failed to resolve source metadata"),
            "{dns}"
        );
        assert!(
            dns.ends_with("\nhint: the host name of registry r.example does not resolve: check its spelling, and that this machine's DNS works (/etc/resolv.conf)"),
            "{dns}"
        );
        let refused = Report::from(resolve_failure(connect("connection refused"))).to_string();
        assert!(
            refused.contains("\nhint: nothing accepts connections at registry r.example"),
            "{refused}"
        );
        let denied = |status: &str| RegistryError::Unauthorized {
            name: "r.example/team/a".into(),
            status: status.into(),
            detail: String::new(),
        };
        let anonymous = Report::from(resolve_failure(denied("401 Unauthorized"))).to_string();
        assert!(
            anonymous.contains("log in with `rbuild login r.example`"),
            "{anonymous}"
        );
        let forbidden = Report::from(resolve_failure(denied("403 Forbidden"))).to_string();
        assert!(
            forbidden.contains("refused these credentials access to r.example/team/a"),
            "{forbidden}"
        );
        // Outside a build (push, pull): docker's `error: ` and the same hint.
        let pull = Report::command(resolve_failure(connect("no such host"))).to_string();
        assert!(pull.starts_with("error: failed to resolve"), "{pull}");
        assert!(pull.contains("\nhint: the host name"), "{pull}");
        // Errors with no registry behind them get no hint.
        let plain = Report::from(BuildError::NotAFilesystem).to_string();
        assert_eq!(
            plain,
            "ERROR: failed to solve: the build result is not a filesystem"
        );
        assert_eq!(Report::from(BuildError::NotAFilesystem).exit_code(), 1);
    }

    #[test]
    fn build_errors_map_to_text_and_exit_codes() {
        let canceled = Report::from(BuildError::Canceled { signal: 2 });
        assert_eq!(canceled.to_string(), "error: build canceled");
        assert_eq!(canceled.exit_code(), 130);
        let usage = Report::from(BuildError::PushWithoutName);
        assert_eq!(
            usage.to_string(),
            "error: --push needs at least one -t NAME"
        );
        assert_eq!(usage.exit_code(), 2);
        let report = Report::from(BuildError::Dockerfile(Box::new(
            rbuild_build::DockerfileError::Entitlement {
                error: rbuild_llb::NotAllowed {
                    entitlement: rbuild_llb::Entitlement::NetworkHost,
                    vertex: 1,
                },
                at: Some(rbuild_build::Lines { start: 2, end: 2 }),
                file: rbuild_build::DockerfileText {
                    name: "Dockerfile".into(),
                    source: "FROM scratch\nRUN --network=host x\n".into(),
                },
            },
        )));
        let text = report.to_string();
        assert!(text.starts_with("Dockerfile:2\n"), "{text}");
        assert!(text.contains("   2 | >>> RUN --network=host x\n"), "{text}");
        assert!(
            text.ends_with(
                "ERROR: failed to solve: network.host is not allowed\nhint: pass `--allow network.host` to `rbuild build` to grant it"
            ),
            "{text}"
        );
        assert_eq!(report.exit_code(), 1);
        let spec = "id=a,x=1".parse::<rbuild_build::SecretSpec>().unwrap_err();
        let spec = Report::from(&spec);
        assert_eq!(
            spec.to_string(),
            "error: invalid secret `id=a,x=1`: unexpected key `x`"
        );
        assert_eq!(spec.exit_code(), 2);
    }
}
