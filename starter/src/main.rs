//! strata-starter: one linear story. Parse, check, unshare, mount, drop, exec.
//! Every step is in its own module; see SECURITY.md for why each is safe.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::ExitCode;

use strata_starter::caller::Caller;
use strata_starter::error::Result;
use strata_starter::grant::grant;
use strata_starter::plan::{Plan, PLAN_FD};
use strata_starter::session::{unshare_namespaces, Session};
use strata_starter::trust::Install;
use strata_starter::{assemble, drop, exec::exec, keeper, lock, supervise, sys};

/// Close every fd above 2 that the plan does not name (the plan fd is already closed).
fn close_unnamed_fds(plan: &Plan) -> Result<()> {
    let named: Vec<i32> = plan.fds().iter().map(|(fd, _)| *fd).collect();
    let max = named.iter().copied().filter(|&fd| fd > 2).max().unwrap_or(2);
    for fd in 3..=max {
        if !named.contains(&fd) {
            let _ = nix::unistd::close(fd);
        }
    }
    sys::close_range(max as u32 + 1, u32::MAX, false).map_err(|e| strata_starter::err!("close_range: {e}"))
}

/// SIGKILL when the monitor dies; if it already has, leave now.
fn arm_parent_death(monitor: &std::os::fd::OwnedFd) -> Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| strata_starter::err!("PR_SET_PDEATHSIG: {e}"))?;
    if sys::has_exited(monitor) {
        sys::exit_now(255);
    }
    Ok(())
}

fn run() -> Result<i32> {
    strata_starter::mark_start();
    nix::sys::prctl::set_dumpable(false).map_err(|e| strata_starter::err!("PR_SET_DUMPABLE: {e}"))?;
    // The real ids and groups, from the kernel; never from the plan.
    let caller = Caller::from_kernel()?;
    // Nothing in the environment steers the starter.
    sys::clear_environment();
    // Files and mounts the starter creates belong to root until the drop, not the caller's group.
    nix::unistd::setegid(nix::unistd::Gid::from_raw(0)).map_err(|e| strata_starter::err!("setegid: {e}"))?;
    let install = Install::load(caller.setuid)?; // root-owned chain, or refuse
    let plan = {
        let fd = sys::adopt_fd(PLAN_FD).map_err(|_| {
            strata_starter::err!("no plan on fd {PLAN_FD}: run containers with the 'strata' command")
        })?;
        Plan::read_from(File::from(fd)).map_err(|e| strata_starter::err!("{e}"))?
    };
    strata_starter::set_log_level(plan.log_level);
    strata_starter::debug("plan read");
    close_unnamed_fds(&plan)?;
    let mut grant = grant(&install.policy, &caller, &plan)?; // every request checked
    strata_starter::debug("granted");
    lock::lock_layers(&grant)?; // one writer or many readers per image, held by the loop device
    let detached = assemble::detach_caller_trees(&grant)?; // clones made in the caller's namespace
    let mask = supervise::block();
    unshare_namespaces(&grant)?;
    // With a pid namespace the next child is the namespace's init and we stay outside as its
    // monitor. The init must die with the monitor: a parent-death signal, re-armed after each
    // credential change, plus a pidfd check for a monitor that died before it was armed.
    let monitor = if grant.namespaces.pid {
        let me = sys::pidfd_open(std::process::id() as libc::pid_t)
            .map_err(|e| strata_starter::err!("pidfd_open: {e}"))?;
        if let nix::unistd::ForkResult::Parent { child } =
            sys::fork().map_err(|e| strata_starter::err!("fork: {e}"))?
        {
            grant.close_fds();
            drop::drop_privileges_for_good(&caller)?;
            return Ok(supervise::supervise(child));
        }
        arm_parent_death(&me)?;
        Some(me)
    } else {
        None
    };
    strata_starter::debug("namespaces entered");
    let session = Session::mount(&install.session_dir, grant.session_size_mib)?;
    let root = session.assemble(&grant, &caller, detached)?; // loops, mounts, overlay, binds
    strata_starter::debug("assembled");
    root.pivot()?;
    let interpreter = grant.take_interpreter();
    grant.close_fds();
    let filter = drop::payload_filter()?;
    drop::drop_privileges_for_good(&caller)?; // ids, groups, caps, no_new_privs; verified
    if let Some(monitor) = &monitor {
        // We are pid 1: fork the payload and stay as its init (reaps, forwards signals).
        arm_parent_death(monitor)?;
        if let nix::unistd::ForkResult::Parent { child } =
            sys::fork().map_err(|e| strata_starter::err!("fork: {e}"))?
        {
            return Ok(supervise::supervise(child));
        }
    }
    keeper::reap(root.keeper); // long exited by now
    strata_starter::debug("privileges dropped; exec");
    exec(&grant.process, interpreter, &filter, &mask)?;
    unreachable!("exec returns only errors")
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "--version") {
        println!("strata-starter {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("FATAL:   {e}");
            let _ = std::io::stderr().as_raw_fd();
            ExitCode::from(255)
        }
    }
}
