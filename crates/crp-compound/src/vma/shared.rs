//! Shared memory objects: the shmem file behind `MAP_SHARED|MAP_ANONYMOUS`
//! and `/dev/zero` shared mappings (the kernel names both `/dev/zero
//! (deleted)`), and memfds only mappings hold. Several mappings of one
//! object (split or mremap'd VMAs, a page mapped twice) are one object,
//! identified by the device and inode /proc/PID/maps shows, and stay one
//! object after the restore.
//!
//! - **Dump**: each object is recorded once ([`SharedObject`]: kind, size,
//!   inode); its pages (found with SEEK_DATA/SEEK_HOLE on
//!   /proc/PID/map_files, so pages only other processes touched are found
//!   too) are stored once, through the first mapping (in address order)
//!   that covers each page ([`page_runs`]). Other processes that map or
//!   hold the object are named in [`SharedObject::outside`].
//! - **Restore**: the object is made again in the restored process
//!   ([`create_object`]: an anonymous shared mapping reopened through
//!   /proc/self/map_files, or `memfd_create` with its name), truncated to
//!   its size, and every mapping of it is mapped from that one descriptor
//!   at its offset.
//!
//! Mappings of a memfd or deleted file a descriptor holds are not objects
//! of this module: they refer to the descriptor table's object
//! ([`super::Backing::Descriptor`]) and are mapped from it once the
//! descriptors are restored. SysV segments are refused.
//!
//! Written by hand: no crate reads another process's shmem objects.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use crp_ptrace::procfs::MapsEntry;
use crp_ptrace::{EngineError, Tracee, TraceeExt, arg};
use nix::errno::Errno;

use super::{Backing, PAGE_SIZE, VmaRecord};
use crate::error::{CompoundError, Unsupported};
use crate::files::unlinked::{CONTENTS_LIMIT_OPTION, contents_limit};
use crate::files::{Contents, Extent};
use crate::valid::{Invalid, check_path};

/// The longest memfd name (`MFD_NAME_MAX_LEN`).
const MEMFD_NAME_MAX: usize = 249;

/// What a shared memory object is, as the restore makes it again.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum SharedKind {
    /// `MAP_SHARED|MAP_ANONYMOUS` or a shared mapping of `/dev/zero`.
    Anonymous,
    /// A memfd no descriptor of the process holds any more.
    Memfd { name: String },
    /// A deleted file no descriptor holds (a POSIX semaphore or shm object
    /// after `shm_unlink`, a library replaced on disk...), mapped shared or
    /// privately: its contents are stored here (up to the dump's file
    /// contents limit) and it is made again unlinked in its directory
    /// (`O_TMPFILE`, so `/proc/PID/maps` names it `DIR/#INODE (deleted)`).
    DeletedFile { path: String, mode: u32, contents: Contents },
    /// A memfd no descriptor holds that is mapped privately (and maybe
    /// shared too): its contents are stored here, as a deleted file's.
    MemfdContents { name: String, contents: Contents },
    /// A SysV shared memory segment (`shmat`): attached again to the
    /// segment of the same key when one exists with the same size and mode
    /// (its contents, which its other users may have written since, are
    /// kept), else created (a new id) and filled; `removed` (IPC_RMID while
    /// attached, key IPC_PRIVATE) is removed again once attached. A made
    /// segment gets the original's owner (`uid`, `gid`, by IPC_SET); its
    /// creator is crp restore's.
    SysV { key: i32, id: i32, mode: u32, removed: bool, uid: u32, gid: u32 },
}

/// One shared memory object, however many mappings it has.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SharedObject {
    pub kind: SharedKind,
    /// `st_dev` and `st_ino` of the object at the dump.
    pub device: u64,
    pub inode: u64,
    /// Its size (`st_size`): a mapping past it faults with SIGBUS, as before.
    pub size: u64,
    /// Processes outside the dump that mapped or held it at the dump: the
    /// restored copy is no longer shared with them.
    pub outside: Vec<i32>,
}

/// Every shared memory object of the process, referred to by index from
/// [`Backing::Shared`].
#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SharedMemory {
    pub objects: Vec<SharedObject>,
}

impl SharedObject {
    /// `MAP_SHARED|MAP_ANONYMOUS` or `memfd:NAME`, for messages.
    pub fn describe(&self) -> String {
        match &self.kind {
            SharedKind::Anonymous => "MAP_SHARED|MAP_ANONYMOUS".to_owned(),
            SharedKind::Memfd { name } | SharedKind::MemfdContents { name, .. } => format!("memfd:{name}"),
            SharedKind::DeletedFile { path, .. } => format!("deleted file {path}"),
            SharedKind::SysV { key, id, .. } => format!("SysV shm key {key:#x} id {id}"),
        }
    }

    /// Whether its contents are in the metadata (a deleted file) rather
    /// than in page runs.
    pub fn contents_in_metadata(&self) -> bool {
        matches!(self.kind, SharedKind::DeletedFile { .. } | SharedKind::MemfdContents { .. })
    }
}

