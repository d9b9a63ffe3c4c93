//! The last step: become the payload.

use crate::drop::apply_filter;
use crate::error::Result;
use crate::plan::Process;
use crate::{bail, sys};
use nix::errno::Errno;
use nix::sys::signal::SigSet;
use seccompiler::BpfProgram;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn cstrings(v: &[String]) -> Vec<CString> {
    // NUL bytes were refused by `grant`.
    v.iter().filter_map(|s| CString::new(s.as_bytes()).ok()).collect()
}

/// Candidate paths for argv[0]: itself if it has a '/', else each `PATH` entry of the plan's env.
fn candidates(process: &Process) -> Vec<String> {
    let cmd = &process.argv[0];
    if cmd.contains('/') {
        return vec![cmd.clone()];
    }
    let path = process.env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH);
    path.split(':').filter(|d| !d.is_empty()).map(|d| format!("{d}/{cmd}")).collect()
}

/// chdir as the caller (so permissions apply), close every fd but 0-2, install the seccomp
/// filter, restore the signal mask, and execve. Returns only on failure.
pub fn exec(
    process: &Process,
    interpreter: Option<OwnedFd>,
    filter: &BpfProgram,
    mask: &SigSet,
) -> Result<()> {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(process.umask as libc::mode_t));
    if let Err(e) = nix::unistd::chdir(process.cwd.as_str()) {
        crate::warn(&format!("could not change to {} in the container ({e}); using /", process.cwd));
        let _ = nix::unistd::chdir("/");
    }
    let argv = cstrings(&process.argv);
    let env = cstrings(&process.env);
    let paths: Vec<CString> = candidates(process).into_iter().filter_map(|p| CString::new(p).ok()).collect();
    sys::close_range(3, u32::MAX, true).map_err(|e| crate::err!("close_range: {e}"))?;
    crate::supervise::restore(mask);
    apply_filter(filter)?;
    if let Some(fd) = &interpreter {
        let flags = nix::fcntl::AtFlags::AT_EMPTY_PATH;
        let e = nix::unistd::execveat(Some(fd.as_raw_fd()), c"", &argv, &env, flags).unwrap_err();
        bail!("could not execute the action shell: {e}");
    }
    let mut last = Errno::ENOENT;
    for p in &paths {
        match nix::unistd::execve(p, &argv, &env) {
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => continue,
            Err(e) => {
                last = e;
                break;
            }
        }
    }
    match last {
        Errno::ENOENT => bail!("\"{}\": executable file not found in $PATH", process.argv[0]),
        e => bail!("could not execute {}: {e}", process.argv[0]),
    }
}
