//! SIF resolution against the reference images and against SIFs assembled here from real
//! squashfs/ext3/ext4 filesystems.

use super::*;
use crate::testutil::{self, skip};

const CAPACITY: usize = 8;
const DESC_LEN: usize = 585;
const DESC_OFFSET: usize = 4096;
const ALIGN: usize = 4096;

/// One object of a test SIF.
struct Obj {
    /// `None`: a JSON.Generic object; `Some((fs, part, arch))`: a partition.
    part: Option<(i32, i32, &'static str)>,
    group: u32,
    data: Vec<u8>,
    name: &'static str,
}

const FS_SQUASH: i32 = 1;
const FS_EXT3: i32 = 2;
const FS_RAW: i32 = 4;
const FS_ENCRYPTED: i32 = 5;
const PART_SYSTEM: i32 = 1;
const PART_PRIMSYS: i32 = 2;
const PART_DATA: i32 = 3;
const PART_OVERLAY: i32 = 4;

fn part(fs: i32, parttype: i32, arch: &'static str, group: u32, data: &[u8]) -> Obj {
    Obj { part: Some((fs, parttype, arch)), group, data: data.to_vec(), name: "" }
}

/// A SIF laid out as the reference library lays it out: header, 8 descriptor slots at 4096,
/// partitions aligned to 4096.
fn build_sif(objs: &[Obj]) -> Vec<u8> {
    let data_offset = DESC_OFFSET + CAPACITY * DESC_LEN;
    let mut placed = Vec::new();
    let mut cursor = data_offset;
    for o in objs {
        let off = if o.part.is_some() { cursor.div_ceil(ALIGN) * ALIGN } else { cursor };
        placed.push(off);
        cursor = off + o.data.len();
    }
    let mut b = vec![0u8; cursor];
    b[32..42].copy_from_slice(b"SIF_MAGIC\0");
    b[42..45].copy_from_slice(b"01\0");
    b[45..48].copy_from_slice(b"02\0");
    let put = |b: &mut [u8], at: usize, v: i64| b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    put(&mut b, 80, (CAPACITY - objs.len()) as i64);
    put(&mut b, 88, CAPACITY as i64);
    put(&mut b, 96, DESC_OFFSET as i64);
    put(&mut b, 104, (CAPACITY * DESC_LEN) as i64);
    put(&mut b, 112, data_offset as i64);
    put(&mut b, 120, (cursor - data_offset) as i64);
    for (i, (o, off)) in objs.iter().zip(&placed).enumerate() {
        let d = DESC_OFFSET + i * DESC_LEN;
        let datatype: i32 = if o.part.is_some() { 0x4004 } else { 0x4006 };
        b[d..d + 4].copy_from_slice(&datatype.to_le_bytes());
        b[d + 4] = 1;
        b[d + 5..d + 9].copy_from_slice(&(i as u32 + 1).to_le_bytes());
        b[d + 9..d + 13].copy_from_slice(&(0xf000_0000u32 | o.group).to_le_bytes());
        put(&mut b, d + 17, *off as i64);
        put(&mut b, d + 25, o.data.len() as i64);
        put(&mut b, d + 33, o.data.len() as i64);
        b[d + 73..d + 73 + o.name.len()].copy_from_slice(o.name.as_bytes());
        if let Some((fs, pt, arch)) = o.part {
            let e = d + 201;
            b[e..e + 4].copy_from_slice(&fs.to_le_bytes());
            b[e + 4..e + 8].copy_from_slice(&pt.to_le_bytes());
            b[e + 8..e + 10].copy_from_slice(arch.as_bytes());
        }
        b[*off..*off + o.data.len()].copy_from_slice(&o.data);
    }
    b
}

/// Real filesystems to embed: a squashfs, an ext3 and an ext4 image.
struct Filesystems {
    squashfs: Vec<u8>,
    ext3: Vec<u8>,
    ext4: Vec<u8>,
}

fn filesystems(dir: &Path) -> Result<Filesystems, String> {
    let src = dir.join("rootfs");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(src.join("marker"), "rootfs").unwrap();
    let sq = dir.join("root.sqfs");
    testutil::mksquashfs(&src, &sq).ok_or("mksquashfs not installed (apt-get install squashfs-tools)")?;
    let e3 = dir.join("overlay.ext3");
    testutil::mkfs("ext3", &e3, 4).ok_or("mkfs.ext3 not installed (apt-get install e2fsprogs)")?;
    let e4 = dir.join("overlay.ext4");
    testutil::mkfs("ext4", &e4, 4).ok_or("mkfs.ext4 not installed (apt-get install e2fsprogs)")?;
    Ok(Filesystems {
        squashfs: std::fs::read(sq).unwrap(),
        ext3: std::fs::read(e3).unwrap(),
        ext4: std::fs::read(e4).unwrap(),
    })
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.canonicalize().unwrap()
}

fn offset_of(sif: &[u8], id: u32) -> u64 {
    let d = DESC_OFFSET + (id as usize - 1) * DESC_LEN;
    i64::from_le_bytes(sif[d + 17..d + 25].try_into().unwrap()) as u64
}

#[test]
fn busybox_sif_has_an_amd64_squashfs_root() {
    let shared = match testutil::shared_dir() {
        Ok(d) => d,
        Err(why) => skip!("{why}"),
    };
    let path = shared.join("testdata/apptainer/busybox_amd64.sif");
    if arch::host_arch() != "amd64" && !arch::host_can_run("amd64") {
        let err = Image::open(&path, false).unwrap_err();
        assert!(matches!(err, ImageError::Arch { .. }), "{err}");
        return;
    }
    let image = Image::open(&path, false).unwrap();
    assert_eq!(image.kind, ImageKind::Sif);
    let root = image.rootfs().unwrap();
    assert_eq!(root.fstype, FsType::Squashfs);
    // The primary partition of this image starts at 45056 (`unsquashfs -o 45056` reads it).
    assert_eq!(root.offset, 45056);
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(root.offset + root.size <= len);
    let mut magic = [0u8; 4];
    image.file.read_exact_at(&mut magic, root.offset).unwrap();
    assert_eq!(&magic, b"hsqs");
    assert!(image.overlays.is_empty());
    assert!(image.data.is_empty());
    assert!(image.writable_overlay().is_none());
    assert_eq!(image.name(), "busybox_amd64.sif");

    // Writable needs an overlay partition to write into.
    let err = Image::open(&path, true).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("no SIF writable overlay partition found in {}", path.display())),
        "{err}"
    );
}

