//! Persistent overlays: `strata overlay create` (an ext3 image file, or a partition embedded in
//! a SIF) and `strata overlay resize`, plus the lock containers and resize take on an overlay.
//!
//! An overlay is an ext3 filesystem with `upper/` and `work/` at its root, owned by the user who
//! will write into it (research/apptainer.md §1.5). Everything here runs as the invoking user and
//! drives e2fsprogs (`mke2fs`, `debugfs`, `e2fsck`, `resize2fs`); nothing needs privileges.

pub mod create;
pub mod ext3;
pub mod lock;
pub mod resize;

pub use create::{create, CreateOptions};
pub use lock::{lock_range, LockError};
pub use resize::resize;

use std::io;
use std::path::PathBuf;

use crate::image::detect::HeaderError;
use crate::sif::SifError;
use crate::tools::ToolError;

/// The smallest overlay `overlay create` makes, as Apptainer.
pub const MIN_SIZE_MIB: u64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("image size must be equal or greater than {MIN_SIZE_MIB} MiB")]
    TooSmall,
    #[error("image size of {0} MiB is too large")]
    TooLarge(u64),
    #[error("EXT3 overlay image {0} already exists")]
    Ext3Exists(PathBuf),
    #[error(
        "{0} already exists and is not a SIF image: an overlay can only be embedded into a SIF \
         (choose a new file name for an overlay image)"
    )]
    NotSif(PathBuf),
    #[error("encrypted root FS partition in {0}: could not add writable overlay")]
    Encrypted(PathBuf),
    #[error("SIF image {0} is signed: could not add writable overlay")]
    Signed(PathBuf),
    #[error(
        "a writable overlay partition already exists in {path} (ID: {id}), delete it first \
         with \"strata sif del {id} {path}\""
    )]
    OverlayExists { path: PathBuf, id: u32 },
    #[error("overlay directory {dir} created outside of overlay layout {upper}")]
    OutsideUpper { dir: String, upper: String },
    #[error("could not open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("could not read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("could not create a temporary file in {dir}: {source}")]
    Temp { dir: PathBuf, source: io::Error },
    #[error("could not allocate {size} bytes for {path}: {source}")]
    Allocate { path: PathBuf, size: u64, source: io::Error },
    #[error("while creating ext3 partition in {path}: {source}")]
    Mkfs { path: PathBuf, source: ToolError },
    #[error("while checking the new overlay in {path}: {source}")]
    Verify { path: PathBuf, source: ToolError },
    #[error(
        "{path}: {entry} was created owned by {got} instead of {want}; this e2fsprogs \
         truncates user and group IDs above 65535 (upgrade to e2fsprogs 1.43 or later)"
    )]
    Ownership { path: PathBuf, entry: String, got: String, want: String },
    #[error("mke2fs left no ext3 superblock in {0}")]
    NoSuperblock(PathBuf),
    #[error("mke2fs made {path} a filesystem that is not a valid ext3 overlay: {source}")]
    NotExt3 { path: PathBuf, source: HeaderError },
    #[error("could not write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path} is not a valid SIF image: {source}")]
    BadSif { path: PathBuf, source: SifError },
    #[error("while adding the overlay partition to {path}: {source}")]
    AddPartition { path: PathBuf, source: SifError },
    #[error("{0} is in use by another container; stop it first")]
    InUse(PathBuf),
    #[error("could not lock {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("{path}: {what}: only ext3 overlays (image files or SIF overlay partitions) can be resized")]
    NotResizable { path: PathBuf, what: String },
    #[error("no ext3 overlay partition in {0}; create one with 'strata overlay create --size <MiB> {0}'")]
    NoOverlayPartition(PathBuf),
    #[error("{path}: {source}")]
    Header { path: PathBuf, source: HeaderError },
    #[error(
        "{path}: the ext3 filesystem claims {fs_bytes} bytes, more than the {part_bytes} bytes \
         of its {what}; refusing to touch it"
    )]
    Oversized { path: PathBuf, fs_bytes: u64, part_bytes: u64, what: &'static str },
    #[error(
        "e2fsck found errors in {path} it cannot fix by itself: {source}; repair it first with \
         \"e2fsck -f {target}\""
    )]
    Fsck { path: PathBuf, target: String, source: ToolError },
    #[error("while resizing {path}: {source}")]
    Resize { path: PathBuf, source: ToolError },
    #[error("while resizing the overlay partition of {path}: {source}")]
    ResizePartition { path: PathBuf, source: SifError },
    #[error("{0}")]
    Tool(#[from] ToolError),
}

/// `mib` MiB in bytes, refusing sizes no file can have.
pub(crate) fn mib_to_bytes(mib: u64) -> Result<u64, OverlayError> {
    mib.checked_mul(1 << 20).filter(|&b| b <= i64::MAX as u64).ok_or(OverlayError::TooLarge(mib))
}
