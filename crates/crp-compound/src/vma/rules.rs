//! The rules both back ends apply to the mappings they read, written once:
//! what crp refuses to checkpoint, how a mapping becomes a [`VmaRecord`],
//! which anonymous VMA is the heap or the stack, and how a mapped file is
//! opened again at restore. The userspace back end describes a mapping from
//! /proc/PID/smaps ([`Mapping::from_maps`]), the kmod back end from the
//! module's record (`Mapping::from_abi`, in the `kmod` module).

use crp_kmod_abi::{
    CRP_VMA_DONTDUMP, CRP_VMA_DONTFORK, CRP_VMA_EXEC, CRP_VMA_GROWSDOWN, CRP_VMA_HUGEPAGE, CRP_VMA_MAYWRITE,
    CRP_VMA_NOHUGEPAGE, CRP_VMA_NORESERVE, CRP_VMA_READ, CRP_VMA_WIPEONFORK, CRP_VMA_WRITE,
};
use crp_ptrace::procfs::MapsEntry;

use super::{Backing, MappedFile, VmaFlags, VmaRecord};
use crate::error::{CompoundError, Unsupported};
use crate::mm::MmFields;

/// Every VMA flag crp re-applies: its smaps `VmFlags` mnemonic and its
/// `CRP_VMA_*` bit in the kmod ABI.
pub(super) const FLAGS: [(VmaFlags, &str, u64); 8] = [
    (VmaFlags::GROWS_DOWN, "gd", CRP_VMA_GROWSDOWN),
    (VmaFlags::HUGEPAGE, "hg", CRP_VMA_HUGEPAGE),
    (VmaFlags::NO_HUGEPAGE, "nh", CRP_VMA_NOHUGEPAGE),
    (VmaFlags::DONT_FORK, "dc", CRP_VMA_DONTFORK),
    (VmaFlags::WIPE_ON_FORK, "wf", CRP_VMA_WIPEONFORK),
    (VmaFlags::DONT_DUMP, "dd", CRP_VMA_DONTDUMP),
    (VmaFlags::MAY_WRITE, "mw", CRP_VMA_MAYWRITE),
    (VmaFlags::NO_RESERVE, "nr", CRP_VMA_NORESERVE),
];

/// Every protection bit with its `CRP_VMA_*` bit.
pub(super) const PROTECTION: [(i32, u64); 3] =
    [(libc::PROT_READ, CRP_VMA_READ), (libc::PROT_WRITE, CRP_VMA_WRITE), (libc::PROT_EXEC, CRP_VMA_EXEC)];

/// Names of shared memory that has no file behind it crp could reopen.
const SHARED_ANONYMOUS_PREFIXES: [&str; 3] = ["/dev/zero", "/memfd:", "/SYSV"];

/// One mapping as a back end read it, before crp decides whether it can
/// restore it. Special kernel mappings (`[vdso]`...) are not described:
/// they are not VMAs crp restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping<'a> {
    pub start: u64,
    pub end: u64,
    /// The path (or pseudo-name) the kernel shows; empty for anonymous memory.
    pub name: &'a str,
    /// Backed by an inode, whatever the name says.
    pub has_inode: bool,
    pub shared: bool,
    /// PROT_* bits.
    pub protection: u32,
    pub flags: VmaFlags,
    /// Byte offset of `start` in the file.
    pub file_offset: u64,
    /// `VM_LOCKED` (mlock).
    pub locked: bool,
    /// Device memory (`VM_IO`, `VM_PFNMAP`).
    pub device: bool,
}

