//! The invoking user's `/etc/passwd` and `/etc/group` entries for the container.
//!
//! [`Identity`] is looked up on the host (NSS, through `getpwuid_r`/`getgrgid_r`); ids without an
//! entry get the names `uid<N>` / `gid<N>`, so a user known only by number (uid 100000 from a
//! directory service the host cannot reach) still gets a usable line.
//!
//! [`merge_passwd`] and [`merge_group`] are pure text functions (std only, no NSS, no I/O) so that
//! whichever side writes the container's files can apply exactly these rules: the container's
//! lines are kept verbatim except those the user's entries replace.

use std::path::Path;

/// One `/etc/passwd` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

/// One group: its name and id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
}

/// The invoking user as the container should know them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: PasswdEntry,
    /// The primary group first, then the supplementary groups, without duplicates.
    pub groups: Vec<GroupEntry>,
}

/// Why the user database could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    #[error("could not look up uid {uid} in the user database (getpwuid_r): {source}")]
    User { uid: u32, source: nix::Error },
    #[error("could not look up gid {gid} in the group database (getgrgid_r): {source}")]
    Group { gid: u32, source: nix::Error },
    #[error("could not read the supplementary groups of this process (getgroups): {0}")]
    Groups(nix::Error),
}

/// A passwd field may contain neither the separator nor a line break.
fn field_ok(s: &str) -> bool {
    !s.contains([':', '\n', '\r'])
}

impl PasswdEntry {
    /// The `/etc/passwd` line, without the newline.
    pub fn line(&self) -> String {
        format!(
            "{}:x:{}:{}:{}:{}:{}",
            self.name, self.uid, self.gid, self.gecos, self.home, self.shell
        )
    }

    /// The entry for `uid` with the name `uid<N>`, for users the host cannot name.
    pub fn unnamed(uid: u32, gid: u32) -> PasswdEntry {
        PasswdEntry {
            name: format!("uid{uid}"),
            uid,
            gid,
            gecos: String::new(),
            home: "/".to_string(),
            shell: "/bin/sh".to_string(),
        }
    }
}

impl GroupEntry {
    /// The group `gid<N>`, for groups the host cannot name.
    pub fn unnamed(gid: u32) -> GroupEntry {
        GroupEntry {
            name: format!("gid{gid}"),
            gid,
        }
    }
}

/// The host's passwd entry for `uid`, if it has one. Fields that would break the file format are
/// replaced (name → `uid<N>`, gecos → separators blanked, home → `/`, shell → `/bin/sh`).
pub fn lookup_user(uid: u32) -> Result<Option<PasswdEntry>, PasswdError> {
    let found = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .map_err(|source| PasswdError::User { uid, source })?;
    Ok(found.map(|u| {
        let fallback = PasswdEntry::unnamed(uid, u.gid.as_raw());
        let gecos = u.gecos.to_string_lossy().replace([':', '\n', '\r'], " ");
        let home = u.dir.to_string_lossy().into_owned();
        let shell = u.shell.to_string_lossy().into_owned();
        PasswdEntry {
            name: if field_ok(&u.name) && !u.name.is_empty() {
                u.name
            } else {
                fallback.name
            },
            uid,
            gid: u.gid.as_raw(),
            gecos,
            home: if field_ok(&home) && home.starts_with('/') {
                home
            } else {
                fallback.home
            },
            shell: if field_ok(&shell) && !shell.is_empty() {
                shell
            } else {
                fallback.shell
            },
        }
    }))
}

/// The host's name for group `gid`, if it has one.
pub fn lookup_group(gid: u32) -> Result<Option<GroupEntry>, PasswdError> {
    let found = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .map_err(|source| PasswdError::Group { gid, source })?;
    Ok(found
        .filter(|g| field_ok(&g.name) && !g.name.is_empty() && !g.name.contains(','))
        .map(|g| GroupEntry { name: g.name, gid }))
}

