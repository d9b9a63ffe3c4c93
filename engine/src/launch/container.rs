//! Turn an action request (`strata exec|run|shell|test IMAGE ...`) into a plan plus the files
//! it names, opened as the user, and hand both to the starter.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use strata_config::Policy;
use strata_plan::{self as plan, DevMode, Layer, LayerKind, Mounts, Namespaces, Plan, Process};

use super::action::{Action, ActionScript};
use super::binds::{self, BindSpec, ContainerPath};
use super::env::{ContainerEnv, EnvOptions};
use super::overlays;
use super::passwd::Identity;
use super::starter;
use crate::cli::action::ActionFlags;
use crate::image::{FsType, Image, ImageKind};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    Bind(#[from] binds::BindError),
    #[error(transparent)]
    Env(#[from] super::env::EnvError),
    #[error(transparent)]
    Passwd(#[from] super::passwd::PasswdError),
    #[error(transparent)]
    Starter(#[from] starter::StarterError),
    #[error(transparent)]
    Overlay(#[from] overlays::OverlayError),
    #[error("{0}")]
    Policy(#[from] strata_config::ConfigError),
    #[error("could not open {path} to bind it into the container: {source}")]
    OpenBind { path: PathBuf, source: std::io::Error },
    #[error("cannot find the current directory: {0}")]
    Cwd(std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// What the user asked for.
pub struct Request<'a> {
    pub action: Action,
    pub image: &'a Path,
    pub args: &'a [String],
    pub flags: &'a ActionFlags,
}

/// Host directories never bound as the working directory (they would hide the image's own).
const SYSTEM_DIRS: &[&str] = &[
    "/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/opt", "/proc", "/root", "/run",
    "/sbin", "/srv", "/sys", "/usr", "/var",
];

/// Files the plan names, kept open (and above the plan fd) until the starter takes them.
#[derive(Default)]
struct Files(Vec<OwnedFd>);

impl Files {
    fn add(&mut self, fd: OwnedFd) -> std::io::Result<i32> {
        let fd = starter::lift_fd(fd)?;
        let n = fd.as_raw_fd();
        self.0.push(fd);
        Ok(n)
    }
}

fn open_bind_source(path: &Path) -> Result<OwnedFd, LaunchError> {
    File::options()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|source| LaunchError::OpenBind { path: path.to_path_buf(), source })
}

fn policy() -> Result<Policy, LaunchError> {
    let path = starter::install_prefix()?.join("etc/strata/strata.conf");
    Ok(Policy::load(&path)?)
}

/// The rootfs layer of an opened image.
fn rootfs_layer(image: &Image, fd: i32) -> Result<Layer, LaunchError> {
    if image.kind == ImageKind::Sandbox {
        return Ok(Layer { fd, kind: LayerKind::Dir, offset: 0, size: 0, writable: false });
    }
    let part = image.rootfs()?;
    let kind = match part.fstype {
        FsType::Squashfs => LayerKind::Squashfs,
        FsType::Ext3 => LayerKind::Ext3,
    };
    Ok(Layer { fd, kind, offset: part.offset, size: part.size, writable: false })
}

fn is_within(path: &str, dir: &str) -> bool {
    strata_config::path_is_within(Path::new(path), Path::new(dir))
}

/// Build the plan and exec the starter. Returns only on failure.
pub fn launch(req: Request<'_>) -> Result<std::convert::Infallible, LaunchError> {
    let flags = req.flags;
    let policy = policy()?;
    let contain = flags.contain || flags.containall;
    let cleanenv = flags.cleanenv || flags.containall;
    let cwd = std::env::current_dir().map_err(LaunchError::Cwd)?;
    let mut files = Files::default();

    let overlay_specs = overlays::parse(&flags.overlay, &overlays::env_values(|k| std::env::var(k).ok()))?;
    if flags.writable && !overlay_specs.is_empty() {
        return Err(overlays::OverlayError::WithWritable.into());
    }
    let image = Image::open(req.image, flags.writable)?;
    let other = |e: std::io::Error| LaunchError::Other(e.to_string());
    let image_fd = image.file.try_clone().map_err(other)?;
    let mut rootfs = rootfs_layer(&image, files.add(image_fd.into()).map_err(other)?)?;
    rootfs.writable = flags.writable && matches!(image.kind, ImageKind::Sandbox | ImageKind::Ext3);
    let mut writable_tmpfs = flags.writable_tmpfs;
    if writable_tmpfs && flags.writable {
        crate::warning!("Disabling --writable-tmpfs flag, mutually exclusive with --writable");
        writable_tmpfs = false;
    }
    let mut layers = overlays::embedded(&image, flags.writable).map_err(other)?;
    for spec in &overlay_specs {
        layers.extend(overlays::open(spec)?);
    }
    let mut plan_overlays = Vec::new();
    for l in layers {
        let fd = files.add(l.file.into()).map_err(other)?;
        plan_overlays.push(Layer { fd, ..l.layer });
    }

    let identity = Identity::current()?;
    let user_home = PathBuf::from(&identity.user.home);
    let home = binds::resolve_home(flags.home.as_deref(), flags.no_home, &user_home, &cwd)?;
    if home.custom && !policy.user_bind_control {
        crate::warning!("not mounting user requested home: user bind control is disallowed");
    }
    let identity = identity.with_home(home.dest.as_path());

    // Binds, in the order they are mounted: admin paths, tmp, home, cwd, the user's.
    let mut specs: Vec<BindSpec> = Vec::new();
    for bp in &policy.bind_paths {
        let keep = !contain || ["/etc/hosts", "/etc/localtime"].contains(&bp.source.to_str().unwrap_or(""));
        if keep && bp.source.exists() {
            if let Ok(dest) = ContainerPath::new(&bp.destination.to_string_lossy()) {
                specs.push(BindSpec { source: bp.source.clone(), dest, readonly: false });
            }
        }
    }
    if policy.config_resolv_conf && Path::new("/etc/resolv.conf").exists() {
        specs.push(BindSpec {
            source: "/etc/resolv.conf".into(),
            dest: ContainerPath::new("/etc/resolv.conf").map_err(|e| LaunchError::Other(e.to_string()))?,
            readonly: true,
        });
    }
    let mut mounts = Mounts {
        proc: true,
        sys: true,
        dev: if contain { DevMode::Minimal } else { DevMode::Full },
        tmp_tmpfs: false,
        home_tmpfs: None,
    };
    if policy.mount_tmp {
        if contain {
            mounts.tmp_tmpfs = true;
        } else {
            for d in ["/tmp", "/var/tmp"] {
                if Path::new(d).is_dir() {
                    let dest = ContainerPath::new(d).map_err(|e| LaunchError::Other(e.to_string()))?;
                    specs.push(BindSpec { source: d.into(), dest, readonly: false });
                }
            }
        }
    }
    let home_allowed = policy.mount_home && (!home.custom || policy.user_bind_control);
    match (&home.source, contain && !home.custom) {
        (Some(src), false) if home_allowed => {
            specs.push(BindSpec { source: src.clone(), dest: home.dest.clone(), readonly: false })
        }
        _ if !home.dest.is_root() && policy.mount_home => {
            mounts.home_tmpfs = Some(home.dest.as_str().to_string())
        }
        _ => {}
    }
    let cwd_str = cwd.to_string_lossy().into_owned();
    let covered = |specs: &[BindSpec], p: &str| specs.iter().any(|s| is_within(p, s.dest.as_str()));
    if !contain
        && policy.user_bind_control
        && !SYSTEM_DIRS.iter().any(|d| cwd_str == *d)
        && !covered(&specs, &cwd_str)
    {
        if let Ok(dest) = ContainerPath::new(&cwd_str) {
            specs.push(BindSpec { source: cwd.clone(), dest, readonly: false });
        }
    }
    // Binds so far are the system's (admin paths, tmp, home, cwd): skipped with a warning where
    // the image has no place for them; the user's own binds below must succeed.
    let system_binds = specs.len();
    let user_binds =
        binds::resolve_binds(&flags.bind, &binds::bind_env_values(|k| std::env::var(k).ok()), &cwd)?;
    if !user_binds.is_empty() && !policy.user_bind_control {
        for b in &user_binds {
            crate::warning!(
                "Ignoring {} bind mount: user bind control disabled by system administrator",
                b.source.display()
            );
        }
    } else {
        specs.extend(user_binds);
    }
    let mut plan_binds = Vec::new();
    for spec in &specs {
        let fd = files.add(open_bind_source(&spec.source)?).map_err(|e| LaunchError::Other(e.to_string()))?;
        plan_binds.push(plan::Bind {
            fd,
            dest: spec.dest.as_str().to_string(),
            readonly: spec.readonly,
            optional: plan_binds.len() < system_binds,
        });
    }

    // Environment and the action script.
    let env_opts = EnvOptions {
        cleanenv,
        env: flags.env.clone(),
        env_files: flags.env_file.clone(),
        home: home.dest.clone(),
        image: image.path.clone(),
        action: req.action,
        instance: None,
        binds: flags.bind.clone(),
        shell: None,
    };
    let env = ContainerEnv::build(&super::env::host_env(), &env_opts)?;
    let script = ActionScript::new(req.action, &env);
    let argv = script.argv(req.args);
    let prefetch = script.payload_candidates(req.args);
    let pwd = match &flags.pwd {
        Some(p) => binds::parse_pwd(p)?.as_str().to_string(),
        None if contain => home.dest.as_str().to_string(),
        None => cwd_str.clone(),
    };
    let plan = Plan {
        version: plan::PLAN_VERSION,
        rootfs,
        overlays: plan_overlays,
        writable_tmpfs,
        binds: plan_binds,
        mounts,
        namespaces: Namespaces {
            pid: flags.pid || flags.containall,
            ipc: flags.ipc || flags.containall,
            uts: flags.uts,
        },
        identity: (policy.config_passwd || policy.config_group).then(|| {
            let (passwd, group) = identity.plan_entries();
            plan::Identity { passwd, group }
        }),
        process: Process {
            argv,
            env: env.envp(),
            cwd: pwd,
            umask: current_umask(),
            interpreter_fd: action_shell(&mut files),
            prefetch,
        },
        log_level: crate::log::level() as i8,
    };
    crate::debug!("plan: {}", String::from_utf8_lossy(&plan.to_json()));
    drop(image);
    Ok(starter::exec_starter(&plan, &files.0)?)
}

/// The static shell shipped in `PREFIX/libexec/strata/sh`, if the install has one: the action
/// script runs with it (from the host's page cache) instead of the image's `/bin/sh`, which a
/// fresh squashfs mount would decompress first. Without it, the image's shell is used.
fn action_shell(files: &mut Files) -> Option<i32> {
    let path = starter::install_prefix().ok()?.join("libexec/strata/sh");
    let file = File::open(&path).ok()?;
    files.add(file.into()).ok()
}

fn current_umask() -> u32 {
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    nix::sys::stat::umask(old);
    old.bits()
}
