//! POSIX timers (`timer_create`): each timer's id, clock, notification
//! (SIGEV_SIGNAL, SIGEV_NONE, SIGEV_THREAD_ID with its thread) with its
//! signal and `sigev_value`, read from /proc/PID/timers, and its time left
//! and interval, read by an injected `timer_gettime`. At restore each is
//! created again with its own id (`PR_TIMER_CREATE_RESTORE_IDS`, Linux
//! 6.13+; on older kernels timers are created in id order and the ones
//! made only to reach an id deleted) and armed with the time it had left,
//! relative to the restore (as the interval timers are): an absolute
//! (TIMER_ABSTIME) timer becomes a relative one with the same time left.
//!
//! What cannot be set back: the overrun count (`timer_getoverrun`) starts
//! at 0 again (recorded, and shown by `crp inspect`). A timer whose signal
//! was pending at the dump has that signal queued again with the other
//! pending signals; its next expiry then queues one more instead of
//! counting an overrun.

use crp_ptrace::{Capture, Persist, Restore, Tracee, TraceeExt, arg};

use crate::error::{CompoundError, Unsupported};
use crate::valid::Invalid;

/// `SIGEV_*` notification kinds.
pub const SIGEV_SIGNAL: i32 = 0;
pub const SIGEV_NONE: i32 = 1;
pub const SIGEV_THREAD_ID: i32 = 4;
/// `PR_TIMER_CREATE_RESTORE_IDS` and its modes.
const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
const RESTORE_IDS_OFF: u64 = 0;
const RESTORE_IDS_ON: u64 = 1;
/// `struct itimerspec`: interval then value, each two i64.
const ITIMERSPEC_SIZE: usize = 32;
/// `struct sigevent` as the kernel reads it.
const SIGEVENT_SIZE: usize = 64;
/// Without PR_TIMER_CREATE_RESTORE_IDS, ids above this are not reached by
/// creating timers in order.
const MAX_LINEAR_ID: i32 = 1 << 16;
/// Clock ids timer_create accepts by name.
const CLOCKS: [(i32, &str); 8] = [
    (0, "CLOCK_REALTIME"),
    (1, "CLOCK_MONOTONIC"),
    (2, "CLOCK_PROCESS_CPUTIME_ID"),
    (3, "CLOCK_THREAD_CPUTIME_ID"),
    (7, "CLOCK_BOOTTIME"),
    (8, "CLOCK_REALTIME_ALARM"),
    (9, "CLOCK_BOOTTIME_ALARM"),
    (11, "CLOCK_TAI"),
];

/// One POSIX timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PosixTimer {
    pub id: i32,
    /// The clock id as the kernel keeps it: a named clock, or a CPU-time
    /// clock (negative: `~pid << 3 | type`; pid 0 is the timer's own
    /// process or thread).
    pub clock: i32,
    /// SIGEV_SIGNAL, SIGEV_NONE or SIGEV_THREAD_ID.
    pub notify: i32,
    pub signal: i32,
    /// `sigev_value`.
    pub value: u64,
    /// For SIGEV_THREAD_ID, the thread signalled (a thread of the process).
    pub thread: i32,
    pub left_ns: u64,
    pub interval_ns: u64,
    /// `timer_getoverrun` at the dump; not restorable.
    pub overrun: i32,
}

/// Every POSIX timer of the process, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PosixTimers {
    pub timers: Vec<PosixTimer>,
}

/// What /proc/PID/timers says of one timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Listed {
    id: i32,
    signal: i32,
    value: u64,
    notify: i32,
    target: i32,
    clock: i32,
}

/// The name of a clock id: a named clock, or which CPU-time clock.
pub fn clock_name(clock: i32) -> String {
    if let Some((_, name)) = CLOCKS.iter().find(|(id, _)| *id == clock) {
        return (*name).to_owned();
    }
    match cpu_clock(clock) {
        Some((pid, per_thread)) => {
            let whose = match (pid, per_thread) {
                (0, false) => "its process".to_owned(),
                (0, true) => "its thread".to_owned(),
                (pid, false) => format!("process {pid}"),
                (pid, true) => format!("thread {pid}"),
            };
            format!("CPU-time clock of {whose}")
        }
        None => format!("clock {clock}"),
    }
}

