//! A copy-on-write snapshot of a running process's private anonymous
//! memory, through userfaultfd write protection in synchronous mode: the
//! process's pages are write-protected while it is frozen, then it runs on
//! while crp reads them. A write to a page crp has not read yet waits, in
//! the kernel, until the handler thread has copied the page aside and
//! unprotected it; the reader takes the copy instead of the changed page.
//! What is read is the memory as it was at the freeze.
//!
//! The reader goes through the registered ranges in ascending address
//! order and says how far it has read (`consumed_to`): a write below that
//! needs no copy. The copies kept in memory are bounded (`KEPT_BYTES`);
//! past that they go to an unlinked file beside the image (page cache, not
//! crp's memory). Only where no such file can be made does a write to a
//! page still ahead of the reader wait until the reader has passed it.
//!
//! Discarding, unmapping or moving memory the reader has not passed
//! (madvise, munmap, mremap) loses what the snapshot was to hold: the read
//! fails with [`CowError::Lost`] and the caller dumps again with the
//! process frozen.
//!
//! Nothing outlives crp: the userfaultfd exists only as crp's descriptor
//! (the process's own was closed right after it was made). When it closes,
//! by [`CowSnapshot::finish`], by drop, or because crp died, the kernel
//! unregisters every range and wakes every waiting write.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crp_ptrace::userfault::{self, Message};
use nix::errno::Errno;
use nix::unistd::Pid;

const PAGE: u64 = 4096;
const PAGE_BYTES: usize = 4096;

/// What the reader has passed is unregistered this many bytes at a time:
/// no more faults there, and no long hold of the process's memory map.
const RELEASE_BYTES: u64 = 32 << 20;

/// The most bytes of pages copied aside at any time.
const KEPT_BYTES: usize = 32 << 20;

/// The userfaultfd features the snapshot needs.
pub const FEATURES: u64 = userfault::FEATURE_PAGEFAULT_FLAG_WP
    | userfault::FEATURE_EVENT_REMOVE
    | userfault::FEATURE_EVENT_UNMAP
    | userfault::FEATURE_EVENT_REMAP;

#[derive(Debug, thiserror::Error)]
pub enum CowError {
    #[error("userfaultfd handshake (write protection with remove, unmap and remap events): {0}")]
    Handshake(Errno),
    #[error("cannot register {start:#x}-{end:#x} for write protection: {errno}")]
    Register { start: u64, end: u64, errno: Errno },
    #[error("cannot write-protect {start:#x}-{end:#x}: {errno}")]
    Protect { start: u64, end: u64, errno: Errno },
    #[error("cannot start the copy-on-write handler thread: {0}")]
    Thread(std::io::Error),
    #[error(
        "the process {what} {start:#x}-{end:#x} while crp was copying it (its pages from {address:#x} were not \
         copied yet)"
    )]
    Lost { address: u64, what: &'static str, start: u64, end: u64 },
    #[error("cannot read the process's memory at {address:#x}: {errno}")]
    Read { address: u64, errno: Errno },
    #[error("the copy-on-write handler failed: {0}")]
    Handler(String),
}

/// Memory the process discarded, unmapped or moved during the copy.
#[derive(Debug, Clone, Copy)]
struct Gone {
    what: &'static str,
    start: u64,
    end: u64,
}

/// Copies of pages that did not fit in memory: an unlinked file, and where
/// in it each page's copy is.
#[derive(Debug)]
struct Spill {
    file: File,
    slots: BTreeMap<u64, u64>,
    /// Offsets of slots read back, to be used again.
    free: Vec<u64>,
    end: u64,
}

impl Spill {
    /// An unlinked file in `directory`, `None` where the file system has
    /// no O_TMPFILE (logged).
    fn create(directory: &Path) -> Option<Self> {
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
            .mode(0o600)
            .open(directory);
        match opened {
            Ok(file) => Some(Self { file, slots: BTreeMap::new(), free: Vec::new(), end: 0 }),
            Err(error) => {
                tracing::info!(directory = %directory.display(), %error, "no spill file: writes wait for the reader");
                None
            }
        }
    }