impl<'a> Mapping<'a> {
    /// A mapping as /proc/PID/smaps shows it.
    pub fn from_maps(entry: &'a MapsEntry) -> Self {
        let mut protection = 0;
        for (present, (bit, _)) in [entry.readable, entry.writable, entry.executable].into_iter().zip(PROTECTION) {
            if present {
                protection |= bit.cast_unsigned();
            }
        }
        let mut flags = VmaFlags::empty();
        for (flag, mnemonic, _) in FLAGS {
            if entry.has_flag(mnemonic) {
                flags |= flag;
            }
        }
        Self {
            start: entry.start,
            end: entry.end,
            name: &entry.name,
            has_inode: entry.inode != 0,
            shared: entry.shared,
            protection,
            flags,
            file_offset: entry.offset,
            locked: entry.has_flag("lo"),
            device: entry.has_flag("io") || entry.has_flag("pf"),
        }
    }

    /// Whether this is a mapping of a named file crp can open again.
    fn is_file(&self) -> bool {
        self.has_inode && self.name.starts_with('/')
    }

    /// Says why the mapping cannot be checkpointed yet, or `None` when it can.
    pub fn refusal(&self) -> Option<Unsupported> {
        let what = if self.shared
            && (!self.name.starts_with('/') || SHARED_ANONYMOUS_PREFIXES.iter().any(|p| self.name.starts_with(p)))
        {
            "shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS, memfd or SysV shm)"
        } else if self.name.ends_with(" (deleted)") {
            "a mapping of a deleted file"
        } else if self.has_inode && !self.name.starts_with('/') {
            "a mapping of an unnamed kernel object"
        } else if self.device || self.name.starts_with("/dev/") {
            "a device mapping"
        } else if self.locked {
            "mlock()ed memory"
        } else {
            return None;
        };
        let location = format!("[{:#x}, {:#x}) {}", self.start, self.end, self.name);
        Some(Unsupported { what: what.to_owned(), location })
    }

    /// The image's record of the mapping; what [`Mapping::refusal`] names
    /// is refused. Anonymous memory is unlabelled until
    /// [`label_anonymous`] runs.
    pub fn record(&self) -> Result<VmaRecord, CompoundError> {
        if let Some(refusal) = self.refusal() {
            return Err(refusal.into());
        }
        let backing = if self.is_file() {
            Backing::File(MappedFile::identify(self.name, self.file_offset)?)
        } else {
            Backing::Anonymous { label: String::new() }
        };
        Ok(VmaRecord {
            start: self.start,
            end: self.end,
            protection: self.protection,
            shared: self.shared,
            flags: self.flags.bits(),
            backing,
        })
    }
}

/// Labels the anonymous VMAs `[heap]` and `[stack]` the way
/// /proc/PID/maps does (`vma_is_initial_heap`, `vma_is_initial_stack`).
pub fn label_anonymous(vmas: &mut [VmaRecord], mm: &MmFields) {
    for vma in vmas {
        let Backing::Anonymous { label } = &mut vma.backing else { continue };
        let name = if vma.start < mm.brk && vma.end > mm.start_brk {
            "[heap]"
        } else if vma.start <= mm.start_stack && vma.end >= mm.start_stack {
            "[stack]"
        } else {
            ""
        };
        name.clone_into(label);
    }
}

/// How a file mapping's file is opened to map it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileAccess<'a> {
    pub path: &'a str,
    /// Read-write: the mapping is shared and may be written, and the kernel
    /// refuses `PROT_WRITE` (now or by a later mprotect) on a shared
    /// mapping of a read-only descriptor.
    pub writable: bool,
}

impl<'a> FileAccess<'a> {
    /// How `file`, mapped by `vma`, is opened.
    pub fn new(vma: &VmaRecord, file: &'a MappedFile) -> Self {
        Self { path: &file.path, writable: vma.shared && vma.flags().contains(VmaFlags::MAY_WRITE) }
    }

    /// The `openat` flags.
    pub fn open_flags(&self) -> i32 {
        (if self.writable { libc::O_RDWR } else { libc::O_RDONLY }) | libc::O_CLOEXEC
    }
}

