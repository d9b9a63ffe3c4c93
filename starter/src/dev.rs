//! A minimal `/dev`: a tmpfs with the usual nodes bound from the host, a devpts and a shm.

use crate::error::{Context, Result};
use crate::sys;
use libc::{MOUNT_ATTR_NODEV as NODEV, MOUNT_ATTR_NOEXEC as NOEXEC, MOUNT_ATTR_NOSUID as NOSUID};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// A minimal /dev: a tmpfs with the usual nodes bound from the host, a devpts and shm.
pub fn minimal_dev(root: &OwnedFd) -> Result<()> {
    let dev = sys::open_in_root(root, "/dev", libc::O_PATH | libc::O_DIRECTORY, 0)
        .context(|| "cannot open /dev in the container".into())?;
    let tmpfs = sys::new_fs("tmpfs", &[("mode", "0755"), ("size", "1m")], NOSUID | NOEXEC)
        .context(|| "cannot create the /dev tmpfs".into())?;
    sys::move_mount_to(&tmpfs, &dev).context(|| "cannot mount /dev".into())?;
    let dev = sys::open_in_root(root, "/dev", libc::O_PATH | libc::O_DIRECTORY, 0)
        .context(|| "cannot open /dev in the container".into())?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let host = sys::open_path(Path::new(&format!("/dev/{node}")), libc::O_PATH)
            .context(|| format!("cannot open /dev/{node}"))?;
        let target = sys::open_at(&dev, node, libc::O_CREAT | libc::O_WRONLY, 0o666)
            .context(|| format!("cannot create /dev/{node}"))?;
        drop(target);
        let target =
            sys::open_at(&dev, node, libc::O_PATH, 0).context(|| format!("cannot open /dev/{node}"))?;
        let tree = crate::assemble::bind_tree(&host, false, NOSUID | NOEXEC)?;
        sys::move_mount_to(&tree, &target).context(|| format!("cannot bind /dev/{node}"))?;
    }
    for d in ["pts", "shm"] {
        nix::sys::stat::mkdirat(Some(dev.as_raw_fd()), d, nix::sys::stat::Mode::from_bits_truncate(0o755))
            .context(|| format!("cannot create /dev/{d}"))?;
    }
    let pts = sys::open_at(&dev, "pts", libc::O_PATH | libc::O_DIRECTORY, 0)
        .context(|| "cannot open /dev/pts".into())?;
    let devpts =
        sys::new_fs("devpts", &[("ptmxmode", "0666"), ("mode", "0620"), ("gid", "5")], NOSUID | NOEXEC)
            .context(|| "cannot create a devpts instance".into())?;
    sys::move_mount_to(&devpts, &pts).context(|| "cannot mount /dev/pts".into())?;
    let shm = sys::open_at(&dev, "shm", libc::O_PATH | libc::O_DIRECTORY, 0)
        .context(|| "cannot open /dev/shm".into())?;
    let shmfs = sys::new_fs("tmpfs", &[("mode", "1777")], NOSUID | NODEV)
        .context(|| "cannot create /dev/shm".into())?;
    sys::move_mount_to(&shmfs, &shm).context(|| "cannot mount /dev/shm".into())?;
    for (name, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        nix::unistd::symlinkat(target, Some(dev.as_raw_fd()), name)
            .context(|| format!("cannot create /dev/{name}"))?;
    }
    Ok(())
}