impl SharedMemory {
    /// Refuses an object no restore could make, and a mapping that refers
    /// to an object that is not there or that maps past 2^64.
    pub fn check(&self, vmas: &[VmaRecord], descriptor_objects: usize) -> Result<(), Invalid> {
        for (index, object) in self.objects.iter().enumerate() {
            let field = || format!("shared memory object {index}");
            if i64::try_from(object.size).is_err() {
                return Err(Invalid::new(field(), format!("has size {}, beyond what ftruncate takes", object.size)));
            }
            if let SharedKind::Memfd { name } | SharedKind::MemfdContents { name, .. } = &object.kind
                && (name.len() > MEMFD_NAME_MAX || name.contains('\0'))
            {
                return Err(Invalid::new(field(), format!("has memfd name {name:.80?}, not one memfd_create takes")));
            }
            if matches!(object.kind, SharedKind::SysV { .. })
                && (object.size == 0 || i32::try_from(object.size).is_err())
            {
                return Err(Invalid::new(field(), format!("is a SysV segment of {} bytes", object.size)));
            }
            if object.kind == SharedKind::Anonymous && (object.size == 0 || object.size % PAGE_SIZE != 0) {
                return Err(Invalid::new(field(), format!("is anonymous shared memory of {} bytes", object.size)));
            }
            if let SharedKind::DeletedFile { path, .. } = &object.kind {
                check_path(field(), path)?;
            }
            if let SharedKind::DeletedFile { contents, .. } | SharedKind::MemfdContents { contents, .. } = &object.kind
            {
                let mut end = 0u64;
                for extent in &contents.extents {
                    let extent_end = extent.offset.checked_add(extent.data.len() as u64);
                    if extent.offset < end || extent_end.is_none_or(|extent_end| extent_end > object.size) {
                        return Err(Invalid::new(
                            field(),
                            format!("has an extent at {} out of order or beyond its size", extent.offset),
                        ));
                    }
                    end = extent_end.unwrap_or(u64::MAX);
                }
            }
        }
        for (index, vma) in vmas.iter().enumerate() {
            let field = || format!("VMA {index} [{:#x}, {:#x})", vma.start, vma.end);
            match vma.backing {
                Backing::Shared { object, .. } if object as usize >= self.objects.len() => {
                    return Err(Invalid::new(
                        field(),
                        format!("maps shared memory object {object}, which is not there"),
                    ));
                }
                Backing::Shared { object, .. }
                    if !vma.shared && !self.objects[object as usize].contents_in_metadata() =>
                {
                    return Err(Invalid::new(field(), "is a private mapping of a shared memory object"));
                }
                Backing::Descriptor { object, .. } if object as usize >= descriptor_objects => {
                    return Err(Invalid::new(field(), format!("maps descriptor object {object}, which is not there")));
                }
                _ => {}
            }
        }
        check_attachments(vmas, self).map_err(|refusal| Invalid::new(refusal.location, refusal.what))
    }

    /// The objects other processes map or hold too.
    pub fn shared_outside(&self) -> impl Iterator<Item = &SharedObject> {
        self.objects.iter().filter(|object| !object.outside.is_empty())
    }
}

/// Collects the shared memory objects of one process while its mappings
/// are recorded.
#[derive(Debug)]
pub struct Gathering {
    pid: i32,
    objects: Vec<SharedObject>,
}

impl Gathering {
    pub fn new(pid: i32) -> Self {
        Self { pid, objects: Vec::new() }
    }

    /// The index of the object `entry` maps, recorded the first time.
    pub(super) fn object_of(
        &mut self,
        start: u64,
        end: u64,
        device: u64,
        inode: u64,
        kind: SharedKind,
    ) -> Result<u32, CompoundError> {
        if let Some(index) = self.objects.iter().position(|object| object.device == device && object.inode == inode) {
            return Ok(u32::try_from(index).unwrap_or(u32::MAX));
        }
        let path = map_files_path(self.pid, start, end);
        let metadata = std::fs::metadata(&path).map_err(CompoundError::io("stat the shared memory object", &path))?;
        self.objects.push(SharedObject { kind, device, inode, size: metadata.size(), outside: Vec::new() });
        Ok(u32::try_from(self.objects.len() - 1).unwrap_or(u32::MAX))
    }

    /// The index of the deleted file `entry` maps, recorded (with its
    /// contents, read through /proc/PID/map_files) the first time.
    pub(super) fn deleted_file_of(
        &mut self,
        start: u64,
        end: u64,
        device: u64,
        inode: u64,
        path: &str,
    ) -> Result<u32, CompoundError> {
        if let Some(index) = self.objects.iter().position(|object| object.device == device && object.inode == inode) {
            return Ok(u32::try_from(index).unwrap_or(u32::MAX));
        }
        let (contents, mode) = self.contents_of(start, end, path)?;
        let size = contents.size;
        let kind = SharedKind::DeletedFile { path: path.to_owned(), mode, contents };
        self.objects.push(SharedObject { kind, device, inode, size, outside: Vec::new() });
        Ok(u32::try_from(self.objects.len() - 1).unwrap_or(u32::MAX))
    }

    /// The index of the memfd `name` a private mapping at `[start, end)`
    /// maps and no descriptor holds: recorded with its contents (the
    /// private mapping's clean pages are the file's), or given them when a
    /// shared mapping recorded it first.
    pub(super) fn memfd_with_contents(
        &mut self,
        start: u64,
        end: u64,
        device: u64,
        inode: u64,
        name: &str,
    ) -> Result<u32, CompoundError> {
        let known = self.objects.iter().position(|object| object.device == device && object.inode == inode);
        if let Some(index) = known
            && self.objects[index].contents_in_metadata()
        {
            return Ok(u32::try_from(index).unwrap_or(u32::MAX));
        }
        let (contents, _) = self.contents_of(start, end, &format!("/memfd:{name}"))?;
        let size = contents.size;
        let kind = SharedKind::MemfdContents { name: name.to_owned(), contents };
        match known {
            Some(index) => {
                self.objects[index].kind = kind;
                Ok(u32::try_from(index).unwrap_or(u32::MAX))
            }
            None => {
                self.objects.push(SharedObject { kind, device, inode, size, outside: Vec::new() });
                Ok(u32::try_from(self.objects.len() - 1).unwrap_or(u32::MAX))
            }
        }
    }

