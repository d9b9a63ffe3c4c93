//! Did a test leave mounts or loop devices behind on the host?

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use strata_config::path_is_within;

/// How long leaked-looking state may take to go away (lazy unmounts, loop autoclear).
const SETTLE: Duration = Duration::from_secs(5);

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub id: u64,
    pub mount_point: PathBuf,
    pub fs_type: String,
    /// The mount source (`/dev/loop3`, `tmpfs`, ...).
    pub source: PathBuf,
}

/// An attached loop device and the file behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopDevice {
    /// `loop3`.
    pub name: String,
    /// From `/sys/block/<name>/loop/backing_file`, `" (deleted)"` suffix removed.
    pub backing_file: PathBuf,
}

/// The host's mounts and attached loop devices at one moment, and which paths a leak check
/// should look at.
#[derive(Debug, Clone)]
pub struct HostSnapshot {
    pub mounts: Vec<Mount>,
    pub loops: Vec<LoopDevice>,
    watched: Vec<PathBuf>,
}

impl HostSnapshot {
    /// Takes a snapshot watching this process's temporary directory (every install, fixture
    /// and [`crate::TestDir`]). Tests running in parallel in the same process can then look like
    /// leaks while their containers run: narrow the check with [`HostSnapshot::watching`].
    pub fn take() -> HostSnapshot {
        HostSnapshot {
            mounts: read_mounts(),
            loops: read_loops(),
            watched: crate::cleanup::process_dir().map(|d| vec![d.to_path_buf()]).unwrap_or_default(),
        }
    }

    /// Watches only these paths (for example the test's own [`crate::TestDir`] and images).
    pub fn watching<P: AsRef<Path>>(mut self, paths: impl IntoIterator<Item = P>) -> HostSnapshot {
        self.watched = paths.into_iter().map(|p| p.as_ref().to_path_buf()).collect();
        self
    }

    fn concerns(&self, path: &Path) -> bool {
        self.watched.iter().any(|w| path_is_within(path, w))
    }

    /// What is in `now` but not in `self` and concerns a watched path: mounts on a watched
    /// path or from a loop device whose file is watched, and loop devices of watched files.
    fn new_in(&self, now: &HostSnapshot) -> (Vec<Mount>, Vec<LoopDevice>) {
        let loops: Vec<LoopDevice> = now
            .loops
            .iter()
            .filter(|l| !self.loops.contains(l) && self.concerns(&l.backing_file))
            .cloned()
            .collect();
        let watched_loop = |source: &Path| {
            now.loops
                .iter()
                .any(|l| self.concerns(&l.backing_file) && source == Path::new("/dev").join(&l.name))
        };
        let mounts = now
            .mounts
            .iter()
            .filter(|m| !self.mounts.iter().any(|b| b.id == m.id))
            .filter(|m| self.concerns(&m.mount_point) || watched_loop(&m.source))
            .cloned()
            .collect();
        (mounts, loops)
    }
}

/// Panics if, after a settle time of up to 5 s, the host has mounts or loop devices that were
/// not there at `before` and concern the paths it watches.
#[track_caller]
pub fn assert_no_leak(before: &HostSnapshot) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let now = HostSnapshot::take();
        let (mounts, loops) = before.new_in(&now);
        if mounts.is_empty() && loops.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            let mut report = String::from("leaked on the host:\n");
            for m in &mounts {
                report.push_str(&format!(
                    "  mount {} on {} type {}\n",
                    m.source.display(),
                    m.mount_point.display(),
                    m.fs_type
                ));
            }
            for l in &loops {
                report.push_str(&format!("  /dev/{} attached to {}\n", l.name, l.backing_file.display()));
            }
            panic!("{report}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// `/proc/self/mountinfo`, parsed.
pub(crate) fn read_mounts() -> Vec<Mount> {
    let text = fs::read("/proc/self/mountinfo").unwrap_or_default();
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            let id = std::str::from_utf8(fields.first()?).ok()?.parse().ok()?;
            let mount_point = PathBuf::from(unescape(fields.get(4)?));
            // Optional fields end with "-", then fs type and source.
            let dash = fields.iter().position(|f| *f == b"-")?;
            let fs_type = String::from_utf8_lossy(fields.get(dash + 1)?).into_owned();
            let source = PathBuf::from(unescape(fields.get(dash + 2)?));
            Some(Mount { id, mount_point, fs_type, source })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape(field: &[u8]) -> OsString {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    OsString::from_vec(out)
}

/// Attached loop devices, from `/sys/block/loop*/loop/backing_file`.
pub(crate) fn read_loops() -> Vec<LoopDevice> {
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut loops: Vec<LoopDevice> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if !name.starts_with("loop") {
                return None;
            }
            let raw = fs::read(e.path().join("loop/backing_file")).ok()?;
            let raw = raw.strip_suffix(b"\n").unwrap_or(&raw);
            let raw = raw.strip_suffix(b" (deleted)").unwrap_or(raw);
            Some(LoopDevice { name, backing_file: PathBuf::from(std::ffi::OsStr::from_bytes(raw)) })
        })
        .collect();
    loops.sort_by(|a, b| a.name.cmp(&b.name));
    loops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_fields() {
        assert_eq!(unescape(br"/a\040b\011c\134d"), OsString::from("/a b\tc\\d"));
        assert_eq!(unescape(br"/plain"), OsString::from("/plain"));
        assert_eq!(unescape(br"/odd\04"), OsString::from(r"/odd\04"));
    }

    #[test]
    fn reads_this_process_mounts() {
        let mounts = read_mounts();
        assert!(mounts.iter().any(|m| m.mount_point == Path::new("/")));
    }

    fn snapshot(mounts: Vec<Mount>, loops: Vec<LoopDevice>, watched: &str) -> HostSnapshot {
        HostSnapshot { mounts, loops, watched: vec![PathBuf::from(watched)] }
    }

    fn mount(id: u64, on: &str, source: &str) -> Mount {
        Mount { id, mount_point: on.into(), fs_type: "ext3".into(), source: source.into() }
    }

    fn lo(name: &str, file: &str) -> LoopDevice {
        LoopDevice { name: name.into(), backing_file: file.into() }
    }

    #[test]
    fn only_new_state_on_watched_paths_counts() {
        let before = snapshot(vec![mount(1, "/", "/dev/sda1")], vec![lo("loop0", "/x.img")], "/tmp/t");
        let after = snapshot(
            vec![
                mount(1, "/", "/dev/sda1"),
                mount(2, "/tmp/t/mnt", "tmpfs"),
                mount(3, "/elsewhere", "/dev/loop1"),
                mount(4, "/unrelated", "/dev/loop2"),
                mount(5, "/tmp/t2/mnt", "tmpfs"),
            ],
            vec![lo("loop0", "/x.img"), lo("loop1", "/tmp/t/ov.img"), lo("loop2", "/other.img")],
            "/tmp/t",
        );
        let (mounts, loops) = before.new_in(&after);
        assert_eq!(mounts.iter().map(|m| m.id).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(loops, vec![lo("loop1", "/tmp/t/ov.img")]);
    }
}
