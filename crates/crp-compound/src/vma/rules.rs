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

use super::shared::{Gathering, SharedKind, entry_device, is_anonymous_shared_name};
use super::{Backing, MappedFile, VmaFlags, VmaRecord};
use crate::error::{CompoundError, Unsupported};
use crate::files::FileObject;
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

/// `F_SEAL_FUTURE_WRITE`: no new writable shared mapping.
pub(super) const F_SEAL_FUTURE_WRITE: u32 = 0x10;
pub(super) const FUTURE_WRITE_SEALED: &str = "a writable shared mapping of a memfd sealed with F_SEAL_FUTURE_WRITE \
                                              (the seal refuses the new mapping the restore would make)";

/// What a mapping without a name crp could reopen maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemoryObject<'a> {
    /// `MAP_SHARED|MAP_ANONYMOUS` or `/dev/zero` shared (`/dev/zero (deleted)`).
    AnonymousShared,
    /// `/memfd:NAME (deleted)`.
    Memfd { name: &'a str },
    /// `PATH (deleted)`.
    Deleted,
    /// `/SYSVKKKKKKKK (deleted)`: a SysV segment, its id the inode.
    SysV,
}

/// The objects of the descriptor table (deleted files and memfds) a
/// mapping may map: such a mapping becomes [`Backing::Descriptor`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DescriptorObjects<'a>(pub &'a [FileObject]);

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
    /// `VM_HUGETLB` (hugetlbfs, MAP_HUGETLB, MFD_HUGETLB).
    pub hugetlb: bool,
    /// `VM_SEALED` (mseal).
    pub sealed: bool,
    /// Registered with a userfaultfd for missing or minor faults
    /// (`VM_UFFD_MISSING`, `_MINOR`). Write protection (`VM_UFFD_WP`,
    /// smaps `uw`) is not refused here: it is crp's change tracking when the
    /// process holds crp's descriptor, which the caller checks.
    pub userfaultfd: bool,
    /// `VM_MAYBE_GUARD`: has had guard regions (MADV_GUARD_INSTALL).
    pub maybe_guard: bool,
    /// `st_dev` and `st_ino` of what is mapped (0 when unknown).
    pub object_device: u64,
    pub inode: u64,
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
        // Not in FLAGS: the kmod ABI has no lock-on-fault bit, and its back
        // end refuses locked memory (`locked`).
        for (flag, mnemonic) in [
            (VmaFlags::LOCKED, "lo"),
            (VmaFlags::LOCK_ON_FAULT, "lf"),
            (VmaFlags::MERGEABLE, "mg"),
            (VmaFlags::DROPPABLE, "dp"),
        ] {
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
            hugetlb: entry.has_flag("ht"),
            sealed: entry.has_flag("sl"),
            userfaultfd: entry.has_flag("um") || entry.has_flag("ui"),
            maybe_guard: entry.has_flag("gu"),
            object_device: entry_device(entry),
            inode: entry.inode,
        }
    }

    /// Whether this is a mapping of a memfd (`/memfd:NAME (deleted)`).
    pub fn is_memfd(&self) -> bool {
        matches!(self.memory_object(), Some(MemoryObject::Memfd { .. }))
    }

    /// Whether this is a mapping of a SysV segment.
    pub fn is_sysv(&self) -> bool {
        matches!(self.memory_object(), Some(MemoryObject::SysV))
    }

    /// Whether this is a mapping of a deleted file.
    pub fn is_deleted_file(&self) -> bool {
        matches!(self.memory_object(), Some(MemoryObject::Deleted))
    }

    /// The memory object this mapping maps, when it has no name crp could
    /// reopen: anonymous shared memory, a memfd or a deleted file.
    fn memory_object(&self) -> Option<MemoryObject<'a>> {
        if self.shared && self.name.starts_with("/SYSV") && self.name.ends_with(" (deleted)") {
            return Some(MemoryObject::SysV);
        }
        if !self.has_inode {
            return None;
        }
        if self.shared && is_anonymous_shared_name(self.name) {
            return Some(MemoryObject::AnonymousShared);
        }
        if let Some(name) = self.name.strip_prefix("/memfd:").and_then(|rest| rest.strip_suffix(" (deleted)")) {
            return Some(MemoryObject::Memfd { name });
        }
        if self.name.starts_with('/') && !self.name.starts_with("/SYSV") && self.name.ends_with(" (deleted)") {
            return Some(MemoryObject::Deleted);
        }
        None
    }

    /// Whether this is a mapping of a named file crp can open again.
    fn is_file(&self) -> bool {
        self.has_inode && self.name.starts_with('/')
    }

    /// Says why the mapping cannot be checkpointed yet, or `None` when it
    /// can (by the userspace back end; see [`Mapping::kmod_refusal`]).
    pub fn refusal(&self) -> Option<Unsupported> {
        let what = if self.hugetlb {
            "a hugetlbfs mapping (MAP_HUGETLB, MFD_HUGETLB or a hugetlbfs file)"
        } else if self.sealed {
            "a sealed mapping (mseal): the restore could not map, fill and protect it, nor seal it again in order"
        } else if self.userfaultfd {
            "a range registered with a userfaultfd (its faults are handled by a descriptor crp does not restore)"
        } else if self.flags.contains(VmaFlags::DROPPABLE) && (self.has_inode || self.shared) {
            "a droppable mapping of a file"
        } else if self.memory_object().is_some() && !self.device {
            return None;
        } else if self.shared && self.name.is_empty() {
            "shared anonymous memory whose object crp cannot identify"
        } else if self.shared && !self.name.starts_with('/') {
            "a shared mapping of an unnamed kernel object"
        } else if self.name.ends_with(" (deleted)") {
            "a mapping of a deleted file"
        } else if self.has_inode && !self.name.starts_with('/') {
            "a mapping of an unnamed kernel object"
        } else if self.device || self.name.starts_with("/dev/") {
            "a device mapping"
        } else {
            return None;
        };
        Some(self.unsupported(what))
    }

    pub(super) fn unsupported(&self, what: &str) -> Unsupported {
        let location = format!("[{:#x}, {:#x}) {}", self.start, self.end, self.name);
        Unsupported { what: what.to_owned(), location }
    }

    /// [`Mapping::refusal`] for the kmod back end, whose module maps only
    /// private anonymous memory and named files: shared memory objects and
    /// mappings of memfds and deleted files are refused too, before
    /// anything is touched.
    pub fn kmod_refusal(&self) -> Option<Unsupported> {
        if self.refusal().is_none() {
            let what = if self.locked {
                Some("mlock()ed memory")
            } else if self.maybe_guard {
                Some("a mapping with guard regions (MADV_GUARD_INSTALL)")
            } else if self.flags.intersects(VmaFlags::MERGEABLE | VmaFlags::DROPPABLE) {
                Some("a KSM-mergeable (MADV_MERGEABLE) or droppable (MAP_DROPPABLE) mapping")
            } else {
                None
            };
            if let Some(what) = what {
                return Some(self.unsupported(&format!(
                    "{what}, with the kmod back end (its module does not set it again; --backend userspace does)"
                )));
            }
        }
        self.refusal().or_else(|| {
            self.memory_object().map(|_| {
                self.unsupported(
                    "shared anonymous memory or a mapping of a memfd or deleted file, with the kmod back end (its \
                     module maps only private anonymous memory and named files; --backend userspace restores it)",
                )
            })
        })
    }

    /// The image's record of the mapping as the kmod back end takes it:
    /// what [`Mapping::kmod_refusal`] names is refused. Anonymous memory
    /// is unlabelled until [`label_anonymous`] runs.
    pub fn record(&self) -> Result<VmaRecord, CompoundError> {
        if let Some(refusal) = self.kmod_refusal() {
            return Err(refusal.into());
        }
        self.plain_record()
    }

    /// The image's record of the mapping, its memory object (if any)
    /// recorded in `gathering` or found among the descriptor table's
    /// `objects`; what [`Mapping::refusal`] names is refused.
    pub fn record_with(
        &self,
        gathering: &mut Gathering,
        objects: DescriptorObjects<'_>,
    ) -> Result<VmaRecord, CompoundError> {
        if let Some(refusal) = self.refusal() {
            return Err(refusal.into());
        }
        let Some(object) = self.memory_object() else { return self.plain_record() };
        let held = objects.0.iter().position(|candidate| {
            candidate.inode() == self.inode
                && matches!(
                    (object, candidate),
                    (MemoryObject::Memfd { .. }, FileObject::Memfd { .. })
                        | (MemoryObject::Deleted, FileObject::Deleted { .. } | FileObject::Linked { .. })
                )
        });
        let backing = match (object, held) {
            (MemoryObject::Memfd { .. } | MemoryObject::Deleted, Some(index)) => {
                if let FileObject::Memfd { seals, .. } = &objects.0[index]
                    && seals & F_SEAL_FUTURE_WRITE != 0
                    && self.shared
                    && self.flags.contains(VmaFlags::MAY_WRITE)
                {
                    return Err(self.unsupported(FUTURE_WRITE_SEALED).into());
                }
                Backing::Descriptor { object: u32::try_from(index).unwrap_or(u32::MAX), offset: self.file_offset }
            }
            (MemoryObject::AnonymousShared, _) => {
                let object =
                    gathering.object_of(self.start, self.end, self.object_device, self.inode, SharedKind::Anonymous)?;
                Backing::Shared { object, offset: self.file_offset }
            }
            (MemoryObject::Memfd { name }, None) if self.shared => {
                let kind = SharedKind::Memfd { name: name.to_owned() };
                let object = gathering.object_of(self.start, self.end, self.object_device, self.inode, kind)?;
                Backing::Shared { object, offset: self.file_offset }
            }
            (MemoryObject::Memfd { name }, None) => {
                let object =
                    gathering.memfd_with_contents(self.start, self.end, self.object_device, self.inode, name)?;
                Backing::Shared { object, offset: self.file_offset }
            }
            (MemoryObject::SysV, _) => {
                let object = gathering.sysv_of(self.start, self.end, self.object_device, self.inode)?;
                Backing::Shared { object, offset: self.file_offset }
            }
            (MemoryObject::Deleted, None) => {
                let path = self.name.strip_suffix(" (deleted)").unwrap_or(self.name);
                let object = gathering.deleted_file_of(self.start, self.end, self.object_device, self.inode, path)?;
                Backing::Shared { object, offset: self.file_offset }
            }
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

    fn plain_record(&self) -> Result<VmaRecord, CompoundError> {
        if self.memory_object().is_some() {
            return Err(self.unsupported("a memory object crp cannot reopen by name").into());
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
            Backing::File(file) => Some(FileAccess::new(self, file)),
            Backing::Anonymous { .. } | Backing::Shared { .. } | Backing::Descriptor { .. } => None,
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
        // Memory objects the userspace back end restores; the kmod one refuses them.
        for (name, shared) in
            [("/dev/zero (deleted)", true), ("/tmp/gone (deleted)", false), ("/memfd:x (deleted)", true)]
        {
            assert!(refusal(&entry(name, shared, 5)).is_none(), "{name}");
            let kmod = Mapping::from_maps(&entry(name, shared, 5)).kmod_refusal().unwrap();
            assert!(kmod.what.contains("kmod back end") && kmod.location.contains("0x1000"), "{kmod}");
        }
        assert!(refusal(&entry("/SYSV00001234 (deleted)", true, 0)).is_none(), "restored by the userspace back end");
        assert!(Mapping::from_maps(&entry("/SYSV00001234 (deleted)", true, 0)).kmod_refusal().is_some());
        for (flag, what) in [("sl", "mseal"), ("um", "userfaultfd"), ("ui", "userfaultfd")] {
            let mut flagged = entry("", false, 0);
            flagged.vm_flags.push(flag.into());
            let refused = refusal(&flagged).unwrap();
            assert!(refused.what.contains(what) && refused.location.contains("0x1000"), "{refused}");
        }
        let mut guarded = entry("", false, 0);
        guarded.vm_flags.extend(["gu".into(), "mg".into()]);
        assert!(refusal(&guarded).is_none());
        assert!(Mapping::from_maps(&guarded).kmod_refusal().unwrap().what.contains("guard regions"));
        let mut huge = entry("/memfd:h (deleted)", true, 5);
        huge.vm_flags.push("ht".into());
        assert!(refusal(&huge).unwrap().what.contains("hugetlbfs"));
        assert!(refusal(&entry("", true, 0)).unwrap().what.contains("shared anonymous"));
        assert!(refusal(&entry("anon_inode:[perf_event]", false, 7)).unwrap().what.contains("unnamed kernel object"));
        let mut locked = entry("", false, 0);
        locked.vm_flags.extend(["lo".into(), "lf".into()]);
        assert!(refusal(&locked).is_none(), "locked again by the userspace back end");
        let record = Mapping::from_maps(&locked).plain_record().unwrap();
        assert!(record.flags().contains(VmaFlags::LOCKED | VmaFlags::LOCK_ON_FAULT));
        assert!(Mapping::from_maps(&locked).kmod_refusal().unwrap().what.contains("mlock"));
        let mut device = entry("", false, 0);
        device.vm_flags.push("io".into());
        assert!(refusal(&device).unwrap().what.contains("device mapping"));
    }

    #[test]
    fn memory_objects_are_recorded_once_or_matched_to_their_descriptor() {
        let objects = [FileObject::Memfd {
            name: "held".into(),
            inode: 5,
            mode: 0o777,
            uid: 0,
            gid: 0,
            seals: 0,
            contents: crate::files::Contents::default(),
        }];
        let mut gathering = Gathering::new(1);
        let held = Mapping::from_maps(&entry("/memfd:held (deleted)", false, 5))
            .record_with(&mut gathering, DescriptorObjects(&objects))
            .unwrap();
        assert_eq!(held.backing, Backing::Descriptor { object: 0, offset: 0 });
        let sealed = [FileObject::Memfd {
            name: "sealed".into(),
            inode: 5,
            mode: 0o777,
            uid: 0,
            gid: 0,
            seals: F_SEAL_FUTURE_WRITE,
            contents: crate::files::Contents::default(),
        }];
        let mut writable = entry("/memfd:sealed (deleted)", true, 5);
        writable.vm_flags.push("mw".into());
        let refused =
            Mapping::from_maps(&writable).record_with(&mut gathering, DescriptorObjects(&sealed)).unwrap_err();
        assert!(refused.to_string().contains("F_SEAL_FUTURE_WRITE"), "{refused}");
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
