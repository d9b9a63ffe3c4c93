//! SIF resolution, as Apptainer's `sifFormat.initializer` does it: the primary system partition
//! (header-checked, architecture-checked) is the root filesystem; overlay partitions in its
//! group and data partitions are listed; partitions that fail their header check are skipped.

use std::fs::File;
use std::io;
use std::path::Path;

use super::detect::{self, HeaderError, Probe, HEADER_LEN};
use super::{arch, read_at_most, FsType, ImageError, Partition, SifPartition};
use crate::sif::{self, Arch, PartType, Sif};

/// Why a SIF partition's content does not match its declared filesystem.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("failed to read SIF partition at offset {offset}: {source}")]
    Read { offset: u64, source: io::Error },
    #[error(
        "failed to read SIF partition at offset {offset}: the file ends {available} bytes \
         after it, {HEADER_LEN} are needed to check its header"
    )]
    Short { offset: u64, available: usize },
    #[error("error while checking squashfs header: not a valid squashfs image (no squashfs magic)")]
    NotSquashfs,
    #[error("error while checking squashfs header: {0}")]
    Squashfs(HeaderError),
    #[error("error while checking ext3 header: file is not a valid ext3 image (no ext2/3/4 magic)")]
    NotExt3Magic,
    #[error("error while checking ext3 header: {0}")]
    Ext3(HeaderError),
    #[error("{0} partitions cannot be mounted by strata")]
    Unsupported(sif::FsType),
    #[error("unknown filesystem type {0}")]
    Unknown(sif::FsType),
}

/// Check the first bytes of a partition against its declared filesystem (Apptainer's
/// `checkPartitionType`), returning the filesystem to mount.
pub fn check_partition(file: &File, fstype: sif::FsType, offset: u64) -> Result<FsType, PartitionError> {
    let header =
        read_at_most(file, offset, HEADER_LEN).map_err(|source| PartitionError::Read { offset, source })?;
    if header.len() < HEADER_LEN {
        return Err(PartitionError::Short { offset, available: header.len() });
    }
    match fstype {
        sif::FsType::Squashfs => match detect::check_squashfs_header(&header) {
            Ok(Probe::Found { .. }) => Ok(FsType::Squashfs),
            Ok(Probe::NotThisFormat) => Err(PartitionError::NotSquashfs),
            Err(e) => Err(PartitionError::Squashfs(e)),
        },
        sif::FsType::Ext3 => match detect::check_ext3_header(&header) {
            Ok(Probe::Found { .. }) => Ok(FsType::Ext3),
            Ok(Probe::NotThisFormat) => Err(PartitionError::NotExt3Magic),
            Err(e) => Err(PartitionError::Ext3(e)),
        },
        sif::FsType::Raw
        | sif::FsType::EncryptedSquashfs
        | sif::FsType::GocryptfsSquashfs
        | sif::FsType::ImmuObj => Err(PartitionError::Unsupported(fstype)),
        sif::FsType::Other(_) => Err(PartitionError::Unknown(fstype)),
    }
}

/// What a SIF offers to mount.
pub(super) struct SifLayout {
    pub rootfs: Option<Partition>,
    pub overlays: Vec<SifPartition>,
    pub data: Vec<SifPartition>,
}

/// Read the SIF on `file` and locate its partitions.
pub(super) fn resolve(file: &File, path: &Path) -> Result<SifLayout, ImageError> {
    let sif = Sif::read(file).map_err(|source| ImageError::Sif { path: path.to_path_buf(), source })?;
    resolve_loaded(&sif, file, path)
}

fn resolve_loaded(sif: &Sif, file: &File, path: &Path) -> Result<SifLayout, ImageError> {
    let mut group = 0;
    let mut rootfs = None;
    if let Some(desc) = sif.primary_partition() {
        let meta = desc.partition().expect("a primary partition is a partition descriptor");
        let fstype = check_partition(file, meta.fstype, desc.offset).map_err(|source| {
            ImageError::SystemPartition { path: path.to_path_buf(), id: desc.id, source }
        })?;
        if meta.arch != Arch::Unknown && !arch::host_can_run(meta.arch.go_name()) {
            return Err(ImageError::Arch {
                path: path.to_path_buf(),
                image: meta.arch.go_name().to_string(),
                host: arch::host_arch().to_string(),
            });
        }
        group = desc.group_id;
        crate::debug!(
            "{}: root filesystem is partition {} ({fstype}, offset {}, size {}, group {group})",
            path.display(),
            desc.id,
            desc.offset,
            desc.size
        );
        rootfs = Some(Partition { fstype, offset: desc.offset, size: desc.size });
    } else {
        crate::debug!("{}: no primary system partition", path.display());
    }

    let mut overlays = Vec::new();
    let mut data = Vec::new();
    for desc in sif.descriptors() {
        let Some(meta) = desc.partition() else {
            continue;
        };
        let overlay = match meta.parttype {
            PartType::Overlay => true,
            PartType::Data => false,
            _ => continue,
        };
        if overlay && group > 0 && desc.group_id != group {
            crate::debug!(
                "{}: skipping overlay partition {}: it is in group {}, the root filesystem in \
                 group {group}",
                path.display(),
                desc.id,
                desc.group_id
            );
            continue;
        }
        let fstype = match check_partition(file, meta.fstype, desc.offset) {
            Ok(fstype) => fstype,
            Err(e) => {
                crate::debug!("{}: skipping {} partition {}: {e}", path.display(), meta.parttype, desc.id);
                continue;
            }
        };
        let part = SifPartition {
            id: desc.id,
            name: desc.name.clone(),
            partition: Partition { fstype, offset: desc.offset, size: desc.size },
        };
        if overlay {
            overlays.push(part);
        } else {
            data.push(part);
        }
    }
    Ok(SifLayout { rootfs, overlays, data })
}
