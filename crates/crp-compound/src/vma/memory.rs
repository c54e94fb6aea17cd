//! The process's memory as one kind of state: its VMAs, the shared memory
//! objects they map and the guard regions in them. Captured as a
//! description (the page bytes are streamed into the image by the dump);
//! restored by replaying the VMAs in address order (the kernel rebuilds its
//! tree as they are mapped), filling their pages from the context's
//! [`crp_ptrace::Pages`], then giving each its final protection. Shared memory objects
//! are made first, once each, and every mapping of one is mapped from its
//! one descriptor; mappings of the descriptor table's objects wait for the
//! descriptors ([`Memory::restore_descriptor_mappings`]).

use std::collections::BTreeSet;

use crp_ptrace::{Capture, Restore, TraceeExt, arg};

use super::shared::{self, Gathering, Made};
use super::{
    Backing, DescriptorObjects, GuardRegion, Mapping, SharedKind, SharedMemory, VmaFlags, VmaRecord, finish_vma,
    install_guards, map_vma_from,
};
use crate::error::CompoundError;
use crate::files::{FdTable, FdTarget, Streams};

/// The process's memory: what the image keeps of it besides the pages
/// (in three fields of its own, `vmas`, `shared_memory` and
/// `guard_regions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// In address order, the kernel's special mappings left out.
    pub vmas: Vec<VmaRecord>,
    /// The shared memory objects `vmas` map ([`Backing::Shared`]).
    pub shared_memory: SharedMemory,
    /// Guard regions (MADV_GUARD_INSTALL), in address order.
    pub guard_regions: Vec<GuardRegion>,
}

/// Kilobytes resident or swapped of each VMA of a capture, as smaps says
/// (`None` when unknown): the dump's page walk skips a VMA with none.
pub type Populated = Vec<Option<u64>>;

impl Memory {
    /// The kind's name in messages and plans.
    pub const KIND: &'static str = "memory";
    /// The mappings of the descriptor table's objects, apart from the rest.
    pub const DESCRIPTOR_MAPPINGS: &'static str = "mappings of descriptor objects";

    /// The process's memory from the memory map of the context's snapshot,
    /// refusing what crp cannot restore. Captured after the descriptor
    /// table: a mapping of a memfd or deleted file a descriptor holds (one
    /// of `objects`) is a mapping of that descriptor's object. The guard
    /// regions are found by the dump's page-map walk.
    pub fn capture(
        context: &mut Capture<'_>,
        objects: DescriptorObjects<'_>,
    ) -> Result<(Self, Populated), CompoundError> {
        let pid = context.proc.pid;
        let mut gathering = Gathering::new(pid);
        let (populated, vmas) = context
            .proc
            .maps
            .iter()
            .filter(|entry| !entry.is_special())
            .map(|entry| Ok((entry.populated_kb, Mapping::from_maps(entry).record_with(&mut gathering, objects)?)))
            .collect::<Result<(Populated, Vec<VmaRecord>), CompoundError>>()?;
        let shared_memory = gathering.finish();
        shared::check_attachments(&vmas, &shared_memory)?;
        Ok((Self { vmas, shared_memory, guard_regions: Vec::new() }, populated))
    }

