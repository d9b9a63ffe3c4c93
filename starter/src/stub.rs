//! The stub layer: the mount points the container needs and no image layer has, created in
//! the session tmpfs just above the rootfs.

use crate::error::{Context, Result};
use crate::grant::Grant;
use crate::plan::DevMode;
use crate::sys;
use nix::sys::stat::{fstat, FileStat, SFlag};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// The mount points the container needs: (destination, is_dir).
pub fn mount_points(grant: &Grant, identity_in_stub: bool) -> Vec<(String, bool)> {
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
    if grant.identity.is_some() && !identity_in_stub {
        v.push(("/etc/passwd".to_string(), false));
        v.push(("/etc/group".to_string(), false));
    }
    v
}

/// The topmost layer entry at `path` (symlinks followed inside each layer): the layer's root,
/// the entry and its status; whiteouts (char device 0:0) count as absent.
fn top<'a>(roots: &'a [OwnedFd], path: &str) -> Option<(&'a OwnedFd, OwnedFd, FileStat)> {
    roots.iter().rev().find_map(|root| {
        let fd = sys::open_in_root(root, path, libc::O_PATH, 0).ok()?;
        let st = fstat(fd.as_raw_fd()).ok()?;
        let whiteout = is_type(&st, SFlag::S_IFCHR) && st.st_rdev == 0;
        (!whiteout).then_some((root, fd, st))
    })
}

/// [`top`], with the entry's path inside its layer after resolution.
fn find(roots: &[OwnedFd], path: &str) -> Option<(FileStat, String)> {
    let (root, fd, st) = top(roots, path)?;
    let link = |f: &OwnedFd| std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).ok();
    let canonical = match (link(root), link(&fd)) {
        (Some(r), Some(p)) => {
            p.strip_prefix(&r).map(|rel| format!("/{}", rel.display())).unwrap_or_else(|_| path.to_string())
        }
        _ => path.to_string(),
    };
    Some((st, canonical))
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
        if let Some((_, _, st)) = top(roots, &cur).filter(|(_, _, st)| is_type(st, SFlag::S_IFDIR)) {
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
pub fn build_stub(stub: &Path, roots: &[OwnedFd], points: &[(String, bool)]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    for (dest, is_dir) in points {
        if top(roots, dest).is_some() {
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

/// The caller's `/etc/passwd` and `/etc/group` as files of the stub layer, which shadows the
/// rootfs: no bind mounts (for a container whose only layer is the rootfs and whose writes, if
/// any, go to a throw-away tmpfs).
pub fn identity_files(stub: &Path, roots: &[OwnedFd], id: &crate::plan::Identity) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let rootfs = &roots[0];
    let passwd =
        crate::identity::merge_passwd(&crate::identity::read_image_file(rootfs, "/etc/passwd"), &id.passwd);
    let group =
        crate::identity::merge_group(&crate::identity::read_image_file(rootfs, "/etc/group"), &id.group);
    stub_dir(stub, roots, "/etc")?;
    for (name, text) in [("passwd", passwd), ("group", group)] {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(stub.join("etc").join(name))
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
            .context(|| format!("cannot write the container's /etc/{name}"))?;
    }
    Ok(())
}
