//! The guard that outlives a killed crp: while the dump changes a socket
//! of the original to read it (`TCP_REPAIR` on, `SO_PEEK_OFF` moved), a
//! watchdog process puts it back if crp dies (SIGKILL included) before
//! doing so itself. Written by hand: no crate does this.
//!
//! The watchdog is a child of crp's made with `clone(CLONE_FILES)`: it
//! shares crp's descriptor table, so crp's duplicates of the sockets
//! (`pidfd_getfd`) are its own, with nothing to pass. It waits on a robust,
//! process-shared mutex that crp's dumping thread holds, in a page both
//! share; the page also lists the sockets changed now, each with what to
//! put back. The kernel releases a dying thread's robust mutexes early in
//! its exit (`exit_mm`), before it closes its files and long before it lets
//! its tracees go (`exit_notify`), so the watchdog is woken while the
//! original is still frozen. Woken so, it puts back each socket listed
//! (only what is still changed: repair off, SO_REUSEADDR as it was, which
//! repair off clears, the peek offset) and exits; woken by crp's unlock
//! after crp says it is done, it exits touching nothing. crp reaps it;
//! orphaned, its new parent does.
//!
//! What stays open: the kernel wakes the watchdog before it lets the
//! original go, but nothing orders the two after that; the watchdog
//! (SCHED_FIFO, so it preempts ordinary tasks) needs a few microseconds
//! per socket, the original its CPU back to leave the ptrace stop. A
//! process blocked in `recv` on the very socket read wins that race
//! sometimes (README). Closing it would need the original parked in a
//! syscall the watchdog ends (crp-ptrace's parking), not done here. Not started at all for
//! a process with no connection to read and no queue to walk.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

use crp_ptrace::Checkpoint;
use nix::errno::Errno;

use super::tcp::{TCP_REPAIR, TCP_REPAIR_OFF_NO_WP};

/// glibc's values (not in the libc crate for Linux).
const PTHREAD_MUTEX_ROBUST: libc::c_int = 1;
const PTHREAD_PROCESS_SHARED: libc::c_int = 1;
/// The robust futex word (kernel ABI): owner tid, waiters, owner died.
const FUTEX_WAITERS: u32 = 0x8000_0000;
const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;
const SLOTS: usize = 16;

/// What the watchdog puts back on a socket crp changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Restore {
    /// `TCP_REPAIR` turned on: off again, and SO_REUSEADDR (which repair
    /// mode overrides and repair off clears) set back to this.
    Repair { reuse_address: i32 },
    /// `SO_PEEK_OFF` moved: set back to this.
    PeekOffset(i32),
}

impl Restore {
    fn encode(self) -> (i32, i32) {
        match self {
            Self::Repair { reuse_address } => (1, reuse_address),
            Self::PeekOffset(offset) => (2, offset),
        }
    }
}

#[repr(C)]
struct Slot {
    /// crp's duplicate of the socket (-1: free), written last.
    fd: AtomicI32,
    what: AtomicI32,
    value: AtomicI32,
}

/// The page crp and the watchdog share.
#[repr(C)]
struct Shared {
    /// Robust, process-shared, held by crp's dumping thread; its first
    /// word (glibc's `__lock`) is the robust futex word.
    mutex: libc::pthread_mutex_t,
    /// crp finished: the watchdog exits touching nothing.
    done: AtomicU32,
    slots: [Slot; SLOTS],
    /// The thread held waiting for a signal (see [`hold`]): its process
    /// (0: none held), its id, and the signal that ends the wait.
    held_process: AtomicI32,
    held_thread: AtomicI32,
    held_signal: AtomicI32,
}

const SHARED_SIZE: usize = 4096;
const _: () = assert!(std::mem::size_of::<Shared>() <= SHARED_SIZE);

struct Watchdog {
    shared: *mut Shared,
    pid: libc::pid_t,
}

thread_local! {
    /// This thread's watchdog, once one socket needed it. One per thread,
    /// as the mutex it waits on is held by the thread that started it: a
    /// thread that ends without [`finish`] wakes its own watchdog only, and
    /// the sockets listed then are its own (a watchdog shared by threads
    /// would put back, when one of them ends, what another is reading).
    static WATCHDOG: RefCell<Option<Watchdog>> = const { RefCell::new(None) };
}

/// A testing hook called at each moment a socket is changed (set by the
/// CLI: `tcp-repair@N`, the Nth connection end in repair mode being read;
/// `peeking@N`, the Nth queue walked with its peek offset moved).
static CHECKPOINT: Mutex<Option<Checkpoint>> = Mutex::new(None);
static REPAIRED: AtomicU64 = AtomicU64::new(0);
static PEEKED: AtomicU64 = AtomicU64::new(0);

