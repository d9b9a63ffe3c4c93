//! `strata sif ...`: siftool's subcommands, flags and argument order, byte-identical output
//! (research/sif.md §3). Every command opens its files, confines itself to them with Landlock,
//! and only then parses the image.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::CliResult;
use crate::confine;
use crate::sif::{
    display, Arch, CreateOptions, DataType, HashType, Link, NewObject, Partition, SbomFormat, Sif, Source,
};

#[derive(Args, Debug)]
#[command(about = "Manipulate Singularity Image Format (SIF) images")]
pub struct SifArgs {
    #[command(subcommand)]
    command: SifCommand,
}

#[derive(Subcommand, Debug)]
enum SifCommand {
    /// Add data object
    #[command(long_about = "Add a data object to a SIF image.")]
    Add(AddArgs),
    /// Delete data object
    #[command(long_about = "Delete a specified object descriptor and data from SIF image.")]
    Del { id: String, sif_path: PathBuf },
    /// Dump data object
    #[command(long_about = "Extract and output a data object from a SIF image.")]
    Dump { id: String, sif_path: PathBuf },
    /// Display global header
    #[command(long_about = "Display global header from a SIF image.")]
    Header { sif_path: PathBuf },
    /// Display data object info
    #[command(long_about = "Display detailed info about a data object from a SIF image.")]
    Info { id: String, sif_path: PathBuf },
    /// List data objects
    #[command(long_about = "List data objects from a SIF image.")]
    List { sif_path: PathBuf },
    /// Create SIF image
    #[command(long_about = "Create a new empty SIF image.")]
    New {
        sif_path: PathBuf,
        /// (strata) nil ID and zero times, so that later changes stay byte-reproducible
        #[arg(long)]
        deterministic: bool,
    },
    /// Set primary system partition
    #[command(long_about = "Set the primary system partition of a SIF image.")]
    Setprim { id: String, sif_path: PathBuf },
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
struct AddArgs {
    sif_path: PathBuf,
    object_path: PathBuf,
    /// set alignment [default: 4096 with --datatype 4-Partition, 0 otherwise]
    #[arg(long)]
    alignment: Option<i64>,
    /// the type of data to add
    /// [NEEDED, no default]:
    ///   1-Deffile,        2-EnvVar,        3-Labels,
    ///   4-Partition,      5-Signature,     6-GenericJSON,
    ///   7-Generic,        8-CryptoMessage, 9-SBOM,
    ///   10-OCI.RootIndex, 11-OCI.Blob
    #[arg(long, default_value_t = 0, verbatim_doc_comment)]
    datatype: i64,
    /// set logical filename/handle [default: input filename]
    #[arg(long)]
    filename: Option<String>,
    /// set groupid [default: 0]
    #[arg(long, default_value_t = 0)]
    groupid: u32,
    /// set link pointer [default: 0]
    #[arg(long)]
    link: Option<u32>,
    /// the main architecture used (with --datatype 4-Partition)
    /// [NEEDED, no default]:
    ///   1-386,       2-amd64,     3-arm,
    ///   4-arm64,     5-ppc64,     6-ppc64le,
    ///   7-mips,      8-mipsle,    9-mips64,
    ///   10-mips64le, 11-s390x,    12-riscv64,
    ///   13-loong64
    #[arg(long, default_value_t = 0, verbatim_doc_comment)]
    partarch: i32,
    /// the filesystem used (with --datatype 4-Partition)
    /// [NEEDED, no default]:
    ///   1-Squash,    2-Ext3,      3-ImmuObj,
    ///   4-Raw
    #[arg(long, default_value_t = 0, verbatim_doc_comment)]
    partfs: i32,
    /// the type of partition (with --datatype 4-Partition)
    /// [NEEDED, no default]:
    ///   1-System,    2-PrimSys,   3-Data,
    ///   4-Overlay
    #[arg(long, default_value_t = 0, verbatim_doc_comment)]
    parttype: i32,
    /// the SBOM format (with --datatype 9-sbom):
    ///   cyclonedx-json, cyclonedx-xml,  github-json,
    ///   spdx-json,      spdx-rdf,       spdx-tag-value,
    ///   spdx-yaml,      syft-json
    #[arg(long, default_value = "", verbatim_doc_comment)]
    sbomformat: String,
    /// the entity that signs (with --datatype 5-Signature)
    /// [NEEDED, no default]:
    ///   example: 433FE984155206BD962725E20E8713472A879943
    #[arg(long, default_value = "", verbatim_doc_comment)]
    signentity: String,
    /// the signature hash used (with --datatype 5-Signature)
    /// [NEEDED, no default]:
    ///   1-SHA256,      2-SHA384,      3-SHA512,
    ///   4-BLAKE2s_256, 5-BLAKE2b_256
    #[arg(long, default_value_t = 0, verbatim_doc_comment)]
    signhash: i32,
}

pub fn run(args: SifArgs) -> CliResult {
    match args.command {
        SifCommand::List { sif_path } => {
            let sif = load(&sif_path)?;
            out(&display::list(&sif))
        }
        SifCommand::Header { sif_path } => {
            let sif = load(&sif_path)?;
            out(&display::header(&sif))
        }
        SifCommand::Info { id, sif_path } => {
            let id = parse_id(&id)?;
            let sif = load(&sif_path)?;
            let d = sif.get_descriptor(id)?;
            match display::info(d) {
                Ok(text) => out(&text),
                Err((partial, e)) => {
                    out(&partial)?;
                    Err(e.into())
                }
            }
        }
        SifCommand::Dump { id, sif_path } => dump(&id, &sif_path),
        SifCommand::New { sif_path, deterministic } => new(&sif_path, deterministic),
        SifCommand::Add(a) => add(a),
        SifCommand::Del { id, sif_path } => {
            let id = parse_id(&id)?;
            let (file, mut sif) = open_image(&sif_path, true, &[])?;
            sif.delete_object(&file, id, None)
                .map_err(|e| format!("failed to delete object {id} from {}: {e}", sif_path.display()))?;
            Ok(0)
        }
        SifCommand::Setprim { id, sif_path } => {
            let id = parse_id(&id)?;
            let (file, mut sif) = open_image(&sif_path, true, &[])?;
            sif.set_primary(&file, id, None).map_err(|e| {
                format!("failed to set object {id} as primary partition of {}: {e}", sif_path.display())
            })?;
            Ok(0)
        }
    }
}

/// `strconv.ParseUint(s, 10, 32)`.
fn parse_id(s: &str) -> Result<u32, String> {
    s.parse::<u32>().map_err(|e| format!("while converting id: invalid object ID {s:?}: {e}"))
}

fn out(bytes: &[u8]) -> CliResult {
    let mut o = std::io::stdout().lock();
    o.write_all(bytes).and_then(|()| o.flush())?;
    Ok(0)
}

/// Open the image (read-write for changes), confine the process to it (and `also_read`), and
/// only then read its header and descriptors.
fn open_image(path: &Path, write: bool, also_read: &[&Path]) -> Result<(File, Sif), String> {
    let file =
        OpenOptions::new().read(true).write(write).open(path).map_err(|e| match (write, e.kind()) {
            (true, std::io::ErrorKind::PermissionDenied) => format!(
                "could not open image {} for writing: {e}; changing a SIF needs write permission \
                 on it (chmod u+w, or work on a copy)",
                path.display()
            ),
            _ => format!("could not open image {}: {e}", path.display()),
        })?;
    if write {
        // Never change an image a container is using: containers hold read locks on the
        // layers they mount from it (and a write lock on a writable overlay partition).
        let locked = crate::overlay::lock_range(&file, 0, 0, true);
        match locked {
            Ok(()) => {}
            Err(crate::overlay::LockError::InUse) => {
                return Err(format!(
                    "{} is in use by a running container; stop it before changing the image",
                    path.display()
                ))
            }
            Err(e) => return Err(format!("could not lock {}: {e}", path.display())),
        }
        confine::restrict_to(also_read, &[path]);
    } else {
        confine::restrict_to(&[also_read, &[path]].concat(), &[]);
    }
    let sif = Sif::read(&file).map_err(|e| format!("{} is not a valid SIF image: {e}", path.display()))?;
    Ok((file, sif))
}

fn load(path: &Path) -> Result<Sif, String> {
    open_image(path, false, &[]).map(|(_, sif)| sif)
}

fn dump(id: &str, path: &Path) -> CliResult {
    let id = parse_id(id)?;
    let (file, sif) = open_image(path, false, &[])?;
    let d = sif.get_descriptor(id)?;
    let mut o = std::io::stdout().lock();
    let mut buf = vec![0u8; (1 << 20).min(d.size.max(1) as usize)];
    let mut at = d.offset;
    while at < d.end() {
        let n = buf.len().min((d.end() - at) as usize);
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf[..n], at)
            .map_err(|e| format!("reading object {id} at offset {at} of {}: {e}", path.display()))?;
        o.write_all(&buf[..n])?;
        at += n as u64;
    }
    o.flush()?;
    Ok(0)
}