impl Identity {
    /// The calling process's user: real uid, real gid, and its supplementary groups (the
    /// groups the starter keeps for the payload).
    pub fn current() -> Result<Identity, PasswdError> {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let groups: Vec<u32> = nix::unistd::getgroups()
            .map_err(PasswdError::Groups)?
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        Identity::lookup(uid, gid, &groups)
    }

    /// The identity of `uid` with primary group `gid` and the given supplementary groups, named
    /// from the host's databases where they have entries.
    pub fn lookup(uid: u32, gid: u32, supplementary: &[u32]) -> Result<Identity, PasswdError> {
        let user = match lookup_user(uid)? {
            Some(mut entry) => {
                entry.gid = gid;
                entry
            }
            None => {
                crate::verbose!("uid {uid} has no passwd entry on the host, naming it uid{uid}");
                PasswdEntry::unnamed(uid, gid)
            }
        };
        let mut groups: Vec<GroupEntry> = Vec::new();
        for g in std::iter::once(gid).chain(supplementary.iter().copied()) {
            if groups.iter().any(|e| e.gid == g) {
                continue;
            }
            groups.push(match lookup_group(g)? {
                Some(entry) => entry,
                None => {
                    crate::verbose!("gid {g} has no group entry on the host, naming it gid{g}");
                    GroupEntry::unnamed(g)
                }
            });
        }
        Ok(Identity { user, groups })
    }

    /// The same identity with `$HOME` at `home` (the container's home, e.g. from `--home`).
    pub fn with_home(mut self, home: &Path) -> Identity {
        let home = home.to_string_lossy();
        if field_ok(&home) {
            self.user.home = home.into_owned();
        }
        self
    }

    /// The container's `/etc/passwd` with this user's entry.
    pub fn passwd(&self, container_passwd: &str) -> String {
        merge_passwd(container_passwd, &self.user)
    }

    /// The container's `/etc/group` with this user's groups.
    pub fn group(&self, container_group: &str) -> String {
        merge_group(container_group, &self.groups, &self.user.name)
    }
}

/// The first `n` fields of a `name:x:id:...` line, or `None` for comments, blank and malformed
/// lines (which are kept verbatim).
fn fields(line: &str) -> Option<Vec<&str>> {
    let f: Vec<&str> = line.split(':').collect();
    (f.len() >= 3 && !line.starts_with('#')).then_some(f)
}