/// `(pid, per thread)` of a CPU-time clock id (`~pid << 3 | type`).
fn cpu_clock(clock: i32) -> Option<(i32, bool)> {
    (clock < 0 && clock & 3 != 3).then_some((!(clock >> 3), clock & 4 != 0))
}

/// The clock as the process itself names it: a CPU-time clock of the
/// dumped process or thread `pid` becomes pid 0 (its own), which is the
/// same clock for the restored process whatever its pid.
fn own_clock(clock: i32, pid: i32) -> i32 {
    match cpu_clock(clock) {
        Some((owner, _)) if owner == pid => (!0 << 3) | (clock & 7),
        _ => clock,
    }
}

/// Parses /proc/PID/timers (`ID:`, `signal: N/VALUE`, `notify: KIND/pid.N`
/// or `KIND/tid.N`, `ClockID:`, one block per timer).
fn parse(text: &str) -> Result<Vec<Listed>, String> {
    let mut listed = Vec::new();
    let mut lines = text.lines().filter(|line| !line.trim().is_empty());
    while let Some(line) = lines.next() {
        let id = field(line, "ID")?;
        let id = id.parse().map_err(|_| format!("bad timer id {id:?}"))?;
        let signal_line = lines.next().ok_or("a timer without its signal line")?;
        let (signal, value) = field(signal_line, "signal")?.split_once('/').ok_or("no / in the signal line")?;
        let signal = signal.parse().map_err(|_| format!("bad signal {signal:?}"))?;
        let value =
            u64::from_str_radix(value.trim_start_matches("0x"), 16).map_err(|_| format!("bad value {value:?}"))?;
        let notify_line = lines.next().ok_or("a timer without its notify line")?;
        let (kind, target) = field(notify_line, "notify")?.split_once('/').ok_or("no / in the notify line")?;
        let (whom, target) = target.split_once('.').ok_or("no . in the notify target")?;
        let target = target.parse().map_err(|_| format!("bad notify target {target:?}"))?;
        let notify = match (kind, whom) {
            ("signal", "pid") => SIGEV_SIGNAL,
            ("none", "pid") => SIGEV_NONE,
            ("signal", "tid") => SIGEV_THREAD_ID,
            (kind, whom) => return Err(format!("notification {kind}/{whom}")),
        };
        let clock = field(lines.next().ok_or("a timer without its ClockID line")?, "ClockID")?;
        let clock = clock.parse().map_err(|_| format!("bad clock id {clock:?}"))?;
        listed.push(Listed { id, signal, value, notify, target, clock });
    }
    listed.sort_by_key(|timer| timer.id);
    Ok(listed)
}

fn field<'a>(line: &'a str, key: &str) -> Result<&'a str, String> {
    line.strip_prefix(key)
        .and_then(|rest| rest.strip_prefix(':'))
        .map(str::trim)
        .ok_or_else(|| format!("expected {key}: in {line:?}"))
}

/// Refuses the timers of process `pid` crp cannot re-create: on another
/// process's CPU-time clock, signalling a thread of another process, or
/// a notification crp does not know (SIGEV_THREAD is glibc's: a
/// SIGEV_THREAD_ID timer signalling a helper thread of its own).
pub fn preflight(pid: i32) -> Result<(), CompoundError> {
    let path = format!("/proc/{pid}/timers");
    let text = std::fs::read_to_string(&path).map_err(CompoundError::io("read", &path))?;
    refusal(&text, pid).map_or(Ok(()), |unsupported| Err(unsupported.into()))
}

