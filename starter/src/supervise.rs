//! Waiting for a child while passing on the signals meant for the container.
//!
//! Used by the monitor outside a pid namespace and by the container's init (pid 1) inside it.
//! Signals are blocked and taken synchronously with `sigwaitinfo`; each forwarded signal also
//! gets a no-op handler, because the kernel drops default-action signals sent to a pid 1.

use crate::sys;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGCONT,
    Signal::SIGWINCH,
];

extern "C" fn ignore(_: libc::c_int) {}

fn set() -> SigSet {
    let mut s = SigSet::empty();
    for &sig in FORWARDED {
        s.add(sig);
    }
    s.add(Signal::SIGCHLD);
    s
}

/// Block the forwarded signals (before forking, so none is lost); returns the old mask.
pub fn block() -> SigSet {
    let mut old = SigSet::empty();
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set()), Some(&mut old));
    old
}

/// Give the payload back the mask it would have had, and the default action for every signal
/// the starter handles or ignores itself (the Rust runtime ignores SIGPIPE; an ignored signal
/// would survive `execve`, and `yes | head -1` would never end).
pub fn restore(old: &SigSet) {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for &sig in FORWARDED.iter().chain([Signal::SIGPIPE].iter()) {
        sys::install_handler(sig, &default);
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(old), None);
}

fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Forward signals to `child`, reap every child, return `child`'s exit code (128+N if killed).
pub fn supervise(child: Pid) -> i32 {
    let handler = SigAction::new(SigHandler::Handler(ignore), SaFlags::SA_RESTART, SigSet::empty());
    for &sig in FORWARDED {
        // The no-op handler keeps these signals from being dropped when we are pid 1.
        sys::install_handler(sig, &handler);
    }
    let wanted = set();
    loop {
        let info = match sys::sigwaitinfo(&wanted) {
            Ok(i) => i,
            Err(_) => continue,
        };
        if info.si_signo == libc::SIGCHLD {
            loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(st) => {
                        if st.pid() == Some(child) {
                            if let Some(code) = exit_code(st) {
                                return code;
                            }
                        }
                    }
                }
            }
            continue;
        }
        // Signals from the terminal already reached the whole foreground process group,
        // the payload included; only pass on those sent to us by a process.
        if info.si_code != libc::SI_KERNEL {
            sys::kill(child.as_raw(), info.si_signo);
        }
    }
}
