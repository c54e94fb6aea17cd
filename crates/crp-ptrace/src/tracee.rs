//! The interface category crates use to act on a stopped process. It is small
//! on purpose so that unit tests can supply a fake.

use std::os::fd::{FromRawFd, OwnedFd};

use nix::errno::Errno;

use crate::Registers;
use crate::error::EngineError;

/// A stopped process crp can run syscalls in and whose memory it can access.
pub trait Tracee {
    fn pid(&self) -> i32;

    /// Runs syscall `number` with `args` inside the tracee and returns the raw
    /// kernel result (a negative errno on failure).
    fn raw_syscall(&mut self, number: i64, args: [u64; 6]) -> Result<i64, EngineError>;

    fn read_memory(&self, address: u64, buffer: &mut [u8]) -> Result<(), EngineError>;

    fn write_memory(&mut self, address: u64, data: &[u8]) -> Result<(), EngineError>;

    /// A writable area inside the tracee for syscall arguments:
    /// `(address, length)`.
    fn scratch_area(&self) -> (u64, usize);

    /// Makes `(address, length)` the scratch area.
    fn set_scratch_area(&mut self, address: u64, length: usize);

    /// The process's own blocked signal mask (not a mask crp may have set
    /// while it works on the process).
    fn blocked_signals(&self) -> Result<u64, EngineError>;

    /// The thread's registers as they were when crp stopped it (the engine
    /// may have changed the live ones since, to inject syscalls).
    fn frozen_registers(&self) -> Result<Registers, EngineError> {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        nix::sys::ptrace::getregs(pid).map_err(EngineError::ptrace("PTRACE_GETREGS", self.pid()))
    }

    /// The thread's XSAVE area, as the kernel's ptrace regset presents it
    /// (`PTRACE_GETREGSET(NT_X86_XSTATE)`).
    fn xstate(&self) -> Result<Vec<u8>, EngineError> {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        crate::sys::get_xstate(pid).map_err(EngineError::ptrace("PTRACE_GETREGSET(NT_X86_XSTATE)", self.pid()))
    }

    /// Loads an XSAVE area of the kernel's own size (what [`Tracee::xstate`]
    /// gives) into the thread.
    fn set_xstate(&mut self, area: &[u8]) -> Result<(), EngineError> {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        crate::sys::set_xstate(pid, area).map_err(EngineError::ptrace("PTRACE_SETREGSET(NT_X86_XSTATE)", self.pid()))
    }

    /// Loads the registers the thread runs with once released. Nothing may
    /// be injected into it afterwards: an injection runs on registers of
    /// its own.
    fn load_registers(&mut self, registers: &Registers) -> Result<(), EngineError> {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        nix::sys::ptrace::setregs(pid, *registers).map_err(EngineError::ptrace("PTRACE_SETREGS", self.pid()))
    }

    /// Sets the thread's blocked signal mask (`PTRACE_SETSIGMASK`), from
    /// outside: the mask it runs with once released.
    fn set_blocked_signals(&mut self, mask: u64) -> Result<(), EngineError> {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        crate::sys::set_sigmask(pid, mask).map_err(EngineError::ptrace("PTRACE_SETSIGMASK", self.pid()))
    }

    /// Writes `data` into the process's file `/proc/PID/{name}`, from crp
    /// (with crp's credentials, not those the process has at that moment,
    /// which may be another user's file-system ids).
    fn write_proc_file(&mut self, name: &str, data: &[u8]) -> Result<(), EngineError> {
        let path = format!("/proc/{}/{name}", self.pid());
        std::fs::write(&path, data).map_err(|source| EngineError::ProcFile { path, source })
    }

    /// The signals queued for the process (`shared`: its process-wide
    /// queue) or for this thread, in queue order, each a raw `siginfo_t`
    /// (`PTRACE_PEEKSIGINFO`, which dequeues nothing).
    fn pending_signals(&self, shared: bool) -> Result<Vec<[u8; crate::sys::SIGINFO_SIZE]>, EngineError> {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        crate::sys::peek_siginfo(pid, shared).map_err(EngineError::ptrace("PTRACE_PEEKSIGINFO", self.pid()))
    }