fn refusal(text: &str, pid: i32) -> Option<Unsupported> {
    let listed = match parse(text) {
        Ok(listed) => listed,
        Err(reason) => return Some(Unsupported { what: "POSIX timers crp cannot read".into(), location: reason }),
    };
    listed.iter().find_map(|timer| {
        let location = format!("timer {}", timer.id);
        if let Some((owner, _)) = cpu_clock(timer.clock).filter(|(owner, _)| *owner != 0 && *owner != pid) {
            let what = format!("a POSIX timer on the CPU-time clock of another process ({owner})");
            return Some(Unsupported { what, location });
        }
        let own_thread = std::path::Path::new(&format!("/proc/{pid}/task/{}", timer.target)).exists();
        if timer.notify == SIGEV_THREAD_ID && timer.target != pid && !own_thread {
            let what = format!("a POSIX timer signalling thread {} (not a thread of the process)", timer.target);
            return Some(Unsupported { what, location });
        }
        None
    })
}

/// Reads a `struct itimerspec` as (interval, value) in nanoseconds;
/// negative fields read as 0.
fn itimerspec_ns(raw: &[u8; ITIMERSPEC_SIZE]) -> (u64, u64) {
    let word = |index: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&raw[index * 8..index * 8 + 8]);
        u64::try_from(i64::from_le_bytes(bytes)).unwrap_or(0)
    };
    let nanoseconds = |seconds: u64, nanos: u64| seconds.saturating_mul(1_000_000_000).saturating_add(nanos);
    (nanoseconds(word(0), word(1)), nanoseconds(word(2), word(3)))
}

fn itimerspec_bytes(interval_ns: u64, left_ns: u64) -> [u8; ITIMERSPEC_SIZE] {
    let mut raw = [0u8; ITIMERSPEC_SIZE];
    for (index, value) in
        [interval_ns / 1_000_000_000, interval_ns % 1_000_000_000, left_ns / 1_000_000_000, left_ns % 1_000_000_000]
            .into_iter()
            .enumerate()
    {
        raw[index * 8..index * 8 + 8].copy_from_slice(&value.to_le_bytes());
    }
    raw
}

/// The thread of the restored process `pid` a SIGEV_THREAD_ID timer
/// signals: `timer.thread`, an id of the restored process (the restore
/// plan gives each timer its thread's id as restored), else the leader.
fn signalled_thread(timer: &PosixTimer, pid: i32) -> i32 {
    if timer.thread > 0 { timer.thread } else { pid }
}

fn sigevent_bytes(timer: &PosixTimer, pid: i32) -> [u8; SIGEVENT_SIZE] {
    let thread = signalled_thread(timer, pid);
    let mut raw = [0u8; SIGEVENT_SIZE];
    raw[0..8].copy_from_slice(&timer.value.to_le_bytes());
    raw[8..12].copy_from_slice(&timer.signal.to_le_bytes());
    raw[12..16].copy_from_slice(&timer.notify.to_le_bytes());
    if timer.notify == SIGEV_THREAD_ID {
        raw[16..20].copy_from_slice(&thread.to_le_bytes());
    }
    raw
}

impl PosixTimers {
    fn capture_from(context: &mut Capture<'_>) -> Result<Self, CompoundError> {
        let pid = context.proc.pid;
        let listed = parse(&context.proc.timers).map_err(|reason| {
            CompoundError::Unsupported(Unsupported { what: "POSIX timers crp cannot read".into(), location: reason })
        })?;
        if let Some(unsupported) = refusal(&context.proc.timers, pid) {
            return Err(unsupported.into());
        }
        let tracee = &mut *context.tracee;
        let mut timers = Vec::with_capacity(listed.len());
        for timer in listed {
            let mut scratch = tracee.scratch();
            let setting = scratch.reserve(ITIMERSPEC_SIZE);
            scratch.commit(tracee)?;
            tracee.syscall("timer_gettime", libc::SYS_timer_gettime, [arg(timer.id), setting, 0, 0, 0, 0])?;
            let overrun =
                tracee.syscall("timer_getoverrun", libc::SYS_timer_getoverrun, [arg(timer.id), 0, 0, 0, 0, 0])?;
            let mut raw = [0u8; ITIMERSPEC_SIZE];
            tracee.read_memory(setting, &mut raw)?;
            let (interval_ns, left_ns) = itimerspec_ns(&raw);
            timers.push(PosixTimer {
                id: timer.id,
                clock: own_clock(timer.clock, pid),
                notify: timer.notify,
                signal: timer.signal,
                value: timer.value,
                thread: if timer.notify == SIGEV_THREAD_ID { timer.target } else { 0 },
                left_ns,
                interval_ns,
                overrun: i32::try_from(overrun).unwrap_or(i32::MAX),
            });
        }
        Ok(Self { timers })
    }

