//! Taking the container's teardown off the payload's exit path.
//!
//! When the last process of a mount namespace exits, the kernel unmounts everything in it and
//! frees the loop devices before the parent learns of the exit, so the user waits for the
//! teardown. A tiny keeper process, already dropped to the caller and holding nothing but a
//! pidfd of the payload, keeps the namespace alive until the payload has exited and then exits
//! itself: the teardown happens right after, off the critical path. It is double-forked so the
//! payload never sees it as a child (a shell's `wait` must not wait for it).
//!
//! A layer's lock lives as long as its loop device, so it is released a few milliseconds after
//! the payload's exit; whoever takes the lock next waits that long (`lock::lock_range_waiting`).

use crate::sys;
use nix::unistd::ForkResult;

/// Start the keeper for the current process (the future payload). Best effort: on any error
/// the container simply tears down at exit as usual.
pub fn spawn() {
    let Ok(pidfd) = sys::pidfd_open(std::process::id() as libc::pid_t) else {
        return;
    };
    match sys::fork() {
        Ok(ForkResult::Parent { child }) => {
            let _ = nix::sys::wait::waitpid(child, None);
        }
        Ok(ForkResult::Child) => {
            if let Ok(ForkResult::Child) = sys::fork() {
                let fd = std::os::fd::AsRawFd::as_raw_fd(&pidfd) as u32;
                let _ = sys::close_range(0, fd.saturating_sub(1), false);
                let _ = sys::close_range(fd + 1, u32::MAX, false);
                sys::wait_readable(&pidfd);
            }
            sys::exit_now(0);
        }
        Err(_) => {}
    }
}
