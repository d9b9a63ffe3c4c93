//! The grammar: lines, directives, values, and the errors that name file, line and directive.

use std::fmt;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::{
    BindPath, EnableOverlay, GroupSpec, MemoryFsType, MountDev, Policy, RootCapabilities, SetuidMount,
    UserSpec,
};

/// The largest `strata.conf` accepted, in bytes.
pub const MAX_FILE_SIZE: u64 = 1024 * 1024;
/// The most lines a `strata.conf` may have.
pub const MAX_LINES: usize = 10_000;

/// Largest `sessiondir max size`, in MiB (1 TiB).
const MAX_SESSIONDIR_MIB: u64 = 1024 * 1024;

/// Why `strata.conf` was refused; `Display` gives `<file>:<line>: <what is wrong>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as the caller named it.
    pub origin: PathBuf,
    /// The 1-based line, when the problem is on one line.
    pub line: Option<usize>,
    pub kind: ErrorKind,
}

/// What is wrong with `strata.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file could not be opened or read.
    Io { kind: std::io::ErrorKind, message: String },
    /// Larger than [`MAX_FILE_SIZE`].
    TooLarge { limit: u64 },
    /// More than [`MAX_LINES`] lines.
    TooManyLines { limit: usize },
    /// Bytes that are not UTF-8.
    NotUtf8,
    /// A control character (other than tab) in a line.
    ControlCharacter,
    /// A line that is neither blank, a comment, nor `directive = value`.
    MissingEquals,
    /// `= value` with nothing before the `=`.
    MissingDirective,
    /// A directive neither strata nor Apptainer knows.
    UnknownDirective(String),
    /// An Apptainer directive that strata does not implement.
    UnsupportedDirective(String),
    /// A value the directive does not accept.
    BadValue { directive: &'static str, value: String, expected: &'static str },
    /// A directive that takes one value, given a second time.
    Repeated { directive: &'static str, first_line: usize },
}

impl ConfigError {
    fn at(origin: &Path, line: usize, kind: ErrorKind) -> ConfigError {
        ConfigError { origin: origin.to_path_buf(), line: Some(line), kind }
    }

    pub(crate) fn io(origin: &Path, err: &std::io::Error) -> ConfigError {
        ConfigError {
            origin: origin.to_path_buf(),
            line: None,
            kind: ErrorKind::Io { kind: err.kind(), message: err.to_string() },
        }
    }

