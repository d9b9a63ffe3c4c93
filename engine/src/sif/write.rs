//! Creating and changing images: create, add, delete, set primary partition
//! (research/sif.md §2). Placement, alignment, IDs and times follow the reference exactly, so
//! deterministic images stay byte-reproducible.
//!
//! Every change is checked in full before the first byte is written. Then the data goes in
//! (past the end of the data in use), then the descriptor slot(s), then the header; if any step
//! fails, the slots and header are restored and the file is truncated back to its old length.
//! (Stale bytes of deleted objects at the tail, which no descriptor refers to, may stay
//! overwritten.)

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::{SystemTime, UNIX_EPOCH};

use super::copy::{copy_file, copy_stream, Target};
use super::descriptor::{Descriptor, NewObject, RAW_LEN};
use super::error::SifError;
use super::format::*;
use super::header::Header;
use super::read::Sif;
use super::sha256::Sha256;
use crate::interrupt;

/// How [`Sif::create`] lays out a new image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateOptions {
    /// Image ID; all zero for none.
    pub id: [u8; 16],
    /// Creation (and modification) time, Unix seconds.
    pub time: i64,
    /// Descriptor slots, fixed for the life of the image.
    pub capacity: u32,
    /// Shebang line, at most 31 bytes.
    pub launch_script: Vec<u8>,
}

impl CreateOptions {
    /// What `siftool new` does: a random v4 ID, the current time, 48 slots, no launch script.
    pub fn new() -> Result<Self, SifError> {
        Ok(CreateOptions {
            id: random_uuid()?,
            time: now(),
            capacity: DEFAULT_CAPACITY,
            launch_script: Vec::new(),
        })
    }

    /// A reproducible image: nil ID, zero times; later changes keep it reproducible.
    pub fn deterministic() -> Self {
        CreateOptions { id: [0; 16], time: ZERO_TIME, capacity: DEFAULT_CAPACITY, launch_script: Vec::new() }
    }
}

/// The data of a new object.
pub enum Source<'a> {
    /// A file: regular files are copied with `copy_file_range` keeping holes; anything else
    /// (a pipe) is streamed to its end.
    File(&'a File),
    /// Bytes in memory.
    Bytes(&'a [u8]),
}

/// Current time in Unix seconds.
pub fn now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// A random RFC 4122 version 4 UUID.
pub fn random_uuid() -> Result<[u8; 16], SifError> {
    let mut b = [0u8; 16];
    let mut got = 0;
    while got < b.len() {
        // SAFETY: the buffer is ours and `b.len() - got` bytes long from `got`.
        let r = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), b.len() - got, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(SifError::io("getting random bytes for the image ID", e));
        }
        got += r as usize;
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Ok(b)
}

/// The reference's `nextAligned`, on absolute file offsets.
pub fn next_aligned(offset: u64, alignment: u64) -> Result<u64, SifError> {
    let rem = if alignment == 0 { 0 } else { offset % alignment };
    if rem == 0 {
        return Ok(offset);
    }
    offset
        .checked_add(alignment - rem)
        .filter(|&v| v <= i64::MAX as u64)
        .ok_or(SifError::AlignmentOverflow { offset, alignment })
}

impl NewObject {
    /// A partition object in `group_id` with the default (4096) alignment and no name.
    pub fn partition(p: Partition, group_id: u32) -> Self {
        NewObject {
            data_type: DataType::Partition,
            group_id,
            linked: None,
            name: String::new(),
            extra: p.to_extra(),
            alignment: None,
        }
    }

    /// The partition metadata this object will carry, if it is a partition.
    fn partition_meta(&self) -> Option<Partition> {
        (self.data_type == DataType::Partition).then(|| Partition::from_extra(&self.extra))
    }
}

/// Metadata writes that can be rolled back: each write first saves the bytes it replaces.
struct Undo<'a> {
    file: &'a File,
    old_len: u64,
    saved: Vec<(u64, Vec<u8>)>,
    /// The change is an interrupt-critical section until it is done or rolled back: a signal
    /// waits for either (the data copy stops early on one, see `copy`).
    _in_place: interrupt::Critical,
}

