//! Freezing a running process for a dump (`PTRACE_SEIZE` +
//! `PTRACE_INTERRUPT`), and running syscalls inside it in a way that cannot
//! harm it if crp dies at any moment.
//!
//! When a tracer dies, the kernel detaches its tracees and lets them run on
//! with whatever registers they hold, delivering the signal of a
//! signal-delivery stop (a single-step trap kills the process). So while
//! crp injects syscalls the process is **parked**: it sits in the
//! syscall-entry stop of an `rt_sigreturn` whose frame holds its own
//! context (registers with the restart fix-up, XSAVE area, blocked mask).
//! Each injected syscall is run by changing that stop's syscall number and
//! arguments and pointing its return at code that calls `rt_sigreturn`
//! again; crp waits at syscall stops only (with `PTRACE_O_TRACESYSGOOD`
//! their stop code is not a signal, so nothing is delivered if crp is
//! gone). If crp dies, the process runs `rt_sigreturn` and carries on where
//! it was frozen; at most the scratch mapping stays behind.
//!
//! The frame goes below the red zone of the process's stack, where the
//! kernel itself would put a signal frame (its previous bytes are put back
//! when crp leaves), and `rt_sigreturn` runs from the process's own
//! `mov $15, %rax; syscall` (the restorer every libc has). Without either,
//! crp maps one page for both with a first injected syscall that is not
//! protected (the one window left; see the README).

use nix::sys::ptrace;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::Registers;
use crate::error::EngineError;
use crate::procfs::MapsEntry;
use crate::sigframe::{self, PlacedFrame};
use crate::sys::{self, Waited};
use crate::tracee::Tracee;

/// Bytes below the stack pointer that belong to the running function.
const RED_ZONE: u64 = 128;
/// `mov $15, %rax; syscall` and `mov $15, %eax; syscall`.
const SIGRETURN_SEQUENCES: [&[u8]; 2] =
    [&[0x48, 0xc7, 0xc0, 0x0f, 0, 0, 0, 0x0f, 0x05], &[0xb8, 0x0f, 0, 0, 0, 0x0f, 0x05]];
/// What crp writes into its own page when the process has no restorer:
/// `mov $15, %eax; syscall; ud2`.
const OWN_SIGRETURN: [u8; 9] = [0xb8, 0x0f, 0, 0, 0, 0x0f, 0x05, 0x0f, 0x0b];
const PAGE_SIZE: u64 = 4096;
/// Largest chunk of code read at once while looking for a restorer.
const CODE_CHUNK: usize = 1 << 20;

