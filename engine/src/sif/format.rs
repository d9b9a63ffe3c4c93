//! On-disk constants and the code tables of the SIF format (research/sif.md §1.2–§1.6).
//!
//! Every enum keeps unknown values verbatim (`Other(n)`) so that an image can be read, printed and
//! written back without losing bytes; `Display` gives siftool's strings.

use std::fmt;

/// Length of the global header.
pub const HEADER_LEN: u64 = 128;
/// Length of one descriptor slot.
pub const DESCRIPTOR_LEN: u64 = 585;
/// `SIF_MAGIC\0`, at header offset 32.
pub const MAGIC: &[u8; 10] = b"SIF_MAGIC\0";
/// Offset of the magic in the header.
pub const MAGIC_OFFSET: usize = 32;
/// The only supported version, `"01\0"`.
pub const VERSION: &[u8; 3] = b"01\0";
/// Mask OR-ed into every stored group ID and into links to groups.
pub const GROUP_MASK: u32 = 0xF000_0000;
/// Go's `time.Time{}.Unix()`: the "unset" time of deterministic images.
pub const ZERO_TIME: i64 = -62_135_596_800;
/// Descriptor slots of a new image.
pub const DEFAULT_CAPACITY: u32 = 48;
/// Where `CreateContainer` puts the descriptor table.
pub const DEFAULT_DESCRIPTORS_OFFSET: i64 = 4096;
/// Default alignment of partitions (everything else is unaligned).
pub const PARTITION_ALIGNMENT: u64 = 4096;
/// Size of the descriptor name field.
pub const NAME_LEN: usize = 128;
/// Size of the descriptor type-specific metadata field.
pub const EXTRA_LEN: usize = 384;
/// Longest launch script the header holds (one byte stays NUL).
pub const MAX_LAUNCH_SCRIPT: usize = 31;
/// strata's own ceiling on descriptor slots, far above anything a real image uses (48), so that
/// a hostile header cannot make us scan or hold a huge table.
pub const MAX_DESCRIPTORS: u32 = 65_536;

/// Defines a C-like enum over an `i32` code with siftool's display strings and an `Other` variant.
macro_rules! code_enum {
    ($(#[$m:meta])* $name:ident, unknown = $unknown:literal, { $($(#[$vm:meta])* $var:ident = $val:literal => $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $var,)*
            /// A value outside the table, kept verbatim.
            Other(i32),
        }

        impl $name {
            /// The stored code.
            pub fn code(self) -> i32 {
                match self {
                    $(Self::$var => $val,)*
                    Self::Other(v) => v,
                }
            }

            /// The variant for a stored code.
            pub fn from_code(v: i32) -> Self {
                match v {
                    $($val => Self::$var,)*
                    _ => Self::Other(v),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self {
                    $(Self::$var => $s,)*
                    Self::Other(_) => $unknown,
                })
            }
        }
    };
}

code_enum!(
    /// Type of a data object (descriptor `DataType`).
    DataType, unknown = "Unknown", {
    Deffile = 0x4001 => "Def.FILE",
    EnvVar = 0x4002 => "Env.Vars",
    Labels = 0x4003 => "JSON.Labels",
    Partition = 0x4004 => "FS",
    Signature = 0x4005 => "Signature",
    GenericJson = 0x4006 => "JSON.Generic",
    Generic = 0x4007 => "Generic/Raw",
    CryptoMessage = 0x4008 => "Cryptographic Message",
    Sbom = 0x4009 => "SBOM",
    OciRootIndex = 0x400A => "OCI.RootIndex",
    OciBlob = 0x400B => "OCI.Blob",
});

impl DataType {
    /// The data type for siftool's `--datatype N` (1..=11), if valid.
    pub fn from_cli(n: i64) -> Option<Self> {
        match Self::from_code(i32::try_from(n).ok()?.checked_add(0x4000)?) {
            Self::Other(_) => None,
            t => Some(t),
        }
    }
}

code_enum!(
    /// Filesystem of a partition (`Extra+0`).
    FsType, unknown = "Unknown", {
    Squashfs = 1 => "Squashfs",
    Ext3 = 2 => "Ext3",
    ImmuObj = 3 => "Archive",
    Raw = 4 => "Raw",
    EncryptedSquashfs = 5 => "Encrypted squashfs",
    /// Apptainer's fork only; sylabs prints `Unknown`.
    GocryptfsSquashfs = 6 => "Gocryptfs squashfs",
});

