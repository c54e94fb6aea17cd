//! `crp restore --lazy`: the process runs before its private anonymous
//! pages are in. Its memory step maps every VMA as usual and writes the
//! other page runs (file-backed private pages, shared memory) at once; the
//! runs of private anonymous VMAs are registered with a userfaultfd made
//! inside the child (MISSING mode) instead, and a pager thread of crp's
//! ([`serve`]) places each on its first touch or in the background, until
//! every run is in. A watchdog ([`watchdog`]) holds a duplicate of the
//! userfaultfd so that crp's death kills the process instead of leaving it
//! zero pages.
//!
//! Left eager (written before the release): runs of VMAs that are not
//! private anonymous memory, or are locked (mlock would fault every page in
//! at once), droppable or have guard regions.

mod serve;
mod space;
mod watchdog;

use std::cell::RefCell;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread::JoinHandle;

use crp_compound::vma::{Backing, GuardRegion, VmaFlags, VmaRecord};
use crp_image::{ImageError, ImageReader, PageRunEntry};
use crp_ptrace::{EngineError, Pages, Tracee, TraceeExt, userfault};
use nix::unistd::Pid;
pub use serve::{LazyError, LazyStats};

use super::memory;

/// The userfaultfd events the pager follows: a fork (its child is served
/// too), and memory the process moves or drops before its pages are in.
const FEATURES: u64 = userfault::FEATURE_EVENT_FORK
    | userfault::FEATURE_EVENT_REMAP
    | userfault::FEATURE_EVENT_REMOVE
    | userfault::FEATURE_EVENT_UNMAP;

/// The image's pages for a lazy restore ([`Pages`] for the memory kind).
#[derive(Debug)]
pub struct LazyPages {
    reader: Arc<ImageReader>,
    /// The VMAs whose pages may come lazily, `(start, end)`, ascending.
    lazy: Vec<(u64, u64)>,
    started: RefCell<Option<Started>>,
}

#[derive(Debug)]
struct Started {
    pid: Pid,
    state: Arc<AtomicU8>,
    pager: JoinHandle<Result<LazyStats, LazyError>>,
}

impl LazyPages {
    /// For the image `reader` (opened with its page runs unverified)
    /// describing `vmas` and `guards`. The runs written eagerly are
    /// verified here, before anything is created; the others are verified
    /// one by one as they are first needed.
    pub fn new(reader: Arc<ImageReader>, vmas: &[VmaRecord], guards: &[GuardRegion]) -> Result<Self, ImageError> {
        let lazy = vmas
            .iter()
            .filter(|vma| {
                let refused = VmaFlags::LOCKED | VmaFlags::LOCK_ON_FAULT | VmaFlags::DROPPABLE;
                matches!(vma.backing, Backing::Anonymous { .. })
                    && !vma.shared
                    && !vma.flags().intersects(refused)
                    && !guards.iter().any(|guard| vma.start <= guard.start && guard.start < vma.end)
            })
            .map(|vma| (vma.start, vma.end))
            .collect();
        let pages = Self { reader, lazy, started: RefCell::new(None) };
        let runs = pages.reader.page_runs();
        for index in (0..runs.len()).filter(|&index| pages.lazy_vma_of(&runs[index]).is_none()) {
            pages.reader.verify_run(index)?;
        }
        Ok(pages)
    }

    /// The process is released: the pager may prefetch.
    pub fn released(&self) {
        if let Some(started) = self.started.borrow().as_ref() {
            started.state.store(serve::RELEASED, Ordering::Relaxed);
        }
    }

    /// The lazy VMA holding all of `run`.
    fn lazy_vma_of(&self, run: &PageRunEntry) -> Option<(u64, u64)> {
        let after = self.lazy.partition_point(|&(start, _)| start <= run.vaddr);
        let &(start, end) = self.lazy.get(after.checked_sub(1)?)?;
        (run.vaddr_end() <= end).then_some((start, end))
    }

    /// Waits until every page is in (or the process is gone): what the
    /// pager did, or why it stopped (it killed the process then). Nothing
    /// to wait for when no run was lazy.
    pub fn finish(&self) -> Option<(Pid, Result<LazyStats, LazyError>)> {
        let started = self.started.borrow_mut().take()?;
        let result = started.pager.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        Some((started.pid, result))
    }

