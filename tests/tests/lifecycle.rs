//! A container's life as seen from the host: signals sent to the `strata` process reach the
//! payload and its exit status comes back; `kill -9` at any moment leaves no mount and no loop
//! device behind; many containers of one image start at once (the `srun` pattern).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    assert_no_loop_device_for, both_users, kill, losetup_lines_for, make_sif, wait_for_group_gone,
    wait_for_process, ARCH_AMD64,
};
use strata_e2e::{
    argv, assert_no_leak, busybox, spawn_as, HostSnapshot, Install, Output, RunOpts, Running, TestDir,
    TestUser,
};

/// How long a signalled container may take to go away.
const QUICKLY: Duration = Duration::from_secs(5);

/// A SIF of the busybox fixture owned by `user`, in `dir` (so leak checks watching `dir` see
/// its loop devices).
fn user_sif(install: &Install, user: &TestUser, dir: &TestDir) -> Option<PathBuf> {
    let images = busybox()?;
    Some(make_sif(install, user, dir, &images.squashfs, ARCH_AMD64, "busybox.sif"))
}

/// A test binary started in the background by a non-interactive shell inherits SIGINT and
/// SIGQUIT ignored, and so would every container it starts (ignored signals survive `execve`,
/// as they should). Give the containers of these tests the dispositions of a terminal session.
fn default_signal_dispositions() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGTERM] {
            // SAFETY: sigaction reads the current disposition into a zeroed struct we own; a
            // signal found ignored is set back to the default action (no handler involved).
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
                {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
        }
    });
}

/// `strata exec [--pid] IMAGE ARGS...` started as `user`, killed if it runs over `timeout`.
fn spawn_exec_for(
    install: &Install,
    user: &TestUser,
    pid_ns: bool,
    image: &Path,
    args: &[&str],
    timeout: Duration,
) -> Running {
    default_signal_dispositions();
    let mut argv = argv![install.strata(), "exec"];
    if pid_ns {
        argv.push("--pid".into());
    }
    argv.push(image.into());
    argv.extend(args.iter().map(Into::into));
    spawn_as(user, &argv, &RunOpts::new().timeout(timeout))
}

/// [`spawn_exec_for`] with a minute to run.
fn spawn_exec(install: &Install, user: &TestUser, pid_ns: bool, image: &Path, args: &[&str]) -> Running {
    spawn_exec_for(install, user, pid_ns, image, args, Duration::from_secs(60))
}

/// Starts `sleep 100` in a container, waits until it runs, sends `signal` to the strata
/// process only (not its group) and returns what strata did; checks it went quickly and left
/// no process behind.
fn signal_a_sleeping_container(
    install: &Install,
    user: &TestUser,
    image: &Path,
    pid_ns: bool,
    signal: i32,
) -> Output {
    let running = spawn_exec(install, user, pid_ns, image, &["sleep", "100"]);
    let pid = running.pid().expect("strata did not start");
    assert!(
        wait_for_process(pid, "sleep", Duration::from_secs(20)),
        "the container never ran sleep:\n{}",
        running.wait()
    );
    let sent = Instant::now();
    kill(pid, signal);
    let out = running.wait();
    assert!(
        sent.elapsed() < QUICKLY,
        "the container took {:?} to end after signal {signal}:\n{out}",
        sent.elapsed()
    );
    let left = wait_for_group_gone(pid, QUICKLY);
    assert!(left.is_empty(), "processes left after the container ended: {left:?}\n{out}");
    out
}

#[test]
fn sigterm_to_strata_ends_the_container_with_143() {
    let (Some(install), Some(users)) = (Install::shared(), both_users()) else {
        return;
    };
    for user in users {
        let dir = TestDir::owned_by(user).unwrap();
        let Some(image) = user_sif(install, user, &dir) else {
            return;
        };
        for pid_ns in [false, true] {
            let out = signal_a_sleeping_container(install, user, &image, pid_ns, libc::SIGTERM);
            assert_eq!(out.code, 128 + libc::SIGTERM, "--pid {pid_ns}:\n{out}");
            assert_eq!(out.stderr, "", "{out}");
        }
    }
}

