//! The ext3 filesystem of an overlay as e2fsprogs sees it: how tools are pointed at it (an
//! inherited descriptor, with an `?offset=` inside a SIF), its size from the superblock, the
//! owner of its entries (debugfs), and space allocation for the image.

use std::fs::File;
use std::io;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::image::detect::{self, HeaderError, Probe};
use crate::tools::{self, ToolError};

/// Offset of the superblock in an ext2/3/4 filesystem.
const SUPERBLOCK: u64 = 1024;

/// Let the program `cmd` runs inherit `file` and name it by `/proc/self/fd/N`, followed by
/// `?offset=OFF` for a filesystem inside a larger file (e2fsprogs' unix I/O option). The tool
/// then works on the very file strata opened (and locked), and a `?` in the user's path cannot
/// be mistaken for options.
pub fn target(cmd: &mut Command, file: &File, offset: u64) -> String {
    let fd: RawFd = file.as_raw_fd();
    // SAFETY: between fork and exec the closure only calls fcntl, which is async-signal-safe,
    // on a descriptor that stays open in the parent for the child's whole life.
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    if offset == 0 {
        format!("/proc/self/fd/{fd}")
    } else {
        format!("/proc/self/fd/{fd}?offset={offset}")
    }
}

/// Read up to `len` bytes at `offset`.
pub fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    crate::image::read_at_most(file, offset, len)
}

/// Apptainer's ext3 header check on the filesystem at `offset`.
pub fn check_header(file: &File, offset: u64) -> io::Result<Result<Probe, HeaderError>> {
    let buf = read_at(file, offset, detect::HEADER_LEN)?;
    Ok(detect::check_ext3_header(&buf))
}

/// The size in bytes the superblock at `offset` claims (blocks × block size); `None` without
/// an ext magic. ext3 has no 64-bit block counts, so the low 32 bits are the count.
pub fn fs_size(file: &File, offset: u64) -> io::Result<Option<u64>> {
    let sb = read_at(file, offset + SUPERBLOCK, 64)?;
    if sb.len() < 64 || sb[56..58] != [0x53, 0xEF] {
        return Ok(None);
    }
    let blocks = u32::from_le_bytes(sb[4..8].try_into().expect("4 bytes"));
    let log = u32::from_le_bytes(sb[24..28].try_into().expect("4 bytes"));
    if log > 6 {
        return Ok(None);
    }
    Ok(Some(u64::from(blocks) << (10 + log)))
}

/// Owner (uid, gid) of `path` inside the filesystem, as debugfs reports it.
pub fn owner(file: &File, offset: u64, path: &str) -> Result<(u32, u32), ToolError> {
    let debugfs = tools::DEBUGFS;
    let mut cmd = debugfs.command()?;
    let fs = target(&mut cmd, file, offset);
    cmd.env("DEBUGFS_PAGER", "__none__")
        .env("PAGER", "__none__")
        .arg("-R")
        .arg(format!("stat \"{path}\""))
        .arg(fs);
    let out = debugfs.run(&mut cmd, &[0])?;
    parse_owner(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| ToolError::Failed {
        name: debugfs.name,
        status: tools::ExitStatus::Code(0),
        stderr: format!("no owner reported for {path}: {}", tools::tail(&out.stderr)),
    })
}

/// `User: 70000   Group: 70000   ...` from debugfs' `stat`.
pub fn parse_owner(stat: &str) -> Option<(u32, u32)> {
    let line = stat.lines().find(|l| l.trim_start().starts_with("User:"))?;
    let mut words = line.split_whitespace();
    let mut uid = None;
    let mut gid = None;
    while let Some(w) = words.next() {
        match w {
            "User:" => uid = words.next().and_then(|v| v.parse().ok()),
            "Group:" => gid = words.next().and_then(|v| v.parse().ok()),
            _ => {}
        }
    }
    Some((uid?, gid?))
}