code_enum!(
    /// Role of a partition (`Extra+4`).
    PartType, unknown = "Unknown", {
    System = 1 => "System",
    PrimSys = 2 => "*System",
    Data = 3 => "Data",
    Overlay = 4 => "Overlay",
});

code_enum!(
    /// Hash of a signature object (`Extra+0`); printed as Go's `crypto.Hash.String()`.
    HashType, unknown = "Unknown", {
    Sha256 = 1 => "SHA-256",
    Sha384 = 2 => "SHA-384",
    Sha512 = 3 => "SHA-512",
    Blake2s256 = 4 => "BLAKE2s-256",
    Blake2b256 = 5 => "BLAKE2b-256",
});

code_enum!(
    /// Format of a cryptographic message (`Extra+0`).
    FormatType, unknown = "Unknown", {
    OpenPgp = 1 => "OpenPGP",
    Pem = 2 => "PEM",
});

code_enum!(
    /// Kind of a cryptographic message (`Extra+4`).
    MessageType, unknown = "Unknown", {
    ClearSignature = 0x100 => "Clear Signature",
    RsaOaep = 0x200 => "RSA-OAEP",
});

code_enum!(
    /// Format of an SBOM object (`Extra+0`).
    SbomFormat, unknown = "unknown", {
    CycloneDxJson = 1 => "cyclonedx-json",
    CycloneDxXml = 2 => "cyclonedx-xml",
    GithubJson = 3 => "github-json",
    SpdxJson = 4 => "spdx-json",
    SpdxRdf = 5 => "spdx-rdf",
    SpdxTagValue = 6 => "spdx-tag-value",
    SpdxYaml = 7 => "spdx-yaml",
    SyftJson = 8 => "syft-json",
});

impl SbomFormat {
    /// Parse siftool's `--sbomformat` names (`github` is an alias of `github-json`).
    pub fn from_name(s: &str) -> Option<Self> {
        if s == "github" {
            return Some(Self::GithubJson);
        }
        (1..=8).map(Self::from_code).find(|f| f.to_string() == s)
    }
}

/// Architecture codes (header `Arch`, partition `Extra+8`): `"NN\0"` as ASCII.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    /// `"00\0"` or any unrecognised bytes.
    Unknown,
    I386,
    Amd64,
    Arm,
    Arm64,
    Ppc64,
    Ppc64le,
    Mips,
    Mipsle,
    Mips64,
    Mips64le,
    S390x,
    Riscv64,
    Loong64,
}

const ARCHES: [(Arch, &str); 14] = [
    (Arch::Unknown, "unknown"),
    (Arch::I386, "386"),
    (Arch::Amd64, "amd64"),
    (Arch::Arm, "arm"),
    (Arch::Arm64, "arm64"),
    (Arch::Ppc64, "ppc64"),
    (Arch::Ppc64le, "ppc64le"),
    (Arch::Mips, "mips"),
    (Arch::Mipsle, "mipsle"),
    (Arch::Mips64, "mips64"),
    (Arch::Mips64le, "mips64le"),
    (Arch::S390x, "s390x"),
    (Arch::Riscv64, "riscv64"),
    (Arch::Loong64, "loong64"),
];

impl Arch {
    /// The number behind the code (`--partarch N`); 0 for unknown.
    pub fn number(self) -> u8 {
        ARCHES.iter().position(|(a, _)| *a == self).unwrap_or(0) as u8
    }

    /// The arch for `--partarch N`: `None` outside 1..=13.
    pub fn from_number(n: i64) -> Option<Self> {
        match usize::try_from(n) {
            Ok(i @ 1..=13) => Some(ARCHES[i].0),
            _ => None,
        }
    }

    /// The stored 3 bytes, e.g. `"02\0"` for amd64.
    pub fn code(self) -> [u8; 3] {
        let n = self.number();
        [b'0' + n / 10, b'0' + n % 10, 0]
    }

    /// Decode stored bytes; anything not in the table is `Unknown`, as in the reference.
    pub fn from_code(b: [u8; 3]) -> Self {
        ARCHES.iter().map(|(a, _)| *a).find(|a| a.code() == b).unwrap_or(Arch::Unknown)
    }

