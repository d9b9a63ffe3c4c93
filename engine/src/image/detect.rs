//! Format detection: the byte checks Apptainer applies to the first 2048 bytes of an image
//! (or of a SIF partition), in Apptainer's order: SIF, squashfs, ext3.
//!
//! Each check returns [`Probe::NotThisFormat`] when the magic is absent (the caller tries the next
//! format, as Apptainer's "debug errors" do), and a [`HeaderError`] when the magic is present but
//! the content is refused (these stop detection, as Apptainer's real errors do).

use std::fmt;

/// How many bytes Apptainer reads to detect a format; files shorter than this match no format.
pub const HEADER_LEN: usize = 2048;

/// A legacy header (`#!/usr/bin/env run-singularity\n`) may precede the filesystem.
const LAUNCH_STRING: &[u8] = b" run-singularity";

const SIF_MAGIC: &[u8] = b"SIF_MAGIC";

const SQUASHFS_MAGIC: &[u8; 4] = b"hsqs";
/// Size of the part of the squashfs v4 superblock that is read (magic .. minor version).
const SQUASHFS_SUPER_LEN: usize = 32;
/// Offset of the `compression` field in the squashfs superblock.
const SQUASHFS_COMPRESSION_AT: usize = 20;

const EXT_MAGIC_OFFSET: usize = 1080;
const EXT_MAGIC: [u8; 2] = [0x53, 0xEF];
/// Bytes read from the magic on: magic, state, 8 words, compat, incompat, ro_compat.
const EXT_SUPER_LEN: usize = 48;
const EXT_COMPAT_AT: usize = 36;
const EXT_INCOMPAT_AT: usize = 40;
const EXT_RO_COMPAT_AT: usize = 44;

/// `s_feature_compat`: has_journal.
pub const EXT_COMPAT_HAS_JOURNAL: u32 = 0x4;
/// `s_feature_incompat` features an ext3 image may have: filetype, recover, meta_bg.
pub const EXT_INCOMPAT_ALLOWED: u32 = 0x2 | 0x4 | 0x10;
/// `s_feature_ro_compat` features an ext3 image may have: sparse_super, large_file, btree_dir.
pub const EXT_RO_COMPAT_ALLOWED: u32 = 0x1 | 0x2 | 0x4;

/// Outcome of one format check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The format's magic is there and the content is acceptable; the filesystem starts at this
    /// offset from the start of the buffer (non-zero only after a legacy launch header).
    Found { offset: u64 },
    /// No magic: try the next format.
    NotThisFormat,
}

/// The magic is present but the content is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// A squashfs whose compression id is none of zlib, lzma, lzo, xz, lz4, zstd.
    #[error("corrupted image: unknown compression algorithm value {0}")]
    UnknownCompression(u16),
    /// An ext2/3/4 superblock that is not plain ext3.
    #[error("file is not a valid ext3 image ({0})")]
    NotExt3(Ext3Problem),
}

/// Why an ext2/3/4 superblock is not accepted as ext3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ext3Problem {
    /// No journal: an ext2 filesystem.
    NoJournal,
    /// Incompatible features beyond filetype/recover/meta_bg (the bits outside the allowed set).
    Incompat(u32),
    /// Read-only-compatible features beyond sparse_super/large_file/btree_dir.
    RoCompat(u32),
}

impl fmt::Display for Ext3Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ext3Problem::NoJournal => write!(f, "it has no journal: an ext2 filesystem, not ext3"),
            Ext3Problem::Incompat(bits) => write!(
                f,
                "it uses incompatible features {bits:#x} ({}): an ext4 filesystem, not ext3",
                incompat_names(*bits)
            ),
            Ext3Problem::RoCompat(bits) => write!(
                f,
                "it uses read-only-compatible features {bits:#x} ({}): an ext4 filesystem, not ext3",
                ro_compat_names(*bits)
            ),
        }
    }
}

