//! `strata overlay resize --size MiB IMAGE` (strata's own; Apptainer's docs tell users to run
//! `e2fsck -f` and `resize2fs` by hand): grow or shrink an ext3 overlay image, or the ext3
//! overlay partition of a SIF, with the filesystem inside it.
//!
//! The overlay is write-locked first with the lock a container takes ([`super::lock`]), so an
//! overlay in use is never touched. Then `e2fsck -f -p`, and `resize2fs` to the exact size:
//! - growing: the file (or the partition, which must then be the last object of the SIF) is
//!   extended first, preallocated unless `--sparse`, then the filesystem grows into it;
//! - shrinking: the filesystem shrinks first, then the file is truncated (or the partition's
//!   size reduced; a partition that is not the last object leaves a gap behind it).
//!
//! e2fsprogs works on the very file strata opened (`/proc/self/fd/N`, `?offset=` for a SIF
//! partition). Before any tool runs, the superblock must claim no more than its partition
//! holds, so a hostile superblock cannot make e2fsck or resize2fs write past the partition.

use std::fs::{File, OpenOptions};
use std::path::Path;

use super::lock::{lock_range, LockError};
use super::{ext3, mib_to_bytes, OverlayError, MIN_SIZE_MIB};
use crate::image::detect::{self, FileFormat, Probe};
use crate::sif::{FsType, PartType, Sif};
use crate::tools;

/// Where the overlay's filesystem lives.
enum Place {
    /// An image file: the filesystem from its offset (after a legacy header) to the end.
    File,
    /// A SIF partition.
    Partition { sif: Box<Sif>, id: u32 },
}

/// Resize the overlay at `path` to `size_mib` MiB.
pub fn resize(path: &Path, size_mib: u64, sparse: bool) -> Result<(), OverlayError> {
    if size_mib < MIN_SIZE_MIB {
        return Err(OverlayError::TooSmall);
    }
    let new_size = mib_to_bytes(size_mib)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| OverlayError::Open { path: path.to_path_buf(), source })?;
    let read_err = |source| OverlayError::Read { path: path.to_path_buf(), source };
    let file_len = file.metadata().map_err(read_err)?.len();
    let header = ext3::read_at(&file, 0, detect::HEADER_LEN).map_err(read_err)?;
    let not_resizable =
        |what: &str| OverlayError::NotResizable { path: path.to_path_buf(), what: what.to_string() };
    let (mut place, offset, old_size) = match detect::detect_format(&header) {
        Ok(Some(FileFormat::Ext3 { offset })) => (Place::File, offset, file_len - offset),
        Ok(Some(FileFormat::Sif)) => {
            let sif = crate::confine::confined(&[], &[path], || Sif::read(&file))
                .map_err(|source| OverlayError::BadSif { path: path.to_path_buf(), source })?;
            let d = sif
                .descriptors()
                .find(|d| {
                    d.partition().is_some_and(|p| p.parttype == PartType::Overlay && p.fstype == FsType::Ext3)
                })
                .ok_or_else(|| OverlayError::NoOverlayPartition(path.to_path_buf()))?;
            let (id, offset, size) = (d.id, d.offset, d.size);
            (Place::Partition { sif: Box::new(sif), id }, offset, size)
        }
        Ok(Some(FileFormat::Squashfs { .. })) => return Err(not_resizable("a squashfs image is read-only")),
        Ok(None) => return Err(not_resizable("image format not recognized")),
        Err(source) => return Err(OverlayError::Header { path: path.to_path_buf(), source }),
    };

    // The lock a container holds on this overlay: the whole file, or the partition's bytes.
    let (lock_at, lock_len) = match place {
        Place::File => (0, 0),
        Place::Partition { .. } => (offset, old_size),
    };
    match lock_range(&file, lock_at, lock_len, true) {
        Ok(()) => {}
        Err(LockError::InUse) => return Err(OverlayError::InUse(path.to_path_buf())),
        Err(LockError::Io(source)) => return Err(OverlayError::Lock { path: path.to_path_buf(), source }),
    }

    match ext3::check_header(&file, offset).map_err(read_err)? {
        Ok(Probe::Found { .. }) => {}
        Ok(Probe::NotThisFormat) => return Err(not_resizable("no ext3 filesystem in it")),
        Err(source) => return Err(OverlayError::Header { path: path.to_path_buf(), source }),
    }
    let what = match place {
        Place::File => "image file",
        Place::Partition { .. } => "SIF partition",
    };
    let fs_bytes = ext3::fs_size(&file, offset).map_err(read_err)?.unwrap_or(u64::MAX);
    if fs_bytes > old_size {
        return Err(OverlayError::Oversized {
            path: path.to_path_buf(),
            fs_bytes,
            part_bytes: old_size,
            what,
        });
    }
    if new_size == old_size && fs_bytes == new_size {
        crate::info!("{} is already {size_mib} MiB", path.display());
        return Ok(());
    }

    if let Place::Partition { sif, id } = &place {
        if new_size > old_size {
            // Refuse before e2fsck touches anything.
            sif.check_last(*id)
                .map_err(|source| OverlayError::ResizePartition { path: path.to_path_buf(), source })?;
        }
    }
    // From the check to the last byte copied back, the image is changed in place: a signal
    // waits until it is consistent again.
    let _in_place = crate::interrupt::critical();
    fsck(&file, offset, path)?;
    let ctx = Ctx { file: &file, path, offset, old_size, new_size, sparse };
    match &mut place {
        Place::File if offset == 0 => ctx.resize_file(file_len)?,
        // resize2fs sets the length of a regular file to the filesystem's size whatever the
        // `?offset=`, which would cut the file short: work on a copy of the partition.
        Place::File => ctx.resize_copy(&mut |size| {
            file.set_len(offset + size)
                .map_err(|source| OverlayError::Write { path: path.to_path_buf(), source })
        })?,
        Place::Partition { sif, id } => {
            let id = *id;
            ctx.resize_copy(&mut |size| {
                sif.resize_object(&file, id, size, None)
                    .map_err(|source| OverlayError::ResizePartition { path: path.to_path_buf(), source })
            })?
        }
    }
    crate::info!("Resized {} from {} MiB to {size_mib} MiB", path.display(), old_size >> 20);
    Ok(())
}

