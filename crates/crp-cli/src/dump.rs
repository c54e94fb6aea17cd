//! `crp dump`: freeze, capture every category, write the image, then kill
//! the original (only once the image is durable) or let it run on.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crp_compound::pagemap::PageMap;
use crp_compound::vma::cow::{CowError, CowSnapshot};
use crp_compound::vma::{Backing, label_anonymous};
use crp_image::ImageWriter;
use crp_ptrace::{FrozenProcess, procfs};

pub use crate::backend::Backend;
use crate::backend::Captured;
use crate::error::CrpError;
use crate::preflight::{self, Phase, Policies};
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
    /// --track-changes and --parent.
    pub incremental: crate::incremental::Options,
}

#[derive(Debug)]
pub struct DumpReport {
    pub vma_count: usize,
    pub page_bytes: u64,
    /// Pages of private anonymous memory left out because they were zero.
    pub zero_pages: u64,
    pub frozen_for: Duration,
    /// With a copy-on-write snapshot (--leave-running): how many pages the
    /// process wrote before crp had read them, copied aside first.
    pub copied_on_write: Option<u64>,
    /// With --parent: pages the image takes from its parent.
    pub inherited_pages: Option<u64>,
}

/// What stops a dump of `pid` through `backend`, touching nothing: a
/// missing module, then every blocker preflight finds.
pub fn blockers(pid: i32, backend: Backend) -> Result<Vec<crp_compound::Unsupported>, CrpError> {
    drop(backend.for_dump()?);
    preflight::blockers(pid, Phase::BeforeFreeze)
}

/// How the pages are read with `--leave-running`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PageCopy {
    /// Private anonymous memory through a copy-on-write snapshot, the
    /// process running on (see [`crate::copy_on_write`]).
    OnWrite,
    /// Everything while the process is frozen.
    Frozen,
}

pub fn dump(plan: &DumpPlan) -> Result<DumpReport, CrpError> {
    if plan.incremental.arms_tracking() {
        use crate::incremental::IncrementalError;
        if !plan.leave_running {
            return Err(IncrementalError::NeedsLeaveRunning.into());
        }
        if plan.backend != Backend::Userspace {
            return Err(IncrementalError::NeedsUserspace.into());
        }
        // Tracking and the copy-on-write snapshot would both register the
        // same memory with a userfaultfd: such a dump copies frozen.
        return dump_with(plan, PageCopy::Frozen);
    }
    if !plan.leave_running || plan.backend != Backend::Userspace {
        return dump_with(plan, PageCopy::Frozen);
    }
    match dump_with(plan, PageCopy::OnWrite) {
        // Memory went away under the copy: gone from the snapshot (Lost),
        // or already when read.
        Err(CrpError::CopyOnWrite(lost @ (CowError::Lost { .. } | CowError::Read { .. }))) => {
            eprintln!("crp: warning: {lost}; dumping it again, frozen for the whole copy");
            dump_with(plan, PageCopy::Frozen)
        }
        done => done,
    }
}

