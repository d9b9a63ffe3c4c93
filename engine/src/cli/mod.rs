//! The command line: global flags, subcommands, and the one place errors become `FATAL:` lines.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

use crate::launch::action::Action;
use crate::log::{self, Level};

pub mod action;
pub mod build;
pub mod overlay;
pub mod sif;

/// What a command returns: the exit code to use, or an error printed as one `FATAL:` line.
pub type CliResult = Result<u8, Box<dyn std::error::Error>>;

/// Exit code for a runtime failure, as Apptainer uses.
pub const EXIT_FAILURE: u8 = 255;

#[derive(Parser, Debug)]
#[command(name = "strata", version, about = "Run Singularity/Apptainer SIF images with persistent overlays")]
pub struct Cli {
    /// print debugging information (highest verbosity)
    #[arg(short = 'd', long = "debug", global = true)]
    pub debug: bool,
    /// print additional information
    #[arg(short = 'v', long = "verbose", global = true)]
    pub verbose: bool,
    /// suppress normal output
    #[arg(short = 'q', long = "quiet", global = true)]
    pub quiet: bool,
    /// only print errors (before the command, as in Apptainer: `-s` after it is `--size` or
    /// `--sandbox`)
    #[arg(short = 's', long = "silent")]
    pub silent: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a command within a container
    Exec(action::ExecArgs),
    /// Run the user-defined default command within a container
    Run(action::RunArgs),
    /// Run a shell within a container
    Shell(action::ShellArgs),
    /// Run the user-defined tests within a container
    Test(action::RunArgs),
    /// Build a SIF image from a sandbox directory, or a sandbox from an image
    Build(build::BuildArgs),
    /// Create and resize persistent overlay images
    Overlay(overlay::OverlayArgs),
    /// Manipulate Singularity Image Format (SIF) images
    Sif(sif::SifArgs),
    /// Show the version
    Version,
}

impl Cli {
    fn level(&self) -> Level {
        if self.debug {
            Level::Debug
        } else if self.verbose {
            Level::Verbose
        } else if self.silent {
            Level::Silent
        } else if self.quiet {
            Level::Quiet
        } else {
            Level::Info
        }
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage_error = e.use_stderr();
            let _ = e.print();
            // --help and --version succeed; a usage error is a failure like any other.
            return ExitCode::from(if usage_error { EXIT_FAILURE } else { 0 });
        }
    };
    log::set_level(cli.level());
    let result = match cli.command {
        Command::Exec(a) => action::run(Action::Exec, &a.image, &a.command, &a.flags),
        Command::Run(a) => action::run(Action::Run, &a.image, &a.args, &a.flags),
        Command::Shell(a) => action::run(Action::Shell, &a.image, &[], &a.flags),
        Command::Test(a) => action::run(Action::Test, &a.image, &a.args, &a.flags),
        // These make temporaries or change images in place: a signal undoes or waits.
        Command::Build(args) => {
            crate::interrupt::watch();
            build::run(args)
        }
        Command::Overlay(args) => {
            crate::interrupt::watch();
            overlay::run(args)
        }
        Command::Sif(args) => {
            crate::interrupt::watch();
            sif::run(args)
        }
        Command::Version => {
            println!("strata version {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
    };
    // A signal is ending the process: its watcher reports nothing and exits by the signal.
    crate::interrupt::park_if_ending();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            crate::fatal_msg!("{e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
