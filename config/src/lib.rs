//! strata.conf parser and typed policy (std only).
//!
//! `strata.conf` uses the `apptainer.conf` grammar: `directive = value` lines, `#` comment lines,
//! blank lines. Values of list directives are comma-separated and repeated list directives
//! accumulate (a list directive that appears at all replaces its default, so `bind path =`
//! clears the default binds). Scalar directives may be given once. Booleans are exactly `yes` or
//! `no`; enumerations are checked. Unknown directives and bad values are errors naming the file,
//! the line and the directive: the policy fails closed.
//!
//! This crate is used by the setuid starter, so nothing in it panics on any input and it has no
//! dependencies. It never consults NSS: [`resolve_uid`] and [`resolve_gid`] read `/etc/passwd`
//! and `/etc/group` (or the files they are given) directly.
//!
//! ```
//! use std::path::Path;
//! use strata_config::{MountDev, Policy};
//!
//! let text = "allow setuid = yes\nmount dev = minimal\nlimit container paths = /data, /apps\n";
//! let policy = Policy::parse(text, Path::new("/etc/strata.conf")).unwrap();
//! assert_eq!(policy.mount_dev, MountDev::Minimal);
//! assert!(policy.path_allowed(Path::new("/data/u1/img.sif")));
//! assert!(!policy.path_allowed(Path::new("/data2/img.sif")));
//!
//! let err = Policy::parse("allow setuid = maybe\n", Path::new("/etc/strata.conf")).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     r#"/etc/strata.conf:1: "allow setuid" must be yes or no, not "maybe""#
//! );
//! ```

mod ids;
mod parse;
mod paths;

use std::fmt;
use std::path::{Path, PathBuf};

pub use ids::{resolve_gid, resolve_uid, LookupError, GROUP_FILE, MAX_ID_FILE_SIZE, PASSWD_FILE};
pub use parse::{directives, ConfigError, ErrorKind, MAX_FILE_SIZE, MAX_LINES};
pub use paths::path_is_within;

/// Where `strata.conf` lives relative to the install prefix (`<prefix>/etc/strata/strata.conf`),
/// as the Makefile installs it and the starter finds it from its own location.
pub const CONFIG_PATH_IN_PREFIX: &str = "etc/strata/strata.conf";

/// The site policy: every directive of `strata.conf`, typed.
///
/// Field comments give the directive name and its default ([`Policy::defaults`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `allow setuid` (yes): may non-root users use the setuid starter at all.
    pub allow_setuid: bool,
    /// `max loop devices` (256): the most loop devices strata will ever use at once.
    pub max_loop_devices: u32,
    /// `shared loop devices` (no): reuse a loop device already bound to the same image
    /// (same device, inode, offset, size, read-only).
    pub shared_loop_devices: bool,
    /// `squashfs readahead` (0): read-ahead of read-only squashfs loop devices in KiB; `None`
    /// (`kernel`) keeps the kernel's choice. 0 decompresses only the blocks a program touches.
    pub squashfs_readahead_kib: Option<u32>,
    /// `allow pid ns` (yes).
    pub allow_pid_ns: bool,
    /// `allow ipc ns` (yes).
    pub allow_ipc_ns: bool,
    /// `allow uts ns` (yes).
    pub allow_uts_ns: bool,
    /// `mount proc` (yes).
    pub mount_proc: bool,
    /// `mount sys` (yes).
    pub mount_sys: bool,
    /// `mount dev` (yes): yes | no | minimal.
    pub mount_dev: MountDev,
    /// `mount devpts` (yes).
    pub mount_devpts: bool,
    /// `mount home` (yes).
    pub mount_home: bool,
    /// `mount tmp` (yes).
    pub mount_tmp: bool,
    /// `bind path` (`/etc/localtime`, `/etc/hosts`): binds the administrator adds to every
    /// container.
    pub bind_paths: Vec<BindPath>,
    /// `user bind control` (yes): may users ask for their own binds, home, workdir.
    pub user_bind_control: bool,
    /// `config passwd` (yes).
    pub config_passwd: bool,
    /// `config group` (yes).
    pub config_group: bool,
    /// `config resolv_conf` (yes).
    pub config_resolv_conf: bool,
    /// `allow container sif` (yes).
    pub allow_container_sif: bool,
    /// `allow container encrypted` (yes).
    pub allow_container_encrypted: bool,
    /// `allow container squashfs` (yes): also covers squashfs overlays.
    pub allow_container_squashfs: bool,
    /// `allow container extfs` (yes): also covers ext3 overlay images.
    pub allow_container_extfs: bool,
    /// `allow container dir` (yes): also covers directory overlays.
    pub allow_container_dir: bool,
    /// `limit container owners` (unset): images must be owned by one of these users.
    pub limit_container_owners: Vec<UserSpec>,
    /// `limit container groups` (unset): images must be owned by one of these groups.
    pub limit_container_groups: Vec<GroupSpec>,
    /// `limit container paths` (unset): images must lie within one of these directories
    /// (component-wise, see [`path_is_within`]).
    pub limit_container_paths: Vec<PathBuf>,
    /// `sessiondir max size` (64): size of the session tmpfs in MiB, which is also the capacity
    /// of `--writable-tmpfs`. Never 0 (a tmpfs of size 0 is unlimited).
    pub sessiondir_max_size_mib: u64,
    /// `enable overlay` (yes): yes | no | try | driver.
    pub enable_overlay: EnableOverlay,
    /// `allow setuid-mount squashfs` (yes): yes | no | iflimited.
    pub allow_setuid_mount_squashfs: SetuidMount,
    /// `allow setuid-mount extfs` (yes): may the kernel mount user-supplied ext3 in setuid mode.
    pub allow_setuid_mount_extfs: bool,
    /// `sync writable extfs` (no): mount writable ext3 overlays with `sync`.
    pub sync_writable_extfs: bool,
    /// `root default capabilities` (full): full | file | no.
    pub root_default_capabilities: RootCapabilities,
    /// `mount slave` (yes): host mount propagation reaches the container (rslave), else rprivate.
    pub mount_slave: bool,
    /// `memory fs type` (tmpfs): tmpfs | ramfs, for the session directory and `/dev/shm`.
    pub memory_fs_type: MemoryFsType,
}

