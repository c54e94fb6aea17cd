//! Interval timers (setitimer/alarm): the time left and the interval of
//! ITIMER_REAL, ITIMER_VIRTUAL and ITIMER_PROF, re-armed at restore. POSIX
//! timers (timer_create) are [`crate::posix_timers`].

use crp_ptrace::{Capture, EngineError, Persist, Restore, Tracee, TraceeExt};

use crate::valid::Invalid;

/// `struct itimerval`: interval then value, each a timeval of two i64.
const ITIMERVAL_SIZE: usize = 32;
const WHICH: [(u64, &str); 3] = [(0, "ITIMER_REAL"), (1, "ITIMER_VIRTUAL"), (2, "ITIMER_PROF")];

#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct IntervalTimers {
    /// Raw `struct itimerval` of each timer, in [`WHICH`] order.
    pub timers: Vec<[u8; ITIMERVAL_SIZE]>,
}

fn is_armed(raw: &[u8; ITIMERVAL_SIZE]) -> bool {
    raw[16..].iter().any(|byte| *byte != 0)
}

impl IntervalTimers {
    fn capture_from(tracee: &mut dyn Tracee) -> Result<Self, EngineError> {
        let mut scratch = tracee.scratch();
        let buffer = scratch.reserve(ITIMERVAL_SIZE * WHICH.len());
        scratch.commit(tracee)?;
        for (index, (which, _)) in WHICH.iter().enumerate() {
            let slot = buffer + (index * ITIMERVAL_SIZE) as u64;
            tracee.syscall("getitimer", libc::SYS_getitimer, [*which, slot, 0, 0, 0, 0])?;
        }
        let mut raw = [[0u8; ITIMERVAL_SIZE]; WHICH.len()];
        tracee.read_memory(buffer, raw.as_flattened_mut())?;
        Ok(Self { timers: raw.to_vec() })
    }

    /// Builds the record from `(time left, interval)` in nanoseconds for
    /// each timer, in ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF order. Time
    /// left is rounded up to a microsecond so an armed timer stays armed.
    pub fn from_nanoseconds(times: [(u64, u64); 3]) -> Self {
        let timeval = |nanoseconds: u64, round_up: bool| {
            let microseconds = if round_up { nanoseconds.div_ceil(1000) } else { nanoseconds / 1000 };
            [microseconds / 1_000_000, microseconds % 1_000_000]
        };
        let timers = times
            .iter()
            .map(|&(left, interval)| {
                let [interval_seconds, interval_micros] = timeval(interval, false);
                let [left_seconds, left_micros] = timeval(left, true);
                let words = [interval_seconds, interval_micros, left_seconds, left_micros].map(u64::to_le_bytes);
                let mut raw = [0u8; ITIMERVAL_SIZE];
                raw.copy_from_slice(words.as_flattened());
                raw
            })
            .collect();
        Self { timers }
    }

    /// Refuses timers `setitimer` would refuse: more than the three there
    /// are, negative seconds, microseconds of a second or more.
    pub fn check(&self) -> Result<(), Invalid> {
        if self.timers.len() > WHICH.len() {
            return Err(Invalid::new("interval timers", format!("are {}, not at most 3", self.timers.len())));
        }
        for ((_, name), raw) in WHICH.iter().zip(&self.timers) {
            let word = |index: usize| i64::from_le_bytes(raw[index * 8..index * 8 + 8].try_into().unwrap_or([0; 8]));
            for (seconds, microseconds) in [(word(0), word(1)), (word(2), word(3))] {
                if seconds < 0 || !(0..1_000_000).contains(&microseconds) {
                    return Err(Invalid::new(*name, format!("holds {seconds} s {microseconds} µs, not a timeval")));
                }
            }
        }
        Ok(())
    }

    /// Re-arms every timer that was running.
    fn restore_into(&self, tracee: &mut dyn Tracee) -> Result<(), EngineError> {
        for ((which, _), raw) in WHICH.iter().zip(&self.timers) {
            if !is_armed(raw) {
                continue;
            }
            let mut scratch = tracee.scratch();
            let address = scratch.push(raw);
            scratch.commit(tracee)?;
            tracee.syscall("setitimer", libc::SYS_setitimer, [*which, address, 0, 0, 0, 0])?;
        }
        Ok(())
    }

