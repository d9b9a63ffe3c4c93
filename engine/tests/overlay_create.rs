//! `strata overlay create` and `strata overlay resize` as users run them: ownership checked with
//! debugfs (also for uids above 65535), real preallocation, SIF embedding, refusals, locks held
//! by another process, and failures that leave no file and the SIF byte-identical.

mod common;
use common::*;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// e2fsprogs' tools, or skip.
fn e2fsprogs() -> bool {
    let ok = ["mke2fs", "debugfs", "e2fsck", "resize2fs"].iter().all(|t| tool(t).is_some());
    if !ok {
        eprintln!("SKIPPED: e2fsprogs not installed");
    }
    ok
}

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().to_path_buf();
    (t, p)
}

/// `image` or `image?offset=N` for e2fsprogs.
fn fs_arg(image: &Path, offset: u64) -> String {
    if offset == 0 {
        s(image).to_string()
    } else {
        format!("{}?offset={offset}", s(image))
    }
}

/// uid:gid of a path inside the filesystem, via debugfs.
fn owner(image: &Path, offset: u64, path: &str) -> String {
    let out = run_tool("debugfs", &["-R", &format!("stat {path}"), &fs_arg(image, offset)]);
    let line =
        out.lines().find(|l| l.starts_with("User:")).unwrap_or_else(|| panic!("no stat for {path}: {out}"));
    let w: Vec<&str> = line.split_whitespace().collect();
    format!("{}:{}", w[1], w[3])
}

fn fsck_clean(image: &Path, offset: u64) {
    run_tool("e2fsck", &["-fn", &fs_arg(image, offset)]);
}

fn header_ok(image: &Path, offset: u64) {
    let mut buf = vec![0u8; 2048];
    std::os::unix::fs::FileExt::read_exact_at(&File::open(image).unwrap(), &mut buf, offset).unwrap();
    assert_eq!(
        strata::image::detect::check_ext3_header(&buf),
        Ok(strata::image::detect::Probe::Found { offset: 0 })
    );
}

fn write_file(image: &Path, offset: u64, name: &str) {
    run_tool("debugfs", &["-w", "-R", &format!("write /etc/hostname {name}"), &fs_arg(image, offset)]);
}

fn read_file(image: &Path, offset: u64, name: &str) -> String {
    run_tool("debugfs", &["-R", &format!("cat {name}"), &fs_arg(image, offset)])
}

/// A SIF built from a busybox sandbox, or `None` (skipped).
fn busybox_sif(dir: &Path) -> Option<PathBuf> {
    tool("mksquashfs")?;
    let root = busybox_sandbox(&dir.join("rootfs"))?;
    let sif = dir.join("busybox.sif");
    success(&strata(["build", s(&sif), s(&root)]));
    Some(sif)
}

#[test]
fn an_overlay_image_is_preallocated_ext3_with_upper_and_work() {
    if !e2fsprogs() {
        return;
    }
    let (_t, dir) = tmp();
    let img = dir.join("overlay.img");
    success(&strata(["overlay", "create", "--size", "128", s(&img)]));
    let m = std::fs::metadata(&img).unwrap();
    assert_eq!(m.len(), 128 << 20);
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
    assert!(m.blocks() * 512 >= 128 << 20, "allocated {}", m.blocks() * 512);
    let me = format!("{}:{}", nix::unistd::getuid(), nix::unistd::getgid());
    assert_eq!(owner(&img, 0, "/upper"), me);
    assert_eq!(owner(&img, 0, "/work"), me);
    fsck_clean(&img, 0);
    header_ok(&img, 0);
    let image = strata::image::Image::open(&img, true).unwrap();
    assert_eq!(image.kind, strata::image::ImageKind::Ext3);
    let stats = run_tool("dumpe2fs", &["-h", s(&img)]);
    assert!(stats.contains("Block size:               4096"), "{stats}");
    assert!(stats.contains("Reserved block count:     0"), "{stats}");
    assert!(temporaries(&dir).is_empty());
}

