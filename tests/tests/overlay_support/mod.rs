//! Helpers shared by the persistent-overlay tests (`overlay.rs`, `overlay_create.rs`); each
//! test file is its own crate and uses only some of them.
#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use strata_e2e::{
    argv, busybox, run_as, run_as_root, spawn_as, spawn_as_root, Install, Output, RunOpts, Running, TestDir,
    TestUser,
};

/// What the starter says when a user asks for a directory overlay.
pub const DIR_REFUSED: &str = "only root user can use sandbox as overlay in setuid mode";

/// Who runs a test: one of the two test users, or root.
#[derive(Clone, Copy, Debug)]
pub enum Who {
    User(&'static TestUser),
    Root,
}

impl Who {
    /// The ordinary user and the one with uid/gid above 65535.
    pub fn users() -> Option<Vec<Who>> {
        Some(vec![Who::User(TestUser::ordinary()?), Who::User(TestUser::high()?)])
    }

    /// Both users, then root.
    pub fn everyone() -> Option<Vec<Who>> {
        let mut all = Who::users()?;
        all.push(Who::Root);
        Some(all)
    }

    pub fn is_root(&self) -> bool {
        matches!(self, Who::Root)
    }

    pub fn uid(&self) -> u32 {
        match self {
            Who::User(u) => u.uid,
            Who::Root => 0,
        }
    }

    pub fn gid(&self) -> u32 {
        match self {
            Who::User(u) => u.gid,
            Who::Root => 0,
        }
    }

    pub fn name(&self) -> String {
        match self {
            Who::User(u) => format!("{} ({}:{})", u.name, u.uid, u.gid),
            Who::Root => "root".into(),
        }
    }

    /// A fresh directory owned by this user (root-owned for root).
    pub fn dir(&self) -> TestDir {
        match self {
            Who::User(u) => TestDir::owned_by(u),
            Who::Root => TestDir::new(),
        }
        .expect("test directories need root")
    }

    /// Runs `argv` (any program) as this user, in `cwd`.
    pub fn run<S: AsRef<OsStr>>(&self, cwd: &Path, argv: &[S]) -> Output {
        self.run_with(argv, &RunOpts::new().cwd(cwd))
    }

    pub fn run_with<S: AsRef<OsStr>>(&self, argv: &[S], opts: &RunOpts) -> Output {
        match self {
            Who::User(u) => run_as(u, argv, opts),
            Who::Root => run_as_root(argv, opts),
        }
    }

    /// `sh -c script` as this user, in `cwd`.
    pub fn sh(&self, cwd: &Path, script: &str) -> Output {
        self.run(cwd, &["sh", "-c", script])
    }

    /// `strata args...` as this user, in `cwd`.
    pub fn strata<S: AsRef<OsStr>>(&self, install: &Install, cwd: &Path, args: &[S]) -> Output {
        self.strata_with(install, args, &RunOpts::new().cwd(cwd))
    }

    pub fn strata_with<S: AsRef<OsStr>>(&self, install: &Install, args: &[S], opts: &RunOpts) -> Output {
        match self {
            Who::User(u) => install.strata_as(u, args, opts),
            Who::Root => install.strata_as_root(args, opts),
        }
    }

