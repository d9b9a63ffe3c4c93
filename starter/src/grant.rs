//! The trust boundary: every request of the plan checked against policy, the caller's real
//! ids and the fds actually handed over. The `Grant` is all that later steps may use.

use crate::caller::Caller;
use crate::error::{Context, Result};
use crate::plan::{self, DevMode, LayerKind, Plan};
use crate::{bail, sys};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::stat::{fstat, FileStat, SFlag};
use nix::sys::statfs::fstatfs;
use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};
use strata_config::{EnableOverlay, MountDev, Policy, GROUP_FILE, PASSWD_FILE};

const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
const SQUASHFS_MAGIC: &[u8; 4] = b"hsqs";
const SIF_MAGIC: &[u8; 10] = b"SIF_MAGIC\0";
const MAX_TEXT: usize = 64 * 1024;

/// A layer the caller may have mounted.
#[derive(Debug, Clone)]
pub struct GrantedLayer {
    pub fd: RawFd,
    pub kind: LayerKind,
    pub offset: u64,
    pub size: u64,
    pub writable: bool,
    /// Where the fd points, for messages only (never re-opened).
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct GrantedBind {
    pub fd: RawFd,
    pub dest: String,
    pub readonly: bool,
    pub optional: bool,
    pub is_dir: bool,
}

/// Where writes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writable {
    /// Everything read-only.
    None,
    /// `--writable-tmpfs`: an upper dir in the session tmpfs.
    Tmpfs,
    /// The layer at this index of `Grant::layers` is the upper layer.
    Layer(usize),
}

#[derive(Debug)]
pub struct Grant {
    /// Bottom to top: `layers[0]` is the rootfs.
    pub layers: Vec<GrantedLayer>,
    pub writable: Writable,
    pub binds: Vec<GrantedBind>,
    pub mounts: plan::Mounts,
    pub namespaces: plan::Namespaces,
    pub identity: Option<plan::Identity>,
    pub process: plan::Process,
    /// Size cap of the session tmpfs in MiB (`None`: no cap, root only).
    pub session_size_mib: Option<u64>,
    /// Loop devices numbered at or above this are not used.
    pub max_loop_devices: u32,
    /// Reuse a read-only loop device already bound to the same image range.
    pub shared_loop_devices: bool,
    /// `squashfs readahead`: read-ahead in KiB for read-only squashfs loop devices.
    pub squashfs_readahead_kib: Option<u32>,
    /// `enable overlay`: without it the rootfs is the root, with no overlayfs (and no stub).
    pub overlay_enabled: bool,
    /// `sync writable extfs`: the writable ext3 layer is mounted `sync`.
    pub sync_writable_extfs: bool,
    /// The fds adopted from the caller, by number.
    owned: BTreeMap<RawFd, OwnedFd>,
}

impl Grant {
    pub fn fd(&self, n: RawFd) -> BorrowedFd<'_> {
        // Every number stored in a granted item was adopted into `owned` by `grant`.
        self.owned[&n].as_fd()
    }

    /// Close the caller's fds (before the privilege drop and exec).
    pub fn close_fds(&mut self) {
        self.owned.clear();
    }

    /// Take the interpreter's fd out of the caller's fds (it must outlive `close_fds`).
    pub fn take_interpreter(&mut self) -> Option<OwnedFd> {
        self.process.interpreter_fd.and_then(|n| self.owned.remove(&n))
    }
}

/// What we learn about one fd from the kernel.
struct FdInfo {
    st: FileStat,
    flags: OFlag,
    path: PathBuf,
}

impl FdInfo {
    fn is(&self, t: SFlag) -> bool {
        SFlag::from_bits_truncate(self.st.st_mode) & SFlag::S_IFMT == t
    }
    fn writable(&self) -> bool {
        self.flags & OFlag::O_ACCMODE == OFlag::O_RDWR
    }
}

