//! The plan: what container the engine asks for. Defined once here (a crate of its own, like
//! the policy in `config/`), used by both sides.
//!
//! A plan is a *request*. The starter parses it strictly (`deny_unknown_fields`, a version, a
//! size cap) and then checks every part against policy and the fds it was handed (`grant`).
//! There are deliberately no uid, gid, group or capability fields: the starter uses the real
//! ids of its caller.

use serde::{Deserialize, Serialize};
use std::io::Read;

/// The version this starter speaks. The engine and starter ship together.
pub const PLAN_VERSION: u32 = 1;
/// The plan arrives on this fd (a memfd or pipe the engine filled).
pub const PLAN_FD: i32 = 3;
/// Upper bound on the plan's size in bytes; a larger plan is refused before parsing.
pub const MAX_PLAN_BYTES: usize = 1 << 20;
/// Upper bounds on list lengths (DoS through sizes, threat T11).
pub const MAX_LAYERS: usize = 64;
pub const MAX_BINDS: usize = 256;
pub const MAX_ENV: usize = 4096;
pub const MAX_ARGS: usize = 65536;
/// Most paths a plan may name for reading the payload ahead.
pub const MAX_PREFETCH: usize = 16;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub version: u32,
    /// The container's root filesystem.
    pub rootfs: Layer,
    /// Overlay layers, bottom to top. At most one is writable.
    #[serde(default)]
    pub overlays: Vec<Layer>,
    /// Throw-away writable layer in the session tmpfs (`--writable-tmpfs`).
    #[serde(default)]
    pub writable_tmpfs: bool,
    /// Host directories or files bound into the container.
    #[serde(default)]
    pub binds: Vec<Bind>,
    /// Standard mounts wanted.
    pub mounts: Mounts,
    /// Extra namespaces wanted (mount is always new).
    #[serde(default)]
    pub namespaces: Namespaces,
    /// Lines appended to the container's `/etc/passwd` and `/etc/group` for the caller.
    #[serde(default)]
    pub identity: Option<Identity>,
    /// The payload.
    pub process: Process,
    /// Message level: -2 silent .. 2 debug.
    #[serde(default)]
    pub log_level: i8,
}

/// A filesystem to mount: an fd the engine opened as the user, and what is in it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub fd: i32,
    pub kind: LayerKind,
    /// Byte offset of the filesystem inside the file (0 for a bare image; ignored for dirs).
    #[serde(default)]
    pub offset: u64,
    /// Byte size of the filesystem (the file size for a bare image; ignored for dirs).
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub writable: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    Squashfs,
    Ext3,
    Dir,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Bind {
    /// A regular (not `O_PATH`) fd of the source, opened by the engine as the user.
    pub fd: i32,
    /// Absolute destination inside the container.
    pub dest: String,
    #[serde(default)]
    pub readonly: bool,
    /// Skip it with a warning when the destination cannot be made (system binds such as the
    /// home directory on a `--writable` sandbox); a user's `-B` bind is never optional.
    #[serde(default)]
    pub optional: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DevMode {
    /// Bind the host's `/dev`.
    #[default]
    Full,
    /// A tmpfs `/dev` with null, zero, full, random, urandom, tty, a devpts and shm.
    Minimal,
    /// Leave the image's `/dev` alone.
    None,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct Mounts {
    #[serde(default)]
    pub proc: bool,
    #[serde(default)]
    pub sys: bool,
    #[serde(default)]
    pub dev: DevMode,
    /// A fresh tmpfs on `/tmp` and `/var/tmp` (with `--contain`); otherwise the engine binds them.
    #[serde(default)]
    pub tmp_tmpfs: bool,
    /// A fresh tmpfs owned by the caller at this path (the home directory with `--contain`).
    #[serde(default)]
    pub home_tmpfs: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct Namespaces {
    #[serde(default)]
    pub pid: bool,
    #[serde(default)]
    pub ipc: bool,
    #[serde(default)]
    pub uts: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// One `/etc/passwd` line for the caller (no newline). Its uid/gid fields must be the caller's.
    pub passwd: String,
    /// `/etc/group` lines for the caller's groups.
    pub group: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Process {
    pub argv: Vec<String>,
    /// `NAME=value` entries; the payload gets exactly these.
    pub env: Vec<String>,
    /// Absolute working directory inside the container.
    pub cwd: String,
    #[serde(default = "default_umask")]
    pub umask: u32,
    /// Execute this fd (the static shell shipped in the install, opened by the engine) with
    /// `argv`, instead of looking `argv[0]` up in the container: the action script then runs
    /// from the host's page cache rather than from a freshly mounted, compressed image.
    #[serde(default)]
    pub interpreter_fd: Option<i32>,
    /// Paths in the container where the payload's executable may be (the first that exists
    /// is read ahead while the container is built; see `prefetch`).
    #[serde(default)]
    pub prefetch: Vec<String>,
}

fn default_umask() -> u32 {
    0o022
}

#[derive(Debug)]
pub enum PlanError {
    Read(std::io::Error),
    TooLarge,
    Parse(serde_json::Error),
    Version(u32),
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanError::Read(e) => write!(f, "could not read the plan on fd {PLAN_FD}: {e}"),
            PlanError::TooLarge => {
                write!(f, "the plan is larger than {MAX_PLAN_BYTES} bytes: refused")
            }
            PlanError::Parse(e) => write!(f, "invalid plan: {e}"),
            PlanError::Version(v) => write!(
                f,
                "plan version {v} is not supported by this starter (it speaks version {PLAN_VERSION}); \
                 use the strata engine installed beside it"
            ),
        }
    }
}

impl Plan {
    /// Parse a plan from a reader, refusing anything over `MAX_PLAN_BYTES`.
    pub fn read_from(reader: impl Read) -> Result<Plan, PlanError> {
        let mut buf = Vec::with_capacity(8192);
        reader.take(MAX_PLAN_BYTES as u64 + 1).read_to_end(&mut buf).map_err(PlanError::Read)?;
        if buf.len() > MAX_PLAN_BYTES {
            return Err(PlanError::TooLarge);
        }
        Plan::parse(&buf)
    }

    pub fn parse(bytes: &[u8]) -> Result<Plan, PlanError> {
        let plan: Plan = serde_json::from_slice(bytes).map_err(PlanError::Parse)?;
        if plan.version != PLAN_VERSION {
            return Err(PlanError::Version(plan.version));
        }
        Ok(plan)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain data structures cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Every fd the plan names, with the role it plays (for messages).
    pub fn fds(&self) -> Vec<(i32, String)> {
        let mut out = vec![(self.rootfs.fd, "rootfs".to_string())];
        for (i, l) in self.overlays.iter().enumerate() {
            out.push((l.fd, format!("overlay {i}")));
        }
        for b in &self.binds {
            out.push((b.fd, format!("bind {}", b.dest)));
        }
        if let Some(fd) = self.process.interpreter_fd {
            out.push((fd, "interpreter".to_string()));
        }
        out
    }
}