impl<'a> Undo<'a> {
    fn new(file: &'a File, old_len: u64) -> Self {
        Undo { file, old_len, saved: Vec::new(), _in_place: interrupt::critical() }
    }

    fn write(&mut self, at: u64, bytes: &[u8]) -> io::Result<()> {
        let mut old = vec![0u8; bytes.len()];
        let n = read_upto(self.file, &mut old, at)?;
        old.truncate(n);
        self.saved.push((at, old));
        self.file.write_all_at(bytes, at)
    }

    /// Put back what was replaced and drop anything appended; best effort.
    fn roll_back(self) {
        for (at, old) in self.saved.iter().rev() {
            let _ = self.file.write_all_at(old, *at);
        }
        if let Ok(m) = self.file.metadata() {
            if m.len() > self.old_len {
                let _ = self.file.set_len(self.old_len);
            }
        }
    }
}

fn read_upto(f: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn write_err(what: &str) -> impl FnOnce(io::Error) -> SifError + '_ {
    move |e| SifError::io(format!("writing {what}"), e)
}

impl Sif {
    /// Write a new, empty image into `file` (truncated first): the descriptor table, then the
    /// header, as `CreateContainer` does.
    pub fn create(file: &File, opts: &CreateOptions) -> Result<Sif, SifError> {
        if opts.launch_script.len() > MAX_LAUNCH_SCRIPT {
            return Err(SifError::LaunchScriptTooLong(opts.launch_script.len()));
        }
        if opts.capacity > MAX_DESCRIPTORS {
            return Err(SifError::Capacity(opts.capacity.into()));
        }
        let table_len = i64::from(opts.capacity) * DESCRIPTOR_LEN as i64;
        let mut launch_script = [0u8; 32];
        launch_script[..opts.launch_script.len()].copy_from_slice(&opts.launch_script);
        let header = Header {
            launch_script,
            arch: Arch::Unknown.code(),
            id: opts.id,
            created_at: opts.time,
            modified_at: opts.time,
            descriptors_free: opts.capacity.into(),
            descriptors_total: opts.capacity.into(),
            descriptors_offset: DEFAULT_DESCRIPTORS_OFFSET,
            descriptors_size: table_len,
            data_offset: DEFAULT_DESCRIPTORS_OFFSET + table_len,
            data_size: 0,
        };
        file.set_len(0).map_err(write_err("the new image"))?;
        if table_len > 0 {
            // An all-zero table: the file is extended over it (a hole reads as zeros).
            file.set_len(header.data_offset as u64).map_err(write_err("the descriptor table"))?;
        }
        file.write_all_at(&header.to_bytes(), 0).map_err(write_err("the global header"))?;
        let file_len = file.metadata().map_err(write_err("the new image"))?.len();
        Ok(Sif { header, descriptors: Vec::new(), file_len })
    }

    /// The time a change records: zero time for a deterministic image, else now.
    fn change_time(&self, time: Option<i64>) -> i64 {
        time.unwrap_or_else(|| if self.header.is_deterministic() { ZERO_TIME } else { now() })
    }

    /// The image must be the one that was read: same length, so nothing appended since.
    fn check_unchanged(&self, file: &File) -> Result<(), SifError> {
        let len = file.metadata().map_err(|e| SifError::io("checking the image", e))?.len();
        if len != self.file_len {
            return Err(SifError::io(
                "checking the image",
                io::Error::other(format!(
                    "its length changed from {} to {len} bytes since it was read",
                    self.file_len
                )),
            ));
        }
        Ok(())
    }

    fn slot_offset(&self, slot: u64) -> u64 {
        self.header.descriptors_offset as u64 + slot * DESCRIPTOR_LEN
    }

    /// End of the data in use: the object that ends last, or the start of the data section.
    fn data_end(&self) -> u64 {
        self.descriptors.iter().map(Descriptor::end).fold(self.header.data_offset as u64, u64::max)
    }

