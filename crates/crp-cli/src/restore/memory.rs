//! Mapping every VMA of the image and filling its stored pages straight
//! from the mapped image file with `process_vm_writev`.

use std::io::IoSlice;

use crp_compound::vma::{VmaRecord, finish_vma, map_vma};
use crp_image::{ImageReader, PageRunEntry};
use crp_ptrace::Injector;
use nix::sys::uio::{RemoteIoVec, process_vm_writev};
use nix::unistd::Pid;

use crate::error::CrpError;

/// Most iovecs per `process_vm_writev` (IOV_MAX).
const MAX_IOVECS: usize = 1024;
/// Most bytes per `process_vm_writev`.
const MAX_BATCH_BYTES: usize = 256 << 20;

/// For each VMA, whether the image holds pages for it (runs and VMAs are
/// both sorted by address, and every run lies inside one VMA).
fn vmas_with_pages(vmas: &[VmaRecord], runs: &[PageRunEntry]) -> Vec<bool> {
    let mut with_pages = vec![false; vmas.len()];
    let mut index = 0;
    for run in runs {
        while index < vmas.len() && vmas[index].end <= run.vaddr {
            index += 1;
        }
        if let Some(flag) = with_pages.get_mut(index) {
            *flag = true;
        }
    }
    with_pages
}

pub fn map_and_fill(
    injector: &mut Injector,
    pid: Pid,
    vmas: &[VmaRecord],
    reader: &ImageReader,
) -> Result<(), CrpError> {
    let mut sorted: Vec<&VmaRecord> = vmas.iter().collect();
    sorted.sort_by_key(|vma| vma.start);
    let sorted: Vec<VmaRecord> = sorted.into_iter().cloned().collect();
    let with_pages = vmas_with_pages(&sorted, reader.page_runs());
    for (vma, &fill) in sorted.iter().zip(&with_pages) {
        map_vma(injector, vma, fill)?;
    }
    write_pages(pid, reader)?;
    for (vma, &fill) in sorted.iter().zip(&with_pages) {
        finish_vma(injector, vma, fill)?;
    }
    Ok(())
}

/// Copies every page run into the process, many runs per syscall.
fn write_pages(pid: Pid, reader: &ImageReader) -> Result<(), CrpError> {
    let mut local: Vec<IoSlice<'_>> = Vec::with_capacity(MAX_IOVECS);
    let mut remote: Vec<RemoteIoVec> = Vec::with_capacity(MAX_IOVECS);
    let mut batch_bytes = 0usize;
    for run in reader.page_runs() {
        let data = reader.run_data(run);
        let base = usize::try_from(run.vaddr)
            .map_err(|_| CrpError::InvalidImage { reason: format!("page run address {:#x}", run.vaddr) })?;
        for (index, piece) in data.chunks(MAX_BATCH_BYTES).enumerate() {
            if local.len() == MAX_IOVECS || batch_bytes + piece.len() > MAX_BATCH_BYTES {
                flush(pid, &mut local, &mut remote)?;
                batch_bytes = 0;
            }
            local.push(IoSlice::new(piece));
            remote.push(RemoteIoVec { base: base + index * MAX_BATCH_BYTES, len: piece.len() });
            batch_bytes += piece.len();
        }
    }
    flush(pid, &mut local, &mut remote)
}

fn flush(pid: Pid, local: &mut Vec<IoSlice<'_>>, remote: &mut Vec<RemoteIoVec>) -> Result<(), CrpError> {
    if local.is_empty() {
        return Ok(());
    }
    let total: usize = local.iter().map(|slice| slice.len()).sum();
    let written = process_vm_writev(pid, local, remote).unwrap_or(0);
    if written < total {
        // Finish the batch piece by piece from where the kernel stopped;
        // the per-piece write falls back to /proc/PID/mem.
        let mut skipped = 0usize;
        for (slice, target) in local.iter().zip(remote.iter()) {
            let already = written.saturating_sub(skipped).min(slice.len());
            skipped += slice.len();
            if already == slice.len() {
                continue;
            }
            let address = (target.base + already) as u64;
            crp_ptrace::sys::write_memory(pid, address, &slice[already..]).map_err(|errno| {
                crp_ptrace::EngineError::Memory {
                    operation: "write pages",
                    pid: pid.as_raw(),
                    address,
                    length: slice.len() - already,
                    errno,
                }
            })?;
        }
    }
    local.clear();
    remote.clear();
    Ok(())
}
