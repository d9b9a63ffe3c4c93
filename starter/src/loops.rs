//! Loop devices and image mounts: attach a byte range of the caller's file to a free (or, when
//! allowed, a shared read-only) loop device and mount it `nosuid,nodev`.

use crate::error::{Context, Result};
use crate::grant::{Grant, GrantedLayer};
use crate::plan::LayerKind;
use crate::{bail, err, sys};
use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::fstat;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// How many times to retry when another container takes the free loop device first.
const LOOP_RETRIES: usize = 128;

/// Attach `backing[offset, offset+size)` to a free loop device, read-only unless `writable`.
fn attach_loop(
    control: &OwnedFd,
    backing: BorrowedFd<'_>,
    layer: &GrantedLayer,
    max: u32,
) -> Result<(u32, OwnedFd)> {
    let backing = backing.try_clone_to_owned().context(|| "cannot duplicate an image fd".into())?;
    let mut flags = sys::LO_FLAGS_AUTOCLEAR;
    if !layer.writable {
        flags |= sys::LO_FLAGS_READ_ONLY;
    } else {
        // A writable layer bypasses the host's page cache: the ext3 above caches already, and
        // small-file writes + sync are much faster without the second copy (bench/overlay_write.sh).
        flags |= sys::LO_FLAGS_DIRECT_IO;
    }
    for _ in 0..LOOP_RETRIES {
        let n = sys::loop_get_free(control).context(|| "failed to find loop device".into())?;
        if n >= max {
            bail!("no loop devices available: the next free one is /dev/loop{n}, and 'max loop devices' is {max}");
        }
        let dev = match sys::open_path(Path::new(&format!("/dev/loop{n}")), libc::O_RDWR) {
            Ok(d) => d,
            Err(Errno::ENOENT) | Err(Errno::ENXIO) => continue,
            Err(e) => bail!("cannot open /dev/loop{n}: {e}"),
        };
        let mut result = sys::loop_configure(&dev, &backing, layer.offset, layer.size, flags);
        if result == Err(Errno::EINVAL) && flags & sys::LO_FLAGS_DIRECT_IO != 0 {
            // The backing file cannot do direct I/O at this offset: fall back to buffered.
            flags &= !sys::LO_FLAGS_DIRECT_IO;
            result = sys::loop_configure(&dev, &backing, layer.offset, layer.size, flags);
        }
        match result {
            Ok(()) => return Ok((n, dev)),
            Err(Errno::EBUSY) => continue, // another container took it first
            Err(e) => bail!("cannot attach {} to /dev/loop{n}: {e}", layer.path.display()),
        }
    }
    bail!("failed to find loop device: every free device was taken concurrently {LOOP_RETRIES} times")
}

/// A read-only loop device already bound to the same file, offset and size, so that the
/// kernel reuses its squashfs superblock (and the decompressed page cache) instead of building
/// a new one. The open fd pins the device (autoclear waits for the last opener), and the
/// binding is verified on that fd, so the device cannot change between check and mount.
fn find_shared_loop(backing: BorrowedFd<'_>, layer: &GrantedLayer, max: u32) -> Option<(u32, OwnedFd)> {
    let st = fstat(backing.as_raw_fd()).ok()?;
    let read = |p: String| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string());
    for entry in std::fs::read_dir("/sys/block").ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(n) = name.strip_prefix("loop").and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if n >= max
            || read(format!("/sys/block/{name}/loop/offset")) != Some(layer.offset.to_string())
            || read(format!("/sys/block/{name}/loop/sizelimit")) != Some(layer.size.to_string())
            || read(format!("/sys/block/{name}/ro")).as_deref() != Some("1")
        {
            continue;
        }
        let Ok(dev) = sys::open_path(Path::new(&format!("/dev/{name}")), libc::O_RDONLY) else {
            continue;
        };
        match sys::loop_status(&dev) {
            Ok((d, i, off, size, flags))
                if d == st.st_dev
                    && i == st.st_ino
                    && off == layer.offset
                    && size == layer.size
                    && flags & sys::LO_FLAGS_READ_ONLY != 0 =>
            {
                return Some((n, dev))
            }
            _ => continue,
        }
    }
    None
}

/// Mount one image layer at `target`. Returns whether the mount has a superblock of its own
/// (false when a shared loop device made the kernel reuse a running container's).
pub fn mount_image(control: &OwnedFd, grant: &Grant, layer: &GrantedLayer, target: &Path) -> Result<bool> {
    let sharable = grant.shared_loop_devices && layer.kind == LayerKind::Squashfs && !layer.writable;
    // For a sharable layer, finding a device and attaching one is a single step among starters
    // (an exclusive flock on /dev/loop-control, which only root can open): containers of one
    // image started at the same moment (srun) then all find the first one's device.
    let serial = if sharable {
        let locked = control
            .try_clone()
            .ok()
            .and_then(|fd| nix::fcntl::Flock::lock(fd, nix::fcntl::FlockArg::LockExclusive).ok());
        Some(locked.ok_or_else(|| err!("cannot lock /dev/loop-control to share a loop device"))?)
    } else {
        None
    };
    let shared =
        if sharable { find_shared_loop(grant.fd(layer.fd), layer, grant.max_loop_devices) } else { None };
    let fresh = shared.is_none();
    let (n, dev) = match shared {
        Some(found) => found,
        None => attach_loop(control, grant.fd(layer.fd), layer, grant.max_loop_devices)?,
    };
    drop(serial); // the device is bound: others find it from here on
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if !layer.writable {
        flags |= MsFlags::MS_RDONLY;
    } else if grant.sync_writable_extfs {
        flags |= MsFlags::MS_SYNCHRONOUS; // 'sync writable extfs = yes'
    }
    let (fstype, data) = match layer.kind {
        LayerKind::Squashfs => ("squashfs", None),
        LayerKind::Ext3 => ("ext3", Some("errors=remount-ro")),
        LayerKind::Dir => unreachable!("directories are not loop-mounted"),
    };
    let mounted = mount(Some(format!("/dev/loop{n}").as_str()), target, Some(fstype), flags, data);
    mounted.map_err(|e| match (layer.kind, e) {
        (LayerKind::Squashfs, Errno::EINVAL) => err!(
            "kernel reported a bad superblock for squashfs image partition, possible corruption ({})",
            layer.path.display()
        ),
        (LayerKind::Ext3, Errno::EINVAL) => err!(
            "ext3 image partition contains a bad superblock (corrupted image ?) ({})",
            layer.path.display()
        ),
        _ => err!("cannot mount {} ({fstype}): {e}", layer.path.display()),
    })?;
    // Set after the mount (mounting resets it): with 0 a page fault decompresses only its own
    // block, not the kernel's default window of several (often the whole executable).
    if let (LayerKind::Squashfs, false, Some(kib)) =
        (layer.kind, layer.writable, grant.squashfs_readahead_kib)
    {
        if let Err(e) = sys::set_readahead(&dev, kib) {
            crate::debug(&format!("could not set the read-ahead of /dev/loop{n}: {e}"));
        }
    }
    Ok(fresh)
    // `dev` closes here: the mount holds the device, autoclear frees it at unmount.
}
