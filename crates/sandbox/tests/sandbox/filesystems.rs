//! Filesystems: overlay rootfs with many layers, scratch and directory roots, bind, tree, tmpfs
//! and file mounts, and parallel runs on one lower layer.

use super::support::*;
use rbuild_sandbox::{BindMount, Mount, Rootfs};
use std::fs;
use std::os::unix::fs::symlink;

pub fn many_lowerdirs(c: &Ctx) -> TestResult {
    let dir = c.tmp.path().join("many");
    let mut lowers = Vec::new();
    for i in 0..150 {
        let l = dir.join(format!("layer-{i:03}-{}", "x".repeat(100)));
        fs::create_dir_all(&l).map_err(|e| e.to_string())?;
        fs::write(l.join(format!("f{i}")), format!("{i}\n")).map_err(|e| e.to_string())?;
        fs::write(l.join("which"), format!("{i}\n")).map_err(|e| e.to_string())?;
        lowers.push(l);
    }
    lowers.push(c.base.clone());
    let (mut spec, _) = c.spec(&["sh", "-c", "cat /which /f0 /f149"]);
    if let Rootfs::Overlay { lowerdirs, .. } = &mut spec.rootfs {
        *lowerdirs = lowers;
    }
    let o = c.run(&spec).map_err(|e| e.to_string())?;
    ok_out(&o)?;
    check!(o.stdout == "0\n0\n149\n", "stdout {:?}", o.stdout);
    Ok(())
}

pub fn scratch_and_extra_mounts(c: &Ctx) -> TestResult {
    let (mut spec, upper) = c.spec(&[
        "/bin/busybox",
        "sh",
        "-c",
        "/bin/busybox cat /data/in; /bin/busybox echo out > /rw/out; /bin/busybox touch /data/nope 2>/dev/null || /bin/busybox echo ro-ok",
    ]);
    if let Rootfs::Overlay { lowerdirs, .. } = &mut spec.rootfs {
        lowerdirs.clear();
    }
    let (ro, rw) = (c.tmp.path().join("ro-src"), c.tmp.path().join("rw-src"));
    fs::create_dir_all(&ro).map_err(|e| e.to_string())?;
    fs::create_dir_all(&rw).map_err(|e| e.to_string())?;
    fs::write(ro.join("in"), "data\n").map_err(|e| e.to_string())?;
    spec.extra_mounts = vec![
        BindMount {
            source: "/bin/busybox".into(),
            target: "/bin/busybox".into(),
            readonly: true,
        }
        .into(),
        BindMount {
            source: ro.clone(),
            target: "/data".into(),
            readonly: true,
        }
        .into(),
        BindMount {
            source: rw.clone(),
            target: "/rw".into(),
            readonly: false,
        }
        .into(),
    ];
    let o = c.run(&spec).map_err(|e| e.to_string())?;
    ok_out(&o)?;
    check!(
        o.stdout == "data\nro-ok\n",
        "stdout {:?} stderr {:?}",
        o.stdout,
        o.stderr
    );
    check!(
        fs::read_to_string(rw.join("out")).ok().as_deref() == Some("out\n"),
        "rw mount write missing"
    );
    check!(!ro.join("nope").exists(), "ro mount was written");
    check!(
        upper.join("bin/busybox").is_file(),
        "mount target not created in upper"
    );
    Ok(())
}

