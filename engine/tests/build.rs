//! `strata build` as a user runs it: a busybox sandbox made at test time becomes a SIF that
//! `strata sif` and the kernel read, and comes back out with `--sandbox`; every failure is one
//! clear `FATAL:` line with nothing left behind.

mod common;
use common::*;
use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    rootfs: PathBuf,
}

/// A temp dir with a busybox sandbox in `rootfs/`; `None` without busybox-static or mksquashfs.
fn fixture() -> Option<Fixture> {
    if tool("mksquashfs").is_none() || tool("unsquashfs").is_none() {
        eprintln!("SKIPPED: squashfs-tools not installed");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let rootfs = busybox_sandbox(&dir.join("rootfs"))?;
    Some(Fixture { _tmp: tmp, dir, rootfs })
}

/// Every path under `root` with what it is: file contents, symlink targets, directories.
fn tree(root: &Path) -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                walk(root, &p, out);
                format!("dir {:o}", m.permissions().mode() & 0o7777)
            } else {
                let bytes = std::fs::read(&p).unwrap();
                format!(
                    "file {:o} {} {}",
                    m.permissions().mode() & 0o7777,
                    bytes.len(),
                    bytes.iter().map(|&b| b as u64).sum::<u64>()
                )
            };
            out.push((rel, what));
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// `unsquashfs -lln` of the SIF's root partition: "mode uid/gid ... path" lines.
fn listing(sif: &Path) -> String {
    let (offset, _) = object_range(sif, 2);
    run_tool("unsquashfs", &["-lln", "-o", &offset.to_string(), "-d", "", s(sif)])
}

#[test]
fn a_sandbox_builds_into_a_sif_with_apptainers_objects() {
    let Some(f) = fixture() else { return };
    let sif = f.dir.join("busybox.sif");
    let err = success(&strata(["build", s(&sif), s(&f.rootfs)]));
    assert!(err.contains("INFO:    Build complete: "), "{err}");

    let list = String::from_utf8(ok(["sif", "list", s(&sif)])).unwrap();
    let rows: Vec<&str> = list.lines().skip(3).collect();
    assert_eq!(rows.len(), 2, "{list}");
    assert!(rows[0].starts_with("1    |1       |NONE    |32176-"), "{list}");
    assert!(rows[0].ends_with("|Def.FILE"), "{list}");
    assert!(rows[1].starts_with("2    |1       |NONE    |"), "{list}");
    let arch = strata::sif::Arch::host().go_name();
    assert!(rows[1].ends_with(&format!("|FS (Squashfs/*System/{arch})")), "{list}");
    let (offset, _) = object_range(&sif, 2);
    assert_eq!(offset % 4096, 0);

    let bytes = std::fs::read(&sif).unwrap();
    assert_eq!(&bytes[..31], b"#!/usr/bin/env run-singularity\n");
    let def = ok(["sif", "dump", "1", s(&sif)]);
    assert_eq!(String::from_utf8(def).unwrap(), format!("bootstrap: localimage\nfrom: {}\n", s(&f.rootfs)));
    let mode = std::fs::metadata(&sif).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o755, mode, "at most 0755: {mode:o}");
    assert_eq!(mode & 0o700, 0o700);

    // strata's own resolver takes it as an image with a squashfs root.
    let image = strata::image::Image::open(&sif, false).unwrap();
    assert_eq!(image.kind, strata::image::ImageKind::Sif);
    assert_eq!(image.rootfs.unwrap().offset, offset);

    // The skeleton is there, and the sandbox's own files.
    let l = listing(&sif);
    for p in [
        "/.singularity.d/env/01-base.sh",
        "/.singularity.d/env/90-environment.sh",
        "/.singularity.d/env/99-base.sh",
        "/.singularity.d/runscript",
        "/.singularity.d/labels.json",
        "/.singularity.d/actions/run",
        "/.singularity.d/libs",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/etc/passwd",
        "/etc/group",
        "/proc",
        "/sys",
        "/dev",
        "/home",
        "/var/tmp",
        "/bin/busybox",
        "/bin/sh -> busybox",
        "/hello",
    ] {
        assert!(l.lines().any(|x| x.ends_with(p)), "{p} missing:\n{l}");
    }
    assert!(l.lines().any(|x| x.starts_with("drwxrwxrwt") && x.ends_with(" /tmp")), "{l}");
}

