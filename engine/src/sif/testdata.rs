//! Where the reference test data lives: `shared/testdata` beside the workspace (CI lays it out
//! as `<checkout>/../shared`); a git worktree sits deeper, so every ancestor of the crate is
//! tried. Shared by the unit tests and, through `#[path]`, the integration tests.

use std::path::{Path, PathBuf};

/// `shared/testdata`, or `None` with the reason printed (the caller then skips).
pub fn testdata() -> Option<PathBuf> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let found = crate_dir
        .ancestors()
        .skip(1)
        .map(|a| a.join("shared/testdata"))
        .find(|p| p.join("sif/images").is_dir());
    if found.is_none() {
        eprintln!("skipping: reference test data (shared/testdata) not found beside {}", crate_dir.display());
    }
    found
}
