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
        format!("{}:x:{}:{}:{}:{}:{}", self.name, self.uid, self.gid, self.gecos, self.home, self.shell)
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
        GroupEntry { name: format!("gid{gid}"), gid }
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
            name: if field_ok(&u.name) && !u.name.is_empty() { u.name } else { fallback.name },
            uid,
            gid: u.gid.as_raw(),
            gecos,
            home: if field_ok(&home) && home.starts_with('/') { home } else { fallback.home },
            shell: if field_ok(&shell) && !shell.is_empty() { shell } else { fallback.shell },
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
        let groups: Vec<u32> =
            nix::unistd::getgroups().map_err(PasswdError::Groups)?.into_iter().map(|g| g.as_raw()).collect();
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

    /// The entries the plan carries: the user's passwd line and one `name:x:gid:user` line per
    /// group (the starter merges them into the image's files and checks every id is ours).
    pub fn plan_entries(&self) -> (String, Vec<String>) {
        let groups =
            self.groups.iter().map(|g| format!("{}:x:{}:{}", g.name, g.gid, self.user.name)).collect();
        (self.user.line(), groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(id.groups, [GroupEntry::unnamed(3_999_999_002), GroupEntry::unnamed(3_999_999_003)]);
        let id = id.with_home(Path::new("/home/u"));
        let (passwd, groups) = id.plan_entries();
        assert_eq!(passwd, "uid3999999001:x:3999999001:3999999002::/home/u:/bin/sh");
        assert_eq!(
            groups,
            ["gid3999999002:x:3999999002:uid3999999001", "gid3999999003:x:3999999003:uid3999999001"]
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
}