    /// Whether the process's descriptors `first` and `second` are one open
    /// file description (`kcmp(KCMP_FILE)`).
    fn same_description(&self, first: u64, second: u64) -> Result<bool, EngineError> {
        const KCMP_FILE: u64 = 0;
        let pid = self.pid();
        // SAFETY: kcmp compares kernel objects and writes no memory.
        let result = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_FILE, first, second) };
        if result < 0 {
            return Err(EngineError::Descriptor { operation: "compare (kcmp)", pid, fd: first, errno: Errno::last() });
        }
        Ok(result == 0)
    }

    /// The process's mappings as they are now (/proc/PID/maps, in address
    /// order): what a restore has left of crp's own, or has made so far.
    fn mappings(&self) -> Result<Vec<crate::procfs::MapsEntry>, EngineError> {
        Ok(crate::procfs::smaps(self.pid())?)
    }

    /// The process's rseq registration (`PTRACE_GET_RSEQ_CONFIGURATION`).
    fn rseq_configuration(&self) -> Result<crate::sys::RseqConfiguration, EngineError> {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        crate::sys::get_rseq_configuration(pid)
            .map_err(EngineError::ptrace("PTRACE_GET_RSEQ_CONFIGURATION", self.pid()))
    }

    /// Opens the object behind the tracee's descriptor `fd` anew, in crp,
    /// through `/proc/PID/fd/FD` with `flags`: a new open file description of
    /// the same pipe, FIFO or file (how crp reads a pipe's buffer through
    /// its write end, or fills a pipe the restore created). Descriptors of
    /// sockets and anonymous inodes cannot be reopened this way.
    fn reopen_descriptor(&self, fd: u64, flags: i32) -> Result<OwnedFd, EngineError> {
        let path = format!("/proc/{}/fd/{fd}\0", self.pid());
        // SAFETY: `path` is NUL-terminated and outlives the call; open
        // writes no memory of crp's.
        let opened = unsafe { libc::open(path.as_ptr().cast(), flags | libc::O_CLOEXEC | libc::O_NOCTTY) };
        if opened < 0 {
            return Err(EngineError::Descriptor { operation: "reopen", pid: self.pid(), fd, errno: Errno::last() });
        }
        // SAFETY: open returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(opened) })
    }

    /// A duplicate, in crp, of the tracee's descriptor `fd`: the same open
    /// file description (`pidfd_getfd`), so a socket option set or a
    /// message sent through it is the tracee's socket's.
    fn duplicate_descriptor(&self, fd: u64) -> Result<OwnedFd, EngineError> {
        let failed =
            |errno| EngineError::Descriptor { operation: "duplicate (pidfd_getfd)", pid: self.pid(), fd, errno };
        let target = i32::try_from(fd).map_err(|_| failed(Errno::EBADF))?;
        crate::sys::duplicate_descriptor(self.pid(), target).map_err(failed)
    }
}

/// Reads memory of `pid` (see [`crate::sys::read_memory`]), naming the range on failure.
pub(crate) fn read_memory_of(pid: nix::unistd::Pid, address: u64, buffer: &mut [u8]) -> Result<(), EngineError> {
    crate::sys::read_memory(pid, address, buffer).map_err(|errno| EngineError::Memory {
        operation: "read",
        pid: pid.as_raw(),
        address,
        length: buffer.len(),
        errno,
    })
}

/// Writes memory of `pid` (see [`crate::sys::write_memory`]), naming the range on failure.
pub(crate) fn write_memory_of(pid: nix::unistd::Pid, address: u64, data: &[u8]) -> Result<(), EngineError> {
    crate::sys::write_memory(pid, address, data).map_err(|errno| EngineError::Memory {
        operation: "write",
        pid: pid.as_raw(),
        address,
        length: data.len(),
        errno,
    })
}

