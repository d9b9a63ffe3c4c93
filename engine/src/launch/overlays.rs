//! `--overlay PATH[:ro]`, `--writable` and `--writable-tmpfs`: which layers go on top of the
//! image, opened as the user, following Apptainer's rules.

use std::path::PathBuf;

use strata_plan::{Layer, LayerKind};

use crate::image::{FsType, Image, ImageError, ImageKind, Partition};

/// One `--overlay` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlaySpec {
    pub path: PathBuf,
    pub readonly: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("while loading overlay images: failed to open overlay image {arg}: {source}")]
    Open { arg: String, source: ImageError },
    #[error("while loading overlay images: {0} has no overlay partition to use")]
    NoPartition(PathBuf),
    #[error("cannot use --overlay in conjunction with --writable")]
    WithWritable,
    #[error("overlay option {0:?}: only 'ro' is allowed after the path")]
    BadOption(String),
}

/// Parse `--overlay` values (and `STRATA_OVERLAY`/`APPTAINER_OVERLAY`/`SINGULARITY_OVERLAY`):
/// comma-separated `PATH[:ro]` entries; later entries sit higher in the stack.
pub fn parse(cli: &[String], env: &[String]) -> Result<Vec<OverlaySpec>, OverlayError> {
    let mut out = Vec::new();
    for value in env.iter().chain(cli) {
        for item in value.split(',').filter(|s| !s.is_empty()) {
            let (path, readonly) = match item.rsplit_once(':') {
                Some((p, "ro")) => (p, true),
                Some((p, "rw")) => (p, false),
                Some((_, opt)) if !opt.contains('/') => return Err(OverlayError::BadOption(item.into())),
                _ => (item, false),
            };
            out.push(OverlaySpec { path: PathBuf::from(path), readonly });
        }
    }
    Ok(out)
}

/// The overlay values from the environment, first match wins per Apptainer.
pub fn env_values(getenv: impl Fn(&str) -> Option<String>) -> Vec<String> {
    ["STRATA_OVERLAY", "APPTAINER_OVERLAY", "SINGULARITY_OVERLAY"]
        .iter()
        .filter_map(|k| getenv(k))
        .find(|v| !v.trim().is_empty())
        .into_iter()
        .collect()
}

/// A layer the plan will carry, with the file that backs it.
pub struct OpenedLayer {
    pub file: std::fs::File,
    pub layer: Layer,
}

fn partition_layer(file: &std::fs::File, p: &Partition, writable: bool) -> std::io::Result<OpenedLayer> {
    let kind = match p.fstype {
        FsType::Squashfs => LayerKind::Squashfs,
        FsType::Ext3 => LayerKind::Ext3,
    };
    Ok(OpenedLayer {
        file: file.try_clone()?,
        layer: Layer {
            fd: -1,
            kind,
            offset: p.offset,
            size: p.size,
            writable: writable && kind == LayerKind::Ext3,
        },
    })
}

/// Open one `--overlay`: writable unless `:ro`, falling back to read-only with Apptainer's
/// warning when the user cannot write it. A SIF contributes its overlay partitions.
pub fn open(spec: &OverlaySpec) -> Result<Vec<OpenedLayer>, OverlayError> {
    let arg = spec.path.display().to_string();
    let open_err = |source| OverlayError::Open { arg: arg.clone(), source };
    let image = if spec.readonly {
        Image::open(&spec.path, false).map_err(open_err)?
    } else {
        match Image::open(&spec.path, true) {
            Ok(image) => image,
            Err(ImageError::NotWritable(p))
            | Err(ImageError::ReadOnlyFilesystem(p))
            | Err(ImageError::SquashfsReadOnly(p)) => {
                crate::warning!("Overlay image {} is not writable, proceeding with read-only", p.display());
                Image::open(&spec.path, false).map_err(open_err)?
            }
            Err(ImageError::NoWritableOverlay(_)) => Image::open(&spec.path, false).map_err(open_err)?,
            Err(e) => return Err(open_err(e)),
        }
    };
    let io = |e: std::io::Error| open_err(ImageError::Read { path: image.path.clone(), source: e });
    match image.kind {
        ImageKind::Sandbox => Ok(vec![OpenedLayer {
            file: image.file.try_clone().map_err(io)?,
            layer: Layer { fd: -1, kind: LayerKind::Dir, offset: 0, size: 0, writable: !spec.readonly },
        }]),
        ImageKind::Squashfs | ImageKind::Ext3 => {
            let p = image.rootfs().map_err(open_err)?;
            Ok(vec![partition_layer(&image.file, p, image.writable).map_err(io)?])
        }
        ImageKind::Sif => {
            if image.overlays.is_empty() {
                return Err(OverlayError::NoPartition(image.path.clone()));
            }
            image
                .overlays
                .iter()
                .map(|o| partition_layer(&image.file, &o.partition, image.writable).map_err(io))
                .collect()
        }
    }
}

/// The SIF's own overlay partitions: the writable layer with `--writable`, else read-only
/// layers just above the rootfs (Apptainer mounts an embedded ext3 overlay automatically).
pub fn embedded(image: &Image, writable: bool) -> std::io::Result<Vec<OpenedLayer>> {
    if image.kind != ImageKind::Sif {
        return Ok(Vec::new());
    }
    let target = if writable { image.writable_overlay().map(|o| o.id) } else { None };
    image.overlays.iter().map(|o| partition_layer(&image.file, &o.partition, Some(o.id) == target)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_ro() {
        let v = parse(&["a.img:ro,b.img".into(), "/x/c".into()], &["e.img".into()]).unwrap();
        assert_eq!(
            v,
            vec![
                OverlaySpec { path: "e.img".into(), readonly: false },
                OverlaySpec { path: "a.img".into(), readonly: true },
                OverlaySpec { path: "b.img".into(), readonly: false },
                OverlaySpec { path: "/x/c".into(), readonly: false },
            ]
        );
        assert!(parse(&["a.img:rx".into()], &[]).is_err());
    }

    #[test]
    fn env_first_match_wins() {
        let get = |k: &str| (k == "APPTAINER_OVERLAY").then(|| "o.img".to_string());
        assert_eq!(env_values(get), vec!["o.img".to_string()]);
    }
}
