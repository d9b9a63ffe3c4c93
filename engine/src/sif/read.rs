//! Loading a SIF: the header and the descriptor table only, with every value checked against the
//! file before it is used. Object data is never read here, so the cost does not depend on the
//! size of the image.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::descriptor::{slot_used, Descriptor, RAW_LEN};
use super::error::{escape, SifError};
use super::format::{DESCRIPTOR_LEN, HEADER_LEN, MAGIC, MAGIC_OFFSET, MAX_DESCRIPTORS, VERSION};
use super::header::Header;

/// Positional reads from something of known length: a file, or bytes in memory (tests, fuzzing).
pub trait ReadAt {
    /// Read at most `buf.len()` bytes at `offset`; 0 means end of data. (Named apart from
    /// `FileExt::read_at` so both traits can be in scope.)
    fn pread(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Total length in bytes.
    fn size(&self) -> io::Result<u64>;

    /// Fill `buf` from `offset`, or fail with `UnexpectedEof`.
    fn pread_exact(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.pread(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl ReadAt for File {
    fn pread(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        let meta = self.metadata()?;
        if std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()) {
            // A block device's st_size is 0: its size is where its end is.
            let mut f = self;
            return io::Seek::seek(&mut f, io::SeekFrom::End(0));
        }
        Ok(meta.len())
    }
}

impl ReadAt for [u8] {
    fn pread(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(<[u8]>::len(self) as u64)
    }
}

impl ReadAt for Vec<u8> {
    fn pread(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.as_slice().pread(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.as_slice().len() as u64)
    }
}

/// Whether these leading bytes of a file carry the SIF magic (at offset 32). The version is
/// checked by [`Sif::read`], so that an unsupported version gets its own error.
pub fn is_sif(first_bytes: &[u8]) -> bool {
    first_bytes.get(MAGIC_OFFSET..MAGIC_OFFSET + MAGIC.len()) == Some(&MAGIC[..])
}

/// A loaded image: its header and its used descriptors, in slot order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sif {
    pub header: Header,
    pub(crate) descriptors: Vec<Descriptor>,
    /// Length of the file when it was read.
    pub(crate) file_len: u64,
}

/// Bytes of the descriptor table read per `pread`.
const TABLE_CHUNK_SLOTS: usize = 64;

impl Sif {
    /// Read and check the header and descriptor table of an open SIF file.
    pub fn read(file: &File) -> Result<Sif, SifError> {
        Self::read_from(file)
    }

    /// [`Sif::read`] for any positional reader.
    pub fn read_from<R: ReadAt + ?Sized>(r: &R) -> Result<Sif, SifError> {
        let len = r.size().map_err(|e| SifError::io("reading the file size", e))?;
        if len < HEADER_LEN {
            return Err(SifError::TooShort { len });
        }
        let mut hb = [0u8; HEADER_LEN as usize];
        r.pread_exact(&mut hb, 0).map_err(|e| SifError::io("reading the global header", e))?;
        if !is_sif(&hb) {
            return Err(SifError::BadMagic { found: escape(&hb[MAGIC_OFFSET..MAGIC_OFFSET + MAGIC.len()]) });
        }
        if hb[42..45] != VERSION[..] {
            return Err(SifError::BadVersion { found: escape(&hb[42..45]) });
        }
        let header = Header::parse(&hb);
        let table_end = check_header(&header, len)?;

        let total = header.descriptors_total as u64;
        let mut descriptors = Vec::new();
        let mut chunk = vec![0u8; TABLE_CHUNK_SLOTS * RAW_LEN];
        let mut slot = 0u64;
        while slot < total {
            let n = (total - slot).min(TABLE_CHUNK_SLOTS as u64) as usize;
            let buf = &mut chunk[..n * RAW_LEN];
            let at = header.descriptors_offset as u64 + slot * DESCRIPTOR_LEN;
            r.pread_exact(buf, at)
                .map_err(|e| SifError::io(format!("reading descriptors at offset {at}"), e))?;
            for (i, raw) in buf.chunks_exact(RAW_LEN).enumerate() {
                if slot_used(raw) {
                    let d = Descriptor::parse(slot + i as u64, raw)?;
                    check_bounds(&d, &header, table_end, len)?;
                    descriptors.push(d);
                }
            }
            slot += n as u64;
        }
        check_unique_and_disjoint(&descriptors)?;
        Ok(Sif { header, descriptors, file_len: len })
    }

    /// Used descriptors, in slot order.
    pub fn descriptors(&self) -> impl Iterator<Item = &Descriptor> {
        self.descriptors.iter()
    }

    /// The used descriptor with this ID.
    pub fn descriptor(&self, id: u32) -> Option<&Descriptor> {
        self.descriptors.iter().find(|d| d.id == id)
    }

    /// The primary system partition, if exactly one exists (several count as none, as in
    /// Apptainer).
    pub fn primary_partition(&self) -> Option<&Descriptor> {
        let mut prims = self.descriptors.iter().filter(|d| d.is_primary_partition());
        match (prims.next(), prims.next()) {
            (Some(d), None) => Some(d),
            _ => None,
        }
    }

    /// Look an object up the way siftool's `info`/`dump` do: `no objects in image` when the
    /// header counts no used slot, then `invalid object ID` for 0, then not found.
    pub fn get_descriptor(&self, id: u32) -> Result<&Descriptor, SifError> {
        if self.header.descriptors_free == self.header.descriptors_total {
            return Err(SifError::NoObjects);
        }
        if id == 0 {
            return Err(SifError::InvalidObjectId);
        }
        self.descriptor(id).ok_or(SifError::ObjectNotFound(id))
    }

    /// Length of the file when it was read.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }
}

fn header_err(field: &'static str, value: i64, problem: impl Into<String>) -> SifError {
    SifError::Header { field, value, problem: problem.into() }
}

/// Check the header's counts and offsets; returns the end of the descriptor table.
fn check_header(h: &Header, len: u64) -> Result<u64, SifError> {
    for (field, value) in [
        ("DescriptorsTotal", h.descriptors_total),
        ("DescriptorsFree", h.descriptors_free),
        ("DescriptorsOffset", h.descriptors_offset),
        ("DescriptorsSize", h.descriptors_size),
        ("DataOffset", h.data_offset),
        ("DataSize", h.data_size),
    ] {
        if value < 0 {
            return Err(header_err(field, value, "is negative"));
        }
    }
    let total = h.descriptors_total;
    if total > i64::from(MAX_DESCRIPTORS) {
        return Err(header_err(
            "DescriptorsTotal",
            total,
            format!("is more than strata supports ({MAX_DESCRIPTORS})"),
        ));
    }
    if h.descriptors_free > total {
        return Err(header_err(
            "DescriptorsFree",
            h.descriptors_free,
            format!("is larger than DescriptorsTotal {total}"),
        ));
    }
    let table_len = total as u64 * DESCRIPTOR_LEN;
    if (h.descriptors_size as u64) < table_len {
        return Err(header_err(
            "DescriptorsSize",
            h.descriptors_size,
            format!("is too small for {total} descriptors ({table_len} bytes)"),
        ));
    }
    let off = h.descriptors_offset as u64;
    let table_end = off + table_len; // both < 2^63: no overflow in u64
    if total > 0 {
        if off < HEADER_LEN {
            return Err(header_err("DescriptorsOffset", h.descriptors_offset, "overlaps the global header"));
        }
        let declared_end = off + h.descriptors_size as u64;
        if declared_end > len {
            return Err(header_err(
                "DescriptorsOffset",
                h.descriptors_offset,
                format!("+ DescriptorsSize {} is past the end of the file ({len} bytes)", h.descriptors_size),
            ));
        }
    }
    if h.data_offset.checked_add(h.data_size).is_none() {
        return Err(header_err("DataOffset", h.data_offset, format!("+ DataSize {} overflows", h.data_size)));
    }
    if (h.data_offset as u64) < table_end.max(HEADER_LEN) {
        return Err(header_err(
            "DataOffset",
            h.data_offset,
            format!("is inside the header or descriptor table (which ends at {table_end})"),
        ));
    }
    Ok(table_end)
}

/// An object's data must lie inside the file and clear of the header and the descriptor table.
/// Empty objects take no space and are only checked for sane values.
fn check_bounds(d: &Descriptor, h: &Header, table_end: u64, len: u64) -> Result<(), SifError> {
    if d.size == 0 {
        return Ok(());
    }
    let bad = |problem: String| SifError::Descriptor { id: d.id, problem };
    if d.end() > len {
        return Err(bad(format!(
            "offset {} + size {} is past the end of the file ({len} bytes)",
            d.offset, d.size
        )));
    }
    if d.offset < HEADER_LEN {
        return Err(bad(format!("offset {} + size {} overlaps the global header", d.offset, d.size)));
    }
    let table_start = h.descriptors_offset as u64;
    if d.offset < table_end && d.end() > table_start {
        return Err(bad(format!(
            "offset {} + size {} overlaps the descriptor table (bytes {table_start}-{table_end})",
            d.offset, d.size
        )));
    }
    Ok(())
}

/// IDs are unique, and no two objects share a byte.
fn check_unique_and_disjoint(descriptors: &[Descriptor]) -> Result<(), SifError> {
    let mut seen: HashMap<u32, u64> = HashMap::with_capacity(descriptors.len());
    for d in descriptors {
        if let Some(other) = seen.insert(d.id, d.slot) {
            return Err(SifError::Descriptor {
                id: d.id,
                problem: format!("ID is used by both slot {other} and slot {}", d.slot),
            });
        }
    }
    let mut by_offset: Vec<&Descriptor> = descriptors.iter().filter(|d| d.size > 0).collect();
    by_offset.sort_by_key(|d| (d.offset, d.end()));
    for w in by_offset.windows(2) {
        let (a, b) = (w[0], w[1]);
        if b.offset < a.end() {
            return Err(SifError::Overlap {
                a: a.id,
                a_start: a.offset,
                a_end: a.end(),
                b: b.id,
                b_start: b.offset,
                b_end: b.end(),
            });
        }
    }
    Ok(())
}
