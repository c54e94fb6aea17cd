//! `crp dump`: freeze, capture every category, write the image, then kill
//! the original (only once the image is durable) or let it run on.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crp_compound::pagemap::PageMap;
use crp_compound::vma::{Backing, label_anonymous};
use crp_image::ImageWriter;
use crp_ptrace::{FrozenProcess, procfs};

pub use crate::backend::Backend;
use crate::backend::Captured;
use crate::error::CrpError;
use crate::preflight::{self, Phase};
use crate::{cancel, faults};
pub use crp_image::Durability;

#[derive(Debug, Clone)]
pub struct DumpPlan {
    pub pid: i32,
    pub output: PathBuf,
    pub leave_running: bool,
    pub backend: Backend,
    /// `PageCache` (--no-sync): the original is killed once the image is in
    /// the page cache, not once it is on disk.
    pub durability: Durability,
}

#[derive(Debug)]
pub struct DumpReport {
    pub vma_count: usize,
    pub page_bytes: u64,
    /// Pages of private anonymous memory left out because they were zero.
    pub zero_pages: u64,
    pub frozen_for: Duration,
}

/// What stops a dump of `pid` through `backend`, touching nothing: a
/// missing module, then every blocker preflight finds.
pub fn blockers(pid: i32, backend: Backend) -> Result<Vec<crp_compound::Unsupported>, CrpError> {
    drop(backend.for_dump()?);
    preflight::blockers(pid, Phase::BeforeFreeze)
}

