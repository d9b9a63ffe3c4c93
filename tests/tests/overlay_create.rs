//! `strata overlay create` and `strata overlay resize`, end to end: Apptainer's
//! `e2e/overlay/overlay.go` `testOverlayCreate` rows (research notes §6.1), the ownership of the
//! layout for users with ids above 65535, and resizing with the files kept.

#![allow(clippy::useless_vec)] // argv! builds a Vec; most calls borrow it once

mod overlay_support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use overlay_support::{allocated, ext3_owner_mode, reference_sif, test_sif, Who};
use strata_e2e::{argv, assert_no_leak, HostSnapshot, Install, Output, RunOpts};

const MIB: u64 = 1024 * 1024;

/// Notes a row whose exit code or stderr is not the expected one.
fn check(failures: &mut Vec<String>, row: &str, out: &Output, code: i32, stderr: &str) {
    if out.code != code || !out.stderr.contains(stderr) {
        failures.push(format!("row {row}: expected exit {code} and stderr {stderr:?}:\n{out}"));
    }
}

/// Apptainer's rows 1-10 (row 11, an encrypted SIF, does not apply: strata makes none), for
/// both users, each in a directory of their own.
#[test]
fn overlay_create_rows_of_apptainers_tests() {
    let (Some(install), Some(users)) = (Install::shared(), Who::users()) else {
        return;
    };
    for who in users {
        let dir = who.dir();
        let cwd = dir.path();
        let before = HostSnapshot::take().watching([dir.path()]);
        let Some(built) = test_sif(install) else {
            return;
        };
        let sif = dir.copy_in(built, "img.sif");
        let mut failures = Vec::new();
        let strata = |args: &[&str]| who.strata(install, cwd, args);

        // 1. Smaller than 64 MiB.
        let out = strata(&["overlay", "create", "--size", "1", "small.img"]);
        check(&mut failures, "1", &out, 255, "FATAL:   image size must be equal or greater than 64 MiB");
        assert!(!dir.join("small.img").exists(), "row 1 left a file");

        // 2. Sparse: full length, little space used.
        let out = strata(&["overlay", "create", "--size", "128", "--sparse", "img.sparse"]);
        check(&mut failures, "2", &out, 0, "");
        let sparse = dir.join("img.sparse");
        assert_eq!(fs::metadata(&sparse).unwrap().len(), 128 * MIB);
        assert!(allocated(&sparse) < 64 * MIB, "--sparse allocated {} bytes", allocated(&sparse));

        // 3. Preallocated, private to the user.
        let out = strata(&["overlay", "create", "--size", "128", "img"]);
        check(&mut failures, "3", &out, 0, "");
        let img = dir.join("img");
        let meta = fs::metadata(&img).unwrap();
        assert_eq!(meta.len(), 128 * MIB);
        assert!(allocated(&img) >= 128 * MIB, "not preallocated");
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (who.uid(), who.gid(), 0o600));

        // 4. Exactly N MiB, as the container sees the file.
        let out = who.strata(
            install,
            cwd,
            &argv![
                "exec",
                "-B",
                "img:/mnt/image",
                &sif,
                "sh",
                "-c",
                "[ $(stat -c %s /mnt/image) = 134217728 ]"
            ],
        );
        check(&mut failures, "4", &out, 0, "");

        // 5. An existing image is not overwritten.
        let mtime = fs::metadata(&img).unwrap().mtime();
        let out = strata(&["overlay", "create", "img"]);
        check(&mut failures, "5", &out, 255, "FATAL:   EXT3 overlay image img already exists");
        assert_eq!(fs::metadata(&img).unwrap().mtime(), mtime);

        // 6, 7. --create-dir makes a directory the user may write into.
        let out = strata(&["overlay", "create", "--create-dir", "/usr/local/testing", "imgdir"]);
        check(&mut failures, "6", &out, 0, "");
        let out = who.strata(
            install,
            cwd,
            &argv!["exec", "-o", "imgdir", &sif, "mkdir", "/usr/local/testing/perms"],
        );
        check(&mut failures, "7", &out, 0, "");

        // 8, 9. Embedding into a SIF, once.
        who.run(cwd, &argv!["cp", &sif, "unsigned.sif"]).assert_success();
        let out = strata(&["overlay", "create", "unsigned.sif"]);
        check(&mut failures, "8", &out, 0, "");
        let list = strata(&["sif", "list", "unsigned.sif"]);
        if !list.stdout.contains("|FS (Ext3/Overlay/amd64)") {
            failures.push(format!("row 8: no overlay partition listed:\n{list}"));
        }
        let out = strata(&["overlay", "create", "unsigned.sif"]);
        check(
            &mut failures,
            "9",
            &out,
            255,
            "FATAL:   a writable overlay partition already exists in unsigned.sif (ID: ",
        );
        check(&mut failures, "9", &out, 255, "delete it first with \"strata sif del ");

        // 10. A signed SIF (Apptainer's busybox image is).
        if let Some(signed) = reference_sif() {
            let signed = dir.copy_in(&signed, "signed.sif");
            let len = fs::metadata(&signed).unwrap().len();
            let out = strata(&["overlay", "create", "signed.sif"]);
            check(
                &mut failures,
                "10",
                &out,
                255,
                "FATAL:   SIF image signed.sif is signed: could not add writable overlay",
            );
            assert_eq!(fs::metadata(&signed).unwrap().len(), len);
        }

        // Beyond Apptainer's rows: a SIF the user may not write is refused with the reason, by
        // `overlay create` and by `sif add`, and stays as it was.
        let readonly = dir.copy_in(built, "readonly.sif");
        fs::set_permissions(&readonly, fs::Permissions::from_mode(0o444)).unwrap();
        let bytes = fs::read(&readonly).unwrap();
        let out = strata(&["overlay", "create", "readonly.sif"]);
        check(&mut failures, "ro", &out, 255, "FATAL:");
        check(&mut failures, "ro", &out, 255, "readonly.sif");
        check(&mut failures, "ro", &out, 255, "Permission denied");
        who.sh(cwd, "echo data > data.bin").assert_success();
        let out = strata(&["sif", "add", "--datatype", "7", "readonly.sif", "data.bin"]);
        check(&mut failures, "ro", &out, 255, "could not open image readonly.sif for writing");
        check(&mut failures, "ro", &out, 255, "chmod u+w");
        if fs::read(&readonly).unwrap() != bytes {
            failures.push("row ro: the read-only SIF changed".into());
        }

        assert!(failures.is_empty(), "for {}:\n{}", who.name(), failures.join("\n"));
        assert_no_leak(&before);
    }
}

