//! A task frozen inside a syscall shows `orig_rax` = the syscall and `rax` =
//! one of the kernel's internal -ERESTART* codes. Left alone, the kernel
//! would fix them up on the way back to user space; a restored task is new,
//! so crp does the fix-up itself and then sets `orig_rax = -1` so that
//! nothing is applied twice.

use crp_ptrace::Registers;

const ERESTARTSYS: i64 = -512;
const ERESTARTNOINTR: i64 = -513;
const ERESTARTNOHAND: i64 = -514;
const ERESTART_RESTARTBLOCK: i64 = -516;
const EINTR: i64 = -4;
/// Length of the `syscall` instruction.
const SYSCALL_INSN_LEN: u64 = 2;

/// What the restored task must do about the syscall it was frozen in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeAction {
    /// Not in a syscall, or the syscall already completed.
    AsIs,
    /// Re-execute the same syscall with the same arguments.
    Rewind,
    /// Re-execute a relative sleep for the time that was left, which the
    /// kernel wrote to the `rem` timespec: the request pointer is pointed at
    /// `rem`.
    RewindSleep { remaining_at: u64 },
    /// The syscall's restart state lived in the kernel and is gone: it
    /// returns EINTR, as it would after a signal handler.
    Interrupt,
}

/// Syscalls Linux never restarts: stopped in them (by crp's freeze as by a
/// SIGSTOP and SIGCONT) they end with EINTR before anything happened,
/// although no handler ran. A thread frozen right after such an EINTR,
/// which no handler saw (one would have run first: the freeze delivers
/// signals before it stops), waits again.
const NEVER_RESTARTED: [i64; 6] = [
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_semop,
    libc::SYS_semtimedop,
];

pub fn plan_resume(registers: &Registers) -> ResumeAction {
    if registers.orig_rax as i64 == -1 {
        return ResumeAction::AsIs;
    }
    match registers.rax as i64 {
        ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => ResumeAction::Rewind,
        // Waits again for its whole timeout (the deadline is the kernel's).
        EINTR if NEVER_RESTARTED.contains(&(registers.orig_rax as i64)) => ResumeAction::Rewind,
        ERESTART_RESTARTBLOCK => match registers.orig_rax as i64 {
            libc::SYS_nanosleep if registers.rsi != 0 => ResumeAction::RewindSleep { remaining_at: registers.rsi },
            libc::SYS_clock_nanosleep if registers.r10 != 0 => {
                ResumeAction::RewindSleep { remaining_at: registers.r10 }
            }
            // poll(2) always leaves through its restart block when
            // interrupted (even without a timeout), and few callers expect
            // EINTR from it (`tail -f` dies of it). The block's deadline
            // cannot be read from user space: the poll waits again for its
            // whole timeout, exact for an infinite one, later for others.
            libc::SYS_poll => ResumeAction::Rewind,
            _ => ResumeAction::Interrupt,
        },
        _ => ResumeAction::AsIs,
    }
}

/// The registers a task left running after a freeze resumes with when it
/// was stopped right after an EINTR of a syscall Linux never restarts (see
/// [`NEVER_RESTARTED`]): the syscall again. `None` otherwise (the kernel's
/// own restart logic applies when the task goes on).
pub fn rewind_never_restarted(frozen: &Registers) -> Option<Registers> {
    let interrupted = frozen.orig_rax as i64 >= 0
        && frozen.rax as i64 == EINTR
        && NEVER_RESTARTED.contains(&(frozen.orig_rax as i64));
    interrupted.then(|| {
        let mut registers = *frozen;
        registers.rax = frozen.orig_rax;
        registers.rip = registers.rip.wrapping_sub(SYSCALL_INSN_LEN);
        registers
    })
}

