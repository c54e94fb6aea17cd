//! Freezing a running process for a dump: `PTRACE_SEIZE` + `PTRACE_INTERRUPT`.
//! Until [`Frozen::kill`] or [`Frozen::release`], dropping a `Frozen` puts
//! the registers back and detaches, so a failed dump leaves the process
//! running and untraced.

use nix::sys::ptrace;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::Registers;
use crate::error::EngineError;

#[derive(Debug)]
pub struct Frozen {
    pid: Pid,
    /// The registers at the freeze; `None` until read, and then nothing
    /// is written back on release.
    saved_registers: Option<Registers>,
    deferred_signals: Vec<Signal>,
    attached: bool,
}

impl Frozen {
    /// Seizes and stops `pid`.
    pub fn seize(pid: i32) -> Result<Self, EngineError> {
        let pid = Pid::from_raw(pid);
        let raw = pid.as_raw();
        ptrace::seize(pid, ptrace::Options::empty()).map_err(EngineError::ptrace("PTRACE_SEIZE", raw))?;
        let mut frozen = Self { pid, saved_registers: None, deferred_signals: Vec::new(), attached: true };
        ptrace::interrupt(pid).map_err(EngineError::ptrace("PTRACE_INTERRUPT", raw))?;
        match waitpid(pid, Some(WaitPidFlag::__WALL)).map_err(EngineError::ptrace("waitpid", raw))? {
            WaitStatus::PtraceEvent(..) => {}
            // A signal was on its way in: hold it back and deliver it on release.
            WaitStatus::Stopped(_, signal) => frozen.deferred_signals.push(signal),
            other => {
                frozen.attached = false;
                return Err(EngineError::UnexpectedStop {
                    operation: "freezing",
                    pid: raw,
                    status: format!("{other:?}"),
                });
            }
        }
        frozen.saved_registers = Some(ptrace::getregs(pid).map_err(EngineError::ptrace("PTRACE_GETREGS", raw))?);
        Ok(frozen)
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The registers as they were when the process stopped.
    pub fn registers(&self) -> &Registers {
        self.saved_registers.as_ref().expect("seize returns only once the registers are read")
    }

    /// Signals held back during the dump, to be re-sent on release.
    pub fn defer_signals(&mut self, signals: Vec<Signal>) {
        self.deferred_signals.extend(signals);
    }

    /// Puts the original registers back, re-sends held-back signals and
    /// detaches: the process carries on exactly where it was.
    pub fn release(mut self) -> Result<(), EngineError> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<(), EngineError> {
        if !self.attached {
            return Ok(());
        }
        self.attached = false;
        let raw = self.pid.as_raw();
        // Detach even if the registers cannot be put back: a traced
        // process would stay stopped.
        let put_back = match self.saved_registers {
            Some(registers) => ptrace::setregs(self.pid, registers).map_err(EngineError::ptrace("PTRACE_SETREGS", raw)),
            None => Ok(()),
        };
        for signal in self.deferred_signals.drain(..) {
            let _ = kill(self.pid, signal);
        }
        let detached = ptrace::detach(self.pid, None).map_err(EngineError::ptrace("PTRACE_DETACH", raw));
        put_back.and(detached)
    }

    /// Kills the process (after the image is durable).
    pub fn kill(mut self) -> Result<(), EngineError> {
        self.attached = false;
        let raw = self.pid.as_raw();
        kill(self.pid, Signal::SIGKILL).map_err(EngineError::ptrace("kill", raw))?;
        // Consume the tracer's copy of the exit notification; the real parent
        // still gets its own.
        let _ = waitpid(self.pid, Some(WaitPidFlag::__WALL));
        Ok(())
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = self.release_inner();
    }
}