#[test]
fn a_sparse_overlay_allocates_only_its_metadata() {
    if !e2fsprogs() {
        return;
    }
    let (_t, dir) = tmp();
    let img = dir.join("sparse.img");
    success(&strata(["overlay", "create", "-s", "256", "--sparse", s(&img)]));
    let m = std::fs::metadata(&img).unwrap();
    assert_eq!(m.len(), 256 << 20);
    assert!(m.blocks() * 512 < 64 << 20, "allocated {}", m.blocks() * 512);
    fsck_clean(&img, 0);
}

#[test]
fn create_dir_makes_user_owned_directories_under_upper() {
    if !e2fsprogs() {
        return;
    }
    let (_t, dir) = tmp();
    let img = dir.join("dirs.img");
    success(&strata([
        "overlay",
        "create",
        "--create-dir",
        "/usr/local/testing",
        "--create-dir",
        "/data",
        s(&img),
    ]));
    let me = format!("{}:{}", nix::unistd::getuid(), nix::unistd::getgid());
    for p in ["/upper/usr", "/upper/usr/local/testing", "/upper/data"] {
        assert_eq!(owner(&img, 0, p), me, "{p}");
    }
    let msg = fatal_of(&strata(["overlay", "create", "--create-dir", "/../etc", s(&dir.join("bad.img"))]));
    assert_eq!(msg, "overlay directory /../etc created outside of overlay layout upper");
    assert!(!dir.join("bad.img").exists());
}

#[test]
fn users_above_65535_own_their_overlay() {
    if !e2fsprogs() {
        return;
    }
    if !is_root() {
        skip!("needs root to run as another user");
    }
    let (_t, dir) = tmp();
    open_up(&dir);
    for id in [70000u32, 2_147_483_646] {
        let img = dir.join(format!("u{id}.img"));
        let Some(out) = strata_as(
            id,
            &[
                OsStr::new("overlay"),
                OsStr::new("create"),
                OsStr::new("--create-dir"),
                OsStr::new("/opt/app"),
                img.as_os_str(),
            ],
            &[],
        ) else {
            skip!("setpriv not installed");
        };
        success(&out);
        let m = std::fs::metadata(&img).unwrap();
        assert_eq!((m.uid(), m.gid()), (id, id));
        for p in ["/upper", "/work", "/upper/opt/app"] {
            assert_eq!(owner(&img, 0, p), format!("{id}:{id}"), "{p}");
        }
        fsck_clean(&img, 0);
    }
}

#[test]
fn wrong_sizes_and_existing_files_are_refused() {
    if !e2fsprogs() {
        return;
    }
    let (_t, dir) = tmp();
    let img = dir.join("small.img");
    let msg = fatal_of(&strata(["overlay", "create", "--size", "1", s(&img)]));
    assert_eq!(msg, "image size must be equal or greater than 64 MiB");
    assert!(!img.exists());

    let img = dir.join("overlay.img");
    success(&strata(["overlay", "create", s(&img)]));
    let before = std::fs::read(&img).unwrap();
    let msg = fatal_of(&strata(["overlay", "create", s(&img)]));
    assert_eq!(msg, format!("EXT3 overlay image {} already exists", s(&img)));
    assert!(std::fs::read(&img).unwrap() == before);

    let other = dir.join("notes.txt");
    std::fs::write(&other, b"my notes").unwrap();
    let msg = fatal_of(&strata(["overlay", "create", s(&other)]));
    assert!(msg.contains("already exists and is not a SIF image"), "{msg}");
    assert_eq!(std::fs::read(&other).unwrap(), b"my notes");
}

