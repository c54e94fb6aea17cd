//! The lazy restore's watchdog: a child of crp's holding its own duplicate
//! of the restored process's userfaultfd, so that crp's death is not what
//! releases it. When the last descriptor of a userfaultfd closes, the
//! kernel unregisters its ranges and the threads waiting on a missing page
//! get a fresh zero page; crp's exit closes its files before anything else
//! could react to it. The watchdog waits on a pipe only crp writes to: a
//! byte means every page is in (it exits quietly); end of file means crp
//! is gone (SIGKILL included) before that, and it SIGKILLs the restored
//! process through a pidfd, waits until the process is dead, and only then
//! exits, dropping the last reference to the userfaultfd. The process never
//! runs on with a page that reads as zeros.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::unistd::Pid;

/// The running watchdog.
#[derive(Debug)]
pub(crate) struct Watchdog {
    pid: Pid,
    /// Written to (one byte) once every page is in.
    done: Option<OwnedFd>,
}

impl Watchdog {
    /// Forks the watchdog, which inherits `uffd` and a pidfd of `process`.
    /// Called from crp's main thread: the child runs async-signal-safe
    /// system calls only.
    pub(crate) fn start(process: Pid, uffd: BorrowedFd<'_>) -> Result<Self, Errno> {
        let pidfd = pidfd_open(process)?;
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (read_raw, write_raw, pidfd_raw) = (read.as_raw_fd(), write.as_raw_fd(), pidfd.as_raw_fd());
        let _ = uffd;
        // SAFETY: the child runs only raw system calls (close, sigprocmask,
        // read, pidfd_send_signal, poll, exit) on descriptors it inherited
        // and memory on its own stack: nothing that needs a lock another
        // thread of crp's may have held at the fork.
        let forked = unsafe { libc::fork() };
        match forked {
            -1 => Err(Errno::last()),
            0 => {
                // SAFETY: see above; the function never returns.
                unsafe { watch(read_raw, write_raw, pidfd_raw) }
            }
            child => {
                drop((read, pidfd));
                Ok(Self { pid: Pid::from_raw(child), done: Some(write) })
            }
        }
    }

    /// Every page is in: the watchdog exits without touching the process
    /// (and is reaped).
    pub(crate) fn release(mut self) {
        if let Some(done) = self.done.take() {
            let _ = nix::unistd::write(&done, b"d");
        }
        let _ = crp_ptrace::sys::wait_for(self.pid);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Not released: the pipe closes, and the watchdog kills the
        // process as it would on crp's death.
        if self.done.take().is_some() {
            let _ = crp_ptrace::sys::wait_for(self.pid);
        }
    }
}

pub(super) fn pidfd_open(pid: Pid) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes a pid and flags and touches no memory.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let fd = i32::try_from(fd).map_err(|_| Errno::EINVAL)?;
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: pidfd_open returned a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Waits until the process of `pidfd` has exited.
pub(super) fn wait_until_dead(pidfd: BorrowedFd<'_>) {
    // SAFETY: poll on the one descriptor, which stays open for the call.
    unsafe { poll_until_dead(pidfd.as_raw_fd()) }
}

/// Polls `pidfd` until its process has exited (async-signal-safe).
///
/// # Safety
///
/// `pidfd` must be an open pidfd.
unsafe fn poll_until_dead(pidfd: i32) {
    let mut poll = libc::pollfd { fd: pidfd, events: libc::POLLIN, revents: 0 };
    // SAFETY: poll reads and writes the one pollfd on this stack.
    while unsafe { libc::poll(&raw mut poll, 1, -1) } < 0 && Errno::last() == Errno::EINTR {}
}

/// The watchdog's body, in the forked child.
///
/// # Safety
///
/// Only in the child of a fork: it uses raw system calls and never returns.
unsafe fn watch(read: i32, write: i32, pidfd: i32) -> ! {
    // SAFETY: raw system calls on the child's own descriptors and stack.
    unsafe {
        libc::close(write);
        // A Ctrl-C or SIGTERM meant for crp's process group must not end
        // the watchdog: only crp's death or its word does.
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&raw mut all);
        libc::sigprocmask(libc::SIG_BLOCK, &raw const all, std::ptr::null_mut());
        let mut byte = 0u8;
        loop {
            let got = libc::read(read, (&raw mut byte).cast(), 1);
            if got == 1 {
                libc::_exit(0);
            }
            if got < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            break;
        }
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd, libc::SIGKILL, std::ptr::null::<libc::siginfo_t>(), 0);
        poll_until_dead(pidfd);
        libc::_exit(0)
    }
}
