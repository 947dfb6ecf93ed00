use super::*;
use rbuild_oci::Digest;

fn run(cmd: &str) -> ExecOp {
    ExecOp {
        args: vec!["/bin/sh".into(), "-c".into(), cmd.into()],
        env: vec!["PATH=/usr/bin:/bin".into()],
        cwd: "/".into(),
        user: String::new(),
        network: NetworkMode::Default,
        security: SecurityMode::Sandbox,
        extra_hosts: vec![],
        mounts: vec![],
        proxy_env: vec![],
    }
}

fn copy(src: &str, dest: &str) -> CopyAction {
    CopyAction::new(1, src, dest)
}

/// One op of each kind, with several options each.
pub(crate) fn representative_ops() -> Vec<(&'static str, Op)> {
    let image = Op::Source(SourceOp::Image {
        reference: "docker.io/library/busybox:latest".into(),
        digest: Some(Digest::sha256_of(b"manifest")),
    });
    let mut mounts = run("make");
    mounts.user = "1000:1000".into();
    mounts.network = NetworkMode::None;
    mounts.security = SecurityMode::Insecure;
    mounts.extra_hosts = vec![ExtraHost {
        host: "db".into(),
        ip: "10.0.0.5".into(),
    }];
    mounts.proxy_env = vec!["HTTP_PROXY=http://proxy:3128".into()];
    mounts.mounts = vec![
        ExecMount {
            kind: MountType::Cache,
            target: "/root/.cache".into(),
            input: None,
            selector: String::new(),
            readonly: false,
            cache: Some(CacheMountOpt {
                id: "go".into(),
                sharing: CacheSharing::Locked,
                uid: 0,
                gid: 0,
                mode: 0o755,
            }),
            tmpfs_size: None,
            secret: None,
            ssh: None,
        },
        ExecMount {
            kind: MountType::Bind,
            target: "/src".into(),
            input: Some(1),
            selector: "/app".into(),
            readonly: true,
            cache: None,
            tmpfs_size: None,
            secret: None,
            ssh: None,
        },
        ExecMount {
            kind: MountType::Tmpfs,
            target: "/tmp".into(),
            input: None,
            selector: String::new(),
            readonly: false,
            cache: None,
            tmpfs_size: Some(64 << 20),
            secret: None,
            ssh: None,
        },
        ExecMount {
            kind: MountType::Secret,
            target: "/run/secrets/token".into(),
            input: None,
            selector: String::new(),
            readonly: true,
            cache: None,
            tmpfs_size: None,
            secret: Some(SecretMountOpt {
                id: "token".into(),
                env: Some("TOKEN".into()),
                required: true,
                mode: 0o400,
                uid: 0,
                gid: 0,
            }),
            ssh: None,
        },
    ];
    let mut ssh = run("ssh-add -l");
    ssh.mounts = vec![ExecMount {
        kind: MountType::Ssh,
        target: "/run/buildkit/ssh_agent.0".into(),
        input: None,
        selector: String::new(),
        readonly: false,
        cache: None,
        tmpfs_size: None,
        secret: None,
        ssh: Some(SshMountOpt {
            id: "default".into(),
            required: true,
            mode: 0o600,
            uid: 0,
            gid: 0,
        }),
    }];
    let mut add = copy("app.tar", "/opt/");
    add.attempt_unpack = true;
    add.owner = Some(ChownOpt {
        user: UserOpt::Name("app".into()),
        group: Some(UserOpt::Id(1000)),
    });
    add.mode = Some(0o640);
    let mut copy_opts = copy("src/*.rs", "/src/");
    copy_opts.mode_str = Some("u+x,g-w".into());
    copy_opts.exclude_patterns = vec!["*.tmp".into()];
    copy_opts.parents = true;
    copy_opts.allow_empty_wildcard = true;
    vec![
        ("scratch", Op::Source(SourceOp::Scratch)),
        ("image", image),
        (
            "image without digest",
            Op::Source(SourceOp::Image {
                reference: "docker.io/library/alpine:3".into(),
                digest: None,
            }),
        ),
        (
            "context",
            Op::Source(SourceOp::Local {
                name: "context".into(),
                excludes: vec!["target".into(), "*.log".into()],
            }),
        ),
        (
            "http",
            Op::Source(SourceOp::Http {
                url: "https://example.com/a.tgz".into(),
                checksum: Some(format!("sha256:{}", "ab".repeat(32))),
                filename: "a.tgz".into(),
            }),
        ),
        (
            "inline",
            Op::Source(SourceOp::Inline {
                filename: "hello.sh".into(),
                content: "echo hi\n".into(),
            }),
        ),
        ("run", Op::Exec(run("echo hi"))),
        ("run with options", Op::Exec(mounts)),
        ("run with ssh", Op::Exec(ssh)),
        (
            "file",
            Op::File(FileOp {
                actions: vec![
                    FileAction::Mkdir(MkdirAction {
                        path: "/app".into(),
                        mode: 0o755,
                        make_parents: true,
                        owner: Some(ChownOpt {
                            user: UserOpt::Id(1),
                            group: None,
                        }),
                    }),
                    FileAction::Copy(copy("a.txt", "/app/a.txt")),
                    FileAction::Copy(add),
                    FileAction::Copy(copy_opts),
                ],
            }),
        ),
        ("merge", Op::Merge),
    ]
}

fn hex(bytes: &[u8]) -> String {
    Digest::sha256_of(bytes).hex().to_string()
}

