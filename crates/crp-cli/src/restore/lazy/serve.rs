//! The lazy restore's pager: one thread that answers the restored
//! process's missing-page faults from the mapped image and, between them,
//! places the runs no one asked for yet, until every run is in.
//!
//! A run is placed whole (`UFFDIO_COPY`, at most 8 MiB: the writer's
//! largest run), its checksum verified first, once: a fault costs at most
//! one run's checksum and copy. A fault where the image has no page (memory
//! never touched before the dump, or that the process dropped since) gets
//! the zero page. One thread does both, so a change the process makes to
//! its memory (read as an event) is always known before the next page is
//! placed; while such a change is on its way the kernel refuses placements
//! (EAGAIN) until its event is read.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use crp_image::{ImageError, ImageReader};
use crp_ptrace::userfault::{self, Message};
use nix::errno::Errno;

use super::space::{Change, Changes};
use crate::faults;

/// The pager's [`Pager::run`] states: the process is being built (only
/// faults are answered), released (prefetching too), or the restore failed
/// before the release (the pager stops).
pub(crate) const BUILDING: u8 = 0;
pub(crate) const RELEASED: u8 = 1;
pub(crate) const STOPPING: u8 = 2;

/// How long the pager waits for a fault before it looks whether the
/// process is released.
const BUILDING_POLL_MS: u16 = 5;

const PAGE: u64 = 4096;
const PAGE_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum LazyError {
    #[error("{0}; the restored process was killed before it could read that run")]
    Corrupted(ImageError),
    #[error("cannot place the image's pages at {address:#x} of the restored process: {errno}")]
    Place { address: u64, errno: Errno },
    #[error("cannot read the restored process's userfaultfd: {0}")]
    Read(Errno),
    #[error("cannot start the lazy restore's pager: {0}")]
    Start(std::io::Error),
}

impl LazyError {
    /// The image is at fault (exit 4), not the host.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Self::Corrupted(_))
    }
}

/// What the pager did.
#[derive(Debug, Clone, Copy, Default)]
pub struct LazyStats {
    /// Runs placed because a fault asked for one of their pages.
    pub on_fault: u64,
    /// Runs placed ahead of any fault.
    pub prefetched: u64,
    /// Zero pages placed for faults where the image holds no page.
    pub zero_pages: u64,
}

/// One address space served: the restored process's, and one per child
/// it forked meanwhile (a fork copies what is present, and leaves the rest
/// missing in the child as in the parent).
#[derive(Debug)]
struct Space {
    uffd: OwnedFd,
    changes: Changes,
    /// Per lazy run: placed here.
    placed: Vec<bool>,
    left: usize,
    /// Runs below this are placed.
    cursor: usize,
}

/// The pager's state, owned by its thread.
#[derive(Debug)]
pub(crate) struct Pager {
    reader: Arc<ImageReader>,
    /// Indices into the image's page runs of those served lazily,
    /// ascending by address.
    runs: Vec<usize>,
    verified: Vec<bool>,
    /// The restored process's first, then its children's.
    spaces: Vec<Space>,
    /// Faults read but not answered yet: (space, address).
    faults: VecDeque<(usize, u64)>,
    state: Arc<AtomicU8>,
    stats: LazyStats,
    placed_runs: u64,
}

/// How a placement ended.
enum Placed {
    Done,
    /// The address space is gone (the process exited or exec'd).
    Gone,
}

impl Pager {
    pub(crate) fn new(reader: Arc<ImageReader>, runs: Vec<usize>, uffd: OwnedFd, state: Arc<AtomicU8>) -> Self {
        let count = runs.len();
        let space = Space { uffd, changes: Changes::default(), placed: vec![false; count], left: count, cursor: 0 };
        Self {
            reader,
            runs,
            verified: vec![false; count],
            spaces: vec![space],
            faults: VecDeque::new(),
            state,
            stats: LazyStats::default(),
            placed_runs: 0,
        }
    }

