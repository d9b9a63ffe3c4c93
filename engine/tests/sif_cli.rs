//! `strata sif` as a user runs it: the write-side test vectors of research/sif.md §4.4, the
//! busybox image, and hostile files that must fail with one clear `FATAL:` line.

mod common;
use common::{copy_into, fatal, ok, strata, testdata};
use std::path::{Path, PathBuf};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Td {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    shared: PathBuf,
}

impl Td {
    fn new() -> Option<Td> {
        let shared = testdata()?;
        let dir = tempfile::tempdir().unwrap();
        Some(Td { dir: dir.path().to_path_buf(), _dir: dir, shared })
    }
    fn image(&self, name: &str) -> PathBuf {
        copy_into(&self.shared.join(format!("sif/images/{name}.sif")), &self.dir, &format!("{name}.sif"))
    }
    fn reference(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.shared.join(format!("sif/images/{name}.sif"))).unwrap()
    }
    fn input(&self, name: &str) -> PathBuf {
        self.shared.join("sif/input").join(name)
    }
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

const EXT3_GROUP2: [&str; 10] =
    ["--datatype", "4", "--partfs", "2", "--parttype", "1", "--partarch", "2", "--groupid", "2"];

#[test]
fn adding_root_ext3_in_group_2_to_one_group_gives_two_groups() {
    let Some(td) = Td::new() else { return };
    let img = td.image("one-group");
    let mut args = vec!["sif", "add"];
    args.extend(EXT3_GROUP2);
    let ext3 = td.input("root.ext3");
    args.extend([s(&img), s(&ext3)]);
    ok(&args);
    assert!(std::fs::read(&img).unwrap() == td.reference("two-groups"));
}

#[test]
fn the_documented_overlay_embed_adds_an_overlay_in_group_1() {
    let Some(td) = Td::new() else { return };
    let img = td.image("one-group");
    let ext3 = td.input("root.ext3");
    ok([
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
        s(&img),
        s(&ext3),
    ]);
    let got = std::fs::read(&img).unwrap();
    let want = td.reference("two-groups");
    let diff: Vec<usize> = (0..want.len()).filter(|&i| got[i] != want[i]).collect();
    assert_eq!(got.len(), want.len());
    assert_eq!(diff, [5275, 5471]);
    assert_eq!((got[5275], got[5471]), (1, 4));
    let list = String::from_utf8(ok(["sif", "list", s(&img)])).unwrap();
    assert!(list.ends_with("3    |1       |NONE    |40960-303104              |FS (Ext3/Overlay/amd64)\n"));
    let info = String::from_utf8(ok(["sif", "info", "3", s(&img)])).unwrap();
    assert!(info.contains("  Partition Type:   Overlay\n") && info.contains("  Group ID:         1\n"));
    let header = ok(["sif", "header", s(&img)]);
    assert_eq!(header, std::fs::read(td.shared.join("sif/golden/Header-two-groups.golden")).unwrap());
}

#[test]
fn flags_may_follow_the_paths_and_groupid_defaults_to_none() {
    let Some(td) = Td::new() else { return };
    let img = td.image("one-group");
    let ext3 = td.input("root.ext3");
    ok([
        "sif",
        "add",
        s(&img),
        s(&ext3),
        "--datatype",
        "4",
        "--partfs",
        "2",
        "--parttype",
        "4",
        "--partarch",
        "2",
    ]);
    let list = String::from_utf8(ok(["sif", "list", s(&img)])).unwrap();
    assert!(list.ends_with("3    |NONE    |NONE    |40960-303104              |FS (Ext3/Overlay/amd64)\n"));
}

#[test]
fn one_group_and_generic_json_images_rebuild_byte_for_byte() {
    let Some(td) = Td::new() else { return };
    let img = td.dir.join("rebuilt.sif");
    ok(["sif", "new", "--deterministic", s(&img)]);
    assert!(std::fs::read(&img).unwrap() == td.reference("empty"));
    let raw = td.file("raw.bin", &[0xfa, 0xce, 0xfe, 0xed]);
    let squash = td.input("root.squashfs");
    ok([
        "sif",
        "add",
        "--datatype",
        "4",
        "--partfs",
        "4",
        "--parttype",
        "1",
        "--partarch",
        "1",
        "--groupid",
        "1",
        s(&img),
        s(&raw),
    ]);
    ok([
        "sif",
        "add",
        "--datatype",
        "4",
        "--partfs",
        "1",
        "--parttype",
        "2",
        "--partarch",
        "1",
        "--groupid",
        "1",
        s(&img),
        s(&squash),
    ]);
    assert!(std::fs::read(&img).unwrap() == td.reference("one-group"));

    let json_img = td.dir.join("json.sif");
    let json = td.file("data.json", b"{}");
    ok(["sif", "new", "--deterministic", s(&json_img)]);
    ok([
        "sif",
        "add",
        "--datatype",
        "6",
        "--groupid",
        "1",
        "--filename",
        "data.json",
        s(&json_img),
        s(&json),
    ]);
    assert!(std::fs::read(&json_img).unwrap() == td.reference("one-object-generic-json"));
}

