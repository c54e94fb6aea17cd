//! Running syscalls inside a stopped tracee: point RIP at a `syscall`
//! instruction, load the syscall's registers, single-step, read RAX.

use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::Registers;
use crate::error::EngineError;
use crate::sys::{self, Waited};
use crate::tracee::Tracee;

/// A stopped tracee plus an address holding `0f 05` to run syscalls through.
#[derive(Debug)]
pub struct Injector {
    pid: Pid,
    syscall_ip: u64,
    base_registers: Registers,
    scratch: (u64, usize),
    /// Signal numbers, real-time ones included.
    deferred_signals: Vec<i32>,
}

impl Injector {
    /// `base_registers` supply every register a syscall does not set
    /// (segment selectors, flags, fs base).
    pub fn new(pid: Pid, syscall_ip: u64, base_registers: Registers) -> Self {
        Self { pid, syscall_ip, base_registers, scratch: (0, 0), deferred_signals: Vec::new() }
    }

    pub fn set_syscall_ip(&mut self, syscall_ip: u64) {
        self.syscall_ip = syscall_ip;
    }

    /// Runs `clone3(args, size)` (the arguments already in the tracee's
    /// memory) for a new thread of the tracee, which crp traces from its
    /// first moment (`PTRACE_O_TRACECLONE`: it starts stopped, before any
    /// instruction of its own), and waits for that first stop. The new
    /// thread is an injector of its own, through the same `syscall`
    /// instruction and with the scratch area of the address space it
    /// shares.
    pub fn clone_thread(&mut self, args: u64, size: u64) -> Result<Injector, EngineError> {
        let pid = self.pid.as_raw();
        let options = ptrace::Options::PTRACE_O_EXITKILL;
        ptrace::setoptions(self.pid, options | ptrace::Options::PTRACE_O_TRACECLONE)
            .map_err(EngineError::ptrace("PTRACE_SETOPTIONS", pid))?;
        let cloned = self.clone_traced(args, size);
        let reset = ptrace::setoptions(self.pid, options).map_err(EngineError::ptrace("PTRACE_SETOPTIONS", pid));
        let tid = cloned?;
        reset?;
        match sys::wait_for_any_signal(tid).map_err(EngineError::ptrace("waitpid", tid.as_raw()))? {
            Waited::Status(
                WaitStatus::Stopped(_, Signal::SIGSTOP) | WaitStatus::PtraceEvent(_, _, libc::PTRACE_EVENT_STOP),
            ) => {}
            other => {
                return Err(EngineError::UnexpectedStop {
                    operation: "starting a thread",
                    pid: tid.as_raw(),
                    status: format!("{other:?}"),
                });
            }
        }
        let registers = ptrace::getregs(tid).map_err(EngineError::ptrace("PTRACE_GETREGS", tid.as_raw()))?;
        let mut thread = Injector::new(tid, self.syscall_ip, registers);
        thread.scratch = self.scratch;
        Ok(thread)
    }

    /// Runs clone3 (see [`Injector::step_once`] for its clone event stop)
    /// and returns the new thread's id.
    fn clone_traced(&mut self, args: u64, size: u64) -> Result<Pid, EngineError> {
        let result = self.raw_syscall(libc::SYS_clone3, [args, size, 0, 0, 0, 0])?;
        if (-4095..0).contains(&result) {
            let errno = nix::errno::Errno::from_raw(i32::try_from(-result).unwrap_or(libc::EINVAL));
            return Err(EngineError::Syscall {
                syscall: "clone3",
                args: vec![args, size],
                pid: self.pid.as_raw(),
                errno,
            });
        }
        Ok(Pid::from_raw(i32::try_from(result).unwrap_or(0)))
    }

    /// Signals (numbers, real-time ones included) that arrived while
    /// syscalls were being injected; the caller re-sends them before
    /// letting the process go.
    pub fn take_deferred_signals(&mut self) -> Vec<i32> {
        std::mem::take(&mut self.deferred_signals)
    }