    /// Refuses timers timer_create would refuse: ids negative or given
    /// twice or out of order, an unknown clock or notification, a signal
    /// outside 1..=64 for a signalling timer, times beyond i64 seconds.
    pub fn check(&self) -> Result<(), Invalid> {
        let mut previous = None;
        for timer in &self.timers {
            let field = || format!("POSIX timer {}", timer.id);
            if timer.id < 0 || previous.is_some_and(|previous| timer.id <= previous) {
                return Err(Invalid::new(field(), "has a negative, repeated or unsorted id"));
            }
            previous = Some(timer.id);
            if !CLOCKS.iter().any(|(clock, _)| *clock == timer.clock) && cpu_clock(timer.clock).is_none() {
                return Err(Invalid::new(field(), format!("has clock {}, which timer_create refuses", timer.clock)));
            }
            if ![SIGEV_SIGNAL, SIGEV_NONE, SIGEV_THREAD_ID].contains(&timer.notify) {
                return Err(Invalid::new(field(), format!("has notification {}", timer.notify)));
            }
            if timer.notify != SIGEV_NONE && !(1..=64).contains(&timer.signal) {
                return Err(Invalid::new(field(), format!("signals {}, not 1..=64", timer.signal)));
            }
        }
        Ok(())
    }

    /// Creates every timer with its id (chosen, or reached by creating
    /// timers in order when the kernel cannot choose), then arms them.
    fn restore_into(&self, tracee: &mut dyn Tracee) -> Result<(), CompoundError> {
        if self.timers.is_empty() {
            return Ok(());
        }
        let pid = tracee.pid();
        crate::pending_signals::block_every_signal(tracee)?;
        let chosen_ids =
            tracee.raw_syscall(libc::SYS_prctl, [PR_TIMER_CREATE_RESTORE_IDS, RESTORE_IDS_ON, 0, 0, 0, 0])?;
        let mut fillers = Vec::new();
        for timer in &self.timers {
            let clock = timer.clock;
            let created = if chosen_ids == 0 {
                let id = create(tracee, timer, clock, pid, timer.id)?;
                Some(id).filter(|id| *id == timer.id)
            } else {
                create_in_order(tracee, timer, clock, pid, &mut fillers)?
            };
            if created.is_none() {
                let reason = "the kernel gave another".to_owned();
                return Err(CompoundError::TimerId { id: timer.id, reason });
            }
        }
        if chosen_ids == 0 {
            tracee.syscall(
                "prctl(PR_TIMER_CREATE_RESTORE_IDS, OFF)",
                libc::SYS_prctl,
                [PR_TIMER_CREATE_RESTORE_IDS, RESTORE_IDS_OFF, 0, 0, 0, 0],
            )?;
        }
        for filler in fillers {
            tracee.syscall("timer_delete", libc::SYS_timer_delete, [arg(filler), 0, 0, 0, 0, 0])?;
        }
        for timer in self.timers.iter().filter(|timer| timer.left_ns != 0) {
            let mut scratch = tracee.scratch();
            let setting = scratch.push(&itimerspec_bytes(timer.interval_ns, timer.left_ns));
            scratch.commit(tracee)?;
            tracee.syscall("timer_settime", libc::SYS_timer_settime, [arg(timer.id), 0, setting, 0, 0, 0])?;
        }
        Ok(())
    }
}

/// Creates `timer` on `clock`, asking for id `wanted` (honoured only
/// with PR_TIMER_CREATE_RESTORE_IDS on); returns the id the kernel gave.
fn create(
    tracee: &mut dyn Tracee,
    timer: &PosixTimer,
    clock: i32,
    pid: i32,
    wanted: i32,
) -> Result<i32, CompoundError> {
    let mut scratch = tracee.scratch();
    let event = scratch.push(&sigevent_bytes(timer, pid));
    let id_slot = scratch.push(&wanted.to_le_bytes());
    scratch.commit(tracee)?;
    tracee.syscall("timer_create", libc::SYS_timer_create, [arg(clock), event, id_slot, 0, 0, 0])?;
    let mut id = [0u8; 4];
    tracee.read_memory(id_slot, &mut id)?;
    Ok(i32::from_le_bytes(id))
}

