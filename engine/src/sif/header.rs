//! The 128-byte global header (research/sif.md §1.2).

use super::format::{Arch, HEADER_LEN, MAGIC, MAGIC_OFFSET, VERSION, ZERO_TIME};

/// The global header, field for field. Values are kept as stored (`i64` where the format has
/// `int64`) so an image is written back bit for bit; [`Sif::read`](super::Sif::read) has checked
/// them before anyone sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Shebang line, NUL-padded.
    pub launch_script: [u8; 32],
    /// `"NN\0"` code of the primary partition's arch.
    pub arch: [u8; 3],
    /// RFC 4122 bytes; all zero means "no ID".
    pub id: [u8; 16],
    pub created_at: i64,
    pub modified_at: i64,
    pub descriptors_free: i64,
    pub descriptors_total: i64,
    pub descriptors_offset: i64,
    pub descriptors_size: i64,
    pub data_offset: i64,
    pub data_size: i64,
}

pub(crate) fn le_i64(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

pub(crate) fn le_i32(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Bytes up to (not including) the trailing NULs, as the reference's `TrimRight(…, "\x00")`.
pub(crate) fn trim_nuls(b: &[u8]) -> &[u8] {
    let end = b.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
    &b[..end]
}

impl Header {
    /// Decode the fields; magic and version are checked by the caller (they are fixed).
    pub(crate) fn parse(b: &[u8; HEADER_LEN as usize]) -> Header {
        Header {
            launch_script: b[0..32].try_into().expect("32 bytes"),
            arch: b[45..48].try_into().expect("3 bytes"),
            id: b[48..64].try_into().expect("16 bytes"),
            created_at: le_i64(b, 64),
            modified_at: le_i64(b, 72),
            descriptors_free: le_i64(b, 80),
            descriptors_total: le_i64(b, 88),
            descriptors_offset: le_i64(b, 96),
            descriptors_size: le_i64(b, 104),
            data_offset: le_i64(b, 112),
            data_size: le_i64(b, 120),
        }
    }

    /// Encode, with the fixed magic and version.
    pub(crate) fn to_bytes(&self) -> [u8; HEADER_LEN as usize] {
        let mut b = [0u8; HEADER_LEN as usize];
        b[0..32].copy_from_slice(&self.launch_script);
        b[MAGIC_OFFSET..MAGIC_OFFSET + 10].copy_from_slice(MAGIC);
        b[42..45].copy_from_slice(VERSION);
        b[45..48].copy_from_slice(&self.arch);
        b[48..64].copy_from_slice(&self.id);
        let ints = [
            self.created_at,
            self.modified_at,
            self.descriptors_free,
            self.descriptors_total,
            self.descriptors_offset,
            self.descriptors_size,
            self.data_offset,
            self.data_size,
        ];
        for (i, v) in ints.iter().enumerate() {
            b[64 + 8 * i..72 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// The launch script without its NUL padding (raw bytes: it is not required to be UTF-8).
    pub fn launch_script(&self) -> &[u8] {
        trim_nuls(&self.launch_script)
    }

    /// The primary partition's arch as recorded in the header.
    pub fn arch(&self) -> Arch {
        Arch::from_code(self.arch)
    }

    /// The image ID in the canonical 8-4-4-4-12 lower-case form, `None` for the nil UUID.
    pub fn uuid(&self) -> Option<String> {
        if self.id == [0; 16] {
            return None;
        }
        Some(format_uuid(&self.id))
    }

    /// Nil ID and both times unset: writes keep the zero time so the image stays reproducible.
    pub fn is_deterministic(&self) -> bool {
        self.id == [0; 16] && self.created_at == ZERO_TIME && self.modified_at == ZERO_TIME
    }
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lower-case hex.
pub fn format_uuid(id: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in id.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_format() {
        let id =
            [0x3f, 0xa8, 0x02, 0xcc, 0x35, 0x8b, 0x45, 0xe3, 0xbc, 0xc0, 0x69, 0xdc, 0x7a, 0x45, 0xf9, 0xf8];
        assert_eq!(format_uuid(&id), "3fa802cc-358b-45e3-bcc0-69dc7a45f9f8");
    }

    #[test]
    fn trims_only_trailing_nuls() {
        assert_eq!(trim_nuls(b"a\0b\0\0"), b"a\0b");
        assert_eq!(trim_nuls(b"\0\0"), b"");
    }
}
