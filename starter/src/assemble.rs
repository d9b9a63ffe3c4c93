//! Build the container's root in the session: loop devices, image mounts, the overlay, and
//! every mount inside it, each destination resolved inside the new root by fd.

use crate::caller::Caller;
use crate::error::{Context, Result};
use crate::grant::{Grant, GrantedLayer, Writable};
use crate::plan::{DevMode, LayerKind};
use crate::session::Session;
use crate::{bail, err, identity, sys};
use libc::{MOUNT_ATTR_NODEV as NODEV, MOUNT_ATTR_NOEXEC as NOEXEC, MOUNT_ATTR_NOSUID as NOSUID};
use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fstat, FileStat, SFlag};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// How many times to retry when another container takes the free loop device first.
const LOOP_RETRIES: usize = 128;

/// The assembled root, ready for `pivot_root`.
pub struct Root {
    pub path: PathBuf,
}

struct Mount {
    dest: String,
    is_dir: bool,
    /// A detached mount tree (bind clone or new filesystem instance).
    tree: OwnedFd,
    /// Missing destination: fatal (user binds) or a warning (standard mounts).
    required: bool,
}

fn dir_o_path(path: &Path) -> Result<OwnedFd> {
    sys::open_path(path, libc::O_PATH | libc::O_DIRECTORY)
        .context(|| format!("cannot open {}", path.display()))
}

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

/// Mount one image layer at `target`.
fn mount_image(control: &OwnedFd, grant: &Grant, layer: &GrantedLayer, target: &Path) -> Result<()> {
    let shared = if grant.shared_loop_devices && layer.kind == LayerKind::Squashfs && !layer.writable {
        find_shared_loop(grant.fd(layer.fd), layer, grant.max_loop_devices)
    } else {
        None
    };
    let (n, _dev) = match shared {
        Some(found) => found,
        None => attach_loop(control, grant.fd(layer.fd), layer, grant.max_loop_devices)?,
    };
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
    mount(Some(format!("/dev/loop{n}").as_str()), target, Some(fstype), flags, data).map_err(|e| {
        match (layer.kind, e) {
            (LayerKind::Squashfs, Errno::EINVAL) => err!(
                "kernel reported a bad superblock for squashfs image partition, possible corruption ({})",
                layer.path.display()
            ),
            (LayerKind::Ext3, Errno::EINVAL) => err!(
                "ext3 image partition contains a bad superblock (corrupted image ?) ({})",
                layer.path.display()
            ),
            _ => err!("cannot mount {} ({fstype}): {e}", layer.path.display()),
        }
    })
    // `_dev` closes here: the mount holds the device, autoclear frees it at unmount.
}

