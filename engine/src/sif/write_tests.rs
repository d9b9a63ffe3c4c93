//! Writer tests: write→read round trips (proptest), hole-preserving copies, refusals.

use super::format::*;
use super::*;
use proptest::prelude::*;
use std::fs::File;
use std::os::unix::fs::FileExt;

fn temp_image(opts: &CreateOptions) -> (tempfile::NamedTempFile, File, Sif) {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let file = tmp.reopen().unwrap();
    let sif = Sif::create(&file, opts).unwrap();
    (tmp, file, sif)
}

fn object_bytes(file: &File, d: &Descriptor) -> Vec<u8> {
    let mut b = vec![0u8; d.size as usize];
    file.read_exact_at(&mut b, d.offset).unwrap();
    b
}

#[derive(Clone, Debug)]
enum Op {
    Add(NewObject, Vec<u8>),
    Delete(usize),
    SetPrim(usize),
}

fn new_object() -> impl Strategy<Value = NewObject> {
    let data_type = prop_oneof![
        Just(DataType::Deffile),
        Just(DataType::GenericJson),
        Just(DataType::Generic),
        Just(DataType::Partition),
        Just(DataType::Signature),
        Just(DataType::Sbom),
        Just(DataType::OciBlob),
        Just(DataType::CryptoMessage),
    ];
    let link = prop_oneof![
        Just(None),
        (1u32..10).prop_map(|i| Some(Link::Object(i))),
        (1u32..5).prop_map(|g| Some(Link::Group(g))),
    ];
    (
        data_type,
        0u32..5,
        link,
        "[a-zA-Z0-9._é-]{0,40}",
        prop::collection::vec(any::<u8>(), 0..24),
        prop::option::of(0u64..5000),
        (1i32..7, 1i32..5, 1i64..14),
    )
        .prop_map(|(data_type, group_id, linked, name, extra, alignment, (fs, pt, arch))| {
            let extra = if data_type == DataType::Partition {
                Partition {
                    fstype: FsType::from_code(fs),
                    parttype: PartType::from_code(if pt == 2 { 1 } else { pt }),
                    arch: Arch::from_number(arch).unwrap(),
                }
                .to_extra()
            } else {
                extra
            };
            NewObject { data_type, group_id, linked, name, extra, alignment }
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (new_object(), prop::collection::vec(any::<u8>(), 0..3000)).prop_map(|(o, d)| Op::Add(o, d)),
        1 => (0usize..16).prop_map(Op::Delete),
        1 => (0usize..16).prop_map(Op::SetPrim),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever sequence of adds, deletes and setprims: reading the file back gives exactly the
    /// image the writer holds in memory, and every object's bytes are the ones added.
    #[test]
    fn written_images_read_back_identically(ops in prop::collection::vec(op(), 1..20), det in any::<bool>()) {
        let mut opts = if det { CreateOptions::deterministic() } else { CreateOptions::new().unwrap() };
        opts.capacity = 8;
        let (_tmp, file, mut sif) = temp_image(&opts);
        let mut data: std::collections::HashMap<u32, Vec<u8>> = Default::default();
        for op in ops {
            match op {
                Op::Add(obj, bytes) => {
                    let full = sif.descriptors().count() == 8;
                    match sif.add_object(&file, &obj, Source::Bytes(&bytes), None) {
                        Ok(id) => { data.insert(id, bytes); }
                        Err(SifError::CapacityFull(_)) => prop_assert!(full),
                        Err(e) => return Err(TestCaseError::fail(format!("add: {e}"))),
                    }
                }
                Op::Delete(i) => {
                    let ids: Vec<u32> = sif.descriptors().map(|d| d.id).collect();
                    if let Some(&id) = ids.get(i % ids.len().max(1)) {
                        sif.delete_object(&file, id, None).unwrap();
                        data.remove(&id);
                    }
                }
                Op::SetPrim(i) => {
                    let ids: Vec<u32> = sif.descriptors().map(|d| d.id).collect();
                    if let Some(&id) = ids.get(i % ids.len().max(1)) {
                        let _ = sif.set_primary(&file, id, None);
                    }
                }
            }
            let back = Sif::read(&file).unwrap();
            prop_assert_eq!(&back, &sif);
            prop_assert!(sif.primary_partition().is_some() || !sif.descriptors().any(|d| d.is_primary_partition()));
            for d in back.descriptors() {
                prop_assert_eq!(&object_bytes(&file, d), &data[&d.id]);
            }
            if det {
                prop_assert!(back.header.is_deterministic());
            }
        }
    }
}

#[test]
fn oci_objects_carry_their_sha256() {
    let (_tmp, file, mut sif) = temp_image(&CreateOptions::deterministic());
    let obj = NewObject {
        data_type: DataType::OciBlob,
        group_id: 1,
        linked: None,
        name: String::new(),
        extra: Vec::new(),
        alignment: None,
    };
    let id = sif.add_object(&file, &obj, Source::Bytes(b"abc"), None).unwrap();
    let d = Sif::read(&file).unwrap().descriptor(id).unwrap().clone();
    assert_eq!(
        d.oci_digest().unwrap().unwrap(),
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let out = display::info(&d).unwrap();
    assert!(String::from_utf8(out).unwrap().ends_with(
        "  Digest:     sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"
    ));
}

/// Allocated bytes of a file (holes take none).
fn allocated(f: &File) -> u64 {
    use std::os::unix::fs::MetadataExt;
    f.metadata().unwrap().blocks() * 512
}

#[test]
fn sparse_objects_stay_sparse_and_stale_tails_read_as_zeros() {
    let (_tmp, file, mut sif) = temp_image(&CreateOptions::deterministic());
    let part = NewObject::partition(
        Partition { fstype: FsType::Ext3, parttype: PartType::Overlay, arch: Arch::Amd64 },
        1,
    );
    // A 1 MiB object of 0xAA, deleted: its bytes stay in the file as a stale tail.
    let junk = vec![0xAAu8; 1 << 20];
    let id = sif.add_object(&file, &part, Source::Bytes(&junk), None).unwrap();
    sif.delete_object(&file, id, None).unwrap();
    // A 64 MiB sparse file with 4 KiB of data in the middle, added over that tail.
    let src = tempfile::tempfile().unwrap();
    src.set_len(64 << 20).unwrap();
    src.write_all_at(&[0x55; 4096], 32 << 20).unwrap();
    let id = sif.add_object(&file, &part, Source::File(&src), None).unwrap();
    let d = Sif::read(&file).unwrap().descriptor(id).unwrap().clone();
    assert_eq!((d.offset, d.size), (32768, 64 << 20));
    let mut head = vec![1u8; 1 << 20];
    file.read_exact_at(&mut head, d.offset).unwrap();
    assert!(head.iter().all(|&b| b == 0), "stale bytes of the deleted object must not show through");
    let mut mid = vec![0u8; 4096];
    file.read_exact_at(&mut mid, d.offset + (32 << 20)).unwrap();
    assert!(mid.iter().all(|&b| b == 0x55));
    assert_eq!(file.metadata().unwrap().len(), d.end());
    assert!(allocated(&file) < 8 << 20, "holes were filled: {} bytes allocated", allocated(&file));
}

#[test]
fn an_empty_object_does_not_extend_the_file() {
    let (_tmp, file, mut sif) = temp_image(&CreateOptions::deterministic());
    let part = NewObject::partition(
        Partition { fstype: FsType::Raw, parttype: PartType::Data, arch: Arch::Amd64 },
        1,
    );
    let empty = tempfile::tempfile().unwrap();
    let id = sif.add_object(&file, &part, Source::File(&empty), None).unwrap();
    let d = Sif::read(&file).unwrap().descriptor(id).unwrap().clone();
    assert_eq!((d.offset, d.size, d.size_with_padding), (32768, 0, 592));
    assert_eq!(file.metadata().unwrap().len(), 32176);
    assert_eq!(sif.header.data_size, 592);
}

#[test]
fn an_image_changed_since_it_was_read_is_not_written() {
    let (_tmp, file, mut sif) = temp_image(&CreateOptions::deterministic());
    file.set_len(40000).unwrap();
    let obj = NewObject {
        data_type: DataType::Generic,
        group_id: 0,
        linked: None,
        name: String::new(),
        extra: Vec::new(),
        alignment: None,
    };
    let e = sif.add_object(&file, &obj, Source::Bytes(b"x"), None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "checking the image: its length changed from 32176 to 40000 bytes since it was read"
    );
}

#[test]
fn adding_an_image_to_itself_is_refused() {
    let (tmp, file, mut sif) = temp_image(&CreateOptions::deterministic());
    let same = File::open(tmp.path()).unwrap();
    let e = sif
        .add_object(
            &file,
            &NewObject::partition(
                Partition { fstype: FsType::Raw, parttype: PartType::Data, arch: Arch::Amd64 },
                1,
            ),
            Source::File(&same),
            None,
        )
        .unwrap_err();
    assert!(e.to_string().contains("the object file is the image itself"), "{e}");
    assert_eq!(file.metadata().unwrap().len(), 32176);
}

#[test]
fn create_checks_its_options() {
    let tmp = tempfile::tempfile().unwrap();
    let mut o = CreateOptions::deterministic();
    o.launch_script = vec![b'x'; 32];
    assert_eq!(
        Sif::create(&tmp, &o).unwrap_err().to_string(),
        "launch script too large: 32 bytes, at most 31"
    );
    let mut o = CreateOptions::deterministic();
    o.capacity = MAX_DESCRIPTORS + 1;
    assert!(Sif::create(&tmp, &o).is_err());
    let mut o = CreateOptions::deterministic();
    o.capacity = 1;
    o.launch_script = b"#!/usr/bin/env run-singularity\n".to_vec();
    let sif = Sif::create(&tmp, &o).unwrap();
    assert_eq!(tmp.metadata().unwrap().len(), 4681);
    assert_eq!(Sif::read(&tmp).unwrap(), sif);
    let mut o = CreateOptions::deterministic();
    o.capacity = 0;
    Sif::create(&tmp, &o).unwrap();
    assert_eq!(tmp.metadata().unwrap().len(), 128);
    assert_eq!(Sif::read(&tmp).unwrap().descriptors().count(), 0);
}

#[test]
fn random_ids_are_version_4() {
    let id = random_uuid().unwrap();
    assert_eq!(id[6] >> 4, 4);
    assert_eq!(id[8] >> 6, 2);
    assert_ne!(random_uuid().unwrap(), id);
}

#[test]
fn alignment_matches_next_aligned() {
    assert_eq!(next_aligned(32176, 4096).unwrap(), 32768);
    assert_eq!(next_aligned(32768, 4096).unwrap(), 32768);
    assert_eq!(next_aligned(32176, 0).unwrap(), 32176);
    assert_eq!(next_aligned(32176, 128).unwrap(), 32256);
    assert!(next_aligned(i64::MAX as u64 - 1, 4096).is_err());
}

#[test]
fn the_last_object_grows_and_any_object_shrinks_in_place() {
    let (_tmp, file, mut sif) = temp_image(&CreateOptions::deterministic());
    let part = NewObject::partition(
        Partition { fstype: FsType::Ext3, parttype: PartType::Overlay, arch: Arch::Amd64 },
        1,
    );
    let at = sif.next_offset(&part).unwrap();
    let id = sif.add_object(&file, &part, Source::Bytes(&[7u8; 5000]), None).unwrap();
    assert_eq!(sif.descriptor(id).unwrap().offset, at);
    sif.resize_object(&file, id, 12_000, None).unwrap();
    let d = sif.descriptor(id).unwrap().clone();
    assert_eq!((d.offset, d.size), (at, 12_000));
    assert_eq!(file.metadata().unwrap().len(), at + 12_000);
    let bytes = object_bytes(&file, &d);
    assert!(bytes[..5000].iter().all(|&b| b == 7));
    assert!(bytes[5000..].iter().all(|&b| b == 0));
    let reread = Sif::read(&file).unwrap();
    assert_eq!(reread.descriptor(id), Some(&d));
    assert_eq!(reread.header.data_size as u64, at + 12_000 - reread.header.data_offset as u64);

    sif.resize_object(&file, id, 3000, None).unwrap();
    assert_eq!(file.metadata().unwrap().len(), at + 3000);
    assert_eq!(
        sif.descriptor(id).unwrap().size_with_padding,
        (at - d.offset) as i64 + 3000 + d.size_with_padding - 12_000
    );

    // Not the last object any more: shrinking leaves a gap, growing is refused untouched.
    let generic = NewObject {
        data_type: DataType::Generic,
        group_id: 0,
        linked: None,
        name: String::new(),
        extra: Vec::new(),
        alignment: None,
    };
    let next = sif.add_object(&file, &generic, Source::Bytes(b"after"), None).unwrap();
    let before = std::fs::read(_tmp.path()).unwrap();
    assert!(matches!(
        sif.resize_object(&file, id, 4000, None),
        Err(SifError::NotLastObject { id: i, next: n }) if i == id && n == next
    ));
    assert!(matches!(sif.check_last(id), Err(SifError::NotLastObject { .. })));
    assert_eq!(std::fs::read(_tmp.path()).unwrap(), before);
    sif.resize_object(&file, id, 1000, None).unwrap();
    assert_eq!(file.metadata().unwrap().len(), before.len() as u64);
    let reread = Sif::read(&file).unwrap();
    assert_eq!(reread.descriptor(id).unwrap().size, 1000);
    assert_eq!(object_bytes(&file, reread.descriptor(next).unwrap()), b"after");
}