    /// The contents and mode of the file mapped at `[start, end)` (named
    /// `path` in messages), read through /proc/PID/map_files, refused above
    /// the dump's contents limit.
    fn contents_of(&self, start: u64, end: u64, path: &str) -> Result<(Contents, u32), CompoundError> {
        let link = map_files_path(self.pid, start, end);
        let file = std::fs::File::open(&link).map_err(CompoundError::io("open the mapped file", &link))?;
        let metadata = file.metadata().map_err(CompoundError::io("stat", &link))?;
        let size = metadata.size();
        let ranges = page_ranges(&file, size, &link)?;
        let stored: u64 = ranges.iter().map(|(start, end)| end.min(&size) - start).sum();
        let limit = contents_limit();
        if stored > limit {
            return Err(Unsupported {
                what: format!(
                    "a mapped file no descriptor holds, with {stored} bytes of data, above the {limit} bytes a dump \
                     saves of one file (raise it with crp dump {CONTENTS_LIMIT_OPTION} BYTES)"
                ),
                location: format!("[{start:#x}, {end:#x}) {path} (deleted)"),
            }
            .into());
        }
        let mut extents = Vec::with_capacity(ranges.len());
        for (from, to) in ranges {
            let to = to.min(size);
            let mut data = vec![0u8; usize::try_from(to - from).unwrap_or(0)];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut data, from)
                .map_err(CompoundError::io("read the mapped file", &link))?;
            extents.push(Extent { offset: from, data });
        }
        Ok((Contents { size, extents }, metadata.mode() & 0o7777))
    }

    /// The index of SysV segment `id` (key `key`) attached at `[start, end)`,
    /// recorded (from /proc/sysvipc/shm) the first time.
    pub(super) fn sysv_of(&mut self, start: u64, end: u64, device: u64, id: u64) -> Result<u32, CompoundError> {
        let known = self.objects.iter().position(
            |object| matches!(object.kind, SharedKind::SysV { id: known, .. } if u64::try_from(known).ok() == Some(id)),
        );
        if let Some(index) = known {
            return Ok(u32::try_from(index).unwrap_or(u32::MAX));
        }
        let location = || format!("[{start:#x}, {end:#x}) SysV segment id {id}");
        let Some(segment) = sysv_segments()?.into_iter().find(|segment| u64::try_from(segment.id).ok() == Some(id))
        else {
            return Err(Unsupported {
                what: "a SysV segment /proc/sysvipc/shm does not list".into(),
                location: location(),
            }
            .into());
        };
        if segment.mode & SHM_LOCKED != 0 {
            return Err(Unsupported {
                what: "a SysV segment locked in memory (shmctl SHM_LOCK)".into(),
                location: location(),
            }
            .into());
        }
        let kind = SharedKind::SysV {
            key: segment.key,
            id: segment.id,
            mode: segment.mode & 0o777,
            removed: segment.mode & SHM_DEST != 0,
            uid: segment.uid,
            gid: segment.gid,
        };
        self.objects.push(SharedObject { kind, device, inode: id, size: segment.size, outside: Vec::new() });
        Ok(u32::try_from(self.objects.len() - 1).unwrap_or(u32::MAX))
    }

    /// The objects, each with the other processes that map or hold it.
    pub fn finish(mut self) -> SharedMemory {
        if !self.objects.is_empty() {
            let wanted: Vec<(u64, u64)> = self.objects.iter().map(|object| (object.device, object.inode)).collect();
            let holders = holders_outside(self.pid, &wanted);
            for (object, holders) in self.objects.iter_mut().zip(holders) {
                object.outside = holders;
            }
        }
        SharedMemory { objects: self.objects }
    }
}

/// `SHM_DEST`: removed (IPC_RMID), destroyed at the last detach.
const SHM_DEST: u32 = 0o1000;
/// `SHM_LOCKED`: locked with shmctl(SHM_LOCK).
const SHM_LOCKED: u32 = 0o2000;

/// One line of /proc/sysvipc/shm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SysvSegment {
    pub key: i32,
    pub id: i32,
    /// Permission bits with SHM_DEST and SHM_LOCKED.
    pub mode: u32,
    pub size: u64,
    /// The owner (shm_perm.uid, gid), which IPC_SET may change.
    pub uid: u32,
    pub gid: u32,
}

/// The SysV segments of crp's IPC namespace (the restored process's too).
pub fn sysv_segments() -> Result<Vec<SysvSegment>, CompoundError> {
    const PATH: &str = "/proc/sysvipc/shm";
    let text = std::fs::read_to_string(PATH).map_err(CompoundError::io("read", PATH))?;
    Ok(parse_sysv(&text))
}

fn parse_sysv(text: &str) -> Vec<SysvSegment> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else { return Vec::new() };
    let columns: Vec<&str> = header.split_ascii_whitespace().collect();
    let column = |name: &str| columns.iter().position(|column| *column == name);
    let (Some(key), Some(id), Some(perms), Some(size), Some(uid), Some(gid)) =
        (column("key"), column("shmid"), column("perms"), column("size"), column("uid"), column("gid"))
    else {
        return Vec::new();
    };
    lines
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            Some(SysvSegment {
                key: fields.get(key)?.parse().ok()?,
                id: fields.get(id)?.parse().ok()?,
                mode: u32::from_str_radix(fields.get(perms)?, 8).ok()?,
                size: fields.get(size)?.parse().ok()?,
                uid: fields.get(uid)?.parse().ok()?,
                gid: fields.get(gid)?.parse().ok()?,
            })
        })
        .collect()
}

