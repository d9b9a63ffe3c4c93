//! The caller's `/etc/passwd` and `/etc/group` entries inside the container: the image's own
//! files (read inside the new root, size-capped) plus the caller's lines, bound read-only.

use crate::error::{Context, Result};
use crate::plan::Identity;
use crate::session::Session;
use crate::sys;
use nix::sys::stat::{fstat, SFlag};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

/// An image's passwd or group file larger than this is not read (it is replaced).
const MAX_DB_BYTES: u64 = 4 << 20;

/// The image's file, or empty when it is missing, not a regular file, or too large.
pub fn read_image_file(root: &OwnedFd, path: &str) -> String {
    let Ok(fd) = sys::open_in_root(root, path, libc::O_RDONLY | libc::O_NONBLOCK, 0) else {
        return String::new();
    };
    match fstat(fd.as_raw_fd()) {
        // Only a world-readable file: root must not read for the caller what it cannot.
        Ok(st)
            if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
                && st.st_mode & 0o004 != 0 => {}
        _ => return String::new(),
    }
    let mut text = String::new();
    let _ = std::fs::File::from(fd).take(MAX_DB_BYTES).read_to_string(&mut text);
    text
}

/// Replace any line for the same name or uid with `entry`.
pub fn merge_passwd(image: &str, entry: &str) -> String {
    let field = |l: &str, i: usize| l.split(':').nth(i).map(str::to_string);
    let (name, uid) = (field(entry, 0), field(entry, 2));
    let mut out: String = image
        .lines()
        .filter(|l| field(l, 0) != name && field(l, 2) != uid)
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(entry);
    out.push('\n');
    out
}

/// Add the caller to their groups: an image group with the same gid gets the caller (the
/// last field of the entry) added to its members; a gid the image lacks gets the entry itself.
pub fn merge_group(image: &str, entries: &[String]) -> String {
    let field = |l: &str, i: usize| l.split(':').nth(i).map(str::to_string);
    let mut lines: Vec<String> = image.lines().map(str::to_string).collect();
    for e in entries {
        let (gid, user) = (field(e, 2), field(e, 3).unwrap_or_default());
        match lines.iter_mut().find(|l| !l.starts_with('#') && field(l, 2) == gid) {
            Some(line) => {
                let f: Vec<&str> = line.splitn(4, ':').collect();
                let members = f.get(3).copied().unwrap_or("");
                let mut list: Vec<&str> = members.split(',').filter(|m| !m.is_empty()).collect();
                if !user.is_empty() && !list.contains(&user.as_str()) {
                    list.push(&user);
                }
                *line = format!(
                    "{}:{}:{}:{}",
                    f[0],
                    f.get(1).unwrap_or(&"x"),
                    f.get(2).unwrap_or(&""),
                    list.join(",")
                );
            }
            None => lines.push(e.clone()),
        }
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn bind_file(session: &Session, root: &OwnedFd, name: &str, content: &str) -> Result<()> {
    let path = session.path(&format!("identity-{name}"));
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(content.as_bytes()))
        .context(|| format!("cannot write the container's /etc/{name}"))?;
    let src = sys::open_path(&path, libc::O_PATH).context(|| format!("cannot open {}", path.display()))?;
    let dest = format!("/etc/{name}");
    let Ok(target) = sys::open_in_root(root, &dest, libc::O_PATH, 0) else {
        crate::warn(&format!("skipping {dest}: it does not exist in the container"));
        return Ok(());
    };
    if SFlag::from_bits_truncate(fstat(target.as_raw_fd()).map(|s| s.st_mode).unwrap_or(0)) & SFlag::S_IFMT
        != SFlag::S_IFREG
    {
        crate::warn(&format!("skipping {dest}: it is not a regular file in the container"));
        return Ok(());
    }
    let tree = sys::clone_tree(&src, false).context(|| format!("cannot bind {dest}"))?;
    sys::mount_setattr(
        &tree,
        libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC,
        false,
    )
    .context(|| format!("cannot bind {dest}"))?;
    sys::move_mount_to(&tree, &target).context(|| format!("cannot bind {dest}"))
}

pub fn install(session: &Session, root: &OwnedFd, id: &Identity) -> Result<()> {
    let passwd = merge_passwd(&read_image_file(root, "/etc/passwd"), &id.passwd);
    let group = merge_group(&read_image_file(root, "/etc/group"), &id.group);
    bind_file(session, root, "passwd", &passwd)?;
    bind_file(session, root, "group", &group)
}