impl Policy {
    /// The policy with every directive at its default: what an empty `strata.conf` means, and
    /// exactly what the shipped `strata.conf` says.
    pub fn defaults() -> Policy {
        Policy {
            allow_setuid: true,
            max_loop_devices: 256,
            shared_loop_devices: false,
            squashfs_readahead_kib: Some(0),
            allow_pid_ns: true,
            allow_ipc_ns: true,
            allow_uts_ns: true,
            mount_proc: true,
            mount_sys: true,
            mount_dev: MountDev::Yes,
            mount_devpts: true,
            mount_home: true,
            mount_tmp: true,
            bind_paths: vec![BindPath::same("/etc/localtime"), BindPath::same("/etc/hosts")],
            user_bind_control: true,
            config_passwd: true,
            config_group: true,
            config_resolv_conf: true,
            allow_container_sif: true,
            allow_container_encrypted: true,
            allow_container_squashfs: true,
            allow_container_extfs: true,
            allow_container_dir: true,
            limit_container_owners: Vec::new(),
            limit_container_groups: Vec::new(),
            limit_container_paths: Vec::new(),
            sessiondir_max_size_mib: 64,
            enable_overlay: EnableOverlay::Yes,
            allow_setuid_mount_squashfs: SetuidMount::Yes,
            allow_setuid_mount_extfs: true,
            sync_writable_extfs: false,
            root_default_capabilities: RootCapabilities::Full,
            mount_slave: true,
            memory_fs_type: MemoryFsType::Tmpfs,
        }
    }

    /// Parses the text of a `strata.conf`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Policy, ConfigError> {
        parse::parse(text, origin)
    }

    /// Reads at most [`MAX_FILE_SIZE`] bytes from `reader` and parses them. The setuid starter
    /// opens the file itself (`O_NOFOLLOW`, `fstat` checks on the fd) and hands the `File` here,
    /// so the bytes checked are the bytes parsed.
    pub fn from_reader<R: std::io::Read>(reader: R, origin: &Path) -> Result<Policy, ConfigError> {
        parse::from_reader(reader, origin)
    }

    /// Opens `path` and parses it. This follows symlinks and checks no ownership: callers that
    /// must trust the file (the setuid starter) open it themselves and use
    /// [`Policy::from_reader`].
    pub fn load(path: &Path) -> Result<Policy, ConfigError> {
        match std::fs::File::open(path) {
            Ok(file) => parse::from_reader(file, path),
            Err(err) => Err(ConfigError::io(path, &err)),
        }
    }

    /// Is any `limit container *` directive set? (`allow setuid-mount squashfs = iflimited`
    /// depends on this.)
    pub fn limits_active(&self) -> bool {
        !self.limit_container_owners.is_empty()
            || !self.limit_container_groups.is_empty()
            || !self.limit_container_paths.is_empty()
    }

    /// May the kernel mount user-supplied squashfs in setuid mode?
    pub fn setuid_mount_squashfs_allowed(&self) -> bool {
        match self.allow_setuid_mount_squashfs {
            SetuidMount::Yes => true,
            SetuidMount::No => false,
            SetuidMount::IfLimited => self.limits_active(),
        }
    }

    /// Does `limit container paths` allow an image at `path` (the resolved path of the open
    /// file, e.g. `readlink /proc/self/fd/N`)? True when the directive is unset.
    pub fn path_allowed(&self, path: &Path) -> bool {
        self.limit_container_paths.is_empty()
            || self.limit_container_paths.iter().any(|allowed| path_is_within(path, allowed))
    }

    /// Does `limit container owners` allow an image owned by `uid`? Names are resolved in the
    /// `passwd` file (normally [`PASSWD_FILE`]); a name that is not there is an error, so the
    /// caller fails closed. True when the directive is unset.
    pub fn owner_allowed(&self, uid: u32, passwd: &Path) -> Result<bool, LookupError> {
        for spec in &self.limit_container_owners {
            if spec.resolve(passwd)? == uid {
                return Ok(true);
            }
        }
        Ok(self.limit_container_owners.is_empty())
    }

    /// Does `limit container groups` allow an image owned by group `gid`? As
    /// [`Policy::owner_allowed`], with the `group` file (normally [`GROUP_FILE`]).
    pub fn group_allowed(&self, gid: u32, group: &Path) -> Result<bool, LookupError> {
        for spec in &self.limit_container_groups {
            if spec.resolve(group)? == gid {
                return Ok(true);
            }
        }
        Ok(self.limit_container_groups.is_empty())
    }

    /// The session tmpfs size in bytes (`sessiondir max size` MiB).
    pub fn sessiondir_max_size_bytes(&self) -> u64 {
        self.sessiondir_max_size_mib.saturating_mul(1024 * 1024)
    }
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::defaults()
    }
}

