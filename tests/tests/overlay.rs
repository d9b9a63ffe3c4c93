//! Persistent overlays (issue 4), end to end: the documentation walkthrough, Apptainer's
//! persistent-overlay matrix (`e2e/actions/actions.go` `PersistentOverlay`, research notes §6.2)
//! adapted to strata, locking, crash safety, `--writable-tmpfs` and the overlay directives of
//! `strata.conf`. Run as the ordinary user, the user with ids above 65535, and root.

#![allow(clippy::useless_vec)] // argv! builds a Vec; most calls borrow it once

mod overlay_support;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use overlay_support::{
    debugfs_stat, ext3_owner_mode, loops_into, marker_squashfs, plain_ext3, test_sif, Who, DIR_REFUSED,
};
use strata_e2e::{
    argv, assert_no_leak, busybox, HostSnapshot, Install, RunOpts, TestUser, RUNSCRIPT_OUTPUT, TEST_OUTPUT,
};

const MIB: u64 = 1024 * 1024;
const READY: Duration = Duration::from_secs(30);

/// The user's own copy of the test SIF, as `img.sif` in `dir`.
fn own_sif(install: &Install, dir: &strata_e2e::TestDir) -> Option<PathBuf> {
    Some(dir.copy_in(test_sif(install)?, "img.sif"))
}

// ---------------------------------------------------------------------------------------------
// 1. The documentation walkthrough (apptainer-userdocs `persistent_overlays.rst`)
// ---------------------------------------------------------------------------------------------

/// Every command of the persistent-overlay page, in order, as an unprivileged user (root where
/// the page says `sudo`): a hand-made ext3 image (plain `mkfs.ext3`, and the `mkfs.ext3 -d`
/// variant), `shell --overlay` with a change that persists and is gone without the overlay, a
/// directory overlay as root with a package-style install, `sif add` of the image into a SIF and
/// `shell --writable` into it, and `e2fsck -f` + `resize2fs` with the files kept.
#[test]
fn documentation_walkthrough_works_word_for_word() {
    let (Some(install), Some(user)) = (Install::shared(), TestUser::ordinary()) else {
        return;
    };
    let who = Who::User(user);
    let dir = who.dir();
    let cwd = dir.path();
    let before = HostSnapshot::take().watching([dir.path()]);
    // The page's `ubuntu.sif`: Apptainer's busybox image when the shared test data has it.
    let reference =
        strata_e2e::shared_testdata().map(|d| d.join("apptainer/busybox_amd64.sif")).filter(|p| p.is_file());
    let image = match reference {
        Some(sif) => dir.copy_in(&sif, "busybox.sif"),
        None => {
            eprintln!("note: no busybox_amd64.sif in the shared test data; using a built SIF");
            let Some(sif) = test_sif(install) else { return };
            dir.copy_in(sif, "busybox.sif")
        }
    };
    let shell = |who: Who, cwd: &Path, flags: &[&str], image: &Path, input: &str| {
        let mut args = argv!["shell"];
        args.extend(flags.iter().map(Into::into));
        args.push(image.into());
        who.strata_with(install, &args, &RunOpts::new().cwd(cwd).stdin(input))
    };

    // "Create an overlay image manually": dd + plain mkfs.ext3 (no upper/ or work/ in it).
    who.sh(cwd, "dd if=/dev/zero of=overlay.img bs=1M count=500 && mkfs.ext3 overlay.img").assert_success();
    let overlay = dir.join("overlay.img");
    assert_eq!(fs::metadata(&overlay).unwrap().len(), 500 * MIB);

    // $ strata shell --overlay overlay.img ubuntu.sif
    // > echo Hello > /hello
    shell(who, cwd, &["--overlay", "overlay.img"], &image, "echo Hello > /hello\n").assert_success();
    let out = shell(who, cwd, &["--overlay", "overlay.img"], &image, "cat /hello\n");
    out.assert_success();
    assert_eq!(out.stdout, "Hello\n", "{out}");
    // The starter made upper/ and work/ for the user in the plain image.
    for d in ["/upper", "/work"] {
        assert_eq!(ext3_owner_mode(&overlay, d), (user.uid, user.gid, 0o755), "{d} in overlay.img");
    }
    // Without the overlay the change is gone.
    shell(who, cwd, &[], &image, "cat /hello\n")
        .assert_code(1)
        .assert_stderr_contains("can't open '/hello': No such file or directory");

    // The variant with the overlay layout made before mkfs: mkfs.ext3 -d.
    who.sh(cwd, "mkdir manual").assert_success();
    let manual = dir.join("manual");
    who.sh(
        &manual,
        "mkdir -p overlay/upper overlay/work && \
         dd if=/dev/zero of=overlay.img bs=1M count=500 && mkfs.ext3 -d overlay overlay.img",
    )
    .assert_success();
    shell(who, &manual, &["--overlay", "overlay.img"], &image, "echo Manual > /manual\n").assert_success();
    let out = shell(who, &manual, &["--overlay", "overlay.img"], &image, "cat /manual\n");
    out.assert_success();
    assert_eq!(out.stdout, "Manual\n", "{out}");

    // "Directory overlay": root only in setuid mode (the page's `sudo`).
    // $ mkdir my_overlay
    // $ sudo strata shell --overlay my_overlay/ ubuntu.sif
    // > mkdir /data; apt-get install ... (a new program in /usr/bin)
    let rootdir = Who::Root.dir();
    Who::Root.sh(rootdir.path(), "mkdir my_overlay").assert_success();
    shell(
        Who::Root,
        rootdir.path(),
        &["--overlay", "my_overlay/"],
        &image,
        "mkdir /data\nmkdir -p /usr/bin && cp /bin/busybox /usr/bin/busybox-newtool\n",
    )
    .assert_success();
    let out = shell(
        Who::Root,
        rootdir.path(),
        &["--overlay", "my_overlay/"],
        &image,
        "ls -ld /data\nbusybox-newtool echo newtool works\n",
    );
    out.assert_success();
    assert!(out.stdout.starts_with('d'), "{out}");
    assert!(out.stdout.ends_with("newtool works\n"), "{out}");
    assert!(rootdir.join("my_overlay/upper/usr/bin/busybox-newtool").is_file());
    // And without the overlay the changes are gone.
    shell(Who::Root, rootdir.path(), &[], &image, "busybox-newtool echo x\n")
        .assert_code(127)
        .assert_stderr_contains("busybox-newtool: not found");
    // "Readonly overlay": $ strata shell --overlay my_overlay:ro ubuntu.sif
    let out = shell(
        Who::Root,
        rootdir.path(),
        &["--overlay", "my_overlay:ro"],
        &image,
        "which busybox-newtool\ntouch /usr/bin/myfile\n",
    );
    out.assert_code(1).assert_stderr_contains("touch: /usr/bin/myfile: Read-only file system");
    assert_eq!(out.stdout, "/usr/bin/busybox-newtool\n", "{out}");
    // The same directory is refused for a user.
    who.strata(install, cwd, &argv!["exec", "--overlay", rootdir.join("my_overlay/"), &image, "true"])
        .assert_code(255)
        .assert_stderr_contains(DIR_REFUSED);

    // "Embed an overlay image in SIF".
    // $ strata sif add --datatype 4 --partfs 2 --parttype 4 --partarch 2 --groupid 1 image.sif overlay.img
    who.run(cwd, &argv!["cp", &image, "image.sif"]).assert_success();
    who.strata(
        install,
        cwd,
        &[
            "sif",
            "add",
            "--datatype",
            "4",
            "--partfs",
            "2",
            "--parttype",
            "4",
            "--partarch",
            "2",
            "--groupid",
            "1",
            "image.sif",
            "overlay.img",
        ],
    )
    .assert_success();
    let out = who.strata(install, cwd, &["sif", "list", "image.sif"]);
    out.assert_success();
    let ext3_line = out
        .stdout
        .lines()
        .find(|l| l.to_lowercase().contains("ext3"))
        .unwrap_or_else(|| panic!("no ext3 partition listed:\n{out}"));
    assert!(
        ext3_line.ends_with("|FS (Ext3/Overlay/amd64)") && ext3_line.contains("|1       |"),
        "{ext3_line}"
    );
    // $ strata shell --writable image.sif
    let sif = dir.join("image.sif");
    let out = shell(who, cwd, &["--writable"], &sif, "echo persisted > /persisted\ncat /hello\n");
    out.assert_success();
    assert_eq!(out.stdout, "Hello\n", "the embedded copy keeps overlay.img's files:\n{out}");
    // Read-only by default, with the change kept.
    let out = who.strata(install, cwd, &argv!["exec", &sif, "cat", "/persisted", "/hello"]);
    out.assert_success();
    assert_eq!(out.stdout, "persisted\nHello\n", "{out}");
    who.strata(install, cwd, &argv!["exec", &sif, "touch", "/nope"])
        .assert_code(1)
        .assert_stderr_contains("Read-only file system");

    // "Final note": resize the 500MB image to 700MB (e2fsck wants a terminal: script gives one).
    // $ e2fsck -f overlay.img && resize2fs overlay.img 700M
    who.sh(cwd, "script -qec 'e2fsck -f overlay.img && resize2fs overlay.img 700M' /dev/null")
        .assert_success();
    assert_eq!(fs::metadata(&overlay).unwrap().len(), 700 * MIB);
    let out = who.strata(
        install,
        cwd,
        &argv!["exec", "--overlay", "overlay.img", &image, "sh", "-c", "cat /hello && df -k / | tail -n 1"],
    );
    out.assert_success();
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("Hello"), "{out}");
    let total_kib: u64 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no df line:\n{out}"));
    assert!((600_000..720_000).contains(&total_kib), "/ should be about 700M after the resize:\n{out}");
    assert_no_leak(&before);
}