fn inspect(fd: BorrowedFd<'_>, role: &str) -> Result<FdInfo> {
    let raw = fd.as_raw_fd();
    let flags =
        OFlag::from_bits_truncate(fcntl(raw, FcntlArg::F_GETFL).context(|| format!("fd {raw} ({role})"))?);
    if flags.contains(OFlag::O_PATH) {
        bail!("fd {raw} ({role}) is an O_PATH descriptor; open the file for reading");
    }
    let st = fstat(raw).context(|| format!("fd {raw} ({role})"))?;
    let path = std::fs::read_link(format!("/proc/self/fd/{raw}"))
        .unwrap_or_else(|_| PathBuf::from(format!("fd {raw}")));
    Ok(FdInfo { st, flags, path })
}

/// An absolute path inside the container: `/`-rooted, no `.`/`..`, no NUL, bounded.
pub fn container_path(p: &str, what: &str) -> Result<String> {
    if !p.starts_with('/') || p.contains('\0') || p.len() > 4096 {
        bail!("{what} {p:?} must be an absolute path inside the container");
    }
    let mut out = String::new();
    for c in Path::new(p).components() {
        match c {
            Component::RootDir => {}
            Component::Normal(s) => {
                out.push('/');
                out.push_str(&s.to_string_lossy());
            }
            _ => bail!("{what} {p:?} must not contain '.' or '..' components"),
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

fn read_at(fd: BorrowedFd<'_>, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let off = match i64::try_from(offset) {
        Ok(o) => o,
        Err(_) => return Vec::new(),
    };
    match nix::sys::uio::pread(fd, &mut buf, off) {
        Ok(n) => {
            buf.truncate(n);
            buf
        }
        Err(_) => Vec::new(),
    }
}

/// The ext3 test Apptainer uses: journal present, no feature the ext3 driver lacks.
pub fn is_ext3(sb_area: &[u8]) -> bool {
    // The superblock starts at 1024; magic at +56, compat at +92, incompat +96, ro_compat +100.
    let le = |o: usize| -> Option<u32> {
        sb_area.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (Some(magic), Some(compat), Some(incompat), Some(ro)) =
        (sb_area.get(1080..1082), le(1116), le(1120), le(1124))
    else {
        return false;
    };
    magic == [0x53, 0xEF]
        && compat & 0x4 != 0
        && incompat & !(0x2 | 0x4 | 0x10) == 0
        && ro & !(0x1 | 0x2 | 0x4) == 0
}

/// `limit container owners|groups|paths`, on the fd's owner, group and resolved path.
fn check_limits(p: &Policy, info: &FdInfo) -> Result<()> {
    let shown = info.path.display();
    if !p.path_allowed(&info.path) {
        bail!("{shown}: image is not in an allowed configured path (limit container paths)");
    }
    let lookup = |e: strata_config::LookupError| crate::err!("limit container owners/groups: {e}");
    if !p.owner_allowed(info.st.st_uid, Path::new(PASSWD_FILE)).map_err(lookup)? {
        bail!("{shown}: image is not owned by required user(s) (limit container owners)");
    }
    if !p.group_allowed(info.st.st_gid, Path::new(GROUP_FILE)).map_err(lookup)? {
        bail!("{shown}: image is not owned by required group(s) (limit container groups)");
    }
    Ok(())
}

/// (st_dev, st_ino) of a file.
type FileId = (u64, u64);
/// (start, end, writable) of a granted layer.
type Range = (u64, u64, bool);

struct Checker<'a> {
    policy: &'a Policy,
    caller: &'a Caller,
    owned: BTreeMap<RawFd, OwnedFd>,
    /// Byte ranges granted per file (device, inode), to refuse a range both written and mounted.
    ranges: BTreeMap<FileId, Vec<Range>>,
    loops: u32,
}

impl Checker<'_> {
    /// Adopt an fd the plan names: it must be above the plan fd and actually open.
    fn adopt(&mut self, n: RawFd, role: &str) -> Result<BorrowedFd<'_>> {
        if n <= plan::PLAN_FD {
            bail!("fd {n} named for {role} is reserved (fds 0-{} are not images)", plan::PLAN_FD);
        }
        if let std::collections::btree_map::Entry::Vacant(slot) = self.owned.entry(n) {
            let fd = sys::adopt_fd(n)
                .map_err(|_| crate::err!("fd {n} named for {role} was not passed to the starter"))?;
            slot.insert(fd);
        }
        Ok(self.owned[&n].as_fd())
    }

    fn layer(&mut self, l: &plan::Layer, role: &str, is_rootfs: bool) -> Result<GrantedLayer> {
        let p = self.policy;
        let setuid = self.caller.setuid;
        let fd = self.adopt(l.fd, role)?;
        let info = inspect(fd, role)?;
        let shown = info.path.display().to_string();
        if l.writable && l.kind != LayerKind::Dir && !info.writable() {
            bail!("could not use {shown} for writing, you don't have write permissions");
        }
        if setuid && fstatfs(fd).map(|s| s.filesystem_type().0) == Ok(FUSE_SUPER_MAGIC) {
            bail!("{shown} is on a FUSE filesystem, which the setuid starter does not mount from");
        }
        let granted = match l.kind {
            LayerKind::Dir => {
                if !info.is(SFlag::S_IFDIR) {
                    bail!("{shown} ({role}) is not a directory");
                }
                if !p.allow_container_dir {
                    bail!("configuration disallows users from running sandbox containers");
                }
                if !is_rootfs && !self.caller.is_root() {
                    bail!("only root user can use sandbox as overlay in setuid mode");
                }
                if is_rootfs
                    && l.writable
                    && !self.caller.is_root()
                    && info.st.st_uid != self.caller.uid.as_raw()
                {
                    bail!("could not use {shown} for writing, you don't have write permissions");
                }
                if info.path == Path::new("/") {
                    bail!("/ as sandbox is not authorized");
                }
                GrantedLayer {
                    fd: l.fd,
                    kind: l.kind,
                    offset: 0,
                    size: 0,
                    writable: l.writable,
                    path: info.path.clone(),
                }
            }
            LayerKind::Squashfs | LayerKind::Ext3 => {
                if !info.is(SFlag::S_IFREG) {
                    bail!("{shown} ({role}) is not a regular file");
                }
                let end = l.offset.checked_add(l.size).filter(|_| l.size > 0);
                match end {
                    Some(e) if e <= info.st.st_size as u64 => {}
                    _ => bail!(
                        "{shown} ({role}): the range offset {} size {} is empty or past the end of the file ({} bytes)",
                        l.offset, l.size, info.st.st_size
                    ),
                }
                let is_sif = read_at(fd, 32, 10) == SIF_MAGIC;
                if is_sif && !p.allow_container_sif {
                    bail!("configuration disallows users from running SIF containers");
                }
                let head = read_at(fd, l.offset, 2048);
                if l.kind == LayerKind::Squashfs {
                    if head.get(..4) != Some(&SQUASHFS_MAGIC[..]) {
                        bail!("{shown} ({role}): no squashfs filesystem at offset {}", l.offset);
                    }
                    if l.writable {
                        bail!("could not set {shown} image writable: squashfs is a read-only filesystem");
                    }
                    if !is_sif && !p.allow_container_squashfs {
                        bail!("configuration disallows users from running squashFS containers");
                    }
                    if setuid && !p.setuid_mount_squashfs_allowed() {
                        bail!("configuration disallows users from mounting squashFS in setuid mode (allow setuid-mount squashfs)");
                    }
                } else {
                    if !is_ext3(&head) {
                        bail!("{shown} ({role}): file is not a valid ext3 image");
                    }
                    if !is_sif && !p.allow_container_extfs {
                        bail!("configuration disallows users from running extFS containers");
                    }
                    if setuid && !p.allow_setuid_mount_extfs {
                        bail!("configuration disallows users from mounting extfs in setuid mode (allow setuid-mount extfs)");
                    }
                }
                let ranges = self.ranges.entry((info.st.st_dev, info.st.st_ino)).or_default();
                let overlaps = |&(s, e, w): &(u64, u64, bool)| {
                    l.offset < e && s < l.offset + l.size && (w || l.writable)
                };
                if ranges.iter().any(overlaps) {
                    bail!(
                        "{shown} ({role}): overlaps another layer of the same file that is used for writing"
                    );
                }
                ranges.push((l.offset, l.offset + l.size, l.writable));
                self.loops += 1;
                GrantedLayer {
                    fd: l.fd,
                    kind: l.kind,
                    offset: l.offset,
                    size: l.size,
                    writable: l.writable,
                    path: info.path.clone(),
                }
            }
        };
        check_limits(p, &info)?;
        Ok(granted)
    }

    fn bind(&mut self, b: &plan::Bind) -> Result<GrantedBind> {
        let dest = container_path(&b.dest, "bind destination")?;
        if dest == "/" {
            bail!("cannot bind over the container's root directory");
        }
        let role = format!("bind {dest}");
        let fd = self.adopt(b.fd, &role)?;
        let info = inspect(fd, &role)?;
        let is_dir = info.is(SFlag::S_IFDIR);
        if !is_dir && !info.is(SFlag::S_IFREG) {
            bail!("{}: only directories and regular files can be bound", info.path.display());
        }
        if !self.policy.user_bind_control && !self.caller.is_root() {
            let admin = self.policy.bind_paths.iter().any(|bp| {
                let same_dest = container_path(&bp.destination.to_string_lossy(), "").ok().as_deref()
                    == Some(dest.as_str());
                let same_obj = nix::sys::stat::stat(&bp.source)
                    .map(|s| s.st_dev == info.st.st_dev && s.st_ino == info.st.st_ino)
                    .unwrap_or(false);
                same_dest && same_obj
            });
            if !admin {
                bail!(
                    "bind of {} to {dest} refused: user bind control is disabled by the administrator",
                    info.path.display()
                );
            }
        }
        Ok(GrantedBind { fd: b.fd, dest, readonly: b.readonly, optional: b.optional, is_dir })
    }
}