    fn put(&mut self, page: u64, bytes: &[u8]) -> std::io::Result<()> {
        let offset = self.free.pop().unwrap_or_else(|| {
            self.end += PAGE;
            self.end - PAGE
        });
        self.file.write_all_at(bytes, offset)?;
        self.slots.insert(page, offset);
        Ok(())
    }

    fn take(&mut self, page: u64, into: &mut [u8]) -> std::io::Result<()> {
        if let Some(offset) = self.slots.remove(&page) {
            self.free.push(offset);
            self.file.read_exact_at(into, offset)?;
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct State {
    /// Pages copied aside before their first write, by address.
    kept: BTreeMap<u64, Box<[u8]>>,
    kept_bytes: usize,
    /// Where the spill file goes, and the file once made.
    spill_directory: PathBuf,
    spill: Option<Option<Spill>>,
    /// The reader has read everything below this address.
    consumed_to: u64,
    gone: Vec<Gone>,
    failure: Option<String>,
    stopping: bool,
    /// Write faults seen, and pages copied aside, in all.
    faults: u64,
    copied: u64,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when the reader moves on or the snapshot stops.
    moved: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves plain data.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What the copy-on-write phase did, for the log and the dump's report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CowStats {
    /// Writes the process made to protected pages during the copy.
    pub faults: u64,
    /// Pages copied aside before their first write.
    pub copied: u64,
}

/// An armed snapshot: the ranges are write-protected and a handler thread
/// answers write faults.
#[derive(Debug)]
pub struct CowSnapshot {
    pid: Pid,
    /// The registered ranges, ascending, and how far from their start they
    /// are unregistered again.
    ranges: Vec<(u64, u64)>,
    released_to: std::cell::Cell<u64>,
    shared: Arc<Shared>,
    /// Written to (and closed) to stop the handler.
    stop: Option<OwnedFd>,
    handler: Option<JoinHandle<()>>,
    uffd: Arc<OwnedFd>,
}

impl CowSnapshot {
    /// Arms `uffd` (a userfaultfd created inside frozen process `pid`) over
    /// `ranges` (start, end; private anonymous mappings, ascending): every
    /// page of them is write-protected when this returns. Copies that do not
    /// fit in memory go to an unlinked file in `spill_directory`. On error
    /// nothing is left: dropping the descriptor unregisters what was
    /// registered.
    pub fn arm(pid: Pid, uffd: OwnedFd, ranges: &[(u64, u64)], spill_directory: &Path) -> Result<Self, CowError> {
        userfault::handshake(uffd.as_fd(), FEATURES).map_err(CowError::Handshake)?;
        for &(start, end) in ranges {
            userfault::register_write_protect(uffd.as_fd(), start, end - start)
                .map_err(|errno| CowError::Register { start, end, errno })?;
        }
        for &(start, end) in ranges {
            userfault::write_protect(uffd.as_fd(), start, end - start, true).map_err(|errno| CowError::Protect {
                start,
                end,
                errno,
            })?;
        }
        let uffd = Arc::new(uffd);
        let shared = Arc::new(Shared::default());
        shared.lock().spill_directory = spill_directory.to_owned();
        let (stop_read, stop_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|errno| CowError::Thread(std::io::Error::from(errno)))?;
        let handler = {
            let (uffd, shared) = (Arc::clone(&uffd), Arc::clone(&shared));
            std::thread::Builder::new()
                .name("crp-cow".to_owned())
                .spawn(move || handle(pid, &uffd, &shared, &stop_read))
                .map_err(CowError::Thread)?
        };
        let released_to = std::cell::Cell::new(ranges.first().map_or(0, |&(start, _)| start));
        Ok(Self {
            pid,
            ranges: ranges.to_vec(),
            released_to,
            shared,
            stop: Some(stop_write),
            handler: Some(handler),
            uffd,
        })
    }

    /// Reads the snapshot's bytes at `address` into `buffer`: the memory as
    /// it was when armed. Calls must go up through the ranges in ascending
    /// order; what lies below the end of the last call is never asked for
    /// again.
    pub fn read(&self, address: u64, buffer: &mut [u8]) -> Result<(), CowError> {
        let end = address + buffer.len() as u64;
        let read = crp_ptrace::sys::read_memory(self.pid, address, buffer);
        let mut state = self.shared.lock();
        // Pages written since being armed were copied aside first: their
        // copies are what the snapshot holds. A page without one was still
        // protected when read above, since a copy is made before a page is
        // unprotected and this lock is held while it is made.
        let offsets: Vec<u64> = state.kept.range(address..end).map(|(&page, _)| page).collect();
        for page in offsets {
            if let Some(bytes) = state.kept.remove(&page) {
                let offset = usize::try_from(page - address).unwrap_or(usize::MAX);
                buffer[offset..offset + bytes.len()].copy_from_slice(&bytes);
                state.kept_bytes -= bytes.len();
            }
        }
        let mut spill_failure = None;
        if let Some(Some(spill)) = state.spill.as_mut() {
            let pages: Vec<u64> = spill.slots.range(address..end).map(|(&page, _)| page).collect();
            for page in pages {
                let offset = usize::try_from(page - address).unwrap_or(usize::MAX);
                if let Err(error) = spill.take(page, &mut buffer[offset..offset + PAGE_BYTES]) {
                    spill_failure = Some(format!("reading a copy back from the spill file: {error}"));
                }
            }
        }
        let lost = state.gone.iter().find(|gone| gone.start < end && address < gone.end).copied();
        state.consumed_to = state.consumed_to.max(end);
        let failure = state.failure.clone().or(spill_failure);
        drop(state);
        self.shared.moved.notify_all();
        if end >= self.released_to.get() + RELEASE_BYTES {
            self.release_below(end);
        }
        if let Some(gone) = lost {
            return Err(CowError::Lost { address, what: gone.what, start: gone.start, end: gone.end });
        }
        if let Some(failure) = failure {
            return Err(CowError::Handler(failure));
        }
        read.map_err(|errno| CowError::Read { address, errno })
    }

    /// Unregisters what lies below `end` and was not yet: the reader has
    /// read it. A failure only leaves it to the close.
    fn release_below(&self, end: u64) {
        let from = self.released_to.get();
        for &(start, range_end) in &self.ranges {
            let (start, stop) = (start.max(from), range_end.min(end));
            if start < stop
                && let Err(errno) = userfault::unregister(self.uffd.as_fd(), start, stop - start)
            {
                tracing::debug!(start, stop, %errno, "unregistering what was read failed");
            }
        }
        self.released_to.set(end);
    }

    /// Unregisters what is left, a piece at a time, then stops the handler
    /// and closes the userfaultfd: the process's memory is no longer
    /// tracked.
    pub fn finish(mut self) -> CowStats {
        for (start, end) in self.ranges.clone() {
            let mut at = start.max(self.released_to.get());
            while at < end {
                at = at.saturating_add(RELEASE_BYTES).min(end);
                self.release_below(at);
            }
        }
        self.stop_handler();
        let state = self.shared.lock();
        CowStats { faults: state.faults, copied: state.copied }
    }

    fn stop_handler(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.moved.notify_all();
        // Closing the pipe's write end wakes the handler's poll.
        drop(self.stop.take());
        if let Some(handler) = self.handler.take() {
            let _ = handler.join();
        }
    }
}

impl Drop for CowSnapshot {
    fn drop(&mut self) {
        // The userfaultfd closes with the last Arc, after the handler has
        // ended: the kernel then unregisters it and wakes every write.
        self.stop_handler();
    }
}

/// The handler thread: answers write faults and records memory that goes
/// away, until `stop` is closed.
fn handle(pid: Pid, uffd: &OwnedFd, shared: &Shared, stop: &OwnedFd) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    loop {
        let mut fds = [PollFd::new(uffd.as_fd(), PollFlags::POLLIN), PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => return fail(shared, format!("poll: {errno}")),
        }
        if fds[1].revents().is_some_and(|events| !events.is_empty()) {
            return;
        }
        let mut queue = match userfault::read_messages(uffd.as_fd()) {
            Ok(messages) => std::collections::VecDeque::from(messages),
            Err(errno) => return fail(shared, format!("reading the userfaultfd: {errno}")),
        };
        while let Some(message) = queue.pop_front() {
            match answer(pid, uffd, shared, message) {
                Ok(Answered::Done) => {}
                // The memory map is changing and the event saying how waits
                // to be read: read it, then try the page again.
                Ok(Answered::Again) => {
                    match userfault::read_messages(uffd.as_fd()) {
                        Ok(messages) => queue.extend(messages),
                        Err(errno) => return fail(shared, format!("reading the userfaultfd: {errno}")),
                    }
                    queue.push_back(message);
                    std::thread::yield_now();
                }
                Err(failure) => return fail(shared, failure),
            }
        }
    }
}

/// What became of a message.
enum Answered {
    Done,
    /// To be answered again after the messages waiting behind it.
    Again,
}

fn fail(shared: &Shared, failure: String) {
    tracing::warn!(%failure, "copy-on-write handler stopped");
    shared.lock().failure = Some(failure);
    shared.moved.notify_all();
}

fn answer(pid: Pid, uffd: &OwnedFd, shared: &Shared, message: Message) -> Result<Answered, String> {
    let gone = |what, start, end| {
        shared.lock().gone.push(Gone { what, start, end });
        Ok(Answered::Done)
    };
    match message {
        Message::WriteFault { address } => {
            let page = address & !(PAGE - 1);
            keep_before_write(pid, shared, page)?;
            match userfault::write_protect(uffd.as_fd(), page, PAGE, false) {
                // Unmapped meanwhile: nothing waits on it any more.
                Ok(()) | Err(Errno::ENOENT) => Ok(Answered::Done),
                Err(Errno::EAGAIN) => Ok(Answered::Again),
                Err(errno) => Err(format!("unprotecting {page:#x}: {errno}")),
            }
        }
        Message::Remove { start, end } => gone("discarded", start, end),
        Message::Unmap { start, end } => gone("unmapped", start, end),
        Message::Remap { from, length, .. } => gone("moved", from, from + length),
        // Not registered for missing pages, nor for fork events.
        Message::MissingFault { .. } | Message::Fork { .. } | Message::Other { .. } => {
            tracing::debug!(?message, "userfaultfd message ignored");
            Ok(Answered::Done)
        }
    }
}

/// Copies `page` aside unless the reader has passed it: in memory up to
/// `KEPT_BYTES`, then in the spill file; without one, waits while the
/// copies in memory are at their bound.
fn keep_before_write(pid: Pid, shared: &Shared, page: u64) -> Result<(), String> {
    let mut state = shared.lock();
    state.faults += 1;
    let spills = |state: &mut State| {
        if state.kept_bytes < KEPT_BYTES {
            return false;
        }
        let directory = state.spill_directory.clone();
        state.spill.get_or_insert_with(|| Spill::create(&directory)).is_some()
    };
    while state.kept_bytes >= KEPT_BYTES && !spills(&mut state) && page >= state.consumed_to && !state.stopping {
        state = shared.moved.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
    }
    let spilled = state.spill.as_ref().and_then(Option::as_ref).is_some_and(|spill| spill.slots.contains_key(&page));
    if page < state.consumed_to || state.stopping || state.kept.contains_key(&page) || spilled {
        return Ok(());
    }
    let mut bytes = vec![0u8; PAGE_BYTES].into_boxed_slice();
    crp_ptrace::sys::read_memory(pid, page, &mut bytes).map_err(|errno| format!("copying {page:#x}: {errno}"))?;
    state.copied += 1;
    if state.kept_bytes >= KEPT_BYTES
        && let Some(Some(spill)) = state.spill.as_mut()
    {
        return spill.put(page, &bytes).map_err(|error| format!("writing the copy of {page:#x} aside: {error}"));
    }
    state.kept.insert(page, bytes);
    state.kept_bytes += PAGE_BYTES;
    Ok(())
}
