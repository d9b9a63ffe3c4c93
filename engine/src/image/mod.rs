//! Image resolution: what a path names (sandbox directory, SIF, squashfs or ext3 image), opened
//! **as the invoking user**, with the partition the starter is to mount.
//!
//! [`Image::open`] follows Apptainer's `image.Init`: resolve the path (symlinks followed), open
//! it, try the formats in order (sandbox, SIF, squashfs, ext3) and describe what was found. The
//! file stays open in the returned [`Image`]: the launcher hands that very descriptor to the
//! starter, which re-checks it; nothing is re-opened by name later.
//!
//! Opening never uses `O_PATH` (a regular `open` proves the user may read the file); files are
//! opened `O_RDONLY` (`O_RDWR` when writable is asked for), directories `O_RDONLY|O_DIRECTORY`,
//! all close-on-exec.

pub mod arch;
pub mod detect;
mod sif;

pub use sif::{check_partition, PartitionError};

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};

use detect::{FileFormat, HeaderError, HEADER_LEN};

/// What kind of image a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// A directory tree used as the root filesystem.
    Sandbox,
    /// A Singularity Image Format file.
    Sif,
    /// A bare squashfs image.
    Squashfs,
    /// A bare ext3 image.
    Ext3,
}

impl fmt::Display for ImageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImageKind::Sandbox => "sandbox",
            ImageKind::Sif => "sif",
            ImageKind::Squashfs => "squashfs",
            ImageKind::Ext3 => "ext3",
        })
    }
}

/// The filesystem of a partition the starter mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Squashfs,
    Ext3,
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsType::Squashfs => "squashfs",
            FsType::Ext3 => "ext3",
        })
    }
}

/// A filesystem inside an image file: where it starts and how long it is, in bytes. The
/// starter gives exactly these to the loop device (`offset`, `sizelimit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub fstype: FsType,
    pub offset: u64,
    pub size: u64,
}

/// A partition of a SIF file, with its descriptor id and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SifPartition {
    /// The SIF object id (what `strata sif list` shows).
    pub id: u32,
    /// The descriptor's name; often empty.
    pub name: String,
    pub partition: Partition,
}

/// An image opened as the user.
#[derive(Debug)]
pub struct Image {
    /// The open file or directory: `O_RDONLY` (or `O_RDWR` if opened writable) for files,
    /// `O_RDONLY|O_DIRECTORY` for a sandbox; close-on-exec.
    pub file: File,
    /// The canonical path (absolute, symlinks resolved) the file was opened from.
    pub path: PathBuf,
    pub kind: ImageKind,
    /// True when the file was opened read-write. A sandbox directory keeps the flag as asked
    /// (a directory fd has no write mode; writes are checked by the kernel inside the container).
    pub writable: bool,
    /// The root filesystem: the whole squashfs/ext3 image, or a SIF's primary system partition.
    /// `None` for a sandbox, and for a SIF without a primary partition.
    pub rootfs: Option<Partition>,
    /// SIF only: the overlay partitions usable with this image (Apptainer's rules: in the primary
    /// partition's group when it has one; ext3 passing the ext3 header check, or squashfs), in
    /// descriptor order.
    pub overlays: Vec<SifPartition>,
    /// SIF only: the data partitions (ext3 or squashfs), in descriptor order.
    pub data: Vec<SifPartition>,
}

/// Why an image could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Apptainer's text for a missing path: the first component that does not exist.
    #[error("failed to retrieve path for {arg}: lstat {missing}: no such file or directory")]
    NotFound { arg: String, missing: PathBuf },
    #[error("failed to retrieve path for {arg}: {source}")]
    Resolve { arg: String, source: io::Error },
    #[error("{0} is not readable by the current user, check permissions")]
    NotReadable(PathBuf),
    #[error("could not use {0} for writing, you don't have write permissions")]
    NotWritable(PathBuf),
    #[error(
        "could not use {0} for writing, it is on a read-only filesystem; \
         drop --writable or use a writable copy"
    )]
    ReadOnlyFilesystem(PathBuf),
    #[error("could not set {0} image writable: squashfs is a read-only filesystem")]
    SquashfsReadOnly(PathBuf),
    #[error("/ as sandbox is not authorized")]
    RootAsSandbox,
    #[error(
        "{0}: image format not recognized: not a sandbox directory, nor a SIF, squashfs or \
         ext3 image"
    )]
    UnknownFormat(PathBuf),
    #[error(
        "{0}: image format not recognized: not a regular file or directory (a device, FIFO or \
         socket cannot be an image)"
    )]
    NotAFile(PathBuf),
    #[error("{path}: {source}")]
    BadHeader { path: PathBuf, source: HeaderError },
    #[error("{path} changed while it was being opened; try again")]
    Changed { path: PathBuf },
    #[error("could not open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("could not read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("no root filesystem found in {0}")]
    NoRootFilesystem(PathBuf),
    #[error("could not read SIF {path}: {source}")]
    Sif { path: PathBuf, source: crate::sif::SifError },
    #[error("{path}: while checking system partition header (object {id}): {source}")]
    SystemPartition { path: PathBuf, id: u32, source: PartitionError },
    #[error(
        "{path}: the image's architecture ({image}) could not run on the host's ({host}); \
         a persistent binfmt_misc emulator (qemu-user-static) would allow it"
    )]
    Arch { path: PathBuf, image: String, host: String },
    #[error(
        "no SIF writable overlay partition found in {0}; add one with \
         'strata overlay create --size <MiB> {0}' or use --writable-tmpfs"
    )]
    NoWritableOverlay(PathBuf),
}

