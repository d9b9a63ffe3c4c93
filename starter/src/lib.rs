//! strata-starter: the setuid trust boundary.
//!
//! `plan` is the schema shared with the engine (the `strata-plan` crate). The modules here are
//! the privileged steps, in the order `main.rs` runs them: `caller` → `trust` → `plan` →
//! `grant` → `lock` → `session` → `assemble` (with `loops`, `stub`, `dev`, `identity`, and the
//! `keeper`) → `drop` → `exec`, with `supervise` for the pid namespace. All raw syscalls live
//! in `sys`.

pub mod assemble;
pub mod caller;
pub mod dev;
pub mod drop;
pub mod error;
pub mod exec;
pub mod grant;
pub mod identity;
pub mod keeper;
pub mod lock;
pub mod loops;
pub use strata_plan as plan;
pub mod session;
pub mod stub;
pub mod supervise;
pub mod sys;
pub mod trust;

use std::sync::atomic::{AtomicI8, Ordering};

static LOG_LEVEL: AtomicI8 = AtomicI8::new(0);

/// The message level from the plan (-2 silent .. 2 debug); the environment is never read.
pub fn set_log_level(level: i8) {
    LOG_LEVEL.store(level, Ordering::Relaxed);
}

pub fn warn(msg: &str) {
    if LOG_LEVEL.load(Ordering::Relaxed) >= -1 {
        eprintln!("WARNING: {msg}");
    }
}

static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Note the start time (for the per-phase timings printed at debug level).
pub fn mark_start() {
    let _ = START.set(std::time::Instant::now());
}

pub fn debug(msg: &str) {
    if LOG_LEVEL.load(Ordering::Relaxed) >= 2 {
        let us = START.get().map(|t| t.elapsed().as_micros()).unwrap_or(0);
        eprintln!("DEBUG:   [starter +{us}us] {msg}");
    }
}
