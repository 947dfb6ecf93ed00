//! The op types of the graph.

use rbuild_oci::Digest;
use serde::{Deserialize, Serialize};

/// An operation. Inputs are given by the enclosing vertex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A source of a filesystem: no inputs.
    Source(SourceOp),
    /// Run a process on input 0 (the root filesystem); the result is that filesystem after the run.
    Exec(ExecOp),
    /// File actions done by the builder itself (COPY, ADD, WORKDIR creation) on input 0.
    File(FileOp),
    /// Stacks the layers of inputs 1.. (each built on scratch, e.g. `COPY --link`) on input 0
    /// without copying through input 0's paths; the result's layers are input 0's plus theirs.
    Merge,
}

/// Where a source filesystem comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceOp {
    /// The empty filesystem.
    Scratch,
    /// A registry image; `digest` pins the manifest that the frontend resolved.
    Image {
        /// The normalised reference, e.g. `docker.io/library/busybox:latest`.
        reference: String,
        /// The linux/amd64 manifest digest the reference resolved to.
        digest: Option<Digest>,
    },
    /// A directory handed in by the client (the build context).
    Local {
        /// The name of the local source (`context`).
        name: String,
        /// `.dockerignore` patterns.
        excludes: Vec<String>,
    },
    /// A file fetched over HTTP(S) (ADD URL): the filesystem holds only `/filename`, mode 0600.
    Http {
        /// The URL.
        url: String,
        /// Expected content digest (`sha256:...`), if pinned.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checksum: Option<String>,
        /// The file name inside the result.
        filename: String,
    },
    /// One file with inline content (a COPY heredoc), mode 0644.
    Inline {
        /// The file name inside the result.
        filename: String,
        /// The file's bytes.
        content: String,
    },
}

/// Network mode of a RUN (BuildKit's `NetMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// The builder's sandbox network: a private network namespace with outbound connectivity
    /// (BuildKit's `sandbox`, the default).
    #[default]
    Default,
    /// Share the host's network (needs the `network.host` entitlement).
    Host,
    /// A fresh namespace with only loopback.
    None,
}

/// Security mode of a RUN (BuildKit's `SecurityMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SecurityMode {
    /// The default confinement (seccomp profile, default capabilities, standard devices).
    #[default]
    Sandbox,
    /// No confinement: every capability, no seccomp filter (needs `security.insecure`).
    Insecure,
}

impl SecurityMode {
    fn is_sandbox(&self) -> bool {
        *self == SecurityMode::Sandbox
    }
}

/// One extra `/etc/hosts` entry of a RUN (BuildKit's `HostIP`, from `--add-host NAME:IP`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraHost {
    /// The host name.
    pub host: String,
    /// Its IP address (not part of the cache key, as in BuildKit).
    pub ip: String,
}

/// A process to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecOp {
    /// argv.
    pub args: Vec<String>,
    /// Environment, `K=V`.
    pub env: Vec<String>,
    /// Working directory (absolute).
    pub cwd: String,
    /// User spec (`name`, `uid`, `uid:gid`, ...); empty = root.
    pub user: String,
    /// Network mode (part of the cache key, as in BuildKit).
    pub network: NetworkMode,
    /// Security mode (part of the cache key); omitted from the encoding when `sandbox`.
    #[serde(default, skip_serializing_if = "SecurityMode::is_sandbox")]
    pub security: SecurityMode,
    /// Extra `/etc/hosts` entries (BuildKit's `Meta.ExtraHosts`); omitted when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<ExtraHost>,
    /// Extra mounts (RUN --mount).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<ExecMount>,
    /// Proxy variables (`HTTP_PROXY`...) from build args: passed to the process, but not part of
    /// the cache key, as BuildKit's ProxyEnv.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy_env: Vec<String>,
}

impl ExecOp {
    /// The entitlements this RUN needs: `network.host` for the host network, `security.insecure`
    /// for the insecure security mode (as BuildKit's solver checks them).
    pub fn entitlements(&self) -> Vec<crate::Entitlement> {
        let mut out = Vec::new();
        if self.network == NetworkMode::Host {
            out.push(crate::Entitlement::NetworkHost);
        }
        if self.security == SecurityMode::Insecure {
            out.push(crate::Entitlement::SecurityInsecure);
        }
        out
    }
}

/// Kind of an extra mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountType {
    /// Bind a path of an input.
    Bind,
    /// A persistent cache directory.
    Cache,
    /// A tmpfs.
    Tmpfs,
    /// A secret (file and/or environment variable); its value is never part of the graph.
    Secret,
    /// An SSH agent socket forwarded from the client (`--ssh`); never part of the result.
    Ssh,
}

/// How concurrent users of one cache mount id share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CacheSharing {
    /// Everyone uses the same directory at once.
    #[default]
    Shared,
    /// A busy directory is not shared: another (pooled) directory is used instead.
    Private,
    /// Users of the same id wait for each other.
    Locked,
}

