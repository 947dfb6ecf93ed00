//! Engine-wide sandbox settings that whoever runs rbuild chooses for the place it runs in,
//! read from the environment: whether RUN steps get a pid namespace and `/proc` of their own
//! (the process sandbox), and which network a RUN without `--network` gets. Both exist for
//! unprivileged containers, where rootless BuildKit has the same two knobs
//! (`--oci-worker-no-process-sandbox`, `--oci-worker-net=host`); docs/container.md explains
//! when to use them. Neither changes a cache key (as BuildKit's worker options do not).

use crate::spec::Network;

/// `RBUILD_NO_PROCESS_SANDBOX=1`: RUN steps share rbuild's pid namespace and see its `/proc`
/// (BuildKit's `--oci-worker-no-process-sandbox`). Rootless mode only.
pub const NO_PROCESS_SANDBOX_ENV: &str = "RBUILD_NO_PROCESS_SANDBOX";

/// `RBUILD_DEFAULT_NETWORK=private|host`: the network of a RUN without `--network` (and of
/// `--network=default`); `private` (slirp4netns) unless set.
pub const DEFAULT_NETWORK_ENV: &str = "RBUILD_DEFAULT_NETWORK";

/// What the process sandbox's absence weakens (BuildKit's warning, in rbuild's terms).
pub const NO_PROCESS_SANDBOX_WARNING: &str = "RBUILD_NO_PROCESS_SANDBOX is set: RUN steps share \
rbuild's pid namespace, so they can kill (and, as far as the seccomp profile allows, ptrace) \
rbuild and other processes of its container, and processes a RUN leaves running are not \
terminated with it; use it only when rbuild runs rootless in a container that masks /proc";

/// The sandbox settings of this rbuild process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineSettings {
    /// Each RUN gets a pid namespace and a `/proc` of its own (the default).
    pub process_sandbox: bool,
    /// The network of a RUN that asks for the default one: [`Network::Private`] unless
    /// [`DEFAULT_NETWORK_ENV`] says `host`.
    pub default_network: Network,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            process_sandbox: true,
            default_network: Network::Private,
        }
    }
}

/// An environment variable of [`EngineSettings`] with a value rbuild does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// The value is not one of the accepted ones.
    #[error("invalid {var}={value:?}: expected {expected}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What it may be.
        expected: &'static str,
    },
    /// [`NO_PROCESS_SANDBOX_ENV`] without rootless mode (BuildKit refuses it as well).
    #[error(
        "{NO_PROCESS_SANDBOX_ENV} needs rootless mode (run rbuild as an ordinary user): as root, \
         RUN steps would share the pid namespace of the host"
    )]
    NeedsRootless,
}

impl EngineSettings {
    /// The settings of this process's environment (see [`EngineSettings::from_vars`]).
    pub fn from_env() -> Result<EngineSettings, SettingsError> {
        let var = |name| std::env::var(name).ok();
        Self::from_vars(
            var(NO_PROCESS_SANDBOX_ENV).as_deref(),
            var(DEFAULT_NETWORK_ENV).as_deref(),
            crate::rootless::is_rootless(),
        )
    }

    /// The settings given the two variables' values (unset or empty: the default) and whether
    /// this is rootless mode.
    pub fn from_vars(
        no_process_sandbox: Option<&str>,
        default_network: Option<&str>,
        rootless: bool,
    ) -> Result<EngineSettings, SettingsError> {
        let no_sandbox = match no_process_sandbox.map(str::trim).unwrap_or("") {
            "" | "0" | "false" => false,
            "1" | "true" => true,
            other => {
                return Err(SettingsError::Invalid {
                    var: NO_PROCESS_SANDBOX_ENV,
                    value: other.to_string(),
                    expected: "1, true, 0 or false",
                })
            }
        };
        if no_sandbox && !rootless {
            return Err(SettingsError::NeedsRootless);
        }
        let default_network = match default_network.map(str::trim).unwrap_or("") {
            "" | "private" => Network::Private,
            "host" => Network::Host,
            other => {
                return Err(SettingsError::Invalid {
                    var: DEFAULT_NETWORK_ENV,
                    value: other.to_string(),
                    expected: "private or host",
                })
            }
        };
        Ok(EngineSettings {
            process_sandbox: !no_sandbox,
            default_network,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_values() {
        let s = |a, b, r| EngineSettings::from_vars(a, b, r);
        assert_eq!(s(None, None, false), Ok(EngineSettings::default()));
        assert_eq!(s(Some(""), Some(""), true), Ok(EngineSettings::default()));
        assert_eq!(
            s(Some("1"), Some("host"), true),
            Ok(EngineSettings {
                process_sandbox: false,
                default_network: Network::Host
            })
        );
        assert_eq!(
            s(Some("0"), Some("private"), false).map(|s| s.process_sandbox),
            Ok(true)
        );
        assert_eq!(s(Some("1"), None, false), Err(SettingsError::NeedsRootless));
        assert_eq!(
            s(None, Some("bridge"), true).unwrap_err().to_string(),
            "invalid RBUILD_DEFAULT_NETWORK=\"bridge\": expected private or host"
        );
        assert!(s(Some("yes"), None, true)
            .unwrap_err()
            .to_string()
            .starts_with("invalid RBUILD_NO_PROCESS_SANDBOX=\"yes\""));
    }
}
