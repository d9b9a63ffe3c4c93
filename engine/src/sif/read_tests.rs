//! Reader tests: the reference images, and hostile variations of a small valid image.

use super::format::*;
use super::*;

pub(crate) use super::testdata::testdata;

/// A valid image: capacity 4, one 4-byte partition at 8192 (slot 0) and a 2-byte object at 8196.
pub(crate) fn small_image() -> Vec<u8> {
    let mut b = vec![0u8; 8198];
    let mut h = Header {
        launch_script: [0; 32],
        arch: Arch::Amd64.code(),
        id: [0; 16],
        created_at: ZERO_TIME,
        modified_at: ZERO_TIME,
        descriptors_free: 2,
        descriptors_total: 4,
        descriptors_offset: 4096,
        descriptors_size: 4 * 585,
        data_offset: 4096 + 4 * 585,
        data_size: 0,
    };
    h.data_size = 8198 - h.data_offset;
    b[..128].copy_from_slice(&h.to_bytes());
    let part = NewObject {
        data_type: DataType::Partition,
        group_id: 1,
        linked: None,
        name: "root".into(),
        extra: [&2i32.to_le_bytes()[..], &2i32.to_le_bytes()[..], &Arch::Amd64.code()[..]].concat(),
        alignment: None,
    };
    let d0 = Descriptor::build(0, &part, 8192, 4, 0, ZERO_TIME).unwrap();
    let json = NewObject {
        data_type: DataType::GenericJson,
        group_id: 1,
        linked: Some(Link::Object(1)),
        name: "x.json".into(),
        extra: vec![],
        alignment: None,
    };
    let d1 = Descriptor::build(1, &json, 8196, 2, 2, ZERO_TIME).unwrap();
    b[4096..4096 + 585].copy_from_slice(&d0.to_bytes());
    b[4681..4681 + 585].copy_from_slice(&d1.to_bytes());
    b
}

fn set_i64(b: &mut [u8], at: usize, v: i64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn err(b: &[u8]) -> String {
    Sif::read_from(b).unwrap_err().to_string()
}

#[test]
fn reads_the_small_image() {
    let sif = Sif::read_from(&small_image()[..]).unwrap();
    let ds: Vec<_> = sif.descriptors().collect();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds[0].id, 1);
    assert_eq!(ds[0].name, "root");
    assert_eq!(
        ds[0].partition(),
        Some(Partition { fstype: FsType::Ext3, parttype: PartType::PrimSys, arch: Arch::Amd64 })
    );
    assert_eq!(ds[1].linked, Some(Link::Object(1)));
    assert_eq!(sif.primary_partition().map(|d| d.id), Some(1));
    assert_eq!(sif.descriptor(2).map(|d| d.offset), Some(8196));
    assert!(sif.descriptor(3).is_none());
}

#[test]
fn reads_every_reference_image() {
    let Some(td) = testdata() else { return };
    let mut n = 0;
    for e in std::fs::read_dir(td.join("sif/images")).unwrap() {
        let p = e.unwrap().path();
        let f = std::fs::File::open(&p).unwrap();
        Sif::read(&f).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        n += 1;
    }
    assert!(n >= 10);
    let f = std::fs::File::open(td.join("apptainer/busybox_amd64.sif")).unwrap();
    let sif = Sif::read(&f).unwrap();
    assert_eq!(sif.descriptors().count(), 5);
    let p = sif.primary_partition().unwrap();
    assert_eq!((p.id, p.offset, p.size), (4, 45056, 745472));
    assert_eq!(p.partition().unwrap().fstype, FsType::Squashfs);
}

#[test]
fn is_sif_checks_the_magic() {
    let b = small_image();
    assert!(is_sif(&b[..64]));
    assert!(!is_sif(&b[..40]));
    assert!(!is_sif(&[0u8; 64]));
}

#[test]
fn rejects_truncated_files() {
    let b = small_image();
    assert_eq!(
        err(&b[..100]),
        "not a SIF image: the file is 100 bytes, shorter than the 128-byte global header"
    );
    assert!(err(&b[..5000]).contains("past the end of the file (5000 bytes)"), "{}", err(&b[..5000]));
    assert_eq!(
        err(&b[..8197]),
        "descriptor 2: offset 8196 + size 2 is past the end of the file (8197 bytes)"
    );
}