impl Image {
    /// Resolve and open `path` as the user, detect its kind and locate its partitions.
    ///
    /// With `writable`, files are opened `O_RDWR`: a squashfs is refused
    /// ([`ImageError::SquashfsReadOnly`]), a SIF must have an ext3 overlay partition (or an ext3
    /// root) to write into ([`ImageError::NoWritableOverlay`]), a file the user may not write gives
    /// [`ImageError::NotWritable`]; callers that accept read-only use (Apptainer's
    /// `Overlay image <p> is not writable, proceeding with read-only`) open again without it.
    pub fn open(path: impl AsRef<Path>, writable: bool) -> Result<Image, ImageError> {
        let arg = path.as_ref();
        crate::debug!("Image format detection for {}", arg.display());
        let canonical = resolve(arg)?;
        if canonical == Path::new("/") {
            return Err(ImageError::RootAsSandbox);
        }

        match open_with(&canonical, libc::O_DIRECTORY) {
            Ok(dir) => {
                crate::debug!("sandbox image format detected: {}", canonical.display());
                return Ok(Image {
                    file: dir,
                    path: canonical,
                    kind: ImageKind::Sandbox,
                    writable,
                    rootfs: None,
                    overlays: Vec::new(),
                    data: Vec::new(),
                });
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {}
            Err(e) => return Err(open_error(&canonical, e)),
        }

        // O_NONBLOCK so that a FIFO cannot hang us; cleared once we know it is a regular file.
        let file = open_with(&canonical, libc::O_NONBLOCK | libc::O_NOCTTY)
            .map_err(|e| open_error(&canonical, e))?;
        let meta = file.metadata().map_err(|e| ImageError::Read { path: canonical.clone(), source: e })?;
        if !meta.is_file() {
            return Err(ImageError::NotAFile(canonical));
        }
        clear_nonblock(&file).map_err(|e| ImageError::Read { path: canonical.clone(), source: e })?;

        let header =
            read_header(&file).map_err(|e| ImageError::Read { path: canonical.clone(), source: e })?;
        let format = detect::detect_format(&header)
            .map_err(|e| ImageError::BadHeader { path: canonical.clone(), source: e })?;
        let size = meta.len();
        let mut image = match format {
            None => return Err(ImageError::UnknownFormat(canonical)),
            Some(FileFormat::Sif) => {
                crate::debug!("sif image format detected: {}", canonical.display());
                let layout = sif::resolve(&file, &canonical)?;
                let image = Image {
                    file,
                    path: canonical,
                    kind: ImageKind::Sif,
                    writable: false,
                    rootfs: layout.rootfs,
                    overlays: layout.overlays,
                    data: layout.data,
                };
                let rootfs_ext3 = image.rootfs.is_some_and(|p| p.fstype == FsType::Ext3);
                if writable && !rootfs_ext3 && image.writable_overlay().is_none() {
                    return Err(ImageError::NoWritableOverlay(image.path));
                }
                image
            }
            Some(FileFormat::Squashfs { offset }) => {
                crate::debug!("squashfs image format detected: {}", canonical.display());
                if writable {
                    return Err(ImageError::SquashfsReadOnly(canonical));
                }
                Image {
                    file,
                    path: canonical,
                    kind: ImageKind::Squashfs,
                    writable: false,
                    rootfs: Some(Partition {
                        fstype: FsType::Squashfs,
                        offset,
                        size: size.saturating_sub(offset),
                    }),
                    overlays: Vec::new(),
                    data: Vec::new(),
                }
            }
            Some(FileFormat::Ext3 { offset }) => {
                crate::debug!("ext3 image format detected: {}", canonical.display());
                Image {
                    file,
                    path: canonical,
                    kind: ImageKind::Ext3,
                    writable: false,
                    rootfs: Some(Partition {
                        fstype: FsType::Ext3,
                        offset,
                        size: size.saturating_sub(offset),
                    }),
                    overlays: Vec::new(),
                    data: Vec::new(),
                }
            }
        };
        if writable {
            image.reopen_writable(&meta)?;
        }
        Ok(image)
    }

    /// The image's file name (Apptainer's `APPTAINER_NAME`).
    pub fn name(&self) -> String {
        self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }

    /// The root filesystem partition, or Apptainer's `no root filesystem found` (a SIF with no
    /// primary system partition). A sandbox has none either: check [`Image::kind`] first.
    pub fn rootfs(&self) -> Result<&Partition, ImageError> {
        self.rootfs.as_ref().ok_or_else(|| ImageError::NoRootFilesystem(self.path.clone()))
    }

    /// The first ext3 overlay partition of a SIF: the one `--writable` writes into.
    pub fn writable_overlay(&self) -> Option<&SifPartition> {
        self.overlays.iter().find(|p| p.partition.fstype == FsType::Ext3)
    }

    /// Replace the read-only descriptor by a read-write one on the same file.
    fn reopen_writable(&mut self, seen: &std::fs::Metadata) -> Result<(), ImageError> {
        let rw =
            OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOCTTY).open(&self.path).map_err(
                |e| match e.raw_os_error() {
                    Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::ETXTBSY) => {
                        ImageError::NotWritable(self.path.clone())
                    }
                    Some(libc::EROFS) => ImageError::ReadOnlyFilesystem(self.path.clone()),
                    _ => ImageError::Open { path: self.path.clone(), source: e },
                },
            )?;
        let now = rw.metadata().map_err(|e| ImageError::Read { path: self.path.clone(), source: e })?;
        if (now.dev(), now.ino()) != (seen.dev(), seen.ino()) {
            return Err(ImageError::Changed { path: self.path.clone() });
        }
        self.file = rw;
        self.writable = true;
        Ok(())
    }
}