    /// Add an object as `AddObject` does: first free slot (ID = slot + 1), placed after the
    /// in-use object that ends last, aligned (4096 for partitions by default). `time` overrides
    /// the change time. Returns the new object's ID.
    pub fn add_object(
        &mut self,
        file: &File,
        obj: &NewObject,
        data: Source<'_>,
        time: Option<i64>,
    ) -> Result<u32, SifError> {
        self.check_unchanged(file)?;
        let total = self.header.descriptors_total as u64;
        let mut used: Vec<u64> = self.descriptors.iter().map(|d| d.slot).collect();
        used.sort_unstable();
        let slot = (0..total)
            .find(|s| used.binary_search(s).is_err())
            .ok_or(SifError::CapacityFull(self.header.descriptors_total))?;
        let id = u32::try_from(slot + 1).map_err(|_| SifError::Capacity(slot + 1))?;
        if self.descriptor(id).is_some() {
            return Err(SifError::Descriptor {
                id,
                problem: format!("ID is already in use, so free slot {slot} cannot take it"),
            });
        }
        match obj.linked {
            Some(Link::Object(0)) => return Err(SifError::InvalidObjectId),
            Some(Link::Group(0)) => {
                return Err(SifError::Descriptor { id, problem: "link to the invalid group ID 0".into() })
            }
            _ => {}
        }
        if obj.group_id & GROUP_MASK != 0
            || matches!(obj.linked, Some(Link::Object(l) | Link::Group(l)) if l & GROUP_MASK != 0)
        {
            return Err(SifError::Descriptor {
                id,
                problem: format!("group or link ID above {:#x}", !GROUP_MASK),
            });
        }
        let part = obj.partition_meta();
        if part.is_some_and(|p| p.parttype == PartType::PrimSys) {
            if let Some(prim) = self.descriptors.iter().find(|d| d.is_primary_partition()) {
                return Err(SifError::PrimaryExists(prim.id));
            }
        }
        // Validate name and metadata now, before any byte is written.
        Descriptor::build(slot, obj, 0, 0, 0, 0)?;

        let t = self.change_time(time);
        let unaligned = self.data_end();
        let alignment = obj.alignment.unwrap_or(if part.is_some() { PARTITION_ALIGNMENT } else { 0 });
        let offset = next_aligned(unaligned, alignment)?;
        let is_oci = matches!(obj.data_type, DataType::OciRootIndex | DataType::OciBlob);
        let mut hash = is_oci.then(Sha256::new);

        let target = Target { file, offset, old_len: self.file_len };
        let mut undo = Undo::new(file, self.file_len);
        let copied = match data {
            Source::Bytes(b) => self
                .check_fits(offset, b.len() as u64)
                .and_then(|()| {
                    if let Some(h) = hash.as_mut() {
                        h.update(b);
                    }
                    file.write_all_at(b, offset).map_err(write_err("the object data"))
                })
                .map(|()| b.len() as u64),
            Source::File(src) => self.copy_source(src, &target, hash.as_mut()),
        };
        let size = match copied {
            Ok(n) => n,
            Err(e) => {
                undo.roll_back();
                return Err(e);
            }
        };
        let mut obj = obj.clone();
        if let Some(h) = hash {
            obj.extra = format!("sha256:{}", h.hex()).into_bytes();
        }
        let swp = (offset - unaligned + size) as i64;
        let d = Descriptor::build(slot, &obj, offset, size, swp, t)?;
        let mut header = self.header.clone();
        header.descriptors_free = (header.descriptors_free - 1).max(0);
        header.data_size = (offset + size) as i64 - header.data_offset;
        header.modified_at = t;
        if let Some(p) = part.filter(|p| p.parttype == PartType::PrimSys) {
            header.arch = p.arch.code();
        }
        let result = undo
            .write(self.slot_offset(slot), &d.to_bytes())
            .and_then(|()| undo.write(0, &header.to_bytes()))
            .and_then(|()| file.metadata().map(|m| m.len()));
        match result {
            Ok(len) => {
                self.file_len = len;
                self.header = header;
                let at = self.descriptors.partition_point(|x| x.slot < slot);
                self.descriptors.insert(at, d);
                Ok(id)
            }
            Err(e) => {
                undo.roll_back();
                Err(write_err("the descriptor and header")(e))
            }
        }
    }

