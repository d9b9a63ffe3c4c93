//! Ctrl-C (SIGINT to the whole process group, as a terminal sends it) and SIGTERM (to strata
//! alone, as `kill` sends it) in the middle of commands that make temporaries or append to a
//! SIF: the process ends by that signal and leaves no temporary, no target and no grown SIF.

mod common;

use std::fs;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

fn have(tool: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().any(|d| Path::new(d).join(tool).exists())
}

/// `strata ARGS` in a process group of its own, with `TMPDIR` set to `tmpdir`.
fn start(args: &[&std::ffi::OsStr], tmpdir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .env("TMPDIR", tmpdir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start strata")
}

/// Waits (up to 60 s) until `ready` holds, polling.
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// Command lines (from /proc) that contain every one of `words`.
fn processes_with(words: &[&str]) -> Vec<String> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| words.iter().all(|w| c.contains(w)))
        .collect()
}

/// A source tree mksquashfs takes a while over: `mib` MiB of incompressible data.
fn big_tree(dir: &Path, mib: u64) -> PathBuf {
    let src = dir.join("src");
    fs::create_dir_all(src.join("bin")).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "for i in 1 2 3 4; do head -c {} /dev/urandom > {}/data$i; done",
            mib / 4 * MIB,
            src.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    src
}

fn ended_by(child: Child, sig: i32) -> String {
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.signal(), Some(sig), "status {:?}, stderr: {stderr}", out.status);
    assert!(!stderr.contains("FATAL"), "an interrupted command reports no failure of its own: {stderr}");
    stderr
}