#[test]
fn reference_sif_images() {
    let shared = match testutil::shared_dir() {
        Ok(d) => d,
        Err(why) => skip!("{why}"),
    };
    let images = shared.join("testdata/sif/images");
    let mut seen = 0;
    for entry in std::fs::read_dir(&images).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if !name.ends_with(".sif") {
            continue;
        }
        seen += 1;
        let result = Image::open(&path, false);
        match name.as_str() {
            // root.squashfs (zlib) as a 386 primary partition at 36864; the Raw System partition
            // and the group-2 ext2 "Ext3" System partition are neither overlay nor data.
            n if (n.starts_with("one-group") || n.starts_with("two-groups")) && !n.contains("legacy") => {
                if !arch::host_can_run("386") {
                    assert!(matches!(result, Err(ImageError::Arch { .. })), "{name}");
                    continue;
                }
                let image = result.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(image.kind, ImageKind::Sif, "{name}");
                assert_eq!(
                    image.rootfs,
                    Some(Partition { fstype: FsType::Squashfs, offset: 36864, size: 4096 }),
                    "{name}"
                );
                assert!(image.overlays.is_empty(), "{name}");
                assert!(image.data.is_empty(), "{name}");
            }
            // Legacy images: the "squashfs" primary partition is the 4 bytes de ad be ef.
            n if n.contains("legacy") => {
                let err = result.unwrap_err();
                assert!(
                    matches!(
                        err,
                        ImageError::SystemPartition { id: 2, source: PartitionError::NotSquashfs, .. }
                    ),
                    "{name}: {err}"
                );
                assert!(
                    err.to_string().contains(
                        "while checking system partition header (object 2): error while \
                         checking squashfs header: not a valid squashfs image"
                    ),
                    "{name}: {err}"
                );
            }
            // No partition at all: opens, but has no root filesystem.
            _ => {
                let image = result.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(image.kind, ImageKind::Sif, "{name}");
                assert!(image.rootfs.is_none(), "{name}");
                let err = image.rootfs().unwrap_err();
                assert_eq!(err.to_string(), format!("no root filesystem found in {}", path.display()));
            }
        }
    }
    assert!(seen >= 5, "only {seen} reference images in {}", images.display());
}

