//! Helpers shared by unit tests: reference test data, external tools, running a test as an
//! unprivileged user.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Skip the current test with a printed reason.
macro_rules! skip {
    ($($t:tt)*) => {{
        eprintln!("SKIPPED: {}", format!($($t)*));
        return;
    }};
}
pub(crate) use skip;

/// The shared reference data directory: `$STRATA_SHARED_DIR` if set, else the first
/// `<ancestor>/shared` of the crate that holds `testdata` (`<workspace root>/../shared` for the
/// main checkout; a git worktree sits deeper). `Err` with the reason if it is absent.
pub(crate) fn shared_dir() -> Result<PathBuf, String> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let found = match std::env::var_os("STRATA_SHARED_DIR") {
        Some(d) => Some(PathBuf::from(d)),
        None => crate_dir.ancestors().skip(1).map(|a| a.join("shared")).find(|p| p.join("testdata").is_dir()),
    };
    match found {
        Some(dir) if dir.join("testdata").is_dir() => Ok(dir),
        _ => Err(format!(
            "reference data (shared/testdata) not found beside {} (set STRATA_SHARED_DIR)",
            crate_dir.display()
        )),
    }
}

/// The full path of an external tool, looked up in PATH and the sbin directories.
pub(crate) fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

/// Run a command, panicking with its output if it fails.
pub(crate) fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An empty file of `mib` MiB formatted with `mkfs.<fs>` (ext2, ext3, ext4); `None` if the tool
/// is missing.
pub(crate) fn mkfs(fs: &str, path: &Path, mib: u64) -> Option<()> {
    let mkfs = tool(&format!("mkfs.{fs}"))?;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(mib << 20).unwrap();
    drop(f);
    run(Command::new(mkfs).arg("-q").arg("-F").arg(path));
    Some(())
}

/// A squashfs of `src` at `dest`; `None` if mksquashfs is missing.
pub(crate) fn mksquashfs(src: &Path, dest: &Path) -> Option<()> {
    let mksquashfs = tool("mksquashfs")?;
    run(Command::new(mksquashfs).arg(src).arg(dest).args([
        "-noappend",
        "-quiet",
        "-no-progress",
        "-all-root",
    ]));
    Some(())
}

/// The environment variable that tells a re-executed test binary it runs as the unprivileged
/// half of a test.
pub(crate) const AS_USER_ENV: &str = "STRATA_TEST_AS_USER";

/// True inside the unprivileged half of a test run by [`rerun_as_user`].
pub(crate) fn running_as_user() -> bool {
    std::env::var_os(AS_USER_ENV).is_some()
}

/// Re-run the test named `test` (full path, e.g. `image::tests::foo`) as uid/gid `id` with no
/// supplementary groups, passing `env`. Returns the child's combined output, or an `Err` with the
/// reason it cannot be done (not root, or no setpriv).
pub(crate) fn rerun_as_user(
    test: &str,
    id: u32,
    env: &[(&str, &str)],
) -> Result<std::process::Output, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root to switch to an unprivileged user".into());
    }
    let setpriv = tool("setpriv").ok_or("setpriv (util-linux) is not installed")?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(setpriv);
    cmd.arg(format!("--reuid={id}"))
        .arg(format!("--regid={id}"))
        .arg("--clear-groups")
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(AS_USER_ENV, "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().map_err(|e| e.to_string())
}

/// Make a directory (and the files in it) reachable by an unprivileged test user.
pub(crate) fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}