fn dump_with(plan: &DumpPlan, copy: PageCopy) -> Result<DumpReport, CrpError> {
    let pid = plan.pid;
    tracing::info!(pid, output = %plan.output.display(), backend = ?plan.backend, "dump: checking the process");
    // An incremental dump walks the NUMA policies once, after the release.
    let before = if plan.incremental.arms_tracking() { Policies::AfterRelease } else { Policies::Now };
    preflight::check_with(pid, Phase::BeforeFreeze, before)?;
    tracing::info!(pid, "preflight passed: nothing crp refuses");
    // A missing module fails here, before the process is touched.
    let backend = plan.backend.for_dump()?;
    if plan.backend == Backend::Kmod {
        crate::kmod::memory::preflight(pid)?;
    }
    // A missing, foreign or untracked parent fails here, before the freeze.
    let parent = match &plan.incremental.parent {
        Some(path) => Some(crate::incremental::parent::Parent::open(path, pid)?),
        None => None,
    };
    if let Some(parent) = &parent {
        parent.check_tracking(pid)?;
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
    crp_compound::files::socket::set_checkpoint(faults::reached);
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
    // A freeze of milliseconds leaves the NUMA policies (whose /proc file
    // walks every page) for right after the release.
    // So does an incremental one, whose freeze is otherwise short too.
    let policies = if copy == PageCopy::OnWrite || plan.incremental.arms_tracking() {
        Policies::AfterRelease
    } else {
        Policies::Now
    };
    preflight::check_frozen(pid, &maps, policies)?;
    tracing::debug!(pid, "preflight passed again, frozen");
    if let Some(parent) = &parent {
        parent.check_tracking(pid)?;
    }
    cancel::check("dump")?;
    let proc = procfs::Snapshot::read(pid, maps)?;
    let Captured { state: mut image, populated_kb } = backend.capture(&mut frozen, &proc, stopped)?;
    // Both back ends' anonymous memory is labelled by the one rule /proc uses.
    label_anonymous(&mut image.vmas, &image.mm);
    // Every socket read is as it was: the watchdog guarding them ends.
    repaired.read_all();
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
    let tracked = if plan.incremental.arms_tracking() {
        Some(crate::incremental::pages::plan(parent.is_some(), &proc.maps, &pagemap, &mut planned)?)
    } else {
        None
    };
    // The written pages are protected again by the scan that found them:
    // the tracking moves on now, so that a dump failing from here leaves a
    // tracking no image names (and the next --parent dump is refused).
    let moved = match (&tracked, parent.as_ref().and_then(|parent| parent.tracking)) {
        (Some(tracked), Some(current)) => crate::incremental::tracking::move_on(
            &mut frozen,
            &proc.maps,
            current,
            &tracked.untracked,
            &tracked.untracked_populated,
        )?,
        _ => None,
    };
    let total = planned.iter().flat_map(|(_, runs)| runs).map(|&(_, pages)| pages.saturating_mul(4096)).sum();
    tracing::debug!(pid, bytes = total, "pages planned");
    let progress = crate::progress::Progress::start("dump", total);
    // With a snapshot, private anonymous memory is read after the release;
    // the rest (shared and file-backed pages) is read while still frozen,
    // kept aside, and written in its place in address order, as the image
    // has its runs.
    let snapshot = match copy {
        PageCopy::OnWrite => arm_snapshot(plan, &mut frozen, &proc.maps, &planned, backend.as_ref())?,
        PageCopy::Frozen => None,
    };
    let mut zero_pages = 0;
    if snapshot.is_none() {
        let read_frozen = |address, buffer: &mut [u8]| backend.read_memory(nix_pid, address, buffer);
        zero_pages = write_pages(&mut writer, &planned, &progress, read_frozen)?;
    }
    // A full dump's tracking is armed now that the pages are read (a dump
    // that failed before leaves the tracking it found as it was).
    let chain = match tracked {
        Some(tracked) => {
            let armed = match moved {
                Some(moved) => moved,
                None => {
                    crate::incremental::tracking::arm(&mut frozen, &proc.maps, &tracked.registered, &tracked.populated)?
                }
            };
            tracing::info!(
                pid,
                inherited_runs = tracked.inherited.len(),
                untracked_pages = tracked.untracked_pages,
                "pages planned against the parent"
            );
            Some(crate::incremental::ChainRecord {
                parent: parent.map(|parent| parent.link),
                inherited: tracked.inherited,
                tracking: Some(armed),
            })
        }
        None => None,
    };
    let mut copied_on_write = None;
    // With --leave-running the process runs on from here: the image is
    // finished and made durable after.
    let frozen = if plan.leave_running {
        let frozen_for = started.elapsed();
        frozen.release()?;
        tracing::info!(pid, frozen_ms = frozen_for.as_secs_f64() * 1e3, "released (--leave-running)");
        if policies == Policies::AfterRelease {
            preflight::check_released(pid)?;
        }
        Original::Released { frozen_for }
    } else {
        Original::Frozen(Box::new(frozen))
    };
    if let Some((snapshot, kept)) = snapshot {
        let lost = std::cell::Cell::new(None);
        let mut reads = 0u64;
        let read = |address, buffer: &mut [u8]| {
            if kept.fill(address, buffer) {
                return Ok(());
            }
            faults::reached("copying", reads);
            reads += 1;
            snapshot.read(address, buffer).map_err(|error| {
                let message = error.to_string();
                lost.set(Some(error));
                std::io::Error::other(message)
            })
        };
        let written = write_pages(&mut writer, &planned, &progress, read);
        if let Some(error) = lost.take() {
            return Err(error.into());
        }
        zero_pages = written?;
        let stats = snapshot.finish();
        tracing::info!(pid, faults = stats.faults, copied = stats.copied, "copy-on-write snapshot read");
        copied_on_write = Some(stats.copied);
    }
    drop(progress);
    faults::reached("pages", 0);
    tracing::info!(
        bytes = writer.runs().iter().map(|run| run.byte_len()).sum::<u64>(),
        runs = writer.runs().len(),
        zero_pages,
        "pages written"
    );
    let inherited_pages = chain
        .as_ref()
        .filter(|chain| chain.parent.is_some())
        .map(|chain| chain.inherited.iter().map(|range| range.page_count).sum());
    if let Some(chain) = chain {
        image.chain = chain;
    }
    image.dumped_at_unix_seconds = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
    let page_bytes = writer.runs().iter().map(|run| run.byte_len()).sum();
    let vma_count = image.vmas.len();
    let metadata = crp_image::to_archive(&image)?;
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
    Ok(DumpReport { vma_count, page_bytes, zero_pages, frozen_for, copied_on_write, inherited_pages })
}

/// The most bytes of pages that are not private anonymous memory a
/// copy-on-write dump reads while frozen and keeps in memory; past it the
/// whole copy is made frozen.
const KEPT_FROZEN_BYTES: u64 = 16 << 20;

/// Arms a copy-on-write snapshot of the private anonymous VMAs of
/// `planned` and reads the pages of the others now, or says why not
/// (`None`: too many such pages, or no snapshot possible; logged).
fn arm_snapshot(
    plan: &DumpPlan,
    frozen: &mut FrozenProcess,
    maps: &[procfs::MapsEntry],
    planned: &[(&crp_compound::vma::VmaRecord, Vec<(u64, u64)>)],
    backend: &dyn crate::backend::DumpBackend,
) -> Result<Option<(CowSnapshot, KeptPages)>, CrpError> {
    let others = || planned.iter().filter(|(vma, _)| !copied_on_write(vma)).flat_map(|(_, runs)| runs);
    let other_bytes: u64 = others().map(|&(_, pages)| pages.saturating_mul(4096)).sum();
    if other_bytes > KEPT_FROZEN_BYTES {
        tracing::info!(other_bytes, "too much shared or file-backed memory to keep aside: the pages are copied frozen");
        return Ok(None);
    }
    // A page not there at the freeze is not in the image: what the process
    // writes there later needs no copy, and a mapping without pages (a
    // reservation) no protection.
    let ranges: Vec<(u64, u64)> = planned
        .iter()
        .filter(|(vma, runs)| copied_on_write(vma) && !runs.is_empty())
        .map(|(vma, _)| (vma.start, vma.end))
        .collect();
    let directory = match plan.output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => std::path::Path::new("."),
    };
    let Some(snapshot) = crate::copy_on_write::arm(frozen, maps, &ranges, directory)? else {
        return Ok(None);
    };
    let mut kept = KeptPages::default();
    for &(vaddr, pages) in others() {
        let mut bytes = vec![0u8; usize::try_from(pages * 4096).unwrap_or(usize::MAX)];
        backend
            .read_memory(frozen.pid(), vaddr, &mut bytes)
            .map_err(|source| CrpError::Io { action: format!("reading pid {} at {vaddr:#x}", frozen.pid()), source })?;
        kept.runs.insert(vaddr, bytes);
    }
    Ok(Some((snapshot, kept)))
}

