//! `strata build [--sandbox] [--force] TARGET SOURCE`.

use std::path::PathBuf;

use clap::Args;

use super::CliResult;
use crate::build;

#[derive(Args, Debug)]
#[command(
    about = "Build a SIF image from a sandbox directory, or a sandbox from an image",
    long_about = "Build a SIF image from a sandbox directory (strata build OUT.sif DIR/), or \
                  extract the root filesystem of a SIF or squashfs image into a sandbox \
                  directory (strata build --sandbox OUT/ IMAGE). The target is written under a \
                  temporary name and renamed into place when complete."
)]
pub struct BuildArgs {
    /// overwrite an existing target
    #[arg(short = 'F', long)]
    force: bool,
    /// build a sandbox directory from an image
    #[arg(short = 's', long)]
    sandbox: bool,
    /// the image or directory to create
    target: PathBuf,
    /// the sandbox directory (or, with --sandbox, the image) to build from
    source: PathBuf,
}

pub fn run(a: BuildArgs) -> CliResult {
    if a.sandbox {
        build::build_sandbox(&a.target, &a.source, a.force)?;
    } else {
        build::build_sif(&a.target, &a.source, a.force)?;
    }
    Ok(0)
}