    /// Maps every VMA but the descriptor table's objects' in address order,
    /// fills the pages the context's [`crp_ptrace::Pages`] hold for them, gives each
    /// its final protection (and lock), and installs their guard regions.
    /// The address space must hold nothing where they go.
    pub fn restore(&self, context: &mut Restore<'_>) -> Result<(), CompoundError> {
        let layout = Layout::of(self.vmas.iter().filter(|vma| !vma.is_descriptor_mapping()))?;
        let runs = context.pages.runs();
        // VMAs the image holds pages for start writable, to be filled.
        let filled: BTreeSet<u64> =
            runs.iter().filter_map(|&(vaddr, _)| layout.find(vaddr)).map(|vma| vma.start).collect();
        let tracee = &mut *context.tracee;
        let mut made = Vec::with_capacity(self.shared_memory.objects.len());
        for object in &self.shared_memory.objects {
            made.push(shared::create_object(tracee, object)?);
        }
        // SysV attachments made so far, by (object, base address).
        let mut attached: BTreeSet<(u32, u64)> = BTreeSet::new();
        // VMAs of SysV segments that existed already: their contents are theirs.
        let mut kept: BTreeSet<u64> = BTreeSet::new();
        for vma in layout.vmas() {
            let fill = filled.contains(&vma.start);
            match (&vma.backing, made_for(&vma.backing, &made)) {
                (Backing::Shared { object, offset }, Some(Made::SysV { id, reused })) => {
                    let base = vma.start.wrapping_sub(*offset);
                    let read_only = !vma.flags().contains(VmaFlags::MAY_WRITE);
                    if attached.insert((*object, base)) {
                        shared::attach(tracee, id, base, read_only)?;
                    }
                    if reused {
                        kept.insert(vma.start);
                    }
                    let mut protection = u64::from(vma.protection);
                    if fill && !reused {
                        protection |= arg(libc::PROT_WRITE);
                    }
                    tracee.syscall("mprotect", libc::SYS_mprotect, [vma.start, vma.length(), protection, 0, 0, 0])?;
                }
                (_, Some(Made::Descriptor(fd))) => map_vma_from(tracee, vma, fill, Some(fd))?,
                _ => map_vma_from(tracee, vma, fill, None)?,
            }
        }
        for (object, handle) in self.shared_memory.objects.iter().zip(&made) {
            match *handle {
                Made::Descriptor(fd) => {
                    tracee.syscall("close", libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
                }
                Made::SysV { id, reused: false } if matches!(object.kind, SharedKind::SysV { removed: true, .. }) => {
                    shared::remove_segment(tracee, id)?;
                }
                Made::SysV { .. } => {}
            }
        }
        let wanted = |vaddr: u64| layout.find(vaddr).is_some_and(|vma| !kept.contains(&vma.start));
        context.pages.write(tracee, &wanted)?;
        for vma in layout.vmas() {
            finish_vma(tracee, vma, filled.contains(&vma.start) && !kept.contains(&vma.start))?;
        }
        install_guards(tracee, self.guard_regions.iter().filter(|guard| layout.find(guard.start).is_some()))?;
        Ok(())
    }

    /// Maps every mapping of a memfd or deleted file a descriptor of
    /// `files` held, from a reopening of that descriptor (`/proc/self/fd/N`,
    /// read-write for a writable shared mapping), and fills its private
    /// pages. Runs once the descriptors are restored.
    pub fn restore_descriptor_mappings(&self, context: &mut Restore<'_>, files: &FdTable) -> Result<(), CompoundError> {
        let runs = context.pages.runs();
        for vma in self.vmas.iter().filter(|vma| vma.is_descriptor_mapping()) {
            let Backing::Descriptor { object, .. } = vma.backing else { continue };
            let fd =
                descriptor_of_object(files, context.streams, object).ok_or_else(|| CompoundError::Incompatible {
                    what: format!("VMA [{:#x}, {:#x}) maps descriptor object {object}", vma.start, vma.end),
                    reason: "no descriptor holds it".into(),
                })?;
            let tracee = &mut *context.tracee;
            let writable = vma.shared && vma.flags().contains(VmaFlags::MAY_WRITE);
            let mut scratch = tracee.scratch();
            let path = scratch.push_c_string(format!("/proc/self/fd/{fd}").as_bytes());
            scratch.commit(tracee)?;
            let flags = (if writable { libc::O_RDWR } else { libc::O_RDONLY }) | libc::O_CLOEXEC;
            let opened =
                tracee.syscall("openat", libc::SYS_openat, [arg(libc::AT_FDCWD), path, arg(flags), 0, 0, 0])?;
            let inside = |vaddr: u64| vma.start <= vaddr && vaddr < vma.end;
            // A private mapping's own pages are written through PROT_WRITE.
            let fill = runs.iter().any(|&(vaddr, _)| inside(vaddr));
            let mapped = map_vma_from(tracee, vma, fill, Some(opened));
            tracee.syscall("close", libc::SYS_close, [opened, 0, 0, 0, 0, 0])?;
            mapped?;
            context.pages.write(tracee, &inside)?;
            finish_vma(tracee, vma, fill)?;
            install_guards(tracee, self.guard_regions.iter().filter(|guard| inside(guard.start)))?;
        }
        Ok(())
    }
}

/// VMAs in address order, none overlapping, found by address.
struct Layout<'a>(Vec<&'a VmaRecord>);

impl<'a> Layout<'a> {
    /// Refuses VMAs out of address order or overlapping (the image's
    /// layout checks refuse them before any child exists).
    fn of(vmas: impl Iterator<Item = &'a VmaRecord>) -> Result<Self, CompoundError> {
        let vmas: Vec<&VmaRecord> = vmas.collect();
        if let Some(pair) = vmas.windows(2).find(|pair| pair[1].start < pair[0].end) {
            return Err(CompoundError::Incompatible {
                what: format!("VMA [{:#x}, {:#x})", pair[1].start, pair[1].end),
                reason: format!("comes before the end of VMA [{:#x}, {:#x})", pair[0].start, pair[0].end),
            });
        }
        Ok(Self(vmas))
    }

    fn vmas(&self) -> impl Iterator<Item = &'a VmaRecord> + '_ {
        self.0.iter().copied()
    }