#[test]
fn delete_then_add_reuses_the_slot_and_the_tail() {
    let Some(td) = Td::new() else { return };
    let img = td.image("two-groups");
    ok(["sif", "del", "3", s(&img)]);
    let after_del = std::fs::read(&img).unwrap();
    assert_eq!(after_del.len(), 303104, "del keeps the file length");
    assert!(after_del[4096 + 2 * 585..4096 + 3 * 585].iter().all(|&b| b == 0), "slot zeroed");
    let header = String::from_utf8(ok(["sif", "header", s(&img)])).unwrap();
    assert!(header.contains("Descriptors Free:     46\n"), "{header}");
    assert!(header.contains("Data Size:            265 KiB\n"), "DataSize stays: {header}");
    let mut args = vec!["sif", "add"];
    args.extend(EXT3_GROUP2);
    let ext3 = td.input("root.ext3");
    args.extend([s(&img), s(&ext3)]);
    ok(&args);
    assert!(std::fs::read(&img).unwrap() == td.reference("two-groups"));
}

#[test]
fn deleting_the_first_object_frees_id_1_for_the_next_add() {
    let Some(td) = Td::new() else { return };
    let img = td.image("two-groups");
    ok(["sif", "del", "1", s(&img)]);
    let json = td.file("x.json", b"{}");
    ok(["sif", "add", "--datatype", "6", s(&img), s(&json)]);
    let list = String::from_utf8(ok(["sif", "list", s(&img)])).unwrap();
    let first = list.lines().nth(3).unwrap();
    assert_eq!(first, "1    |NONE    |NONE    |303104-303106             |JSON.Generic");
}

#[test]
fn deleting_the_primary_partition_resets_the_arch() {
    let Some(td) = Td::new() else { return };
    let img = td.image("two-groups");
    ok(["sif", "del", "2", s(&img)]);
    let header = String::from_utf8(ok(["sif", "header", s(&img)])).unwrap();
    assert!(!header.contains("Primary Architecture"), "{header}");
    assert_eq!(&std::fs::read(&img).unwrap()[45..48], b"00\0");
}

#[test]
fn setprim_moves_the_primary_and_back() {
    let Some(td) = Td::new() else { return };
    let img = td.image("two-groups");
    ok(["sif", "setprim", "3", s(&img)]);
    let list = String::from_utf8(ok(["sif", "list", s(&img)])).unwrap();
    assert!(
        list.contains("|FS (Squashfs/System/386)\n") && list.contains("|FS (Ext3/*System/amd64)\n"),
        "{list}"
    );
    let header = String::from_utf8(ok(["sif", "header", s(&img)])).unwrap();
    assert!(header.contains("Primary Architecture: amd64\n"));
    ok(["sif", "setprim", "2", s(&img)]);
    assert!(std::fs::read(&img).unwrap() == td.reference("two-groups"), "deterministic round trip");
    ok(["sif", "setprim", "2", s(&img)]);
    assert!(std::fs::read(&img).unwrap() == td.reference("two-groups"), "already primary: no write");
}

