//! Helpers for the end-to-end `strata sif` tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "../../src/sif/testdata.rs"]
mod testdata_path;
pub use testdata_path::testdata;

/// Run the built `strata` with these arguments.
pub fn strata<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .expect("run strata")
}

/// Run and require success; returns stdout.
pub fn ok<I, S>(args: I) -> Vec<u8>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = strata(args);
    assert!(
        out.status.success(),
        "strata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
