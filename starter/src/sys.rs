//! Every raw syscall of the starter, as thin typed wrappers. Every FFI block lives here, each with its SAFETY note.
//!
//! The rest of the starter is safe Rust. Where `nix` already offers a safe wrapper it is used
//! directly by the callers (the prctls but one, for instance); this module holds what `nix`
//! lacks (loop devices, the new mount API, PR_CAPBSET_DROP, close_range, pidfds, openat2 into
//! an owned fd, clearenv, fork) and the single place fds from the plan become owned.

use nix::errno::Errno;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

pub type Result<T> = std::result::Result<T, Errno>;

fn check(rc: libc::c_long) -> Result<libc::c_long> {
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(rc)
    }
}

/// Remove every environment variable of this process.
pub fn clear_environment() {
    // SAFETY: the starter is single-threaded (asserted in `Caller::from_kernel` before this is
    // called), so no other thread can read the environment while it is cleared.
    unsafe { libc::clearenv() };
}

/// Drop one capability from the bounding set (EINVAL for a cap the kernel does not know).
pub fn capbset_drop(cap: u32) -> Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } as _).map(drop)
}

/// Close every fd in `[first, last]`; with `cloexec`, mark them close-on-exec instead.
pub fn close_range(first: u32, last: u32, cloexec: bool) -> Result<()> {
    let flags = if cloexec { libc::CLOSE_RANGE_CLOEXEC } else { 0 };
    // SAFETY: close_range only affects this process's fd table; no memory is passed.
    check(unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) }).map(drop)
}

/// Is `fd` an open descriptor? (`F_GETFD` does not change anything.)
pub fn fd_is_open(fd: RawFd) -> bool {
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_ok()
}

/// Take ownership of an fd the caller passed us and the plan names.
///
/// The caller must have checked that `fd` is open and that no other `OwnedFd` owns it
/// (`grant` refuses an fd named twice before calling this).
pub fn adopt_fd(fd: RawFd) -> Result<OwnedFd> {
    if fd < 0 || !fd_is_open(fd) {
        return Err(Errno::EBADF);
    }
    // SAFETY: the fd is open (checked above), and the caller guarantees it is adopted once, so
    // no other owner will close it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Mark it close-on-exec so it can never reach the payload.
    nix::fcntl::fcntl(owned.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
    Ok(owned)
}

/// fork(2). The starter is single-threaded, so the child may do anything the parent could.
pub fn fork() -> Result<nix::unistd::ForkResult> {
    // SAFETY: the starter is single-threaded (checked at start-up), so the child does not
    // inherit locks held by other threads; both sides continue with ordinary Rust code.
    unsafe { nix::unistd::fork() }
}

// ---- loop devices ----------------------------------------------------------------------

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
pub const LO_FLAGS_READ_ONLY: u32 = 1;
pub const LO_FLAGS_AUTOCLEAR: u32 = 4;
pub const LO_FLAGS_DIRECT_IO: u32 = 16;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;

/// What a loop device is bound to: (backing st_dev, backing st_ino, offset, sizelimit, flags).
pub fn loop_status(dev: &OwnedFd) -> Result<(u64, u64, u64, u64, u32)> {
    // SAFETY: LoopInfo64 is plain data; all-zero is a valid value for the kernel to overwrite.
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    // SAFETY: LOOP_GET_STATUS64 writes a `struct loop_info64`, which `LoopInfo64` mirrors
    // exactly; the pointer is valid and writable for the whole call.
    check(unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_GET_STATUS64, &mut info as *mut LoopInfo64) } as _)?;
    Ok((info.lo_device, info.lo_inode, info.lo_offset, info.lo_sizelimit, info.lo_flags))
}

/// Ask the kernel for the number of a free loop device (creating one if needed).
pub fn loop_get_free(control: &OwnedFd) -> Result<u32> {
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
    check(unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) } as _).map(|n| n as u32)
}

/// Bind `backing` to the loop device `dev` in one step, with offset, size limit and flags.
pub fn loop_configure(
    dev: &OwnedFd,
    backing: &OwnedFd,
    offset: u64,
    sizelimit: u64,
    flags: u32,
) -> Result<()> {
    let cfg = LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 0,
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: offset,
            lo_sizelimit: sizelimit,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: flags,
            lo_file_name: [0; 64],
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    };
    // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which `LoopConfig` mirrors exactly
    // (repr(C), same field order and sizes); the pointer is valid for the whole call.
    check(unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg as *const LoopConfig) } as _).map(drop)
}