/// `upper` and `work` of the writable layer: real directories owned by the caller, created
/// (owned by the caller) when missing. Returned as O_PATH fds; the overlay gets their
/// `/proc/self/fd` paths, so nothing is resolved by name again.
fn upper_work(layer_root: &OwnedFd, shown: &str, caller: &Caller) -> Result<[OwnedFd; 2]> {
    let open = |name: &str| -> Result<OwnedFd> {
        match sys::open_at(layer_root, name, libc::O_PATH | libc::O_DIRECTORY, 0) {
            Ok(fd) => Ok(fd),
            Err(Errno::ENOENT) => {
                nix::sys::stat::mkdirat(
                    Some(layer_root.as_raw_fd()),
                    name,
                    nix::sys::stat::Mode::from_bits_truncate(0o755),
                )
                .context(|| format!("setup of overlay {name} dir failed: failed to create {shown}/{name} directory"))?;
                nix::unistd::fchownat(
                    Some(layer_root.as_raw_fd()),
                    name,
                    Some(caller.uid),
                    Some(caller.gid),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .context(|| format!("cannot give {shown}/{name} to the caller"))?;
                sys::open_at(layer_root, name, libc::O_PATH | libc::O_DIRECTORY, 0)
                    .context(|| format!("cannot open {shown}/{name}"))
            }
            Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => bail!(
                "setup of overlay {name} dir failed: {shown}/{name} is not a directory (symbolic links are refused)"
            ),
            Err(e) => bail!("setup of overlay {name} dir failed: {shown}/{name}: {e}"),
        }
    };
    let upper = open("upper")?;
    let work = open("work")?;
    for (fd, name) in [(&upper, "upper"), (&work, "work")] {
        let st = fstat(fd.as_raw_fd()).context(|| format!("cannot inspect {shown}/{name}"))?;
        if !caller.is_root() && st.st_uid != caller.uid.as_raw() {
            bail!(
                "setup of overlay {name} dir failed: {shown}/{name} is owned by uid {}, not by you (uid {}); \
                 use the overlay read-only with ':ro' or recreate it with 'strata overlay create'",
                st.st_uid,
                caller.uid
            );
        }
    }
    Ok([upper, work])
}

fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// overlayfs option values escape ',' ':' and '\'.
fn escape(p: &str) -> String {
    p.replace('\\', "\\\\").replace(',', "\\,").replace(':', "\\:")
}

/// The mount points the container needs: (destination, is_dir).
fn mount_points(grant: &Grant) -> Vec<(String, bool)> {
    let mut v = Vec::new();
    if grant.mounts.proc {
        v.push(("/proc".to_string(), true));
    }
    if grant.mounts.sys {
        v.push(("/sys".to_string(), true));
    }
    if grant.mounts.dev != DevMode::None {
        v.push(("/dev".to_string(), true));
    }
    if grant.mounts.tmp_tmpfs {
        v.push(("/tmp".to_string(), true));
        v.push(("/var/tmp".to_string(), true));
    }
    if let Some(home) = &grant.mounts.home_tmpfs {
        v.push((home.clone(), true));
    }
    for b in &grant.binds {
        v.push((b.dest.clone(), b.is_dir));
    }
    if grant.identity.is_some() {
        v.push(("/etc/passwd".to_string(), false));
        v.push(("/etc/group".to_string(), false));
    }
    v
}

/// The topmost layer entry at `path` (symlinks followed inside each layer), with its path
/// inside that layer after resolution; whiteouts (char device 0:0) count as absent.
fn find(roots: &[OwnedFd], path: &str) -> Option<(FileStat, String)> {
    for root in roots.iter().rev() {
        let Ok(fd) = sys::open_in_root(root, path, libc::O_PATH, 0) else {
            continue;
        };
        let Ok(st) = fstat(fd.as_raw_fd()) else {
            continue;
        };
        if is_type(&st, SFlag::S_IFCHR) && st.st_rdev == 0 {
            continue;
        }
        let link = |f: &OwnedFd| std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).ok();
        let canonical = match (link(root), link(&fd)) {
            (Some(r), Some(p)) => p
                .strip_prefix(&r)
                .map(|rel| format!("/{}", rel.display()))
                .unwrap_or_else(|_| path.to_string()),
            _ => path.to_string(),
        };
        return Some((st, canonical));
    }
    None
}

fn is_type(st: &FileStat, t: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == t
}

/// Create `rel` (a canonical path) in the stub as a directory with the mode and owner of the
/// directory the layers have there, so the merged view keeps them.
fn stub_dir(stub: &Path, roots: &[OwnedFd], rel: &str) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let mut cur = String::new();
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        cur.push('/');
        cur.push_str(c);
        let here = stub.join(&cur[1..]);
        if here.symlink_metadata().is_ok() {
            continue;
        }
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&here)
            .context(|| format!("cannot create the mount point {cur}"))?;
        if let Some((st, _)) = find(roots, &cur).filter(|(st, _)| is_type(st, SFlag::S_IFDIR)) {
            let _ = nix::unistd::chown(
                &here,
                Some(nix::unistd::Uid::from_raw(st.st_uid)),
                Some(nix::unistd::Gid::from_raw(st.st_gid)),
            );
            let _ = nix::sys::stat::fchmodat(
                None,
                &here,
                nix::sys::stat::Mode::from_bits_truncate(st.st_mode & 0o7777),
                nix::sys::stat::FchmodatFlags::NoFollowSymlink,
            );
        }
    }
    Ok(())
}