/// Pages read while frozen, by the address of their run.
#[derive(Debug, Default)]
struct KeptPages {
    runs: std::collections::BTreeMap<u64, Vec<u8>>,
}

impl KeptPages {
    /// Fills `buffer` from the run holding `address`, if one does.
    fn fill(&self, address: u64, buffer: &mut [u8]) -> bool {
        let Some((&start, bytes)) = self.runs.range(..=address).next_back() else {
            return false;
        };
        let offset = usize::try_from(address - start).unwrap_or(usize::MAX);
        match bytes.get(offset..offset.saturating_add(buffer.len())) {
            Some(source) => {
                buffer.copy_from_slice(source);
                true
            }
            None => false,
        }
    }
}

/// Whether `vma`'s pages can be read through a copy-on-write snapshot:
/// private anonymous memory (write protection covers nothing else, and a
/// shared mapping's pages may be written by other processes).
fn copied_on_write(vma: &crp_compound::vma::VmaRecord) -> bool {
    !vma.shared && matches!(vma.backing, Backing::Anonymous { .. })
}

/// Writes `planned` (each VMA with its runs of pages to store) through
/// `read`, leaving the zero pages of private anonymous memory out; returns
/// how many were left out.
fn write_pages(
    writer: &mut ImageWriter,
    planned: &[(&crp_compound::vma::VmaRecord, Vec<(u64, u64)>)],
    progress: &crate::progress::Progress,
    mut read: impl FnMut(u64, &mut [u8]) -> std::io::Result<()>,
) -> Result<u64, CrpError> {
    let mut zero_pages = 0u64;
    for (vma, runs) in planned {
        // A page private anonymous memory lacks after the restore reads as
        // zero there: its zero pages (read but never written, or zeroed) are
        // left out. Anywhere else a zero page may stand over other data (a
        // file's), and is stored.
        let omit_zeros = !vma.shared && matches!(vma.backing, Backing::Anonymous { .. });
        let mut read = |address, buffer: &mut [u8]| {
            if cancel::requested().is_some() {
                return Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "dump cancelled"));
            }
            read(address, buffer)?;
            progress.advance(buffer.len() as u64);
            Ok(())
        };
        if omit_zeros {
            // Small runs (an incremental dump's written pages) packed together.
            let added = writer.add_page_runs_without_zeros(runs, &mut read);
            cancel::check("dump")?;
            zero_pages += added?;
            continue;
        }
        for &(vaddr, page_count) in runs {
            let added = writer.add_page_run(vaddr, page_count, &mut read);
            cancel::check("dump")?;
            added?;
        }
    }
    Ok(zero_pages)
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
