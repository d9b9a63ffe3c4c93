//! Open-file-description locks on overlay images (DESIGN.md §5): a container holds a write lock
//! on the bytes of its writable ext3 overlay (the whole image file, or the partition's range of
//! a SIF) and a read lock for `:ro` use, for as long as it runs; `overlay resize` takes the write
//! lock too, so it never changes an overlay a container has mounted.
//!
//! OFD locks (`F_OFD_SETLK`) belong to the open file description, not to the process: they are
//! not lost when another descriptor of the same file is closed (as POSIX `F_SETLK` locks are),
//! they are shared by a `fork`ed child and by an fd passed to the starter, and they conflict
//! between two opens of the same file even within one process. They go away when the last
//! descriptor of that open file is closed, so a container killed with `kill -9` frees its lock.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another open file description holds a conflicting lock on an overlapping range: a write
    /// lock for a read or write request, or a read lock for a write request.
    #[error("locked by another process")]
    InUse,
    /// `fcntl` failed otherwise (a write lock on a file opened read-only gives `EBADF`).
    #[error("could not lock: {0}")]
    Io(#[from] io::Error),
}

/// Lock `len` bytes of `file` from `offset`, waiting at most 1.5 s: a write (exclusive) lock when
/// `write`, else a read (shared) lock. `len == 0` locks from `offset` to the end of the file
/// and beyond, however far it grows. A write lock needs `file` opened for writing, a read lock
/// needs it opened for reading.
///
/// Taking a lock again on the same open file replaces the old one on that range (upgrade or
/// downgrade). The lock lasts until every descriptor of this open file is closed.
///
/// On a filesystem without lock support (`ENOLCK`, some NFS setups) nothing is locked and `Ok`
/// is returned, with a debug message, as Apptainer does: refusing would make such sites
/// unusable.
pub fn lock_range(file: &File, offset: u64, len: u64, write: bool) -> Result<(), LockError> {
    // One implementation for the engine and the starter, which locks container layers.
    // Waits briefly: a container that just exited frees its lock when its teardown is done.
    match strata_starter::lock::lock_range_waiting(file.as_fd(), offset, len, write) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => Err(LockError::InUse),
        Err(nix::errno::Errno::EINVAL) => Err(LockError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "lock range beyond the largest file offset",
        ))),
        Err(e) => Err(LockError::Io(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn open(path: &std::path::Path) -> File {
        OpenOptions::new().read(true).write(true).open(path).unwrap()
    }

    #[test]
    fn two_opens_of_one_file_conflict_like_two_processes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("overlay.img");
        std::fs::write(&p, vec![0u8; 8192]).unwrap();
        let a = open(&p);
        let b = open(&p);
        lock_range(&a, 0, 0, true).unwrap();
        assert!(matches!(lock_range(&b, 0, 4096, false), Err(LockError::InUse)));
        assert!(matches!(lock_range(&b, 100, 1, true), Err(LockError::InUse)));
        // The holder can downgrade; then readers share.
        lock_range(&a, 0, 0, false).unwrap();
        lock_range(&b, 0, 4096, false).unwrap();
        assert!(matches!(lock_range(&a, 0, 0, true), Err(LockError::InUse)));
        drop(b);
        lock_range(&a, 0, 0, true).unwrap();
    }

    #[test]
    fn disjoint_ranges_do_not_conflict() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("image.sif");
        std::fs::write(&p, vec![0u8; 8192]).unwrap();
        let a = open(&p);
        let b = open(&p);
        lock_range(&a, 0, 4096, true).unwrap();
        lock_range(&b, 4096, 4096, true).unwrap();
        assert!(matches!(lock_range(&b, 4000, 100, true), Err(LockError::InUse)));
    }

    #[test]
    fn a_write_lock_needs_a_writable_open() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ro.img");
        std::fs::write(&p, b"x").unwrap();
        let f = File::open(&p).unwrap();
        lock_range(&f, 0, 0, false).unwrap();
        assert!(matches!(lock_range(&f, 0, 0, true), Err(LockError::Io(_))));
        assert!(matches!(lock_range(&f, u64::MAX, 1, false), Err(LockError::Io(_))));
    }

    #[test]
    fn the_lock_is_released_when_the_file_is_closed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("overlay.img");
        std::fs::write(&p, b"x").unwrap();
        let a = open(&p);
        lock_range(&a, 0, 0, true).unwrap();
        drop(a);
        lock_range(&open(&p), 0, 0, true).unwrap();
    }
}
