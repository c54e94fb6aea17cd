//! Signal state: the disposition of every signal (read by injecting
//! `rt_sigaction` with no new action), the alternate stack and the blocked
//! mask. Pending signals are refused by the dump's preflight.

use crp_ptrace::{EngineError, Tracee, TraceeExt, arg};

use crate::error::CompoundError;
use crate::valid::Invalid;

/// `struct kernel_sigaction` on x86-64: handler, flags, restorer, mask.
const KERNEL_SIGACTION_SIZE: usize = 32;
/// `stack_t`: sp, flags (+ padding), size.
const STACK_T_SIZE: usize = 24;
const SIGSET_SIZE: u64 = 8;
const SIGNAL_COUNT: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SignalAction {
    pub signal: i32,
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SignalState {
    /// Every catchable signal's disposition (SIGKILL and SIGSTOP excluded).
    pub actions: Vec<SignalAction>,
    pub blocked: u64,
    pub altstack_sp: u64,
    pub altstack_flags: i32,
    pub altstack_size: u64,
}

/// `(signal number, index of its slot)` for every catchable signal.
fn catchable_signals() -> impl Iterator<Item = (i32, usize)> {
    (1..=64i32).zip(0..SIGNAL_COUNT).filter(|&(signal, _)| signal != libc::SIGKILL && signal != libc::SIGSTOP)
}

fn word(bytes: &[u8], index: usize) -> u64 {
    u64::from_le_bytes(bytes[index * 8..index * 8 + 8].try_into().unwrap_or([0; 8]))
}

impl SignalState {
    pub fn capture(tracee: &mut dyn Tracee) -> Result<Self, CompoundError> {
        // The process's own mask: crp blocks every signal while it works.
        let blocked = tracee.blocked_signals()?;
        let mut scratch = tracee.scratch();
        let actions_address = scratch.reserve(KERNEL_SIGACTION_SIZE * SIGNAL_COUNT);
        let stack_address = scratch.reserve(STACK_T_SIZE);
        scratch.commit(tracee)?;
        for (signal, index) in catchable_signals() {
            let slot = actions_address + (index * KERNEL_SIGACTION_SIZE) as u64;
            tracee.syscall("rt_sigaction", libc::SYS_rt_sigaction, [arg(signal), 0, slot, SIGSET_SIZE, 0, 0])?;
        }
        tracee.syscall("sigaltstack", libc::SYS_sigaltstack, [0, stack_address, 0, 0, 0, 0])?;
        let mut raw_actions = vec![0u8; KERNEL_SIGACTION_SIZE * SIGNAL_COUNT];
        tracee.read_memory(actions_address, &mut raw_actions)?;
        let mut raw_stack = [0u8; STACK_T_SIZE];
        tracee.read_memory(stack_address, &mut raw_stack)?;
        let actions = catchable_signals()
            .map(|(signal, index)| {
                let raw = &raw_actions[index * KERNEL_SIGACTION_SIZE..][..KERNEL_SIGACTION_SIZE];
                SignalAction {
                    signal,
                    handler: word(raw, 0),
                    flags: word(raw, 1),
                    restorer: word(raw, 2),
                    mask: word(raw, 3),
                }
            })
            .collect();
        Ok(Self {
            actions,
            blocked,
            altstack_sp: word(&raw_stack, 0),
            altstack_flags: i32::from_le_bytes(raw_stack[8..12].try_into().unwrap_or([0; 4])),
            altstack_size: word(&raw_stack, 2),
        })
    }

    /// Refuses dispositions `rt_sigaction` would refuse: a number outside
    /// 1..=64, SIGKILL or SIGSTOP, or a signal given twice.
    pub fn check(&self) -> Result<(), Invalid> {
        let mut seen = 0u64;
        for (index, action) in self.actions.iter().enumerate() {
            let field = || format!("signal action {index}");
            let signal = action.signal;
            if !(1..=64).contains(&signal) {
                return Err(Invalid::new(field(), format!("has signal number {signal}, not 1..=64")));
            }
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                return Err(Invalid::new(field(), format!("sets signal {signal}, which cannot be caught")));
            }
            let bit = 1u64 << (signal - 1);
            if seen & bit != 0 {
                return Err(Invalid::new(field(), format!("sets signal {signal} a second time")));
            }
            seen |= bit;
        }
        Ok(())
    }

    /// Installs every disposition and the alternate stack. The blocked mask
    /// is set last, by the engine, right before the process runs.
    pub fn restore(&self, tracee: &mut dyn Tracee) -> Result<(), EngineError> {
        let mut scratch = tracee.scratch();
        let mut addresses = Vec::with_capacity(self.actions.len());
        for action in &self.actions {
            let mut raw = Vec::with_capacity(KERNEL_SIGACTION_SIZE);
            for value in [action.handler, action.flags, action.restorer, action.mask] {
                raw.extend_from_slice(&value.to_le_bytes());
            }
            addresses.push((action.signal, scratch.push(&raw)));
        }
        let disabled = self.altstack_flags & libc::SS_DISABLE != 0;
        let mut stack = Vec::with_capacity(STACK_T_SIZE);
        stack.extend_from_slice(&self.altstack_sp.to_le_bytes());
        // SS_ONSTACK is a report, not a setting; only SS_AUTODISARM carries over.
        let flags = if disabled { libc::SS_DISABLE } else { self.altstack_flags & (1 << 31) };
        stack.extend_from_slice(&u64::from(flags.cast_unsigned()).to_le_bytes());
        stack.extend_from_slice(&self.altstack_size.to_le_bytes());
        let stack_address = scratch.push(&stack);
        scratch.commit(tracee)?;
        for (signal, address) in addresses {
            tracee.syscall("rt_sigaction", libc::SYS_rt_sigaction, [arg(signal), address, 0, SIGSET_SIZE, 0, 0])?;
        }
        tracee.syscall("sigaltstack", libc::SYS_sigaltstack, [stack_address, 0, 0, 0, 0, 0])?;
        Ok(())
    }
}

/// Says which signals are pending for `pid` (thread or process-wide), if any.
pub fn pending_signals(pid: i32) -> Result<Option<String>, CompoundError> {
    let path = format!("/proc/{pid}/status");
    for key in ["SigPnd", "ShdPnd"] {
        let value =
            crp_ptrace::procfs::status_field(pid, key).map_err(CompoundError::io("read", &path))?.unwrap_or_default();
        if u64::from_str_radix(&value, 16).unwrap_or(0) != 0 {
            return Ok(Some(format!("{key} {value}")));
        }
    }
    Ok(None)
}