fn new(path: &Path, deterministic: bool) -> CliResult {
    let opts = if deterministic { CreateOptions::deterministic() } else { CreateOptions::new()? };
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o755)
        .open(path)
        .map_err(|e| format!("could not create {}: {e}", path.display()))?;
    if let Err(e) = Sif::create(&file, &opts) {
        let _ = std::fs::remove_file(path);
        return Err(format!("failed to create {}: {e}", path.display()).into());
    }
    Ok(0)
}

/// The descriptor the flags ask for, validated in siftool's order (after the data type).
fn new_object(a: &AddArgs, dt: DataType) -> Result<NewObject, String> {
    let linked = match a.link {
        Some(0) => return Err("invalid object ID 0 for --link".into()),
        Some(id) => Some(Link::Object(id)),
        None => None,
    };
    let extra = match dt {
        DataType::Partition => {
            if a.parttype == 0 || a.partfs == 0 || a.partarch == 0 {
                return Err(
                    "with partition datatype, --partfs, --parttype and --partarch must be passed".into()
                );
            }
            let arch = Arch::from_number(a.partarch.into())
                .ok_or_else(|| format!("unknown architecture: unknown (--partarch {})", a.partarch))?;
            Partition {
                fstype: crate::sif::FsType::from_code(a.partfs),
                parttype: crate::sif::PartType::from_code(a.parttype),
                arch,
            }
            .to_extra()
        }
        DataType::Signature => {
            let fp = decode_hex(&a.signentity)
                .map_err(|e| format!("failed to decode signing entity fingerprint: encoding/hex: {e}"))?;
            let hash = HashType::from_code(a.signhash);
            if matches!(hash, HashType::Other(_)) {
                return Err(format!("invalid hash type: {}", a.signhash));
            }
            if fp.len() != 20 {
                return Err(format!("invalid signing entity fingerprint length: got {}, want 20", fp.len()));
            }
            let mut e = hash.code().to_le_bytes().to_vec();
            e.extend_from_slice(&fp);
            e
        }
        DataType::Sbom => {
            if a.sbomformat.is_empty() {
                return Err("with SBOM datatype, --sbomformat must be passed".into());
            }
            let f = SbomFormat::from_name(&a.sbomformat)
                .ok_or_else(|| format!("invalid SBOM format: {}", a.sbomformat))?;
            f.code().to_le_bytes().to_vec()
        }
        _ => Vec::new(),
    };
    Ok(NewObject {
        data_type: dt,
        group_id: a.groupid,
        linked,
        name: a.filename.clone().unwrap_or_default(),
        extra,
        alignment: a.alignment.map(|v| v.max(0) as u64),
    })
}

/// Go's `hex.DecodeString`.
fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let digit = |i: usize| {
        (b[i] as char).to_digit(16).ok_or_else(|| format!("invalid byte: U+{:04X} {:?}", b[i], b[i] as char))
    };
    let mut out = Vec::with_capacity(b.len() / 2);
    for i in (0..b.len() / 2).map(|i| 2 * i) {
        out.push((digit(i)? * 16 + digit(i + 1)?) as u8);
    }
    if b.len() % 2 == 1 {
        digit(b.len() - 1)?;
        return Err("odd length hex string".into());
    }
    Ok(out)
}

fn add(a: AddArgs) -> CliResult {
    let dt = DataType::from_cli(a.datatype).ok_or("-datatype flag is required with a valid range")?;
    let data = File::open(&a.object_path).map_err(|e| format!("open {}: {e}", a.object_path.display()))?;
    let obj = new_object(&a, dt)?;
    let (file, mut sif) = open_image(&a.sif_path, true, &[&a.object_path])?;
    sif.add_object(&file, &obj, Source::File(&data), None)
        .map_err(|e| format!("failed to add {} to {}: {e}", a.object_path.display(), a.sif_path.display()))?;
    Ok(0)
}
