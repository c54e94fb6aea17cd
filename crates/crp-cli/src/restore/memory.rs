//! Mapping every VMA of the image and filling its stored pages straight
//! from the mapped image file with `process_vm_writev`. Shared memory
//! objects are made first, once each, and every mapping of one is mapped
//! from its one descriptor; mappings of the descriptor table's objects
//! wait for the descriptors ([`map_descriptor_objects`]).

use std::collections::BTreeSet;
use std::io::IoSlice;

use crp_compound::files::{FdTable, FdTarget};
use crp_compound::vma::shared::{self, Made};
use crp_compound::vma::{
    Backing, GuardRegion, SharedKind, SharedMemory, VmaRecord, finish_vma, install_guards, map_vma_from,
};
use crp_image::{ImageReader, PageRunEntry};
use crp_ptrace::{Injector, TraceeExt, arg};
use crp_recursive::AddressSpace;
use nix::sys::uio::{RemoteIoVec, process_vm_writev};
use nix::unistd::Pid;

use crate::error::CrpError;

/// Most iovecs per `process_vm_writev` (IOV_MAX).
const MAX_IOVECS: usize = 1024;
/// Most bytes per `process_vm_writev`.
const MAX_BATCH_BYTES: usize = 32 << 20;

/// Replays the VMAs in address order (the kernel rebuilds its tree as they
/// are mapped), fills their pages, then gives each its final protection.
pub fn map_and_fill(
    injector: &mut Injector,
    pid: Pid,
    vmas: &[VmaRecord],
    shared: &SharedMemory,
    guards: &[GuardRegion],
    reader: &ImageReader,
) -> Result<(), CrpError> {
    let space = AddressSpace::from_ranges(
        vmas.iter().filter(|vma| !vma.is_descriptor_mapping()).map(|vma| (vma.start, vma.end, vma)),
    )
    .map_err(|error| CrpError::InvalidImage { reason: format!("address space: {error}") })?;
    // VMAs the image holds pages for start writable, to be filled.
    let filled: BTreeSet<u64> =
        reader.page_runs().iter().filter_map(|run| space.find(run.vaddr)).map(|(start, _, _)| start).collect();
    let mut made = Vec::with_capacity(shared.objects.len());
    for object in &shared.objects {
        made.push(shared::create_object(injector, object)?);
    }
    // SysV attachments made so far, by (object, base address).
    let mut attached: BTreeSet<(u32, u64)> = BTreeSet::new();
    // VMAs of SysV segments that existed already: their contents are theirs.
    let mut kept: BTreeSet<u64> = BTreeSet::new();
    for (start, _, vma) in space.ranges() {
        let fill = filled.contains(&start);
        match (vma.backing.clone(), made_for(&vma.backing, &made)) {
            (Backing::Shared { object, offset }, Some(Made::SysV { id, reused })) => {
                let base = vma.start.wrapping_sub(offset);
                let read_only = !vma.flags().contains(crp_compound::vma::VmaFlags::MAY_WRITE);
                if attached.insert((object, base)) {
                    shared::attach(injector, id, base, read_only)?;
                }
                if reused {
                    kept.insert(start);
                }
                let mut protection = u64::from(vma.protection);
                if fill && !reused {
                    protection |= arg(libc::PROT_WRITE);
                }
                injector.syscall("mprotect", libc::SYS_mprotect, [vma.start, vma.length(), protection, 0, 0, 0])?;
            }
            (_, Some(Made::Descriptor(fd))) => map_vma_from(injector, vma, fill, Some(fd))?,
            _ => map_vma_from(injector, vma, fill, None)?,
        }
    }
    for (object, handle) in shared.objects.iter().zip(&made) {
        match *handle {
            Made::Descriptor(fd) => {
                injector.syscall("close", libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
            }
            Made::SysV { id, reused: false } if matches!(object.kind, SharedKind::SysV { removed: true, .. }) => {
                shared::remove_segment(injector, id)?;
            }
            Made::SysV { .. } => {}
        }
    }
    let runs = reader
        .page_runs()
        .iter()
        .filter(|run| space.find(run.vaddr).is_some_and(|(start, _, _)| !kept.contains(&start)));
    write_pages(pid, reader, runs)?;
    for (start, _, vma) in space.ranges() {
        finish_vma(injector, vma, filled.contains(&start) && !kept.contains(&start))?;
    }
    install_guards(injector, guards.iter().filter(|guard| space.find(guard.start).is_some()))?;
    Ok(())
}

/// What `backing`'s shared memory object was made again as.
fn made_for(backing: &Backing, made: &[Made]) -> Option<Made> {
    match backing {
        Backing::Shared { object, .. } => made.get(*object as usize).copied(),
        _ => None,
    }
}

/// Maps every mapping of a memfd or deleted file a descriptor held, from a
/// reopening of that descriptor (`/proc/self/fd/N`, read-write for a
/// writable shared mapping), and fills its private pages. Runs once the
/// descriptors are restored.
pub fn map_descriptor_objects(
    injector: &mut Injector,
    pid: Pid,
    vmas: &[VmaRecord],
    files: &FdTable,
    streams: &crp_compound::files::Streams,
    guards: &[GuardRegion],
    reader: &ImageReader,
) -> Result<(), CrpError> {
    for vma in vmas.iter().filter(|vma| vma.is_descriptor_mapping()) {
        let Backing::Descriptor { object, .. } = vma.backing else { continue };
        let fd = descriptor_of_object(files, streams, object).ok_or_else(|| CrpError::InvalidImage {
            reason: format!(
                "VMA [{:#x}, {:#x}) maps descriptor object {object}, which no descriptor holds",
                vma.start, vma.end
            ),
        })?;
        let writable = vma.shared && vma.flags().contains(crp_compound::vma::VmaFlags::MAY_WRITE);
        let mut scratch = injector.scratch();
        let path = scratch.push_c_string(format!("/proc/self/fd/{fd}").as_bytes());
        scratch.commit(injector)?;
        let flags = (if writable { libc::O_RDWR } else { libc::O_RDONLY }) | libc::O_CLOEXEC;
        let opened = injector.syscall("openat", libc::SYS_openat, [arg(libc::AT_FDCWD), path, arg(flags), 0, 0, 0])?;
        let runs: Vec<&PageRunEntry> =
            reader.page_runs().iter().filter(|run| run.vaddr >= vma.start && run.vaddr < vma.end).collect();
        // A private mapping's own pages are written through PROT_WRITE.
        let fill = !runs.is_empty();
        let mapped = map_vma_from(injector, vma, fill, Some(opened));
        injector.syscall("close", libc::SYS_close, [opened, 0, 0, 0, 0, 0])?;
        mapped?;
        write_pages(pid, reader, runs.into_iter())?;
        finish_vma(injector, vma, fill)?;
        install_guards(injector, guards.iter().filter(|guard| vma.start <= guard.start && guard.start < vma.end))?;
    }
    Ok(())
}

/// The lowest descriptor whose description is of descriptor object
/// `object` (one the user did not hand something else over for).
fn descriptor_of_object(files: &FdTable, streams: &crp_compound::files::Streams, object: u32) -> Option<i32> {
    files.descriptors.iter().filter(|descriptor| streams.chosen_for(descriptor.fd).is_none()).find_map(|descriptor| {
        match files.file_of(descriptor)?.target {
            FdTarget::Object { object: found } if found == object => Some(descriptor.fd),
            _ => None,
        }
    })
}

/// Says on stderr which shared memory was shared with processes outside the
/// dump: restored with its contents, but no longer shared with them.
pub fn warn_of_outside_sharing(shared: &SharedMemory) {
    for object in shared.shared_outside() {
        let pids: Vec<String> = object.outside.iter().map(i32::to_string).collect();
        eprintln!(
            "crp: warning: shared memory {} (inode {}, {} bytes) was shared with process {} outside the dump; it is \
             restored with its contents as of the dump, but that sharing cannot be rebuilt: writes no longer reach \
             the other process",
            object.describe(),
            object.inode,
            object.size,
            pids.join(", ")
        );
    }
}

/// One `process_vm_writev`'s worth of pieces: (image bytes, target address).
type Batch<'image> = Vec<(&'image [u8], usize)>;