/// `upper/`, `work/` and every `--create-dir` directory belong to the user, all 32 bits of the
/// ids (Apptainer falls back to mode 0777 above 65535, as old `mkfs.ext3 -d` kept 16 bits).
#[test]
fn overlay_create_gives_the_layout_to_the_user() {
    let (Some(install), Some(users)) = (Install::shared(), Who::users()) else {
        return;
    };
    for who in users {
        let dir = who.dir();
        who.strata(
            install,
            dir.path(),
            &["overlay", "create", "--create-dir", "/var/cache/app", "--create-dir", "/data", "overlay.img"],
        )
        .assert_success();
        let img = dir.join("overlay.img");
        for path in
            ["/upper", "/work", "/upper/var", "/upper/var/cache", "/upper/var/cache/app", "/upper/data"]
        {
            assert_eq!(
                ext3_owner_mode(&img, path),
                (who.uid(), who.gid(), 0o755),
                "{path} for {}",
                who.name()
            );
        }
    }
}

/// The page's `--create-dir` example: a user-writable directory in a root-owned tree.
/// `strata overlay create --size 1024 --create-dir /var/cache/nginx /tmp/nginx_overlay.img`,
/// `echo "test" | strata exec --overlay ... nginx.sif sh -c "cat > /var/cache/nginx/test"`.
#[test]
fn create_dir_example_from_the_documentation() {
    let (Some(install), Some(users)) = (Install::shared(), Who::users()) else {
        return;
    };
    for who in users {
        let dir = who.dir();
        let cwd = dir.path();
        let Some(built) = test_sif(install) else {
            return;
        };
        dir.copy_in(built, "nginx.sif");
        who.strata(
            install,
            cwd,
            &["overlay", "create", "--size", "64", "--create-dir", "/var/cache/nginx", "nginx_overlay.img"],
        )
        .assert_success();
        who.strata_with(
            install,
            &[
                "exec",
                "--overlay",
                "nginx_overlay.img",
                "nginx.sif",
                "sh",
                "-c",
                "cat > /var/cache/nginx/test",
            ],
            &RunOpts::new().cwd(cwd).stdin("test\n"),
        )
        .assert_success();
        let out = who.strata(
            install,
            cwd,
            &["exec", "--overlay", "nginx_overlay.img:ro", "nginx.sif", "cat", "/var/cache/nginx/test"],
        );
        out.assert_success();
        assert_eq!(out.stdout, "test\n");
    }
}

