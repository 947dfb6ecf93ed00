//! Entitlements (BuildKit's `util/entitlements`): privileges a build must be granted on the
//! command line (`--allow network.host`, `--allow security.insecure`) before any of its RUN steps
//! may use them, so a Dockerfile cannot opt itself into the host network or out of the sandbox.

use std::collections::BTreeSet;
use std::fmt;

/// One privilege a RUN step may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entitlement {
    /// `network.host`: RUN in the host's network namespace.
    NetworkHost,
    /// `security.insecure`: RUN without the sandbox's confinement.
    SecurityInsecure,
}

/// An entitlement name that is not one of BuildKit's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown entitlement {0}")]
pub struct UnknownEntitlement(pub String);

/// A RUN step needs an entitlement the build was not granted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{entitlement} is not allowed")]
pub struct NotAllowed {
    /// The missing entitlement.
    pub entitlement: Entitlement,
    /// The vertex that needs it.
    pub vertex: crate::VertexIndex,
}

impl Entitlement {
    /// Every entitlement, in name order.
    pub const ALL: [Entitlement; 2] = [Entitlement::NetworkHost, Entitlement::SecurityInsecure];

    /// The name as BuildKit spells it (`network.host`, `security.insecure`).
    pub fn name(&self) -> &'static str {
        match self {
            Entitlement::NetworkHost => "network.host",
            Entitlement::SecurityInsecure => "security.insecure",
        }
    }

    /// Parses a name; anything but the known names is an error.
    pub fn parse(name: &str) -> Result<Entitlement, UnknownEntitlement> {
        Entitlement::ALL
            .into_iter()
            .find(|e| e.name() == name)
            .ok_or_else(|| UnknownEntitlement(name.to_string()))
    }
}

impl fmt::Display for Entitlement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The entitlements a build was granted; empty by default (nothing privileged allowed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entitlements(BTreeSet<Entitlement>);

impl Entitlements {
    /// No entitlement granted.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses `--allow` values: each may hold several names separated by commas (as buildx);
    /// empty items are skipped.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Entitlements, UnknownEntitlement> {
        let mut set = Entitlements::none();
        for value in values {
            for name in value.as_ref().split(',').map(str::trim) {
                if !name.is_empty() {
                    set.grant(Entitlement::parse(name)?);
                }
            }
        }
        Ok(set)
    }

    /// Grants one entitlement.
    pub fn grant(&mut self, e: Entitlement) {
        self.0.insert(e);
    }

    /// True when `e` was granted.
    pub fn allows(&self, e: Entitlement) -> bool {
        self.0.contains(&e)
    }

    /// The first entitlement of `needed` that was not granted.
    pub fn missing(&self, needed: &[Entitlement]) -> Option<Entitlement> {
        needed.iter().copied().find(|e| !self.allows(*e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildx_allow_values() {
        let set = Entitlements::parse(&["network.host,security.insecure"]).unwrap();
        assert!(set.allows(Entitlement::NetworkHost));
        assert!(set.allows(Entitlement::SecurityInsecure));
        let set = Entitlements::parse(&["network.host", ""]).unwrap();
        assert!(set.allows(Entitlement::NetworkHost));
        assert!(!set.allows(Entitlement::SecurityInsecure));
        assert_eq!(
            set.missing(&[Entitlement::NetworkHost, Entitlement::SecurityInsecure]),
            Some(Entitlement::SecurityInsecure)
        );
        let err = Entitlements::parse(&["network.host,device.all"]).unwrap_err();
        assert_eq!(err.to_string(), "unknown entitlement device.all");
        assert!(Entitlements::parse(&["Network.Host"]).is_err());
    }

    #[test]
    fn names_round_trip() {
        for e in Entitlement::ALL {
            assert_eq!(Entitlement::parse(e.name()), Ok(e));
        }
        let err = NotAllowed {
            entitlement: Entitlement::NetworkHost,
            vertex: 3,
        };
        assert_eq!(err.to_string(), "network.host is not allowed");
    }
}
