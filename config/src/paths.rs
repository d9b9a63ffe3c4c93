//! Path containment for `limit container paths`.

use std::path::{Component, Path};

/// Is `path` the directory `allowed` or inside it, comparing whole components (never string
/// prefixes: `/data2` is not within `/data`)?
///
/// Both paths must be absolute. `.` components, repeated and trailing slashes are ignored. A
/// `..` component in either path makes the answer `false`: the paths compared are resolved
/// paths (`readlink /proc/self/fd/N`) and policy entries, neither of which has one, so a `..`
/// is a sign of a path that was never resolved and is refused rather than interpreted.
pub fn path_is_within(path: &Path, allowed: &Path) -> bool {
    if !path.is_absolute() || !allowed.is_absolute() {
        return false;
    }
    let has_parent = |p: &Path| p.components().any(|c| c == Component::ParentDir);
    if has_parent(path) || has_parent(allowed) {
        return false;
    }
    let mut inner = path.components().filter(|c| *c != Component::CurDir);
    for want in allowed.components().filter(|c| *c != Component::CurDir) {
        if inner.next() != Some(want) {
            return false;
        }
    }
    true
}