// ---------------------------------------------------------------------------------------------
// 2. Apptainer's persistent-overlay matrix (§6.2), adapted
// ---------------------------------------------------------------------------------------------

/// One row: Apptainer's number and name, the `exec` arguments, and what strata must do.
struct Row {
    id: &'static str,
    case: &'static str,
    args: Vec<std::ffi::OsString>,
    code: i32,
    /// Text stderr must contain (the exact message the user sees).
    stderr: Option<String>,
}

/// Runs Apptainer's `PersistentOverlay` rows, in order (they depend on each other), as `who`.
///
/// Rows marked F in Apptainer run with `--fakeroot`. strata has no fakeroot, so for users:
/// directory overlays are refused (`only root user can use sandbox as overlay in setuid mode`)
/// while they pass as root; ext3 rows pass, as the starter gives the user `upper/` and `work/`
/// in the plain image; deleting root's `/etc/hostname` is refused by the image's own
/// permissions (as in Apptainer without fakeroot), so users delete a root-owned file from a
/// world-writable directory instead, which persists as a whiteout all the same.
fn persistent_overlay_matrix(who: Who) {
    let Some(install) = Install::shared() else {
        return;
    };
    let Some(images) = busybox() else { return };
    let dir = who.dir();
    let cwd = dir.path();
    let before = HostSnapshot::take().watching([dir.path()]);
    let Some(sif) = own_sif(install, &dir) else {
        return;
    };
    let sandbox = dir.copy_in(&images.sandbox, "sandbox");
    who.sh(cwd, "mkdir -m 0755 overlay-dir").assert_success();
    let odir = dir.join("overlay-dir");
    let ext3 = plain_ext3(who, &dir, "ext3.img", 64);
    let ext3b = plain_ext3(who, &dir, "ext3b.img", 64);
    let sq = marker_squashfs(who, &dir, "squashfs.img");
    let embedded = dir.join("embedded.sif");
    who.run(cwd, &argv!["cp", &sif, &embedded]).assert_success();
    who.strata(install, cwd, &argv!["overlay", "create", "--size", "64", &embedded]).assert_success();

    let root = who.is_root();
    let ok = || (0, None);
    let fails = |code: i32, text: String| (code, Some(text));
    // An F row with a directory overlay: passes as root, refused for users.
    let dir_row = |root_result: (i32, Option<String>)| {
        if root {
            root_result
        } else {
            (255, Some(DIR_REFUSED.to_string()))
        }
    };
    let row = |id, case, args: Vec<std::ffi::OsString>, (code, stderr): (i32, Option<String>)| Row {
        id,
        case,
        args,
        code,
        stderr,
    };
    let o = "--overlay";
    let sq_ro = format!("{}:ro", sq.display());
    let odir_ro = format!("{}:ro", odir.display());
    let delete_target = if root { "/etc/hostname" } else { "/scratch/hostname" };
    let rows = vec![
        row("1", "overlay_create", argv![o, &odir, &sif, "touch", "/dir_overlay"], dir_row(ok())),
        row("2", "overlay_ext3_create", argv![o, &ext3, &sif, "touch", "/ext3_overlay"], ok()),
        row(
            "3",
            "overlay_multiple_create",
            argv![o, &ext3, o, &sq_ro, &sif, "touch", "/multiple_overlay_fs"],
            ok(),
        ),
        row("4", "overlay_find", argv![o, &odir, &sif, "test", "-f", "/dir_overlay"], dir_row(ok())),
        row(
            "5",
            "overlay_find_with_writable_fail",
            argv![o, &odir, "--writable", &sif, "true"],
            fails(255, "FATAL:   cannot use --overlay in conjunction with --writable".into()),
        ),
        row(
            "6",
            "overlay_find_with_writable_tmpfs",
            argv![o, &odir_ro, "--writable-tmpfs", &sif, "test", "-f", "/dir_overlay"],
            dir_row(ok()),
        ),
        row(
            "7",
            "overlay_find_with_writable_tmpfs_fail",
            argv![o, &odir, "--writable-tmpfs", &sif, "true"],
            dir_row(fails(
                255,
                format!(
                    "FATAL:   you can't specify --writable-tmpfs with another writable overlay image ({})",
                    odir.display()
                ),
            )),
        ),
        row("8", "overlay_ext3_find", argv![o, &ext3, &sif, "test", "-f", "/ext3_overlay"], ok()),
        row(
            "9",
            "overlay_multiple_writable_fail",
            argv![o, &ext3, o, &ext3, &sif, "true"],
            fails(
                255,
                format!(
                    "FATAL:   {} (overlay 1): overlaps another layer of the same file that is used for writing",
                    ext3.display()
                ),
            ),
        ),
        row(
            "9b",
            "overlay_multiple_writable_fail (two images)",
            argv![o, &ext3, o, &ext3b, &sif, "true"],
            fails(
                255,
                format!(
                    "FATAL:   you can't specify more than one writable overlay, {} contains a writable overlay, requires to use '--overlay {}:ro'",
                    ext3.display(),
                    ext3b.display()
                ),
            ),
        ),
        row("10", "overlay_squashFS_find", argv![o, &sq_ro, &sif, "test", "-f", "/squash_marker"], ok()),
        row(
            "11",
            "overlay_squashFS_find_without_ro",
            argv![o, &sq, &sif, "test", "-f", "/squash_marker"],
            fails(
                0,
                format!(
                    "WARNING: Overlay image {} is not writable, proceeding with read-only",
                    sq.display()
                ),
            ),
        ),
        row(
            "12",
            "overlay_multiple_find_ext3",
            argv![o, &ext3, o, &sq_ro, &sif, "test", "-f", "/multiple_overlay_fs"],
            ok(),
        ),
        row(
            "13",
            "overlay_multiple_find_squashfs",
            argv![o, &ext3, o, &sq_ro, &sif, "test", "-f", "/squash_marker"],
            ok(),
        ),
        row("14", "overlay_noroot", argv![o, &odir, &sif, "true"], dir_row(ok())),
        row("15", "overlay_noflag", argv![&sif, "test", "-f", "/foo_overlay"], (1, None)),
        row(
            "16",
            "SIF_writable_without_overlay_partition_issue_4329",
            argv!["--writable", &sif, "true"],
            fails(
                255,
                format!("FATAL:   no SIF writable overlay partition found in {}", sif.display()),
            ),
        ),
        // cwd is the overlay's parent: a relative path.
        row(
            "17",
            "overlay_dir_relative_path_issue_4270",
            argv![o, "overlay-dir", &sandbox, "test", "-f", "/dir_overlay"],
            dir_row(ok()),
        ),
        row(
            "17b",
            "overlay_ext3_relative_path",
            argv![o, "ext3.img", &sandbox, "test", "-f", "/ext3_overlay"],
            ok(),
        ),
        row("18", "overlay_remove", argv![o, &odir, &sif, "rm", "/etc/hostname"], dir_row(ok())),
        row(
            "19",
            "overlay_check_removed",
            argv![o, &odir, &sif, "test", "!", "-f", "/etc/hostname"],
            dir_row(ok()),
        ),
        row(
            "20",
            "overlay_ext3_remove",
            argv![o, &ext3, &sif, "rm", delete_target],
            ok(),
        ),
        row(
            "20u",
            "overlay_ext3_remove of root's file (no fakeroot)",
            argv![o, &ext3, &sif, "rm", "/etc/hostname"],
            if root {
                fails(1, "rm: can't remove '/etc/hostname': No such file or directory".into())
            } else {
                fails(1, "rm: can't remove '/etc/hostname': Permission denied".into())
            },
        ),
        row(
            "21",
            "overlay_ext3_check_removed",
            argv![o, &ext3, &sif, "test", "!", "-f", delete_target],
            ok(),
        ),
        row("21b", "removed only in the overlay", argv![&sif, "test", "-f", delete_target], ok()),
        row(
            "22a",
            "write into the embedded overlay (--writable)",
            argv!["--writable", &embedded, "touch", "/embedded_file"],
            ok(),
        ),
        row("22", "Embedded overlay partition in SIF", argv![&embedded, "ps"], ok()),
        row(
            "22b",
            "embedded overlay read-only by default",
            argv![&embedded, "test", "-f", "/embedded_file"],
            ok(),
        ),
        row(
            "22c",
            "embedded overlay read-only by default (write)",
            argv![&embedded, "touch", "/nope"],
            fails(1, "touch: /nope: Read-only file system".into()),
        ),
    ];

    let mut failures = Vec::new();
    for r in &rows {
        let mut args = argv!["exec"];
        args.extend(r.args.iter().cloned());
        let out = who.strata(install, cwd, &args);
        let good = out.code == r.code
            && out.signal.is_none()
            && !out.timed_out
            && r.stderr.as_ref().is_none_or(|t| out.stderr.contains(t.as_str()));
        if !good {
            failures.push(format!(
                "row {} ({}): expected exit {} and stderr {:?}:\n{out}",
                r.id, r.case, r.code, r.stderr
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed for {}:\n{}",
        failures.len(),
        rows.len(),
        who.name(),
        failures.join("\n")
    );

    // The deletions are whiteouts (character devices 0:0) in the upper layers.
    let whiteout = debugfs_stat(&ext3, &format!("/upper{delete_target}"));
    assert!(
        whiteout.contains("Type: character special"),
        "no whiteout for {delete_target} in ext3.img:\n{whiteout}"
    );
    assert!(whiteout.contains("Device major/minor number: 00:00"), "{whiteout}");
    if root {
        let meta = fs::symlink_metadata(odir.join("upper/etc/hostname")).unwrap();
        assert!(meta.file_type().is_char_device() && meta.rdev() == 0);
    }
    // The user owns what the starter created, the high uid in full.
    if !root {
        assert_eq!(ext3_owner_mode(&ext3, "/upper"), (who.uid(), who.gid(), 0o755));
    }
    assert_no_leak(&before);
}

#[test]
fn persistent_overlay_matrix_for_the_ordinary_user() {
    if let Some(user) = TestUser::ordinary() {
        persistent_overlay_matrix(Who::User(user));
    }
}

#[test]
fn persistent_overlay_matrix_for_a_user_with_ids_above_65535() {
    if let Some(user) = TestUser::high() {
        persistent_overlay_matrix(Who::User(user));
    }
}

#[test]
fn persistent_overlay_matrix_as_root() {
    if strata_e2e::require_root().is_some() {
        persistent_overlay_matrix(Who::Root);
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Smaller overlay behaviours (§1.2-1.5: forms, layout, ownership, stacking, refusals)
// ---------------------------------------------------------------------------------------------

#[test]
fn plain_mkfs_image_gets_upper_and_work_owned_by_the_user() {
    let (Some(install), Some(users)) = (Install::shared(), Who::users()) else {
        return;
    };
    for who in users {
        let dir = who.dir();
        let Some(sif) = own_sif(install, &dir) else {
            return;
        };
        let img = plain_ext3(who, &dir, "plain.img", 64);
        let out = who.strata(
            install,
            dir.path(),
            &argv!["exec", "-o", &img, &sif, "sh", "-c", "echo x > /made && stat -c '%u:%g' / /made"],
        );
        out.assert_success();
        let ids = format!("{}:{}", who.uid(), who.gid());
        assert_eq!(out.stdout, format!("{ids}\n{ids}\n"), "{out}");
        for d in ["/upper", "/work"] {
            assert_eq!(ext3_owner_mode(&img, d), (who.uid(), who.gid(), 0o755), "{d} for {}", who.name());
        }
    }
}

/// Mount points for binds, the home directory and the identity files live in the session's stub
/// layer: they never land in the user's overlay, which keeps only what the container wrote.
#[test]
fn mount_points_stay_out_of_the_users_overlay() {
    let (Some(install), Some(users)) = (Install::shared(), Who::users()) else {
        return;
    };
    for who in users {
        let dir = who.dir();
        let cwd = dir.path();
        let Some(sif) = own_sif(install, &dir) else {
            return;
        };
        let img = plain_ext3(who, &dir, "overlay.img", 64);
        who.sh(cwd, "mkdir hostdir").assert_success();
        who.strata(
            install,
            cwd,
            &argv![
                "exec",
                "-B",
                format!("{}:/bindpoint/deep", dir.join("hostdir").display()),
                "-o",
                &img,
                &sif,
                "sh",
                "-c",
                "test -d /bindpoint/deep && test -d \"$HOME\" && touch /made"
            ],
        )
        .assert_success();
        let out = strata_e2e::run_as_root(&argv!["debugfs", "-R", "ls -p /upper", &img], &RunOpts::new());
        out.assert_success();
        let names: Vec<&str> = out
            .stdout
            .lines()
            .filter_map(|l| l.split('/').nth(5))
            .filter(|n| !n.is_empty() && *n != "." && *n != "..")
            .collect();
        assert_eq!(names, ["made"], "{out}");
    }
}

#[test]
fn an_upper_dir_owned_by_someone_else_is_refused_but_usable_read_only() {
    let (Some(install), Some(users)) = (Install::shared(), Who::users()) else {
        return;
    };
    for who in users {
        let dir = who.dir();
        let Some(sif) = own_sif(install, &dir) else {
            return;
        };
        // Root's layout in the user's own image file.
        Who::Root
            .sh(
                dir.path(),
                "mkdir -p layout/upper layout/work && echo from-root > layout/upper/rootfile && \
                 dd if=/dev/zero of=rooted.img bs=1M count=64 status=none && \
                 mkfs.ext3 -q -F -d layout rooted.img",
            )
            .assert_success();
        let img = dir.join("rooted.img");
        std::os::unix::fs::chown(&img, Some(who.uid()), Some(who.gid())).unwrap();
        who.strata(install, dir.path(), &argv!["exec", "-o", &img, &sif, "true"])
            .assert_code(255)
            .assert_stderr_contains(&format!(
                "FATAL:   setup of overlay upper dir failed: {}/upper is owned by uid 0, not by you (uid {})",
                img.display(),
                who.uid()
            ));
        let out = who.strata(
            install,
            dir.path(),
            &argv!["exec", "-o", format!("{}:ro", img.display()), &sif, "cat", "/rootfile"],
        );
        out.assert_success();
        assert_eq!(out.stdout, "from-root\n");
    }
}

#[test]
fn an_ext4_image_is_refused_as_an_overlay() {
    let (Some(install), Some(user)) = (Install::shared(), TestUser::high()) else {
        return;
    };
    let who = Who::User(user);
    let dir = who.dir();
    let Some(sif) = own_sif(install, &dir) else {
        return;
    };
    who.sh(dir.path(), "dd if=/dev/zero of=ext4.img bs=1M count=64 status=none && mkfs.ext4 -q -F ext4.img")
        .assert_success();
    for arg in ["ext4.img", "ext4.img:ro"] {
        who.strata(install, dir.path(), &argv!["exec", "-o", arg, &sif, "true"])
            .assert_code(255)
            .assert_stderr_contains(
                "FATAL:   while loading overlay images: failed to open overlay image ext4.img",
            )
            .assert_stderr_contains("file is not a valid ext3 image");
    }
}

#[test]
fn someone_elses_image_is_used_read_only_with_a_warning() {
    let (Some(install), Some(owner), Some(other)) =
        (Install::shared(), TestUser::ordinary(), TestUser::high())
    else {
        return;
    };
    let (owner, other) = (Who::User(owner), Who::User(other));
    let dir = owner.dir();
    let Some(sif) = own_sif(install, &dir) else {
        return;
    };
    let img = plain_ext3(owner, &dir, "shared.img", 64);
    owner
        .strata(install, dir.path(), &argv!["exec", "-o", &img, &sif, "sh", "-c", "echo mine > /mine"])
        .assert_success();
    assert_eq!(fs::metadata(&img).unwrap().mode() & 0o777, 0o644);
    let out = other.strata(install, dir.path(), &argv!["exec", "-o", &img, &sif, "cat", "/mine"]);
    out.assert_success().assert_stderr_contains(&format!(
        "WARNING: Overlay image {} is not writable, proceeding with read-only",
        img.display()
    ));
    assert_eq!(out.stdout, "mine\n");
    other
        .strata(install, dir.path(), &argv!["exec", "-o", &img, &sif, "touch", "/theirs"])
        .assert_code(1)
        .assert_stderr_contains("Read-only file system");
}

/// Later `--overlay` flags sit higher (Apptainer's stacking order, §1.4); the SIF's own overlay
/// sits below them; comma lists and `APPTAINER_OVERLAY` stack the same way.
#[test]
fn later_overlays_sit_higher_in_the_stack() {
    let (Some(install), Some(user)) = (Install::shared(), TestUser::ordinary()) else {
        return;
    };
    let who = Who::User(user);
    let dir = who.dir();
    let cwd = dir.path();
    // img.sif in cwd: the paths below are relative.
    if own_sif(install, &dir).is_none() {
        return;
    }
    who.sh(
        cwd,
        "for n in one two; do mkdir $n && echo $n > $n/layer && \
         mksquashfs $n $n.sqfs -noappend -all-root -quiet -no-progress || exit 1; done",
    )
    .assert_success();
    who.run(cwd, &["cp", "img.sif", "embedded.sif"]).assert_success();
    who.strata(install, cwd, &["overlay", "create", "embedded.sif"]).assert_success();
    who.strata(install, cwd, &["exec", "-w", "embedded.sif", "sh", "-c", "echo embedded > /layer"])
        .assert_success();

    let layer = |flags: &[&str], image: &str, env: Option<&str>| {
        let mut args = argv!["exec"];
        args.extend(flags.iter().map(Into::into));
        args.extend(argv![image, "cat", "/layer"]);
        let mut opts = RunOpts::new().cwd(cwd);
        if let Some(v) = env {
            opts = opts.env("APPTAINER_OVERLAY", v);
        }
        let out = who.strata_with(install, &args, &opts);
        out.assert_success();
        out.stdout.trim().to_string()
    };
    assert_eq!(layer(&["-o", "one.sqfs:ro", "-o", "two.sqfs:ro"], "img.sif", None), "two");
    assert_eq!(layer(&["-o", "two.sqfs:ro", "-o", "one.sqfs:ro"], "img.sif", None), "one");
    assert_eq!(layer(&["--overlay", "one.sqfs:ro,two.sqfs:ro"], "img.sif", None), "two");
    assert_eq!(layer(&[], "img.sif", Some("two.sqfs:ro,one.sqfs:ro")), "one");
    assert_eq!(layer(&[], "embedded.sif", None), "embedded");
    assert_eq!(layer(&["-o", "one.sqfs:ro"], "embedded.sif", None), "one");
}

/// `sif add` without `--groupid 1` puts the overlay partition in no group: as in Apptainer, only
/// overlay partitions of the primary partition's group are used (the page says why it needs
/// `--groupid 1`).
#[test]
fn an_overlay_partition_outside_the_primary_group_is_not_used() {
    let (Some(install), Some(user)) = (Install::shared(), TestUser::high()) else {
        return;
    };
    let who = Who::User(user);
    let dir = who.dir();
    let cwd = dir.path();
    let Some(sif) = own_sif(install, &dir) else {
        return;
    };
    let img = plain_ext3(who, &dir, "overlay.img", 64);
    who.strata(install, cwd, &argv!["exec", "-o", &img, &sif, "touch", "/made"]).assert_success();
    who.strata(
        install,
        cwd,
        &[
            "sif",
            "add",
            "--datatype",
            "4",
            "--partfs",
            "2",
            "--parttype",
            "4",
            "--partarch",
            "2",
            "img.sif",
            "overlay.img",
        ],
    )
    .assert_success();
    who.strata(install, cwd, &argv!["exec", "--writable", &sif, "true"])
        .assert_code(255)
        .assert_stderr_contains(&format!(
            "FATAL:   no SIF writable overlay partition found in {}",
            sif.display()
        ));
    who.strata(install, cwd, &argv!["exec", &sif, "test", "-e", "/made"]).assert_code(1);
}

/// A SIF given to `--overlay` contributes its overlay partitions (writable unless `:ro`, like an
/// ext3 file); a SIF without one is refused rather than silently ignored (apptainer#562).
#[test]
fn a_sif_given_to_overlay_contributes_its_overlay_partition() {
    let (Some(install), Some(users)) = (Install::shared(), Who::users()) else {
        return;
    };
    for who in users {
        let dir = who.dir();
        let cwd = dir.path();
        let Some(sif) = own_sif(install, &dir) else {
            return;
        };
        who.run(cwd, &["cp", "img.sif", "layers.sif"]).assert_success();
        who.strata(install, cwd, &["overlay", "create", "layers.sif"]).assert_success();
        who.strata(install, cwd, &["exec", "-w", "layers.sif", "sh", "-c", "echo from-sif > /from_sif"])
            .assert_success();
        let exec = |args: &[&str]| {
            let mut full = vec!["exec"];
            full.extend_from_slice(args);
            who.strata(install, cwd, &full)
        };
        let out = exec(&["-o", "layers.sif", "img.sif", "cat", "/from_sif"]);
        out.assert_success();
        assert_eq!(out.stdout, "from-sif\n");
        exec(&["-o", "layers.sif", "img.sif", "touch", "/added"]).assert_success();
        exec(&["-o", "layers.sif:ro", "img.sif", "test", "-f", "/added"]).assert_success();
        exec(&["-o", "layers.sif:ro", "img.sif", "touch", "/nope"])
            .assert_code(1)
            .assert_stderr_contains("Read-only file system");
        exec(&["-o", "img.sif", "img.sif", "true"]).assert_code(255).assert_stderr_contains(&format!(
            "FATAL:   while loading overlay images: {} has no overlay partition to use",
            sif.display()
        ));
    }
}

/// Images whose layout the starter cannot use safely: no `upper/` for a read-only use, a
/// symbolic link or a file where `upper/` or `work/` should be.
#[test]
fn broken_overlay_layouts_are_refused_with_the_reason() {
    let (Some(install), Some(users)) = (Install::shared(), Who::users()) else {
        return;
    };
    for who in users {
        let dir = who.dir();
        let cwd = dir.path();
        let Some(sif) = own_sif(install, &dir) else {
            return;
        };
        let fresh = plain_ext3(who, &dir, "fresh.img", 64);
        who.sh(
            cwd,
            "mkdir -p linked/work && ln -s /etc linked/upper && \
             mkdir -p filed/upper && touch filed/work && \
             for l in linked filed; do dd if=/dev/zero of=$l.img bs=1M count=64 status=none && \
             mkfs.ext3 -q -F -d $l $l.img || exit 1; done",
        )
        .assert_success();
        let (linked, filed) = (dir.join("linked.img"), dir.join("filed.img"));
        let ro = |p: &Path| format!("{}:ro", p.display());
        let cases = [
            (
                ro(&fresh),
                format!(
                    "FATAL:   {} has no upper directory to use as an overlay",
                    fresh.display()
                ),
            ),
            (
                linked.display().to_string(),
                format!(
                    "FATAL:   setup of overlay upper dir failed: {}/upper is not a directory (symbolic links are refused)",
                    linked.display()
                ),
            ),
            (
                ro(&linked),
                format!(
                    "FATAL:   {} has no upper directory to use as an overlay",
                    linked.display()
                ),
            ),
            (
                filed.display().to_string(),
                format!(
                    "FATAL:   setup of overlay work dir failed: {}/work is not a directory",
                    filed.display()
                ),
            ),
        ];
        for (arg, message) in cases {
            who.strata(install, cwd, &argv!["exec", "-o", arg, &sif, "true"])
                .assert_code(255)
                .assert_stderr_contains(&message);
        }
    }
}

#[test]
fn overlays_the_user_cannot_open_are_refused() {
    let (Some(install), Some(users)) = (Install::shared(), Who::users()) else {
        return;
    };
    for who in users {
        let dir = who.dir();
        let cwd = dir.path();
        let Some(sif) = own_sif(install, &dir) else {
            return;
        };
        who.strata(install, cwd, &argv!["exec", "-o", "missing.img", &sif, "true"])
            .assert_code(255)
            .assert_stderr_contains(&format!(
                "FATAL:   while loading overlay images: failed to open overlay image missing.img: \
                 failed to retrieve path for missing.img: lstat {}: no such file or directory",
                dir.join("missing.img").display()
            ));
        // Root's private image in the user's directory.
        let secret = plain_ext3(Who::Root, &dir, "secret.img", 64);
        fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        for arg in ["secret.img", "secret.img:ro"] {
            who.strata(install, cwd, &argv!["exec", "-o", arg, &sif, "true"])
                .assert_code(255)
                .assert_stderr_contains(&format!(
                    "FATAL:   while loading overlay images: failed to open overlay image secret.img: \
                     {} is not readable by the current user, check permissions",
                    secret.display()
                ));
        }
    }
}

/// `-o PATH:rw` is a writable overlay (Apptainer ignores any suffix but `ro`; strata refuses the
/// others rather than guess); `STRATA_OVERLAY`, `APPTAINER_OVERLAY` and `SINGULARITY_OVERLAY`
/// give overlays below those of the command line.
#[test]
fn overlay_argument_forms() {
    let (Some(install), Some(user)) = (Install::shared(), TestUser::high()) else {
        return;
    };
    let who = Who::User(user);
    let dir = who.dir();
    let cwd = dir.path();
    if own_sif(install, &dir).is_none() {
        return;
    }
    plain_ext3(who, &dir, "overlay.img", 64);
    who.sh(
        cwd,
        "for n in one two; do mkdir $n && echo $n > $n/layer && \
         mksquashfs $n $n.sqfs -noappend -all-root -quiet -no-progress || exit 1; done",
    )
    .assert_success();
    who.strata(install, cwd, &["exec", "-o", "overlay.img:rw", "img.sif", "touch", "/rw"]).assert_success();
    who.strata(install, cwd, &["exec", "-o", "overlay.img:ro", "img.sif", "test", "-f", "/rw"])
        .assert_success();
    who.strata(install, cwd, &["exec", "-o", "overlay.img:bogus", "img.sif", "true"])
        .assert_code(255)
        .assert_stderr_contains(
            "FATAL:   overlay option \"overlay.img:bogus\": only 'ro' is allowed after the path",
        );
    for var in ["STRATA_OVERLAY", "APPTAINER_OVERLAY", "SINGULARITY_OVERLAY"] {
        let opts = RunOpts::new().cwd(cwd).env(var, "one.sqfs:ro");
        let out = who.strata_with(install, &["exec", "img.sif", "cat", "/layer"], &opts);
        out.assert_success();
        assert_eq!(out.stdout, "one\n", "{var}");
        let out = who.strata_with(install, &["exec", "-o", "two.sqfs:ro", "img.sif", "cat", "/layer"], &opts);
        out.assert_success();
        assert_eq!(out.stdout, "two\n", "{var} sits below -o");
    }
}

/// A user crafts their own image (no root needed: `debugfs -w` on their file) with a setuid-root
/// program and a device node in `upper/`: both layers and the final overlay are nosuid,nodev.
#[test]
fn a_crafted_overlay_image_gives_no_setuid_root_and_no_devices() {
    let (Some(install), Some(users)) = (Install::shared(), Who::users()) else {
        return;
    };
    for who in users {
        let dir = who.dir();
        let cwd = dir.path();
        let Some(sif) = own_sif(install, &dir) else {
            return;
        };
        who.sh(
            cwd,
            "mkdir -p L/upper L/work && cp /bin/busybox L/upper/busybox-suid && \
             dd if=/dev/zero of=crafted.img bs=1M count=64 status=none && \
             mkfs.ext3 -q -F -d L crafted.img && debugfs -w -f - crafted.img <<'EOF'
set_inode_field /upper/busybox-suid uid 0
set_inode_field /upper/busybox-suid gid 0
set_inode_field /upper/busybox-suid mode 0104755
cd /upper
mknod devnull c 1 3
set_inode_field /upper/devnull mode 020666
EOF",
        )
        .assert_success();
        for arg in ["crafted.img", "crafted.img:ro"] {
            let out = who.strata(
                install,
                cwd,
                &argv![
                    "exec",
                    "-o",
                    arg,
                    &sif,
                    "sh",
                    "-c",
                    "ls -ln /busybox-suid /devnull | cut -c1-10; /busybox-suid id -u; \
                     /busybox-suid cat /devnull"
                ],
            );
            assert_eq!(out.stdout, format!("-rwsr-xr-x\ncrw-rw-rw-\n{}\n", who.uid()), "{arg}:\n{out}");
            out.assert_code(1).assert_stderr_contains("cat: can't open '/devnull': Permission denied");
        }
    }
}

/// `run`, `test` and `shell` take overlays like `exec`; as root a directory overlay can even
/// replace the image's runscript, and the change persists.
#[test]
fn overlays_work_with_every_action() {
    let Some(install) = Install::shared() else {
        return;
    };
    let Some(everyone) = Who::everyone() else {
        return;
    };
    for who in everyone {
        let dir = who.dir();
        let cwd = dir.path();
        if own_sif(install, &dir).is_none() {
            return;
        }
        plain_ext3(who, &dir, "overlay.img", 64);
        let out = who.strata_with(
            install,
            &["shell", "-o", "overlay.img", "img.sif"],
            &RunOpts::new().cwd(cwd).stdin("echo marked > /marker\n"),
        );
        out.assert_success();
        let out = who.strata(install, cwd, &["run", "-o", "overlay.img", "img.sif", "arg"]);
        out.assert_success();
        assert_eq!(out.stdout, format!("{RUNSCRIPT_OUTPUT} arg\n"));
        let out = who.strata(install, cwd, &["test", "-o", "overlay.img:ro", "img.sif"]);
        out.assert_success();
        assert_eq!(out.stdout, format!("{TEST_OUTPUT}\n"));
        let out = who.strata_with(
            install,
            &["shell", "-o", "overlay.img:ro", "img.sif"],
            &RunOpts::new().cwd(cwd).stdin("cat /marker\n"),
        );
        out.assert_success();
        assert_eq!(out.stdout, "marked\n");
        if who.is_root() {
            who.sh(cwd, "mkdir od").assert_success();
            who.strata_with(
                install,
                &["shell", "-o", "od", "img.sif"],
                &RunOpts::new()
                    .cwd(cwd)
                    .stdin("printf '#!/bin/sh\\necho replaced\\n' > /.singularity.d/runscript\n"),
            )
            .assert_success();
            let out = who.strata(install, cwd, &["run", "-o", "od", "img.sif"]);
            out.assert_success();
            assert_eq!(out.stdout, "replaced\n");
            let out = who.strata(install, cwd, &["run", "img.sif"]);
            assert_eq!(out.stdout, format!("{RUNSCRIPT_OUTPUT}\n"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Locking
// ---------------------------------------------------------------------------------------------

/// What anyone gets while a container writes into the image.
fn in_use_by_a_writer(img: &Path) -> String {
    format!(
        "FATAL:   {} is in use for writing by another container; wait until it stops, or use a copy",
        img.display()
    )
}

/// What a writer gets while containers read the image.
fn in_use_by_readers(img: &Path) -> String {
    format!(
        "FATAL:   {0} is in use read-only by another container; use {0}:ro to share it, or wait until it stops",
        img.display()
    )
}

#[test]
fn a_second_writer_is_refused_while_the_first_runs() {
    let (Some(install), Some(users)) = (Install::shared(), Who::users()) else {
        return;
    };
    for who in users {
        let dir = who.dir();
        let cwd = dir.path();
        let before = HostSnapshot::take().watching([dir.path()]);
        let Some(sif) = own_sif(install, &dir) else {
            return;
        };
        let img = plain_ext3(who, &dir, "overlay.img", 64);
        let mut first = who.spawn_strata(
            install,
            cwd,
            // Long enough for both refusals below, each of which waits 1.5 s for the lock.
            &argv!["exec", "-o", &img, &sif, "sh", "-c", "echo ready; sleep 6; echo done"],
        );
        assert!(first.wait_for_stdout("ready", READY), "{}", first.stdout_so_far());
        who.strata(install, cwd, &argv!["exec", "-o", &img, &sif, "true"])
            .assert_code(255)
            .assert_stderr_contains(&in_use_by_a_writer(&img));
        who.strata(install, cwd, &argv!["exec", "-o", format!("{}:ro", img.display()), &sif, "true"])
            .assert_code(255)
            .assert_stderr_contains(&in_use_by_a_writer(&img));
        // Once the first has exited by itself, a new writer gets the image at once.
        let out = first.wait();
        out.assert_success();
        assert_eq!(out.stdout, "ready\ndone\n");
        who.strata(install, cwd, &argv!["exec", "-o", &img, &sif, "true"]).assert_success();
        assert_no_leak(&before);
    }
}

#[test]
fn read_only_users_share_an_image_and_keep_writers_out() {
    let (Some(install), Some(ordinary), Some(high)) =
        (Install::shared(), TestUser::ordinary(), TestUser::high())
    else {
        return;
    };
    let owner = Who::User(ordinary);
    let dir = owner.dir();
    let cwd = dir.path();
    let before = HostSnapshot::take().watching([dir.path()]);
    let Some(sif) = own_sif(install, &dir) else {
        return;
    };
    let img = plain_ext3(owner, &dir, "overlay.img", 64);
    owner
        .strata(install, cwd, &argv!["exec", "-o", &img, &sif, "sh", "-c", "echo shared > /data"])
        .assert_success();
    let ro = format!("{}:ro", img.display());
    // Three readers at once, one of them another user.
    let mut readers: Vec<_> = [owner, owner, Who::User(high)]
        .iter()
        .map(|who| {
            who.spawn_strata(
                install,
                cwd,
                &argv!["exec", "-o", &ro, &sif, "sh", "-c", "cat /data; echo ready; sleep 60"],
            )
        })
        .collect();
    for r in &mut readers {
        assert!(r.wait_for_stdout("ready", READY), "{}", r.stdout_so_far());
        assert!(r.stdout_so_far().starts_with("shared\n"));
    }
    // One more reader is fine; a writer is not.
    let out = owner.strata(install, cwd, &argv!["exec", "-o", &ro, &sif, "cat", "/data"]);
    out.assert_success();
    assert_eq!(out.stdout, "shared\n");
    owner
        .strata(install, cwd, &argv!["exec", "-o", &img, &sif, "true"])
        .assert_code(255)
        .assert_stderr_contains(&in_use_by_readers(&img));
    for r in &readers {
        r.signal(libc::SIGTERM);
    }
    for r in readers {
        r.wait();
    }
    owner.strata(install, cwd, &argv!["exec", "-o", &img, &sif, "true"]).assert_success();
    assert_no_leak(&before);
}

/// `kill -9` of a writer frees the image with the container. Without `--pid` the process the
/// user killed is the container: a new writer gets the image at once. With `--pid` the user
/// killed the monitor outside the namespace; the container dies of its parent-death signal a
/// few milliseconds later and holds the image (mounted, so rightly locked) until then: a new
/// writer is refused with the in-use message meanwhile and gets the image within a second.
#[test]
fn a_writer_killed_with_sigkill_frees_the_image() {
    let (Some(install), Some(users)) = (Install::shared(), Who::users()) else {
        return;
    };
    for who in users {
        let dir = who.dir();
        let cwd = dir.path();
        let before = HostSnapshot::take().watching([dir.path()]);
        let Some(sif) = own_sif(install, &dir) else {
            return;
        };
        let img = plain_ext3(who, &dir, "overlay.img", 64);
        for pid_ns in [false, true] {
            let mut args = argv!["exec"];
            if pid_ns {
                args.push("--pid".into());
            }
            args.extend(argv!["-o", &img, &sif, "sh", "-c", "echo ready; sleep 60"]);
            let mut writer = who.spawn_strata(install, cwd, &args);
            assert!(writer.wait_for_stdout("ready", READY), "{}", writer.stdout_so_far());
            // kill -9 <pid> (the process the user started), as a user would.
            let pid = writer.pid().unwrap();
            // SAFETY: kill(2) on the child we started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let out = writer.wait();
            assert_eq!(out.signal, Some(libc::SIGKILL), "{out}");
            let killed = Instant::now();
            let grace = if pid_ns { Duration::from_secs(1) } else { Duration::ZERO };
            loop {
                let next = who.strata(install, cwd, &argv!["exec", "-o", &img, &sif, "true"]);
                if next.success() {
                    break;
                }
                next.assert_code(255).assert_stderr_contains(&in_use_by_a_writer(&img));
                assert!(
                    killed.elapsed() < grace,
                    "the image is still in use {:?} after kill -9 (--pid: {pid_ns}):\n{next}",
                    killed.elapsed()
                );
                thread::sleep(Duration::from_millis(10));
            }
        }
        // The last container's teardown runs just after its exit: give it a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !loops_into(dir.path()).is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        assert!(loops_into(dir.path()).is_empty(), "{:?}", loops_into(dir.path()));
        assert_no_leak(&before);
    }
}

/// The image stays locked while anything of the container runs, not just its first process: a
/// daemon left behind keeps the image mounted, so a second writer must wait for it (Apptainer's
/// lock dies with its starter, and a second writer could mount the image under the daemon).
#[test]
fn a_process_left_running_keeps_the_image_locked_until_it_exits() {
    let (Some(install), Some(user)) = (Install::shared(), TestUser::ordinary()) else {
        return;
    };
    let who = Who::User(user);
    let dir = who.dir();
    let cwd = dir.path();
    let before = HostSnapshot::take().watching([dir.path()]);
    let Some(sif) = own_sif(install, &dir) else {
        return;
    };
    let img = plain_ext3(who, &dir, "overlay.img", 64);
    let out = who.strata(
        install,
        cwd,
        &argv![
            "exec",
            "-o",
            &img,
            &sif,
            "sh",
            "-c",
            "(sleep 3; echo late > /late) </dev/null >/dev/null 2>&1 & echo started"
        ],
    );
    out.assert_success();
    assert_eq!(out.stdout, "started\n");
    let left = Instant::now();
    who.strata(install, cwd, &argv!["exec", "-o", &img, &sif, "true"])
        .assert_code(255)
        .assert_stderr_contains(&in_use_by_a_writer(&img));
    assert!(left.elapsed() < Duration::from_secs(3), "too slow to test");
    loop {
        let out = who.strata(install, cwd, &argv!["exec", "-o", &img, &sif, "cat", "/late"]);
        if out.success() {
            assert_eq!(out.stdout, "late\n");
            break;
        }
        out.assert_code(255).assert_stderr_contains(&in_use_by_a_writer(&img));
        assert!(left.elapsed() < Duration::from_secs(15), "{out}");
        thread::sleep(Duration::from_millis(100));
    }
    assert_no_leak(&before);
}

#[test]
fn the_embedded_overlay_of_a_sif_is_locked_too() {
    let (Some(install), Some(user)) = (Install::shared(), TestUser::high()) else {
        return;
    };
    let who = Who::User(user);
    let dir = who.dir();
    let cwd = dir.path();
    let Some(sif) = own_sif(install, &dir) else {
        return;
    };
    who.strata(install, cwd, &argv!["overlay", "create", &sif]).assert_success();
    let mut writer = who.spawn_strata(
        install,
        cwd,
        &argv!["exec", "--writable", &sif, "sh", "-c", "echo ready; sleep 60"],
    );
    assert!(writer.wait_for_stdout("ready", READY), "{}", writer.stdout_so_far());
    who.strata(install, cwd, &argv!["exec", "--writable", &sif, "true"])
        .assert_code(255)
        .assert_stderr_contains(&in_use_by_a_writer(&sif));
    who.strata(install, cwd, &argv!["exec", &sif, "true"])
        .assert_code(255)
        .assert_stderr_contains(&in_use_by_a_writer(&sif));
    writer.signal(libc::SIGKILL);
    writer.wait();
    who.strata(install, cwd, &argv!["exec", &sif, "true"]).assert_success();
}

// ---------------------------------------------------------------------------------------------
// 5. Crash safety
// ---------------------------------------------------------------------------------------------

/// Writes `/f0`, `/f1`, ... as fast as it can; every 100 files, `sync`, then records the count
/// in `/synced` (atomically, by rename) and says so on stdout.
const WRITER: &str = "i=0; while :; do echo $i > /f$i; i=$((i+1)); \
     if [ $((i%100)) = 0 ]; then sync; echo $i > /synced.new && mv /synced.new /synced; \
     echo synced $i; fi; done";

/// Checks that every file counted in `/synced` is there with its content.
const CHECKER: &str = "read n < /synced || exit 2; i=0; while [ $i -lt $n ]; do \
     read v < /f$i && [ \"$v\" = $i ] || { echo \"bad /f$i\"; exit 1; }; i=$((i+1)); done; \
     echo $n";

#[test]
fn sigkill_in_the_middle_of_writes_leaves_a_clean_image_with_every_synced_file() {
    let (Some(install), Some(users)) = (Install::shared(), Who::users()) else {
        return;
    };
    for who in users {
        let dir = who.dir();
        let cwd = dir.path();
        let before = HostSnapshot::take().watching([dir.path()]);
        let Some(sif) = own_sif(install, &dir) else {
            return;
        };
        let img = plain_ext3(who, &dir, "overlay.img", 64);
        let started = Instant::now();
        let mut writer = who.spawn_strata(install, cwd, &argv!["exec", "-o", &img, &sif, "sh", "-c", WRITER]);
        assert!(
            writer.wait_for_stdout("synced", READY),
            "the writer never synced: {}",
            writer.stdout_so_far()
        );
        if let Some(rest) = Duration::from_secs(1).checked_sub(started.elapsed()) {
            thread::sleep(rest);
        }
        writer.signal(libc::SIGKILL);
        let out = writer.wait();
        assert_eq!(out.signal, Some(libc::SIGKILL), "{out}");
        let last_said: u64 =
            out.stdout.lines().filter_map(|l| l.strip_prefix("synced ")?.parse().ok()).max().unwrap_or(0);
        assert!(last_said >= 100, "{out}");

        // Nothing of the container is left on the host.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !loops_into(dir.path()).is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        assert!(loops_into(dir.path()).is_empty(), "{:?}", loops_into(dir.path()));
        assert_no_leak(&before);

        let fsck = who.run(cwd, &argv!["e2fsck", "-fn", &img]);
        assert_eq!(fsck.code, 0, "e2fsck -fn does not find the image clean:\n{fsck}");

        let check = who.strata(
            install,
            cwd,
            &argv!["exec", "-o", format!("{}:ro", img.display()), &sif, "sh", "-c", CHECKER],
        );
        check.assert_success();
        let recorded: u64 = check.stdout.trim().parse().unwrap();
        assert!(
            recorded >= last_said,
            "the image records {recorded} synced files, the writer said {last_said}:\n{check}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 6. --writable-tmpfs
// ---------------------------------------------------------------------------------------------

#[test]
fn writable_tmpfs_changes_work_and_vanish() {
    let (Some(install), Some(everyone)) = (Install::shared(), Who::everyone()) else {
        return;
    };
    for who in everyone {
        let dir = who.dir();
        let Some(sif) = own_sif(install, &dir) else {
            return;
        };
        let out = who.strata(
            install,
            dir.path(),
            &argv![
                "exec",
                "--writable-tmpfs",
                &sif,
                "sh",
                "-c",
                "echo x > /tmpfs_file && mkdir /e2e-dir && cat /tmpfs_file"
            ],
        );
        out.assert_success();
        assert_eq!(out.stdout, "x\n");
        who.strata(install, dir.path(), &argv!["exec", &sif, "test", "-e", "/tmpfs_file"]).assert_code(1);
        who.strata(install, dir.path(), &argv!["exec", &sif, "touch", "/tmpfs_file"])
            .assert_code(1)
            .assert_stderr_contains("Read-only file system");
    }
}

/// Apptainer's `overlay_find_with_writable_tmpfs` with an ext3 image, for users: the tmpfs is the
/// upper layer, the image stays as it was.
#[test]
fn writable_tmpfs_on_top_of_a_read_only_image() {
    let (Some(install), Some(users)) = (Install::shared(), Who::users()) else {
        return;
    };
    for who in users {
        let dir = who.dir();
        let cwd = dir.path();
        if own_sif(install, &dir).is_none() {
            return;
        }
        plain_ext3(who, &dir, "overlay.img", 64);
        who.strata(install, cwd, &["exec", "-o", "overlay.img", "img.sif", "sh", "-c", "echo base > /base"])
            .assert_success();
        let out = who.strata(
            install,
            cwd,
            &[
                "exec",
                "-o",
                "overlay.img:ro",
                "--writable-tmpfs",
                "img.sif",
                "sh",
                "-c",
                "cat /base && echo new > /base && cat /base && touch /more",
            ],
        );
        out.assert_success();
        assert_eq!(out.stdout, "base\nnew\n");
        let out = who.strata(
            install,
            cwd,
            &["exec", "-o", "overlay.img:ro", "img.sif", "sh", "-c", "cat /base; test ! -e /more"],
        );
        out.assert_success();
        assert_eq!(out.stdout, "base\n");
    }
}

#[test]
fn writable_tmpfs_holds_sessiondir_max_size() {
    let Some(install) = Install::with_config("sessiondir max size = 16\n") else {
        return;
    };
    let Some(everyone) = Who::everyone() else {
        return;
    };
    for who in everyone {
        let dir = who.dir();
        let Some(sif) = own_sif(&install, &dir) else {
            return;
        };
        let out = who.strata(
            &install,
            dir.path(),
            &argv![
                "exec",
                "--writable-tmpfs",
                &sif,
                "sh",
                "-c",
                "df -k / | tail -n 1; dd if=/dev/zero of=/big bs=1M count=20"
            ],
        );
        if who.is_root() {
            // Root's session has no cap (as in Apptainer).
            out.assert_success();
            continue;
        }
        out.assert_code(1).assert_stderr_contains("No space left on device");
        let total_kib: u64 = out
            .stdout
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no df line:\n{out}"));
        assert_eq!(total_kib, 16 * 1024, "df / should show the 16M session:\n{out}");
    }
}

// ---------------------------------------------------------------------------------------------
// 7. strata.conf directives
// ---------------------------------------------------------------------------------------------

const OVERLAY_DISABLED: &str = "FATAL:   overlay is disabled by the administrator (enable overlay = no)";

#[test]
fn enable_overlay_no_refuses_every_overlay() {
    let Some(install) = Install::with_config("enable overlay = no\n") else {
        return;
    };
    let Some(everyone) = Who::everyone() else {
        return;
    };
    for who in everyone {
        let dir = who.dir();
        let cwd = dir.path();
        let Some(sif) = own_sif(&install, &dir) else {
            return;
        };
        let img = plain_ext3(who, &dir, "overlay.img", 64);
        let sq = marker_squashfs(who, &dir, "sq.img");
        who.run(cwd, &argv!["cp", &sif, "embedded.sif"]).assert_success();
        who.strata(&install, cwd, &["overlay", "create", "embedded.sif"]).assert_success();
        for flags in [
            argv!["-o", &img],
            argv!["-o", format!("{}:ro", img.display())],
            argv!["-o", format!("{}:ro", sq.display())],
            argv!["--writable-tmpfs"],
        ] {
            let mut args = argv!["exec"];
            args.extend(flags);
            args.extend(argv![&sif, "true"]);
            who.strata(&install, cwd, &args).assert_code(255).assert_stderr_contains(OVERLAY_DISABLED);
        }
        // A SIF with an overlay partition (mounted automatically) is refused too.
        who.strata(&install, cwd, &["exec", "embedded.sif", "true"])
            .assert_code(255)
            .assert_stderr_contains(OVERLAY_DISABLED);
        // A container without overlays still runs.
        who.strata(&install, cwd, &argv!["exec", &sif, "true"]).assert_success();
    }
}

/// Apptainer's config test: with `enable overlay = no` no overlay filesystem is mounted at all
/// (`grep "\- overlay overlay" /proc/self/mountinfo` → 1), and strata.conf says that binds onto
/// paths missing from the image are refused then.
#[test]
fn enable_overlay_no_mounts_no_overlayfs() {
    let Some(install) = Install::with_config("enable overlay = no\n") else {
        return;
    };
    let Some(user) = TestUser::ordinary() else {
        return;
    };
    let who = Who::User(user);
    let dir = who.dir();
    let cwd = dir.path();
    let Some(sif) = own_sif(&install, &dir) else {
        return;
    };
    let out = who.strata(&install, cwd, &argv!["exec", &sif, "cat", "/proc/self/mountinfo"]);
    out.assert_success();
    assert!(
        !out.stdout.lines().any(|l| l.contains(" - overlay ")),
        "an overlay is mounted although 'enable overlay = no':\n{out}"
    );
    who.strata(&install, cwd, &argv!["exec", "-B", format!("{}:/not-in-image", cwd.display()), &sif, "true"])
        .assert_code(255);
}

#[test]
fn allow_container_extfs_no_refuses_ext3_overlays() {
    let Some(install) = Install::with_config("allow container extfs = no\n") else {
        return;
    };
    let Some(users) = Who::users() else {
        return;
    };
    for who in users {
        let dir = who.dir();
        let cwd = dir.path();
        let Some(sif) = own_sif(&install, &dir) else {
            return;
        };
        let img = plain_ext3(who, &dir, "overlay.img", 64);
        let sq = marker_squashfs(who, &dir, "sq.img");
        for arg in [img.display().to_string(), format!("{}:ro", img.display())] {
            who.strata(&install, cwd, &argv!["exec", "-o", arg, &sif, "true"])
                .assert_code(255)
                .assert_stderr_contains(
                    "FATAL:   configuration disallows users from running extFS containers",
                );
        }
        who.strata(
            &install,
            cwd,
            &argv!["exec", "-o", format!("{}:ro", sq.display()), &sif, "test", "-f", "/squash_marker"],
        )
        .assert_success();
    }
}

#[test]
fn allow_setuid_mount_extfs_no_refuses_ext3_for_users_only() {
    let Some(install) = Install::with_config("allow setuid-mount extfs = no\n") else {
        return;
    };
    let Some(everyone) = Who::everyone() else {
        return;
    };
    for who in everyone {
        let dir = who.dir();
        let cwd = dir.path();
        let Some(sif) = own_sif(&install, &dir) else {
            return;
        };
        let img = plain_ext3(who, &dir, "overlay.img", 64);
        who.run(cwd, &argv!["cp", &sif, "embedded.sif"]).assert_success();
        who.strata(&install, cwd, &["overlay", "create", "embedded.sif"]).assert_success();
        let runs = [
            argv!["exec", "-o", &img, &sif, "touch", "/x"],
            argv!["exec", "-o", format!("{}:ro", img.display()), &sif, "test", "-f", "/x"],
            argv!["exec", "embedded.sif", "true"],
            argv!["exec", "-w", "embedded.sif", "true"],
        ];
        for args in runs {
            let out = who.strata(&install, cwd, &args);
            if who.is_root() {
                out.assert_success();
            } else {
                out.assert_code(255).assert_stderr_contains(
                    "FATAL:   configuration disallows users from mounting extfs in setuid mode",
                );
            }
        }
    }
}

#[test]
fn limit_container_paths_applies_to_overlays() {
    let Some(user) = TestUser::ordinary() else {
        return;
    };
    let who = Who::User(user);
    let dir = who.dir();
    let cwd = dir.path();
    who.sh(cwd, "mkdir allowed allowed2").assert_success();
    let allowed = dir.join("allowed");
    let Some(install) = Install::with_config(&format!("limit container paths = {}\n", allowed.display()))
    else {
        return;
    };
    let Some(built) = test_sif(&install) else {
        return;
    };
    who.run(cwd, &argv!["cp", built, "allowed/img.sif"]).assert_success();
    let sif = allowed.join("img.sif");
    let inside = plain_ext3(who, &dir, "allowed/overlay.img", 64);
    // /allowed2 is not inside /allowed: compared component by component.
    let outside = plain_ext3(who, &dir, "allowed2/overlay.img", 64);
    who.strata(&install, cwd, &argv!["exec", "-o", &inside, &sif, "touch", "/x"]).assert_success();
    for arg in [outside.display().to_string(), format!("{}:ro", outside.display())] {
        who.strata(&install, cwd, &argv!["exec", "-o", arg, &sif, "true"])
            .assert_code(255)
            .assert_stderr_contains(&format!(
                "FATAL:   {}: image is not in an allowed configured path (limit container paths)",
                outside.display()
            ));
    }
    // A symlink inside the allowed directory does not help: the real path counts.
    who.sh(cwd, "ln -s ../allowed2/overlay.img allowed/link.img").assert_success();
    who.strata(&install, cwd, &argv!["exec", "-o", allowed.join("link.img"), &sif, "true"])
        .assert_code(255)
        .assert_stderr_contains("image is not in an allowed configured path");
}

#[test]
fn allow_container_dir_no_refuses_directory_overlays_for_root() {
    let Some(install) = Install::with_config("allow container dir = no\n") else {
        return;
    };
    let who = Who::Root;
    let dir = who.dir();
    let cwd = dir.path();
    let Some(sif) = own_sif(&install, &dir) else {
        return;
    };
    who.sh(cwd, "mkdir overlay-dir").assert_success();
    who.strata(&install, cwd, &argv!["exec", "-o", "overlay-dir", &sif, "true"])
        .assert_code(255)
        .assert_stderr_contains("FATAL:   configuration disallows users from running sandbox containers");
    who.strata(&install, cwd, &argv!["exec", &sif, "true"]).assert_success();
}

/// Starts a container writing `marker` into the ext3 overlay `img` and waits until the write
/// has returned; the container stays up (dropping the result stops it).
fn write_marker(
    install: &Install,
    who: Who,
    cwd: &Path,
    img: &Path,
    sif: &Path,
    marker: &str,
) -> strata_e2e::Running {
    let mut writer = who.spawn_strata(
        install,
        cwd,
        &argv![
            "exec",
            "-o",
            img,
            sif,
            "sh",
            "-c",
            format!("echo {marker} > /marked; echo written; sleep 60")
        ],
    );
    assert!(writer.wait_for_stdout("written", READY), "{}", writer.stdout_so_far());
    writer
}

fn file_contains(path: &Path, marker: &str) -> bool {
    let bytes = fs::read(path).unwrap();
    bytes.windows(marker.len()).any(|w| w == marker.as_bytes())
}

/// `sync writable extfs = yes` mounts the writable ext3 layer with `sync`: what the container
/// wrote is in the image file as soon as the write returns. Without it, ext3 commits every 5 s,
/// or when anyone on the host calls sync(2): so a control container of the default install
/// writes first, and a round in which the control's write reached its image too (somebody
/// synced) proves nothing and is run again.
#[test]
fn sync_writable_extfs_writes_through_to_the_image() {
    let Some(shared) = Install::shared() else {
        return;
    };
    let Some(install) = Install::with_config("sync writable extfs = yes\n") else {
        return;
    };
    let Some(user) = TestUser::ordinary() else {
        return;
    };
    let who = Who::User(user);
    let dir = who.dir();
    let cwd = dir.path();
    let Some(sif) = own_sif(&install, &dir) else {
        return;
    };
    for round in 0..5 {
        let synced_img = plain_ext3(who, &dir, &format!("synced-{round}.img"), 64);
        let control_img = plain_ext3(who, &dir, &format!("control-{round}.img"), 64);
        let tag = format!("{}-{round}-{:?}", std::process::id(), Instant::now().elapsed());
        let (synced, control) = (format!("strata-sync-{tag}"), format!("strata-ctrl-{tag}"));
        let _control = write_marker(shared, who, cwd, &control_img, &sif, &control);
        let _synced = write_marker(&install, who, cwd, &synced_img, &sif, &synced);
        let found = file_contains(&synced_img, &synced);
        if file_contains(&control_img, &control) {
            eprintln!("round {round}: the control reached its image as well (a sync ran); again");
            continue;
        }
        assert!(
            found,
            "with 'sync writable extfs = yes' the write is not in {} while the container runs",
            synced_img.display()
        );
        return;
    }
    strata_e2e::skip("every round was disturbed by a sync on the host");
}
