//! Finding a `syscall` instruction in a process to inject syscalls through:
//! the one the process stopped after, or one in its vDSO. Both back ends
//! need one: the userspace one at dump, the kmod one after the module has
//! rebuilt the process (its vDSO is the only code crp knows is there).

use nix::unistd::Pid;

use crate::error::EngineError;
use crate::sys;

/// The x86-64 `syscall` instruction.
pub const SYSCALL_INSTRUCTION: [u8; 2] = [0x0f, 0x05];

/// `rip - 2` when the two bytes before `rip` are a `syscall` (the process
/// stopped right after one), else `None`.
pub fn syscall_before(pid: Pid, rip: u64) -> Option<u64> {
    let address = rip.checked_sub(2)?;
    let mut before = [0u8; 2];
    sys::read_memory(pid, address, &mut before).ok()?;
    (before == SYSCALL_INSTRUCTION).then_some(address)
}

/// The address of a `syscall` instruction in `[start, end)` of `pid` (its
/// vDSO).
pub fn syscall_in(pid: Pid, start: u64, end: u64) -> Result<u64, EngineError> {
    let mut text = vec![0u8; usize::try_from(end.saturating_sub(start)).unwrap_or(0)];
    if sys::read_memory(pid, start, &mut text).is_ok()
        && let Some(offset) = text.windows(2).position(|pair| pair == SYSCALL_INSTRUCTION)
    {
        return Ok(start + offset as u64);
    }
    Err(EngineError::NoSyscallInstruction { pid: pid.as_raw() })
}
