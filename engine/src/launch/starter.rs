//! Hand the plan and the opened files to the setuid starter, which replaces this process.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use strata_plan::{Plan, PLAN_FD};

#[derive(Debug, thiserror::Error)]
pub enum StarterError {
    #[error("cannot find the strata installation from {0}: {1}")]
    Locate(PathBuf, std::io::Error),
    #[error("the starter {0} is missing; reinstall strata (make install)")]
    Missing(PathBuf),
    #[error("cannot prepare the plan for the starter: {0}")]
    Plan(std::io::Error),
    #[error("cannot run the starter {0}: {1}")]
    Exec(PathBuf, std::io::Error),
}

/// `PREFIX` of the running install: two levels above `PREFIX/bin/strata`.
pub fn install_prefix() -> Result<PathBuf, StarterError> {
    let exe =
        std::env::current_exe().map_err(|e| StarterError::Locate(PathBuf::from("/proc/self/exe"), e))?;
    let exe = exe.canonicalize().map_err(|e| StarterError::Locate(exe.clone(), e))?;
    exe.ancestors()
        .nth(2)
        .map(PathBuf::from)
        .ok_or_else(|| StarterError::Locate(exe.clone(), std::io::ErrorKind::NotFound.into()))
}

pub fn starter_path() -> Result<PathBuf, StarterError> {
    let p = install_prefix()?.join("libexec/strata/strata-starter");
    if p.exists() {
        Ok(p)
    } else {
        Err(StarterError::Missing(p))
    }
}

/// The plan in a sealed-size memory file, positioned at its start.
fn plan_file(plan: &Plan) -> std::io::Result<OwnedFd> {
    let fd = nix::sys::memfd::memfd_create(
        &CString::new("strata-plan").unwrap_or_default(),
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&plan.to_json())?;
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(0))?;
    Ok(OwnedFd::from(file))
}

/// Replace this process with the starter: the plan on fd 3, each opened file at the number
/// the plan names (the fds the plan was built from), an empty environment.
pub fn exec_starter(plan: &Plan, files: &[OwnedFd]) -> Result<std::convert::Infallible, StarterError> {
    let starter = starter_path()?;
    let plan_fd = plan_file(plan).map_err(StarterError::Plan)?;
    let passed: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
    debug_assert!(passed.iter().all(|&fd| fd > PLAN_FD), "image fds must sit above the plan fd");
    let plan_raw = plan_fd.as_raw_fd();
    let mut cmd = Command::new(&starter);
    cmd.env_clear();
    // SAFETY: the closure only calls async-signal-safe functions (dup2, fcntl) between fork
    // and exec, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if plan_raw == PLAN_FD {
                // dup2 onto itself keeps close-on-exec: clear it instead.
                if libc::fcntl(PLAN_FD, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(plan_raw, PLAN_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for &fd in &passed {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let err = cmd.exec();
    Err(StarterError::Exec(starter, err))
}

/// Make sure no fd we pass sits at or below the plan fd: move such files above it.
pub fn lift_fd(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    if fd.as_raw_fd() > PLAN_FD {
        return Ok(fd);
    }
    let raw = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(PLAN_FD + 1))?;
    // SAFETY: F_DUPFD_CLOEXEC just returned this new fd; we are its only owner.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}