/// One resize: the overlay's file, where its filesystem starts, the sizes.
struct Ctx<'a> {
    file: &'a File,
    path: &'a Path,
    offset: u64,
    old_size: u64,
    new_size: u64,
    sparse: bool,
}

impl Ctx<'_> {
    fn allocate_err(&self, source: std::io::Error) -> OverlayError {
        OverlayError::Allocate { path: self.path.to_path_buf(), size: self.new_size, source }
    }

    fn write_err(&self, source: std::io::Error) -> OverlayError {
        OverlayError::Write { path: self.path.to_path_buf(), source }
    }

    /// An image file that is all filesystem: resize2fs works on it in place.
    fn resize_file(&self, file_len: u64) -> Result<(), OverlayError> {
        let (file, new) = (self.file, self.new_size);
        if new > self.old_size {
            // Make room, then grow the filesystem into it; give the room back if that fails.
            let grown = ext3::allocate(file, file_len, new - self.old_size, self.sparse, false)
                .map_err(|e| self.allocate_err(e))
                .and_then(|()| resize2fs(file, new, self.path));
            if let Err(e) = grown {
                let _ = file.set_len(file_len);
                return Err(e);
            }
        } else {
            resize2fs(file, new, self.path)?;
            file.set_len(new).map_err(|e| self.write_err(e))?;
        }
        Ok(())
    }

    /// A filesystem inside a larger file: copied out (data extents only) to a temporary file
    /// beside it, resized there, copied back over the partition; `set_size` changes the room
    /// the partition has (before copying back when it grows, after when it shrinks).
    fn resize_copy(
        &self,
        set_size: &mut dyn FnMut(u64) -> Result<(), OverlayError>,
    ) -> Result<(), OverlayError> {
        let (old, new) = (self.old_size, self.new_size);
        let dir = crate::build::parent_dir(self.path);
        let tmp = tempfile::Builder::new()
            .prefix(&crate::build::temp_prefix(self.path))
            .rand_bytes(6)
            .tempfile_in(&dir)
            .or_else(|_| tempfile::Builder::new().prefix("strata-resize-").tempfile())
            .map_err(|source| OverlayError::Temp { dir, source: crate::build::plain(source) })?;
        let _tmp = crate::interrupt::remove_on_signal(tmp.path());
        let work = tmp.as_file();
        ext3::copy_sparse(self.file, self.offset, old, work, 0, false)
            .and_then(|()| work.set_len(old.max(new)))
            .map_err(|source| OverlayError::Write { path: tmp.path().to_path_buf(), source })?;
        resize2fs(work, new, self.path)?;
        work.set_len(new).map_err(|e| self.write_err(e))?;
        if new > old {
            set_size(new)?;
            let room = ext3::allocate(self.file, self.offset + old, new - old, self.sparse, false);
            if let Err(e) = room {
                let _ = set_size(old);
                return Err(self.allocate_err(e));
            }
        }
        ext3::copy_sparse(work, 0, new, self.file, self.offset, true).map_err(|e| self.write_err(e))?;
        if new < old {
            set_size(new)?;
        }
        Ok(())
    }
}

/// `e2fsck -f -p`: a forced check with automatic repair, as resize2fs requires.
fn fsck(file: &File, offset: u64, path: &Path) -> Result<(), OverlayError> {
    let e2fsck = tools::E2FSCK;
    let mut cmd = e2fsck.command()?;
    let fs = ext3::target(&mut cmd, file, offset);
    cmd.args(["-f", "-p"]).arg(&fs);
    // 1: errors corrected; 2: corrected, "reboot" (meaningless for an image).
    let out = e2fsck.run_critical(&mut cmd, &[0, 1, 2]).map_err(|source| {
        let target = if offset == 0 {
            path.display().to_string()
        } else {
            format!("{}?offset={offset}", path.display())
        };
        OverlayError::Fsck { path: path.to_path_buf(), target, source }
    })?;
    if out.status.code() != Some(0) {
        crate::info!("e2fsck corrected errors in {}", path.display());
    }
    Ok(())
}

/// `resize2fs` to exactly `size` bytes, on a file that holds nothing but the filesystem.
fn resize2fs(file: &File, size: u64, path: &Path) -> Result<(), OverlayError> {
    let resize2fs = tools::RESIZE2FS;
    let mut cmd = resize2fs.command()?;
    let fs = ext3::target(&mut cmd, file, 0);
    cmd.arg(&fs).arg(format!("{}K", size >> 10));
    resize2fs
        .run_critical(&mut cmd, &[0])
        .map_err(|source| OverlayError::Resize { path: path.to_path_buf(), source })?;
    Ok(())
}
