//! `strata overlay create|resize`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::CliResult;
use crate::overlay::{self, CreateOptions, MIN_SIZE_MIB};

#[derive(Args, Debug)]
#[command(about = "Create and resize persistent overlay images")]
pub struct OverlayArgs {
    #[command(subcommand)]
    command: OverlayCommand,
}

#[derive(Subcommand, Debug)]
enum OverlayCommand {
    /// Create an EXT3 writable overlay image
    #[command(long_about = "Create an EXT3 writable overlay image, or add one to a SIF image \
                            as a partition. upper/ and work/ are owned by you. The space is \
                            preallocated unless --sparse is given.")]
    Create(CreateArgs),
    /// Resize an EXT3 overlay image or SIF overlay partition
    #[command(long_about = "Grow or shrink an EXT3 overlay image, or the overlay partition \
                            of a SIF image, together with its filesystem (e2fsck -f, then \
                            resize2fs). Refused while a container uses the overlay.")]
    Resize(ResizeArgs),
}

#[derive(Args, Debug)]
struct CreateArgs {
    /// size of the EXT3 writable overlay in MiB
    #[arg(short = 's', long, default_value_t = MIN_SIZE_MIB)]
    size: u64,
    /// create a sparse overlay image (space is used as it is written)
    #[arg(short = 'S', long, env = "APPTAINER_SPARSE")]
    sparse: bool,
    /// directory to create as part of the overlay layout (repeatable)
    #[arg(long = "create-dir", value_name = "DIR")]
    create_dir: Vec<String>,
    /// the overlay image to create, or the SIF image to add one to
    image: PathBuf,
}

#[derive(Args, Debug)]
struct ResizeArgs {
    /// the new size in MiB
    #[arg(short = 's', long)]
    size: u64,
    /// do not preallocate the space added when growing
    #[arg(short = 'S', long)]
    sparse: bool,
    /// the overlay image, or the SIF image with an overlay partition
    image: PathBuf,
}

pub fn run(args: OverlayArgs) -> CliResult {
    match args.command {
        OverlayCommand::Create(a) => {
            let opts = CreateOptions { size_mib: a.size, sparse: a.sparse, create_dirs: a.create_dir };
            overlay::create(&a.image, &opts)?;
        }
        OverlayCommand::Resize(a) => overlay::resize(&a.image, a.size, a.sparse)?,
    }
    Ok(0)
}
