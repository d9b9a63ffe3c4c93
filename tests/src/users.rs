//! Real, unprivileged test users, and directories they own.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::cleanup::{self, GlobalLock};

/// The GECOS field of every test user: how the sweep tells them from real users.
const MARKER: &str = "strata-e2e test user";

/// A user created for this test process with `useradd`, removed at exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestUser {
    /// `st<pid>o` (ordinary) or `st<pid>h` (high ids).
    pub name: String,
    pub uid: u32,
    /// The primary group, named like the user.
    pub gid: u32,
    /// Every group the user is in, as `initgroups` would set them: the primary group and the
    /// shared supplementary group `st<pid>g` (gid above 65535).
    pub groups: Vec<u32>,
    /// `/home/<name>`, owned by the user.
    pub home: PathBuf,
}

struct Users {
    ordinary: TestUser,
    high: TestUser,
}

impl TestUser {
    /// An ordinary user: uid and gid between 20000 and 60000.
    pub fn ordinary() -> Option<&'static TestUser> {
        users().map(|u| &u.ordinary)
    }

    /// A user whose uid and gid are both above 65535 (from 100000): the 16-bit truncation
    /// cases.
    pub fn high() -> Option<&'static TestUser> {
        users().map(|u| &u.high)
    }

    /// The name of the supplementary group both test users are in, and its gid.
    pub fn shared_group() -> Option<(String, u32)> {
        let users = users()?;
        let gid = *users.ordinary.groups.last()?;
        Some((group_name('g'), gid))
    }
}

fn users() -> Option<&'static Users> {
    static USERS: OnceLock<Option<Users>> = OnceLock::new();
    crate::require_root()?;
    USERS.get_or_init(|| Some(create_users())).as_ref()
}

fn group_name(kind: char) -> String {
    format!("st{}{kind}", std::process::id())
}

/// The ids in use in a passwd- or group-format file (field 3).
fn ids_in(file: &str) -> HashSet<u32> {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect()
}

/// The first id from `start` (wrapping within `range`) that is free as a uid and as a gid.
fn free_id(range: std::ops::Range<u32>, start: u32, taken: &HashSet<u32>) -> u32 {
    let len = range.end - range.start;
    (0..len)
        .map(|i| range.start + (start + i) % len)
        .find(|id| !taken.contains(id))
        .unwrap_or_else(|| panic!("no free id in {range:?}"))
}

fn create_users() -> Users {
    cleanup::sweep_once();
    let _lock = GlobalLock::take();
    let pid = std::process::id();
    let mut taken = ids_in("/etc/passwd");
    taken.extend(ids_in("/etc/group"));

    // The shared supplementary group, above 65535.
    let shared_gid = free_id(100_000..1_000_000, pid % 900_000, &taken);
    taken.insert(shared_gid);
    let shared = group_name('g');
    remove_stale(&shared, false);
    groupadd(&shared, shared_gid);
    cleanup::register_group(&shared);

    let ordinary_id = free_id(20_000..60_000, pid % 40_000, &taken);
    taken.insert(ordinary_id);
    let high_id = free_id(100_000..1_000_000, (pid + 7) % 900_000, &taken);

    let make = |kind: char, id: u32| {
        let name = group_name(kind);
        remove_stale(&name, true);
        let home = PathBuf::from("/home").join(&name);
        let _ = fs::create_dir_all("/home");
        groupadd(&name, id);
        cleanup::register_group(&name);
        cleanup::must_run(
            "useradd",
            &[
                "-u".as_ref(),
                id.to_string().as_ref(),
                "-g".as_ref(),
                id.to_string().as_ref(),
                "-G".as_ref(),
                shared.as_ref(),
                "-N".as_ref(),
                "-l".as_ref(),
                "-m".as_ref(),
                "-d".as_ref(),
                home.as_os_str(),
                "-s".as_ref(),
                "/bin/sh".as_ref(),
                "-c".as_ref(),
                MARKER.as_ref(),
                name.as_ref(),
            ],
        );
        cleanup::register_user(&name);
        TestUser { name, uid: id, gid: id, groups: vec![id, shared_gid], home }
    };
    let ordinary = make('o', ordinary_id);
    let high = make('h', high_id);
    Users { ordinary, high }
}

fn groupadd(name: &str, gid: u32) {
    cleanup::must_run("groupadd", &["-g".as_ref(), gid.to_string().as_ref(), name.as_ref()]);
}

