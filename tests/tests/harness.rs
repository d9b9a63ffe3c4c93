//! Smoke tests of the end-to-end helpers themselves (not of strata).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use strata_config::Policy;
use strata_e2e::{
    argv, assert_no_leak, busybox, run_as, run_as_root, spawn_as, HostSnapshot, Install, RunOpts, TestDir,
    TestUser, RUNSCRIPT_OUTPUT, TEST_OUTPUT,
};

#[test]
fn shared_install_has_a_setuid_starter_and_the_shipped_config() {
    let Some(install) = Install::shared() else {
        return;
    };
    assert!(install.prefix().starts_with("/tmp"));
    let prefix = fs::metadata(install.prefix()).unwrap();
    assert_eq!((prefix.uid(), prefix.mode() & 0o7777), (0, 0o755));

    let starter = fs::metadata(install.starter()).unwrap();
    assert_eq!(starter.uid(), 0);
    assert_eq!(starter.gid(), 0);
    assert_eq!(starter.mode() & 0o7777, 0o4755, "starter is not setuid root");
    assert_eq!(starter.nlink(), 1);
    let strata = fs::metadata(install.strata()).unwrap();
    assert_eq!(strata.mode() & 0o777, 0o755);
    assert!(install.session_dir().is_dir());

    let shipped = strata_e2e::workspace_root().join("config/strata.conf");
    assert_eq!(fs::read_to_string(install.conf()).unwrap(), fs::read_to_string(shipped).unwrap());
    assert_eq!(Policy::load(&install.conf()).unwrap(), Policy::defaults());
    assert_eq!(fs::metadata(install.conf()).unwrap().uid(), 0);

    // Same install on every call.
    assert_eq!(Install::shared().unwrap().prefix(), install.prefix(), "one shared install per process");
}

#[test]
fn with_config_makes_a_separate_install_removed_on_drop() {
    let Some(shared) = Install::shared() else {
        return;
    };
    let text = "allow setuid = no\n";
    let custom = Install::with_config(text).unwrap();
    assert_ne!(custom.prefix(), shared.prefix());
    assert_eq!(fs::read_to_string(custom.conf()).unwrap(), text);
    let conf = fs::metadata(custom.conf()).unwrap();
    assert_eq!((conf.uid(), conf.mode() & 0o7777), (0, 0o644));
    assert_eq!(fs::metadata(custom.starter()).unwrap().mode() & 0o7777, 0o4755);
    // The shared install keeps the shipped config.
    assert!(Policy::load(&shared.conf()).unwrap().allow_setuid);

    custom.rewrite_config("mount dev = minimal\n");
    assert_eq!(fs::read_to_string(custom.conf()).unwrap(), "mount dev = minimal\n");
    let refused = std::panic::catch_unwind(|| shared.rewrite_config(""));
    assert!(refused.is_err());

    let prefix = custom.prefix().to_path_buf();
    drop(custom);
    assert!(!prefix.exists());
}

#[test]
fn engine_runs_as_a_user() {
    let (Some(install), Some(user)) = (Install::shared(), TestUser::ordinary()) else {
        return;
    };
    let out = install.strata_as(user, &["--help"], &RunOpts::new());
    out.assert_success().assert_stdout_contains("Usage");
}

