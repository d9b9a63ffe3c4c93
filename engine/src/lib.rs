//! strata, the unprivileged engine: CLI, SIF format, image and overlay resolution, launching.

pub mod cli;
pub mod confine;
pub mod image;
pub mod launch;
pub mod log;
pub mod sif;

#[cfg(test)]
pub(crate) mod testutil;