/// Make `len` bytes from `offset` of `file` real allocated space (`fallocate`, no data
/// written), or leave them a hole when `sparse` (only extending the file). With `keep_size`
/// the file length does not change (space reserved past its end for data about to be
/// appended). A filesystem without `fallocate` gets a hole, with a verbose message.
pub fn allocate(file: &File, offset: u64, len: u64, sparse: bool, keep_size: bool) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let end = offset
        .checked_add(len)
        .filter(|&e| e <= i64::MAX as u64)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    if !sparse {
        let mode = if keep_size {
            nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE
        } else {
            nix::fcntl::FallocateFlags::empty()
        };
        match nix::fcntl::fallocate(file.as_raw_fd(), mode, offset as i64, len as i64) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EOPNOTSUPP) => {
                crate::verbose!("the filesystem cannot preallocate space: the overlay is sparse")
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !keep_size && file.metadata()?.len() < end {
        file.set_len(end)?;
    }
    Ok(())
}

/// Where the next data (`SEEK_DATA`) or hole (`SEEK_HOLE`) of `f` starts at or after `from`;
/// `end` when there is none before it. A filesystem that cannot tell reports all data.
fn seek(f: &File, from: u64, end: u64, data: bool) -> io::Result<u64> {
    use nix::unistd::{lseek, Whence};
    let whence = if data { Whence::SeekData } else { Whence::SeekHole };
    match lseek(f.as_raw_fd(), from as libc::off_t, whence) {
        Ok(at) => Ok((at as u64).min(end)),
        Err(nix::errno::Errno::ENXIO) => Ok(end),
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::EOPNOTSUPP) => Ok(if data { from } else { end }),
        Err(e) => Err(e.into()),
    }
}

/// Make `len` bytes at `at` of `f` read as zeros, keeping their allocation where the
/// filesystem can (`FALLOC_FL_ZERO_RANGE`), else punching them out, else writing zeros.
fn zero(f: &File, at: u64, len: u64) -> io::Result<()> {
    use nix::fcntl::{fallocate, FallocateFlags as F};
    let (off, n) = (at as libc::off_t, len as libc::off_t);
    for mode in
        [F::FALLOC_FL_ZERO_RANGE | F::FALLOC_FL_KEEP_SIZE, F::FALLOC_FL_PUNCH_HOLE | F::FALLOC_FL_KEEP_SIZE]
    {
        if fallocate(f.as_raw_fd(), mode, off, n).is_ok() {
            return Ok(());
        }
    }
    let zeros = vec![0u8; (1 << 20).min(len as usize)];
    let mut done = 0;
    while done < len {
        let k = zeros.len().min((len - done) as usize);
        std::os::unix::fs::FileExt::write_all_at(f, &zeros[..k], at + done)?;
        done += k as u64;
    }
    Ok(())
}

/// Copy `len` bytes at `src_at` of `src` to `dst_at` of `dst`, only the data extents
/// (`copy_file_range`, a reflink where the filesystem shares blocks); the holes of the source
/// are zeroed in the destination when `zero_holes` (it held other bytes there), else skipped.
pub fn copy_sparse(
    src: &File,
    src_at: u64,
    len: u64,
    dst: &File,
    dst_at: u64,
    zero_holes: bool,
) -> io::Result<()> {
    let end = src_at + len;
    let mut pos = src_at;
    while pos < end {
        let data = seek(src, pos, end, true)?;
        if data > pos && zero_holes {
            zero(dst, dst_at + (pos - src_at), data - pos)?;
        }
        if data >= end {
            break;
        }
        let hole = seek(src, data, end, false)?.max(data + 1).min(end);
        copy_range(src, data, hole - data, dst, dst_at + (data - src_at))?;
        pos = hole;
    }
    Ok(())
}

