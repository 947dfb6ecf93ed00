//! Runs of a foreign architecture under user-mode emulation (Debian's `qemu-user-static`).
//!
//! This module owns the table of architectures rbuild can emulate (their qemu names and the ELF
//! header magic and mask binfmt_misc matches), finding the emulator on the host, and registering
//! it with binfmt_misc for one run only:
//!
//! * the caller side ([`Emulator::find`]) looks `qemu-<arch>-static` up on `PATH` and in
//!   `/usr/bin` (or only in the directories it is given, for tests) and fails with
//!   [`SandboxError::NoEmulator`], naming the package, when it is missing;
//! * inside the sandbox (Linux >= 6.7), pid 1 moves into a user namespace of its own with the
//!   identity mapping of every id (written by the helper, which stays outside) and a
//!   mount namespace owned by it, mounts a private binfmt_misc instance on
//!   `/proc/sys/fs/binfmt_misc`, registers only this emulator with the flags `POCF` (as
//!   tonistiigi/binfmt, which BuildKit's docs point to: preserve argv[0], credentials and
//!   binary fd from the emulated binary, interpreter opened at registration so it need not
//!   exist in the rootfs) and remounts it read-only. The host's own registrations are neither
//!   read nor changed, and they are not used inside the sandbox: a user namespace with its
//!   own instance sees only that instance.
//! * on older kernels ([`per_user_namespace_binfmt`] is false), the caller registers the
//!   emulator on the host instead, with the `F` flag, under the name `rbuild-qemu-<arch>`
//!   (reusing any enabled handler of the same magic), and the run says so in a warning.

use crate::error::SandboxError;
use crate::status::{step, Failure};
use nix::mount::MsFlags;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Where binfmt_misc is mounted, on the host and inside an emulated run.
pub(crate) const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// The flags every registration gets: preserve argv[0], credentials (and binary fd) from the
/// emulated binary, open the interpreter now.
const FLAGS: &str = "POCF";

/// A user-mode emulator for a run whose binaries are of a foreign architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Emulator {
    /// The binfmt_misc handler name, e.g. `qemu-aarch64`.
    pub name: String,
    /// The emulator on the host, e.g. `/usr/bin/qemu-aarch64-static` (a static binary: it runs
    /// inside any rootfs without being in it).
    pub interpreter: PathBuf,
    /// The ELF header bytes binfmt_misc matches (after `mask`).
    pub magic: Vec<u8>,
    /// Which bits of `magic` are compared.
    pub mask: Vec<u8>,
}

/// One emulated architecture: its OCI name, qemu's name, ELF class, byte order and machine.
struct Arch {
    oci: &'static str,
    qemu: &'static str,
    /// 1: 32-bit, 2: 64-bit (`EI_CLASS`).
    class: u8,
    /// True for big-endian (`EI_DATA` 2).
    big_endian: bool,
    /// `e_machine`.
    machine: u16,
}

/// The architectures rbuild emulates (qemu's `linux-user` targets Debian ships as `-static`).
const ARCHES: &[Arch] = &[
    Arch {
        oci: "amd64",
        qemu: "x86_64",
        class: 2,
        big_endian: false,
        machine: 62,
    },
    Arch {
        oci: "386",
        qemu: "i386",
        class: 1,
        big_endian: false,
        machine: 3,
    },
    Arch {
        oci: "arm64",
        qemu: "aarch64",
        class: 2,
        big_endian: false,
        machine: 183,
    },
    Arch {
        oci: "arm",
        qemu: "arm",
        class: 1,
        big_endian: false,
        machine: 40,
    },
    Arch {
        oci: "ppc64le",
        qemu: "ppc64le",
        class: 2,
        big_endian: false,
        machine: 21,
    },
    Arch {
        oci: "s390x",
        qemu: "s390x",
        class: 2,
        big_endian: true,
        machine: 22,
    },
    Arch {
        oci: "riscv64",
        qemu: "riscv64",
        class: 2,
        big_endian: false,
        machine: 243,
    },
    Arch {
        oci: "mips64le",
        qemu: "mips64el",
        class: 2,
        big_endian: false,
        machine: 8,
    },
    Arch {
        oci: "loong64",
        qemu: "loongarch64",
        class: 2,
        big_endian: false,
        machine: 258,
    },
];

