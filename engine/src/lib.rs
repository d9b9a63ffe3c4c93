//! strata, the unprivileged engine: CLI, SIF format, image and overlay resolution, launching.

pub mod build;
pub mod cli;
pub mod confine;
pub mod image;
pub mod interrupt;
pub mod launch;
pub mod log;
pub mod overlay;
pub mod sif;
pub mod tools;

#[cfg(test)]
pub(crate) mod testutil;
