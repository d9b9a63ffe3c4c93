//! `strata build --sandbox OUT/ IMAGE`: the root filesystem of a SIF (its primary squashfs
//! partition) or of a bare squashfs image, extracted into a directory with unsquashfs.
//!
//! The image is untrusted input parsed by C code, so unsquashfs runs under Landlock: it may read
//! the image and the system files it needs to start, and write only beneath the staging
//! directory. The SIF descriptors are read on a thread confined to the image.

use std::fs::File;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{parent_dir, temp_prefix, BuildError};
use crate::image::detect::{self, FileFormat};
use crate::sif::{FsType, Sif};
use crate::tools;

/// A directory removed with everything in it when dropped, unless kept.
struct Staging {
    path: PathBuf,
    keep: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.keep {
            if let Err(e) = remove_tree(&self.path) {
                crate::warning!("could not remove {}: {e}", self.path.display());
            }
        }
    }
}

/// `rm -rf` that also copes with directories the extraction left without write permission.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return std::fs::remove_file(path);
    }
    if meta.permissions().mode() & 0o700 != 0o700 {
        let _ = std::fs::set_permissions(
            path,
            std::fs::Permissions::from_mode(meta.permissions().mode() | 0o700),
        );
    }
    for entry in std::fs::read_dir(path)? {
        remove_tree(&entry?.path())?;
    }
    std::fs::remove_dir(path)
}

/// Where the root filesystem starts in `image`: a SIF's primary squashfs partition, or a bare
/// squashfs (possibly behind a legacy launch header).
fn squashfs_offset(file: &File, path: &Path) -> Result<u64, BuildError> {
    let header = crate::image::read_at_most(file, 0, detect::HEADER_LEN)
        .map_err(|source| BuildError::OpenImage { path: path.to_path_buf(), source })?;
    let format = detect::detect_format(&header).map_err(|e| BuildError::NotSquashfs {
        path: path.to_path_buf(),
        what: format!("an invalid image ({e})"),
    })?;
    match format {
        Some(FileFormat::Squashfs { offset }) => Ok(offset),
        Some(FileFormat::Ext3 { .. }) => {
            Err(BuildError::NotSquashfs { path: path.to_path_buf(), what: "an ext3 image".into() })
        }
        Some(FileFormat::Sif) => {
            let sif = crate::confine::confined(&[path], &[], || Sif::read(file))
                .map_err(|source| BuildError::BadSif { path: path.to_path_buf(), source })?;
            let d =
                sif.primary_partition().ok_or_else(|| BuildError::NoRootFilesystem(path.to_path_buf()))?;
            let p = d.partition().expect("a primary partition is a partition");
            if p.fstype != FsType::Squashfs {
                return Err(BuildError::NotSquashfs {
                    path: path.to_path_buf(),
                    what: format!("a {} root filesystem (object {})", p.fstype, d.id),
                });
            }
            Ok(d.offset)
        }
        None => Err(BuildError::UnknownFormat(path.to_path_buf())),
    }
}

/// Extract the root filesystem of `image` into the new directory `out` (replacing an existing
/// `out` only with `force`, and only once the extraction succeeded).
pub fn build_sandbox(out: &Path, image: &Path, force: bool) -> Result<(), BuildError> {
    let existing = std::fs::symlink_metadata(out).ok();
    if existing.is_some() && !force {
        return Err(BuildError::TargetExists(out.to_path_buf()));
    }
    let open_err = |source| BuildError::OpenImage { path: image.to_path_buf(), source };
    let image_abs = image.canonicalize().map_err(open_err)?;
    let file = File::open(&image_abs).map_err(open_err)?;
    if !file.metadata().map_err(open_err)?.is_file() {
        return Err(BuildError::UnknownFormat(image.to_path_buf()));
    }
    let offset = squashfs_offset(&file, &image_abs)?;
    let unsquashfs = tools::UNSQUASHFS;
    unsquashfs.find()?;

    let dir = parent_dir(out);
    let staging = tempfile::Builder::new()
        .prefix(&temp_prefix(out))
        .rand_bytes(6)
        .tempdir_in(&dir)
        .map_err(|e| BuildError::Temp { dir: dir.clone(), source: super::plain(e) })?
        .keep();
    let mut staging = Staging { path: staging, keep: false };
    let _staging = crate::interrupt::remove_on_signal(&staging.path);
    let rootfs = staging.path.join("rootfs");

    let mut cmd = unsquashfs.command()?;
    cmd.arg("-d").arg(&rootfs).arg("-o").arg(offset.to_string()).args(["-no-progress", "-quiet"]);
    if !nix::unistd::getuid().is_root() {
        // A user cannot set trusted.* or security.* attributes.
        cmd.arg("-user-xattrs");
    }
    cmd.arg(&image_abs);
    crate::confine::confine_command(&mut cmd, &[&image_abs], &[&staging.path]);
    crate::info!("Extracting {} into {}", image.display(), out.display());
    // 2: some entries could not be created (device nodes as a user); the tree is usable.
    let output = unsquashfs
        .run(&mut cmd, &[0, 2])
        .map_err(|source| BuildError::Unsquashfs { path: image.to_path_buf(), source })?;
    if output.status.code() == Some(2) {
        crate::warning!(
            "some entries of {} could not be extracted: {}",
            image.display(),
            tools::tail(&output.stderr)
        );
    }
    let write_err = |source| BuildError::Write { path: out.to_path_buf(), source };
    if existing.is_some() {
        remove_tree(out).map_err(write_err)?;
    }
    std::fs::rename(&rootfs, out).map_err(write_err)?;
    staging.keep = true;
    if let Err(e) = std::fs::remove_dir(&staging.path) {
        crate::warning!("could not remove {}: {e}", staging.path.display());
    }
    crate::info!("Build complete: {}", out.display());
    Ok(())
}