#[test]
fn sigint_to_strata_ends_the_container_with_130() {
    let (Some(install), Some(users)) = (Install::shared(), both_users()) else {
        return;
    };
    for user in users {
        let dir = TestDir::owned_by(user).unwrap();
        let Some(image) = user_sif(install, user, &dir) else {
            return;
        };
        for pid_ns in [false, true] {
            let out = signal_a_sleeping_container(install, user, &image, pid_ns, libc::SIGINT);
            assert_eq!(out.code, 128 + libc::SIGINT, "--pid {pid_ns}:\n{out}");
            assert_eq!(out.stderr, "", "{out}");
        }
    }
}

/// The signal reaches the payload itself (forwarded by the monitor and the init with --pid):
/// a payload that traps it finishes its own way, and its exit code comes back.
#[test]
fn a_payload_that_traps_sigterm_receives_it() {
    let (Some(install), Some(user)) = (Install::shared(), TestUser::high()) else {
        return;
    };
    let dir = TestDir::owned_by(user).unwrap();
    let Some(image) = user_sif(install, user, &dir) else {
        return;
    };
    for pid_ns in [false, true] {
        let mut running = spawn_exec(
            install,
            user,
            pid_ns,
            &image,
            &["sh", "-c", "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.05; done"],
        );
        let pid = running.pid().expect("strata did not start");
        assert!(
            running.wait_for_stdout("ready", Duration::from_secs(20)),
            "the payload never got ready:\n{}",
            running.wait()
        );
        kill(pid, libc::SIGTERM);
        let out = running.wait();
        out.assert_code(7);
        assert_eq!(out.stdout, "ready\ngot TERM\n", "--pid {pid_ns}:\n{out}");
        let left = wait_for_group_gone(pid, QUICKLY);
        assert!(left.is_empty(), "processes left: {left:?}");
    }
}

/// The starter is a Rust program, whose runtime ignores SIGPIPE before `main`; ignored signals
/// survive `execve`, so the starter must give the payload the default action back. Otherwise a
/// writer into a closed pipe gets EPIPE instead of dying quietly: `yes | head -n 1` never ends.
#[test]
fn the_payload_gets_the_default_sigpipe_action() {
    let (Some(install), Some(user)) = (Install::shared(), TestUser::ordinary()) else {
        return;
    };
    let dir = TestDir::owned_by(user).unwrap();
    let Some(image) = user_sif(install, user, &dir) else {
        return;
    };
    let sigpipe_bit = 1u64 << (libc::SIGPIPE - 1);
    for pid_ns in [false, true] {
        let out = spawn_exec(
            install,
            user,
            pid_ns,
            &image,
            &["sed", "-n", "s/^SigIgn:\\t//p", "/proc/self/status"],
        )
        .wait();
        out.assert_success();
        let ignored =
            u64::from_str_radix(out.stdout.trim(), 16).unwrap_or_else(|_| panic!("no SigIgn line:\n{out}"));
        assert_eq!(ignored & sigpipe_bit, 0, "--pid {pid_ns}: SIGPIPE is ignored in the payload:\n{out}");
        let out = spawn_exec_for(
            install,
            user,
            pid_ns,
            &image,
            &["sh", "-c", "yes | head -n 1"],
            Duration::from_secs(10),
        )
        .wait();
        out.assert_success();
        assert_eq!(out.stdout, "y\n", "{out}");
    }
}

/// `kill -9` of the strata process at each of `moments` (microseconds after the spawn; `None`:
/// once the payload runs): no process, mount or loop device of the test is left behind.
fn kill_9_leaves_nothing(pid_ns: bool, moments: &[Option<u64>]) {
    let (Some(install), Some(users)) = (Install::shared(), both_users()) else {
        return;
    };
    for user in users {
        let dir = TestDir::owned_by(user).unwrap();
        let Some(image) = user_sif(install, user, &dir) else {
            return;
        };
        let before = HostSnapshot::take().watching([dir.path()]);
        for &moment in moments {
            let running = spawn_exec(install, user, pid_ns, &image, &["sleep", "100"]);
            let pid = running.pid().expect("strata did not start");
            match moment {
                Some(us) => thread::sleep(Duration::from_micros(us)),
                None => assert!(
                    wait_for_process(pid, "sleep", Duration::from_secs(20)),
                    "the container never ran sleep:\n{}",
                    running.wait()
                ),
            }
            // Which program the strata process was running when it was killed.
            let phase = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            kill(pid, libc::SIGKILL);
            let out = running.wait();
            assert_eq!(out.signal, Some(libc::SIGKILL), "{out}");
            let left = wait_for_group_gone(pid, QUICKLY);
            assert!(
                left.is_empty(),
                "{}: --pid {pid_ns}, kill -9 at {moment:?} us (in {:?}): processes left: {left:?}",
                user.name,
                phase.trim()
            );
            assert_no_leak(&before);
            assert_no_loop_device_for(&image);
        }
    }
}

