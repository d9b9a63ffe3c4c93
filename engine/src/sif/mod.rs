//! The Singularity Image Format: read, write, add, delete, set primary partition, and siftool's
//! text output. Byte-compatible with the reference library (sylabs/sif v2); see
//! `shared/research/sif.md` for the format.
//!
//! Reading is safe on hostile input: only the header and the descriptor table are read, every
//! count, offset and size is checked against the file before use, and nothing is allocated in
//! proportion to a value taken from the file beyond what the file itself holds.

mod copy;
mod descriptor;
pub mod display;
mod error;
pub mod format;
mod header;
mod read;
mod sha256;
mod tabwriter;
mod write;

pub use descriptor::{Descriptor, NewObject, Signature};
pub use error::SifError;
pub use format::{
    Arch, DataType, FormatType, FsType, HashType, Link, MessageType, PartType, Partition, SbomFormat,
};
pub use header::{format_uuid, Header};
pub use read::{is_sif, ReadAt, Sif};
pub use write::{next_aligned, now, random_uuid, CreateOptions, Source};

#[cfg(test)]
mod read_tests;
#[cfg(test)]
mod testdata;
#[cfg(test)]
mod write_tests;
