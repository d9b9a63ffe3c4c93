//! Interrupted commands leave nothing behind.
//!
//! `build`, `overlay create|resize` and the `sif` changes make their result under a temporary
//! name, or change a SIF in place and roll back on error. A Ctrl-C, SIGTERM or SIGHUP would end
//! the process before any of that cleanup ran. [`watch`] (called on the main thread before any
//! other thread exists) blocks those signals and takes them on a thread of its own; the child
//! programs and temporaries the command registered ([`kill_on_signal`], [`remove_on_signal`])
//! are killed and removed there, and the process then ends by the same signal, as it would have
//! without us.
//!
//! Steps that change the user's own image in place (a SIF change, e2fsck and resize2fs on an
//! overlay, copying a resized partition back) run as [`critical`] sections: a signal that
//! arrives during one is acted on when it ends, so the image is never left half-changed. Long
//! copies that can be rolled back look at [`check`] and stop early (then roll back); the
//! tools of such a step run in a process group of their own
//! ([`crate::tools::Tool::run_critical`]), out of reach of the terminal's Ctrl-C.
//!
//! Other child programs (mksquashfs, mkfs.ext3, unsquashfs on temporaries) start with an empty
//! signal mask (the standard library resets it), so a Ctrl-C from the terminal still reaches
//! them directly.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, Once};

use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};

const SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

enum Undo {
    /// A child program working on temporaries (a pidfd: never a recycled pid): killed, and
    /// waited for, before the temporaries go.
    Kill(OwnedFd),
    /// A temporary file or directory tree.
    Remove(PathBuf),
}

static PENDING: Mutex<Vec<(u64, Undo)>> = Mutex::new(Vec::new());
/// How many critical sections are open (they nest); the watcher waits for none.
static CRITICAL: Mutex<usize> = Mutex::new(0);
static CRITICAL_DONE: Condvar = Condvar::new();

fn open_sections() -> MutexGuard<'static, usize> {
    CRITICAL.lock().unwrap_or_else(|p| p.into_inner())
}
static NEXT: AtomicU64 = AtomicU64::new(0);
/// Set once a signal is being acted on: the command must not report or exit meanwhile.
static ENDING: AtomicBool = AtomicBool::new(false);

/// Registered undo work; dropping it (the work succeeded, or was undone another way) forgets it.
#[must_use = "the undo is forgotten when the guard is dropped"]
pub struct Guard(u64);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(mut pending) = PENDING.lock() {
            pending.retain(|(id, _)| *id != self.0);
        }
    }
}

fn register(undo: Undo) -> Guard {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut pending) = PENDING.lock() {
        pending.push((id, undo));
    }
    Guard(id)
}

/// Kill the child `pid` (just spawned, not yet waited for) if a signal ends the command.
pub fn kill_on_signal(pid: u32) -> Option<Guard> {
    // SAFETY: pidfd_open takes integers only and returns a new fd, which we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a non-negative return is a new fd that nothing else owns.
    (fd >= 0).then(|| register(Undo::Kill(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })))
}

/// Is a signal ending the process? Then the command's own error report is beside the point:
/// [`park_if_ending`] lets the watcher finish instead.
pub fn ending() -> bool {
    ENDING.load(Ordering::SeqCst)
}

/// If a signal is ending the process, wait for the watcher to end it (never returns then).
pub fn park_if_ending() {
    while ending() {
        std::thread::park();
    }
}

/// Remove `path` (a file, or a directory tree) if a signal ends the command.
pub fn remove_on_signal(path: &Path) -> Guard {
    register(Undo::Remove(path.to_path_buf()))
}

/// `Err(Interrupted)` once a signal is ending the process: for long loops inside a
/// [`critical`] section that can stop early and roll back.
pub fn check() -> std::io::Result<()> {
    if ending() {
        return Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "interrupted by a signal"));
    }
    Ok(())
}

/// A step that must not be cut short: a signal waits until the returned guard is dropped.
#[must_use = "the section ends when the guard is dropped"]
pub struct Critical(());

impl Drop for Critical {
    fn drop(&mut self) {
        let mut open = open_sections();
        *open = open.saturating_sub(1);
        CRITICAL_DONE.notify_all();
    }
}

/// Open a critical section (they nest).
pub fn critical() -> Critical {
    *open_sections() += 1;
    Critical(())
}

/// Take SIGINT, SIGTERM and SIGHUP on a watcher thread from now on. Call it on the main
/// thread, before the command starts any other thread. Idempotent.
pub fn watch() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut set = SigSet::empty();
        for s in SIGNALS {
            set.add(s);
        }
        if signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).is_err() {
            return;
        }
        let spawned = std::thread::Builder::new().name("signals".into()).spawn(move || loop {
            if let Ok(sig) = set.wait() {
                ENDING.store(true, Ordering::SeqCst);
                let mut open = open_sections();
                if *open > 0 {
                    crate::info!(
                        "{sig}: finishing the current change first, so nothing is left half-written"
                    );
                }
                while *open > 0 {
                    open = CRITICAL_DONE.wait(open).unwrap_or_else(|p| p.into_inner());
                }
                // Holding the count: no new section starts while the undo runs and we end.
                undo_all();
                die_by(sig);
            }
        });
        if spawned.is_err() {
            let _ = signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
        }
    });
}

fn undo_all() {
    // A poisoned lock still holds the list; the work must be done regardless.
    let pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
    // Children first, so that nothing writes into a temporary while it goes.
    for (_, undo) in pending.iter() {
        if let Undo::Kill(pidfd) = undo {
            kill_and_wait(pidfd);
        }
    }
    for (_, undo) in pending.iter().rev() {
        match undo {
            Undo::Kill(_) => {}
            Undo::Remove(path) => {
                let _ = crate::build::remove_tree(path);
            }
        }
    }
}

/// SIGKILL the process behind `pidfd` and wait (up to 5 s) until it has exited.
fn kill_and_wait(pidfd: &OwnedFd) {
    // SAFETY: pidfd_send_signal takes a valid pidfd, a signal number, a null siginfo and no
    // flags; a process already gone makes it fail with ESRCH, harmlessly.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<()>(),
            0,
        )
    };
    let mut pfd = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the length of the call.
    unsafe { libc::poll(&mut pfd, 1, 5000) };
}

/// End the process by `sig`, with its default action.
fn die_by(sig: Signal) -> ! {
    // SAFETY: installing SIG_DFL involves no handler code.
    let _ = unsafe { signal::signal(sig, SigHandler::SigDfl) };
    let mut one = SigSet::empty();
    one.add(sig);
    let _ = signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&one), None);
    let _ = signal::raise(sig);
    std::process::exit(128 + sig as i32)
}