#[test]
fn the_users_directory_is_never_modified() {
    let Some(f) = fixture() else { return };
    let before = tree(&f.rootfs);
    success(&strata(["build", s(&f.dir.join("a.sif")), s(&f.rootfs)]));
    assert_eq!(tree(&f.rootfs), before);
}

#[test]
fn what_the_sandbox_has_wins_over_the_skeleton() {
    let Some(f) = fixture() else { return };
    let sd = f.rootfs.join(".singularity.d");
    std::fs::create_dir_all(&sd).unwrap();
    std::fs::write(sd.join("runscript"), "#!/bin/sh\necho mine\n").unwrap();
    std::fs::set_permissions(sd.join("runscript"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("usr/etc", f.rootfs.join("etc")).unwrap();
    let sif = f.dir.join("a.sif");
    success(&strata(["build", s(&sif), s(&f.rootfs)]));
    let out = f.dir.join("out");
    success(&strata(["build", "--sandbox", s(&out), s(&sif)]));
    assert_eq!(
        std::fs::read_to_string(out.join(".singularity.d/runscript")).unwrap(),
        "#!/bin/sh\necho mine\n"
    );
    assert_eq!(std::fs::read_link(out.join("etc")).unwrap(), Path::new("usr/etc"));
    assert!(out.join(".singularity.d/env/01-base.sh").is_file());
}

#[test]
fn a_sif_extracts_back_into_the_same_tree() {
    let Some(f) = fixture() else { return };
    let sif = f.dir.join("a.sif");
    success(&strata(["build", s(&sif), s(&f.rootfs)]));
    let out = f.dir.join("sandbox");
    let err = success(&strata(["build", "--sandbox", s(&out), s(&sif)]));
    assert!(err.contains("INFO:    Build complete: "), "{err}");
    let got = tree(&out);
    for entry in tree(&f.rootfs) {
        assert!(got.contains(&entry), "{entry:?} not extracted: {got:?}");
    }
    assert!(got.iter().any(|(p, _)| p == ".singularity.d/runscript"));
    assert!(temporaries(&f.dir).is_empty());

    // A bare squashfs (the partition alone) extracts as well.
    let (offset, size) = object_range(&sif, 2);
    let sqfs = f.dir.join("root.sqfs");
    let bytes = std::fs::read(&sif).unwrap();
    std::fs::write(&sqfs, &bytes[offset as usize..(offset + size) as usize]).unwrap();
    let out2 = f.dir.join("sandbox2");
    success(&strata(["build", "-s", s(&out2), s(&sqfs)]));
    assert_eq!(tree(&out2), got);
}

#[test]
fn builds_are_reproducible_with_source_date_epoch() {
    let Some(f) = fixture() else { return };
    let env = [("SOURCE_DATE_EPOCH", "1700000000")];
    let a = f.dir.join("a.sif");
    let b = f.dir.join("b.sif");
    success(&strata_env(["build", s(&a), s(&f.rootfs)], &env));
    success(&strata_env(["build", s(&b), s(&f.rootfs)], &env));
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
    let image = strata::sif::Sif::read(&std::fs::File::open(&a).unwrap()).unwrap();
    assert_eq!(image.header.id, [0; 16]);
    assert!(image.header.is_deterministic());
    let (offset, _) = object_range(&a, 2);
    let labels =
        run_tool("unsquashfs", &["-cat", "-o", &offset.to_string(), s(&a), ".singularity.d/labels.json"]);
    assert!(labels.contains("\"org.label-schema.build-date\": \"2023-11-14T22:13:20Z\""), "{labels}");
}

#[test]
fn an_existing_target_is_kept_unless_forced() {
    let Some(f) = fixture() else { return };
    let sif = f.dir.join("a.sif");
    std::fs::write(&sif, b"precious").unwrap();
    let msg = fatal_of(&strata(["build", s(&sif), s(&f.rootfs)]));
    assert_eq!(msg, format!("build target {} already exists; use --force to overwrite it", s(&sif)));
    assert_eq!(std::fs::read(&sif).unwrap(), b"precious");

    success(&strata(["build", "--force", s(&sif), s(&f.rootfs)]));
    assert!(strata::sif::is_sif(&std::fs::read(&sif).unwrap()[..128]));

    let out = f.dir.join("sandbox");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("mine"), b"x").unwrap();
    let msg = fatal_of(&strata(["build", "--sandbox", s(&out), s(&sif)]));
    assert!(msg.ends_with("already exists; use --force to overwrite it"), "{msg}");
    assert!(out.join("mine").exists());
    success(&strata(["build", "--sandbox", "-F", s(&out), s(&sif)]));
    assert!(!out.join("mine").exists());
    assert!(out.join("hello").is_file());

    let msg = fatal_of(&strata(["build", "-F", s(&out), s(&f.rootfs)]));
    assert!(msg.contains("is a directory; remove it first"), "{msg}");
    assert!(temporaries(&f.dir).is_empty());
}

#[test]
fn bad_sources_are_refused_clearly() {
    let Some(f) = fixture() else { return };
    let missing = f.dir.join("nope");
    let sif = f.dir.join("a.sif");
    let msg = fatal_of(&strata(["build", s(&sif), s(&missing)]));
    assert_eq!(msg, format!("cannot build from {}: No such file or directory (os error 2)", s(&missing)));
    let file = f.dir.join("file");
    std::fs::write(&file, b"x").unwrap();
    let msg = fatal_of(&strata(["build", s(&sif), s(&file)]));
    assert!(msg.contains("not a directory"), "{msg}");
    let msg = fatal_of(&strata(["build", s(&f.rootfs.join("inside.sif")), s(&f.rootfs)]));
    assert!(msg.contains("is inside the source directory"), "{msg}");

    let out = f.dir.join("sb");
    let msg = fatal_of(&strata(["build", "--sandbox", s(&out), s(&missing)]));
    assert!(msg.starts_with("could not open image"), "{msg}");
    let msg = fatal_of(&strata(["build", "--sandbox", s(&out), s(&file)]));
    assert!(msg.contains("image format not recognized"), "{msg}");
    if let Some(mkfs) = tool("mkfs.ext3") {
        let img = f.dir.join("ext3.img");
        std::fs::File::create(&img).unwrap().set_len(8 << 20).unwrap();
        Command::new(mkfs).args(["-q", "-F", s(&img)]).output().unwrap();
        let msg = fatal_of(&strata(["build", "--sandbox", s(&out), s(&img)]));
        assert!(msg.contains("an ext3 image cannot be extracted"), "{msg}");
    }
    assert!(!out.exists());
    assert!(temporaries(&f.dir).is_empty());
    assert!(!sif.exists());
}

#[test]
fn a_missing_or_failing_mksquashfs_leaves_nothing_behind() {
    let Some(f) = fixture() else { return };
    let sif = f.dir.join("a.sif");
    let msg = fatal_of(&strata_env(["build", s(&sif), s(&f.rootfs)], &[("PATH", "/nonexistent")]));
    assert_eq!(msg, "mksquashfs not found in PATH nor in /usr/sbin, /sbin: install squashfs-tools");

    // A mksquashfs that fails after writing part of its output.
    let bin = f.dir.join("fakebin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(
        bin.join("mksquashfs"),
        "#!/bin/sh\necho partial > \"$2\"\necho 'FATAL ERROR: out of space' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(bin.join("mksquashfs"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(&sif, b"old image").unwrap();
    let path = format!("{}:/usr/bin:/bin", s(&bin));
    let msg = fatal_of(&strata_env(["build", "--force", s(&sif), s(&f.rootfs)], &[("PATH", &path)]));
    assert_eq!(
        msg,
        format!(
            "while creating squashfs from {}: mksquashfs failed with exit code 1: FATAL ERROR: \
             out of space",
            s(&f.rootfs)
        )
    );
    assert_eq!(std::fs::read(&sif).unwrap(), b"old image");
    assert!(temporaries(&f.dir).is_empty(), "{:?}", temporaries(&f.dir));
}

#[test]
fn an_unwritable_destination_fails_before_any_work() {
    let Some(f) = fixture() else { return };
    if !is_root() {
        skip!("needs root to run as another user");
    }
    open_up(&f.dir);
    let ro = f.dir.join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sif = ro.join("a.sif");
    let Some(out) = strata_as(70000, &[OsStr::new("build"), sif.as_os_str(), f.rootfs.as_os_str()], &[])
    else {
        skip!("setpriv not installed");
    };
    let msg = fatal_of(&out);
    assert_eq!(
        msg,
        format!("could not create a temporary file in {}: Permission denied (os error 13)", s(&ro))
    );
    assert!(std::fs::read_dir(&ro).unwrap().next().is_none());
}

#[test]
fn ownership_is_kept_for_root_and_squashed_for_users() {
    let Some(f) = fixture() else { return };
    if !is_root() {
        skip!("needs root to own files as another user");
    }
    std::os::unix::fs::chown(f.rootfs.join("hello"), Some(1234), Some(4321)).unwrap();
    let sif = f.dir.join("root.sif");
    success(&strata(["build", s(&sif), s(&f.rootfs)]));
    let l = listing(&sif);
    assert!(l.lines().any(|x| x.contains(" 1234/4321 ") && x.ends_with("/hello")), "{l}");

    open_up(&f.dir);
    let user_sif = f.dir.join("user.sif");
    let Some(out) = strata_as(70000, &[OsStr::new("build"), user_sif.as_os_str(), f.rootfs.as_os_str()], &[])
    else {
        skip!("setpriv not installed");
    };
    success(&out);
    assert_eq!(std::fs::metadata(&user_sif).unwrap().uid(), 70000);
    let l = listing(&user_sif);
    assert!(l.lines().all(|x| x.is_empty() || x.contains(" 0/0 ")), "{l}");

    // The user extracts it again: the tree is theirs.
    let out_dir = f.dir.join("user-sandbox");
    let out = strata_as(
        70000,
        &[OsStr::new("build"), OsStr::new("--sandbox"), out_dir.as_os_str(), user_sif.as_os_str()],
        &[],
    )
    .unwrap();
    success(&out);
    assert_eq!(std::fs::metadata(out_dir.join("hello")).unwrap().uid(), 70000);
}

#[test]
fn the_kernel_mounts_the_built_partition() {
    let Some(f) = fixture() else { return };
    if !is_root() {
        skip!("needs root to mount");
    }
    let sif = f.dir.join("a.sif");
    success(&strata(["build", s(&sif), s(&f.rootfs)]));
    let (offset, size) = object_range(&sif, 2);
    let mnt = f.dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let opts = format!("loop,ro,offset={offset},sizelimit={size}");
    let mounted =
        Command::new("mount").args(["-t", "squashfs", "-o", &opts, s(&sif), s(&mnt)]).output().unwrap();
    if !mounted.status.success() {
        skip!("cannot mount a loop device here: {}", String::from_utf8_lossy(&mounted.stderr));
    }
    let hello = std::fs::read_to_string(mnt.join("hello"));
    let runscript = std::fs::metadata(mnt.join(".singularity.d/runscript"));
    Command::new("umount").arg(&mnt).status().unwrap();
    assert_eq!(hello.unwrap(), "hello from the sandbox\n");
    assert!(runscript.unwrap().permissions().mode() & 0o111 != 0);
}