    /// Single-steps until the `syscall` instruction has run. Whatever stop
    /// comes back, the instruction pointer tells whether it did: a signal
    /// may stop the task before it, and a trap left over from an earlier
    /// step may arrive first.
    fn step_once(&mut self, number: i64) -> Result<(), EngineError> {
        let pid = self.pid.as_raw();
        loop {
            ptrace::step(self.pid, None).map_err(EngineError::ptrace("PTRACE_SINGLESTEP", pid))?;
            let status = sys::wait_for_any_signal(self.pid).map_err(EngineError::ptrace("waitpid", pid))?;
            match status {
                // Inside a clone3 traced with PTRACE_O_TRACECLONE: RIP is
                // past the instruction already, the result not in yet.
                Waited::Status(WaitStatus::PtraceEvent(_, _, libc::PTRACE_EVENT_CLONE)) => continue,
                Waited::Status(WaitStatus::Stopped(_, Signal::SIGTRAP) | WaitStatus::PtraceEvent(..)) => {}
                // A signal arrived: it is held back and re-sent later.
                Waited::Status(WaitStatus::Stopped(_, signal)) => self.deferred_signals.push(signal as i32),
                Waited::RealTimeSignal(signal) => self.deferred_signals.push(signal),
                Waited::Status(other) => {
                    return Err(EngineError::UnexpectedStop {
                        operation: "an injected syscall",
                        pid,
                        status: format!("{other:?} (syscall {number})"),
                    });
                }
            }
            if !self.syscall_still_pending()? {
                return Ok(());
            }
        }
    }

    fn syscall_still_pending(&self) -> Result<bool, EngineError> {
        let registers = ptrace::getregs(self.pid).map_err(EngineError::ptrace("PTRACE_GETREGS", self.pid.as_raw()))?;
        Ok(registers.rip == self.syscall_ip)
    }
}

impl Tracee for Injector {
    fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    fn raw_syscall(&mut self, number: i64, args: [u64; 6]) -> Result<i64, EngineError> {
        let pid = self.pid.as_raw();
        let mut registers = self.base_registers;
        registers.rip = self.syscall_ip;
        registers.rax = number.cast_unsigned();
        // Never let the kernel's syscall-restart logic touch an injection.
        registers.orig_rax = u64::MAX;
        registers.rdi = args[0];
        registers.rsi = args[1];
        registers.rdx = args[2];
        registers.r10 = args[3];
        registers.r8 = args[4];
        registers.r9 = args[5];
        ptrace::setregs(self.pid, registers).map_err(EngineError::ptrace("PTRACE_SETREGS", pid))?;
        self.step_once(number)?;
        let after = ptrace::getregs(self.pid).map_err(EngineError::ptrace("PTRACE_GETREGS", pid))?;
        tracing::debug!(
            pid,
            number,
            args = format_args!("{args:x?}"),
            result = after.rax as i64,
            "injected syscall (restore child)"
        );
        Ok(after.rax as i64)
    }

    fn read_memory(&self, address: u64, buffer: &mut [u8]) -> Result<(), EngineError> {
        crate::tracee::read_memory_of(self.pid, address, buffer)
    }

    fn write_memory(&mut self, address: u64, data: &[u8]) -> Result<(), EngineError> {
        crate::tracee::write_memory_of(self.pid, address, data)
    }

    fn scratch_area(&self) -> (u64, usize) {
        self.scratch
    }

    fn set_scratch_area(&mut self, address: u64, length: usize) {
        self.scratch = (address, length);
    }

    /// The registers the thread had when it stopped, which every injected
    /// syscall starts from.
    fn frozen_registers(&self) -> Result<Registers, EngineError> {
        Ok(self.base_registers)
    }

    fn blocked_signals(&self) -> Result<u64, EngineError> {
        sys::get_sigmask(self.pid).map_err(EngineError::ptrace("PTRACE_GETSIGMASK", self.pid.as_raw()))
    }
}