/// The kind of image at `path` (opened read-only as the user, then closed).
pub fn detect(path: impl AsRef<Path>) -> Result<ImageKind, ImageError> {
    Image::open(path, false).map(|image| image.kind)
}

/// Open read-only, close-on-exec, with extra flags.
fn open_with(path: &Path, flags: libc::c_int) -> io::Result<File> {
    OpenOptions::new().read(true).custom_flags(flags | libc::O_CLOEXEC).open(path)
}

fn open_error(path: &Path, e: io::Error) -> ImageError {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => ImageError::NotReadable(path.to_path_buf()),
        _ => ImageError::Open { path: path.to_path_buf(), source: e },
    }
}

fn clear_nonblock(file: &File) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let fd = file.as_raw_fd();
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) & !OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// The first [`HEADER_LEN`] bytes of the file (fewer if the file is shorter).
fn read_header(file: &File) -> io::Result<Vec<u8>> {
    read_at_most(file, 0, HEADER_LEN)
}

/// Up to `len` bytes at `offset`; fewer only at end of file.
pub(crate) fn read_at_most(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// The absolute form of `path` without touching the filesystem (relative paths are joined to
/// the working directory; `.` and `..` are folded lexically, for messages only).
fn lexical_absolute(path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map(|cwd| cwd.join(path)).unwrap_or_else(|_| path.to_path_buf())
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Canonicalise `arg` (absolute, symlinks resolved), with Apptainer's message when it does not
/// exist: the first missing component is named.
fn resolve(arg: &Path) -> Result<PathBuf, ImageError> {
    match std::fs::canonicalize(arg) {
        Ok(p) => Ok(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let abs = lexical_absolute(arg);
            let missing = abs
                .ancestors()
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .find(|p| std::fs::symlink_metadata(p).is_err() || std::fs::metadata(p).is_err())
                .unwrap_or(&abs)
                .to_path_buf();
            Err(ImageError::NotFound { arg: arg.display().to_string(), missing })
        }
        Err(e) => Err(ImageError::Resolve { arg: arg.display().to_string(), source: e }),
    }
}

#[cfg(test)]
mod sif_tests;
#[cfg(test)]
mod tests;