    /// Starts `strata args...` as this user in `cwd`, without waiting.
    pub fn spawn_strata<S: AsRef<OsStr>>(&self, install: &Install, cwd: &Path, args: &[S]) -> Running {
        let mut full: Vec<OsString> = vec![install.strata().into_os_string()];
        full.extend(args.iter().map(|a| a.as_ref().to_owned()));
        let opts = RunOpts::new().cwd(cwd);
        match self {
            Who::User(u) => spawn_as(u, &full, &opts),
            Who::Root => spawn_as_root(&full, &opts),
        }
    }
}

/// Apptainer's busybox image from the shared test data, or a printed skip reason.
pub fn reference_sif() -> Option<PathBuf> {
    let sif = strata_e2e::shared_testdata_or_skip()?.join("apptainer/busybox_amd64.sif");
    if sif.is_file() {
        Some(sif)
    } else {
        strata_e2e::skip(format!("{} is missing", sif.display()));
        None
    }
}

/// The matrix image: an unsigned SIF (`strata sif new` + `sif add` of a squashfs) of the busybox
/// fixture with an `/etc/hostname` added (the file Apptainer's overlay tests delete) and a
/// world-writable `/scratch` holding a root-owned `hostname` (a file an unprivileged user may
/// delete), built once per process as root. Root-owned: copy it before use.
pub fn test_sif(install: &Install) -> Option<&'static Path> {
    static SIF: OnceLock<Option<(TestDir, PathBuf)>> = OnceLock::new();
    let images = busybox()?;
    SIF.get_or_init(|| {
        let dir = TestDir::new()?;
        let tree = dir.copy_in(&images.sandbox, "rootfs");
        fs::write(tree.join("etc/hostname"), "strata-fixture\n").expect("write /etc/hostname");
        fs::create_dir(tree.join("scratch")).expect("mkdir /scratch");
        fs::set_permissions(tree.join("scratch"), std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("chmod /scratch");
        fs::write(tree.join("scratch/hostname"), "strata-fixture\n").expect("write /scratch");
        let squashfs = dir.join("rootfs.sqfs");
        run_as_root(
            &argv!["mksquashfs", &tree, &squashfs, "-noappend", "-all-root", "-quiet", "-no-progress"],
            &RunOpts::new(),
        )
        .assert_success();
        let sif = dir.join("busybox.sif");
        let root = |args: Vec<OsString>| {
            install.strata_as_root(&args, &RunOpts::new()).assert_success();
        };
        root(argv!["sif", "new", &sif]);
        root(argv![
            "sif",
            "add",
            "--datatype",
            "4",
            "--partfs",
            "1",
            "--parttype",
            "2",
            "--partarch",
            "2",
            "--groupid",
            "1",
            &sif,
            &squashfs
        ]);
        fs::set_permissions(&sif, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .expect("chmod the test SIF");
        Some((dir, sif))
    })
    .as_ref()
    .map(|(_, sif)| sif.as_path())
}

/// `dd if=/dev/zero of=NAME bs=1M count=MIB && mkfs.ext3 -q -F NAME` as `who` in `dir`: an
/// ext3 image with nothing in it (no `upper/`, no `work/`), as Apptainer's tests make them.
pub fn plain_ext3(who: Who, dir: &TestDir, name: &str, mib: u32) -> PathBuf {
    who.sh(
        dir.path(),
        &format!("dd if=/dev/zero of={name} bs=1M count={mib} status=none && mkfs.ext3 -q -F {name}"),
    )
    .assert_success();
    dir.join(name)
}

/// A squashfs holding `/squash_marker`, made by `who` with `mksquashfs ... -all-root`.
pub fn marker_squashfs(who: Who, dir: &TestDir, name: &str) -> PathBuf {
    who.sh(
        dir.path(),
        &format!(
            "mkdir -p {name}.d && touch {name}.d/squash_marker && \
             mksquashfs {name}.d {name} -noappend -all-root -quiet -no-progress"
        ),
    )
    .assert_success();
    dir.join(name)
}

/// `debugfs -R 'stat PATH' IMAGE`, as root: the inode's description.
pub fn debugfs_stat(image: &Path, path: &str) -> String {
    let out = run_as_root(&argv!["debugfs", "-R", format!("stat {path}"), image], &RunOpts::new());
    out.assert_success();
    out.stdout
}

/// Owner, group and permission bits of `path` inside an ext3 image, from debugfs.
pub fn ext3_owner_mode(image: &Path, path: &str) -> (u32, u32, u32) {
    let text = debugfs_stat(image, path);
    let field = |name: &str| -> Option<String> {
        let rest = &text[text.find(name)? + name.len()..];
        Some(rest.split_whitespace().next()?.to_string())
    };
    let num = |name: &str| {
        field(name)
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no {name} in debugfs output:\n{text}"))
    };
    let mode = field("Mode:")
        .and_then(|m| u32::from_str_radix(&m, 8).ok())
        .unwrap_or_else(|| panic!("no Mode: in debugfs output:\n{text}"));
    (num("User:"), num("Group:"), mode)
}

/// Loop devices attached to a file below `dir`, from `/sys/block/loop*/loop/backing_file`.
pub fn loops_into(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return found;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        if let Ok(backing) = fs::read_to_string(e.path().join("loop/backing_file")) {
            if Path::new(backing.trim()).starts_with(dir) {
                found.push(format!("/dev/{name} -> {}", backing.trim()));
            }
        }
    }
    found
}

/// Bytes actually allocated on disk for `path`.
pub fn allocated(path: &Path) -> u64 {
    fs::metadata(path).expect("stat").blocks() * 512
}
