//! BuildKit's capability names (the `pb` caps a daemon advertises in its `ListWorkers`/`Info`
//! answer) that the ops rbuild emits can need; each op records the ones it needs, so a remote
//! solve can refuse what a daemon lacks before sending the graph.

/// `source.image`: `docker-image://` sources.
pub const SOURCE_IMAGE: &str = "source.image";
/// `source.local`: `local://` sources.
pub const SOURCE_LOCAL: &str = "source.local";
/// `source.local.sessionid`: a local source names its session.
pub const SOURCE_LOCAL_SESSION_ID: &str = "source.local.sessionid";
/// `source.local.excludepatterns`: a local source with `.dockerignore` patterns.
pub const SOURCE_LOCAL_EXCLUDE_PATTERNS: &str = "source.local.excludepatterns";
/// `source.local.sharedkeyhint`: a local source with a shared key hint.
pub const SOURCE_LOCAL_SHARED_KEY_HINT: &str = "source.local.sharedkeyhint";
/// `source.http`: `https://` sources (ADD URL).
pub const SOURCE_HTTP: &str = "source.http";
/// `source.http.checksum`: ADD --checksum.
pub const SOURCE_HTTP_CHECKSUM: &str = "source.http.checksum";
/// `exec.meta.base`: any ExecOp.
pub const EXEC_META_BASE: &str = "exec.meta.base";
/// `exec.meta.network`: a RUN with a network mode other than the sandbox's.
pub const EXEC_META_NETWORK: &str = "exec.meta.network";
/// `exec.meta.security`: RUN --security=insecure.
pub const EXEC_META_SECURITY: &str = "exec.meta.security";
/// `exec.meta.proxyenv`: proxy variables outside the cache key.
pub const EXEC_META_PROXY: &str = "exec.meta.proxyenv";
/// `exec.mount.bind`: a bind mount of an input.
pub const EXEC_MOUNT_BIND: &str = "exec.mount.bind";
/// `exec.mount.selector`: a mount of a path inside an input.
pub const EXEC_MOUNT_SELECTOR: &str = "exec.mount.selector";
/// `exec.mount.cache`: RUN --mount=type=cache.
pub const EXEC_MOUNT_CACHE: &str = "exec.mount.cache";
/// `exec.mount.cache.sharing`: a cache mount's sharing mode.
pub const EXEC_MOUNT_CACHE_SHARING: &str = "exec.mount.cache.sharing";
/// `exec.mount.tmpfs`: RUN --mount=type=tmpfs.
pub const EXEC_MOUNT_TMPFS: &str = "exec.mount.tmpfs";
/// `exec.mount.tmpfs.size`: a tmpfs mount with `size=`.
pub const EXEC_MOUNT_TMPFS_SIZE: &str = "exec.mount.tmpfs.size";
/// `exec.mount.secret`: RUN --mount=type=secret.
pub const EXEC_MOUNT_SECRET: &str = "exec.mount.secret";
/// `exec.secretenv`: a secret as an environment variable (`env=`).
pub const EXEC_SECRET_ENV: &str = "exec.secretenv";
/// `exec.mount.ssh`: RUN --mount=type=ssh.
pub const EXEC_MOUNT_SSH: &str = "exec.mount.ssh";
/// `file.base`: any FileOp.
pub const FILE_BASE: &str = "file.base";
/// `file.copy.includeexcludepatterns`: COPY --exclude.
pub const FILE_COPY_INCLUDE_EXCLUDE: &str = "file.copy.includeexcludepatterns";
/// `file.copy.modestring`: COPY --chmod with a symbolic mode.
pub const FILE_COPY_MODE_STRING: &str = "file.copy.modestring";
/// `mergeop`: COPY --link.
pub const MERGE_OP: &str = "mergeop";
/// `constraints`: the terminal op (worker constraints).
pub const CONSTRAINTS: &str = "constraints";
/// `platform`: the terminal op (per-op platforms).
pub const PLATFORM: &str = "platform";
/// `meta.description`: ops carry a description (custom names).
pub const META_DESCRIPTION: &str = "meta.description";
/// `meta.ignorecache`: some op is solved without the cache (`--no-cache-filter`).
pub const META_IGNORE_CACHE: &str = "meta.ignorecache";

/// What a capability is for, in the Dockerfile's words (for "the daemon's BuildKit is too old
/// for ..." messages); the capability's own name for others.
pub fn describe(cap: &str) -> &str {
    match cap {
        SOURCE_IMAGE => "FROM an image",
        SOURCE_LOCAL | SOURCE_LOCAL_SHARED_KEY_HINT => "the build context",
        SOURCE_LOCAL_SESSION_ID => "local sources of a session",
        SOURCE_LOCAL_EXCLUDE_PATTERNS => ".dockerignore",
        SOURCE_HTTP => "ADD <url>",
        SOURCE_HTTP_CHECKSUM => "ADD --checksum",
        EXEC_META_BASE => "RUN",
        EXEC_META_NETWORK => "RUN --network",
        EXEC_META_SECURITY => "RUN --security=insecure",
        EXEC_META_PROXY => "proxy build args",
        EXEC_MOUNT_BIND => "RUN --mount=type=bind",
        EXEC_MOUNT_SELECTOR => "RUN --mount source=",
        EXEC_MOUNT_CACHE => "RUN --mount=type=cache",
        EXEC_MOUNT_CACHE_SHARING => "RUN --mount=type=cache,sharing=",
        EXEC_MOUNT_TMPFS => "RUN --mount=type=tmpfs",
        EXEC_MOUNT_TMPFS_SIZE => "RUN --mount=type=tmpfs,size=",
        EXEC_MOUNT_SECRET => "RUN --mount=type=secret",
        EXEC_SECRET_ENV => "RUN --mount=type=secret,env=",
        EXEC_MOUNT_SSH => "RUN --mount=type=ssh",
        FILE_BASE => "COPY, ADD and WORKDIR",
        FILE_COPY_INCLUDE_EXCLUDE => "COPY --exclude",
        FILE_COPY_MODE_STRING => "COPY --chmod with a symbolic mode",
        MERGE_OP => "COPY --link",
        META_IGNORE_CACHE => "--no-cache-filter",
        other => other,
    }
}