#[test]
fn rejects_bad_magic_and_version() {
    let mut b = small_image();
    b[32] = b'X';
    assert_eq!(err(&b), r#"not a SIF image: invalid SIF magic "XIF_MAGIC\x00""#);
    let mut b = small_image();
    b[43] = b'2';
    assert_eq!(err(&b), r#"incompatible SIF version "02\x00": strata reads version "01""#);
}

#[test]
fn rejects_negative_and_huge_counts() {
    let mut b = small_image();
    set_i64(&mut b, 88, -1);
    assert_eq!(err(&b), "global header: DescriptorsTotal -1 is negative");
    let mut b = small_image();
    set_i64(&mut b, 80, -3);
    assert_eq!(err(&b), "global header: DescriptorsFree -3 is negative");
    let mut b = small_image();
    set_i64(&mut b, 88, i64::MAX);
    assert!(err(&b).contains("DescriptorsTotal 9223372036854775807 is more than strata supports"));
    let mut b = small_image();
    set_i64(&mut b, 88, 60_000);
    set_i64(&mut b, 104, 60_000 * 585);
    assert!(err(&b).contains("past the end of the file"), "{}", err(&b));
    let mut b = small_image();
    set_i64(&mut b, 80, 5);
    assert_eq!(err(&b), "global header: DescriptorsFree 5 is larger than DescriptorsTotal 4");
    let mut b = small_image();
    set_i64(&mut b, 104, 585);
    assert!(err(&b).contains("DescriptorsSize 585 is too small for 4 descriptors"));
}

#[test]
fn rejects_descriptor_table_in_the_header_or_past_eof() {
    let mut b = small_image();
    set_i64(&mut b, 96, 64);
    assert_eq!(err(&b), "global header: DescriptorsOffset 64 overlaps the global header");
    let mut b = small_image();
    set_i64(&mut b, 96, 1 << 40);
    assert!(
        err(&b).starts_with("global header: DescriptorsOffset 1099511627776 + DescriptorsSize 2340 is past")
    );
    let mut b = small_image();
    set_i64(&mut b, 112, 4096);
    assert!(err(&b).contains("DataOffset 4096 is inside the header or descriptor table"));
}

/// Offset of field `at` of descriptor slot `slot` in the small image.
fn field(slot: usize, at: usize) -> usize {
    4096 + slot * 585 + at
}

#[test]
fn rejects_bad_objects() {
    let mut b = small_image();
    set_i64(&mut b, field(1, 17), -7);
    assert_eq!(err(&b), "descriptor 2: offset -7 is negative");
    let mut b = small_image();
    set_i64(&mut b, field(1, 25), -1);
    assert_eq!(err(&b), "descriptor 2: size -1 is negative");
    let mut b = small_image();
    set_i64(&mut b, field(1, 17), i64::MAX);
    assert!(err(&b).contains("overflows"));
    let mut b = small_image();
    set_i64(&mut b, field(1, 17), 99999);
    set_i64(&mut b, field(1, 25), 10);
    assert_eq!(err(&b), "descriptor 2: offset 99999 + size 10 is past the end of the file (8198 bytes)");
    let mut b = small_image();
    set_i64(&mut b, field(1, 17), 8194);
    assert_eq!(err(&b), "descriptor 1 (bytes 8192-8196) overlaps descriptor 2 (bytes 8194-8196)");
    let mut b = small_image();
    set_i64(&mut b, field(1, 17), 4100);
    assert!(err(&b).contains("overlaps the descriptor table (bytes 4096-6436)"), "{}", err(&b));
    let mut b = small_image();
    set_i64(&mut b, field(1, 17), 0);
    assert!(err(&b).contains("overlaps the global header"));
}

#[test]
fn rejects_bad_ids_and_names() {
    let mut b = small_image();
    b[field(1, 5)..field(1, 9)].copy_from_slice(&1u32.to_le_bytes());
    assert_eq!(err(&b), "descriptor 1: ID is used by both slot 0 and slot 1");
    let mut b = small_image();
    b[field(1, 5)..field(1, 9)].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(err(&b), "descriptor slot 1: is in use but has the invalid object ID 0");
    let mut b = small_image();
    b[field(1, 73)] = 0xff;
    assert_eq!(err(&b), r#"descriptor 2: name "\xff.json" is not valid UTF-8"#);
}

#[test]
fn empty_objects_need_no_space() {
    let mut b = small_image();
    set_i64(&mut b, field(1, 17), 1 << 40);
    set_i64(&mut b, field(1, 25), 0);
    assert!(Sif::read_from(&b[..]).is_ok());
}

#[test]
fn lookup_follows_siftool() {
    let sif = Sif::read_from(&small_image()[..]).unwrap();
    assert_eq!(sif.get_descriptor(0).unwrap_err().to_string(), "invalid object ID 0");
    assert_eq!(sif.get_descriptor(9).unwrap_err().to_string(), "object 9 not found");
    let mut b = small_image();
    set_i64(&mut b, 80, 4);
    let sif = Sif::read_from(&b[..]).unwrap();
    assert_eq!(sif.get_descriptor(1).unwrap_err().to_string(), "no objects in image");
}
