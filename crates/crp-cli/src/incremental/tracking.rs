//! Arming and disarming crp's change tracking in a frozen process: a
//! userfaultfd in asynchronous write-protect mode
//! ([`crp_compound::tracking::FEATURES`]) made inside the process by one
//! injected syscall, moved to a high descriptor number (the highest free
//! one below its `RLIMIT_NOFILE` soft limit, close-on-exec) that the
//! process keeps, and worked from outside through a duplicate crp takes
//! with `pidfd_getfd` and drops once the memory is registered and
//! protected. From then on the kernel clears a page's protection at its
//! first write without stopping anyone, and PAGEMAP_SCAN reports the page
//! written. A full dump's arming makes a new userfaultfd (a new inode
//! number); an incremental dump moves it to a lower descriptor number
//! ([`move_on`]): the pair names one dump, the only one the written set is
//! relative to.

use std::os::fd::AsFd;

use crp_compound::tracking::{self, FEATURES};
use crp_ptrace::{FrozenProcess, TraceeExt, procfs, userfault};

use super::TrackingRecord;
use crate::error::CrpError;

/// Arms new tracking in the frozen process over `registered` (private
/// anonymous VMAs, start and end), write-protecting `populated` (the runs
/// of pages there now; the rest has no page, and a page made there later
/// is reported written), after closing any tracking it held.
pub fn arm(
    frozen: &mut FrozenProcess,
    maps: &[procfs::MapsEntry],
    registered: &[(u64, u64)],
    populated: &[(u64, u64)],
) -> Result<TrackingRecord, CrpError> {
    let pid = frozen.pid().as_raw();
    let old = tracking::find(pid)?;
    let leader = frozen.leader();
    crate::backend::park(leader, maps)?;
    let placed = place(leader, pid, &old);
    leader.unpark()?;
    let (fd, uffd) = placed?;
    protect(pid, &uffd, registered, populated);
    let inode = nix::sys::stat::fstat(uffd.as_fd())
        .map_err(|errno| CrpError::Io { action: format!("stat crp's tracking in pid {pid}"), source: errno.into() })?
        .st_ino;
    tracing::info!(pid, fd, inode, vmas = registered.len(), "change tracking armed");
    Ok(TrackingRecord { fd, inode })
}

/// Inside the parked process: closes the tracking `old`, makes a
/// userfaultfd, does its handshake through crp's duplicate (so that even
/// a crp killed right after leaves only a descriptor recognised as
/// tracking), and moves it to the descriptor it keeps.
fn place(
    leader: &mut crp_ptrace::Frozen,
    pid: i32,
    old: &[tracking::TrackingFd],
) -> Result<(i32, std::os::fd::OwnedFd), CrpError> {
    for stale in old {
        leader.syscall("close", libc::SYS_close, [crp_ptrace::arg(stale.fd), 0, 0, 0, 0, 0])?;
    }
    let flags = crp_ptrace::arg(libc::O_CLOEXEC | libc::O_NONBLOCK);
    let made = leader.syscall("userfaultfd", libc::SYS_userfaultfd, [flags, 0, 0, 0, 0, 0])?;
    let made_fd = i32::try_from(made).unwrap_or(-1);
    let io = |action: &str, errno: nix::errno::Errno| CrpError::Io {
        action: format!("{action} in pid {pid}"),
        source: errno.into(),
    };
    let uffd = crp_ptrace::sys::duplicate_descriptor(pid, made_fd)
        .map_err(|errno| io("duplicating the userfaultfd made", errno));
    let shaken = uffd.and_then(|uffd| {
        userfault::handshake(uffd.as_fd(), FEATURES)
            .map_err(|errno| io("userfaultfd handshake (asynchronous write protection)", errno))?;
        Ok(uffd)
    });
    let uffd = match shaken {
        Ok(uffd) => uffd,
        Err(error) => {
            leader.syscall("close", libc::SYS_close, [made, 0, 0, 0, 0, 0])?;
            return Err(error);
        }
    };
    let target = highest_free_fd(pid, i32::MAX)?.ok_or_else(|| CrpError::Io {
        action: format!("finding a free descriptor for crp's tracking in pid {pid}"),
        source: std::io::Error::from_raw_os_error(libc::EMFILE),
    })?;
    let cloexec = crp_ptrace::arg(libc::O_CLOEXEC);
    leader.syscall("dup3", libc::SYS_dup3, [made, crp_ptrace::arg(target), cloexec, 0, 0, 0])?;
    leader.syscall("close", libc::SYS_close, [made, 0, 0, 0, 0, 0])?;
    Ok((target, uffd))
}