/// BLKRASET: the device's read-ahead, in 512-byte sectors.
const BLKRASET: libc::c_ulong = 0x1262;

/// Set the read-ahead of block device `dev` to `kib` KiB.
pub fn set_readahead(dev: &OwnedFd, kib: u32) -> Result<()> {
    let sectors = libc::c_ulong::from(kib) * 2;
    // SAFETY: BLKRASET takes its argument by value (an unsigned long); no memory is passed.
    check(unsafe { libc::ioctl(dev.as_raw_fd(), BLKRASET, sectors) } as _).map(drop)
}

// ---- the new mount API -------------------------------------------------------------------

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Errno::EINVAL)
}

/// Own the fd a syscall returned.
fn owned(rc: libc::c_long) -> Result<OwnedFd> {
    let fd = check(rc)? as RawFd;
    // SAFETY: the kernel just returned this new fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `open_tree(fd, "", OPEN_TREE_CLONE | AT_EMPTY_PATH [| AT_RECURSIVE])`: a detached copy of
/// the mount (tree) at the object `fd` refers to.
pub fn clone_tree(fd: &OwnedFd, recursive: bool) -> Result<OwnedFd> {
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as u32;
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    // SAFETY: the path is a valid NUL-terminated empty string; the kernel returns a new fd.
    owned(unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), c"".as_ptr(), flags) })
}

/// Set mount attributes (`MOUNT_ATTR_*`) on a (detached) mount tree.
pub fn mount_setattr(tree: &OwnedFd, set: u64, recursive: bool) -> Result<()> {
    let attr = libc::mount_attr { attr_set: set, attr_clr: 0, propagation: 0, userns_fd: 0 };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: `attr` is a valid `struct mount_attr` and its size is passed with it.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    })
    .map(drop)
}

/// Attach a detached mount onto the object `target` refers to (no path is re-resolved).
pub fn move_mount_to(tree: &OwnedFd, target: &OwnedFd) -> Result<()> {
    let flags = libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH;
    // SAFETY: both paths are valid empty C strings; only fds are used.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// A new, detached filesystem instance: `fsopen` + string options + `fsmount`.
pub fn new_fs(fstype: &str, options: &[(&str, &str)], attrs: u64) -> Result<OwnedFd> {
    let fstype = cstr(fstype)?;
    // SAFETY: valid C string; returns a new fd.
    let fsfd = owned(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), libc::FSOPEN_CLOEXEC) })?;
    for (key, value) in options {
        let (k, v) = (cstr(key)?, cstr(value)?);
        // SAFETY: valid C strings for key and value; FSCONFIG_SET_STRING takes aux = 0.
        check(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fsfd.as_raw_fd(),
                libc::FSCONFIG_SET_STRING,
                k.as_ptr(),
                v.as_ptr(),
                0,
            )
        })?;
    }
    // SAFETY: FSCONFIG_CMD_CREATE takes no key or value.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fsfd.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    // SAFETY: integer arguments only; returns a new mount fd.
    owned(unsafe {
        libc::syscall(libc::SYS_fsmount, fsfd.as_raw_fd(), libc::FSMOUNT_CLOEXEC, attrs as libc::c_uint)
    })
}

/// Number of threads of this process, from /proc/self/stat's 20th field.
pub fn thread_count() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The comm field may contain spaces; fields after the closing paren are space separated.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(17)?.parse().ok()
}

/// `struct open_how` (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(root, path, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: resolve `path` as if `root`
/// were `/`, so no symlink inside the tree can lead out of it. Always `O_CLOEXEC`.
pub fn open_in_root(root: &OwnedFd, path: &str, oflags: libc::c_int, mode: u32) -> Result<OwnedFd> {
    let how = OpenHow {
        flags: (oflags | libc::O_CLOEXEC) as u64,
        mode: if oflags & libc::O_CREAT != 0 { mode as u64 } else { 0 },
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    let p = cstr(path)?;
    // SAFETY: `p` is a valid C string and `how` mirrors `struct open_how` (repr(C), three u64),
    // whose size is passed with it.
    owned(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            p.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    })
}