#[test]
fn refusals_leave_the_image_unchanged() {
    let Some(td) = Td::new() else { return };
    let img = td.image("one-group");
    let before = std::fs::read(&img).unwrap();
    let squash = td.input("root.squashfs");
    let json = td.file("x.json", b"{}");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "sif",
                "add",
                "--datatype",
                "4",
                "--partfs",
                "1",
                "--parttype",
                "2",
                "--partarch",
                "2",
                s(&img),
                s(&squash),
            ],
            "image already contains a primary partition (object 2)",
        ),
        (vec!["sif", "add", s(&img), s(&json)], "-datatype flag is required with a valid range"),
        (
            vec!["sif", "add", "--datatype", "12", s(&img), s(&json)],
            "-datatype flag is required with a valid range",
        ),
        (
            vec!["sif", "add", "--datatype", "4", "--partfs", "2", s(&img), s(&json)],
            "with partition datatype, --partfs, --parttype and --partarch must be passed",
        ),
        (
            vec![
                "sif",
                "add",
                "--datatype",
                "4",
                "--partfs",
                "2",
                "--parttype",
                "4",
                "--partarch",
                "14",
                s(&img),
                s(&json),
            ],
            "unknown architecture: unknown (--partarch 14)",
        ),
        (
            vec!["sif", "add", "--datatype", "9", s(&img), s(&json)],
            "with SBOM datatype, --sbomformat must be passed",
        ),
        (
            vec!["sif", "add", "--datatype", "9", "--sbomformat", "xml", s(&img), s(&json)],
            "invalid SBOM format: xml",
        ),
        (
            vec!["sif", "add", "--datatype", "5", "--signhash", "9", "--signentity", "00", s(&img), s(&json)],
            "invalid hash type: 9",
        ),
        (
            vec!["sif", "add", "--datatype", "5", "--signhash", "1", "--signentity", "0g", s(&img), s(&json)],
            "failed to decode signing entity fingerprint: encoding/hex: invalid byte: U+0067 'g'",
        ),
        (
            vec!["sif", "add", "--datatype", "5", "--signhash", "1", "--signentity", "00", s(&img), s(&json)],
            "invalid signing entity fingerprint length: got 1, want 20",
        ),
        (
            vec!["sif", "add", "--datatype", "6", "--link", "0", s(&img), s(&json)],
            "invalid object ID 0 for --link",
        ),
        (vec!["sif", "setprim", "7", s(&img)], "object 7 not found"),
        (vec!["sif", "del", "0", s(&img)], "invalid object ID 0"),
        (vec!["sif", "del", "9", s(&img)], "object 9 not found"),
        (vec!["sif", "del", "x", s(&img)], "while converting id: invalid object ID \"x\""),
        (vec!["sif", "info", "9", s(&img)], "object 9 not found"),
        (vec!["sif", "dump", "0", s(&img)], "invalid object ID 0"),
    ];
    for (args, want) in cases {
        let msg = fatal(&args);
        assert!(msg.contains(want), "{args:?}: got {msg:?}, want {want:?}");
        assert!(std::fs::read(&img).unwrap() == before, "{args:?} changed the image");
    }
    let missing = td.dir.join("missing.bin");
    let msg = fatal(["sif", "add", "--datatype", "6", s(&img), s(&missing)]);
    assert!(msg.starts_with("open ") && msg.ends_with("No such file or directory (os error 2)"), "{msg}");
}

#[test]
fn only_system_partitions_can_become_primary() {
    let Some(td) = Td::new() else { return };
    let json = td.image("one-object-generic-json");
    assert_eq!(
        fatal(["sif", "setprim", "1", s(&json)]),
        "failed to set object 1 as primary partition of ".to_string()
            + s(&json)
            + ": object 1 is not a partition (data type JSON.Generic)"
    );
    let img = td.image("one-group");
    let ext3 = td.input("root.ext3");
    ok([
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
        s(&img),
        s(&ext3),
    ]);
    let msg = fatal(["sif", "setprim", "3", s(&img)]);
    assert!(msg.ends_with("object 3 is not a system partition (partition type Overlay)"), "{msg}");
}

#[test]
fn a_full_descriptor_table_refuses_another_object() {
    let Some(td) = Td::new() else { return };
    let img = td.image("empty");
    let json = td.file("x.json", b"{}");
    for _ in 0..48 {
        ok(["sif", "add", "--datatype", "6", s(&img), s(&json)]);
    }
    let before = std::fs::read(&img).unwrap();
    let msg = fatal(["sif", "add", "--datatype", "6", s(&img), s(&json)]);
    assert!(
        msg.ends_with(
            "insufficient descriptor capacity to add data object(s) to image: all 48 slots are in use"
        ),
        "{msg}"
    );
    assert!(std::fs::read(&img).unwrap() == before);
}

#[test]
fn empty_images_have_no_objects_to_show() {
    let Some(td) = Td::new() else { return };
    let img = td.shared.join("sif/images/empty.sif");
    assert_eq!(fatal(["sif", "info", "1", s(&img)]), "no objects in image");
    assert_eq!(fatal(["sif", "dump", "1", s(&img)]), "no objects in image");
}

