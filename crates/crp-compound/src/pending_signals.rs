//! Pending signals, as Linux queues them: one queue for the whole process
//! ([`SharedPendingSignals`], what `kill` and `sigqueue` fill) and one per
//! thread ([`ThreadPendingSignals`], `tgkill`, synchronous faults), each
//! read whole at dump with `PTRACE_PEEKSIGINFO` (which dequeues nothing)
//! and queued again at restore in the same order with the same `siginfo_t`.
//!
//! The restore queues them from inside the restored process
//! (`rt_sigqueueinfo` / `rt_tgsigqueueinfo` aimed at itself, injected):
//! the kernel lets a process queue any `si_code` to itself, while another
//! sender may only use a negative one other than SI_TKILL, which would
//! refuse every `kill` (SI_USER) and kernel-made (SI_KERNEL, CLD_*) siginfo.
//! Every signal is blocked first and stays blocked for the rest of the
//! restore, so none is delivered to the half-built process (the restore
//! child runs with crp's mask until then); both back ends load the
//! thread's own mask by ptrace last, right before release.
//! A traced process ignores no signal, and the queueing follows the
//! dispositions (setting SIG_IGN would discard them), so each comes back.
//!
//! A pending SIGKILL (the process is dying), SIGSTOP (a stop under way) or
//! SIGTRAP is refused by the dump's preflight: the first has no restore,
//! the second would stop the restore itself, and the restore's single
//! steps would take the third for their own trap.
//!
//! SIGTRAP itself is never blocked during the restore: the kernel forces
//! each single step's trap through, and forcing a blocked SIGTRAP resets
//! its disposition to SIG_DFL (force_sig_info_to_task), which would lose
//! a handler the process has.

use crp_ptrace::sys::SIGINFO_SIZE;
use crp_ptrace::{Capture, EngineError, Persist, Restore, Tracee, TraceeExt, arg};

use crate::error::CompoundError;
use crate::valid::Invalid;

/// `SIG_SETMASK` and the size of the kernel's sigset.
const SIG_SETMASK: u64 = 2;
const SIGSET_SIZE: u64 = 8;
/// First real-time signal: below it, a signal is pending at most once per queue.
const SIGRTMIN: i32 = 32;
/// Every signal but SIGTRAP (see the module documentation).
pub const ALL_BUT_SIGTRAP: u64 = !(1 << (libc::SIGTRAP - 1));
/// At most this many signals per queue in an image (the kernel's own
/// limit is RLIMIT_SIGPENDING, per user).
pub const MAX_QUEUED: usize = 1 << 16;

/// One queued signal: its `siginfo_t` as the kernel copies it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct QueuedSignal {
    pub siginfo: [u8; SIGINFO_SIZE],
}

/// The process-wide queue, in queue order.
#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SharedPendingSignals {
    pub queue: Vec<QueuedSignal>,
}

/// One thread's own queue, in queue order.
#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ThreadPendingSignals {
    pub queue: Vec<QueuedSignal>,
}

impl QueuedSignal {
    fn word(&self, offset: usize) -> i32 {
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(&self.siginfo[offset..offset + 4]);
        i32::from_le_bytes(bytes)
    }

    /// `si_signo`.
    pub fn signal(&self) -> i32 {
        self.word(0)
    }

    /// `si_errno`.
    pub fn errno(&self) -> i32 {
        self.word(4)
    }

    /// `si_code`.
    pub fn code(&self) -> i32 {
        self.word(8)
    }

    /// `si_pid` and `si_uid` (the first two fields of the union), for
    /// siginfos that carry a sender: SI_USER, SI_QUEUE, SI_TKILL, SIGCHLD.
    pub fn sender(&self) -> Option<(i32, u32)> {
        let sent = matches!(self.code(), SI_USER | SI_QUEUE | SI_TKILL | SI_MESGQ | SI_ASYNCIO)
            || (self.signal() == libc::SIGCHLD && self.code() > 0);
        sent.then(|| (self.word(16), self.word(20).cast_unsigned()))
    }

    /// `si_value` (`sival_ptr`/`sival_int`) of a SI_QUEUE, SI_TIMER or
    /// SI_MESGQ siginfo.
    pub fn value(&self) -> Option<u64> {
        let offset = match self.code() {
            SI_QUEUE | SI_MESGQ => 24,
            SI_TIMER => 24,
            _ => return None,
        };
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&self.siginfo[offset..offset + 8]);
        Some(u64::from_le_bytes(bytes))
    }

    fn from_raw(siginfo: [u8; SIGINFO_SIZE]) -> Self {
        Self { siginfo }
    }
}

