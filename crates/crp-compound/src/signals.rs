//! Signal state, as Linux divides it: the disposition of every signal is
//! the process's ([`SignalState`], read by injecting `rt_sigaction` with no
//! new action); the blocked mask and the alternate stack are each thread's
//! ([`ThreadSignals`]). Pending signals are in [`crate::pending_signals`].

use crp_ptrace::{Capture, EngineError, Persist, Restore, Tracee, TraceeExt, arg};

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

/// The process's signal dispositions.
#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SignalState {
    /// Every catchable signal's disposition (SIGKILL and SIGSTOP excluded).
    pub actions: Vec<SignalAction>,
}

/// One thread's blocked mask and alternate signal stack.
#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ThreadSignals {
    pub blocked: u64,
    pub altstack_sp: u64,
    pub altstack_flags: i32,
    pub altstack_size: u64,
}

/// Signal names by number (1..=31); 32 and up are real-time signals.
const SIGNAL_NAMES: [&str; 31] = [
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];

/// `sa_flags` bits and their names (sigaction(2)).
const SA_FLAG_NAMES: [(u64, &str); 8] = [
    (0x0000_0001, "SA_NOCLDSTOP"),
    (0x0000_0002, "SA_NOCLDWAIT"),
    (0x0000_0004, "SA_SIGINFO"),
    (0x0400_0000, "SA_RESTORER"),
    (0x0800_0000, "SA_ONSTACK"),
    (0x1000_0000, "SA_RESTART"),
    (0x4000_0000, "SA_NODEFER"),
    (0x8000_0000, "SA_RESETHAND"),
];

/// `SIG_DFL` and `SIG_IGN` as a handler address.
pub const SIG_DFL: u64 = 0;
pub const SIG_IGN: u64 = 1;

/// The name of signal `signal`: `SIGTERM`, `SIGRTMIN+3` (glibc's SIGRTMIN
/// is 34; 32 and 33 are glibc's own, shown as `SIG32`, `SIG33`).
pub fn signal_name(signal: i32) -> String {
    let classic = usize::try_from(signal).ok().and_then(|number| SIGNAL_NAMES.get(number.checked_sub(1)?));
    if let Some(name) = classic {
        return (*name).to_owned();
    }
    match signal {
        34 => "SIGRTMIN".to_owned(),
        35..=63 => format!("SIGRTMIN+{}", signal - 34),
        64 => "SIGRTMAX".to_owned(),
        other => format!("SIG{other}"),
    }
}

/// The names of the signals in a 64-bit mask (bit N-1 is signal N).
pub fn mask_names(mask: u64) -> Vec<String> {
    (1..=64).filter(|signal| mask & (1u64 << (signal - 1)) != 0).map(signal_name).collect()
}

/// The names of the `sa_flags` set; unknown bits as one hex number.
pub fn flag_names(flags: u64) -> Vec<String> {
    let mut names: Vec<String> =
        SA_FLAG_NAMES.iter().filter(|(bit, _)| flags & bit != 0).map(|(_, name)| (*name).to_owned()).collect();
    let unknown = flags & !SA_FLAG_NAMES.iter().fold(0, |all, (bit, _)| all | bit);
    if unknown != 0 {
        names.push(format!("{unknown:#x}"));
    }
    names
}

/// `(signal number, index of its slot)` for every catchable signal.
fn catchable_signals() -> impl Iterator<Item = (i32, usize)> {
    (1..=64i32).zip(0..SIGNAL_COUNT).filter(|&(signal, _)| signal != libc::SIGKILL && signal != libc::SIGSTOP)
}