/// Sets the hook called at the moments a socket of the original is changed.
pub fn set_checkpoint(checkpoint: Checkpoint) {
    *CHECKPOINT.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(checkpoint);
}

/// One socket listed as changed; dropped, it is crp's to have put back.
#[derive(Debug)]
pub(crate) struct Guard {
    slot: Option<usize>,
    restore: Restore,
}

/// Lists `socket` (a duplicate in crp) as about to be changed, starting
/// the watchdog if this dump has none yet. Without one (clone failed) the
/// socket is changed unguarded, as before, with a warning in the log.
pub(crate) fn guard(socket: BorrowedFd<'_>, restore: Restore) -> Guard {
    let slot = WATCHDOG.with_borrow_mut(|current| {
        if current.is_none() {
            match start() {
                Ok(started) => *current = Some(started),
                Err(errno) => {
                    tracing::warn!(%errno, "no watchdog: a crp killed while it reads a socket leaves it changed");
                }
            }
        }
        let watchdog = current.as_ref()?;
        // SAFETY: the page stays mapped while the watchdog is recorded.
        let shared = unsafe { &*watchdog.shared };
        let index = shared.slots.iter().position(|slot| slot.fd.load(Ordering::Relaxed) < 0)?;
        let (what, value) = restore.encode();
        shared.slots[index].what.store(what, Ordering::Relaxed);
        shared.slots[index].value.store(value, Ordering::Relaxed);
        shared.slots[index].fd.store(socket.as_raw_fd(), Ordering::Release);
        Some(index)
    });
    Guard { slot, restore }
}

