//! Platforms as BuildKit reads, prints, normalises and matches them (containerd's `platforms`
//! package is the reference): `os/arch[/variant]` specifiers, the normal form (`aarch64` ->
//! `arm64`, `arm64/v8` -> `arm64`, `arm` -> `arm/v7`, `x86_64` -> `amd64`), the host platform,
//! the ordered candidates a platform accepts from an index (`arm/v7` also takes `arm/v6` and
//! `arm/v5`, `amd64/v3` also `amd64/v2` and `amd64`) and the directory names buildx gives
//! per-platform local outputs (`linux_arm64`).

use crate::Platform;
use std::fmt;
use std::str::FromStr;

/// A platform specifier that cannot be read (`--platform`, `FROM --platform`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\": unknown operating system or architecture: invalid argument")]
pub struct PlatformError(pub String);

/// Operating systems containerd knows (a one-part specifier naming one is an OS).
const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "windows",
    "zos",
];

/// Architectures containerd knows, before normalisation.
const KNOWN_ARCH: &[&str] = &[
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "ppc64",
    "ppc64le",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
    "aarch64",
    "armhf",
    "armel",
    "x86_64",
    "x86-64",
    "i386",
    "i486",
    "i586",
    "i686",
];

impl Platform {
    /// A platform from its parts, normalised.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            architecture: architecture.to_string(),
            os: os.to_string(),
            variant: variant.map(str::to_string),
            os_version: None,
        }
        .normalized()
    }

    /// linux/amd64, the platform of images that name none.
    pub fn linux_amd64() -> Platform {
        Platform::new("linux", "amd64", None)
    }

    /// The platform this process runs on (Linux, the compiled architecture).
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "arm" => "arm",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform::new("linux", arch, None)
    }

    /// The normal form (containerd's `Normalize`): lower case, canonical architecture names,
    /// default variants dropped (`arm64/v8`, `amd64/v1`) or added (`arm` -> `arm/v7`).
    pub fn normalized(&self) -> Platform {
        let os = match self.os.to_ascii_lowercase().as_str() {
            "macos" => "darwin".to_string(),
            other => other.to_string(),
        };
        let arch = self.architecture.to_ascii_lowercase();
        let variant = self.variant.as_deref().map(str::to_ascii_lowercase);
        let (arch, variant): (&str, Option<String>) = match arch.as_str() {
            "i386" | "i486" | "i586" | "i686" | "386" => ("386", None),
            "x86_64" | "x86-64" | "amd64" => match variant.as_deref() {
                None | Some("") | Some("v1") => ("amd64", None),
                Some(v) => ("amd64", Some(v.to_string())),
            },
            "aarch64" | "arm64" => match variant.as_deref() {
                None | Some("") | Some("8") | Some("v8") | Some("v8.0") => ("arm64", None),
                Some("9") | Some("9.0") | Some("v9.0") => ("arm64", Some("v9".to_string())),
                Some(v) => ("arm64", Some(v.to_string())),
            },
            "armhf" => ("arm", Some("v7".to_string())),
            "armel" => ("arm", Some("v6".to_string())),
            "arm" => match variant.as_deref() {
                None | Some("") | Some("7") => ("arm", Some("v7".to_string())),
                Some(v @ ("5" | "6" | "8")) => ("arm", Some(format!("v{v}"))),
                Some(v) => ("arm", Some(v.to_string())),
            },
            _ => (arch.as_str(), variant.filter(|v| !v.is_empty())),
        };
        Platform {
            architecture: arch.to_string(),
            os,
            variant,
            os_version: self.os_version.clone(),
        }
    }

    /// The platforms this one accepts from an index, best first (containerd's matcher with
    /// BuildKit's fallbacks): itself, then older variants of the same architecture.
    pub fn candidates(&self) -> Vec<Platform> {
        let me = self.normalized();
        let mut out = vec![me.clone()];
        let older: &[&str] = match (me.architecture.as_str(), me.variant.as_deref()) {
            ("arm", Some("v8")) => &["v7", "v6", "v5"],
            ("arm", Some("v7")) => &["v6", "v5"],
            ("arm", Some("v6")) => &["v5"],
            ("amd64", Some("v4")) => &["v3", "v2", ""],
            ("amd64", Some("v3")) => &["v2", ""],
            ("amd64", Some("v2")) => &[""],
            ("arm64", Some(v)) if v.starts_with("v9") => &[""],
            _ => &[],
        };
        for v in older {
            let variant = (!v.is_empty()).then_some(*v);
            out.push(Platform::new(&me.os, &me.architecture, variant));
        }
        // An arm64 machine runs arm/v8 (32-bit) images too, after every arm64 one.
        if me.architecture == "arm64" {
            out.push(Platform::new(&me.os, "arm", Some("v8")));
        }
        out
    }

    /// True when both name the same platform once normalised (`os.version` ignored).
    pub fn same_as(&self, other: &Platform) -> bool {
        let (a, b) = (self.normalized(), other.normalized());
        a.os == b.os && a.architecture == b.architecture && a.variant == b.variant
    }

    /// How well `offered` (an index entry's platform) suits this one: 0 is an exact match,
    /// higher is a fallback, None does not run here.
    pub fn rank(&self, offered: &Platform) -> Option<usize> {
        self.candidates().iter().position(|c| c.same_as(offered))
    }

    /// The directory name buildx gives this platform in a multi-platform local output
    /// (`linux_arm64`, `linux_arm_v7`).
    pub fn dir_name(&self) -> String {
        self.to_string().replace('/', "_")
    }
}

