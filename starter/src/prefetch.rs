//! Warming the payload's executable while the container is still being built.
//!
//! A fresh squashfs superblock decompresses every block a program touches, one block at a time,
//! at its first page faults. The payload's executable is known before the container is built,
//! so a short-lived helper, already dropped to the caller, reads it ahead (from its end, where
//! the exec's page faults are not) on another CPU while the starter finishes the container
//! and the action script runs. It changes nothing and returns nothing: it only fills the page
//! cache of the caller's own image, as the caller could.

use crate::caller::Caller;
use crate::sys;
use nix::unistd::ForkResult;
use std::os::fd::{AsRawFd, OwnedFd};

/// squashfs blocks are at most 1 MiB; 128 KiB is the common size and the unit asked for.
const STEP: u64 = 128 * 1024;
/// At most this much of the executable is read ahead: a bounded amount of work for big binaries.
const MAX_BYTES: u64 = 2 * 1024 * 1024;

/// Start the helper for the first of `paths` that is a regular file under `root`. Does nothing
/// with a single CPU (it would only compete with the container's own start) or on any error.
pub fn spawn(root: &OwnedFd, paths: &[String], caller: &Caller) {
    if paths.is_empty() || sys::cpus_available() < 2 {
        return;
    }
    let Ok(starter) = sys::pidfd_open(std::process::id() as libc::pid_t) else {
        return;
    };
    match sys::fork() {
        Ok(ForkResult::Parent { child }) => {
            let _ = nix::sys::wait::waitpid(child, None);
        }
        Ok(ForkResult::Child) => {
            if let Ok(ForkResult::Child) = sys::fork() {
                let keep = [root.as_raw_fd(), starter.as_raw_fd()];
                let _ = sys::close_all_but(&keep);
                if crate::drop::drop_privileges_for_good(caller).is_ok() {
                    warm(root, paths, &starter);
                }
            }
            sys::exit_now(0);
        }
        Err(_) => {}
    }
}

fn warm(root: &OwnedFd, paths: &[String], payload: &OwnedFd) {
    for p in paths {
        let Ok(fd) = sys::open_in_root(root, p, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY, 0) else {
            continue;
        };
        let Ok(st) = nix::sys::stat::fstat(fd.as_raw_fd()) else { return };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            continue;
        }
        let size = st.st_size as u64;
        let mut off = size.div_ceil(STEP) * STEP;
        let stop = off.saturating_sub(MAX_BYTES);
        while off > stop && !sys::has_exited(payload) {
            off -= STEP;
            sys::readahead(&fd, off, STEP);
        }
        return;
    }
}