    /// The restored process's userfaultfd.
    pub(crate) fn uffd(&self) -> BorrowedFd<'_> {
        self.spaces[0].uffd.as_fd()
    }

    /// Serves faults and prefetches until every run is in every space (or
    /// the process is gone, or crp gives up on the restore).
    pub(crate) fn run(&mut self) -> Result<LazyStats, LazyError> {
        loop {
            let state = self.state.load(Ordering::Relaxed);
            if state == STOPPING || self.spaces.is_empty() || self.spaces.iter().all(|space| space.left == 0) {
                return Ok(self.stats);
            }
            if state == BUILDING && self.faults.is_empty() {
                self.wait_for_fault()?;
            }
            for index in 0..self.spaces.len() {
                self.read_events(index)?;
            }
            if let Some((space, address)) = self.faults.pop_front() {
                self.answer_fault(space, address)?;
                continue;
            }
            if state == BUILDING {
                continue;
            }
            let Some(index) = self.spaces.iter().position(|space| space.left > 0) else { continue };
            let space = &mut self.spaces[index];
            while space.placed[space.cursor] {
                space.cursor += 1;
            }
            let run = space.cursor;
            if let Placed::Gone = self.place(index, run)? {
                self.forget(index);
            } else {
                self.stats.prefetched += 1;
            }
        }
    }

    /// Whether [`Pager::run`] returned because crp gave up on the restore.
    pub(crate) fn stopped(&self) -> bool {
        self.state.load(Ordering::Relaxed) == STOPPING
    }

    /// Waits a little for a message on the restored process's userfaultfd.
    fn wait_for_fault(&self) -> Result<(), LazyError> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds = [PollFd::new(self.uffd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(BUILDING_POLL_MS)) {
            Ok(_) | Err(Errno::EINTR) => Ok(()),
            Err(errno) => Err(LazyError::Read(errno)),
        }
    }

    /// An address space that is gone: the restored process's own means the
    /// pager is done.
    fn forget(&mut self, index: usize) {
        if index == 0 {
            self.spaces.clear();
        } else {
            self.spaces.remove(index);
            // Faults of spaces after it move down one.
            self.faults.retain(|(space, _)| *space != index);
            for (space, _) in &mut self.faults {
                if *space > index {
                    *space -= 1;
                }
            }
        }
    }

    /// Reads what waits on space `index`'s userfaultfd: changes to its
    /// memory are recorded at once, faults queued.
    fn read_events(&mut self, index: usize) -> Result<(), LazyError> {
        loop {
            let messages = userfault::read_messages(self.spaces[index].uffd.as_fd()).map_err(LazyError::Read)?;
            if messages.is_empty() {
                return Ok(());
            }
            for message in messages {
                let space = &mut self.spaces[index];
                match message {
                    Message::MissingFault { address } => self.faults.push_back((index, address & !(PAGE - 1))),
                    Message::Remove { start, end } | Message::Unmap { start, end } => {
                        space.changes.push(Change::Dropped { start, end });
                    }
                    Message::Remap { from, to, length } => space.changes.push(Change::Moved { from, to, length }),
                    Message::Fork { uffd } => {
                        // SAFETY: the kernel installed this new descriptor
                        // in crp's table for this message; nothing else owns it.
                        let uffd = unsafe { OwnedFd::from_raw_fd(uffd) };
                        let child = Space {
                            uffd,
                            changes: space.changes.clone(),
                            placed: space.placed.clone(),
                            left: space.left,
                            cursor: space.cursor,
                        };
                        tracing::info!("the restored process forked during the lazy restore: its child is served too");
                        self.spaces.push(child);
                    }
                    Message::WriteFault { .. } | Message::Other { .. } => {
                        tracing::debug!(?message, "userfaultfd message ignored");
                    }
                }
            }
        }
    }

    /// The lazy run holding image address `address`.
    fn run_of(&self, address: u64) -> Option<usize> {
        let runs = self.reader.page_runs();
        let after = self.runs.partition_point(|&index| runs[index].vaddr <= address);
        let candidate = after.checked_sub(1)?;
        (address < runs[self.runs[candidate]].vaddr_end()).then_some(candidate)
    }

    /// Answers a fault at page `address` of space `index`: its run is placed,
    /// or the zero page where the image has none.
    fn answer_fault(&mut self, index: usize, address: u64) -> Result<(), LazyError> {
        loop {
            let Some(space) = self.spaces.get(index) else { return Ok(()) };
            let wanted = space.changes.original(address).and_then(|original| self.run_of(original));
            if let Some(run) = wanted.filter(|&run| !space.placed[run]) {
                match self.place(index, run)? {
                    Placed::Gone => {
                        self.forget(index);
                        return Ok(());
                    }
                    // Asked again: now present, or dropped meanwhile.
                    Placed::Done => {
                        self.stats.on_fault += 1;
                        continue;
                    }
                }
            }
            match userfault::zero_page(space.uffd.as_fd(), address, PAGE) {
                Ok(()) => {
                    self.stats.zero_pages += 1;
                    return Ok(());
                }
                // Present already (placed after the fault), or no longer
                // mapped.
                Err(Errno::EEXIST | Errno::ENOENT) => return Ok(()),
                Err(Errno::EAGAIN) => self.read_events(index)?,
                Err(Errno::ESRCH) => {
                    self.forget(index);
                    return Ok(());
                }
                Err(errno) => return Err(LazyError::Place { address, errno }),
            }
        }
    }

    /// Places lazy run `run` in space `index` where its pages are now,
    /// its checksum verified first.
    fn place(&mut self, index: usize, run: usize) -> Result<Placed, LazyError> {
        let reader = Arc::clone(&self.reader);
        let entry = &reader.page_runs()[self.runs[run]];
        if !self.verified[run] {
            reader.verify_run(self.runs[run]).map_err(LazyError::Corrupted)?;
            self.verified[run] = true;
        }
        let data = reader.run_data(entry);
        let count = usize::try_from(entry.page_count).unwrap_or(usize::MAX);
        let mut page = 0usize;
        while page < count {
            let space = &self.spaces[index];
            let image_address = |page: usize| entry.vaddr + (page * PAGE_BYTES) as u64;
            let Some(start) = space.changes.current(image_address(page)) else {
                page += 1;
                continue;
            };
            // The pages from here that are still side by side.
            let mut stretch = 1;
            while page + stretch < count
                && space.changes.current(image_address(page + stretch)) == Some(start + (stretch * PAGE_BYTES) as u64)
            {
                stretch += 1;
            }
            let bytes = &data[page * PAGE_BYTES..(page + stretch) * PAGE_BYTES];
            match userfault::copy(space.uffd.as_fd(), start, bytes) {
                Ok(copied) => page += usize::try_from(copied / PAGE).unwrap_or(stretch).clamp(1, stretch),
                // A page present already (the process's since it was placed)
                // or not mapped any more: the rest of the stretch goes on.
                Err((Errno::EEXIST | Errno::ENOENT, copied)) => page += usize::try_from(copied / PAGE).unwrap_or(0) + 1,
                Err((Errno::EAGAIN, copied)) => {
                    page += usize::try_from(copied / PAGE).unwrap_or(0);
                    self.read_events(index)?;
                    std::thread::yield_now();
                }
                Err((Errno::ESRCH, _)) => return Ok(Placed::Gone),
                Err((errno, _)) => return Err(LazyError::Place { address: start, errno }),
            }
        }
        let space = &mut self.spaces[index];
        space.placed[run] = true;
        space.left -= 1;
        self.placed_runs += 1;
        faults::reached("lazy", self.placed_runs);
        Ok(Placed::Done)
    }
}