/// Fill the stub layer with the mount points that no layer has. Existing parents are followed
/// as the container will see them (a symlink in the image leads to its target, inside the
/// image), so a bind under `/link/x` with `/link -> /etc` appears at `/etc/x`.
fn build_stub(stub: &Path, roots: &[OwnedFd], points: &[(String, bool)]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    for (dest, is_dir) in points {
        if find(roots, dest).is_some() {
            continue;
        }
        let comps: Vec<&str> = dest.split('/').filter(|c| !c.is_empty()).collect();
        let mut cur = String::new();
        for (i, c) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            let cand = format!("{cur}/{c}");
            if stub.join(&cand[1..]).symlink_metadata().is_ok() {
                cur = cand;
                continue;
            }
            match find(roots, &cand) {
                Some((st, canonical)) if is_type(&st, SFlag::S_IFDIR) => cur = canonical,
                Some(_) => break, // a file in the way: the mount will report it
                None if last && !is_dir => {
                    stub_dir(stub, roots, &cur)?;
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o644)
                        .open(stub.join(&cand[1..]))
                        .context(|| format!("cannot create the mount point {cand}"))?;
                }
                None => {
                    stub_dir(stub, roots, &cand)?;
                    cur = cand;
                }
            }
        }
    }
    Ok(())
}

/// A detached clone of the tree at `fd` with `attrs` set.
fn bind_tree(fd: &OwnedFd, recursive: bool, attrs: u64) -> Result<OwnedFd> {
    let tree = sys::clone_tree(fd, recursive).context(|| "cannot clone a mount for binding".into())?;
    sys::mount_setattr(&tree, attrs, recursive).context(|| "cannot set bind mount flags".into())?;
    Ok(tree)
}

/// A minimal /dev: a tmpfs with the usual nodes bound from the host, a devpts and shm.
fn minimal_dev(root: &OwnedFd) -> Result<()> {
    let dev = sys::open_in_root(root, "/dev", libc::O_PATH | libc::O_DIRECTORY, 0)
        .context(|| "cannot open /dev in the container".into())?;
    let tmpfs = sys::new_fs("tmpfs", &[("mode", "0755"), ("size", "1m")], NOSUID | NOEXEC)
        .context(|| "cannot create the /dev tmpfs".into())?;
    sys::move_mount_to(&tmpfs, &dev).context(|| "cannot mount /dev".into())?;
    let dev = sys::open_in_root(root, "/dev", libc::O_PATH | libc::O_DIRECTORY, 0)
        .context(|| "cannot open /dev in the container".into())?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let host = sys::open_path(Path::new(&format!("/dev/{node}")), libc::O_PATH)
            .context(|| format!("cannot open /dev/{node}"))?;
        let target = sys::open_at(&dev, node, libc::O_CREAT | libc::O_WRONLY, 0o666)
            .context(|| format!("cannot create /dev/{node}"))?;
        drop(target);
        let target =
            sys::open_at(&dev, node, libc::O_PATH, 0).context(|| format!("cannot open /dev/{node}"))?;
        let tree = bind_tree(&host, false, NOSUID | NOEXEC)?;
        sys::move_mount_to(&tree, &target).context(|| format!("cannot bind /dev/{node}"))?;
    }
    for d in ["pts", "shm"] {
        nix::sys::stat::mkdirat(Some(dev.as_raw_fd()), d, nix::sys::stat::Mode::from_bits_truncate(0o755))
            .context(|| format!("cannot create /dev/{d}"))?;
    }
    let pts = sys::open_at(&dev, "pts", libc::O_PATH | libc::O_DIRECTORY, 0)
        .context(|| "cannot open /dev/pts".into())?;
    let devpts =
        sys::new_fs("devpts", &[("ptmxmode", "0666"), ("mode", "0620"), ("gid", "5")], NOSUID | NOEXEC)
            .context(|| "cannot create a devpts instance".into())?;
    sys::move_mount_to(&devpts, &pts).context(|| "cannot mount /dev/pts".into())?;
    let shm = sys::open_at(&dev, "shm", libc::O_PATH | libc::O_DIRECTORY, 0)
        .context(|| "cannot open /dev/shm".into())?;
    let shmfs = sys::new_fs("tmpfs", &[("mode", "1777")], NOSUID | NODEV)
        .context(|| "cannot create /dev/shm".into())?;
    sys::move_mount_to(&shmfs, &shm).context(|| "cannot mount /dev/shm".into())?;
    for (name, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        nix::unistd::symlinkat(target, Some(dev.as_raw_fd()), name)
            .context(|| format!("cannot create /dev/{name}"))?;
    }
    Ok(())
}