/// Refuses a SysV attachment the restore cannot make again with one
/// `shmat`: its VMAs (split by mprotect) must cover the whole segment from
/// one base address.
pub fn check_attachments(vmas: &[VmaRecord], shared: &SharedMemory) -> Result<(), Unsupported> {
    for (base, object, end) in attachments(vmas, shared) {
        let size = shared.objects[object as usize].size.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        if end != base.saturating_add(size) {
            return Err(Unsupported {
                what: format!(
                    "a SysV attachment only partly mapped (munmap'd or mremap'd: {:#x} of {size:#x} bytes)",
                    end.saturating_sub(base)
                ),
                location: format!("[{base:#x}, {end:#x}) {}", shared.objects[object as usize].describe()),
            });
        }
    }
    Ok(())
}

/// Each SysV attachment: its base address, its object, and where the run of
/// VMAs mapping it contiguously from the base ends.
fn attachments(vmas: &[VmaRecord], shared: &SharedMemory) -> Vec<(u64, u32, u64)> {
    let mut found: Vec<(u64, u32, u64)> = Vec::new();
    for vma in vmas {
        let Backing::Shared { object, offset } = vma.backing else { continue };
        if !matches!(shared.objects.get(object as usize).map(|object| &object.kind), Some(SharedKind::SysV { .. })) {
            continue;
        }
        let base = vma.start.wrapping_sub(offset);
        match found.iter_mut().find(|(known, known_object, _)| *known == base && *known_object == object) {
            Some((_, _, end)) if *end == vma.start => *end = vma.end,
            Some(_) => {}
            None if offset == 0 => found.push((base, object, vma.end)),
            None => found.push((base, object, base)),
        }
    }
    found
}

/// `makedev` of a maps line's `major:minor`.
pub(super) fn device_number((major, minor): (u32, u32)) -> u64 {
    libc::makedev(major, minor)
}

fn map_files_path(pid: i32, start: u64, end: u64) -> String {
    format!("/proc/{pid}/map_files/{start:x}-{end:x}")
}

/// For each `(device, inode)`, the processes other than `pid` (and crp)
/// that map it (their /proc/P/maps) or hold a descriptor of it. A process
/// that vanishes or cannot be read meanwhile is skipped.
fn holders_outside(pid: i32, wanted: &[(u64, u64)]) -> Vec<Vec<i32>> {
    let mut holders = vec![Vec::new(); wanted.len()];
    let own = std::process::id().cast_signed();
    let Ok(processes) = std::fs::read_dir("/proc") else { return holders };
    for process in processes.flatten() {
        let Some(other) = process.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else { continue };
        if other == pid || other == own {
            continue;
        }
        let mut found = vec![false; wanted.len()];
        if let Ok(maps) = std::fs::read_to_string(format!("/proc/{other}/maps")) {
            for line in maps.lines() {
                if let Some(key) = maps_line_key(line)
                    && let Some(index) = wanted.iter().position(|candidate| *candidate == key)
                {
                    found[index] = true;
                }
            }
        }
        if let Ok(descriptors) = std::fs::read_dir(format!("/proc/{other}/fd")) {
            for descriptor in descriptors.flatten() {
                let Ok(link) = std::fs::read_link(descriptor.path()) else { continue };
                if !link.to_string_lossy().ends_with(" (deleted)") {
                    continue;
                }
                let Ok(metadata) = std::fs::metadata(descriptor.path()) else { continue };
                if let Some(index) = wanted.iter().position(|key| *key == (metadata.dev(), metadata.ino())) {
                    found[index] = true;
                }
            }
        }
        for (index, _) in found.iter().enumerate().filter(|(_, found)| **found) {
            holders[index].push(other);
        }
    }
    holders
}

/// `(device, inode)` of a /proc/P/maps line with an inode.
fn maps_line_key(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_ascii_whitespace();
    let device = fields.nth(3)?;
    let inode: u64 = fields.next()?.parse().ok()?;
    // A SysV segment's inode is its id, which may be 0.
    if inode == 0 && !fields.next().is_some_and(|name| name.starts_with("/SYSV")) {
        return None;
    }
    let (major, minor) = device.split_once(':')?;
    let major = u32::from_str_radix(major, 16).ok()?;
    let minor = u32::from_str_radix(minor, 16).ok()?;
    Some((device_number((major, minor)), inode))
}

/// Which object (if any) a maps entry refers to is decided by
/// [`super::Mapping`]; this only says whether an entry's name is shmem's.
pub(super) fn is_anonymous_shared_name(name: &str) -> bool {
    name.starts_with("/dev/zero") && name.ends_with(" (deleted)")
}

/// The runs `(vaddr, page_count)` to store for each VMA of a shared object
/// (by the VMA's start): every page of the object that holds data, once,
/// through the first VMA in address order that maps it.
pub fn page_runs(
    pid: i32,
    vmas: &[VmaRecord],
    shared: &SharedMemory,
) -> Result<BTreeMap<u64, Vec<(u64, u64)>>, CompoundError> {
    let mut runs: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    for (index, object) in shared.objects.iter().enumerate() {
        if object.contents_in_metadata() {
            continue;
        }
        let mappings: Vec<(&VmaRecord, u64)> = vmas
            .iter()
            .filter_map(|vma| match vma.backing {
                Backing::Shared { object, offset } if object as usize == index => Some((vma, offset)),
                _ => None,
            })
            .collect();
        let Some((first, _)) = mappings.first() else { continue };
        let path = map_files_path(pid, first.start, first.end);
        let file = std::fs::File::open(&path).map_err(CompoundError::io("open the shared memory object", &path))?;
        let mut remaining = page_ranges(&file, object.size, &path)?;
        for (vma, offset) in mappings {
            let covered = (offset, offset.saturating_add(vma.length()));
            let (inside, outside) = split_ranges(&remaining, covered);
            remaining = outside;
            let vma_runs = runs.entry(vma.start).or_default();
            for (start, end) in inside {
                vma_runs.push((vma.start + (start - offset), (end - start) / PAGE_SIZE));
            }
        }
    }
    Ok(runs)
}