#[test]
fn a_failing_mkfs_or_an_unwritable_directory_leaves_no_file() {
    if !e2fsprogs() {
        return;
    }
    let (_t, dir) = tmp();
    let bin = dir.join("fakebin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(
        bin.join("mke2fs"),
        "#!/bin/sh\necho 'mke2fs: No space left on device while writing inode table' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(bin.join("mke2fs"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", s(&bin), std::env::var("PATH").unwrap_or_default());
    let img = dir.join("overlay.img");
    let msg = fatal_of(&strata_env(["overlay", "create", s(&img)], &[("PATH", &path)]));
    assert!(
        msg.starts_with(&format!("while creating ext3 partition in {}/overlay.img.tmp-", s(&dir))),
        "{msg}"
    );
    assert!(
        msg.ends_with(
            "mke2fs failed with exit code 1: mke2fs: No space left on device while writing \
             inode table"
        ),
        "{msg}"
    );
    assert!(!img.exists());
    assert!(temporaries(&dir).is_empty(), "{:?}", temporaries(&dir));

    if let Some(sif) = busybox_sif(&dir) {
        let before = std::fs::read(&sif).unwrap();
        let msg = fatal_of(&strata_env(["overlay", "create", s(&sif)], &[("PATH", &path)]));
        assert!(msg.contains("mke2fs failed with exit code 1"), "{msg}");
        assert!(std::fs::read(&sif).unwrap() == before, "the SIF changed");
    }

    if is_root() {
        open_up(&dir);
        let ro = dir.join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
        let img = ro.join("overlay.img");
        if let Some(out) =
            strata_as(70000, &[OsStr::new("overlay"), OsStr::new("create"), img.as_os_str()], &[])
        {
            let msg = fatal_of(&out);
            assert_eq!(
                msg,
                format!("could not create a temporary file in {}: Permission denied (os error 13)", s(&ro))
            );
            assert!(std::fs::read_dir(&ro).unwrap().next().is_none());
        }
    }
}

#[test]
fn an_overlay_partition_is_embedded_into_a_sif() {
    if !e2fsprogs() {
        return;
    }
    let (_t, dir) = tmp();
    let Some(sif) = busybox_sif(&dir) else { return };
    let err = success(&strata(["-v", "overlay", "create", "--size", "100", s(&sif)]));
    assert!(err.contains("added overlay partition 3"), "{err}");
    let list = String::from_utf8(ok(["sif", "list", s(&sif)])).unwrap();
    let row = list.lines().nth(5).unwrap_or_default();
    let arch = strata::sif::Arch::host().go_name();
    assert!(row.starts_with("3    |1       |NONE    |"), "{list}");
    assert!(row.ends_with(&format!("|FS (Ext3/Overlay/{arch})")), "{list}");
    let (offset, size) = object_range(&sif, 3);
    assert_eq!(offset % 4096, 0);
    assert_eq!(size, 100 << 20);
    let m = std::fs::metadata(&sif).unwrap();
    assert!(m.blocks() * 512 >= 100 << 20, "preallocated: {}", m.blocks() * 512);
    let me = format!("{}:{}", nix::unistd::getuid(), nix::unistd::getgid());
    assert_eq!(owner(&sif, offset, "/upper"), me);
    assert_eq!(owner(&sif, offset, "/work"), me);
    fsck_clean(&sif, offset);
    header_ok(&sif, offset);
    let image = strata::image::Image::open(&sif, true).unwrap();
    assert_eq!(image.writable_overlay().map(|p| p.id), Some(3));

    let before = std::fs::read(&sif).unwrap();
    let msg = fatal_of(&strata(["overlay", "create", s(&sif)]));
    assert_eq!(
        msg,
        format!(
            "a writable overlay partition already exists in {p} (ID: 3), delete it first with \
             \"strata sif del 3 {p}\"",
            p = s(&sif)
        )
    );
    assert!(std::fs::read(&sif).unwrap() == before);
}