impl SignalState {
    fn capture_from(tracee: &mut dyn Tracee) -> Result<Self, CompoundError> {
        let mut scratch = tracee.scratch();
        let actions_address = scratch.reserve(KERNEL_SIGACTION_SIZE * SIGNAL_COUNT);
        scratch.commit(tracee)?;
        for (signal, index) in catchable_signals() {
            let slot = actions_address + (index * KERNEL_SIGACTION_SIZE) as u64;
            tracee.syscall("rt_sigaction", libc::SYS_rt_sigaction, [arg(signal), 0, slot, SIGSET_SIZE, 0, 0])?;
        }
        // Buffers of 8-byte words: every value is read whole, no conversion can fail.
        let mut raw_actions = [[0u8; 8]; KERNEL_SIGACTION_SIZE / 8 * SIGNAL_COUNT];
        tracee.read_memory(actions_address, raw_actions.as_flattened_mut())?;
        let (raw_actions, _) = raw_actions.as_chunks::<{ KERNEL_SIGACTION_SIZE / 8 }>();
        // Slot N - 1 holds signal N's action; SIGKILL's and SIGSTOP's are skipped.
        let actions = (1..=64i32)
            .zip(raw_actions)
            .filter(|(signal, _)| catchable_signals().any(|(catchable, _)| catchable == *signal))
            .map(|(signal, raw)| {
                let [handler, flags, restorer, mask] = raw.map(u64::from_le_bytes);
                SignalAction { signal, handler, flags, restorer, mask }
            })
            .collect();
        Ok(Self { actions })
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

    /// Installs every disposition.
    fn restore_into(&self, tracee: &mut dyn Tracee) -> Result<(), EngineError> {
        let mut scratch = tracee.scratch();
        let mut addresses = Vec::with_capacity(self.actions.len());
        for action in &self.actions {
            let mut raw = Vec::with_capacity(KERNEL_SIGACTION_SIZE);
            for value in [action.handler, action.flags, action.restorer, action.mask] {
                raw.extend_from_slice(&value.to_le_bytes());
            }
            addresses.push((action.signal, scratch.push(&raw)));
        }
        scratch.commit(tracee)?;
        for (signal, address) in addresses {
            tracee.syscall("rt_sigaction", libc::SYS_rt_sigaction, [arg(signal), address, 0, SIGSET_SIZE, 0, 0])?;
        }
        Ok(())
    }
}

impl ThreadSignals {
    fn capture_from(tracee: &mut dyn Tracee) -> Result<Self, CompoundError> {
        // The process's own mask: crp blocks every signal while it works.
        let blocked = tracee.blocked_signals()?;
        let mut scratch = tracee.scratch();
        let stack_address = scratch.reserve(STACK_T_SIZE);
        scratch.commit(tracee)?;
        tracee.syscall("sigaltstack", libc::SYS_sigaltstack, [0, stack_address, 0, 0, 0, 0])?;
        let mut raw_stack = [[0u8; 8]; STACK_T_SIZE / 8];
        tracee.read_memory(stack_address, raw_stack.as_flattened_mut())?;
        let [altstack_sp, flags_word, altstack_size] = raw_stack;
        let [flags_0, flags_1, flags_2, flags_3, ..] = flags_word;
        Ok(Self {
            blocked,
            altstack_sp: u64::from_le_bytes(altstack_sp),
            altstack_flags: i32::from_le_bytes([flags_0, flags_1, flags_2, flags_3]),
            altstack_size: u64::from_le_bytes(altstack_size),
        })
    }

    /// Sets the alternate stack. The blocked mask is set last, right
    /// before the thread runs.
    fn restore_into(&self, tracee: &mut dyn Tracee) -> Result<(), EngineError> {
        let mut scratch = tracee.scratch();
        let disabled = self.altstack_flags & libc::SS_DISABLE != 0;
        let mut stack = Vec::with_capacity(STACK_T_SIZE);
        stack.extend_from_slice(&self.altstack_sp.to_le_bytes());
        // SS_ONSTACK is a report, not a setting; only SS_AUTODISARM carries over.
        let flags = if disabled { libc::SS_DISABLE } else { self.altstack_flags & (1 << 31) };
        stack.extend_from_slice(&u64::from(flags.cast_unsigned()).to_le_bytes());
        stack.extend_from_slice(&self.altstack_size.to_le_bytes());
        let stack_address = scratch.push(&stack);
        scratch.commit(tracee)?;
        tracee.syscall("sigaltstack", libc::SYS_sigaltstack, [stack_address, 0, 0, 0, 0, 0])?;
        Ok(())
    }
}

impl Persist for SignalState {
    const KIND: &'static str = "signal dispositions";
    type Error = CompoundError;