    /// `(name, armed)` for display.
    /// Each timer recorded: its name, then time left and interval in
    /// microseconds (0 left: disarmed). Negative fields read as 0.
    pub fn entries(&self) -> impl Iterator<Item = (&'static str, u64, u64)> + '_ {
        let microseconds = |raw: &[u8; ITIMERVAL_SIZE], at: usize| {
            let field = |offset: usize| {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&raw[offset..offset + 8]);
                u64::try_from(i64::from_le_bytes(bytes)).unwrap_or(0)
            };
            field(at).saturating_mul(1_000_000).saturating_add(field(at + 8))
        };
        WHICH.iter().zip(&self.timers).map(move |((_, name), raw)| (*name, microseconds(raw, 16), microseconds(raw, 0)))
    }

    pub fn armed(&self) -> impl Iterator<Item = &'static str> + '_ {
        WHICH.iter().zip(&self.timers).filter(|(_, raw)| is_armed(raw)).map(|((_, name), _)| *name)
    }
}

impl Persist for IntervalTimers {
    const KIND: &'static str = "interval timers";
    type Error = EngineError;

    /// getitimer of each timer, injected.
    fn capture(context: &mut Capture<'_>) -> Result<Self, EngineError> {
        Self::capture_from(context.tracee)
    }

    fn restore(&self, context: &mut Restore<'_>) -> Result<(), EngineError> {
        self.restore_into(context.tracee)
    }
}

impl IntervalTimers {
    /// The kmod ABI: the three timers in the module's task record, as
    /// getitimer(2) would report them.
    pub fn from_abi(state: &crp_kmod_abi::CrpTaskState) -> Self {
        Self::from_nanoseconds([
            (state.itimer_real_value_ns, state.itimer_real_interval_ns),
            (state.itimer_virtual_value_ns, state.itimer_virtual_interval_ns),
            (state.itimer_prof_value_ns, state.itimer_prof_interval_ns),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crp_ptrace::fake::FakeTracee;

    #[test]
    fn timers_are_read_by_getitimer_and_only_running_ones_rearmed() {
        let mut process = FakeTracee::answering(|call, memory| {
            if call.number == libc::SYS_getitimer && call.args[0] == 0 {
                let mut real = [0u8; ITIMERVAL_SIZE];
                real[16..24].copy_from_slice(&2u64.to_le_bytes()); // 2 s left
                memory.write(call.args[1], &real);
            }
            0
        });
        let timers = IntervalTimers::capture(&mut Capture {
            tracee: &mut process,
            proc: &crp_ptrace::fake::snapshot(),
            stopped_before_freeze: false,
        })
        .unwrap();
        assert_eq!(process.calls_of(libc::SYS_getitimer).len(), 3);
        assert_eq!(timers.armed().collect::<Vec<_>>(), vec!["ITIMER_REAL"]);

        let mut restored = FakeTracee::default();
        timers.restore(&mut Restore::new(&mut restored)).unwrap();
        let calls = restored.calls_of(libc::SYS_setitimer);
        assert_eq!(calls.len(), 1, "only ITIMER_REAL runs");
        assert_eq!(calls[0].args[0], 0);
        assert_eq!(restored.memory.read(calls[0].args[1], ITIMERVAL_SIZE), timers.timers[0]);
    }

    #[test]
    fn nanoseconds_become_itimervals() {
        let timers = IntervalTimers::from_nanoseconds([(1_500_000_001, 2_000_000_000), (0, 0), (0, 0)]);
        let real = &timers.timers[0];
        let word = |index: usize| u64::from_le_bytes(real[index * 8..index * 8 + 8].try_into().unwrap());
        assert_eq!([word(0), word(1), word(2), word(3)], [2, 0, 1, 500_001]);
        assert_eq!(timers.armed().collect::<Vec<_>>(), vec!["ITIMER_REAL"]);
        let entries: Vec<_> = timers.entries().collect();
        assert_eq!(entries[0], ("ITIMER_REAL", 1_500_001, 2_000_000));
        assert_eq!(entries[2], ("ITIMER_PROF", 0, 0));
    }

    #[test]
    fn only_timers_with_time_left_are_armed() {
        let mut running = [0u8; ITIMERVAL_SIZE];
        running[16] = 1; // one second left
        let mut periodic_but_stopped = [0u8; ITIMERVAL_SIZE];
        periodic_but_stopped[0] = 1;
        let timers = IntervalTimers { timers: vec![running, periodic_but_stopped, [0; ITIMERVAL_SIZE]] };
        assert_eq!(timers.armed().collect::<Vec<_>>(), vec!["ITIMER_REAL"]);
    }
}