/// A user or group named with our own pid can only be left over from an earlier process that
/// had the same pid: remove it before making ours.
fn remove_stale(name: &str, user: bool) {
    if user && entry_exists("/etc/passwd", name) {
        delete_user(name);
    }
    if entry_exists("/etc/group", name) {
        delete_group(name);
    }
}

fn entry_exists(file: &str, name: &str) -> bool {
    fs::read_to_string(file).unwrap_or_default().lines().any(|l| l.split(':').next() == Some(name))
}

fn quiet(program: &str, args: &[&str]) {
    let _ = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

pub(crate) fn delete_user(name: &str) {
    // Processes left running as the user would make userdel fail.
    quiet("pkill", &["-KILL", "-U", name]);
    quiet("userdel", &["-r", "-f", name]);
}

pub(crate) fn delete_group(name: &str) {
    quiet("groupdel", &[name]);
}

/// Deletes the test users and groups whose pid `stale` says is gone. The caller holds the
/// global lock.
pub(crate) fn sweep_dead(stale: &dyn Fn(u32) -> bool) {
    let ours = |name: &str| match cleanup::pid_in(name, "st") {
        // st<pid> and one letter of o, h, g: nothing else.
        Some(pid) => name.len() == format!("st{pid}o").len() && name.ends_with(['o', 'h', 'g']) && stale(pid),
        None => false,
    };
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if let [name, _, _, _, gecos, ..] = fields[..] {
            if gecos == MARKER && ours(name) {
                delete_user(name);
            }
        }
    }
    let group = fs::read_to_string("/etc/group").unwrap_or_default();
    for line in group.lines() {
        let Some(name) = line.split(':').next() else {
            continue;
        };
        if ours(name) && !entry_exists("/etc/passwd", name) {
            delete_group(name);
        }
    }
}

/// A directory for one test under this process's temp dir, removed when dropped (and at exit).
/// Root-owned or owned by a test user; mode 0755 either way, so every test user can read it.
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
    owner: Option<(u32, u32)>,
}

impl TestDir {
    /// A root-owned directory.
    pub fn new() -> Option<TestDir> {
        let path = cleanup::new_dir("dir", 0o755)?;
        Some(TestDir { path, owner: None })
    }

    /// A directory owned by `user` (uid and primary gid).
    pub fn owned_by(user: &TestUser) -> Option<TestDir> {
        let path = cleanup::new_dir("dir", 0o755)?;
        chown(&path, Some(user.uid), Some(user.gid))
            .unwrap_or_else(|err| panic!("cannot chown {}: {err}", path.display()));
        Some(TestDir { path, owner: Some((user.uid, user.gid)) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// Copies `src` (a file or a directory tree, with `cp -a`) to `<dir>/<name>` and gives the
    /// copy to the directory's owner, writable by the owner like any file of one's own (reference
    /// files in the shared test data may be read-only). Returns the copy's path.
    pub fn copy_in(&self, src: &Path, name: &str) -> PathBuf {
        let dst = self.path.join(name);
        cleanup::must_run("cp", &["-a".as_ref(), src.as_os_str(), dst.as_os_str()]);
        cleanup::must_run("chmod", &["-R".as_ref(), "u+w".as_ref(), dst.as_os_str()]);
        if let Some((uid, gid)) = self.owner {
            cleanup::must_run(
                "chown",
                &["-R".as_ref(), "-h".as_ref(), OsStr::new(&format!("{uid}:{gid}")), dst.as_os_str()],
            );
        }
        dst
    }

    /// Writes a file into the directory, owned like the directory, with `mode`.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>, mode: u32) -> PathBuf {
        let dst = self.path.join(name);
        fs::write(&dst, contents)
            .and_then(|()| fs::set_permissions(&dst, fs::Permissions::from_mode(mode)))
            .unwrap_or_else(|err| panic!("cannot write {}: {err}", dst.display()));
        if let Some((uid, gid)) = self.owner {
            chown(&dst, Some(uid), Some(gid))
                .unwrap_or_else(|err| panic!("cannot chown {}: {err}", dst.display()));
        }
        dst
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if let Err(err) = cleanup::remove_tree(&self.path) {
            eprintln!("strata-e2e: leaving {}: {err}", self.path.display());
        }
    }
}