/// Moments of a dump at which a test may stop crp (see
/// [`Frozen::set_checkpoint`]): each is named and, for injections,
/// numbered from 1.
pub type Checkpoint = fn(moment: &'static str, count: u64);

#[derive(Debug)]
pub struct Frozen {
    pid: Pid,
    /// The registers at the freeze.
    registers: Registers,
    park: Option<Park>,
    scratch: (u64, usize),
    injected: u64,
    checkpoint: Option<Checkpoint>,
    attached: bool,
    /// Whether `registers` were read (and may be written back).
    have_registers: bool,
    /// The process's `rt_sigreturn` sequence, once looked for (the same
    /// for every thread: they share the address space).
    restorer: Option<Option<u64>>,
    /// What the thread goes on with when crp leaves, when not `registers`
    /// (see [`Frozen::resume_with`]).
    resume: Option<Registers>,
    /// The syscall [`Frozen::start_syscall`] started, until its end.
    running: Option<(i64, [u64; 6])>,
}

#[derive(Debug)]
struct Park {
    /// Registers of the parked stop: the return points at the
    /// `rt_sigreturn` code, the stack pointer at the frame.
    registers: Registers,
    /// Where the process resumes if abandoned (the frame's context).
    abandon_to: Registers,
    /// The process's own blocked mask; all signals are blocked while parked.
    mask: u64,
    /// The stack bytes the frame covers, put back when crp leaves.
    saved_stack: Option<(u64, Vec<u8>)>,
    /// crp's own page for code and frame, when the process had no room.
    own_page: Option<(u64, u64)>,
    /// A `syscall` instruction of the process, for the unprotected calls.
    syscall_ip: u64,
}

impl Frozen {
    /// Seizes and stops `pid`. A signal arriving at that moment is
    /// delivered first (the process is then frozen at its handler, or
    /// stopped), so crp holds back nothing only it would know about.
    pub fn seize(pid: i32) -> Result<Self, EngineError> {
        let pid = Pid::from_raw(pid);
        let raw = pid.as_raw();
        ptrace::seize(pid, ptrace::Options::PTRACE_O_TRACESYSGOOD).map_err(EngineError::ptrace("PTRACE_SEIZE", raw))?;
        // Built before the first stop so that dropping it detaches.
        // SAFETY: user_regs_struct is plain integers; overwritten below.
        let registers: Registers = unsafe { std::mem::zeroed() };
        let mut frozen = Self {
            pid,
            registers,
            park: None,
            scratch: (0, 0),
            injected: 0,
            checkpoint: None,
            attached: true,
            have_registers: false,
            restorer: None,
            resume: None,
            running: None,
        };
        ptrace::interrupt(pid).map_err(EngineError::ptrace("PTRACE_INTERRUPT", raw))?;
        frozen.wait_for_interrupt_stop(ptrace::cont)?;
        frozen.registers = frozen.get_registers()?;
        frozen.have_registers = true;
        Ok(frozen)
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The registers as they were when the process stopped.
    pub fn registers(&self) -> &Registers {
        &self.registers
    }

    /// Makes the thread go on with `registers` rather than those of the
    /// freeze whenever crp leaves it (released, or abandoned while not
    /// parked): the freeze itself ended a syscall Linux never restarts,
    /// which `registers` run again. [`Frozen::registers`] stays what the
    /// freeze found.
    pub fn resume_with(&mut self, registers: Registers) -> Result<(), EngineError> {
        self.set_registers(&registers)?;
        self.resume = Some(registers);
        Ok(())
    }

    /// The registers put back when crp leaves the thread.
    fn put_back(&self) -> Registers {
        self.resume.unwrap_or(self.registers)
    }

    /// The `rt_sigreturn` sequence parking found in the process's code
    /// (`None` before it looked, `Some(None)` when there is none).
    pub fn restorer(&self) -> Option<Option<u64>> {
        self.restorer
    }

    /// Saves another thread of the same process the search for its
    /// `rt_sigreturn` sequence: `restorer` is what [`Frozen::restorer`]
    /// said of it.
    pub fn share_restorer(&mut self, restorer: Option<Option<u64>>) {
        if self.restorer.is_none() {
            self.restorer = restorer;
        }
    }

    /// Calls `checkpoint` at each named moment (a testing hook).
    pub fn set_checkpoint(&mut self, checkpoint: Checkpoint) {
        self.checkpoint = Some(checkpoint);
    }

    fn reached(&self, moment: &'static str, count: u64) {
        if let Some(checkpoint) = self.checkpoint {
            checkpoint(moment, count);
        }
    }

    /// Parks the process so that syscalls can be injected (see the module
    /// documentation). `maps` is its memory map, `syscall_ip` the address
    /// of a `syscall` instruction in it, and `abandon_to` the registers it
    /// resumes with if crp dies meanwhile: the frozen ones with the
    /// syscall-restart fix-up applied, and `orig_rax = -1`.
    pub fn park(&mut self, maps: &[MapsEntry], syscall_ip: u64, abandon_to: Registers) -> Result<(), EngineError> {
        if self.park.is_some() {
            return Ok(());
        }
        let raw = self.pid.as_raw();
        let mask = sys::get_sigmask(self.pid).map_err(EngineError::ptrace("PTRACE_GETSIGMASK", raw))?;
        let xsave = sys::get_xstate(self.pid).map_err(EngineError::ptrace("PTRACE_GETREGSET", raw))?;
        let build = |top: u64| sigframe::build(&abandon_to, mask, &xsave, top, sigframe::host_component_end);
        let mut park =
            Park { registers: self.registers, abandon_to, mask, saved_stack: None, own_page: None, syscall_ip };
        let stack_top = self.registers.rsp.wrapping_sub(RED_ZONE);
        let pid = self.pid;
        let on_stack = self
            .restorer
            .get_or_insert_with(|| find_sigreturn(pid, maps))
            .zip(build(stack_top).ok().filter(|frame| writable(maps, frame.start, stack_top)));
        let (code, frame) = match on_stack {
            Some((code, frame)) => {
                let mut saved = vec![0u8; frame.bytes.len()];
                self.read_memory(frame.start, &mut saved)?;
                park.saved_stack = Some((frame.start, saved));
                (code, frame)
            }
            None => self.map_own_page(&mut park, &build)?,
        };
        park.registers.rip = code;
        park.registers.rsp = frame.stack_pointer;
        park.registers.rax = libc::SYS_rt_sigreturn.cast_unsigned();
        park.registers.orig_rax = u64::MAX;
        if let Err(error) = self.write_memory(frame.start, &frame.bytes) {
            self.put_stack_back(&park);
            return Err(error);
        }
        // Registers first: from here on, the process left alone returns
        // through the frame, which also puts its own mask back.
        if let Err(error) = self.set_registers(&park.registers) {
            self.put_stack_back(&park);
            return Err(error);
        }
        let blocked = sys::set_sigmask(self.pid, u64::MAX).map_err(EngineError::ptrace("PTRACE_SETSIGMASK", raw));
        self.park = Some(park);
        blocked?;
        self.reached("parking", 0);
        self.enter_parked_stop()
    }

    /// The page crp maps for code and frame when the process offers no
    /// restorer or no room below its stack: the only syscall injected
    /// before the process is parked.
    fn map_own_page(
        &mut self,
        park: &mut Park,
        build: &dyn Fn(u64) -> Result<PlacedFrame, EngineError>,
    ) -> Result<(u64, PlacedFrame), EngineError> {
        let length =
            (OWN_SIGRETURN.len() as u64 + build(u64::MAX)?.bytes.len() as u64 + 128).next_multiple_of(PAGE_SIZE);
        let protection = crate::arg(libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC);
        let flags = crate::arg(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS);
        let page = self.unprotected_syscall(
            park,
            "mmap(crp's page)",
            libc::SYS_mmap,
            [0, length, protection, flags, u64::MAX, 0],
        )?;
        park.own_page = Some((page, length));
        self.write_memory(page, &OWN_SIGRETURN)?;
        Ok((page, build(page + length)?))
    }

    /// Runs one syscall through the process's own `syscall` instruction
    /// while it is not parked, then puts the frozen registers back.
    fn unprotected_syscall(
        &mut self,
        park: &Park,
        name: &'static str,
        number: i64,
        args: [u64; 6],
    ) -> Result<u64, EngineError> {
        let raw = self.pid.as_raw();
        let mut registers = self.registers;
        registers.rip = park.syscall_ip;
        registers.rax = number.cast_unsigned();
        registers.orig_rax = u64::MAX;
        set_arguments(&mut registers, args);
        sys::set_sigmask(self.pid, u64::MAX).map_err(EngineError::ptrace("PTRACE_SETSIGMASK", raw))?;
        self.set_registers(&registers)?;
        let result = self.resume_to_syscall_stop().and_then(|()| self.resume_to_syscall_stop());
        let after = result.and_then(|()| self.get_registers());
        let _ = self.set_registers(&self.put_back());
        let _ = sys::set_sigmask(self.pid, park.mask);
        let result = after?.rax.cast_signed();
        tracing::debug!(pid = raw, number, args = format_args!("{args:x?}"), result, "injected syscall (unparked)");
        if (-4095..0).contains(&result) {
            let errno = nix::errno::Errno::from_raw(i32::try_from(-result).unwrap_or(libc::EINVAL));
            return Err(EngineError::Syscall { syscall: name, args: args.to_vec(), pid: raw, errno });
        }
        Ok(result.cast_unsigned())
    }

    /// Resumes the process from its freeze (or from a finished injection)
    /// into the entry stop of the parking `rt_sigreturn`.
    fn enter_parked_stop(&mut self) -> Result<(), EngineError> {
        self.resume_to_syscall_stop()?;
        let registers = self.get_registers()?;
        if registers.orig_rax != libc::SYS_rt_sigreturn.cast_unsigned() {
            return Err(EngineError::UnexpectedStop {
                operation: "parking for injection",
                pid: self.pid.as_raw(),
                status: format!("stopped in syscall {} at {:#x}", registers.orig_rax.cast_signed(), registers.rip),
            });
        }
        Ok(())
    }

    /// Leaves the parked stop without running `rt_sigreturn`: the process
    /// is frozen again exactly as [`Frozen::seize`] left it.
    pub fn unpark(&mut self) -> Result<(), EngineError> {
        let Some(park) = self.park.take() else {
            return Ok(());
        };
        let raw = self.pid.as_raw();
        self.reached("unparking", 0);
        let result = (|| {
            sys::set_sigmask(self.pid, park.mask).map_err(EngineError::ptrace("PTRACE_SETSIGMASK", raw))?;
            // Skipping the syscall (orig_rax = -1) leaves these registers
            // in place: a process abandoned from here resumes as frozen.
            self.set_registers(&park.abandon_to)?;
            ptrace::interrupt(self.pid).map_err(EngineError::ptrace("PTRACE_INTERRUPT", raw))?;
            self.wait_for_interrupt_stop_after(ptrace::cont(self.pid, None), ptrace::cont)?;
            // In the interrupt stop the kernel applies its own restart
            // logic to these when the process goes on, as after a freeze.
            self.set_registers(&self.put_back())
        })();
        if let Err(error) = result {
            // Best effort: still parked or not, these resume it as frozen.
            let _ = self.set_registers(&park.abandon_to);
            let _ = sys::set_sigmask(self.pid, park.mask);
            return Err(error);
        }
        self.put_stack_back(&park);
        if let Some((page, length)) = park.own_page {
            self.unprotected_syscall(&park, "munmap(crp's page)", libc::SYS_munmap, [page, length, 0, 0, 0, 0])?;
        }
        self.reached("unparked", 0);
        Ok(())
    }

    fn put_stack_back(&self, park: &Park) {
        if let Some((address, bytes)) = &park.saved_stack {
            let _ = sys::write_memory(self.pid, *address, bytes);
        }
    }

    /// Puts the original registers back and detaches: the process carries
    /// on exactly where it was.
    pub fn release(mut self) -> Result<(), EngineError> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<(), EngineError> {
        if !self.attached {
            return Ok(());
        }
        let raw = self.pid.as_raw();
        let unparked = self.unpark();
        self.attached = false;
        // Detach even if something failed: a traced process stays stopped.
        let put_back =
            if unparked.is_ok() && self.have_registers { self.set_registers(&self.put_back()) } else { Ok(()) };
        let detached = ptrace::detach(self.pid, None).map_err(EngineError::ptrace("PTRACE_DETACH", raw));
        unparked.and(put_back).and(detached)
    }

    /// Drops the hold on a thread whose process is about to be killed:
    /// nothing is put back or detached.
    pub(crate) fn forget(mut self) {
        self.attached = false;
        self.park = None;
    }

    /// Kills the process (after the image is durable).
    pub fn kill(mut self) -> Result<(), EngineError> {
        self.attached = false;
        let raw = self.pid.as_raw();
        kill(self.pid, Signal::SIGKILL).map_err(EngineError::ptrace("kill", raw))?;
        // Consume the tracer's copy of the exit notification; the real parent
        // still gets its own.
        let _ = sys::wait_for(self.pid);
        Ok(())
    }

    /// Starts `number` from the parked stop and lets the process run it
    /// without waiting for its end: a syscall that blocks (a `read` of a
    /// pipe) holds the process in the kernel, where a crp that dies leaves
    /// it until the syscall ends, then it returns to `rt_sigreturn` and
    /// carries on where it was frozen. [`Frozen::finish_syscall`] waits
    /// for the end; nothing else may run in the process meanwhile.
    pub fn start_syscall(&mut self, number: i64, args: [u64; 6]) -> Result<(), EngineError> {
        let pid = self.pid.as_raw();
        let Some(parked) = self.park.as_ref().map(|park| park.registers) else {
            return Err(EngineError::NotParked { pid });
        };
        self.injected += 1;
        self.reached("injecting", self.injected);
        let mut registers = parked;
        registers.orig_rax = number.cast_unsigned();
        set_arguments(&mut registers, args);
        self.set_registers(&registers)?;
        ptrace::syscall(self.pid, None).map_err(EngineError::ptrace("PTRACE_SYSCALL", pid))?;
        self.running = Some((number, args));
        self.reached("in-syscall", self.injected);
        Ok(())
    }

    /// Waits for the end of the syscall [`Frozen::start_syscall`] started,
    /// and parks the process again: its result.
    pub fn finish_syscall(&mut self) -> Result<i64, EngineError> {
        let pid = self.pid.as_raw();
        let (Some(parked), Some((number, args))) = (self.park.as_ref().map(|park| park.registers), self.running.take())
        else {
            return Err(EngineError::NotParked { pid });
        };
        match self.wait("an injected syscall")? {
            Waited::Status(WaitStatus::PtraceSyscall(_)) => {}
            other => return Err(self.unexpected("an injected syscall", &other)),
        }
        let result = self.get_registers()?.rax.cast_signed();
        tracing::debug!(pid, number, args = format_args!("{args:x?}"), result, "injected syscall (parked)");
        // orig_rax = -1: no restart logic may touch the way back.
        self.set_registers(&parked)?;
        self.enter_parked_stop()?;
        Ok(result)
    }

    fn get_registers(&self) -> Result<Registers, EngineError> {
        ptrace::getregs(self.pid).map_err(EngineError::ptrace("PTRACE_GETREGS", self.pid.as_raw()))
    }

    fn set_registers(&self, registers: &Registers) -> Result<(), EngineError> {
        ptrace::setregs(self.pid, *registers).map_err(EngineError::ptrace("PTRACE_SETREGS", self.pid.as_raw()))
    }

    /// Waits for the `PTRACE_EVENT_STOP` a `PTRACE_INTERRUPT` asked for,
    /// letting signals that arrive first be delivered with `resume`.
    fn wait_for_interrupt_stop(
        &mut self,
        resume: fn(Pid, Option<Signal>) -> nix::Result<()>,
    ) -> Result<(), EngineError> {
        self.wait_for_interrupt_stop_after(Ok(()), resume)
    }

    fn wait_for_interrupt_stop_after(
        &mut self,
        resumed: nix::Result<()>,
        resume: fn(Pid, Option<Signal>) -> nix::Result<()>,
    ) -> Result<(), EngineError> {
        let raw = self.pid.as_raw();
        resumed.map_err(EngineError::ptrace("resuming", raw))?;
        loop {
            match self.wait("freezing")? {
                Waited::Status(WaitStatus::PtraceEvent(_, _, libc::PTRACE_EVENT_STOP)) => return Ok(()),
                Waited::Status(WaitStatus::Stopped(_, signal)) => resume(self.pid, Some(signal)),
                // Delivered as it came: the freeze takes no signal.
                Waited::RealTimeSignal(signal) => sys::continue_with_signal(self.pid, signal),
                other => return Err(self.unexpected("freezing", &other)),
            }
            .map_err(EngineError::ptrace("resuming", raw))?;
            // Any ptrace stop clears a pending interrupt (ptrace_stop): ask
            // again, or a process whose signals keep coming (a fast timer's)
            // is never frozen, and one whose signal was the last runs on.
            ptrace::interrupt(self.pid).map_err(EngineError::ptrace("PTRACE_INTERRUPT", raw))?;
        }
    }

    /// Resumes with `PTRACE_SYSCALL` until the next syscall stop. A stop
    /// signal is let through (the kernel remembers the group stop and
    /// applies it once crp detaches); any other signal is blocked, so one
    /// arriving here means something crp ran went wrong.
    fn resume_to_syscall_stop(&mut self) -> Result<(), EngineError> {
        let raw = self.pid.as_raw();
        let mut signal = None;
        loop {
            ptrace::syscall(self.pid, signal).map_err(EngineError::ptrace("PTRACE_SYSCALL", raw))?;
            signal = match self.wait("an injected syscall")? {
                Waited::Status(WaitStatus::PtraceSyscall(_)) => return Ok(()),
                Waited::Status(WaitStatus::PtraceEvent(_, _, libc::PTRACE_EVENT_STOP)) => None,
                Waited::Status(WaitStatus::Stopped(
                    _,
                    stop @ (Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU),
                )) => Some(stop),
                other => return Err(self.unexpected("an injected syscall", &other)),
            };
        }
    }

    fn wait(&mut self, operation: &'static str) -> Result<Waited, EngineError> {
        let status = sys::wait_for_any_signal(self.pid).map_err(EngineError::ptrace("waitpid", self.pid.as_raw()))?;
        if matches!(status, Waited::Status(WaitStatus::Exited(..) | WaitStatus::Signaled(..))) {
            // Gone: nothing left to detach from.
            self.attached = false;
            self.park = None;
            return Err(self.unexpected(operation, &status));
        }
        Ok(status)
    }

    fn unexpected(&self, operation: &'static str, status: &Waited) -> EngineError {
        let status = match status {
            Waited::Status(status) => format!("{status:?}"),
            Waited::RealTimeSignal(signal) => format!("stopped by real-time signal {signal}"),
        };
        EngineError::UnexpectedStop { operation, pid: self.pid.as_raw(), status }
    }
}

impl Tracee for Frozen {
    fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Runs a syscall from the parked stop: its number and arguments
    /// replace `rt_sigreturn`'s, its return goes to the code that calls
    /// `rt_sigreturn` again, which crp stops at the entry of once more.
    fn raw_syscall(&mut self, number: i64, args: [u64; 6]) -> Result<i64, EngineError> {
        self.start_syscall(number, args)?;
        self.finish_syscall()
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

    /// The registers at the freeze, not the parked stop's.
    fn frozen_registers(&self) -> Result<Registers, EngineError> {
        Ok(self.registers)
    }

    fn blocked_signals(&self) -> Result<u64, EngineError> {
        match &self.park {
            Some(park) => Ok(park.mask),
            None => sys::get_sigmask(self.pid).map_err(EngineError::ptrace("PTRACE_GETSIGMASK", self.pid.as_raw())),
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = self.release_inner();
    }
}

fn set_arguments(registers: &mut Registers, args: [u64; 6]) {
    registers.rdi = args[0];
    registers.rsi = args[1];
    registers.rdx = args[2];
    registers.r10 = args[3];
    registers.r8 = args[4];
    registers.r9 = args[5];
}

/// Whether `[start, end)` lies inside one writable mapping.
fn writable(maps: &[MapsEntry], start: u64, end: u64) -> bool {
    maps.iter().any(|entry| entry.writable && entry.start <= start && end <= entry.end)
}

/// The address of a `rt_sigreturn` call sequence in the process's code,
/// libc's first (its signal restorer).
fn find_sigreturn(pid: Pid, maps: &[MapsEntry]) -> Option<u64> {
    let mut code: Vec<&MapsEntry> = maps
        .iter()
        .filter(|entry| entry.executable && entry.end <= crate::USER_SPACE_END && !entry.name.starts_with('['))
        .collect();
    code.sort_by_key(|entry| !entry.name.contains("libc"));
    let overlap = SIGRETURN_SEQUENCES.iter().map(|sequence| sequence.len()).max().unwrap_or(0);
    let mut buffer = vec![0u8; CODE_CHUNK + overlap];
    for entry in code {
        let mut address = entry.start;
        while address < entry.end {
            let length = usize::try_from(entry.end - address).map_or(buffer.len(), |left| left.min(buffer.len()));
            if sys::read_memory(pid, address, &mut buffer[..length]).is_err() {
                break;
            }
            let found = SIGRETURN_SEQUENCES
                .iter()
                .find_map(|sequence| buffer[..length].windows(sequence.len()).position(|window| window == *sequence));
            if let Some(offset) = found {
                return Some(address + offset as u64);
            }
            address += CODE_CHUNK as u64;
        }
    }
    None
}
