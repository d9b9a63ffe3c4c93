//! Build the container's root in the session: loop devices, image mounts, the overlay, and
//! every mount inside it, each destination resolved inside the new root by fd.

use crate::caller::Caller;
use crate::error::{Context, Result};
use crate::grant::{Grant, Writable};
use crate::plan::{DevMode, LayerKind};
use crate::session::Session;
use crate::{bail, err, identity, sys};
use libc::{MOUNT_ATTR_NODEV as NODEV, MOUNT_ATTR_NOEXEC as NOEXEC, MOUNT_ATTR_NOSUID as NOSUID};
use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::fstat;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The assembled root, ready for `pivot_root`.
pub struct Root {
    pub path: PathBuf,
    /// The keeper's short-lived intermediate process, to reap before the exec.
    pub keeper: Option<nix::unistd::Pid>,
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

/// A detached clone of the tree at `fd` with `attrs` set.
pub fn bind_tree(fd: &OwnedFd, recursive: bool, attrs: u64) -> Result<OwnedFd> {
    let tree = sys::clone_tree(fd, recursive).context(|| "cannot clone a mount for binding".into())?;
    sys::mount_setattr(&tree, attrs, recursive).context(|| "cannot set bind mount flags".into())?;
    Ok(tree)
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
        let mut fresh_squashfs = false;
        let mut keeper = None;
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
                    let fresh = crate::loops::mount_image(&control, grant, layer, &target)?;
                    fresh_squashfs = fresh && layer.kind == LayerKind::Squashfs;
                    dir_o_path(&target)?
                }
            };
            if i == 0 && !grant.namespaces.pid {
                // Without a pid namespace, the teardown keeper (in one, the init outlives the
                // payload anyway, and its process table stays the init and the payload).
                let paths: &[String] = if fresh_squashfs { &grant.process.prefetch } else { &[] };
                keeper = crate::keeper::spawn(caller, &root, paths);
            }
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
        // With nothing above the rootfs but the stub (and at most a throw-away tmpfs upper), the
        // caller's passwd/group are stub files instead of two bind mounts.
        let identity_in_stub = direct_root.is_none()
            && grant.layers.len() == 1
            && matches!(grant.writable, Writable::None | Writable::Tmpfs);
        let final_path = match direct_root {
            Some(p) => p,
            None => {
                std::fs::create_dir(self.path("stub"))
                    .context(|| "cannot create the session layout".into())?;
                if identity_in_stub {
                    if let Some(id) = &grant.identity {
                        crate::stub::identity_files(&self.path("stub"), &roots, id)?;
                    }
                }
                let points = crate::stub::mount_points(grant, identity_in_stub);
                crate::stub::build_stub(&self.path("stub"), &roots, &points)?;
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
        self.mount_inside(grant, caller, binds, &root, identity_in_stub)?;
        Ok(Root { path: final_path, keeper })
    }

    /// proc, sys, dev, tmp, binds and the identity files, each onto a destination resolved
    /// inside `root` (symlinks cannot lead out of it).
    fn mount_inside(
        &self,
        grant: &Grant,
        caller: &Caller,
        binds: Vec<OwnedFd>,
        root: &OwnedFd,
        identity_in_stub: bool,
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
            crate::dev::minimal_dev(root)?;
        }
        match &grant.identity {
            Some(id) if !identity_in_stub => identity::install(self, root, id)?,
            _ => {}
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
