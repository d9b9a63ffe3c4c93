//! Shared helpers for the end-to-end tests.
//!
//! End-to-end tests need root: they install the starter setuid into a temporary prefix, create
//! real users, and run strata as those users with real loop devices and mounts. Every helper
//! that needs root returns `None` (after printing `SKIP: <test>: <reason>`) when the tests do
//! not run as root, so `cargo test` as an ordinary user passes without testing anything here.
//!
//! ```no_run
//! use strata_e2e::{argv, assert_no_leak, busybox, HostSnapshot, Install, RunOpts, TestDir, TestUser};
//!
//! #[test]
//! fn squashfs_image_runs_for_a_user() {
//!     let (Some(install), Some(user), Some(images)) = (Install::shared(), TestUser::ordinary(), busybox()) else {
//!         return;
//!     };
//!     let dir = TestDir::owned_by(user).unwrap();
//!     let image = dir.copy_in(&images.squashfs, "img.sqfs");
//!     let before = HostSnapshot::take().watching([dir.path()]);
//!     let out = install.strata_as(user, &argv!["exec", &image, "id", "-u"], &RunOpts::new());
//!     out.assert_success();
//!     assert_eq!(out.stdout.trim(), user.uid.to_string());
//!     assert_no_leak(&before);
//! }
//! ```
//!
//! Everything a test process creates lives under `/tmp/strata-e2e-<pid>/` and in users named
//! `st<pid>o`, `st<pid>h` (and group `st<pid>g`); all of it is removed when the process exits,
//! and leftovers of processes that died without cleaning up are swept at the next start.

mod cleanup;
mod fixtures;
mod install;
mod leaks;
mod run;
mod users;

use std::fmt::Display;
use std::path::{Path, PathBuf};

pub use fixtures::{busybox, Busybox, RUNSCRIPT_OUTPUT, TEST_OUTPUT};
pub use install::Install;
pub use leaks::{assert_no_leak, HostSnapshot, LoopDevice, Mount};
pub use run::{run_as, run_as_root, spawn_as, spawn_as_root, Output, RunOpts, Running};
pub use users::{TestDir, TestUser};

/// The workspace root (the directory holding the `Makefile`).
pub fn workspace_root() -> &'static Path {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir.parent().unwrap_or(crate_dir)
}

/// Are the tests running as root (effective uid 0)?
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Prints why the current test does nothing: `SKIP: <test name>: <reason>`.
pub fn skip(reason: impl Display) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("test");
    eprintln!("SKIP: {test}: {reason}");
}

/// `Some(())` when running as root; otherwise prints a skip reason and gives `None`.
pub fn require_root() -> Option<()> {
    if is_root() {
        Some(())
    } else {
        skip("end-to-end tests need root (they install a setuid starter and create users)");
        None
    }
}

/// The shared test data (reference SIF images and the like): `$STRATA_TESTDATA` if set, else
/// `shared/testdata` beside the workspace (`../shared/testdata` for the main checkout, found
/// from a git worktree deeper down too), if it exists.
pub fn shared_testdata() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("STRATA_TESTDATA") {
        let dir = PathBuf::from(dir);
        return dir.is_dir().then_some(dir);
    }
    workspace_root()
        .ancestors()
        .skip(1)
        .map(|a| a.join("shared/testdata"))
        .find(|d| d.is_dir())
        .map(|d| d.canonicalize().unwrap_or(d))
}

/// [`shared_testdata`], or a printed skip reason.
pub fn shared_testdata_or_skip() -> Option<PathBuf> {
    let found = shared_testdata();
    if found.is_none() {
        skip(format!(
            "no shared test data (STRATA_TESTDATA, or shared/testdata above {})",
            workspace_root().display()
        ));
    }
    found
}

/// Removes, now, what test processes that are no longer running left behind (directories
/// `/tmp/strata-e2e-<pid>`, users and groups `st<pid>*`). Every test process does this once
/// on its own before it creates anything; this is for the harness's own tests. Root only.
#[doc(hidden)]
pub fn sweep_leftovers() {
    if is_root() {
        cleanup::sweep(false);
    }
}

/// Builds an argument vector of `OsString`s from anything path- or string-like:
/// `argv!["exec", &image, "cat", Path::new("/etc/hosts")]`.
#[macro_export]
macro_rules! argv {
    ($($arg:expr),* $(,)?) => {
        // Vec::from of an array, not vec!: clippy's useless_vec would flag every `&argv![..]`.
        ::std::vec::Vec::<::std::ffi::OsString>::from([$(::std::ffi::OsString::from(::std::convert::AsRef::<::std::ffi::OsStr>::as_ref(&$arg))),*])
    };
}