impl Arch {
    /// The first 20 bytes of an executable or shared-object ELF file of this architecture,
    /// and the mask binfmt_misc compares them under: OS ABI ignored, `ET_EXEC` and `ET_DYN`
    /// both match (the low bit of `e_type` is masked).
    fn magic_and_mask(&self) -> (Vec<u8>, Vec<u8>) {
        let mut magic = vec![0x7f, b'E', b'L', b'F', self.class];
        magic.push(if self.big_endian { 2 } else { 1 });
        magic.push(1); // EI_VERSION
        magic.extend_from_slice(&[0; 9]); // OS ABI, ABI version, padding
        let (e_type, machine) = if self.big_endian {
            (2u16.to_be_bytes(), self.machine.to_be_bytes())
        } else {
            (2u16.to_le_bytes(), self.machine.to_le_bytes())
        };
        magic.extend_from_slice(&e_type);
        magic.extend_from_slice(&machine);
        let mut mask = vec![0xff; 20];
        mask[7] = 0x00;
        mask[if self.big_endian { 17 } else { 16 }] = 0xfe;
        (magic, mask)
    }
}

/// qemu's name of an OCI architecture (`arm64` -> `aarch64`, `386` -> `i386`), if rbuild can
/// emulate it.
pub fn qemu_arch(oci_arch: &str) -> Option<&'static str> {
    ARCHES.iter().find(|a| a.oci == oci_arch).map(|a| a.qemu)
}

/// Where [`Emulator::find`] looks by default: every `PATH` directory, then `/usr/bin`.
pub fn default_emulator_dirs() -> Vec<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.push(PathBuf::from("/usr/bin"));
    dirs
}

impl Emulator {
    /// The emulator of `oci_arch` (`arm64`, `arm`, `ppc64le`, `s390x`, `riscv64`, `386`, ...):
    /// `qemu-<arch>-static` from the first of `dirs` that has it. `platform` (e.g.
    /// `linux/arm64`) only names the target in the error.
    pub fn find(
        platform: &str,
        oci_arch: &str,
        dirs: &[PathBuf],
    ) -> Result<Emulator, SandboxError> {
        let arch = ARCHES.iter().find(|a| a.oci == oci_arch).ok_or_else(|| {
            SandboxError::UnsupportedPlatform {
                platform: platform.to_string(),
            }
        })?;
        let binary = format!("qemu-{}-static", arch.qemu);
        let interpreter = dirs
            .iter()
            .map(|d| d.join(&binary))
            .find(|p| is_executable(p))
            .ok_or_else(|| SandboxError::NoEmulator {
                platform: platform.to_string(),
                binary: binary.clone(),
            })?;
        let (magic, mask) = arch.magic_and_mask();
        Ok(Emulator {
            name: format!("qemu-{}", arch.qemu),
            interpreter,
            magic,
            mask,
        })
    }

    /// The binfmt_misc `register` line for this emulator, named `name`, with `interpreter`.
    pub(crate) fn register_line(&self, name: &str, interpreter: &str) -> String {
        let hex = |bytes: &[u8]| {
            bytes.iter().fold(String::new(), |mut s, b| {
                let _ = write!(s, "\\x{b:02x}");
                s
            })
        };
        format!(
            ":{name}:M::{}:{}:{interpreter}:{FLAGS}",
            hex(&self.magic),
            hex(&self.mask)
        )
    }

    /// Checks what the kernel would otherwise reject obscurely.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let plain = |s: &str| !s.is_empty() && !s.contains([':', '/', '\n', '\0']);
        if !plain(&self.name) || self.name == "." || self.name == ".." {
            return Err(format!("invalid emulator name {:?}", self.name));
        }
        if self.magic.is_empty() || self.magic.len() != self.mask.len() || self.magic.len() > 128 {
            return Err("emulator magic and mask must have the same length (1..=128)".into());
        }
        if !self.interpreter.is_absolute() {
            return Err(format!(
                "emulator `{}` is not an absolute path",
                self.interpreter.display()
            ));
        }
        Ok(())
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// True when this kernel gives each user namespace its own binfmt_misc instance (Linux 6.7)
/// and has binfmt_misc (its mount point exists in `/proc`). Checked once per process.
pub fn per_user_namespace_binfmt() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        kernel_at_least(&release, 6, 7) && Path::new(BINFMT_DIR).is_dir()
    })
}

fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let num = |p: Option<&str>| p.and_then(|s| s.parse::<u32>().ok()).unwrap_or(0);
    let (ma, mi) = (num(parts.next()), num(parts.next()));
    (ma, mi) >= (major, minor)
}

/// The fallback for kernels without per-user-namespace binfmt_misc: makes sure the host's
/// (global) binfmt_misc has an enabled handler for the emulator's magic, registering
/// `rbuild-<name>` with the `F` flag if none does (mounting binfmt_misc first if needed).
/// Returns the warning the run prints.
pub(crate) fn register_on_host(emu: &Emulator) -> Result<String, SandboxError> {
    let setup = |what: &str, e: std::io::Error| SandboxError::Setup(format!("{what}: {e}"));
    let dir = Path::new(BINFMT_DIR);
    if !dir.join("register").exists() {
        nix::mount::mount(
            Some("binfmt_misc"),
            dir,
            Some("binfmt_misc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(|e| setup("mount binfmt_misc on the host", e.into()))?;
    }
    let existing = existing_handler(dir, emu);
    let name = format!("rbuild-{}", emu.name);
    if existing.is_none() {
        let line = emu.register_line(&name, &emu.interpreter.to_string_lossy());
        match std::fs::write(dir.join("register"), line) {
            Ok(()) => {}
            // A concurrent run registered it first.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(setup("register the emulator on the host", e)),
        }
    }
    Ok(format!(
        "WARNING: this kernel has no binfmt_misc per user namespace (Linux 6.7+): {} runs through the host's global binfmt_misc handler `{}` ({}, flag F)\n",
        emu.name,
        existing.as_deref().unwrap_or(&name),
        emu.interpreter.display()
    ))
}

/// The name of an enabled host handler with the emulator's magic and mask, if any.
fn existing_handler(dir: &Path, emu: &Emulator) -> Option<String> {
    let hex = |b: &[u8]| {
        b.iter().fold(String::new(), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
    };
    let (magic, mask) = (
        format!("magic {}", hex(&emu.magic)),
        format!("mask {}", hex(&emu.mask)),
    );
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "register" || name == "status" {
            return None;
        }
        let text = std::fs::read_to_string(e.path()).ok()?;
        let lines: Vec<&str> = text.lines().collect();
        (lines.first() == Some(&"enabled")
            && lines.contains(&magic.as_str())
            && lines.contains(&mask.as_str()))
        .then_some(name)
    })
}

/// What pid 1 of an emulated run needs: the emulator's file (opened by the helper on the
/// host), and the two ends of the handshake with the helper, which writes the new user
/// namespace's id maps.
pub(crate) struct ChildSide {
    /// The emulator, opened `O_PATH` before the pivot; registered as `/proc/self/fd/N`.
    pub interpreter: OwnedFd,
    /// Written once the user namespace exists.
    pub request: OwnedFd,
    /// Read: the maps are written.
    pub ack: OwnedFd,
}

/// The helper's ends of the handshake.
pub(crate) struct HelperSide {
    /// Read: the child has its user namespace.
    pub request: OwnedFd,
    /// Written once the maps are.
    pub ack: OwnedFd,
}

/// Opens the emulator and the handshake pipes (in the helper, before it forks pid 1).
pub(crate) fn prepare(emu: &Emulator) -> Result<(ChildSide, HelperSide), Failure> {
    let interpreter = rustix::fs::open(
        &emu.interpreter,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(step(format!("open emulator {}", emu.interpreter.display())))?;
    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let (req_r, req_w) = nix::unistd::pipe2(cloexec).map_err(step("pipe for the id maps"))?;
    let (ack_r, ack_w) = nix::unistd::pipe2(cloexec).map_err(step("pipe for the id maps"))?;
    Ok((
        ChildSide {
            interpreter,
            request: req_w,
            ack: ack_r,
        },
        HelperSide {
            request: req_r,
            ack: ack_w,
        },
    ))
}

/// The identity map of every id the helper's own namespace has, from its `uid_map` or
/// `gid_map` text: in the initial namespace `0 0 4294967295` (the whole range); inside a
/// container that maps fewer ids, the same ranges, each to itself.
fn identity_of(own_map: &str) -> String {
    own_map
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [inside, _, count] => Some(format!("{inside} {inside} {count}\n")),
                _ => None,
            }
        })
        .collect()
}

