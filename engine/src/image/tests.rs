use super::*;
use crate::testutil::{self, skip};
use std::os::unix::fs::PermissionsExt;

fn access_mode(file: &File) -> libc::c_int {
    let flags = nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
    flags & libc::O_ACCMODE
}

fn fd_flags(file: &File) -> nix::fcntl::OFlag {
    nix::fcntl::OFlag::from_bits_truncate(
        nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap(),
    )
}

fn cloexec(file: &File) -> bool {
    let flags = nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
    flags & libc::FD_CLOEXEC != 0
}

/// A squashfs holding one marker file.
fn squashfs_fixture(dir: &Path) -> Option<PathBuf> {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("squash_marker"), "x").unwrap();
    let img = dir.join("image.sqfs");
    testutil::mksquashfs(&src, &img)?;
    Some(img)
}

#[test]
fn a_directory_is_a_sandbox_opened_read_only_as_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let image = Image::open(tmp.path(), false).unwrap();
    assert_eq!(image.kind, ImageKind::Sandbox);
    assert_eq!(image.path, tmp.path().canonicalize().unwrap());
    assert!(image.rootfs.is_none());
    assert_eq!(access_mode(&image.file), libc::O_RDONLY);
    assert!(fd_flags(&image.file).contains(nix::fcntl::OFlag::O_DIRECTORY));
    assert!(cloexec(&image.file));

    // Writable keeps the directory fd read-only but records the request.
    let image = Image::open(tmp.path(), true).unwrap();
    assert_eq!(image.kind, ImageKind::Sandbox);
    assert!(image.writable);
    assert_eq!(access_mode(&image.file), libc::O_RDONLY);
}

#[test]
fn the_host_root_is_refused_as_a_sandbox() {
    let err = Image::open("/", false).unwrap_err();
    assert_eq!(err.to_string(), "/ as sandbox is not authorized");
    // Also through a path that resolves to /.
    let err = Image::open("/usr/..", false).unwrap_err();
    assert!(matches!(err, ImageError::RootAsSandbox), "{err}");
}

#[test]
fn symlinks_are_resolved_to_the_canonical_path() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let image = Image::open(&link, false).unwrap();
    assert_eq!(image.path, real.canonicalize().unwrap());
    assert_eq!(image.name(), "real");
}

#[test]
fn a_missing_path_gives_apptainers_message_naming_the_first_missing_component() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().canonicalize().unwrap();
    let arg = base.join("nope/deeper/image.sif");
    let err = Image::open(&arg, false).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "failed to retrieve path for {}: lstat {}: no such file or directory",
            arg.display(),
            base.join("nope").display()
        )
    );
    // A dangling symlink names the link.
    let link = base.join("dangling");
    std::os::unix::fs::symlink(base.join("gone"), &link).unwrap();
    let err = Image::open(&link, false).unwrap_err();
    assert!(matches!(&err, ImageError::NotFound { missing, .. } if *missing == link), "{err}");
}

#[test]
fn an_unknown_file_is_not_recognized() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("junk.img");
    std::fs::write(&f, vec![0x42u8; 8192]).unwrap();
    let err = Image::open(&f, false).unwrap_err();
    assert!(matches!(err, ImageError::UnknownFormat(_)));
    let text = err.to_string();
    assert!(text.contains("image format not recognized"), "{text}");
    assert!(text.starts_with(&f.canonicalize().unwrap().display().to_string()));

    // Shorter than the 2048 bytes Apptainer reads: nothing matches, even a SIF magic.
    let short = tmp.path().join("short.sif");
    std::fs::write(&short, b"SIF_MAGIC").unwrap();
    assert!(matches!(Image::open(&short, false).unwrap_err(), ImageError::UnknownFormat(_)));
    let empty = tmp.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(Image::open(&empty, false).unwrap_err(), ImageError::UnknownFormat(_)));
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let err = Image::open(&fifo, false).unwrap_err();
    assert!(matches!(err, ImageError::NotAFile(_)), "{err}");
    let err = Image::open("/dev/null", false).unwrap_err();
    assert!(matches!(err, ImageError::NotAFile(_)), "{err}");
}

#[test]
fn a_squashfs_image_is_the_whole_file() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(img) = squashfs_fixture(tmp.path()) else {
        skip!("mksquashfs not installed (apt-get install squashfs-tools)")
    };
    let len = std::fs::metadata(&img).unwrap().len();
    let image = Image::open(&img, false).unwrap();
    assert_eq!(image.kind, ImageKind::Squashfs);
    assert_eq!(image.rootfs, Some(Partition { fstype: FsType::Squashfs, offset: 0, size: len }));
    assert_eq!(access_mode(&image.file), libc::O_RDONLY);
    assert!(cloexec(&image.file));
    assert!(!fd_flags(&image.file).contains(nix::fcntl::OFlag::O_NONBLOCK));
    assert!(!image.writable);
    assert_eq!(detect(&img).unwrap(), ImageKind::Squashfs);
}

