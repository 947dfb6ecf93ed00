//! The rule table: every rule's id, origin, severity, documentation URL and description.
//!
//! BuildKit's build checks keep BuildKit's names, descriptions and doc URLs (all warnings);
//! hadolint's rules keep their `DL` ids and hadolint's default severities.

use serde::Serialize;

/// How serious a finding is (hadolint's levels; BuildKit's checks are all warnings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Style only.
    Style,
    /// Worth knowing.
    Info,
    /// Likely a problem.
    Warning,
    /// Certainly a problem.
    Error,
}

impl Severity {
    /// Reads hadolint's level names (`error`, `warning`, `info`, `style`); `none`/`ignore` give
    /// `None` (nothing fails).
    pub fn parse_threshold(s: &str) -> Result<Option<Severity>, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "error" => Ok(Some(Severity::Error)),
            "warning" => Ok(Some(Severity::Warning)),
            "info" => Ok(Some(Severity::Info)),
            "style" => Ok(Some(Severity::Style)),
            "none" | "ignore" => Ok(None),
            other => Err(format!("invalid failure-threshold {other:?}")),
        }
    }

    /// The level's name as SARIF spells it (`error`, `warning`, `note`).
    pub fn sarif_level(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info | Severity::Style => "note",
        }
    }
}

/// Where a rule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// BuildKit's build checks (`docker build --check`); also reported by a normal build.
    Buildkit,
    /// hadolint's rules (reported by `rbuild check` and `build --check` only).
    Hadolint,
}

/// One lint rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// The rule's name (`FromAsCasing`) or hadolint id (`DL3006`).
    pub id: &'static str,
    /// Which linter defines it.
    pub origin: Origin,
    /// The default severity.
    pub severity: Severity,
    /// The documentation page.
    pub url: &'static str,
    /// One sentence saying what the rule wants.
    pub description: &'static str,
}

const fn bk(id: &'static str, url: &'static str, description: &'static str) -> Rule {
    Rule {
        id,
        origin: Origin::Buildkit,
        severity: Severity::Warning,
        url,
        description,
    }
}

const fn dl(
    id: &'static str,
    severity: Severity,
    url: &'static str,
    description: &'static str,
) -> Rule {
    Rule {
        id,
        origin: Origin::Hadolint,
        severity,
        url,
        description,
    }
}

/// Every rule, BuildKit's first (in BuildKit's order), then hadolint's.
pub const RULES: &[Rule] = &[
    bk("StageNameCasing", "https://docs.docker.com/go/dockerfile/rule/stage-name-casing/", "Stage names should be lowercase"),
    bk("FromAsCasing", "https://docs.docker.com/go/dockerfile/rule/from-as-casing/", "The 'as' keyword should match the case of the 'from' keyword"),
    bk("NoEmptyContinuation", "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/", "Empty continuation lines will become errors in a future release"),
    bk("ConsistentInstructionCasing", "https://docs.docker.com/go/dockerfile/rule/consistent-instruction-casing/", "All commands within the Dockerfile should use the same casing (either upper or lower)"),
    bk("DuplicateStageName", "https://docs.docker.com/go/dockerfile/rule/duplicate-stage-name/", "Stage names should be unique"),
    bk("ReservedStageName", "https://docs.docker.com/go/dockerfile/rule/reserved-stage-name/", "Reserved words should not be used as stage names"),
    bk("JSONArgsRecommended", "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/", "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals"),
    bk("MaintainerDeprecated", "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/", "The MAINTAINER instruction is deprecated, use a label instead to define an image author"),
    bk("UndefinedArgInFrom", "https://docs.docker.com/go/dockerfile/rule/undefined-arg-in-from/", "FROM command must use declared ARGs"),
    bk("WorkdirRelativePath", "https://docs.docker.com/go/dockerfile/rule/workdir-relative-path/", "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes"),
    bk("UndefinedVar", "https://docs.docker.com/go/dockerfile/rule/undefined-var/", "Variables should be defined before their use"),
    bk("MultipleInstructionsDisallowed", "https://docs.docker.com/go/dockerfile/rule/multiple-instructions-disallowed/", "Multiple instructions of the same type should not be used in the same stage"),
    bk("LegacyKeyValueFormat", "https://docs.docker.com/go/dockerfile/rule/legacy-key-value-format/", "Legacy key/value format with whitespace separator should not be used"),
    bk("RedundantTargetPlatform", "https://docs.docker.com/go/dockerfile/rule/redundant-target-platform/", "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior"),
    bk("SecretsUsedInArgOrEnv", "https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/", "Sensitive data should not be used in the ARG or ENV commands"),
    bk("InvalidDefaultArgInFrom", "https://docs.docker.com/go/dockerfile/rule/invalid-default-arg-in-from/", "Default value for global ARG results in an empty or invalid base image name"),
    bk("FromPlatformFlagConstDisallowed", "https://docs.docker.com/go/dockerfile/rule/from-platform-flag-const-disallowed/", "FROM --platform flag should not use a constant value"),
    bk("CopyIgnoredFile", "https://docs.docker.com/go/dockerfile/rule/copy-ignored-file/", "Attempting to Copy file that is excluded by .dockerignore"),
    bk("ExposeProtoCasing", "https://docs.docker.com/go/dockerfile/rule/expose-proto-casing/", "Protocol in EXPOSE instruction should be lowercase"),
    bk("ExposeInvalidFormat", "https://docs.docker.com/go/dockerfile/rule/expose-invalid-format/", "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release"),
    dl("DL3006", Severity::Warning, "https://github.com/hadolint/hadolint/wiki/DL3006", "Always tag the image version explicitly"),
    dl("DL3007", Severity::Warning, "https://github.com/hadolint/hadolint/wiki/DL3007", "Using latest is prone to errors if the image will ever update. Pin the version explicitly to a release tag"),
    dl("DL3009", Severity::Info, "https://github.com/hadolint/hadolint/wiki/DL3009", "Delete the apt-get lists after installing something"),
    dl("DL3014", Severity::Warning, "https://github.com/hadolint/hadolint/wiki/DL3014", "Use the `-y` switch to avoid manual input `apt-get -y install <package>`"),
    dl("DL3015", Severity::Info, "https://github.com/hadolint/hadolint/wiki/DL3015", "Avoid additional packages by specifying `--no-install-recommends`"),
    dl("DL3020", Severity::Error, "https://github.com/hadolint/hadolint/wiki/DL3020", "Use COPY instead of ADD for files and folders"),
    dl("DL3025", Severity::Warning, "https://github.com/hadolint/hadolint/wiki/DL3025", "Use arguments JSON notation for CMD and ENTRYPOINT arguments"),
    dl("DL3026", Severity::Error, "https://github.com/hadolint/hadolint/wiki/DL3026", "Use only an allowed registry in the FROM image"),
    dl("DL4006", Severity::Warning, "https://github.com/hadolint/hadolint/wiki/DL4006", "Set the SHELL option -o pipefail before RUN with a pipe in it. If you are using /bin/sh in an alpine image or if your shell is symlinked to busybox then consider explicitly setting your SHELL to /bin/ash, or disable this check"),
    dl("DL3059", Severity::Info, "https://github.com/hadolint/hadolint/wiki/DL3059", "Multiple consecutive `RUN` instructions. Consider consolidation."),
];

/// The rule with this id (exact spelling).
pub fn rule(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.id == id)
}
