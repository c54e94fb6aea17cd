//! VMAs: what each mapping is backed by, its protection and the kernel flags
//! that must be re-applied. One set of rules serves both back ends
//! ([`rules`]: what is refused, how a mapping becomes a record, how its
//! file is opened again); [`kmod`] translates the module's records, and
//! [`map`] maps a record again at restore.

pub mod cow;
mod kmod;
pub mod locking;
mod map;
mod memory;
mod rules;
pub mod shared;

use std::os::unix::fs::MetadataExt;

use bitflags::bitflags;

pub use locking::FutureLocking;

pub use map::{finish_vma, install_guards, map_vma, map_vma_from, open_mapped_file};
pub use memory::{Memory, Populated};
pub use rules::{DescriptorObjects, FileAccess, Mapping, label_anonymous};
pub use shared::{SharedKind, SharedMemory, SharedObject};

use crate::error::CompoundError;
use crate::valid::{Invalid, check_path};

const PAGE_SIZE: u64 = 4096;

bitflags! {
    /// Kernel VMA flags crp re-applies (from smaps `VmFlags`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct VmaFlags: u32 {
        const GROWS_DOWN = 1 << 0;
        const HUGEPAGE = 1 << 1;
        const NO_HUGEPAGE = 1 << 2;
        const DONT_FORK = 1 << 3;
        const WIPE_ON_FORK = 1 << 4;
        const DONT_DUMP = 1 << 5;
        const MAY_WRITE = 1 << 6;
        const NO_RESERVE = 1 << 7;
        /// `VM_LOCKED` (mlock, mlock2, mlockall MCL_CURRENT): locked again
        /// at restore, after its pages are in.
        const LOCKED = 1 << 8;
        /// `VM_LOCKONFAULT` (mlock2 MLOCK_ONFAULT, mlockall MCL_ONFAULT).
        const LOCK_ON_FAULT = 1 << 9;
        /// `VM_MERGEABLE` (MADV_MERGEABLE, KSM).
        const MERGEABLE = 1 << 10;
        /// `VM_DROPPABLE` (MAP_DROPPABLE).
        const DROPPABLE = 1 << 11;
    }
}

/// A guard region (MADV_GUARD_INSTALL): touching it faults with SIGSEGV.
/// Installed again once the memory around it is in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct GuardRegion {
    pub start: u64,
    pub end: u64,
}

/// Refuses guard regions that are empty, unaligned or not inside one VMA.
pub fn check_guards(vmas: &[VmaRecord], guards: &[GuardRegion]) -> Result<(), Invalid> {
    for (index, guard) in guards.iter().enumerate() {
        let inside = vmas.iter().any(|vma| vma.start <= guard.start && guard.end <= vma.end);
        if guard.start >= guard.end || guard.start % PAGE_SIZE != 0 || guard.end % PAGE_SIZE != 0 || !inside {
            return Err(Invalid::new(
                format!("guard region {index} [{:#x}, {:#x})", guard.start, guard.end),
                "is empty, unaligned or not inside one VMA",
            ));
        }
    }
    Ok(())
}

/// The file behind a file mapping, with what identifies its contents.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MappedFile {
    pub path: String,
    /// Offset of the mapping's first byte in the file.
    pub offset: u64,
    pub size: u64,
    pub mtime_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Backing {
    /// Private anonymous memory; `label` is `[heap]`, `[stack]` or empty.
    Anonymous {
        label: String,
    },
    File(MappedFile),
    /// A shared mapping of object `object` of [`SharedMemory::objects`]
    /// (anonymous shared memory, or a memfd only mappings hold), from byte
    /// `offset` of it.
    Shared {
        object: u32,
        offset: u64,
    },
    /// A mapping (shared or private) of object `object` of the descriptor
    /// table's objects (a memfd or deleted file a descriptor holds), from
    /// byte `offset` of it: mapped again from that object once the
    /// descriptors are restored.
    Descriptor {
        object: u32,
        offset: u64,
    },
}

/// One VMA of the checkpointed process.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct VmaRecord {
    pub start: u64,
    pub end: u64,
    /// PROT_* bits.
    pub protection: u32,
    pub shared: bool,
    /// [`VmaFlags`] bits.
    pub flags: u32,
    pub backing: Backing,
}

impl VmaRecord {
    pub fn flags(&self) -> VmaFlags {
        VmaFlags::from_bits_retain(self.flags)
    }

