//! Where a test process keeps its files, and how everything it made is removed: at process exit
//! (an `atexit` handler, which also runs on `std::process::exit`), and, for processes that were
//! killed before they could clean up, by the next test process to start.

use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once, OnceLock};

use strata_config::path_is_within;

use crate::users;

/// Name prefix of every per-process directory in `/tmp`: `strata-e2e-<pid>`.
const DIR_PREFIX: &str = "strata-e2e-";
/// The lock file serialising user creation, sweeping and builds across test processes.
const LOCK_FILE: &str = "/tmp/strata-e2e.lock";

enum Item {
    Dir(PathBuf),
    User(String),
    Group(String),
}

static REGISTRY: Mutex<Vec<Item>> = Mutex::new(Vec::new());
static AT_EXIT: Once = Once::new();

fn register(item: Item) {
    AT_EXIT.call_once(|| {
        // SAFETY: at_exit is an `extern "C" fn()` that never unwinds (it catches panics).
        unsafe { libc::atexit(at_exit) };
    });
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).push(item);
}

pub(crate) fn register_user(name: &str) {
    register(Item::User(name.to_string()));
}

pub(crate) fn register_group(name: &str) {
    register(Item::Group(name.to_string()));
}

extern "C" fn at_exit() {
    let _ = std::panic::catch_unwind(|| {
        let items = std::mem::take(&mut *REGISTRY.lock().unwrap_or_else(|e| e.into_inner()));
        let _lock = GlobalLock::take();
        // Users before their groups, and in reverse order of creation.
        for item in items.iter().rev() {
            match item {
                Item::User(name) => users::delete_user(name),
                Item::Group(name) => users::delete_group(name),
                Item::Dir(_) => {}
            }
        }
        for item in items.iter().rev() {
            if let Item::Dir(path) = item {
                if let Err(err) = remove_tree(path) {
                    eprintln!("strata-e2e: leaving {}: {err}", path.display());
                }
            }
        }
    });
}

/// An exclusive `flock` on [`LOCK_FILE`], held until dropped. Serialises, across all test
/// processes, what must not run twice at once (useradd, sweeping, building, apt).
pub(crate) struct GlobalLock {
    _file: Option<File>,
}

impl GlobalLock {
    pub(crate) fn take() -> GlobalLock {
        GlobalLock::on(Path::new(LOCK_FILE))
    }

    pub(crate) fn on(path: &Path) -> GlobalLock {
        let file = File::options().create(true).truncate(false).write(true).open(path);
        match file {
            Ok(file) => {
                // SAFETY: flock on an fd we own; blocks until the lock is ours.
                while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
                    if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                        break;
                    }
                }
                GlobalLock { _file: Some(file) }
            }
            Err(err) => {
                eprintln!("strata-e2e: cannot lock {}: {err}", path.display());
                GlobalLock { _file: None }
            }
        }
    }
}

/// Is process `pid` alive (on this host's pid namespace)?
pub(crate) fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// The pid in a name `<prefix><digits><suffix...>`, if the name has that shape.
pub(crate) fn pid_in(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let digits: &str = &rest[..rest.bytes().take_while(u8::is_ascii_digit).count()];
    digits.parse().ok()
}

/// Removes leftovers of test processes that died without cleaning up: their directories in
/// `/tmp` and their users and groups. Runs once per process, before it makes any of its own.
pub(crate) fn sweep_once() {
    static SWEPT: Once = Once::new();
    SWEPT.call_once(|| sweep(true));
}

/// Sweeps leftovers of dead test processes now; with `own`, also those named with this
/// process's pid (left by an earlier process that had it: only right before making our own).
pub(crate) fn sweep(own: bool) {
    let _lock = GlobalLock::take();
    let me = std::process::id();
    let stale = |pid: u32| if pid == me { own } else { !pid_alive(pid) };
    if let Ok(entries) = fs::read_dir("/tmp") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            match pid_in(name, DIR_PREFIX) {
                Some(pid) if stale(pid) => {
                    let path = entry.path();
                    if let Err(err) = remove_tree(&path) {
                        eprintln!("strata-e2e: cannot sweep {}: {err}", path.display());
                    }
                }
                _ => {}
            }
        }
    }
    users::sweep_dead(&stale);
}

/// This process's directory, `/tmp/strata-e2e-<pid>` (root-owned, 0755), created on first use
/// and removed at exit. `None` unless running as root.
pub(crate) fn process_dir() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    crate::require_root()?;
    DIR.get_or_init(|| {
        sweep_once();
        let dir = PathBuf::from(format!("/tmp/{DIR_PREFIX}{}", std::process::id()));
        register(Item::Dir(dir.clone()));
        create_dir_mode(&dir, 0o755).unwrap_or_else(|err| panic!("cannot create {}: {err}", dir.display()));
        Some(dir)
    })
    .as_deref()
}

/// A new, empty, root-owned directory `<process dir>/<tag>-<n>` with the given mode.
pub(crate) fn new_dir(tag: &str, mode: u32) -> Option<PathBuf> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = process_dir()?.join(format!("{tag}-{n}"));
    create_dir_mode(&dir, mode).unwrap_or_else(|err| panic!("cannot create {}: {err}", dir.display()));
    Some(dir)
}

/// `mkdir` then `chmod` (so the umask does not matter).
pub(crate) fn create_dir_mode(dir: &Path, mode: u32) -> io::Result<()> {
    fs::create_dir(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
}

/// The mount points listed in `/proc/self/mountinfo`.
pub(crate) fn mount_points() -> Vec<PathBuf> {
    crate::leaks::read_mounts().into_iter().map(|m| m.mount_point).collect()
}

/// Removes a directory tree, but never through a mount point: anything mounted below `path`
/// is detached first, and if something stays mounted the tree is left alone (`remove_dir_all`
/// would otherwise delete the files of whatever is mounted there).
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    let under = |mounts: Vec<PathBuf>| -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = mounts.into_iter().filter(|m| path_is_within(m, path)).collect();
        // Deepest first.
        found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        found
    };
    for mount in under(mount_points()) {
        let Ok(c) = std::ffi::CString::new(mount.as_os_str().as_bytes()) else {
            continue;
        };
        // SAFETY: umount2 with a valid NUL-terminated path; failure is checked below.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    let left = under(mount_points());
    if !left.is_empty() {
        return Err(io::Error::other(format!(
            "still mounted below it: {}",
            left.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    fs::remove_dir_all(path)
}

/// Runs a setup command (as the current user, root), quietly; panics with its output if it
/// fails, since a test cannot go on without what it makes.
pub(crate) fn must_run(program: &str, args: &[&std::ffi::OsStr]) {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
    if !out.status.success() {
        panic!(
            "{program} {:?} failed ({}):\n{}{}",
            args,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