/// An administrator's bind: `bind path = src[:dst]`. Both paths are absolute, normalised, and
/// free of `..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindPath {
    /// The path on the host.
    pub source: PathBuf,
    /// The path inside the container (the source path when no `:dst` is given).
    pub destination: PathBuf,
}

impl BindPath {
    fn same(path: &str) -> BindPath {
        BindPath { source: PathBuf::from(path), destination: PathBuf::from(path) }
    }
}

/// A user in `limit container owners`: a number, or a name resolved in `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserSpec {
    Uid(u32),
    Name(String),
}

impl UserSpec {
    /// The uid: the number itself, or the name looked up in `passwd` (no NSS).
    pub fn resolve(&self, passwd: &Path) -> Result<u32, LookupError> {
        match self {
            UserSpec::Uid(uid) => Ok(*uid),
            UserSpec::Name(name) => match resolve_uid(name, passwd)? {
                Some(uid) => Ok(uid),
                None => Err(LookupError::Unknown { name: name.clone(), file: passwd.to_path_buf() }),
            },
        }
    }
}

impl fmt::Display for UserSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserSpec::Uid(uid) => write!(f, "{uid}"),
            UserSpec::Name(name) => f.write_str(name),
        }
    }
}

/// A group in `limit container groups`: a number, or a name resolved in `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupSpec {
    Gid(u32),
    Name(String),
}

impl GroupSpec {
    /// The gid: the number itself, or the name looked up in `group` (no NSS).
    pub fn resolve(&self, group: &Path) -> Result<u32, LookupError> {
        match self {
            GroupSpec::Gid(gid) => Ok(*gid),
            GroupSpec::Name(name) => match resolve_gid(name, group)? {
                Some(gid) => Ok(gid),
                None => Err(LookupError::Unknown { name: name.clone(), file: group.to_path_buf() }),
            },
        }
    }
}

impl fmt::Display for GroupSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupSpec::Gid(gid) => write!(f, "{gid}"),
            GroupSpec::Name(name) => f.write_str(name),
        }
    }
}

/// Declares an enumerated directive value: the variants, their spelling in the file, and the
/// text listing them in error messages.
macro_rules! choice {
    ($(#[$doc:meta])* $name:ident, $expected:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// What an error says the value must be.
            pub const EXPECTED: &'static str = $expected;

            /// The value as written in `strata.conf`.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The value for its exact spelling in `strata.conf`.
            pub fn from_conf(text: &str) -> Option<$name> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

choice!(
    /// `mount dev`: bind the host's `/dev`, none, or a minimal `/dev` (null, zero, random,
    /// urandom, tty, shm, pts).
    MountDev, "one of yes, no, minimal", { Yes => "yes", No => "no", Minimal => "minimal" }
);
choice!(
    /// `enable overlay`: `try` behaves as `yes`; `driver` asks for the FUSE overlay driver.
    EnableOverlay, "one of yes, no, try, driver",
    { Yes => "yes", No => "no", Try => "try", Driver => "driver" }
);
choice!(
    /// `allow setuid-mount squashfs`: `iflimited` counts as yes only while a `limit container *`
    /// directive is set.
    SetuidMount, "one of yes, no, iflimited",
    { Yes => "yes", No => "no", IfLimited => "iflimited" }
);
choice!(
    /// `root default capabilities`: what root keeps inside the container.
    RootCapabilities, "one of full, file, no", { Full => "full", File => "file", No => "no" }
);
choice!(
    /// `memory fs type`: the filesystem of the session directory and `/dev/shm`.
    MemoryFsType, "one of tmpfs, ramfs", { Tmpfs => "tmpfs", Ramfs => "ramfs" }
);

#[cfg(test)]
mod tests;