/// Options of a `type=cache` mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheMountOpt {
    /// The cache id (default: the target).
    pub id: String,
    /// Sharing mode.
    pub sharing: CacheSharing,
    /// Owner of a newly created cache directory.
    pub uid: u32,
    /// Group of a newly created cache directory.
    pub gid: u32,
    /// Mode of a newly created cache directory.
    pub mode: u32,
}

/// Options of a `type=secret` mount (only the id: the value is given to the worker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretMountOpt {
    /// The secret id.
    pub id: String,
    /// Expose the secret as this environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Fail when the secret is not given.
    pub required: bool,
    /// File mode.
    pub mode: u32,
    /// File owner.
    pub uid: u32,
    /// File group.
    pub gid: u32,
}

/// Options of a `type=ssh` mount (the socket itself is given to the worker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshMountOpt {
    /// The `--ssh` id (default `default`).
    pub id: String,
    /// Fail when no socket was forwarded for the id (else the mount is skipped).
    pub required: bool,
    /// Requested socket mode.
    pub mode: u32,
    /// Requested socket owner.
    pub uid: u32,
    /// Requested socket group.
    pub gid: u32,
}

/// An extra mount of a RUN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecMount {
    /// Kind.
    pub kind: MountType,
    /// Target path (absolute; empty for an env-only secret).
    pub target: String,
    /// Input index of the source: the bind source, or the initial contents of a cache
    /// (`from=`); None = an empty directory.
    pub input: Option<usize>,
    /// Path inside the source.
    pub selector: String,
    /// Read-only.
    pub readonly: bool,
    /// Cache options (`type=cache`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheMountOpt>,
    /// Size limit in bytes (`type=tmpfs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs_size: Option<u64>,
    /// Secret options (`type=secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretMountOpt>,
    /// SSH agent options (`type=ssh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshMountOpt>,
}

/// A list of file actions applied in order to input 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileOp {
    /// The actions.
    pub actions: Vec<FileAction>,
}

/// One file action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileAction {
    /// Copy from another input.
    Copy(CopyAction),
    /// Create a directory.
    Mkdir(MkdirAction),
}

/// A user or group given by id or by name (names are resolved in the destination filesystem).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserOpt {
    /// Numeric id.
    Id(u32),
    /// Name to look up in /etc/passwd or /etc/group.
    Name(String),
}

/// Owner for copied or created files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChownOpt {
    /// The user.
    pub user: UserOpt,
    /// The group; None = the user's primary group (name) or the same id (number).
    pub group: Option<UserOpt>,
}

/// COPY/ADD of one source path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyAction {
    /// Which vertex input holds the source (1.. ; 0 is the destination).
    pub src_input: usize,
    /// Source path inside that input (may hold wildcards).
    pub src: String,
    /// Destination path (absolute; a trailing `/` means "into this directory").
    pub dest: String,
    /// New owner.
    pub owner: Option<ChownOpt>,
    /// New mode bits.
    pub mode: Option<u32>,
    /// Follow a symlink given as the source.
    pub follow_symlinks: bool,
    /// Copy a directory's contents rather than the directory.
    pub dir_copy_contents: bool,
    /// ADD: extract local archives.
    pub attempt_unpack: bool,
    /// Create missing parents of the destination.
    pub create_dest_path: bool,
    /// Wildcards in `src` are expanded.
    pub allow_wildcard: bool,
    /// A wildcard matching nothing is not an error.
    pub allow_empty_wildcard: bool,
    /// Symbolic mode (`u+x,g-w`), applied to each copied entry's own mode (instead of `mode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode_str: Option<String>,
    /// `--exclude` patterns (dockerignore syntax, relative to each source).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_patterns: Vec<String>,
    /// `--parents`: keep the source's parent directories (from the `/./` pivot, or the root).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parents: bool,
}

impl CopyAction {
    /// A plain `COPY src dest` from input `src_input`: wildcards expanded, a symlink source
    /// followed, a directory's contents copied, missing parents created; no owner, mode,
    /// unpacking, excludes or `--parents` (set those fields for other forms).
    pub fn new(src_input: usize, src: impl Into<String>, dest: impl Into<String>) -> CopyAction {
        CopyAction {
            src_input,
            src: src.into(),
            dest: dest.into(),
            owner: None,
            mode: None,
            follow_symlinks: true,
            dir_copy_contents: true,
            attempt_unpack: false,
            create_dest_path: true,
            allow_wildcard: true,
            allow_empty_wildcard: false,
            mode_str: None,
            exclude_patterns: Vec::new(),
            parents: false,
        }
    }
}

/// mkdir -p with an owner and mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MkdirAction {
    /// Absolute path.
    pub path: String,
    /// Mode bits.
    pub mode: u32,
    /// Create parents.
    pub make_parents: bool,
    /// Owner.
    pub owner: Option<ChownOpt>,
}