    /// Where [`Sif::add_object`] would place the data of `obj` now: after the in-use object that
    /// ends last, aligned. Lets a caller preallocate that range before adding.
    pub fn next_offset(&self, obj: &NewObject) -> Result<u64, SifError> {
        let alignment =
            obj.alignment.unwrap_or(if obj.partition_meta().is_some() { PARTITION_ALIGNMENT } else { 0 });
        next_aligned(self.data_end(), alignment)
    }

    /// `Ok` when object `id` is the last of the image (no other object ends past its start), so
    /// that [`Sif::resize_object`] can grow it; else [`SifError::NotLastObject`] naming the
    /// object that follows it.
    pub fn check_last(&self, id: u32) -> Result<(), SifError> {
        let d = self.descriptor(id).ok_or(SifError::ObjectNotFound(id))?;
        match self.descriptors.iter().filter(|x| x.id != id && x.end() > d.offset).min_by_key(|x| x.offset) {
            Some(next) => Err(SifError::NotLastObject { id, next: next.id }),
            None => Ok(()),
        }
    }

    /// Change the size of object `id` in place (strata's own operation, for `overlay resize`):
    /// its data keeps its offset; the size, size with padding and modification times change,
    /// and `DataSize` follows when the object is the last one. Only the last object (none
    /// starts at or after it) may grow; its growth is zero-filled (a hole) when it extends the
    /// file. Shrinking the last object truncates the file after it; shrinking another leaves a
    /// gap, as a deletion does.
    pub fn resize_object(
        &mut self,
        file: &File,
        id: u32,
        new_size: u64,
        time: Option<i64>,
    ) -> Result<(), SifError> {
        self.check_unchanged(file)?;
        let i = self.descriptors.iter().position(|d| d.id == id).ok_or(SifError::ObjectNotFound(id))?;
        let old = &self.descriptors[i];
        let last = self.check_last(id).is_ok();
        if new_size > old.size {
            self.check_last(id)?;
        }
        self.check_fits(old.offset, new_size)?;
        let t = self.change_time(time);
        let mut d = old.clone();
        d.set_size(new_size, t);
        let mut header = self.header.clone();
        header.modified_at = t;
        let new_end = d.offset + new_size;
        if last {
            header.data_size = new_end as i64 - header.data_offset;
        }
        let mut undo = Undo::new(file, self.file_len);
        let grow_file = last && new_end > self.file_len;
        let result = (|| {
            if grow_file {
                file.set_len(new_end)?;
            }
            undo.write(self.slot_offset(d.slot), &d.to_bytes())?;
            undo.write(0, &header.to_bytes())?;
            if last && new_end < self.file_len {
                file.set_len(new_end)?;
            }
            file.metadata().map(|m| m.len())
        })();
        match result {
            Ok(len) => {
                self.file_len = len;
                self.header = header;
                self.descriptors[i] = d;
                Ok(())
            }
            Err(e) => {
                undo.roll_back();
                Err(write_err("the resized object")(e))
            }
        }
    }

    fn check_fits(&self, offset: u64, size: u64) -> Result<(), SifError> {
        match offset.checked_add(size) {
            Some(end) if end <= i64::MAX as u64 => Ok(()),
            _ => Err(SifError::TooLarge { offset, size }),
        }
    }

