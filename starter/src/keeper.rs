//! The keeper: taking the container's teardown off the payload's exit path, and reading the
//! payload's executable ahead while the container is built.
//!
//! When the last process of a mount namespace exits, the kernel unmounts everything in it and
//! frees the loop devices before the parent learns of the exit, so the user waits for the
//! teardown. A small keeper process, dropped to the caller and holding nothing but a pidfd of
//! the starter (the future payload), keeps the namespace alive until the payload has exited and
//! then exits itself: the teardown happens right after, off the critical path. It is
//! double-forked so the payload never sees it as a child (a shell's `wait` must not wait for it).
//!
//! It is started right after the rootfs is mounted. On a fresh squashfs superblock, which
//! decompresses every block a program touches at its first page faults, it first reads the
//! payload's executable ahead (the first regular file among the plan's `prefetch` paths, from
//! its end, at most `MAX_BYTES`) on another CPU while the starter finishes the container and
//! the action script runs. It only fills the page cache of the caller's own image, as the
//! caller could, and it drops privileges before it opens anything.
//!
//! A layer's lock lives as long as its loop device, so it is released a few milliseconds after
//! the payload's exit; whoever takes the lock next waits that long (`lock::lock_range_waiting`).

use crate::caller::Caller;
use crate::sys;
use nix::unistd::{ForkResult, Pid};
use std::os::fd::{AsRawFd, OwnedFd};

/// squashfs blocks are at most 1 MiB; 128 KiB is the common size and the unit asked for.
const STEP: u64 = 128 * 1024;
/// At most this much of the executable is read ahead: bounded work for big binaries.
const MAX_BYTES: u64 = 2 * 1024 * 1024;

/// Start the keeper for the current process (the future payload). `root` is the rootfs
/// layer's root, `prefetch` the paths to read ahead (empty: none). Returns the intermediate
/// process of the double fork, which exits at once: [`reap`] it before the exec (meanwhile
/// the starter goes on). Best effort: on any error the container simply tears down at exit as
/// usual, without read-ahead.
pub fn spawn(caller: &Caller, root: &OwnedFd, prefetch: &[String]) -> Option<Pid> {
    let payload = sys::pidfd_open(std::process::id() as libc::pid_t).ok()?;
    // With a single usable CPU, reading ahead would only compete with the start itself.
    let prefetch = if sys::cpus_available() < 2 { &[] } else { prefetch };
    match sys::fork() {
        Ok(ForkResult::Parent { child }) => Some(child),
        Ok(ForkResult::Child) => {
            if let Ok(ForkResult::Child) = sys::fork() {
                // Nothing of the starter's but these two, and the caller's rights only.
                let kept = sys::close_all_but(&[payload.as_raw_fd(), root.as_raw_fd()]).is_ok();
                if kept && crate::drop::drop_privileges_for_good(caller).is_ok() {
                    read_ahead(root, prefetch, &payload);
                    sys::wait_readable(&payload);
                }
            }
            sys::exit_now(0);
        }
        Err(_) => None,
    }
}

/// Reap the intermediate process (so the payload never inherits it as a child).
pub fn reap(intermediate: Option<Pid>) {
    if let Some(pid) = intermediate {
        let _ = nix::sys::wait::waitpid(pid, None);
    }
}

/// Read the first regular file among `paths` (resolved under `root` only) ahead, from its end,
/// stopping early if the payload is already gone.
fn read_ahead(root: &OwnedFd, paths: &[String], payload: &OwnedFd) {
    for p in paths {
        let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY;
        let Ok(fd) = sys::open_in_root(root, p, flags, 0) else {
            continue;
        };
        match nix::sys::stat::fstat(fd.as_raw_fd()) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => {
                let mut off = (st.st_size as u64).div_ceil(STEP) * STEP;
                let stop = off.saturating_sub(MAX_BYTES);
                while off > stop && !sys::has_exited(payload) {
                    off -= STEP;
                    sys::readahead(&fd, off, STEP);
                }
                return;
            }
            _ => continue,
        }
    }
}