/// The key encodings of one op of each kind, pinned: a change here changes every user's cache
/// keys, so it must come with a bump of [`ENCODING_VERSION`] and the solver's `KEY_VERSION`.
#[test]
fn key_encodings_are_pinned() {
    assert_eq!(ENCODING_VERSION, 2);
    let got: Vec<(&str, String)> = representative_ops()
        .iter()
        .map(|(name, op)| (*name, hex(&op.cache_key_bytes())))
        .collect();
    let want = [
        (
            "scratch",
            "86f88bcc8d4d7da9dbeba8ad127a3f4b8bc2c29a6d4fbab74dc7cdbadbf07576",
        ),
        (
            "image",
            "c2e16b062401f52edaff83d274c77151551ba3712bcb23183a35ea18d3d68b68",
        ),
        (
            "image without digest",
            "7762b49d02a4ccd48e957146875c519a52fdff8b527c42595b92368101f3c2a7",
        ),
        (
            "context",
            "43c82e61b8371187165b072216eeaa7f732380718e01a99f298f1d9824e4ec7e",
        ),
        (
            "http",
            "dca3eceae0161ea60de35dddd1ae551da14548b644b9aed559aef023a6b52c7b",
        ),
        (
            "inline",
            "90829f56d24858b9583e3cc1ab40a213555c8b712f81cffc38d2e4991c1e771c",
        ),
        (
            "run",
            "5164c416000ed9a751b23760cd537e2c0c7acc7f456a33aaa677cf85076da4e3",
        ),
        (
            "run with options",
            "4e194120f54ed2c09bc43011c2cad953ab51cb060882477f5a4432a76613f4c1",
        ),
        (
            "run with ssh",
            "32c2b19a7dc85c7c80fd2f6f0aac9b4d6e951f3a8e24285d3963441bede2c98f",
        ),
        (
            "file",
            "ad8606a5dcc837b7d014a6a90460e39b39d65c6ffad52101c14d98e3a6a1af2a",
        ),
        (
            "merge",
            "4711829ebf79c77474dbca40df5927b34ce66e3af82404ac8680065aefb65c08",
        ),
    ];
    let want: Vec<(&str, String)> = want.iter().map(|(n, h)| (*n, h.to_string())).collect();
    assert_eq!(got, want);
}

#[test]
fn the_header_names_version_and_purpose() {
    let key = Op::Merge.cache_key_bytes();
    assert_eq!(key, b"rbuild-op\x02k\x04");
    assert_eq!(Op::Merge.identity_bytes(), b"rbuild-op\x02i\x04");
}

#[test]
fn proxies_and_host_addresses_are_not_keyed() {
    let ops = representative_ops();
    let Some(Op::Exec(base)) = ops
        .iter()
        .map(|(_, op)| op)
        .find(|op| matches!(op, Op::Exec(e) if !e.proxy_env.is_empty()))
    else {
        unreachable!("the representative RUN with options");
    };
    let key = |e: &ExecOp| Op::Exec(e.clone()).cache_key_bytes();
    let id = |e: &ExecOp| Op::Exec(e.clone()).identity_bytes();
    for proxy in [
        "https_proxy=http://other",
        "NO_PROXY=*",
        "ALL_PROXY=socks5://x",
    ] {
        let mut moved = base.clone();
        moved.proxy_env = vec![proxy.into()];
        moved.extra_hosts[0].ip = "10.9.9.9".into();
        assert_eq!(
            key(&moved),
            key(base),
            "proxies and addresses are not keyed"
        );
        assert_ne!(id(&moved), id(base), "but they are part of the identity");
    }
    let mut renamed = base.clone();
    renamed.extra_hosts[0].host = "cache".into();
    assert_ne!(key(&renamed), key(base), "host names are keyed");
}

/// Every field that counts changes the key (each variation of the plain RUN differs from it
/// and from the others).
#[test]
fn every_keyed_field_changes_the_key() {
    let base = run("echo hi");
    let mut variants: Vec<ExecOp> = Vec::new();
    let mut v = |f: &dyn Fn(&mut ExecOp)| {
        let mut e = base.clone();
        f(&mut e);
        variants.push(e);
    };
    v(&|e| e.args.push("x".into()));
    v(&|e| e.env.push("A=1".into()));
    v(&|e| e.cwd = "/src".into());
    v(&|e| e.user = "nobody".into());
    v(&|e| e.network = NetworkMode::Host);
    v(&|e| e.network = NetworkMode::None);
    v(&|e| e.security = SecurityMode::Insecure);
    v(&|e| {
        e.extra_hosts = vec![ExtraHost {
            host: "db".into(),
            ip: "1.2.3.4".into(),
        }]
    });
    v(&|e| {
        e.mounts = vec![ExecMount {
            kind: MountType::Tmpfs,
            target: "/tmp".into(),
            input: None,
            selector: String::new(),
            readonly: false,
            cache: None,
            tmpfs_size: None,
            secret: None,
            ssh: None,
        }]
    });
    let mut keys: Vec<Vec<u8>> = vec![Op::Exec(base.clone()).cache_key_bytes()];
    keys.extend(variants.into_iter().map(|e| Op::Exec(e).cache_key_bytes()));
    let unique: std::collections::HashSet<&Vec<u8>> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len());
}

/// Strings and lists are length-framed: moving bytes between neighbouring fields or items
/// changes the encoding.
#[test]
fn fields_are_framed() {
    let mut a = run("x");
    a.args = vec!["ab".into(), "c".into()];
    let mut b = a.clone();
    b.args = vec!["a".into(), "bc".into()];
    assert_ne!(Op::Exec(a).cache_key_bytes(), Op::Exec(b).cache_key_bytes());
    let c = Op::Source(SourceOp::Inline {
        filename: "ab".into(),
        content: "c".into(),
    });
    let d = Op::Source(SourceOp::Inline {
        filename: "a".into(),
        content: "bc".into(),
    });
    assert_ne!(c.cache_key_bytes(), d.cache_key_bytes());
}