#[test]
fn test_users_have_the_promised_ids() {
    let (Some(ordinary), Some(high)) = (TestUser::ordinary(), TestUser::high()) else {
        return;
    };
    let (shared_name, shared_gid) = TestUser::shared_group().unwrap();
    assert!((20_000..60_000).contains(&ordinary.uid));
    assert!((20_000..60_000).contains(&ordinary.gid));
    assert!(high.uid > 65_535 && high.gid > 65_535);
    assert!(shared_gid > 65_535);
    let pid = std::process::id();
    assert_eq!(ordinary.name, format!("st{pid}o"));
    assert_eq!(high.name, format!("st{pid}h"));
    assert_eq!(shared_name, format!("st{pid}g"));

    for user in [ordinary, high] {
        let out = run_as(
            user,
            &["sh", "-c", "id -u; id -g; id -G; id -un; cat /proc/self/status | grep -E '^(Uid|Gid|Groups)'"],
            &RunOpts::new(),
        );
        out.assert_success();
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines[0], user.uid.to_string(), "{out}");
        assert_eq!(lines[1], user.gid.to_string(), "{out}");
        let mut groups: Vec<u32> = lines[2].split(' ').map(|g| g.parse().unwrap()).collect();
        groups.sort();
        let mut want = user.groups.clone();
        want.sort();
        assert_eq!(groups, want, "{out}");
        assert_eq!(lines[3], user.name);
        let ids = format!("{0}\t{0}\t{0}\t{0}", user.uid);
        assert!(out.stdout.contains(&format!("Uid:\t{ids}")), "{out}");
        let meta = fs::metadata(&user.home).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (user.uid, user.gid));
    }
}

#[test]
fn run_as_passes_stdin_env_and_cwd() {
    let Some(user) = TestUser::ordinary() else {
        return;
    };
    let dir = TestDir::owned_by(user).unwrap();
    let out = run_as(
        user,
        &["sh", "-c", "cat; echo \"$EXTRA\"; pwd; echo \"$HOME $USER $LANG\""],
        &RunOpts::new().stdin("from stdin\n").env("EXTRA", "extra value").cwd(dir.path()),
    );
    out.assert_success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "from stdin");
    assert_eq!(lines[1], "extra value");
    assert_eq!(Path::new(lines[2]), dir.path());
    assert_eq!(lines[3], format!("{} {} C", user.home.display(), user.name));
    // Nothing of the test process's environment leaks through.
    let out = run_as(user, &["env"], &RunOpts::new().env("EXTRA", "1"));
    let mut names: Vec<&str> = out.stdout.lines().filter_map(|l| l.split('=').next()).collect();
    names.sort();
    assert_eq!(names, ["EXTRA", "HOME", "LANG", "LOGNAME", "PATH", "USER"], "{out}");

    // Default cwd: the user's home.
    let out = run_as(user, &["pwd"], &RunOpts::new());
    assert_eq!(Path::new(out.stdout.trim()), user.home);
}

#[test]
fn run_as_has_only_the_users_rights() {
    let Some(user) = TestUser::high() else {
        return;
    };
    run_as(user, &["cat", "/etc/shadow"], &RunOpts::new())
        .assert_code(1)
        .assert_stderr_contains("Permission denied");
    let root_dir = TestDir::new().unwrap();
    run_as(user, &["touch", "x"], &RunOpts::new().cwd(root_dir.path())).assert_code(1);
    // A cwd the user may not enter is refused (entered after the ids changed).
    let private = TestDir::new().unwrap();
    fs::set_permissions(private.path(), fs::Permissions::from_mode(0o700)).unwrap();
    run_as(user, &["true"], &RunOpts::new().cwd(private.path()))
        .assert_code(127)
        .assert_stderr_contains("Permission denied");

    let own = TestDir::owned_by(user).unwrap();
    run_as(user, &["touch", "x"], &RunOpts::new().cwd(own.path())).assert_success();
    let meta = fs::metadata(own.join("x")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (user.uid, user.gid), "no 16-bit truncation");
}

#[test]
fn exit_codes_signals_and_timeouts() {
    if strata_e2e::require_root().is_none() {
        return;
    }
    let out = run_as_root(&["sh", "-c", "echo out; echo err >&2; exit 3"], &RunOpts::new());
    out.assert_code(3);
    assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("out\n", "err\n"));
    assert_eq!(out.user, "root");

    let out = run_as_root(&["sh", "-c", "kill -9 $$"], &RunOpts::new());
    assert_eq!((out.signal, out.code), (Some(9), 137));
    assert!(!out.success());

    let start = std::time::Instant::now();
    let out = run_as_root(
        &["sh", "-c", "sleep 30 & sleep 30"],
        &RunOpts::new().timeout(Duration::from_millis(500)),
    );
    assert!(out.timed_out, "{out}");
    assert!(start.elapsed() < Duration::from_secs(10), "the process group was not killed");

    let out = run_as_root(&["pwd"], &RunOpts::new());
    assert_eq!(out.stdout, "/\n");
}