#[test]
fn signed_and_encrypted_sifs_are_refused() {
    if !e2fsprogs() {
        return;
    }
    let (_t, dir) = tmp();
    let Some(sif) = busybox_sif(&dir) else { return };
    let sig = dir.join("sig");
    std::fs::write(&sig, b"-----BEGIN PGP SIGNATURE-----\n").unwrap();
    success(&strata([
        "sif",
        "add",
        "--datatype",
        "5",
        "--signhash",
        "1",
        "--signentity",
        "433FE984155206BD962725E20E8713472A879943",
        "--link",
        "2",
        s(&sif),
        s(&sig),
    ]));
    let before = std::fs::read(&sif).unwrap();
    let msg = fatal_of(&strata(["overlay", "create", s(&sif)]));
    assert_eq!(msg, format!("SIF image {} is signed: could not add writable overlay", s(&sif)));
    assert!(std::fs::read(&sif).unwrap() == before);

    let enc = dir.join("enc.sif");
    success(&strata(["sif", "new", s(&enc)]));
    let data = dir.join("data");
    std::fs::write(&data, vec![0u8; 8192]).unwrap();
    success(&strata([
        "sif",
        "add",
        "--datatype",
        "4",
        "--partfs",
        "5",
        "--parttype",
        "2",
        "--partarch",
        "2",
        "--groupid",
        "1",
        s(&enc),
        s(&data),
    ]));
    let msg = fatal_of(&strata(["overlay", "create", s(&enc)]));
    assert_eq!(msg, format!("encrypted root FS partition in {}: could not add writable overlay", s(&enc)));
}

#[test]
fn resize_grows_and_shrinks_an_image_keeping_its_files() {
    if !e2fsprogs() {
        return;
    }
    let (_t, dir) = tmp();
    let img = dir.join("overlay.img");
    success(&strata(["overlay", "create", "--size", "100", s(&img)]));
    write_file(&img, 0, "upper/kept");
    let expected = std::fs::read_to_string("/etc/hostname").unwrap();

    let err = success(&strata(["overlay", "resize", "--size", "300", s(&img)]));
    assert!(err.contains(&format!("Resized {} from 100 MiB to 300 MiB", s(&img))), "{err}");
    let m = std::fs::metadata(&img).unwrap();
    assert_eq!(m.len(), 300 << 20);
    assert!(m.blocks() * 512 >= 300 << 20, "grown part preallocated");
    assert_eq!(read_file(&img, 0, "upper/kept"), expected);
    fsck_clean(&img, 0);
    let stats = run_tool("dumpe2fs", &["-h", s(&img)]);
    assert!(stats.contains("Block count:              76800"), "{stats}");

    success(&strata(["overlay", "resize", "-s", "64", s(&img)]));
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 64 << 20);
    assert_eq!(read_file(&img, 0, "upper/kept"), expected);
    fsck_clean(&img, 0);
    header_ok(&img, 0);
    assert!(temporaries(&dir).is_empty());
}

#[test]
fn resize_grows_and_shrinks_a_sif_overlay_partition() {
    if !e2fsprogs() {
        return;
    }
    let (_t, dir) = tmp();
    let Some(sif) = busybox_sif(&dir) else { return };
    success(&strata(["overlay", "create", "--size", "64", s(&sif)]));
    let (offset, _) = object_range(&sif, 3);
    write_file(&sif, offset, "upper/kept");
    let expected = std::fs::read_to_string("/etc/hostname").unwrap();
    let squashfs_before = {
        let (o, n) = object_range(&sif, 2);
        std::fs::read(&sif).unwrap()[o as usize..(o + n) as usize].to_vec()
    };

    success(&strata(["overlay", "resize", "--size", "200", s(&sif)]));
    assert_eq!(object_range(&sif, 3), (offset, 200 << 20));
    assert_eq!(std::fs::metadata(&sif).unwrap().len(), offset + (200 << 20));
    assert_eq!(read_file(&sif, offset, "upper/kept"), expected);
    fsck_clean(&sif, offset);

    success(&strata(["overlay", "resize", "--size", "80", s(&sif)]));
    assert_eq!(object_range(&sif, 3), (offset, 80 << 20));
    assert_eq!(std::fs::metadata(&sif).unwrap().len(), offset + (80 << 20));
    assert_eq!(read_file(&sif, offset, "upper/kept"), expected);
    fsck_clean(&sif, offset);
    header_ok(&sif, offset);
    let (o, n) = object_range(&sif, 2);
    assert!(std::fs::read(&sif).unwrap()[o as usize..(o + n) as usize] == squashfs_before[..]);
    let image = strata::image::Image::open(&sif, true).unwrap();
    assert_eq!(image.writable_overlay().map(|p| p.id), Some(3));
    assert!(temporaries(&dir).is_empty());

    // Another object after the partition: it can shrink in place, not grow.
    let extra = dir.join("extra");
    std::fs::write(&extra, b"generic data").unwrap();
    success(&strata(["sif", "add", "--datatype", "7", s(&sif), s(&extra)]));
    let before = std::fs::read(&sif).unwrap();
    let msg = fatal_of(&strata(["overlay", "resize", "--size", "100", s(&sif)]));
    assert_eq!(
        msg,
        format!(
            "while resizing the overlay partition of {}: object 3 cannot grow: object 4 \
             follows it in the image; only the last object can grow",
            s(&sif)
        )
    );
    assert!(std::fs::read(&sif).unwrap() == before, "the SIF changed");
    success(&strata(["overlay", "resize", "--size", "64", s(&sif)]));
    assert_eq!(object_range(&sif, 3), (offset, 64 << 20));
    assert_eq!(read_file(&sif, offset, "upper/kept"), expected);
    fsck_clean(&sif, offset);
}

