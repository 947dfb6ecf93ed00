//! User and group lookup in an image's `/etc/passwd` and `/etc/group` (for `--chown` and WORKDIR owners).

use rbuild_llb::{ChownOpt, UserOpt};
use std::path::Path;

/// Resolves `opt` against the files under `root` (a mounted rootfs) to numeric `(uid, gid)`.
pub fn resolve_chown(root: &Path, opt: &ChownOpt) -> Result<(u32, u32), String> {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap_or_default();
    let (uid, primary_gid) = match &opt.user {
        UserOpt::Id(id) => (*id, *id),
        UserOpt::Name(name) => lookup_passwd(&passwd, name).ok_or_else(|| {
            format!("unable to find user {name}: no matching entries in passwd file")
        })?,
    };
    let gid = match &opt.group {
        None => primary_gid,
        Some(UserOpt::Id(id)) => *id,
        Some(UserOpt::Name(name)) => lookup_group(&group, name).ok_or_else(|| {
            format!("unable to find group {name}: no matching entries in group file")
        })?,
    };
    Ok((uid, gid))
}

fn lookup_passwd(passwd: &str, name: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 4 && fields[0] == name {
            Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
        } else {
            None
        }
    })
}

fn lookup_group(group: &str, name: &str) -> Option<u32> {
    group.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 3 && fields[0] == name {
            fields[2].parse().ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let opt = |u: UserOpt, g: Option<UserOpt>| ChownOpt { user: u, group: g };
        assert_eq!(
            resolve_chown(dir.path(), &opt(UserOpt::Name("app".into()), None)),
            Ok((1000, 1001))
        );
        assert_eq!(
            resolve_chown(dir.path(), &opt(UserOpt::Id(7), None)),
            Ok((7, 7))
        );
        assert_eq!(
            resolve_chown(
                dir.path(),
                &opt(
                    UserOpt::Name("app".into()),
                    Some(UserOpt::Name("staff".into()))
                )
            ),
            Ok((1000, 50))
        );
        assert_eq!(
            resolve_chown(dir.path(), &opt(UserOpt::Id(5), Some(UserOpt::Id(6)))),
            Ok((5, 6))
        );
        assert!(resolve_chown(dir.path(), &opt(UserOpt::Name("nobody".into()), None)).is_err());
    }
}