    fn capture(context: &mut Capture<'_>) -> Result<Self, CompoundError> {
        Self::capture_from(context.tracee)
    }

    fn restore(&self, context: &mut Restore<'_>) -> Result<(), CompoundError> {
        Ok(self.restore_into(context.tracee)?)
    }
}

impl ThreadSignals {
    /// Sets the blocked mask from outside (`PTRACE_SETSIGMASK`), with the
    /// registers, right before the thread runs: until then crp's
    /// injections and the re-queued pending signals need masks of their
    /// own.
    pub fn restore_blocked(&self, tracee: &mut dyn Tracee) -> Result<(), EngineError> {
        tracee.set_blocked_signals(self.blocked)
    }
}

impl Persist for ThreadSignals {
    const KIND: &'static str = "blocked mask and alternate stack";
    type Error = CompoundError;

    fn capture(context: &mut Capture<'_>) -> Result<Self, CompoundError> {
        Self::capture_from(context.tracee)
    }

    /// The alternate stack; the blocked mask is set with the registers,
    /// right before the thread runs ([`ThreadSignals::restore_blocked`]).
    fn restore(&self, context: &mut Restore<'_>) -> Result<(), CompoundError> {
        Ok(self.restore_into(context.tracee)?)
    }
}

/// The kmod ABI: the dispositions, blocked mask and alternate stack in the
/// module's task record.
impl SignalState {
    /// What `CRP_IOC_DUMP_TASK` reported; SIGKILL and SIGSTOP have no
    /// disposition to restore.
    pub fn from_abi(state: &crp_kmod_abi::CrpTaskState) -> Self {
        let actions = (1..=64i32)
            .zip(state.actions.iter())
            .filter(|(signal, _)| *signal != libc::SIGKILL && *signal != libc::SIGSTOP)
            .map(|(signal, action)| SignalAction {
                signal,
                handler: action.handler,
                flags: action.flags,
                restorer: action.restorer,
                mask: action.mask,
            })
            .collect();
        Self { actions }
    }

    /// Fills the record `CRP_IOC_RESTORE` reads. Signal N sits in slot
    /// N - 1; numbers outside 1..=64 (refused by the image checks) reach no
    /// slot.
    pub fn write_abi(&self, state: &mut crp_kmod_abi::CrpTaskState) {
        for action in &self.actions {
            let slot = action
                .signal
                .checked_sub(1)
                .and_then(|index| usize::try_from(index).ok())
                .and_then(|index| state.actions.get_mut(index));
            if let Some(slot) = slot {
                *slot = crp_kmod_abi::CrpSigaction {
                    handler: action.handler,
                    flags: action.flags,
                    restorer: action.restorer,
                    mask: action.mask,
                };
            }
        }
    }
}

/// The kmod ABI: the blocked mask and alternate stack of the task record.
impl ThreadSignals {
    pub fn from_abi(state: &crp_kmod_abi::CrpTaskState) -> Self {
        Self {
            blocked: state.blocked,
            altstack_sp: state.altstack_sp,
            altstack_flags: state.altstack_flags.cast_signed(),
            altstack_size: state.altstack_size,
        }
    }

