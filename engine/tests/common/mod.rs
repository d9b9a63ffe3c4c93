//! Helpers for the end-to-end `strata sif` tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "../../src/sif/testdata.rs"]
mod testdata_path;
#[allow(unused_imports)]
pub use testdata_path::testdata;

/// Run the built `strata` with these arguments.
pub fn strata<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_strata")).args(args).output().expect("run strata")
}

/// Run and require success; returns stdout.
pub fn ok<I, S>(args: I) -> Vec<u8>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = strata(args);
    assert!(out.status.success(), "strata failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Run and require the one-line `FATAL:` failure with exit 255; returns the message.
pub fn fatal<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = strata(args);
    let err = String::from_utf8(out.stderr).expect("utf-8 stderr");
    assert_eq!(out.status.code(), Some(255), "stderr: {err}");
    assert!(err.starts_with("FATAL:   "), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "stderr: {err}");
    assert!(!err.contains("panicked"), "stderr: {err}");
    err["FATAL:   ".len()..].trim_end().to_string()
}

/// Copy a reference file into `dir`, writable.
pub fn copy_into(src: &Path, dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    std::fs::copy(src, &dst).expect("copy");
    let mut perm = std::fs::metadata(&dst).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o644);
    std::fs::set_permissions(&dst, perm).unwrap();
    dst
}

/// Skip the current test with a printed reason.
#[macro_export]
macro_rules! skip {
    ($($t:tt)*) => {{
        eprintln!("SKIPPED: {}", format!($($t)*));
        return;
    }};
}

/// Run the built `strata` with extra environment variables.
pub fn strata_env<I, S>(args: I, env: &[(&str, &str)]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run strata")
}

/// The one `FATAL:` line of a failed run (exit 255), without its prefix.
pub fn fatal_of(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(255), "stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("FATAL:")).collect();
    assert_eq!(lines.len(), 1, "stderr: {err}");
    assert!(!err.contains("panicked"), "stderr: {err}");
    lines[0]["FATAL:   ".len()..].trim_end().to_string()
}

/// Require success; returns stderr (messages) for inspection.
pub fn success(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "strata failed: {err}");
    err
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The full path of an external tool, looked up in PATH and the sbin directories.
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

/// Run a tool and require success; returns stdout.
pub fn run_tool(name: &str, args: &[&str]) -> String {
    let path = tool(name).unwrap_or_else(|| panic!("{name} is not installed"));
    let out = Command::new(&path).args(args).output().expect("run tool");
    assert!(
        out.status.success(),
        "{name} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run `strata` as uid = gid = `id` with no supplementary groups (needs root and setpriv).
pub fn strata_as(id: u32, args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Option<Output> {
    if !is_root() {
        return None;
    }
    let setpriv = tool("setpriv")?;
    let mut cmd = Command::new(setpriv);
    cmd.arg(format!("--reuid={id}"))
        .arg(format!("--regid={id}"))
        .arg("--clear-groups")
        .arg(env!("CARGO_BIN_EXE_strata"))
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Some(cmd.output().expect("run setpriv"))
}

/// Make a directory usable by any test user.
pub fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
}

/// Names in `dir` that look like strata's temporaries (`NAME.tmp-XXXXXX...`).
pub fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

/// A statically linked busybox (Debian's busybox-static), if installed.
pub fn static_busybox() -> Option<PathBuf> {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        let Ok(bytes) = std::fs::read(p) else {
            continue;
        };
        // A dynamic binary names its loader in PT_INTERP, near the start of the file.
        let head = &bytes[..bytes.len().min(4096)];
        if !head.windows(7).any(|w| w == b"ld-linu") {
            return Some(PathBuf::from(p));
        }
    }
    None
}

/// Applets linked to busybox in the test sandboxes.
pub const APPLETS: [&str; 12] =
    ["sh", "ls", "cat", "echo", "mkdir", "touch", "stat", "id", "true", "false", "env", "rm"];

/// A minimal sandbox at `dir`: `bin/busybox` with relative applet symlinks (`busybox --install
/// -s` would make absolute links to the host path), and a `hello` file. `None` (and a printed
/// reason) without busybox-static.
pub fn busybox_sandbox(dir: &Path) -> Option<PathBuf> {
    let Some(busybox) = static_busybox() else {
        eprintln!("SKIPPED: busybox-static not installed (apt-get install busybox-static)");
        return None;
    };
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(a)).unwrap();
    }
    std::fs::write(dir.join("hello"), b"hello from the sandbox\n").unwrap();
    Some(dir.to_path_buf())
}

/// `(offset, size)` of object `id` from `strata sif list` style positions, read with the library.
pub fn object_range(sif: &Path, id: u32) -> (u64, u64) {
    let f = std::fs::File::open(sif).unwrap();
    let s = strata::sif::Sif::read(&f).unwrap();
    let d = s.descriptor(id).expect("object");
    (d.offset, d.size)
}