impl fmt::Display for Platform {
    /// `os/arch` or `os/arch/variant`, normalised (as BuildKit prints `TARGETPLATFORM`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.normalized();
        match &p.variant {
            Some(v) => write!(f, "{}/{}/{}", p.os, p.architecture, v),
            None => write!(f, "{}/{}", p.os, p.architecture),
        }
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    /// Reads `os`, `arch`, `os/arch` or `os/arch/variant` (containerd's `Parse`): a lone OS
    /// takes the host's architecture, a lone architecture the OS `linux`; the result is
    /// normalised.
    fn from_str(s: &str) -> Result<Platform, PlatformError> {
        let bad = || PlatformError(s.to_string());
        let parts: Vec<&str> = s.trim().split('/').collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || p.contains(char::is_whitespace))
        {
            return Err(bad());
        }
        let known_os = |p: &str| KNOWN_OS.contains(&p.to_ascii_lowercase().as_str());
        let known_arch = |p: &str| KNOWN_ARCH.contains(&p.to_ascii_lowercase().as_str());
        match parts.as_slice() {
            [one] if known_os(one) => {
                let host = Platform::host();
                Ok(Platform::new(
                    one,
                    &host.architecture,
                    host.variant.as_deref(),
                ))
            }
            [one] if known_arch(one) => Ok(Platform::new("linux", one, None)),
            [os, arch] if known_os(os) && known_arch(arch) => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] if known_os(os) && known_arch(arch) => {
                Ok(Platform::new(os, arch, Some(variant)))
            }
            _ => Err(bad()),
        }
    }
}

/// Reads a comma-separated `--platform` list (`linux/amd64,linux/arm64`), dropping repeats
/// while keeping the order given.
pub fn parse_platform_list(s: &str) -> Result<Vec<Platform>, PlatformError> {
    let mut out: Vec<Platform> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let p: Platform = part.parse()?;
        if !out.iter().any(|q| q.same_as(&p)) {
            out.push(p);
        }
    }
    if out.is_empty() {
        return Err(PlatformError(s.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_normalises_like_containerd() {
        assert_eq!(p("linux/amd64").to_string(), "linux/amd64");
        assert_eq!(p("linux/x86_64").to_string(), "linux/amd64");
        assert_eq!(p("linux/aarch64").to_string(), "linux/arm64");
        assert_eq!(p("linux/arm64/v8").to_string(), "linux/arm64");
        assert_eq!(p("linux/arm").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/arm/6").to_string(), "linux/arm/v6");
        assert_eq!(p("linux/armhf").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/amd64/v1").to_string(), "linux/amd64");
        assert_eq!(p("linux/amd64/v3").to_string(), "linux/amd64/v3");
        assert_eq!(p("arm64").to_string(), "linux/arm64");
        assert_eq!(p("LINUX/ARM64").to_string(), "linux/arm64");
        assert_eq!(p("linux").os, "linux");
        for bad in [
            "",
            "linux/",
            "foo/bar",
            "linux/amd64/v2/x",
            "linux/ amd64",
            "nope",
        ] {
            assert!(bad.parse::<Platform>().is_err(), "{bad:?} parsed");
        }
        let err = "foo/bar".parse::<Platform>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"foo/bar\": unknown operating system or architecture: invalid argument"
        );
    }

    #[test]
    fn candidates_fall_back_to_older_variants() {
        let names =
            |s: &str| -> Vec<String> { p(s).candidates().iter().map(|c| c.to_string()).collect() };
        assert_eq!(
            names("linux/arm/v7"),
            ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]
        );
        assert_eq!(names("linux/arm64"), ["linux/arm64", "linux/arm/v8"]);
        assert_eq!(
            names("linux/amd64/v3"),
            ["linux/amd64/v3", "linux/amd64/v2", "linux/amd64"]
        );
        assert_eq!(names("linux/amd64"), ["linux/amd64"]);
        let want = p("linux/arm64");
        assert_eq!(
            want.rank(&Platform::new("linux", "arm64", Some("v8"))),
            Some(0)
        );
        assert_eq!(want.rank(&p("linux/amd64")), None);
        assert_eq!(p("linux/arm/v7").rank(&p("linux/arm/v6")), Some(1));
        assert_eq!(p("linux/arm/v6").rank(&p("linux/arm/v7")), None);
    }

    #[test]
    fn lists_and_dir_names() {
        let list = parse_platform_list("linux/amd64, linux/arm64,linux/x86_64").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].dir_name(), "linux_arm64");
        assert_eq!(p("linux/arm/v7").dir_name(), "linux_arm_v7");
        assert!(parse_platform_list(",").is_err());
        assert!(parse_platform_list("linux/amd64,bogus").is_err());
    }

    #[test]
    fn an_image_config_names_its_platform() {
        let mut config = crate::ImageConfig::default();
        assert_eq!(config.platform().to_string(), "linux/amd64");
        config.architecture = "arm".into();
        config.variant = Some("v6".into());
        assert_eq!(config.platform().to_string(), "linux/arm/v6");
    }

    #[test]
    fn host_is_normalised() {
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        assert_eq!(h.normalized(), h);
    }
}