/// Right after the start (in the engine, in the starter while it assembles the container) and
/// while the payload runs.
const MOMENTS: &[Option<u64>] = &[
    Some(0),
    Some(200),
    Some(500),
    Some(1000),
    Some(1500),
    Some(2000),
    Some(3000),
    Some(4000),
    Some(6000),
    Some(10_000),
    None,
];

#[test]
fn kill_9_at_any_moment_leaves_no_mount_or_loop_device() {
    kill_9_leaves_nothing(false, MOMENTS);
}

#[test]
fn kill_9_of_a_running_container_with_a_pid_namespace_leaves_nothing() {
    kill_9_leaves_nothing(true, &[None, None, None]);
}

/// With --pid, strata's process is the monitor outside the namespace; the init inside must die
/// with it whenever it is killed. Sweeps the start-up in 20 us steps to hit every window.
#[test]
fn kill_9_while_a_pid_namespace_container_starts_leaves_nothing() {
    let moments: Vec<Option<u64>> = (0..300).map(|i| Some(i * 20)).collect();
    kill_9_leaves_nothing(true, &moments);
}

/// 100 `strata exec` of one image by one user, all at once, as `srun` starts them.
fn hundred_at_once(install: &Install, user: &TestUser, image: &Path) {
    let runs: Vec<Running> = (0..100)
        .map(|i| spawn_exec(install, user, false, image, &["echo", &format!("container {i}")]))
        .collect();
    let failed: Vec<String> = runs
        .into_iter()
        .enumerate()
        .map(|(i, r)| (i, r.wait()))
        .filter(|(i, out)| {
            !(out.success() && out.stdout == format!("container {i}\n") && out.stderr.is_empty())
        })
        .map(|(_, out)| out.to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 100 concurrent containers failed; the first:\n{}",
        failed.len(),
        failed[0]
    );
}

#[test]
fn a_hundred_concurrent_execs_of_one_image_all_succeed() {
    let (Some(install), Some(user)) = (Install::shared(), TestUser::ordinary()) else {
        return;
    };
    let dir = TestDir::owned_by(user).unwrap();
    let Some(image) = user_sif(install, user, &dir) else {
        return;
    };
    let before = HostSnapshot::take().watching([dir.path()]);
    let start = Instant::now();
    hundred_at_once(install, user, &image);
    eprintln!("100 concurrent containers: {:?}", start.elapsed());
    assert_no_leak(&before);
    assert_no_loop_device_for(&image);
}