pub fn tree_tmpfs_and_file_mounts(c: &Ctx) -> TestResult {
    let (mut spec, upper) = c.spec(&[
        "/bin/sh",
        "-c",
        "cat /t/in; (touch /t/x 2>/dev/null && echo rw) || echo ro; echo w > /o/new; \
         ls -A /tmpfs | wc -l; grep -c ' /tmpfs tmpfs ' /proc/mounts; cat /s/sec; stat -c '%a %u %g' /s/sec",
    ]);
    let tree = c.tmp.path().join("tree");
    fs::create_dir_all(tree.join("sub")).map_err(|e| e.to_string())?;
    fs::write(tree.join("sub/in"), "tree\n").map_err(|e| e.to_string())?;
    // An escape attempt: resolved inside the tree, it is tree/sub.
    symlink("../../../../../sub", tree.join("up")).map_err(|e| e.to_string())?;
    // A writable overlay tree whose writes go to a throwaway upper.
    let (o_upper, o_work) = (c.tmp.path().join("o-upper"), c.tmp.path().join("o-work"));
    fs::create_dir_all(&o_upper).map_err(|e| e.to_string())?;
    fs::create_dir_all(&o_work).map_err(|e| e.to_string())?;
    spec.extra_mounts = vec![
        Mount::Tree {
            source: Rootfs::Dir(tree.clone()),
            selector: "/up".into(),
            target: "/t".into(),
            readonly: true,
        },
        Mount::Tree {
            source: Rootfs::Overlay {
                lowerdirs: vec![tree.clone()],
                upperdir: o_upper.clone(),
                workdir: o_work.clone(),
            },
            selector: "sub".into(),
            target: "/o".into(),
            readonly: false,
        },
        Mount::Tmpfs {
            target: "/tmpfs".into(),
            size: Some(1 << 20),
        },
        Mount::File {
            target: "/s/sec".into(),
            data: b"hush\n".to_vec(),
            mode: 0o440,
            uid: 1,
            gid: 2,
        },
    ];
    let o = c.run(&spec).map_err(|e| e.to_string())?;
    ok_out(&o)?;
    check!(
        o.stdout == "tree\nro\n0\n1\nhush\n440 1 2\n",
        "stdout {:?} stderr {:?}",
        o.stdout,
        o.stderr
    );
    check!(
        !tree.join("sub/new").exists(),
        "overlay tree write reached the lower"
    );
    check!(
        o_upper.join("sub/new").exists(),
        "overlay tree write not in its upper"
    );
    check!(upper.join("s").is_dir(), "file mount target not created");
    check!(
        fs::read(upper.join("s/sec"))
            .map(|d| d.is_empty())
            .unwrap_or(false),
        "secret bytes reached the rootfs upper"
    );
    Ok(())
}

pub fn dir_rootfs_and_given_files(c: &Ctx) -> TestResult {
    let root = c.tmp.path().join("dir-rootfs");
    copy_tree(&c.base, &root)?;
    let hosts = c.tmp.path().join("my-hosts");
    let resolv = c.tmp.path().join("my-resolv");
    fs::write(&hosts, "10.0.0.1 special\n").map_err(|e| e.to_string())?;
    fs::write(&resolv, "nameserver 10.9.9.9\n").map_err(|e| e.to_string())?;
    let (mut spec, _) = c.spec(&[
        "sh",
        "-c",
        "cat /etc/hosts /etc/resolv.conf; echo x > /etc/hosts 2>/dev/null || echo hosts-ro; \
         mknod /z c 1 5 && head -c 1 /z >/dev/null 2>&1 || echo dir-nodev",
    ]);
    spec.rootfs = Rootfs::Dir(root);
    spec.hosts_file = Some(hosts);
    spec.resolv_conf = Some(resolv);
    let o = c.run(&spec).map_err(|e| e.to_string())?;
    ok_out(&o)?;
    check!(
        o.stdout == "10.0.0.1 special\nnameserver 10.9.9.9\nhosts-ro\ndir-nodev\n",
        "stdout {:?}",
        o.stdout
    );
    Ok(())
}

pub fn parallel_runs(c: &Ctx) -> TestResult {
    // Concurrent sandboxes share the scratch mountpoint; each mounts on it in its own namespace.
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| s.spawn(move || c.sh(&format!("sleep 0.2; echo {i} > /mine; cat /mine"))))
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            let o = h.join().map_err(|_| "thread panicked".to_string())??;
            ok_out(&o)?;
            check!(o.stdout == format!("{i}\n"), "run {i}: {:?}", o.stdout);
        }
        Ok(())
    })
}
