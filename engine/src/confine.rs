//! Landlock self-confinement before parsing untrusted bytes (DESIGN.md §2): afterwards this
//! thread and its future children can open only the named files, read-only or read-write.
//! Files already open stay usable, so open the inputs first, then confine, then parse.
//!
//! Best effort: on a kernel without Landlock, or with an older ABI, it enforces what it can and
//! says so at debug level; it never fails the command. It also sets `no_new_privs`, so it is for
//! commands that will not exec the setuid starter afterwards.

use std::path::Path;

use landlock::{
    Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    ABI,
};

/// How much of the confinement the kernel enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confinement {
    Full,
    Partial,
    None,
}

/// Newest ABI we ask for; older kernels get the subset they know.
const ABI_WANTED: ABI = ABI::V6;

/// Allow reading the `read` files and reading and writing the `write` files; deny every other
/// file-system access for the rest of this thread's (and its children's) life.
pub fn restrict_to(read: &[&Path], write: &[&Path]) -> Confinement {
    match try_restrict(read, write) {
        Ok(status) => {
            let c = match status {
                RulesetStatus::FullyEnforced => Confinement::Full,
                RulesetStatus::PartiallyEnforced => Confinement::Partial,
                RulesetStatus::NotEnforced => Confinement::None,
            };
            crate::debug!("landlock: confinement {c:?} (read {read:?}, write {write:?})");
            c
        }
        Err(e) => {
            crate::debug!("landlock: not confined: {e}");
            Confinement::None
        }
    }
}

fn try_restrict(
    read: &[&Path],
    write: &[&Path],
) -> Result<RulesetStatus, Box<dyn std::error::Error>> {
    let all = AccessFs::from_all(ABI_WANTED);
    let file = AccessFs::from_file(ABI_WANTED);
    let read_access = file & AccessFs::ReadFile;
    let write_access = file & (AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate);
    let mut ruleset = Ruleset::default().handle_access(all)?.create()?;
    for (paths, access) in [(read, read_access), (write, write_access)] {
        for p in paths {
            match PathFd::new(p) {
                Ok(fd) => ruleset = ruleset.add_rule(PathBeneath::new(fd, access))?,
                // A path that cannot be opened gets no rule: access to it stays denied.
                Err(e) => crate::debug!("landlock: no rule for {}: {e}", p.display()),
            }
        }
    }
    Ok(ruleset.restrict_self()?.ruleset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{File, OpenOptions};

    #[test]
    fn only_the_named_files_stay_reachable() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("in.sif");
        let other = dir.path().join("other");
        std::fs::write(&allowed, b"x").unwrap();
        std::fs::write(&other, b"y").unwrap();
        // Landlock confines the calling thread: do it on a thread of its own.
        std::thread::spawn(move || {
            let c = restrict_to(&[allowed.as_path()], &[]);
            if c == Confinement::None {
                eprintln!("skipping: Landlock is not available on this kernel");
                return;
            }
            assert!(File::open(&allowed).is_ok());
            assert!(OpenOptions::new().write(true).open(&allowed).is_err());
            assert!(File::open(&other).is_err());
            assert!(File::open("/etc/passwd").is_err());
        })
        .join()
        .unwrap();
    }
}
