//! Find and trust the install: the starter binary, its policy file and its session directory.
//!
//! The policy is `<prefix>/etc/strata/strata.conf`, where `<prefix>` is three levels above the
//! running binary (`<prefix>/libexec/strata/strata-starter`, read from `/proc/self/exe`). When
//! setuid, the starter refuses to run unless the binary has one link, and the binary, the policy
//! file and every directory above them are owned by root and not writable by group or other
//! (sticky directories excepted: their root-owned children cannot be replaced).

use crate::error::{Context, Result};
use crate::{bail, err};
use nix::sys::stat::{fstat, lstat, FileStat, Mode, SFlag};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use strata_config::Policy;

#[derive(Debug)]
pub struct Install {
    pub prefix: PathBuf,
    pub policy: Policy,
    /// `<prefix>/var/strata/session`: root-owned; a private tmpfs is mounted on it.
    pub session_dir: PathBuf,
}

fn is_type(st: &FileStat, t: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == t
}

/// Owned by root and not writable by group or other (unless a sticky directory).
fn check_root_owned(path: &Path, st: &FileStat) -> Result<()> {
    if st.st_uid != 0 {
        bail!("{} must be owned by root (it is owned by uid {})", path.display(), st.st_uid);
    }
    let mode = Mode::from_bits_truncate(st.st_mode);
    let sticky_dir = is_type(st, SFlag::S_IFDIR) && mode.contains(Mode::S_ISVTX);
    if mode.intersects(Mode::S_IWGRP | Mode::S_IWOTH) && !sticky_dir {
        bail!(
            "{} must not be writable by group or other (mode {:o}); fix it with chmod go-w",
            path.display(),
            st.st_mode & 0o7777
        );
    }
    Ok(())
}

/// Every directory from `path`'s parent up to `/` must be root-owned and not g/o-writable.
fn check_ancestors(path: &Path) -> Result<()> {
    for dir in path.ancestors().skip(1) {
        let st = lstat(dir).context(|| format!("cannot inspect {}", dir.display()))?;
        if !is_type(&st, SFlag::S_IFDIR) {
            bail!("{} must be a real directory, not a symbolic link", dir.display());
        }
        check_root_owned(dir, &st)?;
    }
    Ok(())
}

impl Install {
    /// Locate the install from `/proc/self/exe` and load its policy, checking the chain of
    /// trust when setuid. As root (not setuid) only the parsing happens.
    pub fn load(setuid: bool) -> Result<Install> {
        let exe = std::fs::read_link("/proc/self/exe")
            .context(|| "cannot find the starter's own path in /proc/self/exe".into())?;
        let prefix = exe
            .ancestors()
            .nth(3)
            .ok_or_else(|| {
                err!("{} is not installed as PREFIX/libexec/strata/strata-starter", exe.display())
            })?
            .to_path_buf();
        if setuid {
            let me = File::open("/proc/self/exe").context(|| "cannot open /proc/self/exe".into())?;
            let st = fstat(me.as_raw_fd()).context(|| format!("cannot inspect {}", exe.display()))?;
            check_root_owned(&exe, &st)?;
            if st.st_nlink != 1 {
                bail!(
                    "{} has {} hard links; a setuid starter must have exactly one",
                    exe.display(),
                    st.st_nlink
                );
            }
            check_ancestors(&exe)?;
        }
        let conf_path = prefix.join("etc/strata/strata.conf");
        let policy = load_policy(&conf_path, setuid)?;
        let session_dir = prefix.join("var/strata/session");
        let st = lstat(&session_dir).context(|| {
            format!("the session directory {} is missing; reinstall strata", session_dir.display())
        })?;
        if !is_type(&st, SFlag::S_IFDIR) {
            bail!("{} must be a directory", session_dir.display());
        }
        if setuid {
            check_root_owned(&session_dir, &st)?;
            check_ancestors(&session_dir)?;
        }
        Ok(Install { prefix, policy, session_dir })
    }
}

fn load_policy(path: &Path, setuid: bool) -> Result<Policy> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .context(|| format!("cannot open the policy file {}", path.display()))?;
    let fd = OwnedFd::from(file);
    let st = fstat(fd.as_raw_fd()).context(|| format!("cannot inspect {}", path.display()))?;
    if !is_type(&st, SFlag::S_IFREG) {
        bail!("{} must be a regular file", path.display());
    }
    if setuid {
        check_root_owned(path, &st)?;
        check_ancestors(path)?;
    }
    Policy::from_reader(File::from(fd), path).map_err(|e| err!("{e}"))
}