/// Copies every page run into the process, many runs per syscall, with one
/// thread per CPU: most of the time goes to faulting in the target's fresh
/// pages, which the kernel does in parallel.
fn write_pages<'image>(
    pid: Pid,
    reader: &'image ImageReader,
    runs: impl Iterator<Item = &'image PageRunEntry>,
) -> Result<(), CrpError> {
    let mut batches: Vec<Batch<'_>> = Vec::new();
    let mut current: Batch<'_> = Vec::new();
    let mut current_bytes = 0usize;
    for run in runs {
        let base = usize::try_from(run.vaddr)
            .map_err(|_| CrpError::InvalidImage { reason: format!("page run address {:#x}", run.vaddr) })?;
        for (index, piece) in reader.run_data(run).chunks(MAX_BATCH_BYTES).enumerate() {
            if current.len() == MAX_IOVECS || current_bytes + piece.len() > MAX_BATCH_BYTES {
                batches.push(std::mem::take(&mut current));
                current_bytes = 0;
            }
            current.push((piece, base + index * MAX_BATCH_BYTES));
            current_bytes += piece.len();
        }
    }
    batches.push(current);
    let total = batches.iter().flatten().map(|(bytes, _)| bytes.len() as u64).sum();
    let progress = &crate::progress::Progress::start("restore", total);
    let workers = std::thread::available_parallelism().map_or(1, usize::from).clamp(1, 8);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|worker| {
                let mine: Vec<&Batch<'_>> = batches.iter().skip(worker).step_by(workers).collect();
                scope.spawn(move || {
                    mine.into_iter().try_for_each(|batch| {
                        flush(pid, batch)?;
                        progress.advance(batch.iter().map(|(bytes, _)| bytes.len() as u64).sum());
                        Ok(())
                    })
                })
            })
            .collect();
        handles.into_iter().try_for_each(|handle| {
            handle.join().unwrap_or_else(|_| {
                Err(CrpError::Io {
                    action: "write pages".into(),
                    source: std::io::Error::other("writer thread panicked"),
                })
            })
        })
    })
}