#[test]
fn overlay_create_refuses_directories_outside_the_layout() {
    let (Some(install), Some(users)) = (Install::shared(), Who::users()) else {
        return;
    };
    for who in users {
        let dir = who.dir();
        for bad in ["/x/../..", "/../etc"] {
            who.strata(install, dir.path(), &["overlay", "create", "--create-dir", bad, "out.img"])
                .assert_code(255)
                .assert_stderr_contains(&format!(
                    "FATAL:   overlay directory {bad} created outside of overlay layout"
                ));
            assert!(!dir.join("out.img").exists());
        }
    }
}

/// `strata overlay resize`: the image and its filesystem grow, the files stay; refused while a
/// container uses the image; the same for the overlay partition of a SIF.
#[test]
fn overlay_resize_keeps_the_files_and_waits_for_containers() {
    let (Some(install), Some(users)) = (Install::shared(), Who::users()) else {
        return;
    };
    for who in users {
        let dir = who.dir();
        let cwd = dir.path();
        let before = HostSnapshot::take().watching([dir.path()]);
        let Some(built) = test_sif(install) else {
            return;
        };
        dir.copy_in(built, "img.sif");
        who.run(cwd, &["cp", "img.sif", "embedded.sif"]).assert_success();
        who.strata(install, cwd, &["overlay", "create", "overlay.img"]).assert_success();
        who.strata(install, cwd, &["overlay", "create", "embedded.sif"]).assert_success();
        let write = |flags: &[&str]| {
            let mut args = argv!["exec"];
            args.extend(flags.iter().map(Into::into));
            args.extend(argv!["sh", "-c", "echo kept > /kept"]);
            who.strata(install, cwd, &args).assert_success();
        };
        write(&["-o", "overlay.img", "img.sif"]);
        write(&["-w", "embedded.sif"]);

        for (target, run) in [
            ("overlay.img", argv!["exec", "-o", "overlay.img:ro", "img.sif"]),
            ("embedded.sif", argv!["exec", "embedded.sif"]),
        ] {
            who.strata(install, cwd, &["overlay", "resize", "--size", "100", target])
                .assert_success()
                .assert_stderr_contains(&format!("Resized {target} from 64 MiB to 100 MiB"));
            let mut args = run.clone();
            args.extend(argv!["sh", "-c", "cat /kept && df -k / | tail -n 1"]);
            let out = who.strata(install, cwd, &args);
            out.assert_success();
            let mut lines = out.stdout.lines();
            assert_eq!(lines.next(), Some("kept"), "{out}");
            let kib: u64 = lines
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no df line:\n{out}"));
            assert!((85_000..103_000).contains(&kib), "{target}:\n{out}");

            // While a container has it: refused, untouched.
            let mut args = run.clone();
            args.extend(argv!["sh", "-c", "echo ready; sleep 60"]);
            let mut holder = who.spawn_strata(install, cwd, &args);
            assert!(holder.wait_for_stdout("ready", std::time::Duration::from_secs(30)));
            let len = fs::metadata(dir.join(target)).unwrap().len();
            who.strata(install, cwd, &["overlay", "resize", "--size", "120", target])
                .assert_code(255)
                .assert_stderr_contains(&format!(
                    "FATAL:   {target} is in use by another container; stop it first"
                ));
            assert_eq!(fs::metadata(dir.join(target)).unwrap().len(), len);
            holder.signal(libc::SIGKILL);
            holder.wait();
        }
        assert_eq!(fs::metadata(dir.join("overlay.img")).unwrap().len(), 100 * MIB);
        who.strata(install, cwd, &["overlay", "resize", "--size", "32", "overlay.img"])
            .assert_code(255)
            .assert_stderr_contains("FATAL:   image size must be equal or greater than 64 MiB");
        assert_no_leak(&before);
    }
}