fn join_lines(kept: Vec<String>, added: impl IntoIterator<Item = String>) -> String {
    let mut out = String::new();
    for line in kept.into_iter().chain(added) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `container_passwd` with `entry` appended, after removing every line for the same user name
/// or the same uid. Other lines are kept verbatim, in order.
pub fn merge_passwd(container_passwd: &str, entry: &PasswdEntry) -> String {
    let uid = entry.uid.to_string();
    let kept: Vec<String> = container_passwd
        .lines()
        .filter(|line| match fields(line) {
            Some(f) => f[0] != entry.name && f[2] != uid,
            None => true,
        })
        .map(str::to_string)
        .collect();
    join_lines(kept, [entry.line()])
}

/// `container_group` with the user `user` in each of `groups`: a line with the same name and
/// gid gets `user` added to its members; other lines with the same name or the same gid are
/// replaced by `name:x:gid:user`. Other lines are kept verbatim, in order.
pub fn merge_group(container_group: &str, groups: &[GroupEntry], user: &str) -> String {
    let mut merged = vec![false; groups.len()];
    let mut kept = Vec::new();
    for line in container_group.lines() {
        let Some(f) = fields(line) else {
            kept.push(line.to_string());
            continue;
        };
        let same = groups
            .iter()
            .position(|g| g.name == f[0] && g.gid.to_string() == f[2]);
        if let Some(i) = same {
            if merged[i] {
                continue; // a duplicate line for a group already written
            }
            merged[i] = true;
            let members = f.get(3).copied().unwrap_or("");
            let mut list: Vec<&str> = members.split(',').filter(|m| !m.is_empty()).collect();
            if !list.contains(&user) {
                list.push(user);
            }
            kept.push(format!("{}:{}:{}:{}", f[0], f[1], f[2], list.join(",")));
            continue;
        }
        let clashes = groups
            .iter()
            .any(|g| g.name == f[0] || g.gid.to_string() == f[2]);
        if !clashes {
            kept.push(line.to_string());
        }
    }
    let added = groups
        .iter()
        .zip(merged)
        .filter(|(_, done)| !done)
        .map(|(g, _)| format!("{}:x:{}:{user}", g.name, g.gid));
    join_lines(kept, added)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                          # a comment\n\
                          alice:x:1000:1000:Alice:/home/alice:/bin/bash\n\
                          nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin";

    const GROUP: &str = "root:x:0:\n\
                         users:x:100:bob\n\
                         staff:x:50:\n\
                         alice:x:1000:\n\
                         nogroup:x:65534:";

    fn big_user() -> PasswdEntry {
        PasswdEntry {
            name: "uid100000".into(),
            uid: 100000,
            gid: 100001,
            gecos: String::new(),
            home: "/home/big".into(),
            shell: "/bin/sh".into(),
        }
    }

    #[test]
    fn a_user_with_a_large_uid_is_appended() {
        let out = merge_passwd(PASSWD, &big_user());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[..5], PASSWD.lines().collect::<Vec<_>>()[..]);
        assert_eq!(lines[5], "uid100000:x:100000:100001::/home/big:/bin/sh");
        assert!(out.ends_with('\n'));
    }

    #[test]
    fn the_users_entry_replaces_lines_with_its_name_or_uid() {
        let mut alice = big_user();
        alice.name = "alice".into();
        let out = merge_passwd(PASSWD, &alice);
        assert!(!out.contains("alice:x:1000:1000"));
        assert_eq!(out.matches("alice:").count(), 1);
        assert!(out.ends_with("alice:x:100000:100001::/home/big:/bin/sh\n"));

        let mut same_uid = big_user();
        same_uid.uid = 65534;
        let out = merge_passwd(PASSWD, &same_uid);
        assert!(!out.contains("nobody:"));
        assert!(out.contains("# a comment\n"));
        assert!(out.ends_with("uid100000:x:65534:100001::/home/big:/bin/sh\n"));
    }

    #[test]
    fn an_empty_or_unterminated_passwd_still_gets_one_line_per_entry() {
        assert_eq!(
            merge_passwd("", &big_user()),
            "uid100000:x:100000:100001::/home/big:/bin/sh\n"
        );
        assert_eq!(
            merge_passwd("root:x:0:0::/root:/bin/sh", &big_user()),
            "root:x:0:0::/root:/bin/sh\nuid100000:x:100000:100001::/home/big:/bin/sh\n"
        );
    }

    #[test]
    fn groups_are_joined_replaced_or_appended() {
        let groups = [
            GroupEntry {
                name: "alice".into(),
                gid: 1000,
            }, // same name and gid: member added
            GroupEntry {
                name: "users".into(),
                gid: 100,
            }, // same, with a member already
            GroupEntry {
                name: "staff".into(),
                gid: 20,
            }, // same name, other gid: replaced
            GroupEntry {
                name: "gid100001".into(),
                gid: 100001,
            }, // new
            GroupEntry {
                name: "hpc".into(),
                gid: 65534,
            }, // gid of nogroup: replaced
        ];
        let out = merge_group(GROUP, &groups, "alice");
        assert_eq!(
            out,
            "root:x:0:\n\
             users:x:100:bob,alice\n\
             alice:x:1000:alice\n\
             staff:x:20:alice\n\
             gid100001:x:100001:alice\n\
             hpc:x:65534:alice\n"
        );
        // Merging twice changes nothing more.
        assert_eq!(merge_group(&out, &groups, "alice"), out);
    }

    #[test]
    fn identity_of_unknown_large_ids_uses_numeric_names() {
        // Ids far above 65535 with no NSS entry on a test machine.
        let uid = 3_999_999_001;
        if lookup_user(uid).unwrap().is_some() {
            eprintln!("SKIPPED: uid {uid} has a passwd entry on this host");
            return;
        }
        let id = Identity::lookup(uid, 3_999_999_002, &[3_999_999_003, 3_999_999_002]).unwrap();
        assert_eq!(id.user, PasswdEntry::unnamed(uid, 3_999_999_002));
        assert_eq!(
            id.groups,
            [
                GroupEntry::unnamed(3_999_999_002),
                GroupEntry::unnamed(3_999_999_003)
            ]
        );
        let id = id.with_home(Path::new("/home/u"));
        assert_eq!(
            id.passwd("root:x:0:0::/root:/bin/sh\n"),
            "root:x:0:0::/root:/bin/sh\n\
             uid3999999001:x:3999999001:3999999002::/home/u:/bin/sh\n"
        );
        assert_eq!(
            id.group(""),
            "gid3999999002:x:3999999002:uid3999999001\n\
             gid3999999003:x:3999999003:uid3999999001\n"
        );
        // 100000, the usual first subordinate id, without an entry here either.
        if lookup_user(100000).unwrap().is_none() {
            let id = Identity::lookup(100000, 100000, &[]).unwrap();
            assert_eq!(id.user.name, "uid100000");
            assert_eq!(id.groups, [GroupEntry::unnamed(100000)]);
        }
    }

    #[test]
    fn identity_of_root_comes_from_the_host_database() {
        let id = Identity::lookup(0, 0, &[0]).unwrap();
        assert_eq!(id.user.name, "root");
        assert_eq!(id.user.uid, 0);
        assert_eq!(id.groups.len(), 1);
        assert_eq!(id.groups[0].gid, 0);
        assert_eq!(id.groups[0].name, "root");
    }

    #[test]
    fn the_current_identity_matches_the_process() {
        let id = Identity::current().unwrap();
        assert_eq!(id.user.uid, nix::unistd::getuid().as_raw());
        assert_eq!(id.user.gid, nix::unistd::getgid().as_raw());
        assert_eq!(id.groups[0].gid, id.user.gid);
        assert!(field_ok(&id.user.line().replace(':', "")));
    }

    proptest::proptest! {
        #[test]
        fn merging_leaves_exactly_one_line_for_the_user(
            lines in proptest::collection::vec(("[a-z]{1,6}", 0u32..5, "[a-z ]{0,5}"), 0..12),
            name in "[a-z]{1,6}",
            uid in 0u32..5,
        ) {
            let passwd: String = lines
                .iter()
                .map(|(n, u, g)| format!("{n}:x:{u}:{u}:{g}:/home/{n}:/bin/sh\n"))
                .collect();
            let entry = PasswdEntry {
                name: name.clone(),
                uid,
                gid: uid,
                gecos: String::new(),
                home: "/h".into(),
                shell: "/bin/sh".into(),
            };
            let out = merge_passwd(&passwd, &entry);
            let uid_s = uid.to_string();
            let mine: Vec<&str> = out
                .lines()
                .filter(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    f[0] == name || f[2] == uid_s
                })
                .collect();
            let line = entry.line();
            proptest::prop_assert_eq!(mine, vec![line.as_str()]);
            // Idempotent.
            proptest::prop_assert_eq!(merge_passwd(&out, &entry), out.clone());
            // The other lines are kept, in order.
            let others: Vec<&str> = passwd
                .lines()
                .filter(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    f[0] != name && f[2] != uid_s
                })
                .collect();
            let kept: Vec<&str> = out.lines().filter(|l| *l != line).collect();
            proptest::prop_assert_eq!(kept, others);
        }
    }
}