/// `si_code` values of signals sent from user space (siginfo.h).
const SI_USER: i32 = 0;
const SI_QUEUE: i32 = -1;
const SI_TIMER: i32 = -2;
const SI_MESGQ: i32 = -3;
const SI_ASYNCIO: i32 = -4;
const SI_TKILL: i32 = -6;

/// The name of a `si_code`: the senders' codes by name, others (kernel
/// codes, which depend on the signal) as a number.
pub fn code_name(signal: i32, code: i32) -> String {
    match code {
        SI_USER => "SI_USER".to_owned(),
        0x80 => "SI_KERNEL".to_owned(),
        SI_QUEUE => "SI_QUEUE".to_owned(),
        SI_TIMER => "SI_TIMER".to_owned(),
        SI_MESGQ => "SI_MESGQ".to_owned(),
        SI_ASYNCIO => "SI_ASYNCIO".to_owned(),
        -5 => "SI_SIGIO".to_owned(),
        SI_TKILL => "SI_TKILL".to_owned(),
        1..=6 if signal == libc::SIGCHLD => {
            ["CLD_EXITED", "CLD_KILLED", "CLD_DUMPED", "CLD_TRAPPED", "CLD_STOPPED", "CLD_CONTINUED"]
                [usize::try_from(code - 1).unwrap_or(0)]
            .to_owned()
        }
        other => other.to_string(),
    }
}

/// Refuses a queue `rt_sigqueueinfo` would refuse or that no kernel
/// holds: a signal outside 1..=64, SIGKILL or SIGSTOP, a standard signal
/// queued twice, more than [`MAX_QUEUED`] signals.
fn check_queue(field: &str, queue: &[QueuedSignal]) -> Result<(), Invalid> {
    if queue.len() > MAX_QUEUED {
        return Err(Invalid::new(field, format!("holds {} signals, more than {MAX_QUEUED}", queue.len())));
    }
    let mut standard = 0u64;
    for (index, queued) in queue.iter().enumerate() {
        let signal = queued.signal();
        let entry = || format!("{field} entry {index}");
        if !(1..=64).contains(&signal) {
            return Err(Invalid::new(entry(), format!("has signal number {signal}, not 1..=64")));
        }
        if signal == libc::SIGKILL || signal == libc::SIGSTOP || signal == libc::SIGTRAP {
            return Err(Invalid::new(entry(), format!("is signal {signal}, which crp does not queue")));
        }
        if signal < SIGRTMIN {
            let bit = 1u64 << (signal - 1);
            if standard & bit != 0 {
                return Err(Invalid::new(entry(), format!("queues standard signal {signal} a second time")));
            }
            standard |= bit;
        }
    }
    Ok(())
}

/// Blocks every signal in the process being rebuilt, for the rest of the
/// restore (the engine loads the process's own mask last): nothing
/// re-queued or fired by a re-armed timer is delivered before it runs.
pub fn block_every_signal(tracee: &mut dyn Tracee) -> Result<(), EngineError> {
    let mut scratch = tracee.scratch();
    let all = scratch.push(&ALL_BUT_SIGTRAP.to_le_bytes());
    scratch.commit(tracee)?;
    tracee.syscall("rt_sigprocmask", libc::SYS_rt_sigprocmask, [SIG_SETMASK, all, 0, SIGSET_SIZE, 0, 0])?;
    Ok(())
}

fn capture_queue(tracee: &dyn Tracee, shared: bool) -> Result<Vec<QueuedSignal>, EngineError> {
    Ok(tracee.pending_signals(shared)?.into_iter().map(QueuedSignal::from_raw).collect())
}

/// Queues `queue` again from inside the process, every signal blocked
/// from then on (the engine loads the real mask last); `thread` is the
/// process's id for a thread's own queue, which `tracee` (that thread)
/// queues to itself: only the target thread may queue a signal with a
/// user-sent code (rt_tgsigqueueinfo).
fn requeue(tracee: &mut dyn Tracee, queue: &[QueuedSignal], thread: Option<i32>) -> Result<(), EngineError> {
    if queue.is_empty() {
        return Ok(());
    }
    let own = tracee.pid();
    let pid = thread.unwrap_or(own);
    block_every_signal(tracee)?;
    let mut scratch = tracee.scratch();
    let infos: Vec<u64> = queue.iter().map(|queued| scratch.push(&queued.siginfo)).collect();
    scratch.commit(tracee)?;
    queue.iter().zip(&infos).try_for_each(|(queued, info)| {
        let signal = arg(queued.signal());
        match thread {
            None => tracee.syscall("rt_sigqueueinfo", libc::SYS_rt_sigqueueinfo, [arg(pid), signal, *info, 0, 0, 0]),
            Some(_) => tracee.syscall(
                "rt_tgsigqueueinfo",
                libc::SYS_rt_tgsigqueueinfo,
                [arg(pid), arg(own), signal, *info, 0, 0],
            ),
        }
        .map(drop)
    })
}