/// `openat(dir, name, flags)` for a single component, `O_NOFOLLOW | O_CLOEXEC` always.
pub fn open_at(dir: &OwnedFd, name: &str, oflags: libc::c_int, mode: u32) -> Result<OwnedFd> {
    let p = cstr(name)?;
    // SAFETY: valid C string; returns a new fd that we own.
    owned(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            p.as_ptr(),
            oflags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        ) as libc::c_long
    })
}

/// Open an absolute, root-controlled path (the session tree, /dev nodes) with `O_CLOEXEC`.
pub fn open_path(path: &std::path::Path, oflags: libc::c_int) -> Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let p = CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: valid C string; returns a new fd that we own.
    owned(unsafe { libc::open(p.as_ptr(), oflags | libc::O_CLOEXEC) as libc::c_long })
}

/// Signal a process with a signal number as the kernel reported it.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) {
    if let Ok(sig) = nix::sys::signal::Signal::try_from(sig) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

/// Install a signal handler.
pub fn install_handler(sig: nix::sys::signal::Signal, action: &nix::sys::signal::SigAction) {
    // SAFETY: the only handlers installed through here are SIG_DFL and an empty `extern "C" fn`
    // that touches no state, so they are async-signal-safe.
    let _ = unsafe { nix::sys::signal::sigaction(sig, action) };
}

/// Wait for one of `set` (which must be blocked) and return its siginfo.
pub fn sigwaitinfo(set: &nix::sys::signal::SigSet) -> Result<libc::siginfo_t> {
    // SAFETY: siginfo_t is plain data; zeroed is a valid value for the kernel to overwrite.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset and `info` a valid out-pointer for the call.
    let rc = unsafe { libc::sigwaitinfo(set.as_ref(), &mut info) };
    check(rc as libc::c_long).map(|_| info)
}

/// `pidfd_open(pid, 0)`: an fd that becomes readable when `pid` exits.
pub fn pidfd_open(pid: libc::pid_t) -> Result<OwnedFd> {
    // SAFETY: integer arguments only; returns a new fd that we own.
    owned(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })
}

/// Is `fd` readable within `timeout` (for a pidfd: has its process exited)? Retries EINTR.
fn readable(fd: &OwnedFd, timeout: nix::poll::PollTimeout) -> bool {
    use nix::poll::{poll, PollFd, PollFlags};
    loop {
        match poll(&mut [PollFd::new(fd.as_fd(), PollFlags::POLLIN)], timeout) {
            Err(Errno::EINTR) => continue,
            Ok(n) => return n > 0,
            Err(_) => return false,
        }
    }
}

/// Has the process behind `pidfd` exited? (Never blocks.)
pub fn has_exited(pidfd: &OwnedFd) -> bool {
    readable(pidfd, nix::poll::PollTimeout::ZERO)
}

/// Block until `fd` is readable (for a pidfd: until its process exits).
pub fn wait_readable(fd: &OwnedFd) {
    readable(fd, nix::poll::PollTimeout::NONE);
}

/// Close every fd except `keep`.
pub fn close_all_but(keep: &[RawFd]) -> Result<()> {
    let mut keep: Vec<u32> = keep.iter().map(|&fd| fd as u32).collect();
    keep.sort_unstable();
    let mut first = 0u32;
    for fd in keep {
        if fd > first {
            close_range(first, fd - 1, false)?;
        }
        first = fd + 1;
    }
    close_range(first, u32::MAX, false)
}

/// `readahead(fd, offset, len)`: start reading a file range into the page cache. Best effort.
pub fn readahead(fd: &OwnedFd, offset: u64, len: u64) {
    // SAFETY: integer arguments only; the kernel reads into its own page cache.
    unsafe { libc::readahead(fd.as_raw_fd(), offset as libc::off64_t, len as usize) };
}

/// How many CPUs this process may run on.
pub fn cpus_available() -> usize {
    nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map_or(1, |set| (0..nix::sched::CpuSet::count()).filter(|&i| set.is_set(i).unwrap_or(false)).count())
}

/// Leave the process now, without running destructors or atexit handlers (forked children).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process immediately; nothing afterwards runs.
    unsafe { libc::_exit(code) }
}