#[test]
fn ctrl_c_and_sigterm_during_build_leave_nothing() {
    if !have("mksquashfs") {
        eprintln!("SKIPPED: mksquashfs not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = big_tree(tmp.path(), 160);
    let out_dir = tmp.path().join("out");
    let tmpdir = tmp.path().join("tmp");
    fs::create_dir_all(&out_dir).unwrap();
    fs::create_dir_all(&tmpdir).unwrap();
    let target = out_dir.join("img.sif");
    for (sig, to_group) in [(libc::SIGINT, true), (libc::SIGTERM, false), (libc::SIGHUP, false)] {
        let child = start(&["build".as_ref(), target.as_os_str(), src.as_os_str()], &tmpdir);
        // mksquashfs is at work once its output (the `.sqfs` temporary) has data.
        wait_until("mksquashfs to write", || {
            names_in(&out_dir)
                .iter()
                .filter(|n| n.ends_with(".sqfs"))
                .any(|n| fs::metadata(out_dir.join(n)).map(|m| m.len() > 0).unwrap_or(false))
        });
        let tool = ["mksquashfs", src.to_str().unwrap()];
        assert!(!processes_with(&tool).is_empty(), "mksquashfs is not seen running");
        let pid = child.id() as i32;
        // SAFETY: kill(2) on the child (or its process group) we started.
        unsafe { libc::kill(if to_group { -pid } else { pid }, sig) };
        ended_by(child, sig);
        assert_eq!(names_in(&out_dir), Vec::<String>::new(), "signal {sig} left these behind");
        assert_eq!(names_in(&tmpdir), Vec::<String>::new(), "signal {sig} left staging behind");
        // No mksquashfs of ours is left running either.
        let left = processes_with(&tool);
        assert!(left.is_empty(), "mksquashfs still runs after signal {sig}: {left:?}");
    }
}

#[test]
fn ctrl_c_during_build_sandbox_leaves_nothing() {
    if !have("mksquashfs") || !have("unsquashfs") {
        eprintln!("SKIPPED: squashfs-tools not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = big_tree(tmp.path(), 160);
    let tmpdir = tmp.path().join("tmp");
    fs::create_dir_all(&tmpdir).unwrap();
    let sif = tmp.path().join("img.sif");
    let built = common::strata(["build".as_ref(), sif.as_os_str(), src.as_os_str()]);
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let out_dir = tmp.path().join("out");
    fs::create_dir_all(&out_dir).unwrap();
    let target = out_dir.join("sandbox");
    let child =
        start(&["build".as_ref(), "--sandbox".as_ref(), target.as_os_str(), sif.as_os_str()], &tmpdir);
    wait_until("unsquashfs to write", || {
        names_in(&out_dir).iter().any(|n| {
            let data = out_dir.join(n).join("rootfs/data1");
            fs::metadata(data).map(|m| m.len() > 0).unwrap_or(false)
        })
    });
    // SAFETY: kill(2) on the process group we started.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) };
    ended_by(child, libc::SIGINT);
    assert_eq!(names_in(&out_dir), Vec::<String>::new());
}

#[test]
fn sigterm_while_sif_add_copies_leaves_the_sif_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let sif = tmp.path().join("img.sif");
    let made = common::strata(["sif".as_ref(), "new".as_ref(), sif.as_os_str()]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let before = fs::read(&sif).unwrap();
    // A large, sparse-free input: the copy takes a moment.
    let data = tmp.path().join("data.bin");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("head -c {} /dev/urandom > {}", 768 * MIB, data.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let child = start(
        &[
            "sif".as_ref(),
            "add".as_ref(),
            "--datatype".as_ref(),
            "7".as_ref(),
            sif.as_os_str(),
            data.as_os_str(),
        ],
        tmp.path(),
    );
    wait_until("the copy to start", || {
        fs::metadata(&sif).map(|m| m.len() > before.len() as u64).unwrap_or(false)
    });
    // SAFETY: kill(2) on the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    ended_by(child, libc::SIGTERM);
    let after = fs::read(&sif).unwrap();
    let first_difference = before.iter().zip(&after).position(|(a, b)| a != b);
    assert!(
        after.len() == before.len() && first_difference.is_none(),
        "the SIF changed: {} bytes, then {} bytes; first difference at {first_difference:?}",
        before.len(),
        after.len()
    );
}

/// `overlay resize` changes the image in place: whatever the moment of a Ctrl-C, the image is
/// left consistent, at its old or its new size, its filesystem as big as the file and clean.
#[test]
fn ctrl_c_at_any_moment_of_overlay_resize_leaves_a_consistent_image() {
    if !have("e2fsck") || !have("resize2fs") || !have("mkfs.ext3") {
        eprintln!("SKIPPED: e2fsprogs not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("overlay.img");
    let made = common::strata([
        "overlay".as_ref(),
        "create".as_ref(),
        "--size".as_ref(),
        "256".as_ref(),
        img.as_os_str(),
    ]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let mut size_mib = 256;
    for delay_ms in [0u64, 5, 15, 40, 80, 150] {
        let next = if size_mib == 256 { 512 } else { 256 };
        let child = start(
            &[
                "overlay".as_ref(),
                "resize".as_ref(),
                "--size".as_ref(),
                next.to_string().as_ref(),
                img.as_os_str(),
            ],
            tmp.path(),
        );
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SAFETY: kill(2) on the process group we started, as a terminal's Ctrl-C.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.signal() == Some(libc::SIGINT) || out.status.success(),
            "after {delay_ms} ms: {:?} {stderr}",
            out.status
        );
        let len = fs::metadata(&img).unwrap().len();
        assert!(len == 256 * MIB || len == 512 * MIB, "after {delay_ms} ms the image is {len} bytes");
        let fsck = Command::new("e2fsck").args(["-f", "-n"]).arg(&img).output().unwrap();
        assert!(fsck.status.success(), "after {delay_ms} ms: {}", String::from_utf8_lossy(&fsck.stdout));
        let dump = Command::new("dumpe2fs").arg("-h").arg(&img).output().unwrap();
        let text = String::from_utf8_lossy(&dump.stdout);
        let field = |k: &str| -> u64 {
            text.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().parse().unwrap()).unwrap()
        };
        assert_eq!(field("Block count:") * field("Block size:"), len, "after {delay_ms} ms");
        size_mib = len / MIB;
    }
}