#[test]
fn a_squashfs_cannot_be_opened_writable() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(img) = squashfs_fixture(tmp.path()) else {
        skip!("mksquashfs not installed (apt-get install squashfs-tools)")
    };
    let err = Image::open(&img, true).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "could not set {} image writable: squashfs is a read-only filesystem",
            img.canonicalize().unwrap().display()
        )
    );
}

#[test]
fn a_squashfs_with_an_unknown_compression_is_corrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(img) = squashfs_fixture(tmp.path()) else {
        skip!("mksquashfs not installed (apt-get install squashfs-tools)")
    };
    let f = OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(&42u16.to_le_bytes(), 20).unwrap();
    drop(f);
    let err = Image::open(&img, false).unwrap_err();
    assert!(err.to_string().ends_with("corrupted image: unknown compression algorithm value 42"), "{err}");
}

#[test]
fn a_squashfs_behind_a_legacy_launch_header_starts_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(img) = squashfs_fixture(tmp.path()) else {
        skip!("mksquashfs not installed (apt-get install squashfs-tools)")
    };
    let body = std::fs::read(&img).unwrap();
    let header = b"#!/usr/bin/env run-singularity\n";
    let legacy = tmp.path().join("legacy.img");
    let mut content = header.to_vec();
    content.extend_from_slice(&body);
    std::fs::write(&legacy, &content).unwrap();
    let image = Image::open(&legacy, false).unwrap();
    assert_eq!(
        image.rootfs,
        Some(Partition { fstype: FsType::Squashfs, offset: header.len() as u64, size: body.len() as u64 })
    );
}

#[test]
fn an_ext3_image_is_accepted_read_only_and_writable() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("overlay.img");
    if testutil::mkfs("ext3", &img, 8).is_none() {
        skip!("mkfs.ext3 not installed (apt-get install e2fsprogs)")
    }
    let image = Image::open(&img, false).unwrap();
    assert_eq!(image.kind, ImageKind::Ext3);
    assert_eq!(image.rootfs, Some(Partition { fstype: FsType::Ext3, offset: 0, size: 8 << 20 }));
    assert_eq!(access_mode(&image.file), libc::O_RDONLY);

    let image = Image::open(&img, true).unwrap();
    assert!(image.writable);
    assert_eq!(access_mode(&image.file), libc::O_RDWR);
    assert!(cloexec(&image.file));
}

#[test]
fn ext4_and_ext2_images_are_not_valid_ext3() {
    let tmp = tempfile::tempdir().unwrap();
    for (fs, why) in [("ext4", "ext4 filesystem"), ("ext2", "no journal")] {
        let img = tmp.path().join(format!("{fs}.img"));
        if testutil::mkfs(fs, &img, 8).is_none() {
            skip!("mkfs.{fs} not installed (apt-get install e2fsprogs)")
        }
        let err = Image::open(&img, false).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(": file is not a valid ext3 image ("), "{fs}: {text}");
        assert!(text.contains(why), "{fs}: {text}");
    }
}

#[test]
fn unreadable_and_unwritable_images_as_an_unprivileged_user() {
    const TEST: &str = "image::tests::unreadable_and_unwritable_images_as_an_unprivileged_user";
    if testutil::running_as_user() {
        let dir = PathBuf::from(std::env::var("FIXTURE_DIR").unwrap());
        let unreadable = dir.join("unreadable.img");
        let readonly = dir.join("readonly.img");
        let err = Image::open(&unreadable, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{} is not readable by the current user, check permissions", unreadable.display())
        );
        let image = Image::open(&readonly, false).unwrap();
        assert_eq!(image.kind, ImageKind::Ext3);
        let err = Image::open(&readonly, true).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("could not use {} for writing, you don't have write permissions", readonly.display())
        );
        let err = Image::open(dir.join("locked/image.img"), false).unwrap_err();
        assert!(matches!(err, ImageError::Resolve { .. }), "{err}");
        println!("UNPRIVILEGED CHECKS PASSED");
        return;
    }

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    testutil::open_up(&dir);
    let unreadable = dir.join("unreadable.img");
    let readonly = dir.join("readonly.img");
    if testutil::mkfs("ext3", &unreadable, 8).is_none() {
        skip!("mkfs.ext3 not installed (apt-get install e2fsprogs)")
    }
    std::fs::copy(&unreadable, &readonly).unwrap();
    std::fs::set_permissions(&unreadable, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&readonly, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::create_dir(dir.join("locked")).unwrap();
    std::fs::set_permissions(dir.join("locked"), std::fs::Permissions::from_mode(0o700)).unwrap();

    let out = match testutil::rerun_as_user(TEST, 65534, &[("FIXTURE_DIR", dir.to_str().unwrap())]) {
        Ok(out) => out,
        Err(why) => skip!("{why}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("UNPRIVILEGED CHECKS PASSED"),
        "unprivileged half failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