/// What must be cloned from the caller's fds before the mount namespace is unshared:
/// `open_tree` and overlayfs only accept mounts of the current namespace, and the caller's fds
/// point into the host's. Detached copies (flags already set) are attached later.
pub struct Detached {
    /// One tree per bind of the grant, in order.
    binds: Vec<OwnedFd>,
    /// One tree per directory layer, by layer index.
    dirs: Vec<Option<OwnedFd>>,
}

pub fn detach_caller_trees(grant: &Grant) -> Result<Detached> {
    let binds = grant
        .binds
        .iter()
        .map(|b| {
            let src = grant.fd(b.fd).try_clone_to_owned().context(|| format!("bind {}", b.dest))?;
            let mut attrs = NOSUID | NODEV;
            if b.readonly {
                attrs |= libc::MOUNT_ATTR_RDONLY;
            }
            bind_tree(&src, b.is_dir, attrs).context(|| format!("bind {}", b.dest))
        })
        .collect::<Result<Vec<_>>>()?;
    let dirs = grant
        .layers
        .iter()
        .map(|l| {
            if l.kind != LayerKind::Dir {
                return Ok(None);
            }
            let src =
                grant.fd(l.fd).try_clone_to_owned().context(|| format!("cannot use {}", l.path.display()))?;
            let mut attrs = NOSUID | NODEV;
            if !l.writable {
                attrs |= libc::MOUNT_ATTR_RDONLY;
            }
            bind_tree(&src, false, attrs).context(|| format!("cannot use {}", l.path.display())).map(Some)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Detached { binds, dirs })
}

impl Session {
    /// Mount every layer, the overlay, and everything inside it. Returns the final root.
    pub fn assemble(&self, grant: &Grant, caller: &Caller, detached: Detached) -> Result<Root> {
        let Detached { binds, mut dirs } = detached;
        let control = sys::open_path(Path::new("/dev/loop-control"), libc::O_RDWR)
            .context(|| "failed to find loop device: cannot open /dev/loop-control".into())?;
        // Each layer's root as an O_PATH fd, bottom to top, for existence checks.
        let mut roots: Vec<OwnedFd> = Vec::new();
        // overlayfs lowerdir entries, bottom to top.
        let mut lowers: Vec<String> = Vec::new();
        let mut upper_work_fds: Option<[OwnedFd; 2]> = None;
        let mut direct_root: Option<PathBuf> = None;
        std::fs::create_dir(self.path("layers")).context(|| "cannot create the session layout".into())?;
        for (i, layer) in grant.layers.iter().enumerate() {
            let is_upper = grant.writable == Writable::Layer(i);
            let shown = layer.path.display().to_string();
            let root: OwnedFd = match layer.kind {
                LayerKind::Dir => {
                    let target = self.path(&format!("layers/{i}"));
                    std::fs::create_dir(&target).context(|| "cannot create the session layout".into())?;
                    let tree =
                        dirs[i].take().ok_or_else(|| err!("{shown}: directory layer was not prepared"))?;
                    sys::move_mount_to(&tree, &dir_o_path(&target)?)
                        .context(|| format!("cannot mount {shown}"))?;
                    dir_o_path(&target)?
                }
                _ => {
                    let target = self.path(&format!("layers/{i}"));
                    std::fs::create_dir(&target).context(|| "cannot create the session layout".into())?;
                    mount_image(&control, grant, layer, &target)?;
                    dir_o_path(&target)?
                }
            };
            if i == 0 && (is_upper || !grant.overlay_enabled) {
                // --writable on a sandbox directory or an ext3 rootfs, or 'enable overlay = no':
                // no overlay at all, so no stub for missing mount points either.
                let target = self.path("final");
                std::fs::create_dir(&target).context(|| "cannot create the session layout".into())?;
                let attrs = if is_upper { NOSUID | NODEV } else { NOSUID | NODEV | libc::MOUNT_ATTR_RDONLY };
                let tree = bind_tree(&root, false, attrs)?;
                sys::move_mount_to(&tree, &dir_o_path(&target)?)
                    .context(|| format!("cannot mount {shown}"))?;
                direct_root = Some(target);
                roots.push(root);
                continue;
            }
            if is_upper {
                upper_work_fds = Some(upper_work(&root, &shown, caller)?);
                roots.push(
                    sys::open_at(&root, "upper", libc::O_PATH | libc::O_DIRECTORY, 0)
                        .context(|| format!("cannot open {shown}/upper"))?,
                );
                continue;
            }
            // Read-only: an overlay image contributes its upper/ (Apptainer's layout); a
            // directory its upper/ when present; the rootfs and squashfs their root.
            let contributes = if i > 0 && layer.kind != LayerKind::Squashfs {
                match sys::open_at(&root, "upper", libc::O_PATH | libc::O_DIRECTORY, 0) {
                    Ok(up) => up,
                    Err(_) if layer.kind == LayerKind::Dir => root,
                    Err(e) => bail!("{shown} has no upper directory to use as an overlay: {e}"),
                }
            } else {
                root
            };
            lowers.push(fd_path(&contributes));
            roots.push(contributes);
            if i == 0 {
                // The stub layer for missing mount points sits right above the rootfs.
                lowers.push(self.path("stub").display().to_string());
            }
        }
        drop(control);
        let final_path = match direct_root {
            Some(p) => p,
            None => {
                std::fs::create_dir(self.path("stub"))
                    .context(|| "cannot create the session layout".into())?;
                build_stub(&self.path("stub"), &roots, &mount_points(grant))?;
                if grant.writable == Writable::Tmpfs {
                    for d in ["tmpfs", "tmpfs/upper", "tmpfs/work"] {
                        std::fs::create_dir(self.path(d))
                            .context(|| "cannot create the writable tmpfs".into())?;
                    }
                    let up = self.path("tmpfs/upper");
                    nix::unistd::chown(&up, Some(caller.uid), Some(caller.gid))
                        .context(|| "cannot give the writable tmpfs to the caller".into())?;
                    upper_work_fds = Some([dir_o_path(&up)?, dir_o_path(&self.path("tmpfs/work"))?]);
                }
                let target = self.path("final");
                std::fs::create_dir(&target).context(|| "cannot create the session layout".into())?;
                let mut data = String::from("lowerdir=");
                data.push_str(&lowers.iter().rev().map(|l| escape(l)).collect::<Vec<_>>().join(":"));
                let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
                match &upper_work_fds {
                    Some([u, w]) => {
                        data.push_str(&format!(",upperdir={},workdir={}", fd_path(u), fd_path(w)))
                    }
                    None => flags |= MsFlags::MS_RDONLY,
                }
                mount(Some("strata"), &target, Some("overlay"), flags, Some(data.as_str()))
                    .context(|| format!("can't mount overlay filesystem to {}", target.display()))?;
                target
            }
        };
        drop(upper_work_fds);
        drop(roots);
        let root = dir_o_path(&final_path)?;
        self.mount_inside(grant, caller, binds, &root)?;
        Ok(Root { path: final_path })
    }

    /// proc, sys, dev, tmp, binds and the identity files, each onto a destination resolved
    /// inside `root` (symlinks cannot lead out of it).
    fn mount_inside(
        &self,
        grant: &Grant,
        caller: &Caller,
        binds: Vec<OwnedFd>,
        root: &OwnedFd,
    ) -> Result<()> {
        let mut mounts: Vec<Mount> = Vec::new();
        let fs = |t: &str, opts: &[(&str, &str)], attrs: u64| -> Result<OwnedFd> {
            sys::new_fs(t, opts, attrs).context(|| format!("cannot create a {t} filesystem"))
        };
        if grant.mounts.proc {
            mounts.push(Mount {
                dest: "/proc".into(),
                is_dir: true,
                tree: fs("proc", &[], NOSUID | NODEV | NOEXEC)?,
                required: false,
            });
        }
        if grant.mounts.sys {
            let sysfs = fs("sysfs", &[], NOSUID | NODEV | NOEXEC | libc::MOUNT_ATTR_RDONLY)?;
            mounts.push(Mount { dest: "/sys".into(), is_dir: true, tree: sysfs, required: false });
        }
        if grant.mounts.dev == DevMode::Full {
            let host_dev = dir_o_path(Path::new("/dev"))?;
            mounts.push(Mount {
                dest: "/dev".into(),
                is_dir: true,
                tree: bind_tree(&host_dev, true, NOSUID)?,
                required: false,
            });
        }
        if grant.mounts.tmp_tmpfs {
            let size = grant.session_size_mib.map(|m| format!("{m}m"));
            for d in ["/tmp", "/var/tmp"] {
                let mut opts = vec![("mode", "1777")];
                if let Some(s) = &size {
                    opts.push(("size", s.as_str()));
                }
                mounts.push(Mount {
                    dest: d.into(),
                    is_dir: true,
                    tree: fs("tmpfs", &opts, NOSUID | NODEV)?,
                    required: false,
                });
            }
        }
        if let Some(home) = &grant.mounts.home_tmpfs {
            let (uid, gid) = (caller.uid.to_string(), caller.gid.to_string());
            let mut opts = vec![("mode", "0700"), ("uid", uid.as_str()), ("gid", gid.as_str())];
            let size = grant.session_size_mib.map(|m| format!("{m}m"));
            if let Some(s) = &size {
                opts.push(("size", s.as_str()));
            }
            mounts.push(Mount {
                dest: home.clone(),
                is_dir: true,
                tree: fs("tmpfs", &opts, NOSUID | NODEV)?,
                required: false,
            });
        }
        for (b, tree) in grant.binds.iter().zip(binds) {
            mounts.push(Mount { dest: b.dest.clone(), is_dir: b.is_dir, tree, required: !b.optional });
        }
        for m in mounts {
            let kind = if m.is_dir { libc::O_DIRECTORY } else { 0 };
            let target = match sys::open_in_root(root, &m.dest, libc::O_PATH | kind, 0) {
                Ok(t) => t,
                Err(e) if m.required => {
                    bail!("destination {} doesn't exist in container ({e})", m.dest)
                }
                Err(_) => {
                    crate::warn(&format!("skipping mount of {}: it does not exist in the container", m.dest));
                    continue;
                }
            };
            sys::move_mount_to(&m.tree, &target).context(|| format!("cannot mount {}", m.dest))?;
        }
        if grant.mounts.dev == DevMode::Minimal {
            minimal_dev(root)?;
        }
        if let Some(id) = &grant.identity {
            identity::install(self, root, id)?;
        }
        Ok(())
    }
}

impl Root {
    /// Make the assembled tree `/`, and detach the host's root from this namespace.
    pub fn pivot(&self) -> Result<()> {
        nix::unistd::chdir(&self.path).context(|| "cannot enter the container root".into())?;
        nix::unistd::pivot_root(".", ".").context(|| "pivot_root failed".into())?;
        nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)
            .context(|| "cannot detach the host root".into())?;
        nix::unistd::chdir("/").context(|| "cannot enter /".into())
    }
}