    /// Fills the record `CRP_IOC_RESTORE` reads.
    pub fn write_abi(&self, state: &mut crp_kmod_abi::CrpTaskState) {
        state.blocked = self.blocked;
        state.altstack_sp = self.altstack_sp;
        state.altstack_size = self.altstack_size;
        state.altstack_flags = self.altstack_flags.cast_unsigned();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crp_ptrace::fake::FakeTracee;

    #[test]
    fn dispositions_altstack_and_mask_round_trip_through_injected_calls() {
        let mut process = FakeTracee::answering(|call, memory| {
            if call.number == libc::SYS_rt_sigaction && call.args[0] == libc::SIGUSR1 as u64 {
                let action = [0x1234u64, 0x0400_0000, 0x5678, 1 << 1];
                memory.write(call.args[2], &action.map(u64::to_le_bytes).concat());
            }
            if call.number == libc::SYS_sigaltstack {
                memory.write(call.args[1], &[0x9000u64, 0, 0x4000].map(u64::to_le_bytes).concat());
            }
            0
        });
        process.blocked = 1 << (libc::SIGUSR2 - 1);
        let proc = crp_ptrace::fake::snapshot();
        let mut context = Capture { tracee: &mut process, proc: &proc, stopped_before_freeze: false };
        let state = SignalState::capture(&mut context).unwrap();
        let thread = ThreadSignals::capture(&mut context).unwrap();
        assert_eq!(thread.blocked, 1 << (libc::SIGUSR2 - 1));
        let usr1 = state.actions.iter().find(|action| action.signal == libc::SIGUSR1).unwrap();
        assert_eq!((usr1.handler, usr1.restorer), (0x1234, 0x5678));
        assert_eq!((thread.altstack_sp, thread.altstack_size), (0x9000, 0x4000));
        assert_eq!(state.actions.len(), 62, "every signal but SIGKILL and SIGSTOP");

        let mut restored = FakeTracee::default();
        state.restore(&mut Restore::new(&mut restored)).unwrap();
        thread.restore(&mut Restore::new(&mut restored)).unwrap();
        assert_eq!(restored.calls_of(libc::SYS_rt_sigaction).len(), 62);
        let usr1_call = restored.calls_of(libc::SYS_rt_sigaction).into_iter().find(|call| call.args[0] == 10).unwrap();
        assert_eq!(restored.memory.read(usr1_call.args[1], 8), 0x1234u64.to_le_bytes());
        let altstack = restored.calls_of(libc::SYS_sigaltstack)[0].args[0];
        assert_eq!(restored.memory.read(altstack, 8), 0x9000u64.to_le_bytes());
        assert_eq!(restored.blocked, 0, "the alternate stack's restore leaves the mask to the last step");
        thread.restore_blocked(&mut restored).unwrap();
        assert_eq!((restored.blocked, restored.loads.as_slice()), (1 << (libc::SIGUSR2 - 1), &["blocked mask"][..]));
    }

    #[test]
    fn signals_masks_and_flags_are_named() {
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
        assert_eq!(signal_name(31), "SIGSYS");
        assert_eq!(signal_name(32), "SIG32");
        assert_eq!(signal_name(36), "SIGRTMIN+2");
        assert_eq!(signal_name(64), "SIGRTMAX");
        assert_eq!(mask_names((1 << (libc::SIGINT - 1)) | (1 << 63)), ["SIGINT", "SIGRTMAX"]);
        assert_eq!(flag_names(0x1400_0004), ["SA_SIGINFO", "SA_RESTORER", "SA_RESTART"]);
        assert_eq!(flag_names(0x20), ["0x20"]);
    }

    #[test]
    fn kmod_dispositions_skip_kill_and_stop_keep_numbers_and_go_back_to_their_slots() {
        let mut state = crp_kmod_abi::CrpTaskState::default();
        state.actions[1] = crp_kmod_abi::CrpSigaction { handler: 0x401000, flags: 4, restorer: 0x402000, mask: 2 };
        state.blocked = 1 << 9;
        let signals = SignalState::from_abi(&state);
        assert_eq!(signals.actions.len(), 62);
        let sigint = signals.actions.iter().find(|action| action.signal == libc::SIGINT).unwrap();
        assert_eq!((sigint.handler, sigint.flags, sigint.restorer, sigint.mask), (0x401000, 4, 0x402000, 2));
        assert!(signals.actions.iter().all(|action| action.signal != libc::SIGKILL && action.signal != libc::SIGSTOP));
        let mut restored = crp_kmod_abi::CrpTaskState::default();
        signals.write_abi(&mut restored);
        ThreadSignals::from_abi(&state).write_abi(&mut restored);
        assert_eq!((restored.actions, restored.blocked), (state.actions, state.blocked));
    }
}
