//! Streaming object data into an image: `copy_file_range` for data extents, holes kept as holes
//! (like `cp --sparse=auto`), a bounded buffer otherwise. Nothing is ever read whole into memory.
//! The raw syscalls of the SIF writer live here.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

use super::sha256::Sha256;

const BUF_LEN: usize = 1 << 20;

/// Where to put the bytes: `file` at `offset`; bytes of `file` below `old_len` already hold data
/// and must be overwritten even where the source has a hole.
pub(crate) struct Target<'a> {
    pub file: &'a File,
    pub offset: u64,
    pub old_len: u64,
}

/// Copy exactly `len` bytes of the regular file `src` (from its start) to `dst`. With a hasher,
/// every byte goes through memory in `BUF_LEN` chunks so it can be digested.
pub(crate) fn copy_file(src: &File, len: u64, dst: &Target<'_>, hash: Option<&mut Sha256>) -> io::Result<()> {
    if let Some(h) = hash {
        copy_buffered(src, 0, len, dst, Some(h))?;
    } else {
        let mut pos = 0;
        while pos < len {
            crate::interrupt::check()?;
            let data = seek(src, pos, libc::SEEK_DATA)?.unwrap_or(len).min(len);
            if data > pos {
                zero_range(dst, pos, data - pos)?;
            }
            if data >= len {
                break;
            }
            let hole = seek(src, data, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
            copy_range(src, data, hole - data, dst)?;
            pos = hole;
        }
    }
    let end = dst.offset + len;
    if len > 0 && dst.file.metadata()?.len() < end {
        dst.file.set_len(end)?;
    }
    Ok(())
}

/// Copy a stream of unknown length (a pipe, a character device); returns the bytes copied.
pub(crate) fn copy_stream(
    src: &mut dyn Read,
    dst: &Target<'_>,
    mut hash: Option<&mut Sha256>,
) -> io::Result<u64> {
    let mut buf = vec![0u8; BUF_LEN];
    let mut n = 0u64;
    loop {
        crate::interrupt::check()?;
        let got = match src.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(h) = hash.as_deref_mut() {
            h.update(&buf[..got]);
        }
        dst.file.write_all_at(&buf[..got], dst.offset + n)?;
        n += got as u64;
    }
}

/// `lseek(SEEK_DATA/SEEK_HOLE)`; `None` past the last data. A filesystem without support
/// reports the whole file as data.
fn seek(f: &File, from: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let from = libc::off_t::try_from(from).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: lseek on a valid open descriptor touches no memory of ours.
    let r = unsafe { libc::lseek(f.as_raw_fd(), from, whence) };
    if r >= 0 {
        return Ok(Some(r as u64));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENXIO) => Ok(None),
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => {
            Ok(Some(if whence == libc::SEEK_DATA { from as u64 } else { u64::MAX }))
        }
        _ => Err(e),
    }
}

/// Make `len` bytes of the target, starting `rel` bytes into the object, read as zeros. Only the
/// part below the old end of file can hold stale bytes; it is punched out (or zero-filled).
fn zero_range(dst: &Target<'_>, rel: u64, len: u64) -> io::Result<()> {
    let start = dst.offset + rel;
    let end = (start + len).min(dst.old_len);
    if start >= end {
        return Ok(());
    }
    let (off, n) = (start as libc::off_t, (end - start) as libc::off_t);
    // SAFETY: fallocate on a valid descriptor with plain integer arguments.
    let r = unsafe {
        libc::fallocate(dst.file.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, off, n)
    };
    if r == 0 {
        return Ok(());
    }
    let zeros = vec![0u8; BUF_LEN.min((end - start) as usize)];
    let mut at = start;
    while at < end {
        crate::interrupt::check()?;
        let k = zeros.len().min((end - at) as usize);
        dst.file.write_all_at(&zeros[..k], at)?;
        at += k as u64;
    }
    Ok(())
}

/// Copy `len` bytes at `from` in `src` to the same relative place in the target.
fn copy_range(src: &File, from: u64, len: u64, dst: &Target<'_>) -> io::Result<()> {
    let mut off_in = from as libc::loff_t;
    let mut off_out = (dst.offset + from) as libc::loff_t;
    let mut left = len;
    while left > 0 {
        // Chunks of 64 MiB: a signal stops the copy within one.
        crate::interrupt::check()?;
        let chunk = left.min(64 << 20) as usize;
        // SAFETY: both descriptors are open; the offsets are ours and live for the call.
        let r = unsafe {
            libc::copy_file_range(src.as_raw_fd(), &mut off_in, dst.file.as_raw_fd(), &mut off_out, chunk, 0)
        };
        if r > 0 {
            left -= r as u64;
            continue;
        }
        if r == 0 {
            return Err(shrunk(len - left, len));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL | libc::EPERM) => {
                let done = len - left;
                return copy_buffered(src, from + done, left, dst, None);
            }
            _ => return Err(e),
        }
    }
    Ok(())
}

/// pread/pwrite through one bounded buffer.
fn copy_buffered(
    src: &File,
    from: u64,
    len: u64,
    dst: &Target<'_>,
    mut hash: Option<&mut Sha256>,
) -> io::Result<()> {
    let mut buf = vec![0u8; BUF_LEN.min(len.max(1) as usize)];
    let mut done = 0u64;
    while done < len {
        crate::interrupt::check()?;
        let want = buf.len().min((len - done) as usize);
        let got = match src.read_at(&mut buf[..want], from + done) {
            Ok(0) => return Err(shrunk(from + done, from + len)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(h) = hash.as_deref_mut() {
            h.update(&buf[..got]);
        }
        dst.file.write_all_at(&buf[..got], dst.offset + from + done)?;
        done += got as u64;
    }
    Ok(())
}

fn shrunk(copied: u64, expected: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the object file shrank while it was copied: {copied} of {expected} bytes"),
    )
}
