//! User and group names to ids, read straight from `/etc/passwd` and `/etc/group`.
//!
//! The setuid starter links statically and must not run NSS modules as root, so it resolves the
//! names of `limit container owners/groups` from the local files only.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// The local user database.
pub const PASSWD_FILE: &str = "/etc/passwd";
/// The local group database.
pub const GROUP_FILE: &str = "/etc/group";
/// The most of `/etc/passwd` or `/etc/group` read, in bytes.
pub const MAX_ID_FILE_SIZE: u64 = 64 * 1024 * 1024;

/// A name that could not be turned into an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// No entry with that name.
    Unknown { name: String, file: PathBuf },
    /// The database could not be read.
    Io { file: PathBuf, message: String },
    /// The database is larger than [`MAX_ID_FILE_SIZE`].
    TooLarge { file: PathBuf },
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::Unknown { name, file } => {
                write!(f, "{name:?} is not in {}", file.display())
            }
            LookupError::Io { file, message } => {
                write!(f, "cannot read {}: {message}", file.display())
            }
            LookupError::TooLarge { file } => {
                write!(f, "{} is larger than {MAX_ID_FILE_SIZE} bytes", file.display())
            }
        }
    }
}

impl std::error::Error for LookupError {}

/// The uid of user `name` in a passwd-format file (normally [`PASSWD_FILE`]); `None` when
/// there is no such user.
pub fn resolve_uid(name: &str, passwd: &Path) -> Result<Option<u32>, LookupError> {
    lookup(name, passwd)
}

/// The gid of group `name` in a group-format file (normally [`GROUP_FILE`]); `None` when there
/// is no such group.
pub fn resolve_gid(name: &str, group: &Path) -> Result<Option<u32>, LookupError> {
    lookup(name, group)
}

/// Both formats have the name in field 1 and the id in field 3 (`name:x:id:...`). The first
/// entry with the name wins, as with `getpwnam`. Comments, NIS `+`/`-` lines and malformed
/// entries are skipped.
fn lookup(name: &str, file: &Path) -> Result<Option<u32>, LookupError> {
    let io_err = |err: std::io::Error| LookupError::Io { file: file.to_path_buf(), message: err.to_string() };
    if name.is_empty() || name.contains(':') || name.contains('\n') {
        return Ok(None);
    }
    let reader = BufReader::new(File::open(file).map_err(io_err)?.take(MAX_ID_FILE_SIZE + 1));
    let mut total: u64 = 0;
    for line in reader.split(b'\n') {
        let line = line.map_err(io_err)?;
        total = total.saturating_add(line.len() as u64 + 1);
        if total > MAX_ID_FILE_SIZE {
            return Err(LookupError::TooLarge { file: file.to_path_buf() });
        }
        let mut fields = line.split(|&b| b == b':');
        let (Some(entry), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if entry != name.as_bytes() {
            continue;
        }
        let id = std::str::from_utf8(id).ok().and_then(|s| {
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                s.parse::<u32>().ok().filter(|&id| id != u32::MAX)
            } else {
                None
            }
        });
        if let Some(id) = id {
            return Ok(Some(id));
        }
    }
    Ok(None)
}