#[test]
fn spawned_commands_can_be_watched_signalled_and_waited_for() {
    let Some(user) = TestUser::ordinary() else {
        return;
    };
    let mut running = spawn_as(
        user,
        &["sh", "-c", "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done"],
        &RunOpts::new(),
    );
    assert!(running.pid().is_some());
    assert!(running.wait_for_stdout("ready", Duration::from_secs(10)));
    running.signal(libc::SIGTERM);
    let out = running.wait();
    out.assert_code(7).assert_stdout_contains("got TERM");

    // Dropping a running command kills it.
    let running = spawn_as(user, &["sleep", "60"], &RunOpts::new());
    let pid = running.pid().unwrap();
    drop(running);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn argv_macro_mixes_strings_and_paths() {
    let path = Path::new("/x y");
    let owned = String::from("owned");
    let args = argv!["exec", path, &owned, path.join("z")];
    assert_eq!(args, ["exec", "/x y", "owned", "/x y/z"]);
}

#[test]
fn busybox_fixtures_run() {
    let Some(images) = busybox() else {
        return;
    };
    let sandbox = &images.sandbox;
    for file in ["bin/busybox", "bin/sh", "etc/passwd", ".singularity.d/labels.json"] {
        assert!(sandbox.join(file).exists(), "{file} missing");
    }
    let run = |args: &[&str]| {
        let mut argv = vec!["chroot", sandbox.to_str().unwrap()];
        argv.extend_from_slice(args);
        run_as_root(&argv, &RunOpts::new())
    };
    run(&["/.singularity.d/actions/run", "a", "b"])
        .assert_success()
        .assert_stdout_contains(&format!("{RUNSCRIPT_OUTPUT} a b"));
    run(&["/singularity"]).assert_stdout_contains(RUNSCRIPT_OUTPUT);
    run(&["/.singularity.d/actions/test"]).assert_stdout_contains(TEST_OUTPUT);
    let out = run(&["/.singularity.d/actions/exec", "sh", "-c", "echo $FIXTURE; ls /usr/bin | wc -l"]);
    out.assert_success();
    assert!(out.stdout.starts_with("busybox\n"), "{out}");

    let out = run_as_root(&["unsquashfs", "-l", images.squashfs.to_str().unwrap()], &RunOpts::new());
    out.assert_success()
        .assert_stdout_contains("squashfs-root/bin/busybox")
        .assert_stdout_contains("squashfs-root/.singularity.d/runscript");
    run_as_root(&["e2fsck", "-fn", images.ext3.to_str().unwrap()], &RunOpts::new()).assert_success();
    let out = run_as_root(
        &["debugfs", "-R", "stat /.singularity.d/runscript", images.ext3.to_str().unwrap()],
        &RunOpts::new(),
    );
    out.assert_success().assert_stdout_contains("Mode:  0755");
    for image in [&images.squashfs, &images.ext3] {
        let meta = fs::metadata(image).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o644));
    }
}

#[test]
fn copies_for_a_user_are_theirs() {
    let (Some(user), Some(images)) = (TestUser::high(), busybox()) else {
        return;
    };
    let dir = TestDir::owned_by(user).unwrap();
    let image = dir.copy_in(&images.ext3, "ov.img");
    let tree = dir.copy_in(&images.sandbox, "sandbox");
    for path in [&image, &tree, &tree.join("bin/sh")] {
        let meta = fs::symlink_metadata(path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (user.uid, user.gid), "{}", path.display());
    }
    let file = dir.write("note", "hello", 0o600);
    run_as(user, &["cat", file.to_str().unwrap()], &RunOpts::new())
        .assert_success()
        .assert_stdout_contains("hello");
    let path = dir.path().to_path_buf();
    drop(dir);
    assert!(!path.exists());
}