impl SharedPendingSignals {
    pub fn check(&self) -> Result<(), Invalid> {
        check_queue("process-wide pending signals", &self.queue)
    }
}

impl ThreadPendingSignals {
    pub fn check(&self) -> Result<(), Invalid> {
        check_queue("thread pending signals", &self.queue)
    }
}

impl ThreadPendingSignals {
    /// Queues the signals of the restored thread `tracee`, of the process
    /// `pid`, to itself; it blocks every signal from then on (the engine
    /// loads its own mask last).
    pub fn queue_in(&self, tracee: &mut dyn Tracee, pid: i32) -> Result<(), CompoundError> {
        Ok(requeue(tracee, &self.queue, Some(pid))?)
    }
}

impl Persist for SharedPendingSignals {
    const KIND: &'static str = "pending signals (process-wide)";
    type Error = CompoundError;

    fn capture(context: &mut Capture<'_>) -> Result<Self, CompoundError> {
        Ok(Self { queue: capture_queue(context.tracee, true)? })
    }

    fn restore(&self, context: &mut Restore<'_>) -> Result<(), CompoundError> {
        Ok(requeue(context.tracee, &self.queue, None)?)
    }
}

impl Persist for ThreadPendingSignals {
    const KIND: &'static str = "pending signals (thread)";
    type Error = CompoundError;

    fn capture(context: &mut Capture<'_>) -> Result<Self, CompoundError> {
        Ok(Self { queue: capture_queue(context.tracee, false)? })
    }

    /// Queued by the thread being rebuilt to itself, as the leader (its
    /// tid is the process's pid; see [`ThreadPendingSignals::queue_in`]
    /// for the other threads).
    fn restore(&self, context: &mut Restore<'_>) -> Result<(), CompoundError> {
        let pid = context.tracee.pid();
        Ok(requeue(context.tracee, &self.queue, Some(pid))?)
    }
}

