//! Errors of the SIF library. Each message names the field and the value at fault.

use super::format::{DataType, PartType};

#[derive(Debug, thiserror::Error)]
pub enum SifError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a SIF image: the file is {len} bytes, shorter than the 128-byte global header")]
    TooShort { len: u64 },
    #[error("not a SIF image: invalid SIF magic {found}")]
    BadMagic { found: String },
    #[error("incompatible SIF version {found}: strata reads version \"01\"")]
    BadVersion { found: String },
    #[error("global header: {field} {value} {problem}")]
    Header { field: &'static str, value: i64, problem: String },
    #[error("descriptor slot {slot}: {problem}")]
    Slot { slot: u64, problem: String },
    #[error("descriptor {id}: {problem}")]
    Descriptor { id: u32, problem: String },
    #[error("descriptor {a} (bytes {a_start}-{a_end}) overlaps descriptor {b} (bytes {b_start}-{b_end})")]
    Overlap { a: u32, a_start: u64, a_end: u64, b: u32, b_start: u64, b_end: u64 },
    #[error("no objects in image")]
    NoObjects,
    #[error("invalid object ID 0")]
    InvalidObjectId,
    #[error("object {0} not found")]
    ObjectNotFound(u32),
    #[error("insufficient descriptor capacity to add data object(s) to image: all {0} slots are in use")]
    CapacityFull(i64),
    #[error("image already contains a primary partition (object {0})")]
    PrimaryExists(u32),
    #[error("object {id} is not a partition (data type {data_type})")]
    NotAPartition { id: u32, data_type: DataType },
    #[error("object {id} is not a system partition (partition type {parttype})")]
    NotASystemPartition { id: u32, parttype: PartType },
    #[error("name value too large: {0} bytes, at most 128")]
    NameTooLong(usize),
    #[error("launch script too large: {0} bytes, at most 31")]
    LaunchScriptTooLong(usize),
    #[error("descriptor capacity {0} not supported (at most 65536)")]
    Capacity(u64),
    #[error("integer overflow when calculating alignment: offset {offset}, alignment {alignment}")]
    AlignmentOverflow { offset: u64, alignment: u64 },
    #[error("object data would end past the largest SIF offset: {offset} + {size}")]
    TooLarge { offset: u64, size: u64 },
    #[error("the object file changed size while it was copied: expected {expected} bytes, copied {copied}")]
    SizeChanged { expected: u64, copied: u64 },
    #[error("object {id} cannot grow: object {next} follows it in the image; only the last object can grow")]
    NotLastObject { id: u32, next: u32 },
    #[error("object {id}: hash algorithm unsupported (hash type {value})")]
    HashUnsupported { id: u32, value: i32 },
    #[error("object {id}: invalid OCI digest {found:?}")]
    BadDigest { id: u32, found: String },
}

impl SifError {
    /// Wrap an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SifError::Io { context: context.into(), source }
    }
}

/// Render untrusted bytes for an error message: printable ASCII as is, the rest as `\xNN`.
pub(crate) fn escape(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                s.push('\\');
                s.push(b as char);
            }
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('"');
    s
}
