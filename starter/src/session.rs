//! A private mount namespace (plus the namespaces granted) and the session tmpfs in it.

use crate::error::{Context, Result};
use crate::grant::Grant;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use std::path::{Path, PathBuf};

/// The session directory with its private tmpfs mounted, in a new mount namespace.
#[derive(Debug)]
pub struct Session {
    pub dir: PathBuf,
}

/// Enter the new namespaces. With a pid namespace the *next child* is its init; the caller
/// forks after this returns.
pub fn unshare_namespaces(grant: &Grant) -> Result<()> {
    let mut flags = CloneFlags::CLONE_NEWNS;
    if grant.namespaces.pid {
        flags |= CloneFlags::CLONE_NEWPID;
    }
    if grant.namespaces.ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if grant.namespaces.uts {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    unshare(flags).context(|| "cannot create the container's namespaces".into())?;
    // Nothing we mount from here on may propagate back to the host.
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_SLAVE, None::<&str>)
        .context(|| "cannot make / a slave mount".into())
}

impl Session {
    /// Mount the session tmpfs (nosuid, nodev, mode 0700, sized by policy) on `dir`.
    pub fn mount(dir: &Path, size_mib: Option<u64>) -> Result<Session> {
        let mut data = String::from("mode=0700");
        if let Some(mib) = size_mib {
            data.push_str(&format!(",size={mib}m"));
        }
        mount(
            Some("strata-session"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(data.as_str()),
        )
        .context(|| format!("cannot mount the session tmpfs on {}", dir.display()))?;
        Ok(Session { dir: dir.to_path_buf() })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}
