//! Hostile input aimed at the setuid starter, from an unprivileged user. Each test hands the
//! installed starter a hand-written plan, hostile files or a hostile environment (through the
//! `starter-raw` helper, which does exactly what any user can do), and checks the refusal or
//! that the result is harmless. SECURITY.md names these tests.

#![allow(clippy::useless_vec)] // argv! builds a Vec; most calls borrow it once

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use strata_e2e::{
    argv, assert_no_leak, busybox, run_as, run_as_root, HostSnapshot, Install, Output, RunOpts, TestDir,
    TestUser,
};

const RAW: &str = env!("CARGO_BIN_EXE_starter-raw");

/// A plan running `argv` from the squashfs rootfs on fd 10 (`size` bytes).
fn plan(size: u64, argv: &[&str]) -> Value {
    json!({
        "version": 1,
        "rootfs": {"fd": 10, "kind": "squashfs", "offset": 0, "size": size},
        "mounts": {"proc": true, "sys": true, "dev": "minimal"},
        "process": {"argv": argv, "env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"], "cwd": "/"}
    })
}

/// Run the starter of `install` as `user` (root when `None`) with `plan` on fd 3, the files
/// `fds` (fd, mode r|w|d|p, path) opened by that user, and exactly `env` as environment.
fn raw(
    install: &Install,
    user: Option<&TestUser>,
    dir: &TestDir,
    plan: &Value,
    fds: &[(i32, &str, &Path)],
    env: &[&str],
) -> Output {
    let plan_file = dir.write(&format!("plan-{}.json", rand_suffix()), plan.to_string(), 0o644);
    let mut args = argv![RAW, install.starter(), &plan_file];
    for (fd, mode, path) in fds {
        args.push("--fd".into());
        args.push(format!("{fd}:{mode}:{}", path.display()).into());
    }
    for e in env {
        args.push("--env".into());
        args.push((*e).into());
    }
    match user {
        Some(u) => run_as(u, &args, &RunOpts::new()),
        None => run_as_root(&args, &RunOpts::new()),
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// The common set-up: the shared install, the ordinary user, their own copy of the image.
fn setup() -> Option<(&'static Install, &'static TestUser, TestDir, PathBuf, u64)> {
    let (install, user, images) = (Install::shared()?, TestUser::ordinary()?, busybox()?);
    let dir = TestDir::owned_by(user)?;
    let image = dir.copy_in(&images.squashfs, "img.sqfs");
    let size = fs::metadata(&image).unwrap().len();
    Some((install, user, dir, image, size))
}

fn refused(out: &Output, text: &str) {
    out.assert_code(255).assert_stderr_contains("FATAL:").assert_stderr_contains(text);
}

#[test]
fn a_well_formed_raw_plan_runs_as_the_caller() {
    let Some((install, user, dir, image, size)) = setup() else {
        return;
    };
    let out = raw(install, Some(user), &dir, &plan(size, &["id", "-u"]), &[(10, "r", &image)], &[]);
    out.assert_success();
    assert_eq!(out.stdout.trim(), user.uid.to_string());
}

#[test]
fn unknown_fields_are_refused() {
    let Some((install, user, dir, image, size)) = setup() else {
        return;
    };
    for (path, field) in [("", "uid"), ("rootfs", "owner"), ("process", "caps")] {
        let mut p = plan(size, &["/bin/true"]);
        let target = if path.is_empty() { &mut p } else { &mut p[path] };
        target[field] = json!(0);
        let out = raw(install, Some(user), &dir, &p, &[(10, "r", &image)], &[]);
        refused(&out, &format!("unknown field `{field}`"));
    }
}

#[test]
fn an_oversized_plan_is_refused_before_parsing() {
    let Some((install, user, dir, image, size)) = setup() else {
        return;
    };
    let mut p = plan(size, &["/bin/true"]);
    p["process"]["env"] = json!(["X=".to_string() + &"a".repeat(2 << 20)]);
    let out = raw(install, Some(user), &dir, &p, &[(10, "r", &image)], &[]);
    refused(&out, "larger than 1048576 bytes");
}

#[test]
fn malformed_plans_are_refused_with_a_reason() {
    let Some((install, user, dir, image, size)) = setup() else {
        return;
    };
    let mut wrong_version = plan(size, &["/bin/true"]);
    wrong_version["version"] = json!(7);
    let mut empty_argv = plan(size, &["/bin/true"]);
    empty_argv["process"]["argv"] = json!([]);
    let mut bad_env = plan(size, &["/bin/true"]);
    bad_env["process"]["env"] = json!(["NOEQUALS"]);
    let mut negative = plan(size, &["/bin/true"]);
    negative["rootfs"]["offset"] = json!(-4096);
    let mut relative_cwd = plan(size, &["/bin/true"]);
    relative_cwd["process"]["cwd"] = json!("../../etc");
    let mut past_end = plan(size, &["/bin/true"]);
    past_end["rootfs"]["offset"] = json!(u64::MAX - 10);
    let mut up_prefetch = plan(size, &["/bin/true"]);
    up_prefetch["process"]["prefetch"] = json!(["/bin/true", "/bin/../../etc/shadow"]);
    let mut relative_prefetch = plan(size, &["/bin/true"]);
    relative_prefetch["process"]["prefetch"] = json!(["bin/true"]);
    let mut many_prefetch = plan(size, &["/bin/true"]);
    many_prefetch["process"]["prefetch"] = json!(vec!["/bin/true"; 17]);
    for (p, text) in [
        (&wrong_version, "plan version 7"),
        (&empty_argv, "no command to run"),
        (&bad_env, "must be NAME=value"),
        (&negative, "invalid plan"),
        (&relative_cwd, "absolute path"),
        (&past_end, "past the end of the file"),
        (&up_prefetch, "path to read ahead \"/bin/../../etc/shadow\" must not contain"),
        (&relative_prefetch, "path to read ahead \"bin/true\" must be an absolute path"),
        (&many_prefetch, "paths to read ahead; at most 16"),
    ] {
        let out = raw(install, Some(user), &dir, p, &[(10, "r", &image)], &[]);
        refused(&out, text);
    }
    let garbage = dir.write("garbage.json", "{\"version\": 1,", 0o644);
    let out = run_as(user, &argv![RAW, install.starter(), garbage], &RunOpts::new());
    refused(&out, "invalid plan");
}

#[test]
fn a_plan_naming_fds_it_did_not_pass_is_refused() {
    let Some((install, user, dir, image, size)) = setup() else {
        return;
    };
    let mut p = plan(size, &["/bin/true"]);
    p["rootfs"]["fd"] = json!(99);
    let out = raw(install, Some(user), &dir, &p, &[(10, "r", &image)], &[]);
    refused(&out, "fd 99 named for rootfs was not passed to the starter");
    // fds 0-3 are never images.
    let mut p = plan(size, &["/bin/true"]);
    p["rootfs"]["fd"] = json!(3);
    let out = raw(install, Some(user), &dir, &p, &[(10, "r", &image)], &[]);
    refused(&out, "is reserved");
    // No plan at all.
    let out = run_as(user, &argv![RAW, install.starter(), "-"], &RunOpts::new());
    refused(&out, "no plan on fd 3");
}

#[test]
fn an_o_path_descriptor_of_a_file_the_user_cannot_read_is_refused() {
    let Some((install, user, dir, _image, size)) = setup() else {
        return;
    };
    // Root-owned, mode 0600: the user cannot open it for reading, but O_PATH needs no access.
    let secret = TestDir::new().unwrap();
    fs::set_permissions(secret.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let private = secret.copy_in(&busybox().unwrap().squashfs, "private.sqfs");
    fs::set_permissions(&private, fs::Permissions::from_mode(0o600)).unwrap();
    let out = raw(install, Some(user), &dir, &plan(size, &["/bin/true"]), &[(10, "p", &private)], &[]);
    refused(&out, "O_PATH descriptor");
}

#[test]
fn another_users_image_cannot_become_a_writable_layer() {
    let Some((install, user, dir, image, size)) = setup() else {
        return;
    };
    let other = TestUser::high().unwrap();
    let theirs_dir = TestDir::owned_by(other).unwrap();
    fs::set_permissions(theirs_dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let ovl = theirs_dir.join("ov.img");
    run_as_root(&argv!["mkfs.ext3", "-q", "-F", &ovl, "16M"], &RunOpts::new()).assert_success();
    fs::set_permissions(&ovl, fs::Permissions::from_mode(0o644)).unwrap();
    let before = fs::read(&ovl).unwrap();
    let mut p = plan(size, &["/bin/true"]);
    let len = fs::metadata(&ovl).unwrap().len();
    p["overlays"] = json!([{"fd": 11, "kind": "ext3", "offset": 0, "size": len, "writable": true}]);
    // The user can only open it read-only; the plan's claim of a writable layer is refused.
    let out = raw(install, Some(user), &dir, &p, &[(10, "r", &image), (11, "r", &ovl)], &[]);
    refused(&out, "you don't have write permissions");
    assert!(fs::read(&ovl).unwrap() == before, "the other user's image changed");
}

#[test]
fn a_directory_overlay_is_refused_for_users_and_granted_to_root() {
    let Some((install, user, dir, image, size)) = setup() else {
        return;
    };
    let ovdir = dir.join("ovdir");
    for d in ["ovdir", "ovdir/upper", "ovdir/work"] {
        fs::create_dir(dir.join(d)).unwrap();
        std::os::unix::fs::chown(dir.join(d), Some(user.uid), Some(user.gid)).unwrap();
    }
    let mut p = plan(size, &["/bin/sh", "-c", "echo hi > /written && cat /written"]);
    p["overlays"] = json!([{"fd": 11, "kind": "dir", "writable": true}]);
    let out = raw(install, Some(user), &dir, &p, &[(10, "r", &image), (11, "d", &ovdir)], &[]);
    refused(&out, "only root user can use sandbox as overlay in setuid mode");
    assert!(!ovdir.join("upper/written").exists());

    let out = raw(install, None, &dir, &p, &[(10, "r", &image), (11, "d", &ovdir)], &[]);
    out.assert_success().assert_stdout_contains("hi");
    assert!(ovdir.join("upper/written").exists(), "root's directory overlay did not persist");
}

#[test]
fn two_writable_layers_are_refused() {
    let Some((install, user, dir, image, size)) = setup() else {
        return;
    };
    let mut layers = Vec::new();
    for name in ["a.img", "b.img"] {
        let path = dir.join(name);
        run_as(
            user,
            &argv!["mkfs.ext3", "-q", "-F", &path, "16M"],
            &RunOpts::new().env("PATH", "/sbin:/usr/sbin:/bin:/usr/bin"),
        )
        .assert_success();
        layers.push(path);
    }
    let len = fs::metadata(&layers[0]).unwrap().len();
    let mut p = plan(size, &["/bin/true"]);
    p["overlays"] = json!([
        {"fd": 11, "kind": "ext3", "offset": 0, "size": len, "writable": true},
        {"fd": 12, "kind": "ext3", "offset": 0, "size": len, "writable": true}
    ]);
    let fds = [(10, "r", image.as_path()), (11, "w", layers[0].as_path()), (12, "w", layers[1].as_path())];
    let out = raw(install, Some(user), &dir, &p, &fds, &[]);
    refused(&out, "you can't specify more than one writable overlay");
    p["overlays"] = json!([{"fd": 11, "kind": "ext3", "offset": 0, "size": len, "writable": true}]);
    p["writable_tmpfs"] = json!(true);
    let out = raw(install, Some(user), &dir, &p, &fds[..2], &[]);
    refused(&out, "you can't specify --writable-tmpfs with another writable overlay image");
}

#[test]
fn a_layer_whose_bytes_are_not_the_claimed_filesystem_is_refused() {
    let Some((install, user, dir, image, size)) = setup() else {
        return;
    };
    let junk = dir.write("junk.img", vec![0x41u8; 1 << 20], 0o644);
    let mut p = plan(size, &["/bin/true"]);
    p["rootfs"] = json!({"fd": 10, "kind": "squashfs", "offset": 0, "size": 1 << 20});
    let out = raw(install, Some(user), &dir, &p, &[(10, "r", &junk)], &[]);
    refused(&out, "no squashfs filesystem at offset 0");
    // The squashfs claimed to be ext3.
    let mut p = plan(size, &["/bin/true"]);
    p["rootfs"]["kind"] = json!("ext3");
    let out = raw(install, Some(user), &dir, &p, &[(10, "r", &image)], &[]);
    refused(&out, "file is not a valid ext3 image");
}

#[test]
fn more_loop_devices_than_allowed_are_refused() {
    let Some((_, user, dir, image, size)) = setup() else {
        return;
    };
    let install = Install::with_config("max loop devices = 1\n").unwrap();
    let mut p = plan(size, &["/bin/true"]);
    p["overlays"] = json!([{"fd": 11, "kind": "squashfs", "offset": 0, "size": size}]);
    let out = raw(&install, Some(user), &dir, &p, &[(10, "r", &image), (11, "r", &image)], &[]);
    refused(&out, "needs 2 loop devices but 'max loop devices' is 1");
}

#[test]
fn one_byte_range_cannot_be_both_written_and_mounted() {
    let Some((install, user, dir, image, size)) = setup() else {
        return;
    };
    let ovl = dir.join("ov.img");
    let path_env = RunOpts::new().env("PATH", "/sbin:/usr/sbin:/bin:/usr/bin");
    run_as(user, &argv!["mkfs.ext3", "-q", "-F", &ovl, "16M"], &path_env).assert_success();
    let len = fs::metadata(&ovl).unwrap().len();
    let mut p = plan(size, &["/bin/true"]);
    p["overlays"] = json!([
        {"fd": 11, "kind": "ext3", "offset": 0, "size": len, "writable": false},
        {"fd": 12, "kind": "ext3", "offset": 0, "size": len, "writable": true}
    ]);
    let fds = [(10, "r", image.as_path()), (11, "r", ovl.as_path()), (12, "w", ovl.as_path())];
    refused(&raw(install, Some(user), &dir, &p, &fds, &[]), "overlaps another layer of the same file");
}

#[test]
fn a_bind_destination_cannot_escape_the_container() {
    let Some((install, user, dir, _image, _)) = setup() else {
        return;
    };
    // An image whose /escape is a symlink to /etc and whose /magic points through /proc.
    let tree = dir.join("tree");
    run_as_root(&argv!["cp", "-a", &busybox().unwrap().sandbox, &tree], &RunOpts::new()).assert_success();
    std::os::unix::fs::symlink("/etc", tree.join("escape")).unwrap();
    std::os::unix::fs::symlink("/proc/1/root/etc", tree.join("magic")).unwrap();
    let sq = dir.join("escape.sqfs");
    run_as_root(&argv!["mksquashfs", &tree, &sq, "-quiet", "-no-progress", "-noappend"], &RunOpts::new())
        .assert_success();
    fs::set_permissions(&sq, fs::Permissions::from_mode(0o644)).unwrap();
    let size = fs::metadata(&sq).unwrap().len();
    let src = dir.join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("marker"), "from-host").unwrap();
    let host_etc_before: Vec<_> = fs::read_dir("/etc").unwrap().map(|e| e.unwrap().file_name()).collect();

    // Through a symlink inside the image: resolved inside the container (its own /etc).
    let mut p = plan(
        size,
        &["/bin/sh", "-c", "cat /etc/hostdir/marker; grep -c ' /etc/hostdir ' /proc/self/mountinfo"],
    );
    p["binds"] = json!([{"fd": 11, "dest": "/escape/hostdir", "readonly": true}]);
    let out = raw(install, Some(user), &dir, &p, &[(10, "r", &sq), (11, "d", &src)], &[]);
    out.assert_success().assert_stdout_contains("from-host");
    // Through a magic link (/magic -> /proc/1/root/etc): never followed; the mount point is
    // made inside the container, shadowing the link.
    p["binds"] = json!([{"fd": 11, "dest": "/magic/strata-x", "readonly": true}]);
    p["process"]["argv"] = json!([
        "/bin/sh",
        "-c",
        "cat /magic/strata-x/marker; grep -c ' /magic/strata-x ' /proc/self/mountinfo"
    ]);
    let out = raw(install, Some(user), &dir, &p, &[(10, "r", &sq), (11, "d", &src)], &[]);
    out.assert_success();
    assert_eq!(out.stdout, "from-host1\n", "{out}");
    // '..' is never accepted.
    p["binds"] = json!([{"fd": 11, "dest": "/tmp/../../etc/x", "readonly": true}]);
    let out = raw(install, Some(user), &dir, &p, &[(10, "r", &sq), (11, "d", &src)], &[]);
    refused(&out, "must not contain '.' or '..'");
    let host_etc_after: Vec<_> = fs::read_dir("/etc").unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(host_etc_before, host_etc_after, "the host's /etc changed");
}

#[test]
fn a_setuid_root_binary_in_the_image_does_not_gain_root() {
    let Some((install, user, dir, _image, _)) = setup() else {
        return;
    };
    let tree = dir.join("suidtree");
    run_as_root(&argv!["cp", "-a", &busybox().unwrap().sandbox, &tree], &RunOpts::new()).assert_success();
    fs::create_dir(tree.join("suid")).unwrap();
    fs::copy(tree.join("bin/busybox"), tree.join("suid/busybox")).unwrap();
    std::os::unix::fs::chown(tree.join("suid/busybox"), Some(0), Some(0)).unwrap();
    fs::set_permissions(tree.join("suid/busybox"), fs::Permissions::from_mode(0o4755)).unwrap();
    let sq = dir.join("suid.sqfs");
    run_as_root(&argv!["mksquashfs", &tree, &sq, "-quiet", "-no-progress", "-noappend"], &RunOpts::new())
        .assert_success();
    fs::set_permissions(&sq, fs::Permissions::from_mode(0o644)).unwrap();
    let size = fs::metadata(&sq).unwrap().len();
    let p = plan(
        size,
        &["/bin/sh", "-c", "ls -ln /suid/busybox; echo euid=$(/suid/busybox id -u); /suid/busybox grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/self/status; grep ' / / ' /proc/self/mountinfo"],
    );
    let out = raw(install, Some(user), &dir, &p, &[(10, "r", &sq)], &[]);
    out.assert_success();
    assert!(out.stdout.contains("-rwsr-xr-x"), "the setuid bit is in the image:\n{out}");
    assert!(out.stdout.contains(&format!("euid={}\n", user.uid)), "the setuid binary ran as root:\n{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    let root_line = lines.iter().find(|l| l.contains(" / / ")).unwrap_or(&"");
    assert!(
        root_line.contains("nosuid") && root_line.contains("nodev"),
        "final overlay lacks nosuid,nodev:\n{out}"
    );
}

#[test]
fn environment_aimed_at_the_starter_is_ignored_and_the_payload_gets_the_plans_env() {
    let Some((install, user, dir, image, size)) = setup() else {
        return;
    };
    let mut p = plan(size, &["env"]);
    p["process"]["env"] = json!(["PATH=/bin:/usr/bin", "ONLY=this"]);
    let junk = [
        "LD_PRELOAD=/tmp/strata-evil.so",
        "LD_LIBRARY_PATH=/tmp",
        "GLIBC_TUNABLES=glibc.malloc.mxfast=glibc.malloc.mxfast=A",
        "RUST_BACKTRACE=full",
        "TMPDIR=/etc",
        "APPTAINER_CONFIGDIR=/tmp",
        "STRATA_CONF=/tmp/evil.conf",
    ];
    let out = raw(install, Some(user), &dir, &p, &[(10, "r", &image)], &junk);
    out.assert_success();
    let mut env: Vec<&str> = out.stdout.lines().collect();
    env.sort();
    assert_eq!(env, vec!["ONLY=this", "PATH=/bin:/usr/bin"], "payload env:\n{out}");
}

#[test]
fn the_starter_is_statically_linked() {
    let Some(install) = Install::shared() else {
        return;
    };
    let out = run_as_root(&argv!["file", "-L", install.starter()], &RunOpts::new());
    if out.code == 127 {
        return strata_e2e::skip("file(1) is not installed");
    }
    assert!(out.stdout.contains("static"), "{}", out.stdout);
}

#[test]
fn only_stdio_reaches_the_payload() {
    let Some((install, user, dir, image, size)) = setup() else {
        return;
    };
    // An extra fd the user opened (not in the plan) on fd 9, and the plan's own on 10.
    let secret = dir.write("secret", "s3cret", 0o600);
    let p = plan(size, &["/bin/ls", "/proc/self/fd"]);
    let out = raw(install, Some(user), &dir, &p, &[(9, "r", &secret), (10, "r", &image)], &[]);
    out.assert_success();
    let mut fds: Vec<&str> = out.stdout.split_whitespace().collect();
    fds.sort();
    // 0-2 and the one ls opened for the directory listing.
    assert_eq!(fds, vec!["0", "1", "2", "3"], "{out}");
}

#[test]
fn policy_file_must_be_root_owned_and_not_writable_by_others() {
    let Some((_, user, dir, image, size)) = setup() else {
        return;
    };
    let install = Install::with_config("").unwrap();
    let p = plan(size, &["/bin/true"]);
    let fds = [(10, "r", image.as_path())];
    raw(&install, Some(user), &dir, &p, &fds, &[]).assert_success();

    std::os::unix::fs::chown(install.conf(), Some(user.uid), None).unwrap();
    refused(&raw(&install, Some(user), &dir, &p, &fds, &[]), "must be owned by root");
    std::os::unix::fs::chown(install.conf(), Some(0), None).unwrap();

    fs::set_permissions(install.conf(), fs::Permissions::from_mode(0o664)).unwrap();
    refused(&raw(&install, Some(user), &dir, &p, &fds, &[]), "must not be writable by group or other");
    fs::set_permissions(install.conf(), fs::Permissions::from_mode(0o644)).unwrap();

    let etc = install.prefix().join("etc/strata");
    fs::set_permissions(&etc, fs::Permissions::from_mode(0o777)).unwrap();
    refused(&raw(&install, Some(user), &dir, &p, &fds, &[]), "must not be writable by group or other");
    fs::set_permissions(&etc, fs::Permissions::from_mode(0o755)).unwrap();

    // A symlink to an identical root-owned file is refused too.
    let real = install.prefix().join("etc/strata/real.conf");
    fs::rename(install.conf(), &real).unwrap();
    std::os::unix::fs::symlink(&real, install.conf()).unwrap();
    refused(&raw(&install, Some(user), &dir, &p, &fds, &[]), "cannot open the policy file");
    fs::remove_file(install.conf()).unwrap();
    fs::rename(&real, install.conf()).unwrap();
    raw(&install, Some(user), &dir, &p, &fds, &[]).assert_success();

    // Unknown directives fail closed, naming the line.
    install.rewrite_config("allow setuid = yes\nallow everything = yes\n");
    refused(&raw(&install, Some(user), &dir, &p, &fds, &[]), "strata.conf:2");
}

#[test]
fn a_hard_linked_or_copied_starter_refuses_to_run() {
    let Some((_, user, dir, image, size)) = setup() else {
        return;
    };
    let install = Install::with_config("").unwrap();
    let p = plan(size, &["/bin/true"]);
    // A hard link elsewhere on the same filesystem (as an attacker would keep one).
    let link_dir = TestDir::new().unwrap();
    let link = link_dir.join("starter-link");
    fs::hard_link(install.starter(), &link).unwrap();
    assert_eq!(fs::metadata(install.starter()).unwrap().nlink(), 2);
    refused(&raw(&install, Some(user), &dir, &p, &[(10, "r", &image)], &[]), "hard links");
    fs::remove_file(&link).unwrap();
    // A user's own copy is not setuid root.
    let copy = link_dir.join("starter-copy");
    fs::copy(install.starter(), &copy).unwrap();
    std::os::unix::fs::chown(&copy, Some(user.uid), Some(user.gid)).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(link_dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let plan_file = dir.write("p.json", p.to_string(), 0o644);
    let out = run_as(
        user,
        &argv![RAW, &copy, &plan_file, "--fd", format!("10:r:{}", image.display())],
        &RunOpts::new(),
    );
    refused(&out, "not installed setuid root");
}

#[test]
fn limit_container_paths_compares_components_not_strings() {
    let Some((_, user, _dir, _image, _)) = setup() else {
        return;
    };
    let base = TestDir::new().unwrap();
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for d in ["data", "data2"] {
        fs::create_dir(base.join(d)).unwrap();
        fs::set_permissions(base.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    let img = busybox().unwrap().squashfs.clone();
    let inside = base.join("data/img.sqfs");
    let outside = base.join("data2/img.sqfs");
    fs::copy(&img, &inside).unwrap();
    fs::copy(&img, &outside).unwrap();
    let install =
        Install::with_config(&format!("limit container paths = {}\n", base.join("data").display())).unwrap();
    let work = TestDir::owned_by(user).unwrap();
    let size = fs::metadata(&img).unwrap().len();
    let p = plan(size, &["/bin/true"]);
    raw(&install, Some(user), &work, &p, &[(10, "r", &inside)], &[]).assert_success();
    refused(
        &raw(&install, Some(user), &work, &p, &[(10, "r", &outside)], &[]),
        "image is not in an allowed configured path",
    );
}

#[test]
fn an_upper_dir_that_is_a_symlink_or_owned_by_someone_else_is_refused() {
    let Some((install, user, dir, image, size)) = setup() else {
        return;
    };
    let debugfs_ok = run_as_root(&argv!["debugfs", "-V"], &RunOpts::new()).code != 127;
    if !debugfs_ok {
        return strata_e2e::skip("debugfs is not installed");
    }
    let make = |name: &str, script: &str| -> PathBuf {
        let path = dir.join(name);
        run_as_root(&argv!["mkfs.ext3", "-q", "-F", &path, "16M"], &RunOpts::new()).assert_success();
        run_as_root(&argv!["debugfs", "-w", "-f", "-", &path], &RunOpts::new().stdin(script))
            .assert_success();
        std::os::unix::fs::chown(&path, Some(user.uid), Some(user.gid)).unwrap();
        path
    };
    let symlinked = make("sym.img", "symlink upper /etc\nmkdir work\n");
    let foreign = make(
        "foreign.img",
        "mkdir upper\nmkdir work\nset_inode_field upper uid 4464\nset_inode_field work uid 4464\n",
    );
    for (img, text) in
        [(&symlinked, "is not a directory (symbolic links are refused)"), (&foreign, "is owned by uid 4464")]
    {
        let len = fs::metadata(img).unwrap().len();
        let mut p = plan(size, &["/bin/sh", "-c", "echo x > /probe"]);
        p["overlays"] = json!([{"fd": 11, "kind": "ext3", "offset": 0, "size": len, "writable": true}]);
        let out = raw(install, Some(user), &dir, &p, &[(10, "r", &image), (11, "w", img)], &[]);
        refused(&out, text);
    }
}

#[test]
fn a_killed_starter_leaves_no_mount_or_loop_device() {
    let Some((install, user, dir, image, size)) = setup() else {
        return;
    };
    let before = HostSnapshot::take().watching([dir.path(), install.session_dir().as_path()]);
    for delay_ms in [0u64, 1, 3, 10, 50] {
        let plan_file =
            dir.write(&format!("k{delay_ms}.json"), plan(size, &["/bin/sleep", "30"]).to_string(), 0o644);
        let args = argv![RAW, install.starter(), &plan_file, "--fd", format!("10:r:{}", image.display())];
        let running = strata_e2e::spawn_as(user, &args, &RunOpts::new());
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        running.signal(libc::SIGKILL);
        let _ = running.wait();
    }
    assert_no_leak(&before);
}

#[test]
fn an_interpreter_fd_must_be_a_regular_file_and_runs_only_as_the_caller() {
    let Some((install, user, dir, image, size)) = setup() else { return };
    let mut p = plan(size, &["sh", "-c", "id -u"]);
    p["process"]["interpreter_fd"] = json!(11);
    // A directory is no interpreter.
    let out = raw(install, Some(user), &dir, &p, &[(10, "r", &image), (11, "d", dir.path())], &[]);
    refused(&out, "fd 11 (interpreter) is not a regular file");
    // A real shell runs, as the caller.
    let shell = busybox().unwrap().sandbox.join("bin/busybox");
    let out = raw(install, Some(user), &dir, &p, &[(10, "r", &image), (11, "r", &shell)], &[]);
    out.assert_success();
    assert_eq!(out.stdout.trim(), user.uid.to_string(), "{out}");
}

/// Bytes of `path` in the page cache, as root sees it (`fincore`).
fn cached_bytes(path: &Path) -> u64 {
    let out =
        run_as_root(&argv!["fincore", "--bytes", "--noheadings", "--output", "RES", path], &RunOpts::new());
    out.assert_success();
    out.stdout.trim().parse().unwrap_or_else(|_| panic!("fincore said {:?}", out.stdout))
}

/// Drops `path` from the page cache (written back first: dirty pages stay).
fn evict(path: &Path) {
    run_as_root(&argv!["sync", path], &RunOpts::new()).assert_success();
    run_as_root(
        &argv!["dd", format!("if={}", path.display()), "iflag=nocache", "count=0", "status=none"],
        &RunOpts::new(),
    )
    .assert_success();
    assert_eq!(cached_bytes(path), 0, "{} is still cached", path.display());
}

/// The read-ahead helper (DESIGN: the payload's executable is warmed while the container is
/// built) runs as the caller and stays inside the image: symlinks pointing at host files, a
/// host path named outright, and a FIFO are all passed over; the first regular file in the
/// image is read ahead. With a single CPU there is no helper at all.
#[test]
fn the_read_ahead_helper_stays_in_the_image_and_runs_as_the_caller() {
    let Some((install, user, dir, _image, _)) = setup() else {
        return;
    };
    // Host files the helper must never touch: one only root may read, one anyone may.
    let secret = dir.write("secret", vec![7u8; 1 << 20], 0o600);
    std::os::unix::fs::chown(&secret, Some(0), Some(0)).unwrap();
    let public = dir.write("public", vec![9u8; 1 << 20], 0o644);
    // An image with symlinks to them, a FIFO, and 2 MiB of incompressible data.
    let tree = dir.join("ratree");
    run_as_root(&argv!["cp", "-a", &busybox().unwrap().sandbox, &tree], &RunOpts::new()).assert_success();
    std::os::unix::fs::symlink(&secret, tree.join("secret-link")).unwrap();
    std::os::unix::fs::symlink(format!("../../../../../../..{}", public.display()), tree.join("public-link"))
        .unwrap();
    run_as_root(&argv!["mkfifo", tree.join("fifo")], &RunOpts::new()).assert_success();
    fs::create_dir(tree.join("data")).unwrap();
    run_as_root(
        &argv!["sh", "-c", format!("head -c 2097152 /dev/urandom > {}/data/big", tree.display())],
        &RunOpts::new(),
    )
    .assert_success();
    let sq = dir.join("ra.sqfs");
    run_as_root(&argv!["mksquashfs", &tree, &sq, "-quiet", "-no-progress", "-noappend"], &RunOpts::new())
        .assert_success();
    fs::set_permissions(&sq, fs::Permissions::from_mode(0o644)).unwrap();
    let size = fs::metadata(&sq).unwrap().len();
    let mut p = plan(size, &["/bin/sh", "-c", "echo ready; exec sleep 30"]);
    p["process"]["prefetch"] = json!([
        "/secret-link",
        "/public-link",
        secret.to_str().unwrap(),
        public.to_str().unwrap(),
        "/fifo",
        "/nonexistent",
        "/data/big"
    ]);
    let plan_file = dir.write("ra.json", p.to_string(), 0o644);
    let raw_args = argv![RAW, install.starter(), &plan_file, "--fd", format!("10:r:{}", sq.display())];
    let wait_cached = |pid: u32| {
        let big = PathBuf::from(format!("/proc/{pid}/root/data/big"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if cached_bytes(&big) > 0 {
                return cached_bytes(&big);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        0
    };

    for f in [&secret, &public] {
        evict(f);
    }
    let mut running = strata_e2e::spawn_as(user, &raw_args, &RunOpts::new());
    assert!(
        running.wait_for_stdout("ready", std::time::Duration::from_secs(10)),
        "the container did not start"
    );
    let pid = running.pid().unwrap();
    let cached = wait_cached(pid);
    assert_eq!(cached_bytes(&secret), 0, "the helper read a root-only host file");
    assert_eq!(cached_bytes(&public), 0, "the helper read a host file outside the image");
    assert!(cached >= 1 << 20, "the image file was not read ahead ({cached} bytes cached)");
    // Every process in the container's mount namespace (the payload and the keeper that read
    // ahead) is the caller's, without capabilities.
    let ns = fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    let mut members = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() || fs::read_link(entry.path().join("ns/mnt")).ok() != Some(ns.clone())
        {
            continue;
        }
        let Ok(status) = fs::read_to_string(entry.path().join("status")) else { continue };
        let field = |k: &str| status.lines().find(|l| l.starts_with(k)).unwrap_or("").to_string();
        let uid = user.uid;
        assert_eq!(field("Uid:"), format!("Uid:\t{uid}\t{uid}\t{uid}\t{uid}"), "process {name}:\n{status}");
        for caps in ["CapPrm:", "CapEff:", "CapBnd:"] {
            assert_eq!(field(caps), format!("{caps}\t0000000000000000"), "process {name}:\n{status}");
        }
        members.push(name);
    }
    assert!(members.len() >= 2, "the payload and its keeper: {members:?}");
    running.signal(libc::SIGKILL);
    let _ = running.wait();

    // One CPU: no helper, so nothing but what the payload itself reads is cached.
    let mut args = argv!["taskset", "-c", "0"];
    args.extend(raw_args.iter().cloned());
    let mut running = strata_e2e::spawn_as(user, &args, &RunOpts::new());
    assert!(
        running.wait_for_stdout("ready", std::time::Duration::from_secs(10)),
        "the container did not start"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let big = PathBuf::from(format!("/proc/{}/root/data/big", running.pid().unwrap()));
    assert_eq!(cached_bytes(&big), 0, "a helper ran on a single CPU");
    running.signal(libc::SIGKILL);
    let _ = running.wait();
}
