//! Open-file-description locks on image layers: a write lock for the writable layer, a read
//! lock for read-only use, so two writers can never corrupt one image and no tool changes an
//! image that is mounted.
//!
//! The lock belongs to the open file description the caller passed. The loop device keeps a
//! reference to that description for as long as it is attached, so the lock lives exactly as
//! long as the container's mount (instances included) and dies with it, even after `kill -9`.

use crate::error::Result;
use crate::grant::Grant;
use crate::plan::LayerKind;
use crate::{bail, err};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use std::os::fd::AsRawFd;

/// Lock `[offset, offset+len)` of `fd` without waiting.
pub fn lock_range(
    fd: std::os::fd::BorrowedFd<'_>,
    offset: u64,
    len: u64,
    write: bool,
) -> std::result::Result<(), Errno> {
    let lock = libc::flock {
        l_type: if write { libc::F_WRLCK } else { libc::F_RDLCK } as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: i64::try_from(offset).map_err(|_| Errno::EINVAL)?,
        l_len: i64::try_from(len).map_err(|_| Errno::EINVAL)?,
        l_pid: 0,
    };
    match fcntl(fd.as_raw_fd(), FcntlArg::F_OFD_SETLK(&lock)) {
        Ok(_) | Err(Errno::ENOLCK) => Ok(()), // filesystems without locks: nothing to enforce
        Err(e) => Err(e),
    }
}

/// The type of a lock that conflicts with `write` on the range, if any (`F_OFD_GETLK`).
fn conflicting(fd: std::os::fd::BorrowedFd<'_>, offset: u64, len: u64) -> Option<libc::c_short> {
    let mut probe = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: i64::try_from(offset).ok()?,
        l_len: i64::try_from(len).ok()?,
        l_pid: 0,
    };
    fcntl(fd.as_raw_fd(), FcntlArg::F_OFD_GETLK(&mut probe)).ok()?;
    (probe.l_type != libc::F_UNLCK as libc::c_short).then_some(probe.l_type)
}

/// A container that just exited releases its locks when its namespace is torn down, a few
/// milliseconds after its exit (the teardown keeper): wait that long before calling it in use.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(1500);

/// `lock_range`, retried for up to `LOCK_PATIENCE` while another holder has it.
pub fn lock_range_waiting(
    fd: std::os::fd::BorrowedFd<'_>,
    offset: u64,
    len: u64,
    write: bool,
) -> std::result::Result<(), Errno> {
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    loop {
        match lock_range(fd, offset, len, write) {
            Err(Errno::EAGAIN) | Err(Errno::EACCES) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Take the locks of every image layer of the grant (a read lock on a squashfs keeps tools such
/// as `strata sif add` or `overlay resize` from changing an image a container has mounted).
pub fn lock_layers(grant: &Grant) -> Result<()> {
    for layer in grant.layers.iter().filter(|l| l.kind != LayerKind::Dir) {
        let shown = layer.path.display();
        let fd = grant.fd(layer.fd);
        match lock_range_waiting(fd, layer.offset, layer.size, layer.writable) {
            Ok(()) => {}
            Err(Errno::EAGAIN) | Err(Errno::EACCES) => {
                let readers_only =
                    conflicting(fd, layer.offset, layer.size) == Some(libc::F_RDLCK as libc::c_short);
                if layer.writable && readers_only {
                    bail!("{shown} is in use read-only by another container; use {shown}:ro to share it, or wait until it stops");
                }
                bail!(
                    "{shown} is in use for writing by another container; wait until it stops, or use a copy"
                );
            }
            Err(e) => return Err(err!("cannot lock {shown}: {e}")),
        }
    }
    Ok(())
}