    fn copy_source(
        &self,
        src: &File,
        target: &Target<'_>,
        hash: Option<&mut Sha256>,
    ) -> Result<u64, SifError> {
        let meta = src.metadata().map_err(|e| SifError::io("reading the object file", e))?;
        let dst = target.file.metadata().map_err(|e| SifError::io("reading the image", e))?;
        if meta.dev() == dst.dev() && meta.ino() == dst.ino() {
            return Err(SifError::io(
                "adding the object",
                io::Error::other("the object file is the image itself"),
            ));
        }
        if meta.is_file() {
            let len = meta.len();
            self.check_fits(target.offset, len)?;
            copy_file(src, len, target, hash).map_err(write_err("the object data"))?;
            Ok(len)
        } else {
            let mut r: &File = src;
            let n =
                copy_stream(&mut r as &mut dyn Read, target, hash).map_err(write_err("the object data"))?;
            self.check_fits(target.offset, n)?;
            Ok(n)
        }
    }

    /// Delete an object as `siftool del` does: the slot is zeroed and counted free, the data,
    /// the file length and `DataSize` stay; deleting the primary partition resets the arch.
    pub fn delete_object(&mut self, file: &File, id: u32, time: Option<i64>) -> Result<(), SifError> {
        self.check_unchanged(file)?;
        if id == 0 && !self.descriptors.is_empty() {
            return Err(SifError::InvalidObjectId);
        }
        let i = self.descriptors.iter().position(|d| d.id == id).ok_or(SifError::ObjectNotFound(id))?;
        let d = &self.descriptors[i];
        let t = self.change_time(time);
        let mut header = self.header.clone();
        header.descriptors_free = (header.descriptors_free + 1).min(header.descriptors_total);
        if d.is_primary_partition() {
            header.arch = Arch::Unknown.code();
        }
        header.modified_at = t;
        let mut undo = Undo::new(file, self.file_len);
        let result = undo
            .write(self.slot_offset(d.slot), &[0u8; RAW_LEN])
            .and_then(|()| undo.write(0, &header.to_bytes()));
        if let Err(e) = result {
            undo.roll_back();
            return Err(write_err("the descriptor and header")(e));
        }
        self.header = header;
        self.descriptors.remove(i);
        Ok(())
    }

    /// Make a system partition the primary one, as `SetPrimPart` does: an existing primary
    /// becomes a plain system partition, the header takes the new primary's arch. Already
    /// primary: nothing is written.
    pub fn set_primary(&mut self, file: &File, id: u32, time: Option<i64>) -> Result<(), SifError> {
        self.check_unchanged(file)?;
        if id == 0 && !self.descriptors.is_empty() {
            return Err(SifError::InvalidObjectId);
        }
        let i = self.descriptors.iter().position(|d| d.id == id).ok_or(SifError::ObjectNotFound(id))?;
        let d = &self.descriptors[i];
        let p = d.partition().ok_or(SifError::NotAPartition { id, data_type: d.data_type })?;
        match p.parttype {
            PartType::PrimSys => return Ok(()),
            PartType::System => {}
            parttype => return Err(SifError::NotASystemPartition { id, parttype }),
        }
        let t = self.change_time(time);
        let mut changed: Vec<Descriptor> = Vec::new();
        for old in self.descriptors.iter().filter(|d| d.is_primary_partition()) {
            let mut old = old.clone();
            old.set_parttype(PartType::System, t);
            changed.push(old);
        }
        let mut new = self.descriptors[i].clone();
        new.set_parttype(PartType::PrimSys, t);
        changed.push(new);
        let mut header = self.header.clone();
        header.arch = p.arch.code();
        header.modified_at = t;

        let mut undo = Undo::new(file, self.file_len);
        let mut result = Ok(());
        for d in &changed {
            result = result.and_then(|()| undo.write(self.slot_offset(d.slot), &d.to_bytes()));
        }
        if let Err(e) = result.and_then(|()| undo.write(0, &header.to_bytes())) {
            undo.roll_back();
            return Err(write_err("the descriptors and header")(e));
        }
        for d in changed {
            if let Some(slot) = self.descriptors.iter_mut().find(|x| x.slot == d.slot) {
                *slot = d;
            }
        }
        self.header = header;
        Ok(())
    }
}