/// The highest descriptor number below `below` and below `pid`'s
/// `RLIMIT_NOFILE` soft limit that it does not use, down to 3 (at most 1024
/// numbers are looked at).
fn highest_free_fd(pid: i32, below: i32) -> Result<Option<i32>, CrpError> {
    let limit = soft_nofile(pid).unwrap_or(1024);
    let top = (i32::try_from(limit.min(1 << 20)).unwrap_or(1024) - 1).min(below.saturating_sub(1));
    Ok((3..=top).rev().take(1024).find(|fd| std::fs::symlink_metadata(format!("/proc/{pid}/fd/{fd}")).is_err()))
}

/// An incremental dump's re-arming, once PAGEMAP_SCAN has protected the
/// written pages again: the same userfaultfd moves from `current` to the
/// next free descriptor below it (so the pair of inode and descriptor
/// names this dump: for one inode the numbers only go down), and the VMAs
/// made since (`untracked`, with their runs `untracked_populated`) are
/// registered and protected. `None` when no lower number is free: then a
/// new tracking is armed ([`arm`]).
pub fn move_on(
    frozen: &mut FrozenProcess,
    maps: &[procfs::MapsEntry],
    current: TrackingRecord,
    untracked: &[(u64, u64)],
    untracked_populated: &[(u64, u64)],
) -> Result<Option<TrackingRecord>, CrpError> {
    let pid = frozen.pid().as_raw();
    let Some(target) = highest_free_fd(pid, current.fd)? else {
        return Ok(None);
    };
    let leader = frozen.leader();
    crate::backend::park(leader, maps)?;
    let cloexec = crp_ptrace::arg(libc::O_CLOEXEC);
    let from = crp_ptrace::arg(current.fd);
    let moved = leader
        .syscall("dup3", libc::SYS_dup3, [from, crp_ptrace::arg(target), cloexec, 0, 0, 0])
        .and_then(|_| leader.syscall("close", libc::SYS_close, [from, 0, 0, 0, 0, 0]));
    leader.unpark()?;
    moved?;
    let uffd = crp_ptrace::sys::duplicate_descriptor(pid, target).map_err(|errno| CrpError::Io {
        action: format!("duplicating crp's tracking in pid {pid}"),
        source: errno.into(),
    })?;
    protect(pid, &uffd, untracked, untracked_populated);
    tracing::info!(pid, fd = target, inode = current.inode, new_vmas = untracked.len(), "change tracking moved on");
    Ok(Some(TrackingRecord { fd: target, inode: current.inode }))
}

/// Registers `registered` with `uffd` and write-protects `populated`.
fn protect(pid: i32, uffd: &std::os::fd::OwnedFd, registered: &[(u64, u64)], populated: &[(u64, u64)]) {
    for &(start, end) in registered {
        // A VMA the kernel will not register is left out: without `uw` in
        // smaps it is stored whole by the next dump.
        if let Err(errno) = userfault::register_write_protect(uffd.as_fd(), start, end - start) {
            tracing::info!(pid, start, end, %errno, "not tracked: stored whole by the next incremental dump");
        }
    }
    for &(start, pages) in populated {
        let length = pages * 4096;
        if let Err(errno) = userfault::write_protect(uffd.as_fd(), start, length, true) {
            tracing::debug!(pid, start, length, %errno, "write protection refused (a VMA not registered)");
        }
    }
}

/// `pid`'s soft `RLIMIT_NOFILE`.
fn soft_nofile(pid: i32) -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: prlimit with no new limit only writes the current one into
    // `limit`, alive for the call.
    let result = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &raw mut limit) };
    (result == 0).then_some(limit.rlim_cur)
}

/// Closes every tracking descriptor of the frozen process (by injection):
/// the kernel unregisters its ranges and clears their protection. Says
/// how many there were.
pub fn disarm(frozen: &mut FrozenProcess, maps: &[procfs::MapsEntry]) -> Result<usize, CrpError> {
    let pid = frozen.pid().as_raw();
    let found = tracking::find(pid)?;
    if found.is_empty() {
        return Ok(0);
    }
    let leader = frozen.leader();
    crate::backend::park(leader, maps)?;
    let closed = found.iter().try_for_each(|stale| {
        leader.syscall("close", libc::SYS_close, [crp_ptrace::arg(stale.fd), 0, 0, 0, 0, 0]).map(drop)
    });
    leader.unpark()?;
    closed?;
    Ok(found.len())
}

/// `crp untrack PID`: freezes the process just long enough to close crp's
/// tracking in it.
pub fn untrack(pid: i32) -> Result<usize, CrpError> {
    if tracking::find(pid)?.is_empty() {
        return Err(super::IncrementalError::NothingToUntrack { pid }.into());
    }
    let mut frozen = FrozenProcess::seize(pid).map_err(|error| crate::preflight::explain_seize_failure(pid, error))?;
    let maps = procfs::smaps(pid)?;
    let closed = disarm(&mut frozen, &maps)?;
    frozen.release()?;
    Ok(closed)
}
