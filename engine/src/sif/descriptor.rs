//! One 585-byte descriptor slot (research/sif.md §1.3, §1.4).

use super::error::{escape, SifError};
use super::format::{
    DataType, FormatType, HashType, Link, MessageType, PartType, Partition, SbomFormat, DESCRIPTOR_LEN,
    EXTRA_LEN, GROUP_MASK, NAME_LEN,
};
use super::header::{le_i32, le_i64, le_u32, trim_nuls};

pub(crate) const RAW_LEN: usize = DESCRIPTOR_LEN as usize;
const OFF_USED: usize = 4;
const OFF_MODIFIED_AT: usize = 49;
const OFF_NAME: usize = 73;
const OFF_EXTRA: usize = 201;
const OFF_PARTTYPE: usize = OFF_EXTRA + 4;

/// A used descriptor, decoded. Offsets and sizes have been checked against the file by
/// [`Sif::read`](super::Sif::read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Object ID (1-based; the writer uses slot index + 1).
    pub id: u32,
    pub data_type: DataType,
    /// Group ID with the on-disk mask removed; 0 = no group.
    pub group_id: u32,
    pub linked: Option<Link>,
    /// Absolute file offset of the object's data.
    pub offset: u64,
    /// Exact size of the data.
    pub size: u64,
    /// Logical name, trailing NULs removed.
    pub name: String,
    /// Padding before the object plus its size (never read by the reference; odd in legacy images).
    pub size_with_padding: i64,
    /// Unix seconds; [`ZERO_TIME`](super::format::ZERO_TIME) means unset.
    pub created_at: i64,
    pub modified_at: i64,
    /// Deprecated owner fields (0 in new images, 1000 in legacy ones).
    pub uid: i64,
    pub gid: i64,
    /// Type-specific metadata, raw.
    pub extra: [u8; EXTRA_LEN],
    /// Index of the slot in the descriptor table.
    pub(crate) slot: u64,
    /// The slot's bytes as read, so that rewriting one field keeps every other byte.
    pub(crate) raw: Box<[u8; RAW_LEN]>,
}

/// Metadata of a signature object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature {
    pub hash: HashType,
    /// The first 20 bytes of the signing entity, `None` when all zero.
    pub fingerprint: Option<[u8; 20]>,
}

/// What a new descriptor holds; the writer assigns slot, ID, offset, sizes and times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewObject {
    pub data_type: DataType,
    /// 0 = no group.
    pub group_id: u32,
    pub linked: Option<Link>,
    pub name: String,
    /// Type-specific metadata, at most 384 bytes; zero-filled after.
    pub extra: Vec<u8>,
    /// `None`: 4096 for partitions, unaligned for everything else.
    pub alignment: Option<u64>,
}

/// Whether the slot's `Used` byte is set (any non-zero byte reads as true).
pub(crate) fn slot_used(raw: &[u8]) -> bool {
    raw[OFF_USED] != 0
}

impl Descriptor {
    /// Decode a used slot, checking what can be checked without the rest of the file.
    pub(crate) fn parse(slot: u64, raw: &[u8]) -> Result<Descriptor, SifError> {
        let raw: Box<[u8; RAW_LEN]> = Box::new(raw.try_into().expect("one slot"));
        let id = le_u32(&raw[..], 5);
        if id == 0 {
            return Err(SifError::Slot { slot, problem: "is in use but has the invalid object ID 0".into() });
        }
        let bad = |problem: String| SifError::Descriptor { id, problem };
        let offset = le_i64(&raw[..], 17);
        let size = le_i64(&raw[..], 25);
        if offset < 0 {
            return Err(bad(format!("offset {offset} is negative")));
        }
        if size < 0 {
            return Err(bad(format!("size {size} is negative")));
        }
        if offset.checked_add(size).is_none() {
            return Err(bad(format!("offset {offset} + size {size} overflows")));
        }
        let name_bytes = trim_nuls(&raw[OFF_NAME..OFF_NAME + NAME_LEN]);
        let name = String::from_utf8(name_bytes.to_vec())
            .map_err(|_| bad(format!("name {} is not valid UTF-8", escape(name_bytes))))?;
        Ok(Descriptor {
            id,
            data_type: DataType::from_code(le_i32(&raw[..], 0)),
            group_id: le_u32(&raw[..], 9) & !GROUP_MASK,
            linked: Link::from_raw(le_u32(&raw[..], 13)),
            offset: offset as u64,
            size: size as u64,
            name,
            size_with_padding: le_i64(&raw[..], 33),
            created_at: le_i64(&raw[..], 41),
            modified_at: le_i64(&raw[..], OFF_MODIFIED_AT),
            uid: le_i64(&raw[..], 57),
            gid: le_i64(&raw[..], 65),
            extra: raw[OFF_EXTRA..].try_into().expect("384 bytes"),
            slot,
            raw,
        })
    }

