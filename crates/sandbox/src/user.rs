//! Resolving a Dockerfile `USER` string against the rootfs's `/etc/passwd` and `/etc/group`,
//! with the semantics of moby/sys/user `GetExecUser` (what runc and BuildKit use).

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids (only in the implicit form, without `:group`).
    pub sgids: Vec<u32>,
    /// Home directory, for `HOME` when the env lacks it.
    pub home: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f.get(5).copied().unwrap_or(""),
        })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 3 {
            return None;
        }
        let members = f
            .get(3)
            .map(|m| {
                m.split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members,
        })
    })
}

fn parse_id(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Resolves `spec` (`""` means root) against the given passwd and group file contents.
pub(crate) fn resolve(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ExecUser, String> {
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_arg = if user_arg.is_empty() { "0" } else { user_arg };
    let group_arg = group_arg.filter(|g| !g.is_empty());
    let numeric_uid = parse_id(user_arg);
    if numeric_uid.is_none() && user_arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid user id {user_arg}: out of range"));
    }

    let entry = passwd
        .and_then(|p| passwd_entries(p).find(|e| e.name == user_arg || Some(e.uid) == numeric_uid));
    let mut user = match (&entry, numeric_uid) {
        (Some(e), _) => ExecUser {
            uid: e.uid,
            gid: e.gid,
            sgids: Vec::new(),
            home: e.home.to_string(),
        },
        (None, Some(uid)) => ExecUser {
            uid,
            gid: 0,
            sgids: Vec::new(),
            home: "/".to_string(),
        },
        (None, None) => {
            return Err(format!(
                "unable to find user {user_arg}: no matching entries in passwd file"
            ))
        }
    };
    if user.home.is_empty() {
        user.home = "/".to_string();
    }

    match group_arg {
        Some(g) => {
            let numeric_gid = parse_id(g);
            let found = group.and_then(|text| {
                group_entries(text)
                    .find(|e| e.name == g || Some(e.gid) == numeric_gid)
                    .map(|e| e.gid)
            });
            user.gid = match (found, numeric_gid) {
                (Some(gid), _) | (None, Some(gid)) => gid,
                (None, None) => {
                    return Err(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                }
            };
        }
        None => {
            if let (Some(e), Some(text)) = (&entry, group) {
                user.sgids = group_entries(text)
                    .filter(|g| g.members.contains(&e.name))
                    .map(|g| g.gid)
                    .collect();
            }
        }
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n# c\nbad\n";
    const GROUP: &str =
        "root:x:0:\napp:x:1000:\nwheel:x:10:root,app\naudio:x:29:app\nstaff:x:50:\n";

    #[test]
    fn empty_is_root_with_membership() {
        let u = resolve("", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!(
            (u.uid, u.gid, u.sgids, u.home.as_str()),
            (0, 0, vec![10], "/root")
        );
    }

    #[test]
    fn name_gets_supplementary_groups() {
        let u = resolve("app", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((u.uid, u.gid, u.sgids.clone()), (1000, 1000, vec![10, 29]));
        let by_uid = resolve("1000", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!(by_uid, u);
    }

    #[test]
    fn explicit_group_and_numeric_ids() {
        let u = resolve("app:staff", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((u.uid, u.gid, u.sgids.len()), (1000, 50, 0));
        let u = resolve("4242:4343", None, None).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 4343, "/"));
        let u = resolve("4242", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((u.uid, u.gid), (4242, 0));
    }

    #[test]
    fn unknown_names_fail() {
        assert!(resolve("nobody", Some(PASSWD), Some(GROUP))
            .unwrap_err()
            .contains("unable to find user nobody"));
        assert!(resolve("app:nogroup", Some(PASSWD), Some(GROUP))
            .unwrap_err()
            .contains("unable to find group nogroup"));
        assert!(resolve("app", None, None).is_err());
        assert!(resolve("99999999999", None, None).is_err());
    }
}
