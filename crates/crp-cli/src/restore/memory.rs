//! Mapping every VMA of the image and filling its stored pages straight
//! from the mapped image file with `process_vm_writev`.

use std::collections::BTreeSet;
use std::io::IoSlice;

use crp_compound::vma::{VmaRecord, finish_vma, map_vma};
use crp_image::ImageReader;
use crp_ptrace::Injector;
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
    reader: &ImageReader,
) -> Result<(), CrpError> {
    let space = AddressSpace::from_ranges(vmas.iter().map(|vma| (vma.start, vma.end, vma)))
        .map_err(|error| CrpError::InvalidImage { reason: format!("address space: {error}") })?;
    // VMAs the image holds pages for start writable, to be filled.
    let filled: BTreeSet<u64> =
        reader.page_runs().iter().filter_map(|run| space.find(run.vaddr)).map(|(start, _, _)| start).collect();
    for (start, _, vma) in space.ranges() {
        map_vma(injector, vma, filled.contains(&start))?;
    }
    write_pages(pid, reader)?;
    for (start, _, vma) in space.ranges() {
        finish_vma(injector, vma, filled.contains(&start))?;
    }
    Ok(())
}

/// One `process_vm_writev`'s worth of pieces: (image bytes, target address).
type Batch<'image> = Vec<(&'image [u8], usize)>;

/// Copies every page run into the process, many runs per syscall, with one
/// thread per CPU: most of the time goes to faulting in the target's fresh
/// pages, which the kernel does in parallel.
fn write_pages(pid: Pid, reader: &ImageReader) -> Result<(), CrpError> {
    let mut batches: Vec<Batch<'_>> = Vec::new();
    let mut current: Batch<'_> = Vec::new();
    let mut current_bytes = 0usize;
    for run in reader.page_runs() {
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
    let workers = std::thread::available_parallelism().map_or(1, usize::from).clamp(1, 8);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|worker| {
                let mine: Vec<&Batch<'_>> = batches.iter().skip(worker).step_by(workers).collect();
                scope.spawn(move || mine.into_iter().try_for_each(|batch| flush(pid, batch)))
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