/// Copy one data extent: `copy_file_range`, or through a buffer where it is not supported.
fn copy_range(src: &File, mut from: u64, len: u64, dst: &File, mut to: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let end = from + len;
    while from < end {
        let (mut off_in, mut off_out) = (from as libc::loff_t, to as libc::loff_t);
        let chunk = (end - from).min(1 << 30) as usize;
        // SAFETY: both descriptors are open for the call; the offsets are locals that outlive it.
        let r = unsafe {
            libc::copy_file_range(src.as_raw_fd(), &mut off_in, dst.as_raw_fd(), &mut off_out, chunk, 0)
        };
        match nix::errno::Errno::result(r) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                from += n as u64;
                to += n as u64;
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(
                nix::errno::Errno::EXDEV
                | nix::errno::Errno::ENOSYS
                | nix::errno::Errno::EOPNOTSUPP
                | nix::errno::Errno::EINVAL,
            ) => {
                let mut buf = vec![0u8; (1 << 20).min((end - from) as usize)];
                while from < end {
                    let k = buf.len().min((end - from) as usize);
                    src.read_exact_at(&mut buf[..k], from)?;
                    dst.write_all_at(&buf[..k], to)?;
                    from += k as u64;
                    to += k as u64;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_read_from_debugfs_stat() {
        let stat = "Inode: 12   Type: directory    Mode:  0755   Flags: 0x0\n\
                    Generation: 0    Version: 0x00000000:00000000\n\
                    User: 70000   Group: 2147483646   Project:     0   Size: 4096\n";
        assert_eq!(parse_owner(stat), Some((70000, 2_147_483_646)));
        assert_eq!(parse_owner("User:  1000   Group:  100   Size: 1"), Some((1000, 100)));
        assert_eq!(parse_owner("stat: File not found by ext2_lookup"), None);
    }

    #[test]
    fn sizes_come_from_the_superblock() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.img");
        let mut sb = vec![0u8; 4096];
        sb[1024 + 4..1024 + 8].copy_from_slice(&16384u32.to_le_bytes());
        sb[1024 + 24..1024 + 28].copy_from_slice(&2u32.to_le_bytes());
        sb[1024 + 56..1024 + 58].copy_from_slice(&[0x53, 0xEF]);
        std::fs::write(&p, &sb).unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(fs_size(&f, 0).unwrap(), Some(64 << 20));
        assert_eq!(fs_size(&f, 4096).unwrap(), None);
    }

    #[test]
    fn sparse_copies_keep_data_and_zero_holes() {
        use std::os::unix::fs::FileExt;
        let d = tempfile::tempdir().unwrap();
        let src = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(d.path().join("src"))
            .unwrap();
        src.set_len(3 << 20).unwrap();
        src.write_all_at(b"first", 4096).unwrap();
        src.write_all_at(b"last", (3 << 20) - 4).unwrap();
        let dst = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(d.path().join("dst"))
            .unwrap();
        dst.write_all_at(&vec![0xAA; 4 << 20], 0).unwrap();
        copy_sparse(&src, 4096, (3 << 20) - 4096, &dst, 8192, true).unwrap();
        let mut got = vec![0u8; 4 << 20];
        dst.read_exact_at(&mut got, 0).unwrap();
        assert!(got[..8192].iter().all(|&b| b == 0xAA), "before the range");
        assert_eq!(&got[8192..8197], b"first");
        assert!(got[8197..8192 + (3 << 20) - 4096 - 4].iter().all(|&b| b == 0));
        assert_eq!(&got[8192 + (3 << 20) - 4096 - 4..8192 + (3 << 20) - 4096], b"last");
        assert!(got[8192 + (3 << 20) - 4096..].iter().all(|&b| b == 0xAA), "after");
    }

    #[test]
    fn allocation_is_real_unless_sparse() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.img");
        let f = File::create(&p).unwrap();
        allocate(&f, 0, 4 << 20, false, false).unwrap();
        let m = f.metadata().unwrap();
        assert_eq!(m.len(), 4 << 20);
        if m.blocks() * 512 < 4 << 20 {
            eprintln!("SKIPPED: this filesystem does not preallocate");
            return;
        }
        let q = d.path().join("s.img");
        let f = File::create(&q).unwrap();
        allocate(&f, 0, 4 << 20, true, false).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 4 << 20);
        assert_eq!(f.metadata().unwrap().blocks(), 0);
        allocate(&f, 4 << 20, 1 << 20, false, true).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 4 << 20, "keep_size");
        assert!(f.metadata().unwrap().blocks() * 512 >= 1 << 20);
    }
}