    /// Makes the userfaultfd in the child, registers `ranges` with it and
    /// starts the watchdog and the pager, which answers faults at once and
    /// prefetches once the process is [released](LazyPages::released).
    fn start(&self, tracee: &mut dyn Tracee, runs: Vec<usize>, ranges: &[(u64, u64)]) -> Result<(), EngineError> {
        let pid = tracee.pid();
        let flags = crp_ptrace::arg(libc::O_CLOEXEC | libc::O_NONBLOCK);
        let fd = tracee.syscall("userfaultfd", libc::SYS_userfaultfd, [flags, 0, 0, 0, 0, 0])?;
        let duplicate = crp_ptrace::sys::duplicate_descriptor(pid, i32::try_from(fd).unwrap_or(-1));
        tracee.syscall("close", libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
        let uffd = duplicate.map_err(|errno| EngineError::Syscall {
            syscall: "pidfd_getfd(userfaultfd)",
            args: vec![fd],
            pid,
            errno,
        })?;
        userfault::handshake(uffd.as_fd(), FEATURES).map_err(|errno| EngineError::Syscall {
            syscall: "UFFDIO_API(fork, remap, remove and unmap events)",
            args: vec![FEATURES],
            pid,
            errno,
        })?;
        for &(start, end) in ranges {
            userfault::register_missing(uffd.as_fd(), start, end - start).map_err(|errno| EngineError::Syscall {
                syscall: "UFFDIO_REGISTER(missing)",
                args: vec![start, end - start],
                pid,
                errno,
            })?;
        }
        let process = Pid::from_raw(pid);
        let watchdog = watchdog::Watchdog::start(process, uffd.as_fd()).map_err(|errno| EngineError::Syscall {
            syscall: "fork(watchdog)",
            args: Vec::new(),
            pid,
            errno,
        })?;
        let state = Arc::new(AtomicU8::new(serve::BUILDING));
        let mut pager = serve::Pager::new(Arc::clone(&self.reader), runs, uffd, Arc::clone(&state));
        let pager = std::thread::Builder::new()
            .name("crp-lazy".to_owned())
            .spawn(move || {
                let started = std::time::Instant::now();
                let result = pager.run();
                let stopped = pager.stopped();
                match &result {
                    // Given up on (the restore failed, or crp returns before
                    // every page is in): the process must not run on.
                    Ok(_) if stopped => {
                        kill_and_wait(process);
                        drop(watchdog);
                    }
                    Ok(stats) => {
                        tracing::info!(
                            ?stats,
                            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                            "lazy restore: every page is in"
                        );
                        watchdog.release();
                    }
                    Err(error) => {
                        tracing::warn!(%error, "lazy restore failed: killing the process");
                        kill_and_wait(process);
                        drop(watchdog);
                    }
                }
                // The userfaultfd closes last, with the pager.
                drop(pager);
                result
            })
            .map_err(|source| EngineError::Syscall {
                syscall: "spawn(lazy pager)",
                args: Vec::new(),
                pid,
                errno: source.raw_os_error().map_or(nix::errno::Errno::EAGAIN, nix::errno::Errno::from_raw),
            })?;
        *self.started.borrow_mut() = Some(Started { pid: process, state, pager });
        tracing::info!(pid, ranges = ranges.len(), "lazy restore: private anonymous memory registered");
        Ok(())
    }
}

/// SIGKILLs `process` and waits (without reaping it) until it is dead:
/// only then may its userfaultfd close.
fn kill_and_wait(process: Pid) {
    let pidfd = watchdog::pidfd_open(process);
    let _ = nix::sys::signal::kill(process, nix::sys::signal::Signal::SIGKILL);
    if let Ok(pidfd) = pidfd {
        watchdog::wait_until_dead(pidfd.as_fd());
    }
}

impl Drop for LazyPages {
    fn drop(&mut self) {
        // A restore that failed before the release: the pager stops (the
        // child is killed by its guard).
        if let Some(started) = self.started.get_mut().take() {
            started.state.store(serve::STOPPING, Ordering::Relaxed);
            let _ = started.pager.join();
        }
    }
}

impl Pages for LazyPages {
    fn runs(&self) -> Vec<(u64, u64)> {
        self.reader.page_runs().iter().map(|run| (run.vaddr, run.page_count)).collect()
    }

    fn write(&self, tracee: &mut dyn Tracee, wanted: &dyn Fn(u64) -> bool) -> Result<(), EngineError> {
        let runs = self.reader.page_runs();
        // Lazily only in the memory step, the first call; the descriptor
        // mappings' runs come later and are never in a lazy VMA.
        let first = self.started.borrow().is_none();
        let (lazy, eager): (Vec<usize>, Vec<usize>) = (0..runs.len())
            .filter(|&index| wanted(runs[index].vaddr))
            .partition(|&index| first && self.lazy_vma_of(&runs[index]).is_some());
        let mut ranges: Vec<(u64, u64)> = lazy.iter().filter_map(|&index| self.lazy_vma_of(&runs[index])).collect();
        ranges.dedup();
        if !lazy.is_empty() {
            self.start(tracee, lazy, &ranges)?;
        }
        // Verified when the image was opened (see new).
        let pieces = eager.iter().map(|&index| (runs[index].vaddr, self.reader.run_data(&runs[index])));
        memory::write_pieces(Pid::from_raw(tracee.pid()), pieces)
    }
}
