//! Who called us: the real ids and groups, straight from the kernel. Never from the plan.

use crate::error::{Context, Result};
use crate::{bail, sys};
use nix::unistd::{getgroups, getresgid, getresuid, Gid, Uid};

#[derive(Debug, Clone)]
pub struct Caller {
    pub uid: Uid,
    pub gid: Gid,
    /// The supplementary groups the kernel gave the caller; kept exactly as they are.
    pub groups: Vec<Gid>,
    /// Running setuid root for a non-root user (the restrictions that protect others apply).
    pub setuid: bool,
}

impl Caller {
    /// Identify the caller and the mode, and refuse any state the starter was not built for.
    pub fn from_kernel() -> Result<Caller> {
        let uids = getresuid().context(|| "getresuid".into())?;
        let gids = getresgid().context(|| "getresgid".into())?;
        if uids.effective != Uid::from_raw(0) {
            bail!(
                "strata-starter is not installed setuid root (effective uid {}); \
                 ask your administrator to run 'make install' as root",
                uids.effective
            );
        }
        if sys::thread_count() != Some(1) {
            bail!("strata-starter must be single-threaded");
        }
        let groups = getgroups().context(|| "getgroups".into())?;
        Ok(Caller { uid: uids.real, gid: gids.real, groups, setuid: !uids.real.is_root() })
    }

    pub fn is_root(&self) -> bool {
        self.uid.is_root()
    }

    /// Is `gid` the caller's primary or one of its supplementary groups?
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid.as_raw() == gid || self.groups.iter().any(|g| g.as_raw() == gid)
    }
}