#[test]
fn a_hundred_concurrent_execs_share_loop_devices_when_allowed() {
    let Some(install) = Install::with_config("shared loop devices = yes\n") else {
        return;
    };
    let Some(user) = TestUser::ordinary() else {
        return;
    };
    let dir = TestDir::owned_by(user).unwrap();
    let Some(image) = user_sif(&install, user, &dir) else {
        return;
    };
    let before = HostSnapshot::take().watching([dir.path()]);

    // Thirty containers of the image started at the same moment, none running before (the
    // srun pattern): all of them on one loop device.
    let barrier = std::sync::Barrier::new(30);
    let mut together: Vec<Running> = thread::scope(|scope| {
        let spawned: Vec<_> = (0..30)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    spawn_exec(&install, user, false, &image, &["sh", "-c", "echo up; exec sleep 100"])
                })
            })
            .collect();
        spawned.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &mut together {
        assert!(r.wait_for_stdout("up", Duration::from_secs(30)), "a container did not start");
    }
    let lines = losetup_lines_for(&image);
    assert_eq!(lines.len(), 1, "thirty containers started together, one shared device: {lines:?}");
    drop(together);
    assert_no_loop_device_for(&image);

    // A second container of the image, started while the first runs, uses its loop device.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let holder = spawn_exec(&install, user, false, &image, &["sleep", "100"]);
        let pid = holder.pid().expect("strata did not start");
        assert!(
            wait_for_process(pid, "sleep", Duration::from_secs(20)),
            "a container never ran sleep:\n{}",
            holder.wait()
        );
        holders.push(holder);
    }
    let lines = losetup_lines_for(&image);
    assert_eq!(lines.len(), 1, "two containers, one shared device: {lines:?}");

    let start = Instant::now();
    hundred_at_once(&install, user, &image);
    eprintln!("100 concurrent containers, shared loop devices: {:?}", start.elapsed());
    drop(holders);
    assert_no_leak(&before);
    assert_no_loop_device_for(&image);
}

/// `strata sif del` (any change to a SIF) waits briefly, then refuses, while a container has the
/// image mounted; once it has stopped, the change goes through.
#[test]
fn a_sif_in_use_by_a_container_cannot_be_changed() {
    let (Some(install), Some(user), Some(images)) = (Install::shared(), TestUser::ordinary(), busybox())
    else {
        return;
    };
    let dir = TestDir::owned_by(user).unwrap();
    let sif = common::make_sif(install, user, &dir, &images.squashfs, common::ARCH_AMD64, "used.sif");
    let def = dir.write("def", "bootstrap: scratch\n", 0o644);
    install
        .strata_as(user, &argv!["sif", "add", "--datatype", "1", &sif, &def], &RunOpts::new())
        .assert_success();
    let before = fs::read(&sif).unwrap();
    let mut running = spawn_as(
        user,
        &argv![install.strata(), "exec", &sif, "sh", "-c", "echo ready; sleep 30"],
        &RunOpts::new(),
    );
    assert!(running.wait_for_stdout("ready", Duration::from_secs(10)));
    let out = install.strata_as(user, &argv!["sif", "del", "2", &sif], &RunOpts::new());
    out.assert_code(255)
        .assert_stderr_contains("is in use by a running container; stop it before changing the image");
    assert!(fs::read(&sif).unwrap() == before, "the image changed while in use");
    running.signal(libc::SIGKILL);
    let _ = running.wait();
    install.strata_as(user, &argv!["sif", "del", "2", &sif], &RunOpts::new()).assert_success();
}

/// `squashfs readahead`: the loop device under a running container's squashfs has the
/// configured read-ahead (0 by default, so a page fault decompresses only its own block), and
/// `kernel` leaves the kernel's own value.
#[test]
fn squashfs_readahead_sets_the_loop_devices_read_ahead() {
    let Some(user) = TestUser::ordinary() else {
        return;
    };
    for (conf, expected) in
        [("", Some(0u32)), ("squashfs readahead = 128\n", Some(128)), ("squashfs readahead = kernel\n", None)]
    {
        let Some(install) = Install::with_config(conf) else {
            return;
        };
        let dir = TestDir::owned_by(user).unwrap();
        let Some(image) = user_sif(&install, user, &dir) else {
            return;
        };
        let holder = spawn_exec(&install, user, false, &image, &["sleep", "100"]);
        let pid = holder.pid().expect("strata did not start");
        assert!(wait_for_process(pid, "sleep", Duration::from_secs(20)), "no sleep:\n{}", holder.wait());
        let lines = losetup_lines_for(&image);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let dev = lines[0].split(':').next().unwrap().trim_start_matches("/dev/").to_string();
        let ra: u32 = fs::read_to_string(format!("/sys/block/{dev}/queue/read_ahead_kb"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        match expected {
            Some(kib) => assert_eq!(ra, kib, "read_ahead_kb of {dev} with {conf:?}"),
            // The kernel's choice for a loop device is never 0.
            None => assert!(ra > 0, "read_ahead_kb of {dev} with {conf:?} is 0"),
        }
        drop(holder);
        assert_no_loop_device_for(&image);
    }
}