    /// Go's `GOARCH` name, as siftool prints it.
    pub fn go_name(self) -> &'static str {
        ARCHES.iter().find(|(a, _)| *a == self).map(|(_, s)| *s).unwrap_or("unknown")
    }

    /// The SIF arch of the machine strata was built for.
    pub fn host() -> Self {
        match std::env::consts::ARCH {
            "x86" => Arch::I386,
            "x86_64" => Arch::Amd64,
            "arm" => Arch::Arm,
            "aarch64" => Arch::Arm64,
            "powerpc64" if cfg!(target_endian = "little") => Arch::Ppc64le,
            "powerpc64" => Arch::Ppc64,
            "mips" if cfg!(target_endian = "little") => Arch::Mipsle,
            "mips" => Arch::Mips,
            "mips64" if cfg!(target_endian = "little") => Arch::Mips64le,
            "mips64" => Arch::Mips64,
            "s390x" => Arch::S390x,
            "riscv64" => Arch::Riscv64,
            "loongarch64" => Arch::Loong64,
            _ => Arch::Unknown,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.go_name())
    }
}

/// Where a descriptor's `LinkedID` points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Link {
    /// Another object, by ID.
    Object(u32),
    /// A group of objects, by group ID.
    Group(u32),
}

impl Link {
    /// Decode a raw `LinkedID` as the reference does: mask bits all set means a group.
    pub fn from_raw(raw: u32) -> Option<Self> {
        let id = raw & !GROUP_MASK;
        if id == 0 {
            None
        } else if raw & GROUP_MASK == GROUP_MASK {
            Some(Link::Group(id))
        } else {
            Some(Link::Object(id))
        }
    }

    /// The raw value the writer stores.
    pub fn to_raw(link: Option<Self>) -> u32 {
        match link {
            None => 0,
            Some(Link::Object(id)) => id,
            Some(Link::Group(g)) => g | GROUP_MASK,
        }
    }
}

/// Metadata of a partition object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    pub fstype: FsType,
    pub parttype: PartType,
    pub arch: Arch,
}

impl Partition {
    /// Decode a descriptor's `Extra` (missing bytes read as zero).
    pub fn from_extra(extra: &[u8]) -> Self {
        let mut e = [0u8; 11];
        let n = extra.len().min(11);
        e[..n].copy_from_slice(&extra[..n]);
        Partition {
            fstype: FsType::from_code(i32::from_le_bytes(e[0..4].try_into().expect("4 bytes"))),
            parttype: PartType::from_code(i32::from_le_bytes(e[4..8].try_into().expect("4 bytes"))),
            arch: Arch::from_code(e[8..11].try_into().expect("3 bytes")),
        }
    }

    /// The `Extra` bytes of a partition descriptor.
    pub fn to_extra(self) -> Vec<u8> {
        let mut b = Vec::with_capacity(11);
        b.extend_from_slice(&self.fstype.code().to_le_bytes());
        b.extend_from_slice(&self.parttype.code().to_le_bytes());
        b.extend_from_slice(&self.arch.code());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_codes_round_trip() {
        for n in 1..=13 {
            let a = Arch::from_number(n).unwrap();
            assert_eq!(a.number() as i64, n);
            assert_eq!(Arch::from_code(a.code()), a);
        }
        assert_eq!(Arch::Amd64.code(), *b"02\0");
        assert_eq!(Arch::from_code(*b"10\0"), Arch::Mips64le);
        assert_eq!(Arch::from_code(*b"99\0"), Arch::Unknown);
        assert_eq!(Arch::from_code(*b"02x"), Arch::Unknown);
        assert_eq!(Arch::from_number(14), None);
        assert_eq!(Arch::from_number(0), None);
    }

    #[test]
    fn names_match_siftool() {
        assert_eq!(DataType::from_cli(4), Some(DataType::Partition));
        assert_eq!(DataType::from_cli(12), None);
        assert_eq!(DataType::from_code(0x4010).to_string(), "Unknown");
        assert_eq!(PartType::PrimSys.to_string(), "*System");
        assert_eq!(SbomFormat::Other(99).to_string(), "unknown");
        assert_eq!(SbomFormat::from_name("github"), Some(SbomFormat::GithubJson));
        assert_eq!(SbomFormat::from_name("spdx-yaml"), Some(SbomFormat::SpdxYaml));
        assert_eq!(SbomFormat::from_name("nope"), None);
    }

    #[test]
    fn links_decode_like_the_reference() {
        assert_eq!(Link::from_raw(0), None);
        assert_eq!(Link::from_raw(0xF000_0000), None);
        assert_eq!(Link::from_raw(2), Some(Link::Object(2)));
        assert_eq!(Link::from_raw(0xF000_0001), Some(Link::Group(1)));
        assert_eq!(Link::from_raw(0x1000_0005), Some(Link::Object(5)));
    }
}