/// Refuses, from a /proc/PID/status text, the pending signals no restore
/// can queue: SIGKILL (the process is dying), SIGSTOP (a stop is under
/// way: dump it again once it has stopped) and SIGTRAP (the restore's
/// single steps would take it). Either queue counts.
pub fn unqueueable_in(status: &crp_ptrace::procfs::Fields) -> Result<Option<String>, CompoundError> {
    for key in ["SigPnd", "ShdPnd"] {
        let pending = status.hex(key)?;
        for signal in [libc::SIGKILL, libc::SIGSTOP, libc::SIGTRAP] {
            if pending & (1u64 << (signal - 1)) != 0 {
                let name = crate::signals::signal_name(signal);
                return Ok(Some(format!("{key} {} ({name})", status.field(key)?)));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crp_ptrace::fake::FakeTracee;

    fn siginfo(signal: i32, code: i32, pid: i32, value: u64) -> [u8; SIGINFO_SIZE] {
        let mut raw = [0u8; SIGINFO_SIZE];
        raw[0..4].copy_from_slice(&signal.to_le_bytes());
        raw[8..12].copy_from_slice(&code.to_le_bytes());
        raw[16..20].copy_from_slice(&pid.to_le_bytes());
        raw[24..32].copy_from_slice(&value.to_le_bytes());
        raw
    }

    #[test]
    fn both_queues_are_peeked_and_requeued_in_order_to_the_process_itself_with_every_signal_blocked() {
        let mut process = FakeTracee::default();
        process.shared_pending = vec![siginfo(libc::SIGUSR1, SI_USER, 77, 0), siginfo(40, SI_QUEUE, 77, 0xabc)];
        process.thread_pending = vec![siginfo(libc::SIGUSR2, SI_TKILL, 77, 0)];
        let proc = crp_ptrace::fake::snapshot();
        let mut context = Capture { tracee: &mut process, proc: &proc, stopped_before_freeze: false };
        let shared = SharedPendingSignals::capture(&mut context).unwrap();
        let thread = ThreadPendingSignals::capture(&mut context).unwrap();
        assert_eq!(shared.queue.iter().map(QueuedSignal::signal).collect::<Vec<_>>(), [libc::SIGUSR1, 40]);
        assert_eq!(shared.queue[1].value(), Some(0xabc));
        assert_eq!(shared.queue[0].sender(), Some((77, 0)));
        shared.check().unwrap();
        thread.check().unwrap();

        let mut restored = FakeTracee::default();
        shared.restore(&mut Restore::new(&mut restored)).unwrap();
        thread.restore(&mut Restore::new(&mut restored)).unwrap();
        let numbers: Vec<i64> = restored.calls.iter().map(|call| call.number).collect();
        let (mask, queue, tgqueue) = (libc::SYS_rt_sigprocmask, libc::SYS_rt_sigqueueinfo, libc::SYS_rt_tgsigqueueinfo);
        assert_eq!(numbers, [mask, queue, queue, mask, tgqueue]);
        let first = &restored.calls[1];
        assert_eq!(first.args[..2], [FakeTracee::PID as u64, libc::SIGUSR1 as u64]);
        let second = &restored.calls[2];
        assert_eq!(restored.memory.read(second.args[2], SIGINFO_SIZE), shared.queue[1].siginfo);
        let tg = &restored.calls[4];
        assert_eq!(tg.args[..3], [FakeTracee::PID as u64, FakeTracee::PID as u64, libc::SIGUSR2 as u64]);
    }

    #[test]
    fn blocking_every_signal_sets_a_full_mask() {
        let mut restored = FakeTracee::default();
        block_every_signal(&mut restored).unwrap();
        let call = &restored.calls[0];
        assert_eq!((call.number, call.args[0]), (libc::SYS_rt_sigprocmask, SIG_SETMASK));
        assert_eq!(restored.memory.read(call.args[1], 8), ALL_BUT_SIGTRAP.to_le_bytes());
        assert_eq!(ALL_BUT_SIGTRAP & (1 << 4), 0, "SIGTRAP stays unblocked");
    }

    #[test]
    fn empty_queues_inject_nothing() {
        let mut restored = FakeTracee::default();
        SharedPendingSignals::default().restore(&mut Restore::new(&mut restored)).unwrap();
        assert!(restored.calls.is_empty());
    }

    #[test]
    fn a_failed_queueing_is_an_error_naming_the_call() {
        let mut restored =
            FakeTracee::answering(|call, _| if call.number == libc::SYS_rt_sigqueueinfo { -11 } else { 0 });
        let pending = SharedPendingSignals { queue: vec![QueuedSignal::from_raw(siginfo(40, SI_QUEUE, 1, 0))] };
        let error = pending.restore(&mut Restore::new(&mut restored)).unwrap_err().to_string();
        assert!(error.contains("rt_sigqueueinfo") && error.contains("EAGAIN"), "{error}");
    }

    #[test]
    fn impossible_queues_are_refused() {
        let twice = SharedPendingSignals {
            queue: vec![QueuedSignal::from_raw(siginfo(10, 0, 1, 0)), QueuedSignal::from_raw(siginfo(10, 0, 1, 0))],
        };
        assert!(twice.check().unwrap_err().to_string().contains("a second time"));
        let realtime_twice = ThreadPendingSignals {
            queue: vec![QueuedSignal::from_raw(siginfo(40, -1, 1, 0)), QueuedSignal::from_raw(siginfo(40, -1, 1, 0))],
        };
        realtime_twice.check().unwrap();
        for signal in [0, 65, libc::SIGKILL, libc::SIGSTOP] {
            let bad = SharedPendingSignals { queue: vec![QueuedSignal::from_raw(siginfo(signal, 0, 1, 0))] };
            assert!(bad.check().is_err(), "signal {signal}");
        }
    }

    #[test]
    fn codes_are_named() {
        assert_eq!(code_name(10, 0), "SI_USER");
        assert_eq!(code_name(40, -1), "SI_QUEUE");
        assert_eq!(code_name(libc::SIGCHLD, 1), "CLD_EXITED");
        assert_eq!(code_name(libc::SIGSEGV, 1), "1");
    }

    #[test]
    fn pending_kill_or_stop_is_found_in_either_queue() {
        let status = |text: &str| crp_ptrace::procfs::Fields::parse("/proc/9/status", text).unwrap();
        assert_eq!(unqueueable_in(&status("SigPnd:\t0000000000000200\nShdPnd:\t0\n")).unwrap(), None);
        let stop = unqueueable_in(&status("SigPnd:\t0\nShdPnd:\t0000000000040000\n")).unwrap().unwrap();
        assert!(stop.contains("SIGSTOP"), "{stop}");
        let kill = unqueueable_in(&status("SigPnd:\t0000000000000100\nShdPnd:\t0\n")).unwrap().unwrap();
        assert!(kill.contains("SIGKILL"), "{kill}");
        let trap = unqueueable_in(&status("SigPnd:\t0000000000000010\nShdPnd:\t0\n")).unwrap().unwrap();
        assert!(trap.contains("SIGTRAP"), "{trap}");
    }
}