/// Without chosen ids: creates timers until the kernel gives `timer.id`,
/// keeping the ones before it (fillers, deleted once all are made).
fn create_in_order(
    tracee: &mut dyn Tracee,
    timer: &PosixTimer,
    clock: i32,
    pid: i32,
    fillers: &mut Vec<i32>,
) -> Result<Option<i32>, CompoundError> {
    if timer.id > MAX_LINEAR_ID {
        let reason =
            format!("this kernel lacks PR_TIMER_CREATE_RESTORE_IDS (Linux 6.13), needed above {MAX_LINEAR_ID}");
        return Err(CompoundError::TimerId { id: timer.id, reason });
    }
    loop {
        let id = create(tracee, timer, clock, pid, 0)?;
        match id.cmp(&timer.id) {
            std::cmp::Ordering::Equal => return Ok(Some(id)),
            std::cmp::Ordering::Less => fillers.push(id),
            std::cmp::Ordering::Greater => return Ok(None),
        }
    }
}

impl Persist for PosixTimers {
    const KIND: &'static str = "POSIX timers";
    type Error = CompoundError;

    /// /proc/PID/timers, then timer_gettime and timer_getoverrun of each, injected.
    fn capture(context: &mut Capture<'_>) -> Result<Self, CompoundError> {
        Self::capture_from(context)
    }

