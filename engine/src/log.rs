//! Levelled messages in Apptainer's format (`FATAL:   `, `WARNING: `, `INFO:    `, ...).
//!
//! The level is process-wide and set once from `-d/-v/-q/-s` at start-up.

use std::sync::atomic::{AtomicI8, Ordering};

/// How much to print; higher prints more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(i8)]
pub enum Level {
    /// `-s`: errors only.
    Silent = -2,
    /// `-q`: warnings and errors.
    Quiet = -1,
    /// default: info, warnings, errors.
    Info = 0,
    /// `-v`
    Verbose = 1,
    /// `-d`
    Debug = 2,
}

static LEVEL: AtomicI8 = AtomicI8::new(Level::Info as i8);

pub fn set_level(level: Level) {
    LEVEL.store(level as i8, Ordering::Relaxed);
}

pub fn level() -> Level {
    match LEVEL.load(Ordering::Relaxed) {
        i8::MIN..=-2 => Level::Silent,
        -1 => Level::Quiet,
        0 => Level::Info,
        1 => Level::Verbose,
        _ => Level::Debug,
    }
}

pub fn enabled(level: Level) -> bool {
    self::level() >= level
}

/// Print one message with its prefix on stderr. Fatal and error messages always print.
pub fn emit(prefix: &str, min: Level, msg: std::fmt::Arguments<'_>) {
    if enabled(min) {
        eprintln!("{prefix}{msg}");
    }
}

#[macro_export]
macro_rules! fatal_msg { ($($t:tt)*) => { $crate::log::emit("FATAL:   ", $crate::log::Level::Silent, format_args!($($t)*)) } }
#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log::emit("ERROR:   ", $crate::log::Level::Silent, format_args!($($t)*)) } }
#[macro_export]
macro_rules! warning { ($($t:tt)*) => { $crate::log::emit("WARNING: ", $crate::log::Level::Quiet, format_args!($($t)*)) } }
#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log::emit("INFO:    ", $crate::log::Level::Info, format_args!($($t)*)) } }
#[macro_export]
macro_rules! verbose { ($($t:tt)*) => { $crate::log::emit("VERBOSE: ", $crate::log::Level::Verbose, format_args!($($t)*)) } }
#[macro_export]
macro_rules! debug { ($($t:tt)*) => { $crate::log::emit("DEBUG:   ", $crate::log::Level::Debug, format_args!($($t)*)) } }