fn text_ok(s: &str) -> bool {
    !s.contains('\0') && !s.contains('\n') && s.len() <= MAX_TEXT
}

/// The caller's passwd line must name the caller's own uid and gid; group lines only groups
/// the caller is in.
fn check_identity(id: &plan::Identity, caller: &Caller) -> Result<()> {
    let f: Vec<&str> = id.passwd.split(':').collect();
    if !text_ok(&id.passwd) || f.len() != 7 {
        bail!("identity: the passwd entry must be one line of 7 ':'-separated fields");
    }
    if f[2] != caller.uid.to_string() || f[3] != caller.gid.to_string() {
        bail!("identity: the passwd entry must carry the caller's own uid and gid");
    }
    if id.group.len() > 1024 {
        bail!("identity: too many group entries");
    }
    for g in &id.group {
        let f: Vec<&str> = g.split(':').collect();
        let gid = f.get(2).and_then(|s| s.parse::<u32>().ok());
        if !text_ok(g) || f.len() != 4 || !gid.is_some_and(|gid| caller.in_group(gid)) {
            bail!("identity: group entry {g:?} is not one of the caller's groups");
        }
    }
    Ok(())
}

fn check_process(p: &plan::Process) -> Result<plan::Process> {
    if p.argv.is_empty() || p.argv[0].is_empty() {
        bail!("the plan has no command to run");
    }
    if p.argv.len() > plan::MAX_ARGS || p.env.len() > plan::MAX_ENV {
        bail!("the plan has too many arguments or environment entries");
    }
    if p.argv.iter().any(|a| a.contains('\0')) {
        bail!("command arguments must not contain NUL bytes");
    }
    for e in &p.env {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() && !e.contains('\0') => {}
            _ => bail!("environment entry {e:?} must be NAME=value"),
        }
    }
    if p.umask > 0o777 {
        bail!("umask {:o} is not a permission mask", p.umask);
    }
    let cwd = container_path(&p.cwd, "working directory")?;
    if p.prefetch.len() > plan::MAX_PREFETCH {
        bail!("the plan names {} paths to read ahead; at most {}", p.prefetch.len(), plan::MAX_PREFETCH);
    }
    let prefetch =
        p.prefetch.iter().map(|f| container_path(f, "path to read ahead")).collect::<Result<Vec<_>>>()?;
    Ok(plan::Process { cwd, prefetch, ..p.clone() })
}