fn flush(pid: Pid, batch: &Batch<'_>) -> Result<(), CrpError> {
    if batch.is_empty() {
        return Ok(());
    }
    let local: Vec<IoSlice<'_>> = batch.iter().map(|(bytes, _)| IoSlice::new(bytes)).collect();
    let remote: Vec<RemoteIoVec> =
        batch.iter().map(|(bytes, base)| RemoteIoVec { base: *base, len: bytes.len() }).collect();
    let total: usize = local.iter().map(|slice| slice.len()).sum();
    // A failed batch is not an error yet: it is redone piece by piece below,
    // and a piece that still fails is reported.
    let written = process_vm_writev(pid, &local, &remote).unwrap_or(0);
    if written < total {
        // Finish the batch piece by piece from where the kernel stopped;
        // the per-piece write falls back to /proc/PID/mem.
        let mut skipped = 0usize;
        for (bytes, base) in batch {
            let already = written.saturating_sub(skipped).min(bytes.len());
            skipped += bytes.len();
            if already == bytes.len() {
                continue;
            }
            let address = (base + already) as u64;
            crp_ptrace::sys::write_memory(pid, address, &bytes[already..]).map_err(|errno| {
                crp_ptrace::EngineError::Memory {
                    operation: "write pages",
                    pid: pid.as_raw(),
                    address,
                    length: bytes.len() - already,
                    errno,
                }
            })?;
        }
    }
    Ok(())
}