/// Byte ranges `[start, end)` of an object.
type Ranges = Vec<(u64, u64)>;

/// Splits `ranges` into the parts inside `[low, high)` and the rest.
fn split_ranges(ranges: &[(u64, u64)], (low, high): (u64, u64)) -> (Ranges, Ranges) {
    let mut inside = Vec::new();
    let mut outside = Vec::new();
    for &(start, end) in ranges {
        let (cut_start, cut_end) = (start.max(low), end.min(high));
        if cut_start >= cut_end {
            outside.push((start, end));
            continue;
        }
        inside.push((cut_start, cut_end));
        if start < cut_start {
            outside.push((start, cut_start));
        }
        if cut_end < end {
            outside.push((cut_end, end));
        }
    }
    (inside, outside)
}

/// The page-aligned data ranges `[start, end)` of a shmem file of `size`
/// bytes (SEEK_DATA/SEEK_HOLE; a swapped-out page is data too).
fn page_ranges(file: &std::fs::File, size: u64, path: &str) -> Result<Vec<(u64, u64)>, CompoundError> {
    let limit = size.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for (start, end) in crate::files::unlinked::data_ranges(file, size, path)? {
        let (start, end) =
            (start / PAGE_SIZE * PAGE_SIZE, end.div_ceil(PAGE_SIZE).saturating_mul(PAGE_SIZE).min(limit));
        match ranges.last_mut() {
            Some((_, last_end)) if *last_end >= start => *last_end = (*last_end).max(end),
            _ => ranges.push((start, end)),
        }
    }
    Ok(ranges)
}

/// A shared memory object made again in the process being restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    /// A descriptor (close-on-exec) its mappings are mapped from.
    Descriptor(u64),
    /// A SysV segment to attach; `reused` when it existed already (its
    /// contents are its own: the image's are not written over them).
    SysV { id: u64, reused: bool },
}

/// Makes `object` again in the process being restored.
pub fn create_object(tracee: &mut dyn Tracee, object: &SharedObject) -> Result<Made, EngineError> {
    if let SharedKind::SysV { key, mode, removed, uid, gid, .. } = object.kind {
        if key != libc::IPC_PRIVATE
            && !removed
            && let Some(existing) = matching_segment(key, object.size, mode)
        {
            return Ok(Made::SysV { id: u64::try_from(existing.id).unwrap_or(0), reused: true });
        }
        let key = if removed { libc::IPC_PRIVATE } else { key };
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | (mode & 0o777).cast_signed();
        let id = tracee.syscall("shmget", libc::SYS_shmget, [arg(key), object.size, arg(flags), 0, 0, 0])?;
        set_segment_owner(tracee, id, uid, gid)?;
        return Ok(Made::SysV { id, reused: false });
    }
    create_file_object(tracee, object).map(Made::Descriptor)
}

/// `sizeof(struct shmid64_ds)` on x86-64, and the offsets of
/// `shm_perm.uid` and `shm_perm.gid` in it.
const SHMID_DS_SIZE: usize = 112;
const SHM_PERM_UID: usize = 4;
const SHM_PERM_GID: usize = 8;

/// Gives segment `id` the owner `uid`, `gid` (IPC_STAT, then IPC_SET of the
/// same record with the owner changed), unless it has it already.
fn set_segment_owner(tracee: &mut dyn Tracee, id: u64, uid: u32, gid: u32) -> Result<(), EngineError> {
    let mut scratch = tracee.scratch();
    let record = scratch.reserve(SHMID_DS_SIZE);
    scratch.commit(tracee)?;
    tracee.syscall("shmctl(IPC_STAT)", libc::SYS_shmctl, [id, arg(libc::IPC_STAT), record, 0, 0, 0])?;
    let mut owner = [0u8; 8];
    tracee.read_memory(record + SHM_PERM_UID as u64, &mut owner)?;
    let wanted = [uid.to_ne_bytes(), gid.to_ne_bytes()].concat();
    if owner[..] == wanted[..] {
        return Ok(());
    }
    debug_assert_eq!(SHM_PERM_GID, SHM_PERM_UID + 4);
    tracee.write_memory(record + SHM_PERM_UID as u64, &wanted)?;
    tracee.syscall("shmctl(IPC_SET)", libc::SYS_shmctl, [id, arg(libc::IPC_SET), record, 0, 0, 0]).map(drop)
}

/// The segment of `key` on this host, when it has `size` and `mode`.
fn matching_segment(key: i32, size: u64, mode: u32) -> Option<SysvSegment> {
    let segment =
        sysv_segments().ok()?.into_iter().find(|segment| segment.key == key && segment.mode & SHM_DEST == 0)?;
    (segment.size == size && segment.mode & 0o777 == mode & 0o777).then_some(segment)
}