/// Check every request of `plan` for `caller` under `policy`; the result is all we use.
pub fn grant(policy: &Policy, caller: &Caller, plan: &Plan) -> Result<Grant> {
    if caller.setuid && !policy.allow_setuid {
        bail!("suid workflow disabled by administrator");
    }
    if plan.overlays.len() + 1 > plan::MAX_LAYERS {
        bail!("too many overlay layers ({}; at most {})", plan.overlays.len(), plan::MAX_LAYERS - 1);
    }
    if plan.binds.len() > plan::MAX_BINDS {
        bail!("too many binds ({}; at most {})", plan.binds.len(), plan::MAX_BINDS);
    }
    let mut c = Checker { policy, caller, owned: BTreeMap::new(), ranges: BTreeMap::new(), loops: 0 };

    let overlay_wanted = !plan.overlays.is_empty() || plan.writable_tmpfs;
    if overlay_wanted && policy.enable_overlay == EnableOverlay::No {
        bail!("overlay is disabled by the administrator (enable overlay = no)");
    }
    let mut layers = vec![c.layer(&plan.rootfs, "rootfs", true)?];
    for (i, l) in plan.overlays.iter().enumerate() {
        layers.push(c.layer(l, &format!("overlay {i}"), false)?);
    }
    let writers: Vec<usize> = (0..layers.len()).filter(|&i| layers[i].writable).collect();
    let writable = match (writers.as_slice(), plan.writable_tmpfs) {
        ([], false) => Writable::None,
        ([], true) => Writable::Tmpfs,
        ([i], false) => {
            if *i == 0 && !plan.overlays.is_empty() {
                bail!("cannot use --overlay in conjunction with --writable");
            }
            if *i == 0 && layers[0].kind == LayerKind::Squashfs {
                bail!("could not set {} image writable: squashfs is a read-only filesystem", layers[0].path.display());
            }
            Writable::Layer(*i)
        }
        ([i], true) => bail!(
            "you can't specify --writable-tmpfs with another writable overlay image ({})",
            layers[*i].path.display()
        ),
        ([a, b, ..], _) => bail!(
            "you can't specify more than one writable overlay, {} contains a writable overlay, requires to use '--overlay {}:ro'",
            layers[*a].path.display(),
            layers[*b].path.display()
        ),
    };
    if c.loops > policy.max_loop_devices {
        bail!(
            "the container needs {} loop devices but 'max loop devices' is {}",
            c.loops,
            policy.max_loop_devices
        );
    }
    let mut binds = Vec::new();
    for b in &plan.binds {
        binds.push(c.bind(b)?);
    }
    let identity = match &plan.identity {
        Some(id) if policy.config_passwd || policy.config_group => {
            check_identity(id, caller)?;
            Some(id.clone())
        }
        _ => None,
    };
    let process = check_process(&plan.process)?;
    if let Some(n) = process.interpreter_fd {
        // It runs as the caller after the drop, so any file the caller can read will do; it
        // must be a regular file opened for reading (not O_PATH).
        let info = inspect(c.adopt(n, "interpreter")?, "interpreter")?;
        if !info.is(SFlag::S_IFREG) {
            bail!("fd {n} (interpreter) is not a regular file");
        }
    }
    let mounts = plan::Mounts {
        proc: plan.mounts.proc && policy.mount_proc,
        sys: plan.mounts.sys && policy.mount_sys,
        dev: match (policy.mount_dev, plan.mounts.dev) {
            (MountDev::No, _) => DevMode::None,
            (MountDev::Minimal, DevMode::Full) => DevMode::Minimal,
            (_, d) => d,
        },
        tmp_tmpfs: plan.mounts.tmp_tmpfs,
        home_tmpfs: match &plan.mounts.home_tmpfs {
            Some(p) => Some(container_path(p, "home directory")?),
            None => None,
        },
    };
    let namespaces = plan::Namespaces {
        pid: plan.namespaces.pid && policy.allow_pid_ns,
        ipc: plan.namespaces.ipc && policy.allow_ipc_ns,
        uts: plan.namespaces.uts && policy.allow_uts_ns,
    };
    Ok(Grant {
        layers,
        writable,
        binds,
        mounts,
        namespaces,
        identity,
        process,
        session_size_mib: if caller.is_root() { None } else { Some(policy.sessiondir_max_size_mib) },
        max_loop_devices: policy.max_loop_devices,
        shared_loop_devices: policy.shared_loop_devices,
        squashfs_readahead_kib: policy.squashfs_readahead_kib,
        overlay_enabled: policy.enable_overlay != EnableOverlay::No,
        sync_writable_extfs: policy.sync_writable_extfs,
        owned: c.owned,
    })
}
