//! `strata build`: a sandbox directory into a SIF, and a SIF (or bare squashfs) back into a
//! sandbox directory. Definition files come later (issue 3); this is what tests and users need
//! to make images from a directory tree.
//!
//! Both directions are atomic: the result is assembled under a temporary name beside the target
//! (`OUT.tmp-XXXXXX`) and renamed into place only when complete, so a failure leaves any
//! existing target untouched and no temporary behind. An existing target is replaced only with
//! `--force`.

mod sandbox;
pub mod skeleton;

pub use sandbox::build_sandbox;
pub(crate) use sandbox::remove_tree;

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::sif::{self, Arch, CreateOptions, DataType, NewObject, PartType, Partition, Sif, Source};
use crate::tools::{self, ToolError};

/// The launch script of every SIF Apptainer builds: the image runs as a script.
pub const LAUNCH_SCRIPT: &[u8] = b"#!/usr/bin/env run-singularity\n";
/// The group Apptainer's build puts every object in.
pub const DEFAULT_GROUP: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot build from {path}: {source}")]
    Source { path: PathBuf, source: io::Error },
    #[error(
        "cannot build a SIF from {0}: not a directory (only a sandbox directory can be built \
         into a SIF for now)"
    )]
    SourceNotADirectory(PathBuf),
    #[error("build target {0} already exists; use --force to overwrite it")]
    TargetExists(PathBuf),
    #[error("build target {0} is a directory; remove it first or choose another name")]
    TargetIsADirectory(PathBuf),
    #[error("build target {target} is inside the source directory {source_dir}")]
    TargetInSource { target: PathBuf, source_dir: PathBuf },
    #[error("could not create a temporary file in {dir}: {source}")]
    Temp { dir: PathBuf, source: io::Error },
    #[error("while creating squashfs from {path}: {source}")]
    Squashfs { path: PathBuf, source: ToolError },
    #[error("while writing SIF {path}: {source}")]
    Sif { path: PathBuf, source: sif::SifError },
    #[error("could not write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Tool(#[from] ToolError),
    #[error("could not open image {path}: {source}")]
    OpenImage { path: PathBuf, source: io::Error },
    #[error("{path} is not a valid SIF image: {source}")]
    BadSif { path: PathBuf, source: sif::SifError },
    #[error("{0}: image format not recognized: not a SIF or squashfs image")]
    UnknownFormat(PathBuf),
    #[error("{path}: {what} cannot be extracted into a sandbox, only squashfs")]
    NotSquashfs { path: PathBuf, what: String },
    #[error("{0}: no primary system partition to extract")]
    NoRootFilesystem(PathBuf),
    #[error("while extracting {path}: {source}")]
    Unsquashfs { path: PathBuf, source: ToolError },
}

