//! VMAs: what each mapping is backed by, its protection and the kernel flags
//! that must be re-applied; mapping them again at restore.

use std::os::unix::fs::MetadataExt;

use bitflags::bitflags;
use crp_ptrace::procfs::MapsEntry;
use crp_ptrace::{EngineError, Tracee, TraceeExt, arg};

use crate::error::{CompoundError, Unsupported};
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
    }
}

const FLAG_MNEMONICS: &[(&str, VmaFlags)] = &[
    ("gd", VmaFlags::GROWS_DOWN),
    ("hg", VmaFlags::HUGEPAGE),
    ("nh", VmaFlags::NO_HUGEPAGE),
    ("dc", VmaFlags::DONT_FORK),
    ("wf", VmaFlags::WIPE_ON_FORK),
    ("dd", VmaFlags::DONT_DUMP),
    ("mw", VmaFlags::MAY_WRITE),
    ("nr", VmaFlags::NO_RESERVE),
];

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
            Backing::File(file) => {
                if file.offset % PAGE_SIZE != 0 || file.offset.checked_add(self.length()).is_none() {
                    return Err(Invalid::new(field(), format!("has file offset {:#x}", file.offset)));
                }
                check_path(field(), &file.path)
            }
        }
    }

    /// Whether the image may hold pages for this VMA: private memory only;
    /// a shared file mapping's contents are the file's.
    pub fn stores_pages(&self) -> bool {
        !self.shared
    }

    pub fn describe_backing(&self) -> String {
        match &self.backing {
            Backing::Anonymous { label } if label.is_empty() => "anonymous".to_owned(),
            Backing::Anonymous { label } => label.clone(),
            Backing::File(file) => format!("{}@{:#x}", file.path, file.offset),
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

/// Says why a mapping cannot be checkpointed yet, or `None` when it can.
/// Special kernel mappings are not VMAs crp restores and are skipped.
pub fn unsupported_mapping(entry: &MapsEntry) -> Option<Unsupported> {
    let location = format!("[{:#x}, {:#x}) {}", entry.start, entry.end, entry.name);
    let refuse = |what: &str| Some(Unsupported { what: what.to_owned(), location: location.clone() });
    let shared_anonymous = ["/dev/zero", "/memfd:", "/SYSV"].iter().any(|prefix| entry.name.starts_with(prefix))
        || !entry.name.starts_with('/');
    if entry.shared && shared_anonymous {
        return refuse("shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS, memfd or SysV shm)");
    }
    if entry.name.ends_with(" (deleted)") {
        return refuse("a mapping of a deleted file");
    }
    if entry.inode != 0 && !entry.name.starts_with('/') {
        return refuse("a mapping of an unnamed kernel object");
    }
    if entry.name.starts_with("/dev/") {
        return refuse("a device mapping");
    }
    if entry.has_flag("lo") {
        return refuse("mlock()ed memory");
    }
    None
}

/// Builds the record of one (supported, non-special) mapping.
pub fn capture_vma(entry: &MapsEntry) -> Result<VmaRecord, CompoundError> {
    let mut protection = 0;
    for (present, bit) in
        [(entry.readable, libc::PROT_READ), (entry.writable, libc::PROT_WRITE), (entry.executable, libc::PROT_EXEC)]
    {
        if present {
            protection |= bit.cast_unsigned();
        }
    }
    let mut flags = VmaFlags::empty();
    for (mnemonic, flag) in FLAG_MNEMONICS {
        if entry.has_flag(mnemonic) {
            flags |= *flag;
        }
    }
    let backing = if entry.is_file() {
        Backing::File(MappedFile::identify(&entry.name, entry.offset)?)
    } else {
        Backing::Anonymous { label: entry.name.clone() }
    };
    Ok(VmaRecord { start: entry.start, end: entry.end, protection, shared: entry.shared, flags: flags.bits(), backing })
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

/// Refuses when a mapped file is gone or differs in size or mtime from
/// when it was dumped: its clean pages were not stored.
pub fn check_mapped_file(file: &MappedFile) -> Result<(), CompoundError> {
    let metadata = std::fs::metadata(&file.path).map_err(CompoundError::io("stat mapped file", &file.path))?;
    let mtime_ns = metadata.mtime() * 1_000_000_000 + metadata.mtime_nsec();
    if metadata.size() != file.size {
        return Err(CompoundError::FileChanged {
            path: file.path.clone(),
            what: format!("size {} is now {}", file.size, metadata.size()),
        });
    }
    if mtime_ns != file.mtime_ns {
        return Err(CompoundError::FileChanged {
            path: file.path.clone(),
            what: format!("mtime {}ns is now {}ns", file.mtime_ns, mtime_ns),
        });
    }
    Ok(())
}

/// Maps `vma` at its address in the tracee. With `writable_for_fill` the
/// mapping starts writable so its pages can be filled; call [`finish_vma`]
/// afterwards.
pub fn map_vma(tracee: &mut dyn Tracee, vma: &VmaRecord, writable_for_fill: bool) -> Result<(), EngineError> {
    let mut protection = u64::from(vma.protection);
    if writable_for_fill {
        protection |= arg(libc::PROT_WRITE);
    }
    let mut map_flags = libc::MAP_FIXED | if vma.shared { libc::MAP_SHARED } else { libc::MAP_PRIVATE };
    if vma.flags().contains(VmaFlags::GROWS_DOWN) {
        map_flags |= libc::MAP_GROWSDOWN;
    }
    if vma.flags().contains(VmaFlags::NO_RESERVE) {
        map_flags |= libc::MAP_NORESERVE;
    }
    match &vma.backing {
        Backing::Anonymous { .. } => {
            map_flags |= libc::MAP_ANONYMOUS;
            let args = [vma.start, vma.length(), protection, arg(map_flags), arg(-1), 0];
            tracee.syscall("mmap", libc::SYS_mmap, args)?;
        }
        Backing::File(file) => {
            let needs_write = vma.shared && vma.flags().contains(VmaFlags::MAY_WRITE);
            let open_flags = if needs_write { libc::O_RDWR } else { libc::O_RDONLY } | libc::O_CLOEXEC;
            let mut scratch = tracee.scratch();
            let path_address = scratch.push_c_string(file.path.as_bytes());
            scratch.commit(tracee)?;
            let fd = tracee.syscall(
                "openat",
                libc::SYS_openat,
                [arg(libc::AT_FDCWD), path_address, arg(open_flags), 0, 0, 0],
            )?;
            let args = [vma.start, vma.length(), protection, arg(map_flags), fd, file.offset];
            let mapped = tracee.syscall("mmap", libc::SYS_mmap, args);
            tracee.syscall("close", libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
            mapped?;
        }
    }
    for (flag, advice) in [
        (VmaFlags::HUGEPAGE, libc::MADV_HUGEPAGE),
        (VmaFlags::NO_HUGEPAGE, libc::MADV_NOHUGEPAGE),
        (VmaFlags::DONT_FORK, libc::MADV_DONTFORK),
        (VmaFlags::WIPE_ON_FORK, libc::MADV_WIPEONFORK),
        (VmaFlags::DONT_DUMP, libc::MADV_DONTDUMP),
    ] {
        if vma.flags().contains(flag) {
            tracee.syscall("madvise", libc::SYS_madvise, [vma.start, vma.length(), arg(advice), 0, 0, 0])?;
        }
    }
    Ok(())
}

/// Sets the final protection of a VMA mapped with [`map_vma`].
pub fn finish_vma(tracee: &mut dyn Tracee, vma: &VmaRecord, was_writable_for_fill: bool) -> Result<(), EngineError> {
    if was_writable_for_fill && vma.protection & libc::PROT_WRITE.cast_unsigned() == 0 {
        let args = [vma.start, vma.length(), u64::from(vma.protection), 0, 0, 0];
        tracee.syscall("mprotect", libc::SYS_mprotect, args)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, shared: bool, inode: u64) -> MapsEntry {
        MapsEntry {
            start: 0x1000,
            end: 0x3000,
            readable: true,
            writable: true,
            executable: false,
            shared,
            offset: 0,
            device: (0, 0),
            inode,
            name: name.to_owned(),
            vm_flags: vec!["rd".into(), "wr".into(), "gd".into()],
            populated_kb: Some(8),
        }
    }

    #[test]
    fn unsupported_mappings_are_named() {
        assert!(unsupported_mapping(&entry("", false, 0)).is_none());
        assert!(unsupported_mapping(&entry("[heap]", false, 0)).is_none());
        let shared_anonymous = unsupported_mapping(&entry("/dev/zero (deleted)", true, 5)).unwrap();
        assert!(shared_anonymous.what.contains("shared anonymous"));
        let deleted = unsupported_mapping(&entry("/tmp/gone (deleted)", false, 5)).unwrap();
        assert!(deleted.what.contains("deleted"));
        let memfd = unsupported_mapping(&entry("/memfd:x (deleted)", true, 5)).unwrap();
        assert!(memfd.location.contains("0x1000"));
        assert!(unsupported_mapping(&entry("", true, 0)).unwrap().what.contains("shared anonymous"));
    }

    #[test]
    fn anonymous_capture_keeps_flags_and_protection() {
        let record = capture_vma(&entry("[stack]", false, 0)).unwrap();
        assert_eq!(record.protection, (libc::PROT_READ | libc::PROT_WRITE) as u32);
        assert!(record.flags().contains(VmaFlags::GROWS_DOWN));
        assert_eq!(record.protection_string(), "rw-p");
        assert_eq!(record.describe_backing(), "[stack]");
    }
}