fn create_file_object(tracee: &mut dyn Tracee, object: &SharedObject) -> Result<u64, EngineError> {
    match &object.kind {
        SharedKind::SysV { .. } => {
            Err(EngineError::Syscall { syscall: "shmget", args: Vec::new(), pid: tracee.pid(), errno: Errno::EINVAL })
        }
        SharedKind::Anonymous => {
            // The kernel's own shmem object for anonymous shared memory
            // (named `/dev/zero (deleted)` like the original), reached
            // through the temporary mapping's map_files link. Nothing of
            // the image is mapped yet, so wherever it lands is free.
            let protection = arg(libc::PROT_READ | libc::PROT_WRITE);
            let flags = arg(libc::MAP_SHARED | libc::MAP_ANONYMOUS);
            let address = tracee.syscall("mmap", libc::SYS_mmap, [0, object.size, protection, flags, arg(-1), 0])?;
            let mut scratch = tracee.scratch();
            let path = scratch
                .push_c_string(format!("/proc/self/map_files/{address:x}-{:x}", address + object.size).as_bytes());
            scratch.commit(tracee)?;
            let open_flags = arg(libc::O_RDWR | libc::O_CLOEXEC);
            let opened = tracee.syscall("openat", libc::SYS_openat, [arg(libc::AT_FDCWD), path, open_flags, 0, 0, 0]);
            tracee.syscall("munmap", libc::SYS_munmap, [address, object.size, 0, 0, 0, 0])?;
            match opened {
                // map_files needs CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN):
                // without it, a memfd of the same size is the same memory
                // (maps then names it `/memfd:dev/zero (deleted)`).
                Err(EngineError::Syscall { errno: Errno::EPERM | Errno::EACCES, .. }) => {
                    tracing::warn!(
                        inode = object.inode,
                        "no map_files access: anonymous shared memory made as a memfd"
                    );
                    let memfd = SharedObject { kind: SharedKind::Memfd { name: "dev/zero".into() }, ..object.clone() };
                    create_file_object(tracee, &memfd)
                }
                other => other,
            }
        }
        SharedKind::Memfd { name } => {
            let mut scratch = tracee.scratch();
            let name = scratch.push_c_string(name.as_bytes());
            scratch.commit(tracee)?;
            let fd =
                tracee.syscall("memfd_create", libc::SYS_memfd_create, [name, arg(libc::MFD_CLOEXEC), 0, 0, 0, 0])?;
            tracee.syscall("ftruncate", libc::SYS_ftruncate, [fd, object.size, 0, 0, 0, 0])?;
            Ok(fd)
        }
        SharedKind::MemfdContents { name, contents } => {
            let mut scratch = tracee.scratch();
            let name = scratch.push_c_string(name.as_bytes());
            scratch.commit(tracee)?;
            let fd =
                tracee.syscall("memfd_create", libc::SYS_memfd_create, [name, arg(libc::MFD_CLOEXEC), 0, 0, 0, 0])?;
            fill_from_crp(tracee, fd, contents)?;
            tracee.syscall("ftruncate", libc::SYS_ftruncate, [fd, object.size, 0, 0, 0, 0])?;
            Ok(fd)
        }
        SharedKind::DeletedFile { path, mode, contents } => {
            let directory = match path.rfind('/') {
                Some(0) | None => "/",
                Some(slash) => &path[..slash],
            };
            let mut scratch = tracee.scratch();
            let directory = scratch.push_c_string(directory.as_bytes());
            scratch.commit(tracee)?;
            let flags = arg(libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC);
            let fd = tracee.syscall(
                "openat",
                libc::SYS_openat,
                [arg(libc::AT_FDCWD), directory, flags, u64::from(*mode), 0, 0],
            )?;
            fill_from_crp(tracee, fd, contents)?;
            tracee.syscall("ftruncate", libc::SYS_ftruncate, [fd, object.size, 0, 0, 0, 0])?;
            tracee.syscall("fchmod", libc::SYS_fchmod, [fd, u64::from(*mode), 0, 0, 0, 0])?;
            Ok(fd)
        }
    }
}

/// Writes `contents` into descriptor `fd` of the tracee, from crp through
/// /proc/PID/fd/FD.
fn fill_from_crp(tracee: &mut dyn Tracee, fd: u64, contents: &Contents) -> Result<(), EngineError> {
    if contents.extents.is_empty() {
        return Ok(());
    }
    let file = std::fs::File::from(tracee.reopen_descriptor(fd, libc::O_WRONLY)?);
    for extent in &contents.extents {
        std::os::unix::fs::FileExt::write_all_at(&file, &extent.data, extent.offset).map_err(|error| {
            EngineError::Descriptor {
                operation: "fill the recreated deleted file of",
                pid: tracee.pid(),
                fd,
                errno: Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO)),
            }
        })?;
    }
    Ok(())
}

/// Attaches SysV segment `id` at `base` (as the original attachment:
/// read-only without VM_MAYWRITE), replacing what is there.
pub fn attach(tracee: &mut dyn Tracee, id: u64, base: u64, read_only: bool) -> Result<(), EngineError> {
    let flags = libc::SHM_REMAP | if read_only { libc::SHM_RDONLY } else { 0 };
    let attached = tracee.syscall("shmat", libc::SYS_shmat, [id, base, arg(flags), 0, 0, 0])?;
    if attached != base {
        return Err(EngineError::Syscall {
            syscall: "shmat",
            args: vec![id, base],
            pid: tracee.pid(),
            errno: Errno::EADDRNOTAVAIL,
        });
    }
    Ok(())
}

/// Removes (IPC_RMID) a recreated segment the original had removed.
pub fn remove_segment(tracee: &mut dyn Tracee, id: u64) -> Result<(), EngineError> {
    tracee.syscall("shmctl", libc::SYS_shmctl, [id, arg(libc::IPC_RMID), 0, 0, 0, 0]).map(drop)
}