#[test]
fn busybox_lists_its_five_objects() {
    let Some(td) = Td::new() else { return };
    let img = td.shared.join("apptainer/busybox_amd64.sif");
    let list = String::from_utf8(ok(["sif", "list", s(&img)])).unwrap();
    let want = "\
------------------------------------------------------------------------------
ID   |GROUP   |LINK    |SIF POSITION (start-end)  |TYPE
------------------------------------------------------------------------------
1    |1       |NONE    |32768-32807               |Def.FILE
2    |1       |NONE    |36864-38760               |JSON.Generic
3    |1       |NONE    |40960-41050               |JSON.Generic
4    |1       |NONE    |45056-790528              |FS (Squashfs/*System/amd64)
5    |NONE    |1   (G) |790528-792293             |Signature (SHA-256)
";
    assert_eq!(list, want);
}

#[test]
fn busybox_rootfs_mounts_at_the_listed_offset() {
    let Some(td) = Td::new() else { return };
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping: mounting a loop device needs root");
        return;
    }
    if !Path::new("/dev/loop-control").exists() {
        eprintln!("skipping: no loop device support (/dev/loop-control missing)");
        return;
    }
    let img = td.shared.join("apptainer/busybox_amd64.sif");
    let sif = strata::sif::Sif::read(&std::fs::File::open(&img).unwrap()).unwrap();
    let root = sif.primary_partition().unwrap();
    let mnt = td.dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let opts = format!("loop,ro,offset={},sizelimit={}", root.offset, root.size);
    let st = std::process::Command::new("mount")
        .args(["-t", "squashfs", "-o", &opts, s(&img), s(&mnt)])
        .status()
        .unwrap();
    assert!(st.success(), "mount -o {opts} failed");
    let has_busybox = mnt.join("bin/busybox").exists();
    let has_dot_singularity = mnt.join(".singularity.d").is_dir();
    let st = std::process::Command::new("umount").arg(&mnt).status().unwrap();
    assert!(st.success(), "umount failed");
    assert!(has_busybox && has_dot_singularity);
}

/// Byte patches: (offset, new bytes).
type Edits = Vec<(usize, Vec<u8>)>;

/// Write `bytes` at `at` in a copy of one-group.sif (40960 bytes; slots at 4096 + 585·i).
fn corrupt(td: &Td, name: &str, edits: &[(usize, Vec<u8>)], truncate: Option<usize>) -> PathBuf {
    let mut b = td.reference("one-group");
    for (at, bytes) in edits {
        b[*at..*at + bytes.len()].copy_from_slice(bytes);
    }
    if let Some(n) = truncate {
        b.truncate(n);
    }
    td.file(name, &b)
}

#[test]
fn hostile_images_fail_with_one_clear_line() {
    let Some(td) = Td::new() else { return };
    let slot1 = 4096 + 585;
    let cases: Vec<(&str, Edits, Option<usize>, &str)> = vec![
        ("empty", vec![], Some(0), "the file is 0 bytes, shorter than the 128-byte global header"),
        ("short", vec![], Some(100), "the file is 100 bytes, shorter than the 128-byte global header"),
        ("magic", vec![(32, b"NOT_MAGIC\0".to_vec())], None, r#"not a SIF image: invalid SIF magic "NOT_MAGIC\x00""#),
        ("version", vec![(42, b"02\0".to_vec())], None, r#"incompatible SIF version "02\x00": strata reads version "01""#),
        ("negative-total", vec![(88, (-1i64).to_le_bytes().to_vec())], None, "global header: DescriptorsTotal -1 is negative"),
        ("negative-free", vec![(80, (-2i64).to_le_bytes().to_vec())], None, "global header: DescriptorsFree -2 is negative"),
        (
            "huge-total",
            vec![(88, (1i64 << 40).to_le_bytes().to_vec())],
            None,
            "global header: DescriptorsTotal 1099511627776 is more than strata supports (65536)",
        ),
        (
            "table-past-eof",
            vec![(88, 60000i64.to_le_bytes().to_vec()), (104, (60000i64 * 585).to_le_bytes().to_vec())],
            None,
            "global header: DescriptorsOffset 4096 + DescriptorsSize 35100000 is past the end of the file (40960 bytes)",
        ),
        (
            "table-offset-past-eof",
            vec![(96, (1i64 << 50).to_le_bytes().to_vec())],
            None,
            "global header: DescriptorsOffset 1125899906842624 + DescriptorsSize 28080 is past the end of the file",
        ),
        ("truncated-table", vec![], Some(5000), "is past the end of the file (5000 bytes)"),
        (
            "object-past-eof",
            vec![(slot1 + 17, 99999i64.to_le_bytes().to_vec()), (slot1 + 25, 10i64.to_le_bytes().to_vec())],
            None,
            "descriptor 2: offset 99999 + size 10 is past the end of the file (40960 bytes)",
        ),
        ("truncated-object", vec![], Some(40000), "descriptor 2: offset 36864 + size 4096 is past the end of the file (40000 bytes)"),
        ("negative-offset", vec![(slot1 + 17, (-4096i64).to_le_bytes().to_vec())], None, "descriptor 2: offset -4096 is negative"),
        ("negative-size", vec![(slot1 + 25, (-1i64).to_le_bytes().to_vec())], None, "descriptor 2: size -1 is negative"),
        (
            "overlap",
            vec![(slot1 + 17, 32770i64.to_le_bytes().to_vec())],
            None,
            "descriptor 1 (bytes 32768-32772) overlaps descriptor 2 (bytes 32770-36866)",
        ),
        (
            "over-the-table",
            vec![(slot1 + 17, 4096i64.to_le_bytes().to_vec())],
            None,
            "descriptor 2: offset 4096 + size 4096 overlaps the descriptor table (bytes 4096-32176)",
        ),
        ("bad-name", vec![(slot1 + 73, b"\xffoo".to_vec())], None, r#"descriptor 2: name "\xffoo" is not valid UTF-8"#),
        ("duplicate-id", vec![(slot1 + 5, 1u32.to_le_bytes().to_vec())], None, "descriptor 1: ID is used by both slot 0 and slot 1"),
    ];
    for (name, edits, truncate, want) in cases {
        let img = corrupt(&td, &format!("{name}.sif"), &edits, truncate);
        for cmd in ["list", "header"] {
            let msg = fatal(["sif", cmd, s(&img)]);
            assert!(
                msg.starts_with(&format!("{} is not a valid SIF image: ", img.display()))
                    && msg.contains(want),
                "{name}/{cmd}: got {msg:?}, want {want:?}"
            );
        }
        let json = td.file("x.json", b"{}");
        let before = std::fs::read(&img).unwrap();
        fatal(["sif", "add", "--datatype", "6", s(&img), s(&json)]);
        assert!(std::fs::read(&img).unwrap() == before, "{name}: add changed a hostile image");
    }
}

#[test]
fn a_missing_image_is_reported_by_path() {
    let msg = fatal(["sif", "list", "/nonexistent/x.sif"]);
    assert_eq!(msg, "could not open image /nonexistent/x.sif: No such file or directory (os error 2)");
    let out = strata(["sif", "list", "/nonexistent/x.sif"]);
    assert!(out.stdout.is_empty());
}

/// A SIF on a block device (here a read-only loop device over a sector-aligned image) lists as
/// the file does: the size is the device's end, not its `st_size` of 0.
#[test]
fn a_sif_on_a_block_device_reads_like_the_file() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("SKIPPED: needs root for a loop device");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("dev.sif");
    ok(["sif", "new", s(&img)]);
    let data = dir.path().join("data.bin");
    std::fs::write(&data, vec![7u8; 5000]).unwrap();
    ok(["sif", "add", "--datatype", "7", s(&img), s(&data)]);
    // Block devices hold whole sectors: pad the image to one (trailing bytes are not data).
    let len = std::fs::metadata(&img).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&img).unwrap().set_len(len.div_ceil(512) * 512).unwrap();
    let attach = std::process::Command::new("losetup").args(["-f", "--show", "-r"]).arg(&img).output();
    let Some(attach) = attach.ok().filter(|o| o.status.success()) else {
        eprintln!("SKIPPED: no loop device");
        return;
    };
    let dev = String::from_utf8(attach.stdout).unwrap().trim().to_string();
    let from_file = ok(["sif", "list", s(&img)]);
    let from_dev = strata(["sif", "list", &dev]);
    let _ = std::process::Command::new("losetup").args(["-d", &dev]).status();
    assert!(from_dev.status.success(), "{}", String::from_utf8_lossy(&from_dev.stderr));
    assert_eq!(String::from_utf8_lossy(&from_dev.stdout), String::from_utf8_lossy(&from_file));
}