    /// The VMA holding `address`.
    fn find(&self, address: u64) -> Option<&'a VmaRecord> {
        let after = self.0.partition_point(|vma| vma.start <= address);
        self.0[..after].last().copied().filter(|vma| address < vma.end)
    }
}

/// What `backing`'s shared memory object was made again as.
fn made_for(backing: &Backing, made: &[Made]) -> Option<Made> {
    match backing {
        Backing::Shared { object, .. } => made.get(*object as usize).copied(),
        _ => None,
    }
}

/// The lowest descriptor whose description is of descriptor object
/// `object` (one the user did not hand something else over for).
fn descriptor_of_object(files: &FdTable, streams: &Streams, object: u32) -> Option<i32> {
    files.descriptors.iter().filter(|descriptor| streams.chosen_for(descriptor.fd).is_none()).find_map(|descriptor| {
        match files.file_of(descriptor)?.target {
            FdTarget::Object { object: found } if found == object => Some(descriptor.fd),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use crp_ptrace::fake::{Call, FakeTracee, mapping, snapshot};
    use crp_ptrace::{EngineError, Pages, Tracee};

    use super::*;
    use crate::files::{Descriptor, OpenFile};

    const PAGE: u64 = 4096;

    /// Page runs at the given addresses, each one page of its address's
    /// low byte; records which runs were written, in order.
    struct FakePages {
        runs: Vec<(u64, u64)>,
        written: RefCell<Vec<u64>>,
    }

    impl FakePages {
        fn at(addresses: &[u64]) -> Self {
            Self { runs: addresses.iter().map(|&vaddr| (vaddr, 1)).collect(), written: RefCell::default() }
        }
    }

    impl Pages for FakePages {
        fn runs(&self) -> Vec<(u64, u64)> {
            self.runs.clone()
        }

        fn write(&self, tracee: &mut dyn Tracee, wanted: &dyn Fn(u64) -> bool) -> Result<(), EngineError> {
            for &(vaddr, _) in self.runs.iter().filter(|(vaddr, _)| wanted(*vaddr)) {
                tracee.write_memory(vaddr, &[vaddr.to_le_bytes()[1]])?;
                self.written.borrow_mut().push(vaddr);
            }
            Ok(())
        }
    }

    fn anonymous(start: u64, end: u64, protection: i32) -> VmaRecord {
        VmaRecord {
            start,
            end,
            protection: protection.cast_unsigned(),
            shared: false,
            flags: 0,
            backing: Backing::Anonymous { label: String::new() },
        }
    }

    fn names(calls: &[Call]) -> Vec<i64> {
        calls.iter().map(|call| call.number).collect()
    }

    #[test]
    fn vmas_are_mapped_in_order_filled_where_pages_are_then_protected() {
        let read_only = anonymous(0x20_0000, 0x20_2000, libc::PROT_READ);
        let empty = anonymous(0x10_0000, 0x10_1000, libc::PROT_READ | libc::PROT_WRITE);
        let mut guarded = anonymous(0x30_0000, 0x30_4000, libc::PROT_READ | libc::PROT_WRITE);
        guarded.flags = VmaFlags::LOCKED.bits();
        let memory = Memory {
            vmas: vec![empty, read_only, guarded],
            shared_memory: SharedMemory::default(),
            guard_regions: vec![GuardRegion { start: 0x30_1000, end: 0x30_2000 }],
        };
        let pages = FakePages::at(&[0x20_1000, 0x30_0000]);
        let mut tracee = FakeTracee::default();
        let streams = Streams::default();
        memory.restore(&mut Restore { tracee: &mut tracee, streams: &streams, pages: &pages }).unwrap();

        let mmaps = tracee.calls_of(libc::SYS_mmap);
        let starts: Vec<u64> = mmaps.iter().map(|call| call.args[0]).collect();
        assert_eq!(starts, [0x10_0000, 0x20_0000, 0x30_0000], "replayed in address order");
        let writable = |call: &Call| call.args[2] & arg(libc::PROT_WRITE) != 0;
        assert!(writable(mmaps[1]), "a read-only VMA with pages starts writable, to be filled");
        assert_eq!(*pages.written.borrow(), [0x20_1000, 0x30_0000]);
        assert_eq!(tracee.memory.read(0x20_1000, 1), [0x10]);
        let mprotect = tracee.calls_of(libc::SYS_mprotect);
        assert_eq!(mprotect.len(), 1, "only the filled read-only VMA changes protection");
        assert_eq!(mprotect[0].args[..3], [0x20_0000, 0x2000, arg(libc::PROT_READ)]);
        let after_fill = &names(&tracee.calls)[3..];
        assert_eq!(after_fill, [libc::SYS_mprotect, libc::SYS_mlock2, libc::SYS_madvise], "locked after its fill");
        let guard = tracee.calls.last().unwrap();
        assert_eq!(guard.args[..3], [0x30_1000, PAGE, 102], "guard installed last");
    }

    #[test]
    fn overlapping_vmas_are_refused_before_any_syscall() {
        let memory =
            Memory { vmas: vec![anonymous(0x1000, 0x3000, 3), anonymous(0x2000, 0x4000, 3)], ..Memory::default() };
        let mut tracee = FakeTracee::default();
        let refusal = memory.restore(&mut Restore::new(&mut tracee)).unwrap_err();
        assert!(refusal.to_string().contains("comes before the end of VMA [0x1000, 0x3000)"), "{refusal}");
        assert!(tracee.calls.is_empty());
    }

    #[test]
    fn a_descriptor_object_s_mapping_waits_for_its_descriptor_and_is_mapped_from_it() {
        let mut held = anonymous(0x50_0000, 0x50_2000, libc::PROT_READ);
        held.backing = Backing::Descriptor { object: 0, offset: 0 };
        let memory = Memory { vmas: vec![anonymous(0x40_0000, 0x40_1000, 3), held], ..Memory::default() };
        let pages = FakePages::at(&[0x40_0000, 0x50_1000]);
        let streams = Streams::default();
        // Everything but the descriptor mapping first: it is left out.
        let mut tracee = FakeTracee::default();
        memory.restore(&mut Restore { tracee: &mut tracee, streams: &streams, pages: &pages }).unwrap();
        assert_eq!(tracee.calls_of(libc::SYS_mmap).len(), 1);
        assert_eq!(*pages.written.borrow(), [0x40_0000]);

        let mut files = FdTable::default();
        let no_holder = memory
            .restore_descriptor_mappings(&mut Restore { tracee: &mut tracee, streams: &streams, pages: &pages }, &files)
            .unwrap_err();
        assert!(no_holder.to_string().contains("no descriptor holds it"), "{no_holder}");
        files.files.push(OpenFile {
            flags: libc::O_RDWR,
            offset: 0,
            target: FdTarget::Object { object: 0 },
            owner: None,
        });
        files.descriptors.push(Descriptor { fd: 7, cloexec: false, file: 0 });
        let opened_fd = 9;
        let mut tracee = FakeTracee::answering(move |call, memory| {
            if call.number == libc::SYS_openat {
                assert_eq!(memory.read(call.args[1], 17), b"/proc/self/fd/7\0\0"[..17]);
                assert_eq!(call.args[2], arg(libc::O_RDONLY | libc::O_CLOEXEC));
                return opened_fd;
            }
            0
        });
        let context = &mut Restore { tracee: &mut tracee, streams: &streams, pages: &pages };
        memory.restore_descriptor_mappings(context, &files).unwrap();
        let mmap = tracee.calls_of(libc::SYS_mmap)[0].clone();
        assert_eq!(mmap.args[0], 0x50_0000);
        assert_eq!(mmap.args[4], 9, "mapped from the reopened descriptor");
        assert_eq!(*pages.written.borrow(), [0x40_0000, 0x50_1000]);
        assert_eq!(
            names(&tracee.calls),
            [libc::SYS_openat, libc::SYS_mmap, libc::SYS_close, libc::SYS_mprotect],
            "closed before its pages are written, protected after"
        );
    }

    #[test]
    fn capture_describes_every_mapping_but_the_kernel_s_own() {
        let mut proc = snapshot();
        let mut heap = mapping("[heap]", 0x60_0000, 0x62_0000);
        heap.populated_kb = Some(8);
        proc.maps =
            vec![heap, mapping("[vvar]", 0x7fff_0000, 0x7fff_4000), mapping("", 0x7f00_0000, 0x7f00_1000)].into();
        let mut tracee = FakeTracee::default();
        let context = &mut Capture { tracee: &mut tracee, proc: &proc, stopped_before_freeze: false };
        let (memory, populated) = Memory::capture(context, DescriptorObjects::default()).unwrap();
        let starts: Vec<u64> = memory.vmas.iter().map(|vma| vma.start).collect();
        assert_eq!(starts, [0x60_0000, 0x7f00_0000]);
        assert_eq!(populated, [Some(8), Some(0)]);
        assert!(memory.shared_memory.objects.is_empty() && memory.guard_regions.is_empty());
        assert!(tracee.calls.is_empty(), "described from the snapshot alone");

        let mut device = mapping("", 0x1000, 0x2000);
        device.vm_flags.push("io".into());
        proc.maps = vec![device].into();
        let context = &mut Capture { tracee: &mut tracee, proc: &proc, stopped_before_freeze: false };
        let refusal = Memory::capture(context, DescriptorObjects::default()).unwrap_err();
        assert!(refusal.to_string().contains("device mapping"), "{refusal}");
    }
}