/// Conveniences on top of [`Tracee`].
pub trait TraceeExt: Tracee {
    /// Runs a syscall and turns a negative result into an error naming it.
    fn syscall(&mut self, name: &'static str, number: i64, args: [u64; 6]) -> Result<u64, EngineError> {
        let result = self.raw_syscall(number, args)?;
        if (-4095..0).contains(&result) {
            // Trailing zero arguments are most often ones the syscall has not.
            let used = args.iter().rposition(|value| *value != 0).map_or(0, |last| last + 1);
            return Err(EngineError::Syscall {
                syscall: name,
                args: args[..used].to_vec(),
                pid: self.pid(),
                errno: Errno::from_raw(i32::try_from(-result).unwrap_or(libc::EINVAL)),
            });
        }
        Ok(result.cast_unsigned())
    }

    /// Maps an anonymous area of `length` bytes in the tracee, makes it the
    /// scratch area for `work`, and unmaps it again however `work` ends;
    /// the previous scratch area is then the scratch area again.
    fn with_temporary_scratch<T, E: From<EngineError>>(
        &mut self,
        length: usize,
        work: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<T, E>
    where
        Self: Sized,
    {
        let protection = arg(libc::PROT_READ | libc::PROT_WRITE);
        let flags = arg(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS);
        let bytes = length as u64;
        let area = self.syscall("mmap(scratch)", libc::SYS_mmap, [0, bytes, protection, flags, u64::MAX, 0])?;
        let previous = self.scratch_area();
        self.set_scratch_area(area, length);
        let result = work(self);
        self.set_scratch_area(previous.0, previous.1);
        self.syscall("munmap(scratch)", libc::SYS_munmap, [area, bytes, 0, 0, 0, 0])?;
        result
    }

    /// Starts laying out syscall arguments in the scratch area.
    fn scratch(&self) -> ScratchWriter {
        let (address, length) = self.scratch_area();
        ScratchWriter { base: address, length, bytes: Vec::new() }
    }
}

impl<T: Tracee + ?Sized> TraceeExt for T {}

/// Builds the contents of the scratch area; each `push` returns the address
/// the value will have in the tracee. Nothing reaches the tracee until
/// [`ScratchWriter::commit`].
#[derive(Debug)]
pub struct ScratchWriter {
    base: u64,
    length: usize,
    bytes: Vec<u8>,
}

impl ScratchWriter {
    /// Appends `data`, 16-byte aligned, and returns its tracee address.
    pub fn push(&mut self, data: &[u8]) -> u64 {
        let offset = self.bytes.len().next_multiple_of(16);
        self.bytes.resize(offset, 0);
        self.bytes.extend_from_slice(data);
        self.base + offset as u64
    }

    /// Appends a NUL-terminated copy of a path or name.
    pub fn push_c_string(&mut self, text: &[u8]) -> u64 {
        let mut owned = text.to_vec();
        owned.push(0);
        self.push(&owned)
    }

    /// Reserves `length` zeroed bytes (an output buffer).
    pub fn reserve(&mut self, length: usize) -> u64 {
        self.push(&vec![0; length])
    }

    /// Writes everything pushed into the tracee.
    pub fn commit(self, tracee: &mut (impl Tracee + ?Sized)) -> Result<(), EngineError> {
        if self.bytes.len() > self.length {
            return Err(EngineError::ScratchFull {
                pid: tracee.pid(),
                needed: self.bytes.len(),
                available: self.length,
            });
        }
        tracee.write_memory(self.base, &self.bytes)
    }
}

/// A C integer (an fd, a flag set, a signal number, AT_FDCWD) as a syscall
/// argument register: sign-extended, the way the C ABI passes it.
pub fn arg(value: impl Into<i64>) -> u64 {
    value.into().cast_unsigned()
}
