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
}

/// Network mode of a RUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// Share the host's network (BuildKit's OCI worker default).
    #[default]
    Host,
    /// A fresh namespace with only loopback.
    None,
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
    /// Network mode.
    pub network: NetworkMode,
    /// Extra mounts (RUN --mount); not yet executed by the worker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<ExecMount>,
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
}

/// An extra mount of a RUN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecMount {
    /// Kind.
    pub kind: MountType,
    /// Target path.
    pub target: String,
    /// Input index of the source (bind), if any.
    pub input: Option<usize>,
    /// Path inside the source.
    pub selector: String,
    /// Read-only.
    pub readonly: bool,
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
