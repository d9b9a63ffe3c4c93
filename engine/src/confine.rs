//! Landlock self-confinement before parsing untrusted bytes (DESIGN.md §2): afterwards this
//! thread and its future children can open only the named files, read-only or read-write.
//! Files already open stay usable, so open the inputs first, then confine, then parse.
//!
//! Best effort: on a kernel without Landlock, or with an older ABI, it enforces what it can and
//! says so at debug level; it never fails the command. It also sets `no_new_privs`, so it is for
//! commands that will not exec the setuid starter afterwards.

use std::path::Path;
use std::process::Command;

use landlock::{
    Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr,
    RulesetStatus, ABI,
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

fn try_restrict(read: &[&Path], write: &[&Path]) -> Result<RulesetStatus, Box<dyn std::error::Error>> {
    let file = AccessFs::from_file(ABI_WANTED);
    let read_access = file & AccessFs::ReadFile;
    let write_access = file & (AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate);
    let ruleset = ruleset(&[(read, read_access), (write, write_access)])?;
    Ok(ruleset.restrict_self()?.ruleset)
}

/// A ruleset handling every file-system access, granting each group of paths its access
/// (beneath them, for directories).
fn ruleset(
    grants: &[(&[&Path], landlock::BitFlags<AccessFs>)],
) -> Result<RulesetCreated, Box<dyn std::error::Error>> {
    let all = AccessFs::from_all(ABI_WANTED);
    let mut ruleset = Ruleset::default().handle_access(all)?.create()?;
    for (paths, access) in grants {
        for p in paths.iter() {
            // Directory-only rights make no sense on a file: keep its file rights.
            let access = if p.is_dir() { *access } else { *access & AccessFs::from_file(ABI_WANTED) };
            match PathFd::new(p) {
                Ok(fd) => ruleset = ruleset.add_rule(PathBeneath::new(fd, access))?,
                // A path that cannot be opened gets no rule: access to it stays denied.
                Err(e) => crate::debug!("landlock: no rule for {}: {e}", p.display()),
            }
        }
    }
    Ok(ruleset)
}

/// Run `f` on a thread of its own confined to reading `read` and writing `write` (as
/// [`restrict_to`]), so that this process stays free to run helper tools afterwards. For
/// parsing untrusted bytes (a SIF's descriptors) in a command that then runs e2fsck or
/// unsquashfs.
pub fn confined<T: Send>(read: &[&Path], write: &[&Path], f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            restrict_to(read, write);
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// What a helper program needs to start: its binary and shared libraries, the loader cache,
/// the CPU count. Read and execute only.
const SYSTEM_READ: [&str; 9] = [
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/bin",
    "/sbin",
    "/etc/ld.so.cache",
    "/etc/ld.so.preload",
    "/sys/devices/system/cpu",
];

/// Confine the program `cmd` will run (not this process) with Landlock, applied between fork
/// and exec: it may read and execute the system directories it needs to start
/// ([`SYSTEM_READ`]), read `read`, and do anything beneath the directories `write`. For C tools
/// that parse untrusted images (unsquashfs on a downloaded SIF). Best effort, as
/// [`restrict_to`]: on a kernel without Landlock the program runs unconfined.
pub fn confine_command(cmd: &mut Command, read: &[&Path], write: &[&Path]) {
    use std::os::unix::process::CommandExt;
    let system: Vec<&Path> = SYSTEM_READ.iter().map(Path::new).collect();
    let built = ruleset(&[
        (&system, AccessFs::from_read(ABI_WANTED)),
        (read, AccessFs::from_read(ABI_WANTED)),
        (write, AccessFs::from_all(ABI_WANTED)),
    ]);
    let ruleset = match built {
        Ok(r) => r,
        Err(e) => {
            crate::debug!("landlock: {} not confined: {e}", cmd.get_program().to_string_lossy());
            return;
        }
    };
    let mut ruleset = Some(ruleset);
    // SAFETY: between fork and exec the closure only makes the prctl and landlock syscalls of
    // `restrict_self` on a ruleset built beforehand; it allocates only on its error path, and
    // strata runs no other thread at this point that could hold the allocator's lock.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(r) = ruleset.take() {
                r.restrict_self().map_err(std::io::Error::other)?;
            }
            Ok(())
        });
    }
    crate::debug!(
        "landlock: {} confined (read {read:?}, write {write:?})",
        cmd.get_program().to_string_lossy()
    );
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

    #[test]
    fn a_confined_command_reads_only_what_it_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("in");
        let secret = dir.path().join("secret");
        let out = dir.path().join("out");
        std::fs::write(&allowed, b"ok").unwrap();
        std::fs::write(&secret, b"no").unwrap();
        std::fs::create_dir(&out).unwrap();
        let script = format!(
            "cat {a} > {o}/copy && cat {s}; echo $? > {o}/rc; touch {d}/escaped",
            a = allowed.display(),
            o = out.display(),
            s = secret.display(),
            d = dir.path().display()
        );
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", &script]);
        confine_command(&mut cmd, &[&allowed], &[&out]);
        let status = cmd.output().unwrap();
        if status.status.success() && dir.path().join("escaped").exists() {
            eprintln!("skipping: Landlock is not available on this kernel");
            return;
        }
        assert_eq!(std::fs::read(out.join("copy")).unwrap(), b"ok");
        assert_ne!(std::fs::read_to_string(out.join("rc")).unwrap().trim(), "0");
        assert!(!dir.path().join("escaped").exists());
    }
}