#[test]
fn overlays_follow_apptainers_group_and_header_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = match filesystems(tmp.path()) {
        Ok(fs) => fs,
        Err(why) => skip!("{why}"),
    };
    let host = arch::host_arch();
    let mut objs = vec![
        Obj { part: None, group: 1, data: b"{}".to_vec(), name: "inspect-metadata.json" },
        part(FS_SQUASH, PART_PRIMSYS, host_code(host), 1, &fs.squashfs), // 2: root
        part(FS_EXT3, PART_OVERLAY, "02", 1, &fs.ext3),                  // 3: used (arch not checked)
        part(FS_EXT3, PART_OVERLAY, host_code(host), 2, &fs.ext3),       // 4: other group
        part(FS_EXT3, PART_OVERLAY, host_code(host), 1, &fs.ext4),       // 5: ext4: skipped
        part(FS_SQUASH, PART_OVERLAY, host_code(host), 1, &fs.squashfs), // 6: used
        part(FS_EXT3, PART_DATA, host_code(host), 3, &fs.ext3),          // 7: data, any group
        part(FS_RAW, PART_DATA, host_code(host), 1, b"raw bytes"),       // 8: raw data: skipped
    ];
    objs[2].name = "overlay";
    let bytes = build_sif(&objs);
    let path = write(tmp.path(), "image.sif", &bytes);

    let image = Image::open(&path, false).unwrap();
    assert_eq!(image.kind, ImageKind::Sif);
    assert!(!image.writable);
    assert_eq!(
        image.rootfs,
        Some(Partition {
            fstype: FsType::Squashfs,
            offset: offset_of(&bytes, 2),
            size: fs.squashfs.len() as u64
        })
    );
    let ids: Vec<u32> = image.overlays.iter().map(|p| p.id).collect();
    assert_eq!(ids, [3, 6]);
    assert_eq!(image.overlays[0].name, "overlay");
    assert_eq!(
        image.overlays[0].partition,
        Partition { fstype: FsType::Ext3, offset: offset_of(&bytes, 3), size: fs.ext3.len() as u64 }
    );
    assert_eq!(image.overlays[1].partition.fstype, FsType::Squashfs);
    assert_eq!(image.writable_overlay().map(|p| p.id), Some(3));
    let data: Vec<u32> = image.data.iter().map(|p| p.id).collect();
    assert_eq!(data, [7]);

    // Writable: opened read-write, the ext3 overlay is the one to write.
    let image = Image::open(&path, true).unwrap();
    assert!(image.writable);
    let mode = nix::fcntl::fcntl(image.file.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
    assert_eq!(mode & libc::O_ACCMODE, libc::O_RDWR);
    assert_eq!(image.writable_overlay().map(|p| p.id), Some(3));
}

#[test]
fn an_ungrouped_root_takes_overlays_from_every_group() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = match filesystems(tmp.path()) {
        Ok(fs) => fs,
        Err(why) => skip!("{why}"),
    };
    let code = host_code(arch::host_arch());
    let bytes = build_sif(&[
        part(FS_SQUASH, PART_PRIMSYS, code, 0, &fs.squashfs),
        part(FS_EXT3, PART_OVERLAY, code, 2, &fs.ext3),
        part(FS_EXT3, PART_OVERLAY, code, 5, &fs.ext3),
    ]);
    let path = write(tmp.path(), "ungrouped.sif", &bytes);
    let image = Image::open(&path, false).unwrap();
    let ids: Vec<u32> = image.overlays.iter().map(|p| p.id).collect();
    assert_eq!(ids, [2, 3]);

    // Without a primary partition every overlay is listed too, and there is no root.
    let bytes = build_sif(&[
        part(FS_EXT3, PART_OVERLAY, code, 1, &fs.ext3),
        part(FS_SQUASH, PART_SYSTEM, code, 1, &fs.squashfs),
    ]);
    let path = write(tmp.path(), "overlay-only.sif", &bytes);
    let image = Image::open(&path, false).unwrap();
    assert!(image.rootfs.is_none());
    assert_eq!(image.overlays.len(), 1);
    // It has something to write into, so writable is fine.
    assert!(Image::open(&path, true).unwrap().writable);
}