impl Guard {
    /// The socket is changed now: the testing hook's moment.
    pub(crate) fn changed(&self) {
        let (moment, counter) = match self.restore {
            Restore::Repair { .. } => ("tcp-repair", &REPAIRED),
            Restore::PeekOffset(_) => ("peeking", &PEEKED),
        };
        let count = counter.fetch_add(1, Ordering::Relaxed) + 1;
        let checkpoint = *CHECKPOINT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(checkpoint) = checkpoint {
            checkpoint(moment, count);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(index) = self.slot else { return };
        WATCHDOG.with_borrow(|current| {
            if let Some(watchdog) = current {
                // SAFETY: the page stays mapped while the watchdog is recorded.
                unsafe { &*watchdog.shared }.slots[index].fd.store(-1, Ordering::Release);
            }
        });
    }
}

/// Ends this thread's watchdog, if it has one: it exits touching nothing
/// and is reaped. Called by the thread that changed the sockets, once none is.
pub(crate) fn finish() {
    let Some(watchdog) = WATCHDOG.with_borrow_mut(Option::take) else { return };
    // SAFETY: the page is mapped until the munmap below; the mutex was
    // locked in `start`.
    let unlocked = unsafe {
        (*watchdog.shared).done.store(1, Ordering::Release);
        libc::pthread_mutex_unlock(&raw mut (*watchdog.shared).mutex)
    };
    if unlocked != 0 {
        // The mutex refused (it is this thread's own): the watchdog would
        // wait on. No socket is changed now; it is ended instead.
        tracing::warn!(errno = %Errno::from_raw(unlocked), "socket watchdog ended with SIGKILL");
        // SAFETY: kill sends a signal to crp's own child.
        unsafe { libc::kill(watchdog.pid, libc::SIGKILL) };
    }
    let mut status = 0;
    // SAFETY: waits for crp's own child; status is a valid int.
    while unsafe { libc::waitpid(watchdog.pid, &raw mut status, libc::__WALL) } < 0 && Errno::last() == Errno::EINTR {}
    // SAFETY: the page was mapped by `start`, and no one refers to it now.
    unsafe { libc::munmap(watchdog.shared.cast(), SHARED_SIZE) };
    tracing::debug!(pid = watchdog.pid, status, "socket watchdog ended");
}

/// Thread `thread` of `process` is held waiting for `signal` (blocked,
/// in `rt_sigtimedwait`): a crp that dies while it holds it is let go by
/// the watchdog, which sends that signal once every socket is put back,
/// never before. Starts this thread's watchdog if it has none; an error
/// when none can be started (the thread must not be held then: nothing
/// but its timeout would let it go).
pub fn hold(process: i32, thread: i32, signal: i32) -> Result<Held, Errno> {
    WATCHDOG.with_borrow_mut(|current| {
        if current.is_none() {
            *current = Some(start()?);
        }
        let Some(watchdog) = current.as_ref() else { return Err(Errno::ESRCH) };
        // SAFETY: the page stays mapped while the watchdog is recorded.
        let shared = unsafe { &*watchdog.shared };
        shared.held_thread.store(thread, Ordering::Relaxed);
        shared.held_signal.store(signal, Ordering::Relaxed);
        shared.held_process.store(process, Ordering::Release);
        Ok(Held(()))
    })
}

/// A hold [`hold`] registered; dropped once the process is no longer held.
#[derive(Debug)]
pub struct Held(());

impl Drop for Held {
    fn drop(&mut self) {
        WATCHDOG.with_borrow(|current| {
            if let Some(watchdog) = current {
                // SAFETY: the page stays mapped while the watchdog is recorded.
                unsafe { &*watchdog.shared }.held_process.store(0, Ordering::Release);
            }
        });
    }
}

/// The counters of the testing moments start again (one dump each).
pub(crate) fn reset_moments() {
    REPAIRED.store(0, Ordering::Relaxed);
    PEEKED.store(0, Ordering::Relaxed);
}

fn start() -> Result<Watchdog, Errno> {
    let started = std::time::Instant::now();
    // SAFETY: a fresh shared anonymous page; checked below.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SHARED_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    let shared = page.cast::<Shared>();
    // SAFETY: the page is ours, zeroed, large enough and aligned for
    // Shared; the attribute and the mutex are initialised before use.
    unsafe {
        let mut attributes: libc::pthread_mutexattr_t = std::mem::zeroed();
        libc::pthread_mutexattr_init(&raw mut attributes);
        libc::pthread_mutexattr_setpshared(&raw mut attributes, PTHREAD_PROCESS_SHARED);
        libc::pthread_mutexattr_setrobust(&raw mut attributes, PTHREAD_MUTEX_ROBUST);
        let initialised = libc::pthread_mutex_init(&raw mut (*shared).mutex, &raw const attributes);
        libc::pthread_mutexattr_destroy(&raw mut attributes);
        let locked = if initialised == 0 { libc::pthread_mutex_lock(&raw mut (*shared).mutex) } else { initialised };
        if locked != 0 {
            libc::munmap(page, SHARED_SIZE);
            return Err(Errno::from_raw(locked));
        }
        for slot in &(*shared).slots {
            slot.fd.store(-1, Ordering::Relaxed);
        }
    }
    // SAFETY: clone without CLONE_VM is fork with the descriptor table
    // shared; the child runs only `watch`, which makes raw system calls and
    // never returns.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::CLONE_FILES | libc::SIGCHLD, 0, 0, 0, 0) };
    if pid == 0 {
        // SAFETY: this is the child; the page is mapped (shared) here too.
        unsafe { watch(&*shared) }
    }
    if pid < 0 {
        let errno = Errno::last();
        // SAFETY: locked and mapped above; nothing else refers to them.
        unsafe {
            libc::pthread_mutex_unlock(&raw mut (*shared).mutex);
            libc::munmap(page, SHARED_SIZE);
        }
        return Err(errno);
    }
    let pid = libc::pid_t::try_from(pid).unwrap_or(-1);
    tracing::debug!(pid, took_us = started.elapsed().as_micros(), "socket watchdog started");
    Ok(Watchdog { shared, pid })
}

/// The watchdog: waits until crp unlocks the mutex or dies holding it,
/// then puts back what the slots list (unless crp said it is done).
///
/// # Safety
/// Only in the child `start` made; `shared` is the page it shares.
unsafe fn watch(shared: &Shared) -> ! {
    // Not stopped or ended with crp's process group (Ctrl-C, Ctrl-Z):
    // crp ends it, or its death wakes it.
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGPIPE, libc::SIGTSTP] {
        // SAFETY: sets a disposition; no handler of this process runs.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    // SAFETY: the name is a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"crp-watchdog".as_ptr()) };
    // Real-time (CAP_SYS_NICE; else as it is): woken, it runs at once,
    // preempting ordinary tasks, crp's exiting thread included, instead
    // of waiting for a CPU while the original is let go.
    let priority = libc::sched_param { sched_priority: 1 };
    // SAFETY: sets this process's own policy from a valid parameter.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const priority) };
    // SAFETY: glibc's pthread_mutex_t begins with its futex word, an int
    // aligned for it.
    let word = unsafe { &*(&raw const shared.mutex).cast::<AtomicU32>() };
    loop {
        let value = word.load(Ordering::Acquire);
        if value & FUTEX_TID_MASK == 0 || value & FUTEX_OWNER_DIED != 0 {
            break;
        }
        if value & FUTEX_WAITERS == 0
            && word.compare_exchange(value, value | FUTEX_WAITERS, Ordering::AcqRel, Ordering::Acquire).is_err()
        {
            continue;
        }
        // SAFETY: waits on a shared futex word while it holds this value
        // (the owner died or unlocked: it changes and wakes us).
        unsafe {
            libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, value | FUTEX_WAITERS, 0, 0, 0);
        }
    }
    if shared.done.load(Ordering::Acquire) == 0 {
        for slot in &shared.slots {
            let fd = slot.fd.load(Ordering::Acquire);
            if fd >= 0 {
                put_back(fd, slot.what.load(Ordering::Relaxed), slot.value.load(Ordering::Relaxed));
            }
        }
        // Only now may the held process go on.
        let process = shared.held_process.load(Ordering::Acquire);
        if process > 0 {
            let (thread, signal) =
                (shared.held_thread.load(Ordering::Relaxed), shared.held_signal.load(Ordering::Relaxed));
            // SAFETY: sends a signal to one thread; no memory is involved.
            unsafe { libc::syscall(libc::SYS_tgkill, process, thread, signal) };
        }
    }
    // SAFETY: ends this process at once (no atexit handlers of crp's).
    unsafe { libc::_exit(0) }
}