    /// Build the descriptor the writer stores for a new object, as the reference fills a slot.
    pub(crate) fn build(
        slot: u64,
        obj: &NewObject,
        offset: u64,
        size: u64,
        size_with_padding: i64,
        time: i64,
    ) -> Result<Descriptor, SifError> {
        if obj.name.len() > NAME_LEN {
            return Err(SifError::NameTooLong(obj.name.len()));
        }
        if obj.extra.len() > EXTRA_LEN {
            return Err(SifError::Descriptor {
                id: (slot + 1) as u32,
                problem: format!("extra value too large: {} bytes, at most {EXTRA_LEN}", obj.extra.len()),
            });
        }
        let id = u32::try_from(slot + 1).map_err(|_| SifError::Capacity(slot + 1))?;
        let mut raw = Box::new([0u8; RAW_LEN]);
        raw[0..4].copy_from_slice(&obj.data_type.code().to_le_bytes());
        raw[OFF_USED] = 1;
        raw[5..9].copy_from_slice(&id.to_le_bytes());
        raw[9..13].copy_from_slice(&(obj.group_id | GROUP_MASK).to_le_bytes());
        raw[13..17].copy_from_slice(&Link::to_raw(obj.linked).to_le_bytes());
        for (at, v) in [
            (17, offset as i64),
            (25, size as i64),
            (33, size_with_padding),
            (41, time),
            (OFF_MODIFIED_AT, time),
        ] {
            raw[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        raw[OFF_NAME..OFF_NAME + obj.name.len()].copy_from_slice(obj.name.as_bytes());
        raw[OFF_EXTRA..OFF_EXTRA + obj.extra.len()].copy_from_slice(&obj.extra);
        Descriptor::parse(slot, &raw[..])
    }

    /// The slot's bytes as they are to be written: as read, with the `Used` flag normalised the
    /// way the reference's re-encoding does.
    pub(crate) fn to_bytes(&self) -> [u8; RAW_LEN] {
        let mut b = *self.raw;
        b[OFF_USED] = 1;
        b
    }

    /// Set the partition type and the modification time (setprim).
    pub(crate) fn set_parttype(&mut self, pt: PartType, time: i64) {
        self.raw[OFF_PARTTYPE..OFF_PARTTYPE + 4].copy_from_slice(&pt.code().to_le_bytes());
        self.raw[OFF_MODIFIED_AT..OFF_MODIFIED_AT + 8].copy_from_slice(&time.to_le_bytes());
        self.extra[4..8].copy_from_slice(&pt.code().to_le_bytes());
        self.modified_at = time;
    }

    /// Set the data size (and with it the size with padding) and the modification time.
    pub(crate) fn set_size(&mut self, size: u64, time: i64) {
        let padding = self.size_with_padding - self.size as i64;
        self.size_with_padding = padding + size as i64;
        self.size = size;
        self.modified_at = time;
        for (at, v) in [(25, size as i64), (33, self.size_with_padding), (OFF_MODIFIED_AT, time)] {
            self.raw[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
    }

    /// Partition metadata, for partition objects.
    pub fn partition(&self) -> Option<Partition> {
        (self.data_type == DataType::Partition).then(|| Partition::from_extra(&self.extra))
    }

    /// Whether this is the (a) primary system partition.
    pub fn is_primary_partition(&self) -> bool {
        self.partition().is_some_and(|p| p.parttype == PartType::PrimSys)
    }

    /// Signature metadata, for signature objects. The hash type may be outside the table.
    pub fn signature(&self) -> Option<Signature> {
        (self.data_type == DataType::Signature).then(|| {
            let fp: [u8; 20] = self.extra[4..24].try_into().expect("20 bytes");
            Signature {
                hash: HashType::from_code(le_i32(&self.extra, 0)),
                fingerprint: (fp != [0; 20]).then_some(fp),
            }
        })
    }

    /// Format and message type, for cryptographic messages.
    pub fn crypto_message(&self) -> Option<(FormatType, MessageType)> {
        (self.data_type == DataType::CryptoMessage).then(|| {
            (FormatType::from_code(le_i32(&self.extra, 0)), MessageType::from_code(le_i32(&self.extra, 4)))
        })
    }

    /// Format, for SBOM objects.
    pub fn sbom_format(&self) -> Option<SbomFormat> {
        (self.data_type == DataType::Sbom).then(|| SbomFormat::from_code(le_i32(&self.extra, 0)))
    }

    /// The `sha256:<64 hex>` digest of an OCI root index or blob, checked as the reference
    /// parses it.
    pub fn oci_digest(&self) -> Option<Result<String, SifError>> {
        if !matches!(self.data_type, DataType::OciRootIndex | DataType::OciBlob) {
            return None;
        }
        let text = self.extra.split(|&b| b == 0).next().unwrap_or(&[]);
        let ok = text.len() == 71
            && text.starts_with(b"sha256:")
            && text[7..].iter().all(|b| b.is_ascii_hexdigit());
        Some(if ok {
            Ok(String::from_utf8_lossy(text).into_owned())
        } else {
            Err(SifError::BadDigest { id: self.id, found: String::from_utf8_lossy(text).into_owned() })
        })
    }

    /// End of the object's data (checked not to overflow when read).
    pub fn end(&self) -> u64 {
        self.offset + self.size
    }
}