/// Refuses, before the child exists, an object this host cannot give
/// back: a deleted file whose directory takes no O_TMPFILE, a SysV key
/// that exists here with another size or mode (crp neither attaches to it
/// nor replaces it).
pub fn check_host(shared: &SharedMemory) -> Result<(), CompoundError> {
    for object in &shared.objects {
        if let SharedKind::SysV { key, mode, removed, .. } = object.kind {
            if key == libc::IPC_PRIVATE || removed {
                continue;
            }
            let existing =
                sysv_segments()?.into_iter().find(|segment| segment.key == key && segment.mode & SHM_DEST == 0);
            if let Some(existing) = existing
                && matching_segment(key, object.size, mode).is_none()
            {
                return Err(Unsupported {
                    what: format!(
                        "a SysV segment of key {key:#x} exists on this host with {} bytes and mode {:#o}, not {} bytes \
                         and mode {mode:#o}: crp neither attaches to it nor replaces it",
                        existing.size,
                        existing.mode & 0o777,
                        object.size
                    ),
                    location: object.describe(),
                }
                .into());
            }
            continue;
        }
        let SharedKind::DeletedFile { path, .. } = &object.kind else { continue };
        let directory = match path.rfind('/') {
            Some(0) | None => "/",
            Some(slash) => &path[..slash],
        };
        let made = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o600)
            .open(directory);
        if let Err(error) = made {
            return Err(Unsupported {
                what: format!("recreating a mapped deleted file needs O_TMPFILE in its directory {directory}: {error}"),
                location: path.clone(),
            }
            .into());
        }
    }
    Ok(())
}

/// How a maps entry names what it maps, for [`super::Mapping`].
pub(super) fn entry_device(entry: &MapsEntry) -> u64 {
    device_number(entry.device)
}

/// What the dump would refuse about the process's memory objects, found
/// before the freeze: a private mapping of a memfd no descriptor holds, a
/// writable shared mapping of a memfd sealed with F_SEAL_FUTURE_WRITE, a
/// SysV segment locked with SHM_LOCK or only partly attached, a deleted
/// file no descriptor holds with more data than the contents limit.
pub fn preflight(pid: i32, maps: &[MapsEntry]) -> Result<Vec<Unsupported>, CompoundError> {
    let mut blockers = Vec::new();
    let held = held_objects(pid);
    let segments =
        if maps.iter().any(|entry| super::Mapping::from_maps(entry).is_sysv()) { sysv_segments()? } else { Vec::new() };
    let mut attachments: Vec<(u64, u64, u64)> = Vec::new();
    for entry in maps {
        let mapping = super::Mapping::from_maps(entry);
        let holder = held.iter().find(|(device, inode, _)| *device == mapping.object_device && *inode == entry.inode);
        if mapping.is_memfd() {
            match holder {
                Some((_, _, seals))
                    if entry.shared && entry.has_flag("mw") && seals & super::rules::F_SEAL_FUTURE_WRITE != 0 =>
                {
                    blockers.push(mapping.unsupported(super::rules::FUTURE_WRITE_SEALED));
                }
                _ => {}
            }
        } else if mapping.is_deleted_file() && holder.is_none() {
            let link = map_files_path(pid, entry.start, entry.end);
            if let Ok(file) = std::fs::File::open(&link) {
                let size = file.metadata().map_or(0, |metadata| metadata.size());
                let stored: u64 =
                    page_ranges(&file, size, &link)?.iter().map(|(start, end)| end.min(&size) - start).sum();
                if stored > contents_limit() {
                    blockers.push(mapping.unsupported(&format!(
                        "a mapped deleted file holding {stored} bytes of data, above the {} bytes a dump saves of one \
                         file (raise it with crp dump {CONTENTS_LIMIT_OPTION} BYTES)",
                        contents_limit()
                    )));
                }
            }
        } else if mapping.is_sysv() {
            if let Some(segment) = segments.iter().find(|segment| u64::try_from(segment.id).ok() == Some(entry.inode))
                && segment.mode & SHM_LOCKED != 0
            {
                blockers.push(mapping.unsupported("a SysV segment locked in memory (shmctl SHM_LOCK)"));
            }
            let base = entry.start.wrapping_sub(entry.offset);
            match attachments.iter_mut().find(|(id, known, _)| *id == entry.inode && *known == base) {
                Some((_, _, end)) if *end == entry.start => *end = entry.end,
                Some(_) => {}
                None => attachments.push((entry.inode, base, if entry.offset == 0 { entry.end } else { base })),
            }
        }
    }
    for (id, base, end) in attachments {
        let size = segments
            .iter()
            .find(|segment| u64::try_from(segment.id).ok() == Some(id))
            .map_or(0, |segment| segment.size);
        if end != base.saturating_add(size.div_ceil(PAGE_SIZE) * PAGE_SIZE) {
            blockers.push(Unsupported {
                what: "a SysV attachment only partly mapped (munmap'd or mremap'd)".into(),
                location: format!("[{base:#x}, {end:#x}) SysV segment id {id}"),
            });
        }
    }
    Ok(blockers)
}