#[test]
fn leak_check_sees_a_loop_mount_and_its_removal() {
    let Some(images) = busybox() else {
        return;
    };
    let dir = TestDir::new().unwrap();
    let image = dir.copy_in(&images.squashfs, "img.sqfs");
    let mnt = dir.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let before = HostSnapshot::take().watching([dir.path()]);
    assert_no_leak(&before);

    let mounted = run_as_root(
        &["mount", "-t", "squashfs", "-o", "loop,ro", image.to_str().unwrap(), mnt.to_str().unwrap()],
        &RunOpts::new(),
    );
    if !mounted.success() {
        strata_e2e::skip(format!("cannot loop-mount squashfs here:\n{mounted}"));
        return;
    }
    assert!(mnt.join("bin/busybox").exists());
    let leaked = std::panic::catch_unwind(|| assert_no_leak(&before));
    let message = leaked.expect_err("a mounted image must count as a leak").downcast::<String>().unwrap();
    assert!(message.contains(&format!("on {}", mnt.display())), "{message}");
    assert!(message.contains("attached to"), "{message}");
    assert!(message.contains("img.sqfs"), "{message}");

    run_as_root(&["umount", mnt.to_str().unwrap()], &RunOpts::new()).assert_success();
    assert_no_leak(&before);
}

#[test]
fn dropping_a_test_dir_never_deletes_through_a_mount() {
    if strata_e2e::require_root().is_none() {
        return;
    }
    let victim = TestDir::new().unwrap();
    let precious = victim.write("precious", "keep me", 0o644);
    let dir = TestDir::new().unwrap();
    let mnt = dir.join("mnt");
    fs::create_dir(&mnt).unwrap();
    run_as_root(
        &["mount", "--bind", victim.path().to_str().unwrap(), mnt.to_str().unwrap()],
        &RunOpts::new(),
    )
    .assert_success();
    drop(dir); // detaches the bind mount first, then removes the tree
    assert_eq!(fs::read_to_string(&precious).unwrap(), "keep me");
}

#[test]
fn leftovers_of_dead_processes_are_swept() {
    if strata_e2e::require_root().is_none() {
        return;
    }
    // A pid that is not running: a child that has been waited for.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    if Path::new(&format!("/proc/{dead}")).exists() {
        strata_e2e::skip("the dead pid was reused at once");
        return;
    }
    let dir = Path::new("/tmp").join(format!("strata-e2e-{dead}"));
    fs::create_dir_all(dir.join("install-0/bin")).unwrap();
    let user = format!("st{dead}o");
    let made = Command::new("useradd")
        .args(["-M", "-N", "-l", "-c", "strata-e2e test user", &user])
        .status()
        .unwrap();
    assert!(made.success());
    // Not ours: a user without the marker survives the sweep.
    let bystander = format!("st{dead}h");
    assert!(Command::new("useradd")
        .args(["-M", "-N", "-l", "-c", "someone else", &bystander])
        .status()
        .unwrap()
        .success());

    strata_e2e::sweep_leftovers();
    assert!(!dir.exists());
    let passwd = fs::read_to_string("/etc/passwd").unwrap();
    assert!(!passwd.lines().any(|l| l.starts_with(&format!("{user}:"))));
    assert!(passwd.lines().any(|l| l.starts_with(&format!("{bystander}:"))));
    let _ = Command::new("userdel").arg(&bystander).status();

    // Our own things are untouched.
    if let Some(install) = Install::shared() {
        assert!(install.starter().exists());
    }
    if let Some(me) = TestUser::ordinary() {
        assert!(me.home.exists());
    }
}

#[test]
fn shared_testdata_is_beside_the_workspace() {
    if let Some(dir) = strata_e2e::shared_testdata_or_skip() {
        assert!(dir.is_dir());
        assert!(dir.ends_with("shared/testdata"), "{}", dir.display());
    }
}
