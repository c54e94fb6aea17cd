//! The image's page contents as the memory kind writes them
//! ([`crp_ptrace::Pages`], for [`crp_compound::vma::Memory`]): straight
//! from the mapped image file into the process with `process_vm_writev`.

use std::io::IoSlice;

use crp_compound::vma::SharedMemory;
use crp_image::ImageReader;
use crp_ptrace::{EngineError, Pages, Tracee};
use nix::sys::uio::{RemoteIoVec, process_vm_writev};
use nix::unistd::Pid;

/// Most iovecs per `process_vm_writev` (IOV_MAX).
const MAX_IOVECS: usize = 1024;
/// Most bytes per `process_vm_writev`.
const MAX_BATCH_BYTES: usize = 32 << 20;

/// The page runs of an open image.
#[derive(Debug, Clone, Copy)]
pub struct ImagePages<'image>(pub &'image ImageReader);

impl Pages for ImagePages<'_> {
    fn runs(&self) -> Vec<(u64, u64)> {
        self.0.page_runs().iter().map(|run| (run.vaddr, run.page_count)).collect()
    }

    fn write(&self, tracee: &mut dyn Tracee, wanted: &dyn Fn(u64) -> bool) -> Result<(), EngineError> {
        let pid = Pid::from_raw(tracee.pid());
        let runs = self.0.page_runs().iter().filter(|run| wanted(run.vaddr));
        write_pieces(pid, runs.map(|run| (run.vaddr, self.0.run_data(run))))
    }
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

/// Copies every piece (address, page bytes) into the process, many per
/// syscall, with one thread per CPU: most of the time goes to faulting in
/// the target's fresh pages, which the kernel does in parallel.
pub(crate) fn write_pieces<'image>(
    pid: Pid,
    pieces: impl Iterator<Item = (u64, &'image [u8])>,
) -> Result<(), EngineError> {
    let mut batches: Vec<Batch<'_>> = Vec::new();
    let mut current: Batch<'_> = Vec::new();
    let mut current_bytes = 0usize;
    for (vaddr, bytes) in pieces {
        let base = usize::try_from(vaddr).map_err(|_| EngineError::Memory {
            operation: "write pages",
            pid: pid.as_raw(),
            address: vaddr,
            length: 0,
            errno: nix::errno::Errno::EFAULT,
        })?;
        for (index, piece) in bytes.chunks(MAX_BATCH_BYTES).enumerate() {
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
        // A writer that panicked is a bug of crp's: its panic goes on here.
        handles
            .into_iter()
            .try_for_each(|handle| handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    })
}

fn flush(pid: Pid, batch: &Batch<'_>) -> Result<(), EngineError> {
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
            crp_ptrace::sys::write_memory(pid, address, &bytes[already..]).map_err(|errno| EngineError::Memory {
                operation: "write pages",
                pid: pid.as_raw(),
                address,
                length: bytes.len() - already,
                errno,
            })?;
        }
    }
    Ok(())
}