    /// The directive the error is about, when there is one.
    pub fn directive(&self) -> Option<&str> {
        match &self.kind {
            ErrorKind::UnknownDirective(d) | ErrorKind::UnsupportedDirective(d) => Some(d),
            ErrorKind::BadValue { directive, .. } | ErrorKind::Repeated { directive, .. } => Some(directive),
            _ => None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        match &self.kind {
            ErrorKind::Io { message, .. } => write!(f, "cannot read: {message}"),
            ErrorKind::TooLarge { limit } => write!(f, "larger than {limit} bytes"),
            ErrorKind::TooManyLines { limit } => write!(f, "more than {limit} lines"),
            ErrorKind::NotUtf8 => f.write_str("not valid UTF-8"),
            ErrorKind::ControlCharacter => f.write_str("contains a control character"),
            ErrorKind::MissingEquals => f.write_str(r#"expected "directive = value""#),
            ErrorKind::MissingDirective => f.write_str(r#"no directive before "=""#),
            ErrorKind::UnknownDirective(d) => write!(f, "unknown directive {d:?}"),
            ErrorKind::UnsupportedDirective(d) => {
                write!(f, "{d:?} is an Apptainer directive that strata does not support; remove it")
            }
            ErrorKind::BadValue { directive, value, expected } => {
                write!(f, "\"{directive}\" must be {expected}, not {value:?}")
            }
            ErrorKind::Repeated { directive, first_line } => {
                write!(f, "\"{directive}\" is already set on line {first_line}; give it once")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Sets a field from one value; `Err` carries what the value must be.
type Setter = fn(&mut Policy, &str) -> Result<(), &'static str>;

enum Kind {
    /// One value, given at most once.
    Scalar(Setter),
    /// Comma-separated values; repeats accumulate; the first occurrence clears the default.
    List { clear: fn(&mut Policy), add: Setter },
}

struct Directive {
    name: &'static str,
    kind: Kind,
}

macro_rules! boolean {
    ($name:literal, $field:ident) => {
        Directive {
            name: $name,
            kind: Kind::Scalar(|p, v| {
                p.$field = yes_no(v)?;
                Ok(())
            }),
        }
    };
}

macro_rules! enumerated {
    ($name:literal, $field:ident, $ty:ident) => {
        Directive {
            name: $name,
            kind: Kind::Scalar(|p, v| {
                p.$field = $ty::from_conf(v).ok_or($ty::EXPECTED)?;
                Ok(())
            }),
        }
    };
}

/// Every directive strata knows. The shipped `strata.conf` documents each one (a unit test
/// keeps the two in step).
const TABLE: &[Directive] = &[
    boolean!("allow setuid", allow_setuid),
    Directive {
        name: "max loop devices",
        kind: Kind::Scalar(|p, v| {
            p.max_loop_devices = number(v, 0, u32::MAX.into(), "a whole number from 0 to 4294967295")? as u32;
            Ok(())
        }),
    },
    boolean!("shared loop devices", shared_loop_devices),
    Directive {
        name: "squashfs readahead",
        kind: Kind::Scalar(|p, v| {
            const EXPECTED: &str = "a size in KiB from 0 to 65536, or \"kernel\"";
            p.squashfs_readahead_kib =
                if v == "kernel" { None } else { Some(number(v, 0, 65536, EXPECTED)? as u32) };
            Ok(())
        }),
    },
    boolean!("allow pid ns", allow_pid_ns),
    boolean!("allow ipc ns", allow_ipc_ns),
    boolean!("allow uts ns", allow_uts_ns),
    boolean!("mount proc", mount_proc),
    boolean!("mount sys", mount_sys),
    enumerated!("mount dev", mount_dev, MountDev),
    boolean!("mount devpts", mount_devpts),
    boolean!("mount home", mount_home),
    boolean!("mount tmp", mount_tmp),
    Directive {
        name: "bind path",
        kind: Kind::List {
            clear: |p| p.bind_paths.clear(),
            add: |p, v| {
                p.bind_paths.push(bind_path(v)?);
                Ok(())
            },
        },
    },
    boolean!("user bind control", user_bind_control),
    boolean!("config passwd", config_passwd),
    boolean!("config group", config_group),
    boolean!("config resolv_conf", config_resolv_conf),
    boolean!("allow container sif", allow_container_sif),
    boolean!("allow container encrypted", allow_container_encrypted),
    boolean!("allow container squashfs", allow_container_squashfs),
    boolean!("allow container extfs", allow_container_extfs),
    boolean!("allow container dir", allow_container_dir),
    Directive {
        name: "limit container owners",
        kind: Kind::List {
            clear: |p| p.limit_container_owners.clear(),
            add: |p, v| {
                let spec = match id_or_name(v, "a user name or a uid")? {
                    IdOrName::Id(uid) => UserSpec::Uid(uid),
                    IdOrName::Name(name) => UserSpec::Name(name),
                };
                p.limit_container_owners.push(spec);
                Ok(())
            },
        },
    },
    Directive {
        name: "limit container groups",
        kind: Kind::List {
            clear: |p| p.limit_container_groups.clear(),
            add: |p, v| {
                let spec = match id_or_name(v, "a group name or a gid")? {
                    IdOrName::Id(gid) => GroupSpec::Gid(gid),
                    IdOrName::Name(name) => GroupSpec::Name(name),
                };
                p.limit_container_groups.push(spec);
                Ok(())
            },
        },
    },
    Directive {
        name: "limit container paths",
        kind: Kind::List {
            clear: |p| p.limit_container_paths.clear(),
            add: |p, v| {
                p.limit_container_paths.push(clean_path(v)?);
                Ok(())
            },
        },
    },
    Directive {
        name: "sessiondir max size",
        kind: Kind::Scalar(|p, v| {
            p.sessiondir_max_size_mib =
                number(v, 1, MAX_SESSIONDIR_MIB, "a whole number of MiB from 1 to 1048576")?;
            Ok(())
        }),
    },
    enumerated!("enable overlay", enable_overlay, EnableOverlay),
    enumerated!("allow setuid-mount squashfs", allow_setuid_mount_squashfs, SetuidMount),
    boolean!("allow setuid-mount extfs", allow_setuid_mount_extfs),
    boolean!("sync writable extfs", sync_writable_extfs),
    enumerated!("root default capabilities", root_default_capabilities, RootCapabilities),
    boolean!("mount slave", mount_slave),
    enumerated!("memory fs type", memory_fs_type, MemoryFsType),
];

/// Directives of `apptainer.conf` that strata does not implement: refused with a message that
/// says so, rather than as typos.
const APPTAINER_ONLY: &[&str] = &[
    "allow user ns",
    "allow setuid-mount encrypted",
    "allow net users",
    "allow net groups",
    "allow net networks",
    "allow netns paths",
    "always use nv",
    "always use rocm",
    "binary path",
    "cni configuration path",
    "cni plugin path",
    "cryptsetup path",
    "download buffer size",
    "download concurrency",
    "download part size",
    "enable fusemount",
    "enable underlay",
    "go path",
    "image driver",
    "ldconfig path",
    "mksquashfs mem",
    "mksquashfs path",
    "mksquashfs procs",
    "mount hostfs",
    "nvidia-container-cli path",
    "systemd cgroups",
    "unsquashfs path",
    "use nvidia-container-cli",
];

/// The names of every directive strata knows, in the order of the shipped `strata.conf`.
pub fn directives() -> impl Iterator<Item = &'static str> {
    TABLE.iter().map(|d| d.name)
}

pub(crate) fn from_reader<R: Read>(reader: R, origin: &Path) -> Result<Policy, ConfigError> {
    let mut bytes = Vec::new();
    if let Err(err) = reader.take(MAX_FILE_SIZE + 1).read_to_end(&mut bytes) {
        return Err(ConfigError::io(origin, &err));
    }
    match String::from_utf8(bytes) {
        Ok(text) => parse(&text, origin),
        Err(err) => {
            let bytes = err.as_bytes();
            if bytes.len() as u64 > MAX_FILE_SIZE {
                return Err(too_large(origin));
            }
            let valid = bytes.get(..err.utf8_error().valid_up_to()).unwrap_or(&[]);
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            Err(ConfigError::at(origin, line, ErrorKind::NotUtf8))
        }
    }
}

fn too_large(origin: &Path) -> ConfigError {
    ConfigError {
        origin: origin.to_path_buf(),
        line: None,
        kind: ErrorKind::TooLarge { limit: MAX_FILE_SIZE },
    }
}

pub(crate) fn parse(text: &str, origin: &Path) -> Result<Policy, ConfigError> {
    if text.len() as u64 > MAX_FILE_SIZE {
        return Err(too_large(origin));
    }
    let mut policy = Policy::defaults();
    // The line on which each directive of TABLE was first seen.
    let mut seen: Vec<Option<usize>> = TABLE.iter().map(|_| None).collect();
    for (index, raw) in text.lines().enumerate() {
        let lineno = index.saturating_add(1);
        let fail = |kind| Err(ConfigError::at(origin, lineno, kind));
        if lineno > MAX_LINES {
            return fail(ErrorKind::TooManyLines { limit: MAX_LINES });
        }
        if raw.chars().any(|c| c.is_control() && c != '\t') {
            return fail(ErrorKind::ControlCharacter);
        }
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return fail(ErrorKind::MissingEquals);
        };
        // Directive names are matched with their words separated by single spaces.
        let key = key.split_whitespace().collect::<Vec<_>>().join(" ");
        let value = value.trim();
        if key.is_empty() {
            return fail(ErrorKind::MissingDirective);
        }
        let Some(slot) = TABLE.iter().position(|d| d.name == key) else {
            if APPTAINER_ONLY.contains(&key.as_str()) {
                return fail(ErrorKind::UnsupportedDirective(key));
            }
            return fail(ErrorKind::UnknownDirective(key));
        };
        let (Some(directive), Some(first)) = (TABLE.get(slot), seen.get_mut(slot)) else {
            return fail(ErrorKind::UnknownDirective(key));
        };
        let bad = |value: &str, expected| {
            Err(ConfigError::at(
                origin,
                lineno,
                ErrorKind::BadValue { directive: directive.name, value: value.to_string(), expected },
            ))
        };
        match directive.kind {
            Kind::Scalar(set) => {
                if let Some(first_line) = *first {
                    return fail(ErrorKind::Repeated { directive: directive.name, first_line });
                }
                if let Err(expected) = set(&mut policy, value) {
                    return bad(value, expected);
                }
            }
            Kind::List { clear, add } => {
                if first.is_none() {
                    clear(&mut policy);
                }
                for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                    if let Err(expected) = add(&mut policy, item) {
                        return bad(item, expected);
                    }
                }
            }
        }
        first.get_or_insert(lineno);
    }
    Ok(policy)
}

fn yes_no(value: &str) -> Result<bool, &'static str> {
    match value {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err("yes or no"),
    }
}

/// A decimal number within `min..=max` (digits only: no sign, no spaces, no units).
fn number(value: &str, min: u64, max: u64, expected: &'static str) -> Result<u64, &'static str> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(expected);
    }
    match value.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(expected),
    }
}

enum IdOrName {
    Id(u32),
    Name(String),
}

/// A numeric id (not -1) or a user/group name as `/etc/passwd` and `/etc/group` can hold it.
fn id_or_name(value: &str, expected: &'static str) -> Result<IdOrName, &'static str> {
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return match value.parse::<u32>() {
            Ok(id) if id != u32::MAX => Ok(IdOrName::Id(id)),
            _ => Err(expected),
        };
    }
    let valid = value.len() <= 256
        && !value.starts_with('-')
        && value.chars().all(|c| !c.is_whitespace() && !c.is_control() && c != ':' && c != '/');
    if valid {
        Ok(IdOrName::Name(value.to_string()))
    } else {
        Err(expected)
    }
}

/// An absolute path without `..`, normalised (no `.`, no repeated or trailing slashes).
fn clean_path(value: &str) -> Result<PathBuf, &'static str> {
    const EXPECTED: &str = "an absolute path without \"..\"";
    let path = Path::new(value);
    if !path.is_absolute() {
        return Err(EXPECTED);
    }
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::Normal(_) => clean.push(component),
            Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return Err(EXPECTED),
        }
    }
    Ok(clean)
}

/// `src[:dst]`, both absolute without `..`.
fn bind_path(value: &str) -> Result<BindPath, &'static str> {
    const EXPECTED: &str = "src[:dst] with absolute paths without \"..\"";
    let (source, destination) = match value.split_once(':') {
        Some((src, dst)) => (src.trim(), dst.trim()),
        None => (value, value),
    };
    if destination.contains(':') {
        return Err(EXPECTED);
    }
    match (clean_path(source), clean_path(destination)) {
        (Ok(source), Ok(destination)) => Ok(BindPath { source, destination }),
        _ => Err(EXPECTED),
    }
}