/// The registers a restored task resumes with, from those captured at the
/// freeze.
pub fn resume_registers(frozen: &Registers) -> Registers {
    let mut registers = *frozen;
    match plan_resume(frozen) {
        ResumeAction::AsIs => {}
        // Wrapping, as the kernel's own `regs->ip -= 2`: a frozen rip below
        // 2 cannot come from a real syscall, and `RegisterFile::check`
        // refuses such an image before anything is created.
        ResumeAction::Rewind => {
            registers.rax = frozen.orig_rax;
            registers.rip = registers.rip.wrapping_sub(SYSCALL_INSN_LEN);
        }
        ResumeAction::RewindSleep { remaining_at } => {
            registers.rax = frozen.orig_rax;
            registers.rip = registers.rip.wrapping_sub(SYSCALL_INSN_LEN);
            if frozen.orig_rax as i64 == libc::SYS_nanosleep {
                registers.rdi = remaining_at;
            } else {
                registers.rdx = remaining_at;
            }
        }
        ResumeAction::Interrupt => registers.rax = EINTR.cast_unsigned(),
    }
    registers.orig_rax = u64::MAX;
    registers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_syscall(number: i64, result: i64) -> Registers {
        // SAFETY: plain integers.
        let mut registers: Registers = unsafe { std::mem::zeroed() };
        registers.orig_rax = number.cast_unsigned();
        registers.rax = result.cast_unsigned();
        registers.rip = 0x1002;
        registers
    }

    #[test]
    fn read_interrupted_by_freeze_is_re_executed() {
        let frozen = in_syscall(libc::SYS_read, ERESTARTSYS);
        let resumed = resume_registers(&frozen);
        assert_eq!(resumed.rax, libc::SYS_read as u64);
        assert_eq!(resumed.rip, 0x1000);
        assert_eq!(resumed.orig_rax, u64::MAX);
    }

    #[test]
    fn relative_sleep_resumes_with_the_remaining_time() {
        let mut frozen = in_syscall(libc::SYS_clock_nanosleep, ERESTART_RESTARTBLOCK);
        frozen.rdx = 0x5000;
        frozen.r10 = 0x6000;
        let resumed = resume_registers(&frozen);
        assert_eq!(resumed.rdx, 0x6000);
        assert_eq!(resumed.rip, 0x1000);
        let mut frozen = in_syscall(libc::SYS_nanosleep, ERESTART_RESTARTBLOCK);
        frozen.rsi = 0x7000;
        assert_eq!(resume_registers(&frozen).rdi, 0x7000);
    }

    #[test]
    fn an_interrupted_poll_polls_again() {
        let frozen = in_syscall(libc::SYS_poll, ERESTART_RESTARTBLOCK);
        assert_eq!(plan_resume(&frozen), ResumeAction::Rewind);
        let resumed = resume_registers(&frozen);
        assert_eq!((resumed.rax, resumed.rip), (libc::SYS_poll as u64, frozen.rip - 2));
    }

    #[test]
    fn an_epoll_wait_ended_by_the_freeze_waits_again() {
        let frozen = in_syscall(libc::SYS_epoll_wait, EINTR);
        assert_eq!(plan_resume(&frozen), ResumeAction::Rewind);
        let resumed = resume_registers(&frozen);
        assert_eq!((resumed.rax, resumed.rip), (libc::SYS_epoll_wait as u64, frozen.rip - 2));
        let released = rewind_never_restarted(&frozen).unwrap();
        assert_eq!((released.rax, released.rip, released.orig_rax), (frozen.orig_rax, frozen.rip - 2, frozen.orig_rax));
        // A read's EINTR came after a handler: it stays.
        assert_eq!(plan_resume(&in_syscall(libc::SYS_read, EINTR)), ResumeAction::AsIs);
        assert!(rewind_never_restarted(&in_syscall(libc::SYS_read, EINTR)).is_none());
    }

    #[test]
    fn restart_block_without_rem_gives_eintr() {
        // A FUTEX_WAIT with a timeout: EINTR is one of its documented wake-ups.
        let frozen = in_syscall(libc::SYS_futex, ERESTART_RESTARTBLOCK);
        let resumed = resume_registers(&frozen);
        assert_eq!(resumed.rax as i64, EINTR);
        assert_eq!(resumed.rip, 0x1002);
    }

    #[test]
    fn a_rewind_below_address_two_wraps_instead_of_overflowing() {
        let mut frozen = in_syscall(libc::SYS_read, ERESTARTSYS);
        frozen.rip = 1;
        assert_eq!(resume_registers(&frozen).rip, u64::MAX);
    }

    #[test]
    fn completed_syscalls_and_user_code_are_untouched() {
        let frozen = in_syscall(libc::SYS_write, 5);
        let resumed = resume_registers(&frozen);
        assert_eq!((resumed.rax, resumed.rip), (5, 0x1002));
        assert_eq!(plan_resume(&in_syscall(-1, ERESTARTSYS)), ResumeAction::AsIs);
    }
}
