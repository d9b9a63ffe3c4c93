//! The Singularity Image Format: read, write, add, delete, set primary partition, and siftool's
//! text output. Byte-compatible with the reference library (sylabs/sif v2); see
//! `shared/research/sif.md` for the format.
//!
//! Reading is safe on hostile input: only the header and the descriptor table are read, every
//! count, offset and size is checked against the file before use, and nothing is allocated in
//! proportion to a value taken from the file beyond what the file itself holds.

mod descriptor;
mod error;
pub mod format;
mod header;
mod read;

pub use descriptor::{Descriptor, NewObject, Signature};
pub use error::SifError;
pub use format::{
    Arch, DataType, FormatType, FsType, HashType, Link, MessageType, PartType, Partition,
    SbomFormat,
};
pub use header::{format_uuid, Header};
pub use read::{is_sif, ReadAt, Sif};

#[cfg(test)]
mod read_tests;