/// In the helper: waits for pid 1 to have its user namespace, then writes its id maps (the
/// identity of every id: root stays root, every file keeps its owner) and acknowledges.
/// If the child ended first, returns Ok and lets its own failure report stand.
pub(crate) fn map_child(side: HelperSide, child: nix::unistd::Pid) -> Result<(), Failure> {
    let mut b = [0u8; 1];
    loop {
        match nix::unistd::read(&side.request, &mut b) {
            Ok(1) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            _ => return Ok(()),
        }
    }
    for file in ["uid_map", "gid_map"] {
        let own = std::fs::read_to_string(format!("/proc/self/{file}"))
            .map_err(step(format!("read /proc/self/{file}")))?;
        let path = format!("/proc/{}/{file}", child.as_raw());
        std::fs::write(&path, identity_of(&own)).map_err(step(format!("write {path}")))?;
    }
    nix::unistd::write(&side.ack, b"m").map_err(step("acknowledge the id maps"))?;
    Ok(())
}

/// In pid 1, after the pivot and before the capability drop and the seccomp filter: enters a
/// user namespace (and a mount namespace it owns), has the helper map it, mounts a private
/// binfmt_misc, registers the emulator and makes the mount read-only.
pub(crate) fn enter(emu: &Emulator, side: ChildSide) -> Result<(), Failure> {
    use nix::sched::CloneFlags;
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
        .map_err(step("unshare(NEWUSER|NEWNS) for emulation"))?;
    nix::unistd::write(&side.request, b"u").map_err(step("ask for the id maps"))?;
    drop(side.request);
    let mut b = [0u8; 1];
    loop {
        match nix::unistd::read(&side.ack, &mut b) {
            Ok(1) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            _ => {
                return Err(Failure::setup(
                    "the sandbox helper did not map the user namespace",
                ))
            }
        }
    }
    drop(side.ack);
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    nix::mount::mount(
        Some("binfmt_misc"),
        BINFMT_DIR,
        Some("binfmt_misc"),
        flags,
        None::<&str>,
    )
    .map_err(step(format!("mount binfmt_misc on {BINFMT_DIR}")))?;
    let interpreter = format!("/proc/self/fd/{}", side.interpreter.as_raw_fd());
    let line = emu.register_line(&emu.name, &interpreter);
    std::fs::write(format!("{BINFMT_DIR}/register"), line)
        .map_err(step(format!("register {} with binfmt_misc", emu.name)))?;
    drop(side.interpreter);
    nix::mount::mount(
        None::<&str>,
        BINFMT_DIR,
        None::<&str>,
        flags | MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(step(format!("remount {BINFMT_DIR} read-only")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_matches_debians_registrations() {
        let emu = |arch: &str| {
            let a = ARCHES.iter().find(|a| a.oci == arch).unwrap();
            let (magic, mask) = a.magic_and_mask();
            Emulator {
                name: format!("qemu-{}", a.qemu),
                interpreter: PathBuf::from(format!("/usr/bin/qemu-{}-static", a.qemu)),
                magic,
                mask,
            }
        };
        // As /usr/lib/binfmt.d/qemu-aarch64.conf of Debian's qemu-user-static has them.
        assert_eq!(
            emu("arm64").register_line("qemu-aarch64", "/usr/bin/qemu-aarch64-static"),
            ":qemu-aarch64:M::\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:/usr/bin/qemu-aarch64-static:POCF"
        );
        let s390x = emu("s390x");
        assert_eq!(&s390x.magic[4..8], &[2, 2, 1, 0]);
        assert_eq!(&s390x.magic[16..20], &[0, 2, 0, 22]);
        assert_eq!(&s390x.mask[16..20], &[0xff, 0xfe, 0xff, 0xff]);
        assert_eq!(&emu("arm").magic[16..20], &[2, 0, 40, 0]);
        assert_eq!(&emu("riscv64").magic[18..20], &[0xf3, 0]);
        for a in ARCHES {
            let e = emu(a.oci);
            assert!(e.validate().is_ok(), "{}", a.oci);
        }
    }

    #[test]
    fn qemu_names_of_oci_architectures() {
        assert_eq!(qemu_arch("arm64"), Some("aarch64"));
        assert_eq!(qemu_arch("386"), Some("i386"));
        assert_eq!(qemu_arch("arm"), Some("arm"));
        assert_eq!(qemu_arch("ppc64le"), Some("ppc64le"));
        assert_eq!(qemu_arch("wasm"), None);
    }

    #[test]
    fn missing_emulator_names_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let err = Emulator::find("linux/arm64", "arm64", &[dir.path().to_path_buf()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no emulator for linux/arm64: install qemu-user-static (qemu-aarch64-static not found)"
        );
        let err = Emulator::find("linux/wasm", "wasm", &[]).unwrap_err();
        assert!(
            err.to_string().starts_with("no emulator for linux/wasm"),
            "{err}"
        );
        // Found when present and executable.
        let bin = dir.path().join("qemu-aarch64-static");
        std::fs::write(&bin, b"").unwrap();
        assert!(Emulator::find("linux/arm64", "arm64", &[dir.path().to_path_buf()]).is_err());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = Emulator::find("linux/arm64", "arm64", &[dir.path().to_path_buf()]).unwrap();
        assert_eq!(
            (e.name.as_str(), e.interpreter.as_path()),
            ("qemu-aarch64", bin.as_path())
        );
    }

    #[test]
    fn host_handlers_of_the_same_magic_are_reused() {
        let a = ARCHES.iter().find(|a| a.oci == "arm64").unwrap();
        let (magic, mask) = a.magic_and_mask();
        let emu = Emulator {
            name: "qemu-aarch64".into(),
            interpreter: PathBuf::from("/usr/bin/qemu-aarch64-static"),
            magic,
            mask,
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("register"), "").unwrap();
        std::fs::write(dir.path().join("status"), "enabled\n").unwrap();
        assert_eq!(existing_handler(dir.path(), &emu), None);
        // As the kernel prints an entry (Debian's registration of the same magic and mask).
        let entry = "interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\noffset 0\n\
                     magic 7f454c460201010000000000000000000200b700\n\
                     mask ffffffffffffff00fffffffffffffffffeffffff\n";
        std::fs::write(
            dir.path().join("qemu-aarch64"),
            format!("disabled\n{entry}"),
        )
        .unwrap();
        assert_eq!(existing_handler(dir.path(), &emu), None);
        std::fs::write(dir.path().join("qemu-aarch64"), format!("enabled\n{entry}")).unwrap();
        assert_eq!(
            existing_handler(dir.path(), &emu).as_deref(),
            Some("qemu-aarch64")
        );
    }

    #[test]
    fn id_maps_are_the_identity_of_the_helpers_own() {
        assert_eq!(
            identity_of("         0          0 4294967295\n"),
            "0 0 4294967295\n"
        );
        // A container mapping 0-65535 to 100000-165535, and 1000 more ids elsewhere.
        assert_eq!(
            identity_of("0 100000 65536\n70000 300000 1000\n"),
            "0 0 65536\n70000 70000 1000\n"
        );
        assert_eq!(identity_of(""), "");
    }

    #[test]
    fn kernel_versions() {
        assert!(kernel_at_least("6.18.44-fc-v657", 6, 7));
        assert!(kernel_at_least("6.7.0", 6, 7));
        assert!(!kernel_at_least("6.6.30-generic", 6, 7));
        assert!(!kernel_at_least("5.15.0", 6, 7));
        assert!(kernel_at_least("7.0", 6, 7));
    }
}