    /// Saturating: zero for a reversed record (refused by the layout
    /// checks before anything uses it).
    pub fn length(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Refuses what `mmap` would refuse or map differently: protection or
    /// flag bits crp does not know, a shared anonymous mapping (its
    /// contents are nowhere), a file offset that is unaligned or runs past
    /// 2^64, a path the kernel would misread. The layout itself (alignment,
    /// order, overlaps) is checked with the whole address space.
    pub fn check(&self, index: usize) -> Result<(), Invalid> {
        let field = || format!("VMA {index} [{:#x}, {:#x})", self.start, self.end);
        let known_protection = (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC).cast_unsigned();
        if self.protection & !known_protection != 0 {
            return Err(Invalid::new(field(), format!("has unknown protection bits {:#x}", self.protection)));
        }
        if VmaFlags::from_bits(self.flags).is_none() {
            return Err(Invalid::new(field(), format!("has unknown flags {:#x}", self.flags)));
        }
        match &self.backing {
            Backing::Anonymous { .. } if self.shared => Err(Invalid::new(field(), "is shared anonymous memory")),
            Backing::Anonymous { .. } => Ok(()),
            Backing::Shared { offset, .. } | Backing::Descriptor { offset, .. } => {
                if offset % PAGE_SIZE != 0 || offset.checked_add(self.length()).is_none_or(|end| end > i64::MAX as u64)
                {
                    return Err(Invalid::new(field(), format!("has object offset {offset:#x}")));
                }
                Ok(())
            }
            Backing::File(file) => {
                if file.offset % PAGE_SIZE != 0 || file.offset.checked_add(self.length()).is_none() {
                    return Err(Invalid::new(field(), format!("has file offset {:#x}", file.offset)));
                }
                check_path(field(), &file.path)
            }
        }
    }

    /// Whether the image may hold pages for this VMA: private memory, and
    /// the pages of a shared memory object (each stored once, through the
    /// first mapping of it that covers it); a shared file mapping's or
    /// descriptor object's contents are the file's.
    pub fn stores_pages(&self) -> bool {
        !self.shared || matches!(self.backing, Backing::Shared { .. })
    }

    /// Bytes of this VMA mlock() keeps in memory.
    pub fn locked_bytes(&self) -> u64 {
        if self.flags().contains(VmaFlags::LOCKED) { self.length() } else { 0 }
    }

    /// Mapped only after the descriptors (from a descriptor's object).
    pub fn is_descriptor_mapping(&self) -> bool {
        matches!(self.backing, Backing::Descriptor { .. })
    }

    pub fn describe_backing(&self) -> String {
        match &self.backing {
            Backing::Anonymous { label } if label.is_empty() => "anonymous".to_owned(),
            Backing::Anonymous { label } => label.clone(),
            Backing::File(file) => format!("{}@{:#x}", file.path, file.offset),
            Backing::Shared { object, offset } => format!("shared memory #{object}@{offset:#x}"),
            Backing::Descriptor { object, offset } => format!("descriptor object #{object}@{offset:#x}"),
        }
    }

    pub fn protection_string(&self) -> String {
        let bit = |mask: i32, letter: char| {
            if self.protection & mask.cast_unsigned() != 0 { letter } else { '-' }
        };
        [
            bit(libc::PROT_READ, 'r'),
            bit(libc::PROT_WRITE, 'w'),
            bit(libc::PROT_EXEC, 'x'),
            if self.shared { 's' } else { 'p' },
        ]
        .iter()
        .collect()
    }
}

impl MappedFile {
    /// The file at `path` as it is now (size and mtime identify its contents).
    pub fn identify(path: &str, offset: u64) -> Result<Self, CompoundError> {
        let metadata = std::fs::metadata(path).map_err(CompoundError::io("stat mapped file", path))?;
        Ok(Self {
            path: path.to_owned(),
            offset,
            size: metadata.size(),
            mtime_ns: metadata.mtime() * 1_000_000_000 + metadata.mtime_nsec(),
        })
    }
}

/// How a mapped or open file differs from when it was dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    pub path: String,
    /// What changed, such as `size 10 is now 12`.
    pub what: String,
    /// The file no longer covers a mapping of it (it shrank below the
    /// mapping's end): the restored process would get SIGBUS there, so no
    /// flag accepts it.
    pub fatal: bool,
    /// It only grew (as a file others append to does).
    pub grew: bool,
}

impl From<FileChange> for CompoundError {
    fn from(change: FileChange) -> Self {
        if change.fatal {
            return CompoundError::FileShrunk { path: change.path, what: change.what };
        }
        CompoundError::FileChanged { path: change.path, what: change.what }
    }
}

/// What changed in a file since it was dumped with `size` and `mtime_ns`
/// (`covered`: the file offset a mapping of it reaches up to, 0 for an open
/// file), or `None` when nothing did.
pub fn file_change(path: &str, size: u64, mtime_ns: i64, covered: u64) -> Result<Option<FileChange>, CompoundError> {
    let metadata = std::fs::metadata(path).map_err(CompoundError::io("stat file", path))?;
    let now_mtime_ns = metadata.mtime() * 1_000_000_000 + metadata.mtime_nsec();
    let page = PAGE_SIZE;
    let fatal = metadata.size().div_ceil(page).saturating_mul(page) < covered;
    let what = if metadata.size() != size {
        format!("size {size} is now {}", metadata.size())
    } else if now_mtime_ns != mtime_ns {
        format!("mtime {mtime_ns}ns is now {now_mtime_ns}ns")
    } else {
        return Ok(None);
    };
    let grew = metadata.size() > size;
    Ok(Some(FileChange { path: path.to_owned(), what, fatal, grew }))
}

/// What changed in the file of a mapping of `length` bytes since the dump:
/// its clean pages were not stored, they are read from the file again.
pub fn mapped_file_change(file: &MappedFile, length: u64) -> Result<Option<FileChange>, CompoundError> {
    file_change(&file.path, file.size, file.mtime_ns, file.offset.saturating_add(length))
}