/// `(device, inode, seals)` of every deleted file and memfd the process's
/// descriptors hold (seals 0 for a deleted file).
fn held_objects(pid: i32) -> Vec<(u64, u64, u32)> {
    let Ok(descriptors) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    descriptors
        .flatten()
        .filter(|descriptor| {
            std::fs::read_link(descriptor.path()).is_ok_and(|link| link.to_string_lossy().ends_with(" (deleted)"))
        })
        .filter_map(|descriptor| {
            let file = std::fs::File::open(descriptor.path()).ok()?;
            let metadata = file.metadata().ok()?;
            let seals =
                nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GET_SEALS).map_or(0, |seals| seals.cast_unsigned());
            Some((metadata.dev(), metadata.ino(), seals))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(start: u64, end: u64, object: u32, offset: u64) -> VmaRecord {
        VmaRecord { start, end, protection: 3, shared: true, flags: 0, backing: Backing::Shared { object, offset } }
    }

    #[test]
    fn a_made_segment_gets_its_owner_back() {
        use crp_ptrace::fake::FakeTracee;
        let object = SharedObject {
            kind: SharedKind::SysV { key: libc::IPC_PRIVATE, id: 3, mode: 0o600, removed: false, uid: 1000, gid: 100 },
            device: 0,
            inode: 3,
            size: 4096,
            outside: Vec::new(),
        };
        let set = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let seen = std::rc::Rc::clone(&set);
        let mut restored = FakeTracee::answering(move |call, memory| match call.number {
            libc::SYS_shmget => 7,
            libc::SYS_shmctl if call.args[1] == libc::IPC_SET as u64 => {
                seen.borrow_mut().push(memory.read(call.args[2] + SHM_PERM_UID as u64, 8));
                0
            }
            _ => 0,
        });
        assert_eq!(create_object(&mut restored, &object).unwrap(), Made::SysV { id: 7, reused: false });
        let owner = [1000u32.to_ne_bytes(), 100u32.to_ne_bytes()].concat();
        assert_eq!(*set.borrow(), [owner]);
        let stats = restored.calls_of(libc::SYS_shmctl);
        assert_eq!((stats[0].args[0], stats[0].args[1]), (7, libc::IPC_STAT as u64));
    }

    #[test]
    fn ranges_split_at_a_mapping() {
        let (inside, outside) = split_ranges(&[(0, 0x4000), (0x6000, 0x8000)], (0x1000, 0x7000));
        assert_eq!(inside, [(0x1000, 0x4000), (0x6000, 0x7000)]);
        assert_eq!(outside, [(0, 0x1000), (0x7000, 0x8000)]);
    }

    #[test]
    fn a_maps_line_gives_device_and_inode() {
        let line = "7f0000000000-7f0000001000 rw-s 00000000 00:01 4242                       /dev/zero (deleted)";
        assert_eq!(maps_line_key(line), Some((device_number((0, 1)), 4242)));
        assert_eq!(maps_line_key("7f0000000000-7f0000001000 rw-p 00000000 00:00 0"), None);
        let first_segment =
            "7f0000000000-7f0000001000 rw-s 00000000 00:01 0                          /SYSV00000000 (deleted)";
        assert_eq!(maps_line_key(first_segment), Some((device_number((0, 1)), 0)), "shmid 0 is a segment too");
    }

    #[test]
    fn references_to_missing_objects_are_refused() {
        let memory = SharedMemory {
            objects: vec![SharedObject {
                kind: SharedKind::Anonymous,
                device: 1,
                inode: 2,
                size: 0x2000,
                outside: vec![],
            }],
        };
        memory.check(&[shared(0x1000, 0x3000, 0, 0)], 0).unwrap();
        assert!(memory.check(&[shared(0x1000, 0x3000, 1, 0)], 0).unwrap_err().reason.contains("not there"));
        let mut private = shared(0x1000, 0x3000, 0, 0);
        private.shared = false;
        assert!(memory.check(&[private], 0).is_err());
        let odd = SharedMemory {
            objects: vec![SharedObject { kind: SharedKind::Anonymous, device: 1, inode: 2, size: 10, outside: vec![] }],
        };
        assert!(odd.check(&[], 0).is_err());
    }

    #[test]
    fn a_real_object_is_found_once_with_its_pages() {
        // SAFETY: an anonymous shared mapping of crp's test process, unmapped below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4 * 4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        // SAFETY: pages 1 and 3 are inside the mapping just made.
        unsafe {
            base.cast::<u8>().add(4096).write(1);
            base.cast::<u8>().add(3 * 4096).write(3);
        }
        // SAFETY: the second half of the mapping just made; splits it in two VMAs.
        assert_eq!(unsafe { libc::mprotect(base.cast::<u8>().add(2 * 4096).cast(), 2 * 4096, libc::PROT_READ) }, 0);
        let start = base as u64;
        let pid = std::process::id().cast_signed();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps.lines().find(|line| line.starts_with(&format!("{start:x}-"))).unwrap();
        let (device, inode) = maps_line_key(line).unwrap();
        let mut gathering = Gathering::new(pid);
        let first = gathering.object_of(start, start + 0x2000, device, inode, SharedKind::Anonymous).unwrap();
        let again = gathering.object_of(start + 0x2000, start + 0x4000, device, inode, SharedKind::Anonymous).unwrap();
        assert_eq!(first, again, "one object however many mappings");
        let memory = gathering.finish();
        assert_eq!(memory.objects[0].size, 0x4000);
        // Two records of the same object: pages are stored once, through the first.
        let vmas = [shared(start, start + 0x2000, 0, 0), shared(start + 0x2000, start + 0x4000, 0, 0x2000)];
        let runs = page_runs(pid, &vmas, &memory).unwrap();
        assert_eq!(runs[&start], [(start + 0x1000, 1)]);
        assert_eq!(runs[&(start + 0x2000)], [(start + 0x3000, 1)]);
        // Two mappings of the same pages: only the first stores them.
        let overlapping = [shared(start, start + 0x2000, 0, 0), shared(start + 0x2000, start + 0x4000, 0, 0)];
        let runs = page_runs(pid, &overlapping, &memory).unwrap();
        assert_eq!(runs[&start], [(start + 0x1000, 1)]);
        assert!(runs[&(start + 0x2000)].is_empty(), "the second mapping stores nothing");
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(base, 4 * 4096) };
    }
}
