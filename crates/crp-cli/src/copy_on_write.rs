//! `--leave-running` with a freeze of milliseconds: while the process is
//! frozen, crp makes a userfaultfd inside it (one injected syscall, its
//! descriptor taken and closed again at once) and write-protects its
//! private anonymous memory ([`CowSnapshot`]); the process is released
//! and its pages are read while it runs on, each one copied aside before
//! its first write.
//!
//! A process that cannot have one (its credentials may not make a
//! userfaultfd that sees kernel-mode faults, it uses userfaultfd itself,
//! the kernel lacks write protection) is dumped as without it: frozen for
//! the whole copy, which the log says.

use crp_compound::vma::cow::{CowError, CowSnapshot};
use crp_ptrace::{EngineError, FrozenProcess, TraceeExt, procfs};
use nix::errno::Errno;

use crate::error::CrpError;

/// Arms a snapshot of `ranges` (start, end; ascending) in the frozen
/// process, its overflow going to `spill_directory` (the image's), or says
/// why it cannot have one (`Ok(None)`, logged).
pub fn arm(
    frozen: &mut FrozenProcess,
    maps: &[procfs::MapsEntry],
    ranges: &[(u64, u64)],
    spill_directory: &std::path::Path,
) -> Result<Option<CowSnapshot>, CrpError> {
    if ranges.is_empty() {
        return Ok(None);
    }
    let pid = frozen.pid();
    let Some(uffd) = userfaultfd_of(frozen, maps)? else {
        return Ok(None);
    };
    match CowSnapshot::arm(pid, uffd, ranges, spill_directory) {
        Ok(snapshot) => Ok(Some(snapshot)),
        // Another userfaultfd has the range (the process's own), or the
        // kernel cannot protect it: the copy is made frozen.
        Err(
            refusal @ (CowError::Handshake(Errno::EINVAL)
            | CowError::Register { errno: Errno::EBUSY | Errno::EINVAL | Errno::EPERM, .. }),
        ) => {
            tracing::info!(pid = pid.as_raw(), %refusal, "no copy-on-write snapshot: the pages are copied frozen");
            Ok(None)
        }
        Err(error) => Err(error.into()),
    }
}

/// A userfaultfd of the frozen process's address space, made inside it
/// and held only by crp; `None` when the process may not make one.
fn userfaultfd_of(
    frozen: &mut FrozenProcess,
    maps: &[procfs::MapsEntry],
) -> Result<Option<std::os::fd::OwnedFd>, CrpError> {
    let leader = frozen.leader();
    let pid = leader.pid().as_raw();
    crate::backend::park(leader, maps)?;
    let flags = crp_ptrace::arg(libc::O_CLOEXEC | libc::O_NONBLOCK);
    let created = leader.syscall("userfaultfd", libc::SYS_userfaultfd, [flags, 0, 0, 0, 0, 0]);
    let result = match created {
        Ok(fd) => {
            let duplicate = crp_ptrace::sys::duplicate_descriptor(pid, i32::try_from(fd).unwrap_or(-1));
            // Closed in the process whatever became of the duplicate.
            let closed = leader.syscall("close", libc::SYS_close, [fd, 0, 0, 0, 0, 0]);
            match (duplicate, closed) {
                (Ok(duplicate), Ok(_)) => Ok(Some(duplicate)),
                (_, Err(error)) => Err(error.into()),
                (Err(errno), Ok(_)) => Err(CrpError::Io {
                    action: format!("duplicating the userfaultfd made in pid {pid}"),
                    source: errno.into(),
                }),
            }
        }
        // Without CAP_SYS_PTRACE and vm.unprivileged_userfaultfd, only a
        // user-mode-only one could be made, under which a kernel write
        // (read(2) into a protected buffer) would fail instead of waiting.
        Err(EngineError::Syscall { errno: errno @ (Errno::EPERM | Errno::ENOSYS | Errno::EINVAL), .. }) => {
            tracing::info!(pid, %errno, "the process may not make a userfaultfd: the pages are copied frozen");
            Ok(None)
        }
        Err(error) => Err(error.into()),
    };
    leader.unpark()?;
    result
}