fn feature_names(bits: u32, table: &[(u32, &str)]) -> String {
    let mut names: Vec<String> = Vec::new();
    let mut rest = bits;
    for (bit, name) in table {
        if bits & bit != 0 {
            names.push((*name).to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    names.join(", ")
}

fn incompat_names(bits: u32) -> String {
    feature_names(
        bits,
        &[
            (0x1, "compression"),
            (0x8, "journal_dev"),
            (0x40, "extent"),
            (0x80, "64bit"),
            (0x100, "mmp"),
            (0x200, "flex_bg"),
            (0x400, "ea_inode"),
            (0x1000, "dirdata"),
            (0x2000, "metadata_csum_seed"),
            (0x4000, "large_dir"),
            (0x8000, "inline_data"),
            (0x10000, "encrypt"),
            (0x20000, "casefold"),
        ],
    )
}

fn ro_compat_names(bits: u32) -> String {
    feature_names(
        bits,
        &[
            (0x8, "huge_file"),
            (0x10, "gdt_csum"),
            (0x20, "dir_nlink"),
            (0x40, "extra_isize"),
            (0x100, "quota"),
            (0x200, "bigalloc"),
            (0x400, "metadata_csum"),
            (0x1000, "read-only"),
            (0x2000, "project"),
            (0x8000, "verity"),
            (0x10000, "orphan_present"),
        ],
    )
}

/// Squashfs compression ids Apptainer accepts, with their names.
pub fn squashfs_compression_name(id: u16) -> Option<&'static str> {
    match id {
        1 => Some("gzip"),
        2 => Some("lzma"),
        3 => Some("lzo"),
        4 => Some("xz"),
        5 => Some("lz4"),
        6 => Some("zstd"),
        _ => None,
    }
}

/// Offset just past a legacy launch header (` run-singularity` and the byte after it), or 0.
/// As in Apptainer, only a match after the first byte counts.
fn launch_offset(buf: &[u8]) -> usize {
    match find(buf, LAUNCH_STRING) {
        Some(at) if at > 0 => at + LAUNCH_STRING.len() + 1,
        _ => 0,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn le_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([buf[at], buf[at + 1]])
}

fn le_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// True if `SIF_MAGIC` occurs anywhere in the first [`HEADER_LEN`] bytes, which must all be
/// present (Apptainer's SIF detection).
pub fn has_sif_magic(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN && find(&buf[..HEADER_LEN], SIF_MAGIC).is_some()
}

/// Apptainer's `CheckSquashfsHeader`: squashfs magic (after an optional launch header) and an
/// accepted compression.
pub fn check_squashfs_header(buf: &[u8]) -> Result<Probe, HeaderError> {
    let offset = launch_offset(buf);
    let Some(sb) = buf.get(offset..offset + SQUASHFS_SUPER_LEN) else {
        return Ok(Probe::NotThisFormat);
    };
    if &sb[..4] != SQUASHFS_MAGIC {
        return Ok(Probe::NotThisFormat);
    }
    let compression = le_u16(sb, SQUASHFS_COMPRESSION_AT);
    if squashfs_compression_name(compression).is_none() {
        return Err(HeaderError::UnknownCompression(compression));
    }
    Ok(Probe::Found { offset: offset as u64 })
}

/// Apptainer's `CheckExt3Header`: ext magic at 1080 (after an optional launch header), a
/// journal, and no feature outside the ext3 sets.
pub fn check_ext3_header(buf: &[u8]) -> Result<Probe, HeaderError> {
    let start = launch_offset(buf);
    let at = start + EXT_MAGIC_OFFSET;
    let Some(sb) = buf.get(at..at + EXT_SUPER_LEN) else {
        return Ok(Probe::NotThisFormat);
    };
    if sb[..2] != EXT_MAGIC {
        return Ok(Probe::NotThisFormat);
    }
    let compat = le_u32(sb, EXT_COMPAT_AT);
    let incompat = le_u32(sb, EXT_INCOMPAT_AT);
    let ro_compat = le_u32(sb, EXT_RO_COMPAT_AT);
    if compat & EXT_COMPAT_HAS_JOURNAL == 0 {
        return Err(HeaderError::NotExt3(Ext3Problem::NoJournal));
    }
    if incompat & !EXT_INCOMPAT_ALLOWED != 0 {
        return Err(HeaderError::NotExt3(Ext3Problem::Incompat(incompat & !EXT_INCOMPAT_ALLOWED)));
    }
    if ro_compat & !EXT_RO_COMPAT_ALLOWED != 0 {
        return Err(HeaderError::NotExt3(Ext3Problem::RoCompat(ro_compat & !EXT_RO_COMPAT_ALLOWED)));
    }
    Ok(Probe::Found { offset: start as u64 })
}

/// What the first bytes of a regular file say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Sif,
    /// Squashfs starting at `offset` (non-zero after a legacy launch header).
    Squashfs {
        offset: u64,
    },
    /// ext3 starting at `offset`.
    Ext3 {
        offset: u64,
    },
}

/// Run the checks in Apptainer's order on the first bytes of a file. `Ok(None)` means no format
/// matched (`image format not recognized`); a buffer shorter than [`HEADER_LEN`] matches none.
pub fn detect_format(buf: &[u8]) -> Result<Option<FileFormat>, HeaderError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let buf = &buf[..HEADER_LEN];
    if has_sif_magic(buf) {
        return Ok(Some(FileFormat::Sif));
    }
    if let Probe::Found { offset } = check_squashfs_header(buf)? {
        return Ok(Some(FileFormat::Squashfs { offset }));
    }
    if let Probe::Found { offset } = check_ext3_header(buf)? {
        return Ok(Some(FileFormat::Ext3 { offset }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn squashfs(compression: u16) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        b[..4].copy_from_slice(b"hsqs");
        b[20..22].copy_from_slice(&compression.to_le_bytes());
        b[28..30].copy_from_slice(&4u16.to_le_bytes());
        b
    }

    fn ext(compat: u32, incompat: u32, ro_compat: u32) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        b[1080..1082].copy_from_slice(&EXT_MAGIC);
        b[1116..1120].copy_from_slice(&compat.to_le_bytes());
        b[1120..1124].copy_from_slice(&incompat.to_le_bytes());
        b[1124..1128].copy_from_slice(&ro_compat.to_le_bytes());
        b
    }

    #[test]
    fn squashfs_accepts_every_known_compression() {
        for id in 1..=6 {
            assert_eq!(
                check_squashfs_header(&squashfs(id)),
                Ok(Probe::Found { offset: 0 }),
                "compression {id}"
            );
        }
    }

    #[test]
    fn squashfs_refuses_unknown_compression_with_apptainers_text() {
        let err = check_squashfs_header(&squashfs(9)).unwrap_err();
        assert_eq!(err, HeaderError::UnknownCompression(9));
        assert_eq!(err.to_string(), "corrupted image: unknown compression algorithm value 9");
        assert!(check_squashfs_header(&squashfs(0)).is_err());
    }

    #[test]
    fn squashfs_without_magic_is_not_squashfs() {
        let mut b = squashfs(1);
        b[0] = b'x';
        assert_eq!(check_squashfs_header(&b), Ok(Probe::NotThisFormat));
        assert_eq!(check_squashfs_header(&[]), Ok(Probe::NotThisFormat));
    }

    #[test]
    fn squashfs_after_a_legacy_launch_header() {
        let header = b"#!/usr/bin/env run-singularity\n";
        let mut b = header.to_vec();
        b.extend_from_slice(&squashfs(4));
        b.truncate(HEADER_LEN);
        assert_eq!(check_squashfs_header(&b), Ok(Probe::Found { offset: header.len() as u64 }));
    }

    #[test]
    fn ext3_features_accepted_and_refused() {
        // mkfs.ext3 defaults: has_journal, ext_attr, resize_inode, dir_index; filetype,
        // sparse_super, large_file.
        assert_eq!(check_ext3_header(&ext(0x3c, 0x2, 0x3)), Ok(Probe::Found { offset: 0 }));
        assert_eq!(
            check_ext3_header(&ext(0x4, 0x2 | 0x4 | 0x10, 0x1 | 0x2 | 0x4)),
            Ok(Probe::Found { offset: 0 })
        );
        // ext2: no journal (the sif test corpus's root.ext3 is like this).
        assert_eq!(
            check_ext3_header(&ext(0x38, 0x2, 0x3)),
            Err(HeaderError::NotExt3(Ext3Problem::NoJournal))
        );
        // ext4: extent, 64bit, flex_bg.
        assert_eq!(
            check_ext3_header(&ext(0x3c, 0x2c2, 0x3)),
            Err(HeaderError::NotExt3(Ext3Problem::Incompat(0x2c0)))
        );
        // ext4: huge_file, dir_nlink, extra_isize, metadata_csum.
        assert_eq!(
            check_ext3_header(&ext(0x3c, 0x2, 0x46b)),
            Err(HeaderError::NotExt3(Ext3Problem::RoCompat(0x468)))
        );
    }

    #[test]
    fn ext3_error_text_starts_with_apptainers() {
        let err = check_ext3_header(&ext(0x3c, 0x2c2, 0x3)).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("file is not a valid ext3 image ("), "{text}");
        assert!(text.contains("extent, 64bit, flex_bg"), "{text}");
        let err = check_ext3_header(&ext(0x38, 0x2, 0x3)).unwrap_err();
        assert!(err.to_string().contains("no journal"), "{err}");
    }

    #[test]
    fn ext_magic_missing_is_not_ext3() {
        let mut b = ext(0x3c, 0x2, 0x3);
        b[1080] = 0;
        assert_eq!(check_ext3_header(&b), Ok(Probe::NotThisFormat));
        assert_eq!(check_ext3_header(&b[..1100]), Ok(Probe::NotThisFormat));
    }

    #[test]
    fn detection_order_is_sif_squashfs_ext3() {
        // A buffer with every magic is a SIF.
        let mut b = ext(0x3c, 0x2, 0x3);
        b[..4].copy_from_slice(b"hsqs");
        b[20..22].copy_from_slice(&1u16.to_le_bytes());
        b[100..109].copy_from_slice(b"SIF_MAGIC");
        assert_eq!(detect_format(&b), Ok(Some(FileFormat::Sif)));
        // Without SIF_MAGIC: squashfs wins over ext3.
        b[100..109].copy_from_slice(&[0; 9]);
        assert_eq!(detect_format(&b), Ok(Some(FileFormat::Squashfs { offset: 0 })));
        // A squashfs with a bad compression stops detection even though ext3 would match.
        b[20..22].copy_from_slice(&77u16.to_le_bytes());
        assert_eq!(detect_format(&b), Err(HeaderError::UnknownCompression(77)));
        // No squashfs magic: ext3.
        b[..4].copy_from_slice(&[0; 4]);
        assert_eq!(detect_format(&b), Ok(Some(FileFormat::Ext3 { offset: 0 })));
        // Nothing.
        assert_eq!(detect_format(&[0u8; HEADER_LEN]), Ok(None));
    }

    #[test]
    fn short_files_match_nothing() {
        let b = squashfs(1);
        assert_eq!(detect_format(&b[..HEADER_LEN - 1]), Ok(None));
        let mut s = vec![0u8; 100];
        s[..9].copy_from_slice(b"SIF_MAGIC");
        assert!(!has_sif_magic(&s));
        assert_eq!(detect_format(&s), Ok(None));
    }
}
