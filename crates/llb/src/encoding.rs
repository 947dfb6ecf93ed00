//! Versioned byte encodings of ops: the **cache key encoding** (only the fields that decide an
//! op's result) and the **identity encoding** (every field; its sha256, with the inputs'
//! digests, is the vertex digest).
//!
//! Both are hand-defined and infallible: a header (`rbuild-op`, [`ENCODING_VERSION`], the
//! purpose), then the op kind and each field in a fixed order, every field preceded by its own
//! tag byte. Scalars are little-endian (`u32`, `u64`), booleans one byte, strings and lists a
//! `u64` length then the bytes or items, options a `0`/`1` byte then the value. Every op struct
//! is destructured field by field, so adding a field to an op does not compile until it is
//! written here or explicitly left out of the key.
//!
//! Left out of the cache key by construction (written only in the identity encoding): a RUN's
//! proxy variables (`HTTP_PROXY`, `https_proxy`, `NO_PROXY`, `ALL_PROXY`, ... from build
//! args: BuildKit's `ProxyEnv`) and the addresses of its `--add-host` entries (BuildKit's
//! `ExecOp.CacheMap` drops them; the host names count). Resource limits are not in ops at all.
//!
//! Changing what is written changes keys: bump [`ENCODING_VERSION`] (and the solver's
//! `KEY_VERSION`, which names the cache bucket) together with the pinned digests in the tests.

use crate::ops::{
    CacheMountOpt, CacheSharing, ChownOpt, CopyAction, ExecMount, ExecOp, ExtraHost, FileAction,
    FileOp, MkdirAction, MountType, NetworkMode, Op, SecretMountOpt, SecurityMode, SourceOp,
    SshMountOpt, UserOpt,
};

/// The version of the op encodings; part of every encoding's header.
pub const ENCODING_VERSION: u8 = 2;

const MAGIC: &[u8] = b"rbuild-op";

/// What an encoding is for: it decides whether the fields that must not count in a cache key
/// are written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Key,
    Identity,
}

impl Op {
    /// The op's cache key encoding: only the fields that decide its result (see the module
    /// docs). The solver hashes it with the inputs' keys and content digests.
    pub fn cache_key_bytes(&self) -> Vec<u8> {
        encode(self, Purpose::Key)
    }

    /// The op's identity encoding: every field (the vertex digest is made from it).
    pub fn identity_bytes(&self) -> Vec<u8> {
        encode(self, Purpose::Identity)
    }
}

fn encode(op: &Op, purpose: Purpose) -> Vec<u8> {
    let mut e = Enc {
        buf: Vec::with_capacity(256),
        purpose,
    };
    e.buf.extend_from_slice(MAGIC);
    e.buf.push(ENCODING_VERSION);
    e.buf.push(match purpose {
        Purpose::Key => b'k',
        Purpose::Identity => b'i',
    });
    e.op(op);
    e.buf
}

/// The byte writer.
struct Enc {
    buf: Vec<u8>,
    purpose: Purpose,
}

impl Enc {
    fn tag(&mut self, tag: u8) -> &mut Self {
        self.buf.push(tag);
        self
    }

    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn len(&mut self, n: usize) {
        self.u64(n as u64);
    }

    fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.buf.extend_from_slice(s.as_bytes());
    }

    fn strs(&mut self, v: &[String]) {
        self.list(v, |e, s| e.str(s));
    }

    fn list<T>(&mut self, items: &[T], mut f: impl FnMut(&mut Self, &T)) {
        self.len(items.len());
        for item in items {
            f(self, item);
        }
    }

    fn opt<T>(&mut self, v: Option<&T>, f: impl FnOnce(&mut Self, &T)) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                f(self, v);
            }
        }
    }

    fn op(&mut self, op: &Op) {
        match op {
            Op::Source(source) => {
                self.u8(1);
                self.source(source);
            }
            Op::Exec(exec) => {
                self.u8(2);
                self.exec(exec);
            }
            Op::File(file) => {
                self.u8(3);
                self.file(file);
            }
            Op::Merge => self.u8(4),
        }
    }

    fn source(&mut self, source: &SourceOp) {
        match source {
            SourceOp::Scratch => self.u8(1),
            SourceOp::Image { reference, digest } => {
                self.u8(2);
                self.tag(1).str(reference);
                self.tag(2)
                    .opt(digest.as_ref(), |e, d| e.str(&d.to_string()));
            }
            SourceOp::Local { name, excludes } => {
                self.u8(3);
                self.tag(1).str(name);
                self.tag(2).strs(excludes);
            }
            SourceOp::Http {
                url,
                checksum,
                filename,
            } => {
                self.u8(4);
                self.tag(1).str(url);
                self.tag(2).opt(checksum.as_ref(), |e, c| e.str(c));
                self.tag(3).str(filename);
            }
            SourceOp::Inline { filename, content } => {
                self.u8(5);
                self.tag(1).str(filename);
                self.tag(2).str(content);
            }
        }
    }

    fn exec(&mut self, exec: &ExecOp) {
        let ExecOp {
            args,
            env,
            cwd,
            user,
            network,
            security,
            extra_hosts,
            mounts,
            proxy_env,
        } = exec;
        self.tag(1).strs(args);
        self.tag(2).strs(env);
        self.tag(3).str(cwd);
        self.tag(4).str(user);
        self.tag(5).u8(match network {
            NetworkMode::Default => 0,
            NetworkMode::Host => 1,
            NetworkMode::None => 2,
        });
        self.tag(6).u8(match security {
            SecurityMode::Sandbox => 0,
            SecurityMode::Insecure => 1,
        });
        self.tag(7).list(extra_hosts, |e, h| e.extra_host(h));
        self.tag(8).list(mounts, |e, m| e.mount(m));
        if self.purpose == Purpose::Identity {
            self.tag(9).strs(proxy_env);
        }
    }

    fn extra_host(&mut self, host: &ExtraHost) {
        let ExtraHost { host, ip } = host;
        self.str(host);
        if self.purpose == Purpose::Identity {
            self.str(ip);
        }
    }

    fn mount(&mut self, mount: &ExecMount) {
        let ExecMount {
            kind,
            target,
            input,
            selector,
            readonly,
            cache,
            tmpfs_size,
            secret,
            ssh,
        } = mount;
        self.tag(1).u8(match kind {
            MountType::Bind => 0,
            MountType::Cache => 1,
            MountType::Tmpfs => 2,
            MountType::Secret => 3,
            MountType::Ssh => 4,
        });
        self.tag(2).str(target);
        self.tag(3).opt(input.as_ref(), |e, &i| e.u64(i as u64));
        self.tag(4).str(selector);
        self.tag(5).bool(*readonly);
        self.tag(6).opt(cache.as_ref(), |e, c| e.cache_mount(c));
        self.tag(7).opt(tmpfs_size.as_ref(), |e, &s| e.u64(s));
        self.tag(8).opt(secret.as_ref(), |e, s| e.secret_mount(s));
        // Written only when present, so the keys of mounts older than this field are unchanged.
        if let Some(ssh) = ssh {
            self.tag(9).ssh_mount(ssh);
        }
    }

    fn ssh_mount(&mut self, ssh: &SshMountOpt) {
        let SshMountOpt {
            id,
            required,
            mode,
            uid,
            gid,
        } = ssh;
        self.tag(1).str(id);
        self.tag(2).bool(*required);
        self.tag(3).u32(*mode);
        self.tag(4).u32(*uid);
        self.tag(5).u32(*gid);
    }

    fn cache_mount(&mut self, cache: &CacheMountOpt) {
        let CacheMountOpt {
            id,
            sharing,
            uid,
            gid,
            mode,
        } = cache;
        self.tag(1).str(id);
        self.tag(2).u8(match sharing {
            CacheSharing::Shared => 0,
            CacheSharing::Private => 1,
            CacheSharing::Locked => 2,
        });
        self.tag(3).u32(*uid);
        self.tag(4).u32(*gid);
        self.tag(5).u32(*mode);
    }

    fn secret_mount(&mut self, secret: &SecretMountOpt) {
        let SecretMountOpt {
            id,
            env,
            required,
            mode,
            uid,
            gid,
        } = secret;
        self.tag(1).str(id);
        self.tag(2).opt(env.as_ref(), |e, v| e.str(v));
        self.tag(3).bool(*required);
        self.tag(4).u32(*mode);
        self.tag(5).u32(*uid);
        self.tag(6).u32(*gid);
    }

    fn file(&mut self, file: &FileOp) {
        let FileOp { actions } = file;
        self.tag(1).list(actions, |e, action| match action {
            FileAction::Copy(copy) => {
                e.u8(1);
                e.copy(copy);
            }
            FileAction::Mkdir(mkdir) => {
                e.u8(2);
                e.mkdir(mkdir);
            }
        });
    }

    fn copy(&mut self, copy: &CopyAction) {
        let CopyAction {
            src_input,
            src,
            dest,
            owner,
            mode,
            follow_symlinks,
            dir_copy_contents,
            attempt_unpack,
            create_dest_path,
            allow_wildcard,
            allow_empty_wildcard,
            mode_str,
            exclude_patterns,
            parents,
        } = copy;
        self.tag(1).u64(*src_input as u64);
        self.tag(2).str(src);
        self.tag(3).str(dest);
        self.tag(4).opt(owner.as_ref(), |e, o| e.chown(o));
        self.tag(5).opt(mode.as_ref(), |e, &m| e.u32(m));
        self.tag(6).bool(*follow_symlinks);
        self.tag(7).bool(*dir_copy_contents);
        self.tag(8).bool(*attempt_unpack);
        self.tag(9).bool(*create_dest_path);
        self.tag(10).bool(*allow_wildcard);
        self.tag(11).bool(*allow_empty_wildcard);
        self.tag(12).opt(mode_str.as_ref(), |e, m| e.str(m));
        self.tag(13).strs(exclude_patterns);
        self.tag(14).bool(*parents);
    }

    fn mkdir(&mut self, mkdir: &MkdirAction) {
        let MkdirAction {
            path,
            mode,
            make_parents,
            owner,
        } = mkdir;
        self.tag(1).str(path);
        self.tag(2).u32(*mode);
        self.tag(3).bool(*make_parents);
        self.tag(4).opt(owner.as_ref(), |e, o| e.chown(o));
    }

    fn chown(&mut self, chown: &ChownOpt) {
        let ChownOpt { user, group } = chown;
        self.tag(1).user(user);
        self.tag(2).opt(group.as_ref(), |e, g| e.user(g));
    }

    fn user(&mut self, user: &UserOpt) {
        match user {
            UserOpt::Id(id) => {
                self.u8(0);
                self.u32(*id);
            }
            UserOpt::Name(name) => {
                self.u8(1);
                self.str(name);
            }
        }
    }
}

#[cfg(test)]
#[path = "encoding_tests.rs"]
mod tests;
