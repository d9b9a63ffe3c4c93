//! Helpers shared by the action and lifecycle tests (each test file is its own crate and uses
//! only some of them).
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use strata_e2e::{argv, Install, RunOpts, TestDir, TestUser};

/// Apptainer's busybox image from the shared test data, or a printed skip reason.
pub fn reference_sif() -> Option<PathBuf> {
    let sif = strata_e2e::shared_testdata_or_skip()?.join("apptainer/busybox_amd64.sif");
    if sif.is_file() {
        Some(sif)
    } else {
        strata_e2e::skip(format!("{} is missing", sif.display()));
        None
    }
}

/// An image for tests of behaviour that does not depend on the image's contents: Apptainer's
/// busybox SIF when the shared test data has it, else the busybox squashfs built at test time
/// (with a printed note), so that these tests run everywhere.
pub fn busybox_image() -> Option<PathBuf> {
    let sif =
        strata_e2e::shared_testdata().map(|d| d.join("apptainer/busybox_amd64.sif")).filter(|p| p.is_file());
    match sif {
        Some(sif) => Some(sif),
        None => {
            let images = strata_e2e::busybox()?;
            eprintln!(
                "NOTE: {}: no busybox_amd64.sif in the shared test data; using {}",
                std::thread::current().name().unwrap_or("test"),
                images.squashfs.display()
            );
            Some(images.squashfs.clone())
        }
    }
}

/// The ordinary user and the one with ids above 65535.
pub fn both_users() -> Option<[&'static TestUser; 2]> {
    Some([TestUser::ordinary()?, TestUser::high()?])
}

/// SIF architecture codes, as `strata sif add --partarch` takes them.
pub const ARCH_AMD64: u32 = 2;
pub const ARCH_ARM64: u32 = 4;

/// Builds `<dir>/<name>`, a SIF whose only (primary system) partition is the squashfs `rootfs`
/// with architecture `arch`, with `strata sif new` and `strata sif add`, as `user`.
pub fn make_sif(
    install: &Install,
    user: &TestUser,
    dir: &TestDir,
    rootfs: &Path,
    arch: u32,
    name: &str,
) -> PathBuf {
    let part = dir.copy_in(rootfs, &format!("{name}.part"));
    let sif = dir.join(name);
    install.strata_as(user, &argv!["sif", "new", &sif], &RunOpts::new()).assert_success();
    install
        .strata_as(
            user,
            &argv![
                "sif",
                "add",
                "--datatype",
                "4",
                "--partfs",
                "1",
                "--parttype",
                "2",
                "--partarch",
                arch.to_string(),
                "--groupid",
                "1",
                &sif,
                &part
            ],
            &RunOpts::new(),
        )
        .assert_success();
    sif
}

/// The processes of process group `pgid`: (pid, command name).
pub fn group_processes(pgid: u32) -> Vec<(u32, String)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            // pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
            let open = stat.find('(')?;
            let close = stat.rfind(')')?;
            let comm = stat.get(open + 1..close)?.to_string();
            let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
            let pgrp: u32 = rest.get(2)?.parse().ok()?;
            // A zombie is already gone for our purposes (its parent has yet to reap it).
            (pgrp == pgid && rest.first() != Some(&"Z")).then_some((pid, comm))
        })
        .collect()
}

/// Waits until a process named `comm` runs in process group `pgid`.
pub fn wait_for_process(pgid: u32, comm: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if group_processes(pgid).iter().any(|(_, c)| c == comm) {
            return true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Waits until no live process is left in process group `pgid`; returns what is left.
pub fn wait_for_group_gone(pgid: u32, timeout: Duration) -> Vec<(u32, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = group_processes(pgid);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `signal` to one process (not its group).
pub fn kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a pid and signal number; no memory is passed.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}): {}", std::io::Error::last_os_error());
}

/// The lines of `losetup -a` that name `image` (a loop device still attached to it).
pub fn losetup_lines_for(image: &Path) -> Vec<String> {
    let out = Command::new("losetup")
        .arg("-a")
        .output()
        .unwrap_or_else(|err| panic!("cannot run losetup -a: {err}"));
    assert!(out.status.success(), "losetup -a failed: {out:?}");
    let name = image.to_string_lossy().into_owned();
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(&name)).map(str::to_string).collect()
}

/// Panics if `losetup -a` still lists a device backed by `image` after a settle time of up
/// to 5 s (autoclear runs when the last user of the device goes away).
#[track_caller]
pub fn assert_no_loop_device_for(image: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines = losetup_lines_for(image);
        if lines.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "loop devices still attached to {}:\n{}",
            image.display(),
            lines.join("\n")
        );
        thread::sleep(Duration::from_millis(100));
    }
}