#[test]
fn resize_is_refused_while_the_overlay_is_in_use() {
    if !e2fsprogs() {
        return;
    }
    let (_t, dir) = tmp();
    let img = dir.join("overlay.img");
    success(&strata(["overlay", "create", s(&img)]));
    let before = std::fs::read(&img).unwrap();
    // This test process plays a container using the overlay read-only (`:ro`).
    let holder = File::open(&img).unwrap();
    strata::overlay::lock_range(&holder, 0, 64 << 20, false).unwrap();
    let msg = fatal_of(&strata(["overlay", "resize", "--size", "128", s(&img)]));
    assert_eq!(msg, format!("{} is in use by another container; stop it first", s(&img)));
    assert!(std::fs::read(&img).unwrap() == before);
    drop(holder);
    success(&strata(["overlay", "resize", "--size", "128", s(&img)]));

    if let Some(sif) = busybox_sif(&dir) {
        success(&strata(["overlay", "create", s(&sif)]));
        let (offset, size) = object_range(&sif, 3);
        let holder = OpenOptions::new().read(true).write(true).open(&sif).unwrap();
        strata::overlay::lock_range(&holder, offset, size, true).unwrap();
        let msg = fatal_of(&strata(["overlay", "resize", "--size", "128", s(&sif)]));
        assert_eq!(msg, format!("{} is in use by another container; stop it first", s(&sif)));
        // A lock on another part of the SIF (its root filesystem) does not stand in the way.
        drop(holder);
        let holder = File::open(&sif).unwrap();
        let (o, n) = object_range(&sif, 2);
        strata::overlay::lock_range(&holder, o, n, false).unwrap();
        success(&strata(["overlay", "resize", "--size", "128", s(&sif)]));
    }
}

#[test]
fn resize_refuses_what_is_not_an_ext3_overlay() {
    if !e2fsprogs() {
        return;
    }
    let (_t, dir) = tmp();
    let msg = fatal_of(&strata(["overlay", "resize", "--size", "10", "x.img"]));
    assert_eq!(msg, "image size must be equal or greater than 64 MiB");
    let missing = dir.join("missing.img");
    let msg = fatal_of(&strata(["overlay", "resize", "--size", "100", s(&missing)]));
    assert_eq!(msg, format!("could not open {}: No such file or directory (os error 2)", s(&missing)));
    let other = dir.join("notes.txt");
    std::fs::write(&other, vec![b'x'; 4096]).unwrap();
    let msg = fatal_of(&strata(["overlay", "resize", "--size", "100", s(&other)]));
    assert!(msg.ends_with("image format not recognized: only ext3 overlays (image files or SIF overlay partitions) can be resized"), "{msg}");
    if let Some(sif) = busybox_sif(&dir) {
        let msg = fatal_of(&strata(["overlay", "resize", "--size", "100", s(&sif)]));
        assert_eq!(
            msg,
            format!(
                "no ext3 overlay partition in {p}; create one with 'strata overlay create \
                 --size <MiB> {p}'",
                p = s(&sif)
            )
        );
    }
}