pub fn dump(plan: &DumpPlan) -> Result<DumpReport, CrpError> {
    let pid = plan.pid;
    tracing::info!(pid, output = %plan.output.display(), backend = ?plan.backend, "dump: checking the process");
    preflight::check(pid, Phase::BeforeFreeze)?;
    tracing::info!(pid, "preflight passed: nothing crp refuses");
    // A missing module fails here, before the process is touched.
    let backend = plan.backend.for_dump()?;
    if plan.backend == Backend::Kmod {
        crate::kmod::memory::preflight(pid)?;
    }
    // An unwritable destination fails here too.
    let mut writer = ImageWriter::create_with(&plan.output, plan.durability)?;
    tracing::debug!(output = %plan.output.display(), "image file staged");
    cancel::check("dump")?;
    let stopped = procfs::Stat::read(pid)?.field(3)? == "T";
    let mut frozen = FrozenProcess::seize(pid).map_err(|error| preflight::explain_seize_failure(pid, error))?;
    // The TCP connections the capture reads, put in repair mode only for
    // the kill (and out of it again if the kill fails; dropped before `frozen`).
    let repaired = crp_compound::files::socket::Repaired::guard();
    frozen.set_checkpoint(faults::reached);
    // A thread whose epoll_wait (or other syscall Linux never restarts) the
    // freeze ended with EINTR waits again when left running, as restored.
    for thread in frozen.every_thread() {
        if let Some(again) = crp_arch_x86::rewind_never_restarted(thread.registers()) {
            thread.resume_with(again)?;
        }
    }
    faults::reached("frozen", 0);
    tracing::info!(pid, was_stopped = stopped, threads = frozen.threads().len() + 1, "frozen");
    let started = Instant::now();
    // What /proc says, once, now that the process cannot change: its
    // memory map first, which the checks and the capture both read.
    let maps = procfs::smaps(pid)?;
    // The process may have changed between the checks and the freeze.
    preflight::check_frozen(pid, &maps)?;
    tracing::debug!(pid, "preflight passed again, frozen");
    cancel::check("dump")?;
    let proc = procfs::Snapshot::read(pid, maps)?;
    let Captured { state: mut image, populated_kb } = backend.capture(&mut frozen, &proc, stopped)?;
    // Both back ends' anonymous memory is labelled by the one rule /proc uses.
    label_anonymous(&mut image.vmas, &image.mm);
    faults::reached("captured", 0);
    tracing::info!(pid, vmas = image.vmas.len(), files = image.files.len(), rlimits = image.rlimits.len(), "captured");
    for warning in crp_compound::files::socket::warnings(&image.files) {
        eprintln!("crp: warning: {warning}");
    }
    cancel::check("dump")?;

    let pagemap = PageMap::open(pid)?;
    image.guard_regions = pagemap
        .guard_regions(0, crate::restore::validate::TASK_SIZE)?
        .into_iter()
        .map(|(start, end)| crp_compound::vma::GuardRegion { start, end })
        .collect();
    // A shared memory object's pages, once per object.
    let mut shared_runs = crp_compound::vma::shared::page_runs(pid, &image.vmas, &image.shared_memory)?;
    let nix_pid = frozen.pid();
    let mut planned = Vec::with_capacity(image.vmas.len());
    for (vma, populated_kb) in image.vmas.iter().zip(populated_kb) {
        let runs = match shared_runs.remove(&vma.start) {
            Some(runs) => runs,
            None => pagemap.stored_runs(vma, populated_kb)?,
        };
        planned.push((vma, runs));
    }
    let total = planned.iter().flat_map(|(_, runs)| runs).map(|&(_, pages)| pages.saturating_mul(4096)).sum();
    let progress = crate::progress::Progress::start("dump", total);
    let mut zero_pages = 0u64;
    for (vma, runs) in planned {
        // A page private anonymous memory lacks after the restore reads as
        // zero there: its zero pages (read but never written, or zeroed) are
        // left out. Anywhere else a zero page may stand over other data (a
        // file's), and is stored.
        let omit_zeros = !vma.shared && matches!(vma.backing, Backing::Anonymous { .. });
        for (vaddr, page_count) in runs {
            let read = |address, buffer: &mut [u8]| {
                if cancel::requested().is_some() {
                    return Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "dump cancelled"));
                }
                backend.read_memory(nix_pid, address, buffer)?;
                progress.advance(buffer.len() as u64);
                Ok(())
            };
            let added = if omit_zeros {
                writer.add_page_run_without_zeros(vaddr, page_count, read)
            } else {
                writer.add_page_run(vaddr, page_count, read).map(|()| 0)
            };
            cancel::check("dump")?;
            zero_pages += added?;
        }
    }
    drop(progress);
    faults::reached("pages", 0);
    tracing::info!(
        bytes = writer.runs().iter().map(|run| run.byte_len()).sum::<u64>(),
        runs = writer.runs().len(),
        zero_pages,
        "pages written"
    );
    image.dumped_at_unix_seconds = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
    let page_bytes = writer.runs().iter().map(|run| run.byte_len()).sum();
    let vma_count = image.vmas.len();
    let metadata = crp_image::to_archive(&image)?;
    // With --leave-running every page is in the writer's buffers by now:
    // the process runs on while the image is finished and made durable.
    let frozen = if plan.leave_running {
        let frozen_for = started.elapsed();
        frozen.release()?;
        tracing::info!(pid, "released (--leave-running)");
        Original::Released { frozen_for }
    } else {
        Original::Frozen(Box::new(frozen))
    };
    let path = writer.finish(&metadata)?;
    tracing::info!(path = %path.display(), metadata_bytes = metadata.len(), "image finished");
    faults::reached("written", 0);
    if let Err(cancelled) = cancel::check("dump") {
        // Not killed yet: the dump is undone, a process still frozen is
        // released (by dropping `frozen`).
        let _ = std::fs::remove_file(path);
        return Err(cancelled);
    }
    let frozen_for = match frozen {
        Original::Released { frozen_for } => frozen_for,
        // Killed only now that the image is durable (or, with --no-sync,
        // complete in the page cache).
        Original::Frozen(frozen) => {
            let frozen_for = started.elapsed();
            if repaired.holds_connections() {
                // The image is complete: from here a crp that dies takes
                // the process with it, so that connections in repair mode
                // (from the next line on) close silently as at the kill.
                exit_kill(pid);
            }
            repaired.before_kill();
            faults::reached("repairing", 0);
            frozen.kill()?;
            // Its connections close in repair mode: the peers see nothing.
            repaired.closed_silently();
            tracing::info!(pid, "killed: the image holds it now");
            frozen_for
        }
    };
    Ok(DumpReport { vma_count, page_bytes, zero_pages, frozen_for })
}

/// Ties the frozen process `pid` to crp's life (`PTRACE_O_EXITKILL`, with
/// the `PTRACE_O_TRACESYSGOOD` the freeze set): the kernel sends it SIGKILL
/// if crp dies. A failure only leaves the window it closes open (logged).
fn exit_kill(pid: i32) {
    use nix::sys::ptrace::{Options, setoptions};
    let options = Options::PTRACE_O_TRACESYSGOOD | Options::PTRACE_O_EXITKILL;
    if let Err(errno) = setoptions(nix::unistd::Pid::from_raw(pid), options) {
        tracing::warn!(pid, %errno, "PTRACE_SETOPTIONS(PTRACE_O_EXITKILL) failed: a crp killed now would leave its connections in repair mode");
    }
}

/// The dumped process while its image is finished.
enum Original {
    /// Let run on (--leave-running) after being frozen this long.
    Released { frozen_for: Duration },
    /// Still frozen: killed once the image is durable, released by drop.
    Frozen(Box<FrozenProcess>),
}
