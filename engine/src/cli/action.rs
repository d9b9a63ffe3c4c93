//! `strata exec|run|shell|test`: the flags users know from Apptainer.

use clap::Args;
use std::path::PathBuf;

/// Flags shared by every action command.
#[derive(Args, Debug, Clone, Default)]
pub struct ActionFlags {
    /// a user-bind path specification: src[:dest[:opts]], opts ro|rw (repeatable, comma lists)
    #[arg(short = 'B', long = "bind", value_name = "spec")]
    pub bind: Vec<String>,
    /// a home directory specification: src[:dest]
    #[arg(short = 'H', long = "home", value_name = "spec")]
    pub home: Option<String>,
    /// do NOT mount the user's home directory
    #[arg(long = "no-home")]
    pub no_home: bool,
    /// use minimal /dev and empty other directories (e.g. /tmp and $HOME) instead of sharing them with the host
    #[arg(short = 'c', long = "contain")]
    pub contain: bool,
    /// contain not just file systems, but also PID, IPC, and environment
    #[arg(short = 'C', long = "containall")]
    pub containall: bool,
    /// clean environment before running container
    #[arg(short = 'e', long = "cleanenv")]
    pub cleanenv: bool,
    /// pass environment variable to contained process: NAME=value (repeatable, comma lists)
    #[arg(long = "env", value_name = "NAME=value")]
    pub env: Vec<String>,
    /// pass environment variables from a file
    #[arg(long = "env-file", value_name = "file")]
    pub env_file: Vec<PathBuf>,
    /// initial working directory for payload process inside the container
    #[arg(long = "pwd", value_name = "dir")]
    pub pwd: Option<String>,
    /// run the container in a new PID namespace
    #[arg(short = 'p', long = "pid")]
    pub pid: bool,
    /// run the container in a new IPC namespace
    #[arg(short = 'i', long = "ipc")]
    pub ipc: bool,
    /// run the container in a new UTS namespace
    #[arg(long = "uts")]
    pub uts: bool,
    /// use an overlay: an ext3 image, a squashfs image, a SIF with overlay partitions, or a
    /// directory (root only); PATH[:ro] (repeatable, comma lists; later ones sit higher)
    #[arg(short = 'o', long = "overlay", value_name = "path[:ro]")]
    pub overlay: Vec<String>,
    /// write into the image: a SIF's embedded overlay partition, or a sandbox directory
    #[arg(short = 'w', long = "writable")]
    pub writable: bool,
    /// make the file system accessible as read-write with non persistent data (in a tmpfs)
    #[arg(long = "writable-tmpfs")]
    pub writable_tmpfs: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ExecArgs {
    #[command(flatten)]
    pub flags: ActionFlags,
    /// the container image: a SIF file, a squashfs or ext3 image, or a sandbox directory
    pub image: PathBuf,
    /// the command to run and its arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub flags: ActionFlags,
    pub image: PathBuf,
    /// arguments for the runscript
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ShellArgs {
    #[command(flatten)]
    pub flags: ActionFlags,
    pub image: PathBuf,
}

/// Run `action` on `image`: builds the plan and becomes the starter (returns only on failure).
pub fn run(
    action: crate::launch::action::Action,
    image: &std::path::Path,
    args: &[String],
    flags: &ActionFlags,
) -> super::CliResult {
    let req = crate::launch::container::Request { action, image, args, flags };
    match crate::launch::container::launch(req) {
        Ok(never) => match never {},
        Err(e) => Err(e.into()),
    }
}
