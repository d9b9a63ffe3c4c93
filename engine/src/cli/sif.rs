//! `strata sif ...`: siftool's subcommands, byte-identical output.

use clap::Args;

use super::CliResult;

#[derive(Args, Debug)]
pub struct SifArgs {}

pub fn run(_args: SifArgs) -> CliResult {
    Err("strata sif is not implemented yet".into())
}