    /// Each timer with its id, then armed; every signal blocked from then on.
    fn restore(&self, context: &mut Restore<'_>) -> Result<(), CompoundError> {
        self.restore_into(context.tracee)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crp_ptrace::fake::FakeTracee;

    const LISTING: &str = "ID: 8\nsignal: 35/0000000000001234\nnotify: signal/tid.4242\nClockID: -6\n\
        ID: 7\nsignal: 35/0000000000000000\nnotify: none/pid.4242\nClockID: 7\n\
        ID: 42\nsignal: 14/00007f0000001000\nnotify: signal/pid.4242\nClockID: 1\n";

    #[test]
    fn the_listing_is_parsed_by_id() {
        let listed = parse(LISTING).unwrap();
        assert_eq!(listed.iter().map(|timer| timer.id).collect::<Vec<_>>(), [7, 8, 42]);
        assert_eq!(
            listed[1],
            Listed { id: 8, signal: 35, value: 0x1234, notify: SIGEV_THREAD_ID, target: 4242, clock: -6 }
        );
        assert_eq!(listed[2].value, 0x7f00_0000_1000);
        assert!(parse("ID: 1\nsignal: 14/0\nnotify: thread/pid.3\nClockID: 0\n").is_err());
        assert!(parse("ID: 1\n").is_err());
    }

    #[test]
    fn clocks_are_named_and_cpu_clocks_of_the_process_follow_its_pid() {
        assert_eq!(clock_name(1), "CLOCK_MONOTONIC");
        assert_eq!(clock_name(-6), "CPU-time clock of its process");
        assert_eq!(clock_name(-2), "CPU-time clock of its thread");
        let of_100 = (!100 << 3) | 2;
        assert_eq!(clock_name(of_100), "CPU-time clock of process 100");
        assert_eq!(own_clock(of_100, 100), -6);
        assert_eq!(own_clock((!100 << 3) | 6, 100), -2);
        assert_eq!(own_clock(-6, 100), -6);
        assert_eq!(own_clock(1, 100), 1);
    }

    #[test]
    fn timers_of_other_processes_clocks_are_refused() {
        let other = format!("ID: 0\nsignal: 14/0\nnotify: signal/pid.9\nClockID: {}\n", (!77 << 3) | 2);
        let refusal = refusal(&other, 9).unwrap();
        assert!(refusal.what.contains("another process (77)"), "{refusal:?}");
        assert!(super::refusal(LISTING, 4242).is_none());
    }

    fn captured() -> PosixTimers {
        let mut process = FakeTracee::answering(|call, memory| {
            if call.number == libc::SYS_timer_gettime && call.args[0] == 42 {
                memory.write(call.args[1], &itimerspec_bytes(2_000_000_000, 1_500_000_000));
            }
            if call.number == libc::SYS_timer_getoverrun { 3 } else { 0 }
        });
        let mut proc = crp_ptrace::fake::snapshot();
        proc.timers = LISTING.to_owned();
        PosixTimers::capture(&mut Capture { tracee: &mut process, proc: &proc, stopped_before_freeze: false }).unwrap()
    }

    #[test]
    fn timers_are_captured_and_recreated_with_their_ids_then_armed() {
        let timers = captured();
        timers.check().unwrap();
        let monotonic = timers.timers[2];
        assert_eq!(
            (monotonic.id, monotonic.left_ns, monotonic.interval_ns, monotonic.overrun),
            (42, 1_500_000_000, 2_000_000_000, 3)
        );
        assert_eq!(timers.timers[1].thread, 4242);

        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let record = seen.clone();
        let mut restored = FakeTracee::answering(move |call, memory| {
            if call.number == libc::SYS_timer_create {
                let wanted = memory.read(call.args[2], 4);
                record.borrow_mut().push((memory.read(call.args[1], SIGEVENT_SIZE), wanted));
            }
            0
        });
        timers.restore(&mut Restore::new(&mut restored)).unwrap();
        let seen = seen.borrow();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[2].1, 42i32.to_le_bytes(), "asks for its own id");
        assert_eq!(seen[1].0[12..20], [4, 0, 0, 0, 0x92, 0x10, 0, 0], "SIGEV_THREAD_ID to the restored thread (4242)");
        assert_eq!(seen[1].0[..12], [0x34, 0x12, 0, 0, 0, 0, 0, 0, 35, 0, 0, 0], "value and signal");
        let prctls = restored.calls_of(libc::SYS_prctl);
        assert_eq!((prctls[0].args[1], prctls[1].args[1]), (RESTORE_IDS_ON, RESTORE_IDS_OFF));
        let armed = restored.calls_of(libc::SYS_timer_settime);
        assert_eq!(armed.len(), 1, "only the timer with time left");
        assert_eq!(
            restored.memory.read(armed[0].args[2], ITIMERSPEC_SIZE),
            itimerspec_bytes(2_000_000_000, 1_500_000_000)
        );
        assert_eq!(restored.calls_of(libc::SYS_rt_sigprocmask).len(), 1, "every signal blocked first");
    }

    #[test]
    fn without_chosen_ids_timers_are_made_in_order_and_fillers_deleted() {
        let timers = captured();
        let mut next = 0i32;
        let mut restored = FakeTracee::answering(move |call, memory| {
            if call.number == libc::SYS_prctl {
                return -i64::from(libc::EINVAL);
            }
            if call.number == libc::SYS_timer_create {
                memory.write(call.args[2], &next.to_le_bytes());
                next += 1;
            }
            0
        });
        timers.restore(&mut Restore::new(&mut restored)).unwrap();
        assert_eq!(restored.calls_of(libc::SYS_timer_create).len(), 43);
        let deleted: Vec<u64> = restored.calls_of(libc::SYS_timer_delete).iter().map(|call| call.args[0]).collect();
        assert_eq!(deleted, (0..7).chain(9..42).collect::<Vec<u64>>());
    }

    #[test]
    fn impossible_timers_are_refused() {
        let timer = captured().timers[0];
        for bad in [
            PosixTimers { timers: vec![timer, timer] },
            PosixTimers { timers: vec![PosixTimer { clock: 5, ..timer }] },
            PosixTimers { timers: vec![PosixTimer { notify: 2, ..timer }] },
            PosixTimers { timers: vec![PosixTimer { notify: SIGEV_SIGNAL, signal: 0, ..timer }] },
            PosixTimers { timers: vec![PosixTimer { id: -1, ..timer }] },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn own_process_timers_pass_preflight() {
        preflight(std::process::id().cast_signed()).unwrap();
    }
}