/// What one slot lists, put back where it is still changed.
fn put_back(fd: i32, what: i32, value: i32) {
    let get = |level, name| {
        let mut current: i32 = 0;
        let mut length = 4 as libc::socklen_t;
        // SAFETY: current and length are valid for the int getsockopt writes.
        let result = unsafe { libc::getsockopt(fd, level, name, (&raw mut current).cast(), &raw mut length) };
        (result == 0).then_some(current)
    };
    let set = |level, name, value: i32| {
        // SAFETY: the value is a valid int for the length given.
        unsafe { libc::setsockopt(fd, level, name, (&raw const value).cast(), 4) == 0 }
    };
    match what {
        1 => {
            if get(libc::IPPROTO_TCP, TCP_REPAIR) == Some(1)
                && !set(libc::IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)
            {
                set(libc::IPPROTO_TCP, TCP_REPAIR, 0);
            }
            if get(libc::SOL_SOCKET, libc::SO_REUSEADDR).is_some_and(|current| current != value) {
                set(libc::SOL_SOCKET, libc::SO_REUSEADDR, value);
            }
        }
        2 if get(libc::SOL_SOCKET, libc::SO_PEEK_OFF).is_some_and(|current| current != value) => {
            set(libc::SOL_SOCKET, libc::SO_PEEK_OFF, value);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixDatagram;
    use std::time::{Duration, Instant};

    use super::*;

    fn peek_offset(socket: BorrowedFd<'_>) -> i32 {
        let mut value: i32 = 0;
        let mut length = 4 as libc::socklen_t;
        // SAFETY: value and length are valid for the int getsockopt writes.
        let result = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEEK_OFF,
                (&raw mut value).cast(),
                &raw mut length,
            )
        };
        assert_eq!(result, 0, "{}", Errno::last());
        value
    }

    fn move_peek_offset(socket: BorrowedFd<'_>, value: i32) {
        // SAFETY: the value is a valid int for the length given.
        let result = unsafe {
            libc::setsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF, (&raw const value).cast(), 4)
        };
        assert_eq!(result, 0, "{}", Errno::last());
    }

    /// A thread that ends holding a guard (as a killed crp's would) has its
    /// socket put back by its watchdog, and only its socket: another
    /// thread's, being read meanwhile, is left as that thread set it.
    #[test]
    fn a_thread_that_ends_unfinished_puts_back_its_own_sockets_only() {
        let (ending, _) = UnixDatagram::pair().unwrap();
        let (reading, _) = UnixDatagram::pair().unwrap();
        let (guarded, wait_guarded) = std::sync::mpsc::channel();
        let (go_on, wait_go_on) = std::sync::mpsc::channel::<()>();
        let ending_fd = ending.as_raw_fd();
        let thread = std::thread::spawn(move || {
            // SAFETY: the socket outlives this thread (joined below).
            let socket = unsafe { BorrowedFd::borrow_raw(ending_fd) };
            let guard = guard(socket, Restore::PeekOffset(-1));
            move_peek_offset(socket, 0);
            guarded.send(()).unwrap();
            wait_go_on.recv().unwrap();
            // Ends with its socket listed, its mutex held: the kernel wakes the watchdog.
            std::mem::forget(guard);
        });
        wait_guarded.recv().unwrap();
        let mine = guard(reading.as_fd(), Restore::PeekOffset(-1));
        move_peek_offset(reading.as_fd(), 0);
        go_on.send(()).unwrap();
        thread.join().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while peek_offset(ending.as_fd()) != -1 {
            assert!(Instant::now() < deadline, "the ended thread's watchdog never put its socket back");
            std::thread::yield_now();
        }
        assert_eq!(peek_offset(reading.as_fd()), 0, "this thread's socket is left as this thread set it");
        move_peek_offset(reading.as_fd(), -1);
        drop(mine);
        finish();
        assert!(WATCHDOG.with_borrow(Option::is_none));
    }
}