#[test]
fn a_bad_primary_partition_is_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = match filesystems(tmp.path()) {
        Ok(fs) => fs,
        Err(why) => skip!("{why}"),
    };
    let code = host_code(arch::host_arch());

    // Declared ext3, really ext4.
    let path =
        write(tmp.path(), "ext4-root.sif", &build_sif(&[part(FS_EXT3, PART_PRIMSYS, code, 1, &fs.ext4)]));
    let err = Image::open(&path, false).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(
            "while checking system partition header (object 1): error while checking ext3 \
             header: file is not a valid ext3 image ("
        ),
        "{text}"
    );

    // Declared squashfs, with a compression nobody knows.
    let mut bad = fs.squashfs.clone();
    bad[20..22].copy_from_slice(&11u16.to_le_bytes());
    let path = write(tmp.path(), "bad-comp.sif", &build_sif(&[part(FS_SQUASH, PART_PRIMSYS, code, 1, &bad)]));
    let err = Image::open(&path, false).unwrap_err();
    assert!(err.to_string().ends_with("corrupted image: unknown compression algorithm value 11"), "{err}");

    // An encrypted root cannot be mounted by strata.
    let path = write(
        tmp.path(),
        "encrypted.sif",
        &build_sif(&[part(FS_ENCRYPTED, PART_PRIMSYS, code, 1, &fs.squashfs)]),
    );
    let err = Image::open(&path, false).unwrap_err();
    assert!(err.to_string().contains("Encrypted squashfs partitions cannot be mounted by strata"), "{err}");

    // An ext3 root is itself writable: no overlay partition needed.
    let path =
        write(tmp.path(), "ext3-root.sif", &build_sif(&[part(FS_EXT3, PART_PRIMSYS, code, 1, &fs.ext3)]));
    let image = Image::open(&path, true).unwrap();
    assert_eq!(image.rootfs.unwrap().fstype, FsType::Ext3);
    assert!(image.writable);
}

#[test]
fn a_foreign_architecture_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = match filesystems(tmp.path()) {
        Ok(fs) => fs,
        Err(why) => skip!("{why}"),
    };
    let candidates =
        [("11", "s390x"), ("06", "ppc64le"), ("12", "riscv64"), ("04", "arm64"), ("02", "amd64")];
    let Some((code, name)) = candidates.iter().find(|(_, n)| !arch::host_can_run(n)) else {
        skip!("this host runs every candidate architecture (binfmt_misc emulators)")
    };
    let path =
        write(tmp.path(), "foreign.sif", &build_sif(&[part(FS_SQUASH, PART_PRIMSYS, code, 1, &fs.squashfs)]));
    let err = Image::open(&path, false).unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "the image's architecture ({name}) could not run on the host's ({})",
            arch::host_arch()
        )),
        "{err}"
    );

    // Arch "unknown" is not checked.
    let path = write(
        tmp.path(),
        "unknown-arch.sif",
        &build_sif(&[part(FS_SQUASH, PART_PRIMSYS, "00", 1, &fs.squashfs)]),
    );
    assert!(Image::open(&path, false).is_ok());
}

#[test]
fn a_corrupt_sif_table_is_reported_with_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bytes = build_sif(&[part(FS_RAW, PART_DATA, "02", 1, &[0u8; 4096])]);
    // DescriptorsTotal negative.
    bytes[88..96].copy_from_slice(&(-1i64).to_le_bytes());
    let path = write(tmp.path(), "corrupt.sif", &bytes);
    let err = Image::open(&path, false).unwrap_err();
    assert!(matches!(err, ImageError::Sif { .. }), "{err}");
    assert!(err.to_string().starts_with(&format!("could not read SIF {}: ", path.display())), "{err}");
}

/// The SIF arch code of a Go arch name.
fn host_code(arch: &str) -> &'static str {
    match arch {
        "386" => "01",
        "amd64" => "02",
        "arm" => "03",
        "arm64" => "04",
        "ppc64" => "05",
        "ppc64le" => "06",
        "mips" => "07",
        "mipsle" => "08",
        "mips64" => "09",
        "mips64le" => "10",
        "s390x" => "11",
        "riscv64" => "12",
        "loong64" => "13",
        _ => "00",
    }
}