impl VmaRecord {
    /// The file to open to map this VMA again; `None` for anonymous memory.
    pub fn file_access(&self) -> Option<FileAccess<'_>> {
        match &self.backing {
            Backing::Anonymous { .. } => None,
            Backing::File(file) => Some(FileAccess::new(self, file)),
        }
    }
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

    fn refusal(entry: &MapsEntry) -> Option<Unsupported> {
        Mapping::from_maps(entry).refusal()
    }

    #[test]
    fn unsupported_mappings_are_named() {
        assert!(refusal(&entry("", false, 0)).is_none());
        assert!(refusal(&entry("[heap]", false, 0)).is_none());
        let shared_anonymous = refusal(&entry("/dev/zero (deleted)", true, 5)).unwrap();
        assert!(shared_anonymous.what.contains("shared anonymous"));
        let deleted = refusal(&entry("/tmp/gone (deleted)", false, 5)).unwrap();
        assert!(deleted.what.contains("deleted"));
        let memfd = refusal(&entry("/memfd:x (deleted)", true, 5)).unwrap();
        assert!(memfd.location.contains("0x1000"));
        assert!(refusal(&entry("", true, 0)).unwrap().what.contains("shared anonymous"));
        assert!(refusal(&entry("anon_inode:[perf_event]", false, 7)).unwrap().what.contains("unnamed kernel object"));
        let mut locked = entry("", false, 0);
        locked.vm_flags.push("lo".into());
        assert!(refusal(&locked).unwrap().what.contains("mlock"));
        let mut device = entry("", false, 0);
        device.vm_flags.push("io".into());
        assert!(refusal(&device).unwrap().what.contains("device mapping"));
    }

    #[test]
    fn anonymous_capture_keeps_flags_and_protection() {
        let record = Mapping::from_maps(&entry("[stack]", false, 0)).record().unwrap();
        assert_eq!(record.protection, (libc::PROT_READ | libc::PROT_WRITE) as u32);
        assert!(record.flags().contains(VmaFlags::GROWS_DOWN));
        assert_eq!(record.protection_string(), "rw-p");
        assert_eq!(record.describe_backing(), "anonymous", "labelled with the mm fields, not the name");
    }

    #[test]
    fn heap_and_stack_are_labelled_as_proc_labels_them() {
        let anonymous = |start, end| VmaRecord {
            start,
            end,
            protection: 3,
            shared: false,
            flags: 0,
            backing: Backing::Anonymous { label: "stale".into() },
        };
        let mut vmas = [
            anonymous(0x5f_f000, 0x60_0000),
            anonymous(0x60_0000, 0x62_0000),
            anonymous(0x7ffe_0000_0000, 0x7ffe_0000_2000),
        ];
        let mm =
            MmFields { start_brk: 0x60_0000, brk: 0x60_1000, start_stack: 0x7ffe_0000_1000, ..MmFields::default() };
        label_anonymous(&mut vmas, &mm);
        let labels: Vec<String> = vmas.iter().map(VmaRecord::describe_backing).collect();
        assert_eq!(labels, ["anonymous", "[heap]", "[stack]"], "a VMA ending at start_brk is not the heap");
    }

    #[test]
    fn a_shared_writable_file_mapping_is_opened_read_write() {
        let file = |shared, flags: VmaFlags| VmaRecord {
            start: 0x1000,
            end: 0x2000,
            protection: 1,
            shared,
            flags: flags.bits(),
            backing: Backing::File(MappedFile { path: "/f".into(), offset: 0, size: 1, mtime_ns: 0 }),
        };
        let flags = |vma: VmaRecord| vma.file_access().unwrap().open_flags() & libc::O_ACCMODE;
        assert_eq!(flags(file(true, VmaFlags::MAY_WRITE)), libc::O_RDWR);
        assert_eq!(flags(file(true, VmaFlags::empty())), libc::O_RDONLY);
        assert_eq!(flags(file(false, VmaFlags::MAY_WRITE)), libc::O_RDONLY);
    }
}