/// The directory a target goes into: its parent, or `.` for a bare name.
pub(crate) fn parent_dir(target: &Path) -> PathBuf {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `NAME.tmp-` for a target named NAME: the prefix of its temporaries.
pub(crate) fn temp_prefix(target: &Path) -> OsString {
    let mut p = target.file_name().unwrap_or_default().to_os_string();
    p.push(".tmp-");
    p
}

/// Refuse an existing target unless forced; refuse a directory target for a file build.
fn check_target_file(out: &Path, force: bool) -> Result<(), BuildError> {
    match std::fs::symlink_metadata(out) {
        Ok(m) if m.is_dir() => Err(BuildError::TargetIsADirectory(out.to_path_buf())),
        Ok(_) if !force => Err(BuildError::TargetExists(out.to_path_buf())),
        _ => Ok(()),
    }
}

/// An OS error without the " at path ..." that tempfile appends (the message names the place).
pub(crate) fn plain(e: io::Error) -> io::Error {
    if e.raw_os_error().is_some() {
        return e;
    }
    let text = e.to_string();
    match text.split_once(" at path ") {
        Some((msg, _)) => io::Error::new(e.kind(), msg.to_string()),
        None => e,
    }
}

/// The process umask, without changing it.
pub(crate) fn umask() -> u32 {
    // Read it from /proc (Linux >= 4.7) rather than set-and-restore, which races with threads.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// Creation time for the image: `SOURCE_DATE_EPOCH` when set (and valid), else now.
fn source_date_epoch() -> Option<i64> {
    std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.trim().parse::<i64>().ok())
}

/// `strata build OUT.sif DIR/`: squash the directory (with the standard skeleton it lacks) and
/// wrap it in a SIF as Apptainer's build does: launch script, a `Def.FILE` object, the squashfs
/// as primary system partition of the host's architecture, all in group 1. With
/// `SOURCE_DATE_EPOCH` set the image is reproducible (nil ID, zero times, clamped file times).
///
/// As root, file ownership in the tree is kept; as a user, every file becomes root's
/// (`-all-root`), since the user's uid means nothing on another machine (Apptainer does the same).
/// An existing target is replaced only when `force` is set.
pub fn build_sif(out: &Path, src: &Path, force: bool) -> Result<(), BuildError> {
    let src_meta =
        std::fs::metadata(src).map_err(|source| BuildError::Source { path: src.to_path_buf(), source })?;
    if !src_meta.is_dir() {
        return Err(BuildError::SourceNotADirectory(src.to_path_buf()));
    }
    check_target_file(out, force)?;
    let dir = parent_dir(out);
    let src_abs =
        src.canonicalize().map_err(|source| BuildError::Source { path: src.to_path_buf(), source })?;
    if let Ok(dir_abs) = dir.canonicalize() {
        if dir_abs.starts_with(&src_abs) {
            return Err(BuildError::TargetInSource {
                target: out.to_path_buf(),
                source_dir: src.to_path_buf(),
            });
        }
    }
    let mksquashfs = tools::MKSQUASHFS;
    mksquashfs.find()?;

    let temp = |suffix: &str| {
        tempfile::Builder::new()
            .prefix(&temp_prefix(out))
            .suffix(suffix)
            .rand_bytes(6)
            .tempfile_in(&dir)
            .map_err(|e| BuildError::Temp { dir: dir.clone(), source: plain(e) })
    };
    let sif_tmp = temp("")?;
    let _sif_tmp = crate::interrupt::remove_on_signal(sif_tmp.path());
    let sqfs_tmp = temp(".sqfs")?;
    let _sqfs_tmp = crate::interrupt::remove_on_signal(sqfs_tmp.path());
    let staging = tempfile::Builder::new()
        .prefix("strata-build-")
        .tempdir()
        .map_err(|e| BuildError::Temp { dir: std::env::temp_dir(), source: plain(e) })?;
    let _staging = crate::interrupt::remove_on_signal(staging.path());

    let epoch = source_date_epoch();
    let arch = Arch::host();
    let from = src.to_string_lossy();
    let labels = skeleton::labels(arch.go_name(), &skeleton::rfc3339(epoch.unwrap_or_else(sif::now)), &from);
    let missing = skeleton::missing(src, skeleton::entries(labels));
    let mut cmd = mksquashfs.command()?;
    cmd.arg(src).arg(sqfs_tmp.path()).args(["-noappend", "-no-progress", "-quiet"]);
    if !nix::unistd::getuid().is_root() {
        cmd.arg("-all-root");
    }
    if !missing.is_empty() {
        crate::verbose!(
            "adding to the image what {} lacks: {}",
            src.display(),
            missing.iter().map(skeleton::Entry::path).collect::<Vec<_>>().join(" ")
        );
        let pf = skeleton::write_pseudo(staging.path(), &missing)
            .map_err(|source| BuildError::Write { path: staging.path().to_path_buf(), source })?;
        cmd.arg("-pf").arg(pf);
    }
    crate::info!("Creating SIF file...");
    mksquashfs
        .run(&mut cmd, &[0])
        .map_err(|source| BuildError::Squashfs { path: src.to_path_buf(), source })?;

    let def = format!("bootstrap: localimage\nfrom: {from}\n");
    write_sif(sif_tmp.as_file(), sqfs_tmp.as_file(), def.as_bytes(), epoch, arch)
        .map_err(|source| BuildError::Sif { path: out.to_path_buf(), source })?;
    let write_err = |source| BuildError::Write { path: out.to_path_buf(), source };
    let mode = 0o755 & !umask();
    sif_tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode)).map_err(write_err)?;
    sif_tmp.as_file().sync_all().map_err(write_err)?;
    if force {
        sif_tmp.persist(out).map_err(|e| write_err(e.error))?;
    } else {
        // Refuses, atomically, a target that appeared since the check.
        sif_tmp.persist_noclobber(out).map_err(|e| {
            if e.error.kind() == io::ErrorKind::AlreadyExists {
                BuildError::TargetExists(out.to_path_buf())
            } else {
                write_err(e.error)
            }
        })?;
    }
    crate::info!("Build complete: {}", out.display());
    Ok(())
}

/// The SIF objects of a sandbox build, into the (empty) `file`.
fn write_sif(
    file: &File,
    squashfs: &File,
    def: &[u8],
    epoch: Option<i64>,
    arch: Arch,
) -> Result<(), sif::SifError> {
    let mut opts = if epoch.is_some() { CreateOptions::deterministic() } else { CreateOptions::new()? };
    opts.launch_script = LAUNCH_SCRIPT.to_vec();
    let mut image = Sif::create(file, &opts)?;
    let deffile = NewObject {
        data_type: DataType::Deffile,
        group_id: DEFAULT_GROUP,
        linked: None,
        name: String::new(),
        extra: Vec::new(),
        alignment: None,
    };
    image.add_object(file, &deffile, Source::Bytes(def), None)?;
    let part = NewObject::partition(
        Partition { fstype: sif::FsType::Squashfs, parttype: PartType::PrimSys, arch },
        DEFAULT_GROUP,
    );
    image.add_object(file, &part, Source::File(squashfs), None)?;
    Ok(())
}
