//! Dropping privileges for good, verified, and the payload's seccomp deny-list.

use crate::caller::Caller;
use crate::error::{Context, Result};
use crate::{bail, sys};
use caps::CapSet;
use nix::sys::prctl;
use nix::unistd::{getgroups, getresgid, getresuid, setresgid, setresuid, Uid};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};
use std::collections::BTreeMap;

/// Highest capability number the kernel knows (the caps crate only knows those it was built with).
fn cap_last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

/// Become the caller: no capabilities in any set, real/effective/saved ids all the caller's,
/// the caller's own supplementary groups untouched. Verified afterwards.
pub fn drop_privileges_for_good(caller: &Caller) -> Result<()> {
    if caller.is_root() {
        // Root mode: 'root default capabilities = full' keeps root as root in the container.
        prctl::set_no_new_privs().context(|| "PR_SET_NO_NEW_PRIVS".into())?;
        return Ok(());
    }
    for cap in 0..=cap_last_cap() {
        match sys::capbset_drop(cap) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => bail!("cannot drop capability {cap} from the bounding set: {e}"),
        }
    }
    caps::clear(None, CapSet::Ambient).context(|| "cannot clear ambient capabilities".into())?;
    caps::clear(None, CapSet::Inheritable).context(|| "cannot clear inheritable capabilities".into())?;
    setresgid(caller.gid, caller.gid, caller.gid).context(|| "setresgid".into())?;
    setresuid(caller.uid, caller.uid, caller.uid).context(|| "setresuid".into())?;
    // The kernel cleared permitted/effective when all uids became non-zero; be explicit.
    caps::clear(None, CapSet::Permitted).context(|| "cannot clear permitted capabilities".into())?;
    caps::clear(None, CapSet::Effective).context(|| "cannot clear effective capabilities".into())?;
    prctl::set_dumpable(false).context(|| "PR_SET_DUMPABLE".into())?;
    prctl::set_no_new_privs().context(|| "PR_SET_NO_NEW_PRIVS".into())?;
    verify(caller)
}

/// Check, don't assume (CVE-2023-38496): ids, groups, capabilities, no way back to root.
fn verify(caller: &Caller) -> Result<()> {
    let u = getresuid().context(|| "getresuid".into())?;
    let g = getresgid().context(|| "getresgid".into())?;
    if [u.real, u.effective, u.saved] != [caller.uid; 3] || [g.real, g.effective, g.saved] != [caller.gid; 3]
    {
        bail!("privilege drop failed: ids are not the caller's");
    }
    if getgroups().context(|| "getgroups".into())? != caller.groups {
        bail!("privilege drop failed: supplementary groups changed");
    }
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        bail!("privilege drop failed: could regain root");
    }
    for set in [CapSet::Permitted, CapSet::Effective, CapSet::Inheritable, CapSet::Ambient, CapSet::Bounding]
    {
        let held = caps::read(None, set).context(|| "cannot read capabilities".into())?;
        if !held.is_empty() {
            bail!("privilege drop failed: {set:?} capabilities remain");
        }
    }
    if !prctl::get_no_new_privs().unwrap_or(false) {
        bail!("privilege drop failed: no_new_privs is not set");
    }
    Ok(())
}

/// Syscalls the payload never needs and which only widen the kernel's attack surface.
const DENIED: &[i64] = &[
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_keyctl,
    libc::SYS_open_by_handle_at,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_acct,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
];

/// Compile the payload's deny-list: the calls above fail with EPERM; everything else runs.
pub fn payload_filter() -> Result<BpfProgram> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for &nr in DENIED {
        rules.insert(nr, vec![]);
    }
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| crate::err!("seccomp: {e:?}"))?;
    let filter =
        SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch)
            .map_err(|e| crate::err!("seccomp filter: {e}"))?;
    BpfProgram::try_from(filter).map_err(|e| crate::err!("seccomp filter: {e}"))
}

/// Install the filter on this thread (it is inherited by the payload and can never be loosened).
pub fn apply_filter(prog: &BpfProgram) -> Result<()> {
    seccompiler::apply_filter(prog).map_err(|e| crate::err!("cannot install the seccomp filter: {e}"))
}
